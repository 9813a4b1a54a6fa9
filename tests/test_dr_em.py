"""Deep Retrieval's EM: the M-step (Algorithm 2) against a plain-Python
reference, the penalty against collapse, and EM recovering a planted
structure."""

import math

import numpy as np
import pytest

from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets.types import Interactions
from dr_tf import em
from dr_tf.model import DeepRetrievalModel


def _reference_m_step(cand_paths, cand_scores, counts, current, alpha,
                      sweeps, power=4.0):
  """Algorithm 2 with lists and a dict of path sizes."""
  num_items, num_paths = len(current), len(current[0])
  f = lambda x: x ** power / power
  learnable = [sum(1 for c in row if c >= 0) >= num_paths
               for row in cand_paths]
  size = {}
  for v in range(num_items):
    if not learnable[v]:
      for c in current[v]:
        size[c] = size.get(c, 0) + 1
  pi = [list(row) for row in current]
  for t in range(sweeps):
    for v in range(num_items):
      if not learnable[v]:
        continue
      if t > 0:
        for c in pi[v]:
          size[c] -= 1
      chosen, partial = [], 0.0
      for j in range(num_paths):
        best, best_gain = None, -math.inf
        for c, s in zip(cand_paths[v], cand_scores[v]):
          if c < 0 or c in chosen:
            continue
          n = size.get(c, 0)
          if partial > 0:
            gain = counts[v] * (math.log(partial + s) - math.log(partial))
          else:
            gain = counts[v] * math.log(s)
          gain -= alpha * (f(n + 1) - f(n))
          if gain > best_gain:
            best, best_gain = c, gain
        chosen.append(best)
        partial += cand_scores[v][list(cand_paths[v]).index(best)]
        size[best] = size.get(best, 0) + 1
      pi[v] = chosen
  return np.array(pi)


def _score_table(num_items=40, top_s=6, num_paths_total=12, seed=0):
  rng = np.random.default_rng(seed)
  paths = np.stack([rng.permutation(num_paths_total)[:top_s]
                    for _ in range(num_items)])
  scores = -np.sort(-rng.gamma(1.0, 2.0, (num_items, top_s)), axis=1)
  counts = rng.integers(1, 20, num_items)
  current = np.stack([rng.permutation(num_paths_total)[:3]
                      for _ in range(num_items)])
  return paths, scores, counts, current


@pytest.mark.parametrize("alpha, sweeps, num_paths", [
    (0.0, 1, 2), (0.05, 3, 2), (0.5, 4, 3), (5.0, 3, 1)])
def test_m_step_equals_python_algorithm_2(alpha, sweeps, num_paths):
  paths, scores, counts, current = _score_table()
  current = current[:, :num_paths]
  paths[3] = -1                      # never seen: keeps its paths
  paths[7, 1:] = -1                  # fewer than J candidates
  got, stats = em.penalized_assignment(paths, scores, counts, current,
                                       alpha, sweeps)
  expected = _reference_m_step(paths.tolist(), scores.tolist(),
                               counts.tolist(), current.tolist(), alpha,
                               sweeps)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(got[3], current[3])
  assert stats["items_without_candidates"] == (2 if num_paths > 1 else 1)


def test_the_score_not_the_gain_enters_the_partial_sum():
  # Item 0: candidates c0, c1, c2 with s = 4, 2, 1, N = 1, J = 2; item 1 has
  # no candidates and keeps paths {1, 5}, so |c1| = 1. alpha makes the
  # penalty gap between c1 and c2 equal 0.25. With the score as the partial
  # sum (4), c1 gains log(6/4) - log... = 0.405 vs c2's 0.223: the gap 0.18
  # < 0.25 and c2 wins. Adding the gain (log 4) instead would make the gap
  # 0.35 and pick c1 (the known Scala port's bug).
  alpha = 0.25 / 3.5
  paths = np.array([[0, 1, 2], [-1, -1, -1]])
  scores = np.array([[4.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
  got, _ = em.penalized_assignment(paths, scores, [1, 1],
                                   np.array([[7, 8], [1, 5]]), alpha, 1)
  np.testing.assert_array_equal(got, [[0, 2], [1, 5]])


def test_the_penalty_prevents_collapse():
  rng = np.random.default_rng(0)
  num_items, top_s = 200, 8
  # Every item prefers path 0, then path 1, ... (a collapsing score table).
  paths = np.tile(np.arange(top_s), (num_items, 1))
  scores = np.tile(2.0 ** -np.arange(top_s), (num_items, 1)) * (
      1 + 0.01 * rng.random((num_items, 1)))
  counts = np.full(num_items, 5)
  current = np.zeros((num_items, 1), np.int64)
  free, _ = em.penalized_assignment(paths, scores, counts, current, 0.0, 3)
  assert em.path_size_stats(free, 64)["top_path_size"] == num_items
  penalised, _ = em.penalized_assignment(paths, scores, counts, current,
                                         1e-4, 3)
  stats = em.path_size_stats(penalised, 64)
  assert stats["used_paths"] >= 4
  assert stats["top_path_size"] <= num_items / 3


def _planted_world(num_clusters=16, per_cluster=4, num_users=600,
                   events=8, seed=0):
  """Each user draws a planted cluster and views `events` of its items."""
  rng = np.random.default_rng(seed)
  cluster_of_user = rng.integers(0, num_clusters, num_users)
  users = np.repeat(np.arange(num_users), events)
  items = (np.repeat(cluster_of_user, events) * per_cluster +
           rng.integers(0, per_cluster, num_users * events))
  times = np.tile(np.arange(events), num_users)
  return Interactions(users, items, timestamp=times)


def test_em_recovers_a_planted_structure():
  keras.utils.set_random_seed(0)
  clusters, per_cluster = 16, 4
  log = _planted_world(clusters, per_cluster)
  num_items = clusters * per_cluster
  model = DeepRetrievalModel(
      num_items, num_nodes=4, depth=2, num_paths=1, beam_size=4,
      score_paths=4, score_decay=0.999, embedding_dim=16, gru_units=16,
      user_dim=16, rerank_dim=16, hidden_units=(32,), softmax="sampled",
      num_sampled=10, seed=0)
  counts = np.bincount(log.item, minlength=num_items)
  model.set_item_counts(counts)
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  data = pipeline.training_dataset(log, batch_size=128, history_length=8,
                                   repeat=True, drop_remainder=True)
  callback = em.EMCallback(counts, alpha=1.0, sweeps=3, every_epochs=1,
                           verbose=False)
  model.fit(data, epochs=6, steps_per_epoch=40, callbacks=[callback],
            verbose=0)
  pi = model.assignment.item_paths.numpy()[:, 0].reshape(clusters,
                                                         per_cluster)
  majority = [np.bincount(row).argmax() for row in pi]
  purity = np.mean([(row == m).mean() for row, m in zip(pi, majority)])
  # Items of one planted cluster share a path, and clusters do not merge.
  assert purity >= 0.9, pi
  assert len(set(majority)) >= 14, pi
  rng = np.random.default_rng(0)
  random_rows = rng.integers(0, 16, (clusters, per_cluster))
  assert np.mean([(r == np.bincount(r).argmax()).mean()
                  for r in random_rows]) < 0.6
  # Beam search (greedy) on a cluster's history lands on its path.
  history = tf.constant([[8, 9, 10, 11, 8]], tf.int32)       # cluster 2
  items, _, _ = model.retrieve(history, k=per_cluster, beam_size=1,
                               rerank=False)
  items = items.numpy()[0]
  assert set(items[items >= 0]) == set(
      np.flatnonzero(model.assignment.item_paths.numpy()[:, 0] ==
                     majority[2]))
  assert len(set(items[items >= 0]) & {8, 9, 10, 11}) >= 3
