"""Greedy path retrieval in TF (Eq. 14) against a plain NumPy reference."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from pdn_tf.retrieval import greedy_path_retrieval, popular_pool


def _softplus(x):
  return np.logaddexp(0.0, x)


def reference(t, triggers, exclude, items, scores, pool, m, k, p=None,
              q=None):
  """Eq. 14, one user at a time, with dicts."""
  out_ids, out_scores = [], []
  for b in range(len(t)):
    valid = [(t[b, l], l) for l in range(t.shape[1]) if triggers[b, l] >= 0]
    chosen = sorted(valid, key=lambda x: (-x[0], x[1]))[:m]
    total, order = {}, []
    for weight, l in chosen:
      j = triggers[b, l]
      for i, s in zip(items[j], scores[j]):
        if i < 0:
          continue
        if i not in total:
          total[i] = 0.0
          order.append(i)
        total[i] += _softplus(weight + s)
    for i in pool:
      if i not in total:
        total[i] = 0.0
        order.append(i)
    banned = set(exclude[b].tolist())
    final = {}
    for i in order:
      if i in banned:
        continue
      final[i] = total[i] + (_softplus(p[b] @ q[i]) if p is not None else 0)
    position = {i: n for n, i in enumerate(order)}
    ranked = sorted(final, key=lambda i: (-final[i], position[i]))[:k]
    out_ids.append(ranked + [-1] * (k - len(ranked)))
    out_scores.append([final[i] for i in ranked] +
                      [-np.inf] * (k - len(ranked)))
  return np.array(out_ids), np.array(out_scores)


def _world(seed, num_items=40, width=6, batch=5, length=7):
  rng = np.random.default_rng(seed)
  items = rng.integers(0, num_items, (num_items, width)).astype(np.int32)
  items[rng.random(items.shape) < 0.2] = -1  # empty slots
  scores = rng.normal(size=items.shape).astype(np.float32)
  scores[items < 0] = -np.inf
  triggers = rng.integers(0, num_items, (batch, length)).astype(np.int32)
  triggers[rng.random(triggers.shape) < 0.3] = -1  # padding / unknown
  triggers[1] = -1  # a user with no usable history
  t = rng.normal(size=triggers.shape).astype(np.float32)
  exclude = np.concatenate(
      [triggers, rng.integers(-1, num_items, (batch, 3)).astype(np.int32)], 1)
  pool = popular_pool(rng.integers(0, 50, num_items), 8)
  return t, triggers, exclude, items, scores, pool


@pytest.mark.parametrize("seed, m, k, direct", [
    (0, 3, 10, False), (1, 2, 5, True), (2, 7, 20, True), (3, 10, 8, False)])
def test_tf_equals_numpy_reference(seed, m, k, direct):
  t, triggers, exclude, items, scores, pool = _world(seed)
  p = q = None
  if direct:
    rng = np.random.default_rng(100 + seed)
    p = rng.normal(size=(len(t), 4)).astype(np.float32)
    q = rng.normal(size=(items.shape[0], 4)).astype(np.float32)
  fn = tf.function(greedy_path_retrieval)
  got_scores, got_ids = fn(t, triggers, exclude, items, scores, pool, m, k,
                           user_vectors=p, item_vectors=q)
  want_ids, want_scores = reference(t, triggers, exclude, items, scores,
                                    pool, m, k, p, q)
  np.testing.assert_array_equal(got_ids.numpy(), want_ids)
  np.testing.assert_allclose(got_scores.numpy(), want_scores, rtol=1e-5,
                             atol=1e-5)


def test_empty_history_gets_the_pool_and_short_lists_are_padded():
  t, triggers, exclude, items, scores, pool = _world(4)
  triggers[:] = -1
  exclude[:] = -1
  _, ids = greedy_path_retrieval(t, triggers, exclude, items, scores, pool,
                                 3, 10)
  ids = ids.numpy()
  # no Direct Net: the pool in popularity order, then -1 (k > pool)
  np.testing.assert_array_equal(ids[:, :8], np.tile(pool, (len(ids), 1)))
  assert (ids[:, 8:] == -1).all()


def test_popular_pool_order():
  np.testing.assert_array_equal(popular_pool(np.array([3, 9, 3, 1, 9]), 4),
                                [1, 4, 0, 2])
