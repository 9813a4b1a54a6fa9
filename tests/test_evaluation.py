"""Evaluation protocols: exact top-k with exclusion, the NCF protocol."""

import numpy as np
import pytest

from retrieval_tf import evaluation
from retrieval_tf.datasets.types import Interactions


def test_top_k_items_equals_numpy_argsort_with_exclusion(monkeypatch):
  rng = np.random.default_rng(0)
  queries, items = rng.normal(size=(37, 8)), rng.normal(size=(50, 8))
  log = Interactions(rng.integers(0, 37, 200), rng.integers(0, 50, 200))
  exclude = evaluation.exclusion_from_interactions(log, np.arange(37), 50)
  monkeypatch.setattr(evaluation, "_SCORES_PER_CHUNK", 50 * 5)  # 5-row chunks
  top = evaluation.top_k_items(queries, items, 10, exclude)
  scores = queries @ items.T
  scores[exclude.toarray() > 0] = -np.inf
  np.testing.assert_array_equal(top, np.argsort(-scores, axis=1)[:, :10])
  seen = exclude.toarray() > 0
  assert not seen[np.arange(37)[:, None], top].any()


def _run_sampled(score_fn, n=2000, m=99, seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(0, 1000, n)
  negatives = rng.integers(0, 1000, (n, m))
  return evaluation.evaluate_sampled(score_fn, np.arange(n), targets,
                                     negatives, ks=(10,), batch_size=300)


def test_sampled_protocol_perfect_constant_and_random_scorers():
  perfect = lambda rows, c: np.eye(1, c.shape[1])[np.zeros(len(c), int)]
  assert _run_sampled(perfect)["hr@10"] == 1.0
  constant = lambda rows, c: np.zeros(c.shape)
  assert _run_sampled(constant)["hr@10"] == 0.0
  rng = np.random.default_rng(3)
  random = lambda rows, c: rng.random(c.shape)
  assert _run_sampled(random)["hr@10"] == pytest.approx(0.1, abs=0.02)


def test_sampled_protocol_ignores_a_negative_equal_to_the_target():
  score = lambda rows, c: np.where(c == 7, 1.0, 0.0)
  report = evaluation.evaluate_sampled(
      score, np.arange(1), np.array([7]), np.array([[7, 1, 2]]), ks=(1,))
  assert report["hr@1"] == 1.0


def test_sampled_protocol_rejects_nan_scores():
  with pytest.raises(FloatingPointError, match="non-finite"):
    _run_sampled(lambda rows, c: np.full(c.shape, np.nan))


def test_full_ranking_report():
  items = np.eye(4, dtype=np.float32)
  users = np.array([[0, 0, 1, 0.5], [1, 0, 0.1, 0]], np.float32)
  report = evaluation.evaluate_full_ranking(
      users, items, truth=np.array([[3], [1]]), ks=(1, 2))
  assert report["recall@1"] == 0.0
  assert report["recall@2"] == 0.5


def test_held_out_protocol_answer_key_and_report():
  from retrieval_tf.datasets import splits
  # Users 0 and 2 hold 4 events each; user 1 trains.
  log = Interactions(user=np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2]),
                     item=np.array([5, 1, 2, 3, 4, 0, 6, 7, 8, 9]),
                     timestamp=np.array([3, 0, 1, 2, 0, 1, 0, 1, 2, 3]))
  split = splits.dr_split(log, 0, 2, seed=0, min_history=3)
  protocol = evaluation.HeldOutProtocol.from_held_out(split.test, 10)
  np.testing.assert_array_equal(protocol.users, [0, 2])
  # Chronological halves: user 0 reads 1, 2 and must find 3, 5.
  np.testing.assert_array_equal(protocol.truth, [[3, 5], [8, 9]])
  np.testing.assert_array_equal(protocol.banned, [[1, 2], [6, 7]])
  np.testing.assert_array_equal(protocol.exclude.toarray().nonzero()[1],
                                [1, 2, 6, 7])
  batch = next(iter(protocol.user_dataset(3, 4, batch_size=8)))
  np.testing.assert_array_equal(batch["user_id"], [0, 2])
  assert batch["history_mask"].numpy().sum(axis=1).tolist() == [2, 2]
  report = protocol.report(np.array([[3, 4], [0, 1]]), ks=(2,), prefix="x_")
  assert report == pytest.approx({"x_precision@2": 0.25,
                                  "x_recall@2": 0.25,
                                  "x_f@2": 0.25})
