"""Most popular and item-CF against hand-computed and dense references."""

import numpy as np
import pytest

from retrieval_tf import baselines
from retrieval_tf.evaluation import exclusion_from_interactions
from retrieval_tf.datasets.types import Interactions

# users 0..2, items 0..3
LOG = Interactions([0, 0, 1, 1, 2, 2, 2], [0, 1, 0, 1, 1, 2, 3])


def test_most_popular_scores_and_top_k():
  model = baselines.MostPopular().fit(LOG, 4)
  np.testing.assert_array_equal(model.counts, [2, 3, 1, 1])
  histories = exclusion_from_interactions(LOG, np.array([0]), 4)
  np.testing.assert_array_equal(model.score(histories, np.array([[0, 2]])),
                                [[2, 1]])
  top = model.top_k(histories, 2, exclude_history=True)
  assert set(top[0]) == {2, 3}


def test_item_cf_by_hand():
  model = baselines.ItemCF().fit(LOG, 4)
  # n = [2, 3, 1, 1]; co(0,1) = 2, co(1,2) = co(1,3) = co(2,3) = 1.
  sim = model.similarity.toarray()
  assert sim[0, 1] == pytest.approx(2 / np.sqrt(6))
  assert sim[1, 2] == pytest.approx(1 / np.sqrt(3))
  assert sim[2, 3] == pytest.approx(1.0)
  assert sim[0, 0] == 0 and sim[0, 2] == 0
  # user 0 has items {0, 1}: score(3) = sim(0,3) + sim(1,3) = 1/sqrt(3)
  histories = exclusion_from_interactions(LOG, np.array([0]), 4)
  np.testing.assert_allclose(model.score(histories, np.array([[3, 2]])),
                             [[1 / np.sqrt(3), 1 / np.sqrt(3)]], rtol=1e-6)
  assert list(model.similar_items(2, 1)) == [3]


def test_item_cf_equals_dense_reference():
  rng = np.random.default_rng(0)
  log = Interactions(rng.integers(0, 40, 400), rng.integers(0, 25, 400))
  model = baselines.ItemCF().fit(log, 25)
  r = np.zeros((40, 25))
  r[log.user, log.item] = 1
  co = r.T @ r
  np.fill_diagonal(co, 0)
  n = r.sum(0)
  dense = co / np.sqrt(np.outer(n, n))
  np.testing.assert_allclose(model.similarity.toarray(), dense, rtol=1e-5)
  users = np.arange(40)
  histories = exclusion_from_interactions(log, users, 25)
  candidates = rng.integers(0, 25, (40, 7))
  expected = np.take_along_axis(r @ dense, candidates, axis=1)
  np.testing.assert_allclose(model.score(histories, candidates), expected,
                             rtol=1e-5)
  top = model.top_k(histories, 5)
  scores = r @ dense
  scores[r > 0] = -np.inf
  np.testing.assert_allclose(np.take_along_axis(scores, top, axis=1),
                             -np.sort(-scores, axis=1)[:, :5], rtol=1e-5)


def test_item_cf_neighbour_pruning_keeps_the_strongest():
  rng = np.random.default_rng(1)
  log = Interactions(rng.integers(0, 30, 300), rng.integers(0, 20, 300))
  full = baselines.ItemCF().fit(log, 20).similarity.toarray()
  pruned = baselines.ItemCF(num_neighbors=3).fit(log, 20).similarity.toarray()
  assert ((pruned > 0).sum(axis=1) <= 3).all()
  for row in range(20):
    kept = np.flatnonzero(pruned[row])
    np.testing.assert_allclose(pruned[row, kept], full[row, kept])
    if len(kept):
      assert full[row, kept].min() >= np.sort(full[row])[-3] - 1e-6
