"""Metrics against hand-computed cases and independent implementations."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from retrieval_tf import metrics


def test_target_rank_counts_ties_against_the_target():
  scores = np.array([[0.9, 0.1, 0.5],   # best -> rank 0
                     [0.5, 0.9, 0.5],   # one above, one tie -> rank 2
                     [1.0, 1.0, 1.0]])  # constant scorer -> worst rank
  np.testing.assert_array_equal(metrics.target_rank(scores), [0, 2, 2])
  valid = np.array([[True, True, True], [True, True, False],
                    [True, False, False]])
  np.testing.assert_array_equal(metrics.target_rank(scores, valid=valid),
                                [0, 1, 0])


def test_hr_ndcg_mrr_by_hand():
  ranks = np.array([0, 3, 12])
  assert metrics.hit_rate_at_k(ranks, 10) == pytest.approx(2 / 3)
  assert metrics.ndcg_at_k(ranks, 10) == pytest.approx(
      (1 + 1 / math.log2(5)) / 3)
  assert metrics.mrr(ranks) == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)
  np.testing.assert_allclose(metrics.hit_rate_at_k(ranks, 4, per_user=True),
                             [1, 1, 0])


def test_set_metrics_by_hand():
  topk = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, -1, -1, -1]])
  truth = metrics.pad_truth([[2, 4, 10], [99], []])
  # Row 0: hits at positions 1 and 3 of 4; |truth| = 3. Row 1: no hit.
  # Row 2: empty truth -> excluded.
  assert metrics.precision_at_k(topk, truth, 4) == pytest.approx(
      (2 / 4 + 0) / 2)
  assert metrics.recall_at_k(topk, truth, 4) == pytest.approx((2 / 3) / 2)
  p, r = 0.5, 2 / 3
  assert metrics.f_measure_at_k(topk, truth, 4) == pytest.approx(
      (2 * p * r / (p + r)) / 2)
  assert metrics.hits_at_k(topk, truth, 4) == pytest.approx(0.5)
  dcg = 1 / math.log2(3) + 1 / math.log2(5)
  idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
  assert metrics.ndcg_at_k_sets(topk, truth, 4) == pytest.approx(
      (dcg / idcg) / 2)
  assert metrics.recall_at_k(topk, truth, 1) == pytest.approx(0.0)


def test_padding_in_topk_never_matches_padding_in_truth():
  topk = np.array([[-1, -1]])
  truth = np.array([[5, -1]])
  assert metrics.recall_at_k(topk, truth, 2) == 0.0


def test_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(0)
  labels = rng.random(500) < 0.3
  scores = np.round(rng.random(500) + labels * 0.3, 1)  # many ties
  assert metrics.auc(labels, scores) == pytest.approx(
      roc_auc_score(labels, scores))
  assert metrics.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="both positive and negative"):
    metrics.auc([1, 1], [0.1, 0.2])


def test_grouped_auc_averages_groups_with_both_classes():
  groups = np.array([0, 0, 1, 1, 2])
  labels = np.array([1, 0, 0, 1, 1])
  scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
  assert metrics.grouped_auc(groups, labels, scores) == pytest.approx(0.5)


def test_top_k_among_random_equals_a_naive_loop():
  rng = np.random.default_rng(1)
  positive = rng.random(200)
  random_scores = rng.random((200, 1024))
  naive = np.mean([np.sum(r >= p) < 10 for p, r in zip(positive,
                                                        random_scores)])
  assert metrics.top_k_among_random(positive, random_scores, 10) == naive


def test_p_good_ignores_padding():
  topk = np.array([[1, 2, -1], [3, 4, 5]])
  relevant = np.array([[True, False, False], [True, True, True]])
  assert metrics.p_good(relevant, topk) == pytest.approx((1 / 2 + 1) / 2)


def test_relevance_matrix_from_judgments():
  topk = np.array([[1, 2], [1, 3]])
  is_relevant = metrics.relevance_matrix(
      topk, queries=np.array([0, 1]), judged_query=np.array([0, 0, 1]),
      judged_item=np.array([1, 2, 3]), grade=np.array([3, 1, 4]),
      threshold=3)
  np.testing.assert_array_equal(is_relevant, [[True, False], [False, True]])


def test_ranking_report_keys():
  report = metrics.ranking_report(ranks=np.array([0, 20]), ks=(10, 50))
  assert set(report) == {"hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"}
  report = metrics.ranking_report(topk=np.array([[1, 2]]),
                                  truth=np.array([[2]]), ks=(2,))
  assert report["recall@2"] == 1.0 and report["precision@2"] == 0.5
