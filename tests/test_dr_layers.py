"""Deep Retrieval layers: beam search (Algorithm 1) against exhaustive
search and a plain-Python reference, construction errors, pi and its
inverted index, the streaming score estimate, saving."""

import itertools

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from dr_tf import layers as dr
from dr_tf.model import DeepRetrievalModel


def _tiny_structure(k=3, depth=3, seed=0):
  tf.random.set_seed(seed)
  structure = dr.StructureModel(k, depth, hidden_units=(8,))
  users = tf.random.normal([5, 6], seed=seed)
  structure(users)
  return structure, users


def _exhaustive(structure, users):
  k, depth = structure.num_nodes, structure.depth
  every = np.array(list(itertools.product(range(k), repeat=depth)), np.int32)
  log_probs = structure.path_log_prob(
      users, tf.broadcast_to(every[None], [users.shape[0]] + list(
          every.shape))).numpy()
  return every, log_probs


def test_path_probabilities_sum_to_one():
  structure, users = _tiny_structure()
  _, log_probs = _exhaustive(structure, users)
  np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("k, depth", [(3, 3), (2, 4), (4, 2), (5, 1)])
def test_full_beam_equals_exhaustive_search(k, depth):
  structure, users = _tiny_structure(k, depth)
  every, log_probs = _exhaustive(structure, users)
  order = np.argsort(-log_probs, axis=1, kind="stable")
  paths, scores = dr.beam_search(structure, users, k ** depth)
  np.testing.assert_array_equal(paths.numpy(), every[order])
  np.testing.assert_allclose(scores.numpy(),
                             np.take_along_axis(log_probs, order, 1),
                             atol=1e-5)


def _python_beam_search(structure, user, beam):
  """Algorithm 1, one user, lists and dicts only (log-probabilities)."""
  def next_log_probs(prefix):
    codes = tf.constant([[list(prefix)]], tf.int32)[:, :, :len(prefix)]
    return structure.layer_log_probs(user[None], codes).numpy()[0, 0]

  first = structure.layer_log_probs(
      user[None], tf.zeros([1, 0], tf.int32)).numpy()[0]
  # Ties (e.g. a dead ReLU layer's uniform logits) keep the earlier
  # candidate first, as tf.math.top_k does: a stable sort on the score.
  beams = sorted(((float(lp), (c,)) for c, lp in enumerate(first)),
                 key=lambda t: -t[0])[:beam]
  for _ in range(1, structure.depth):
    grown = []
    for score, prefix in beams:
      for c, lp in enumerate(next_log_probs(prefix)):
        grown.append((score + float(lp), prefix + (c,)))
    beams = sorted(grown, key=lambda t: -t[0])[:beam]
  return beams


@pytest.mark.parametrize("beam", [1, 2, 4, 7])
def test_beam_search_equals_python_algorithm_1(beam):
  structure, users = _tiny_structure(3, 3, seed=1)
  paths, scores = dr.beam_search(structure, users, beam)
  for row in range(users.shape[0]):
    expected = _python_beam_search(structure, users[row], beam)
    assert [tuple(p) for p in paths.numpy()[row]] == [p for _, p in expected]
    np.testing.assert_allclose(scores.numpy()[row], [s for s, _ in expected],
                               atol=1e-5)
  # The returned scores are the paths' own log-likelihoods (Eq. 1) ...
  np.testing.assert_allclose(scores.numpy(),
                             structure.path_log_prob(users, paths).numpy(),
                             atol=1e-5)
  # ... and the same inside tf.function.
  traced = tf.function(lambda u: dr.beam_search(structure, u, beam))(users)
  np.testing.assert_array_equal(traced[0].numpy(), paths.numpy())


def test_greedy_is_beam_one():
  structure, users = _tiny_structure(4, 3, seed=2)
  paths, _ = dr.beam_search(structure, users, 1)
  prefix = tf.zeros([users.shape[0], 1, 0], tf.int32)
  for d in range(3):
    best = tf.argmax(structure.layer_log_probs(users, prefix), axis=-1,
                     output_type=tf.int32)
    prefix = tf.concat([prefix, best[:, :, tf.newaxis]], axis=-1)
  np.testing.assert_array_equal(paths.numpy(), prefix.numpy())


def test_multi_path_likelihood_is_log_of_the_sum():
  structure, users = _tiny_structure()
  paths = tf.constant(np.random.default_rng(0).integers(0, 3, (5, 2, 3)),
                      tf.int32)
  each = np.exp(structure.path_log_prob(users, paths).numpy())
  np.testing.assert_allclose(
      structure.multi_path_log_likelihood(users, paths).numpy(),
      np.log(each.sum(axis=1)), atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_nodes=1), "K (nodes per layer) must be >= 2"),
    (dict(num_nodes=3, depth=2, beam_size=10), "B (beam size) must be in "
     "1..K^D = 9"),
    (dict(num_nodes=3, depth=2, num_paths=10, beam_size=2),
     "J (paths per item) must be in 1..K^D = 9"),
    (dict(num_nodes=2, depth=40), "do not fit in int32"),
    (dict(num_nodes=3, depth=2, beam_size=2, score_paths=2, num_paths=3),
     "S (score paths)"),
])
def test_bad_structures_fail_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("^", r"\^").replace(
      "(", r"\(").replace(")", r"\)")):
    DeepRetrievalModel(100, **kwargs)


def test_beam_search_rejects_a_beam_beyond_k_to_the_d():
  structure, users = _tiny_structure(2, 2)
  with pytest.raises(ValueError, match="B .beam size. must be in 1..K"):
    dr.beam_search(structure, users, 5)


def test_path_ids_round_trip():
  codes = np.random.default_rng(0).integers(0, 7, (20, 3)).astype(np.int32)
  ids = dr.path_ids(codes, 7)
  np.testing.assert_array_equal(dr.path_codes(ids, 7, 3), codes)
  np.testing.assert_array_equal(
      dr.path_ids(tf.constant(codes), 7).numpy(), ids)
  np.testing.assert_array_equal(ids, codes[:, 0] * 49 + codes[:, 1] * 7 +
                                codes[:, 2])


def _check_index_agrees_with_pi(assignment):
  pi = assignment.item_paths.numpy()
  used = np.unique(pi)
  items = assignment.items_of(tf.constant(used[:, None])).numpy()
  for path, row in zip(used, items):
    expected = np.flatnonzero((pi == path).any(axis=1))
    np.testing.assert_array_equal(row[row >= 0], expected)
  # Every item is found under each of its own paths.
  found = assignment.items_of(tf.constant(pi)).numpy()
  for v in range(len(pi)):
    assert (found[v] == v).sum() == pi.shape[1]
  unused = np.setdiff1d(np.arange(assignment.total_paths), used)[:3]
  assert (assignment.items_of(tf.constant(unused[None])).numpy() < 0).all()


def test_inverted_index_and_pi_agree():
  assignment = dr.PathAssignment(50, 3, 4, 2, seed=3)
  pi = assignment.item_paths.numpy()
  assert (np.sort(pi, 1)[:, 1:] != np.sort(pi, 1)[:, :-1]).all()
  _check_index_agrees_with_pi(assignment)
  # After an M-step-like reassignment into few, crowded paths.
  rng = np.random.default_rng(1)
  crowded = np.stack([rng.permutation(5)[:3] for _ in range(50)])
  assignment.assign(crowded)
  _check_index_agrees_with_pi(assignment)
  keys, offsets, items = dr.inverted_index(crowded)
  assert np.array_equal(keys[:5], np.arange(5))
  assert offsets[5] == 150 and sorted(items.tolist()) == sorted(
      np.repeat(np.arange(50), 3).tolist())


def test_assign_rejects_bad_mappings():
  assignment = dr.PathAssignment(4, 2, 3, 2)
  with pytest.raises(ValueError, match="assigned the same path twice"):
    assignment.assign(np.array([[1, 2], [3, 3], [0, 1], [4, 5]]))
  with pytest.raises(ValueError, match="path ids must be in 0..8"):
    assignment.assign(np.array([[1, 2], [3, 9], [0, 1], [4, 5]]))
  with pytest.raises(ValueError, match="shape"):
    assignment.assign(np.zeros((4, 3), np.int32))


def _python_streaming(state, item, new_paths, new_scores, top_s, eta):
  """The four steps of Sec. 3's streaming rule for one instance."""
  recorded = state.setdefault(item, {})
  min_score = min(list(recorded.values()) +
                  [0.0] * (top_s - len(recorded)))
  merged = {}
  for c in set(recorded) | set(new_paths):
    if c in recorded and c in new_paths:
      merged[c] = eta * recorded[c] + new_scores[new_paths.index(c)]
    elif c in new_paths:
      merged[c] = eta * min_score + new_scores[new_paths.index(c)]
    else:
      merged[c] = eta * recorded[c]
  state[item] = dict(sorted(merged.items(), key=lambda kv: -kv[1])[:top_s])


def test_streaming_scores_equal_the_one_instance_rule():
  rng = np.random.default_rng(0)
  top_s, eta, num_items = 4, 0.9, 6
  estimator = dr.PathScoreEstimator(num_items, top_s, eta)
  update = tf.function(estimator.update)
  state = {}
  for _ in range(12):
    items = rng.integers(0, num_items, 8)        # repeats within a batch
    paths = np.stack([rng.permutation(10)[:3] for _ in items])
    scores = rng.random((8, 3)).astype(np.float32)
    update(tf.constant(items), tf.constant(paths), tf.constant(scores))
    for v, p, s in zip(items, paths, scores):
      _python_streaming(state, int(v), p.tolist(), s.tolist(), top_s, eta)
  got_paths, got_scores = estimator.paths.numpy(), estimator.scores.numpy()
  for v in range(num_items):
    got = {int(c): float(s) for c, s in zip(got_paths[v], got_scores[v])
           if c >= 0}
    expected = state.get(v, {})
    assert set(got) == set(expected), v
    for c in got:
      assert got[c] == pytest.approx(expected[c], rel=1e-5)


def test_pi_and_index_are_saved_with_the_model(tmp_path):
  model = DeepRetrievalModel(30, num_nodes=3, depth=2, num_paths=2,
                             beam_size=4, score_paths=4, num_sampled=5,
                             embedding_dim=8, gru_units=8, user_dim=8,
                             rerank_dim=8, hidden_units=(8,), seed=1)
  features = {"history": tf.constant([[1, 2, -1]]),
              "history_mask": tf.constant([[True, True, False]]),
              "item_id": tf.constant([3])}
  model(features)
  pi = np.stack([np.random.default_rng(2).permutation(9)[:2]
                 for _ in range(30)])
  model.assignment.assign(pi)
  model.save_weights(str(tmp_path / "w"))
  other = DeepRetrievalModel.from_config(model.get_config())
  other(features)
  assert not np.array_equal(other.assignment.item_paths.numpy(), pi)
  other.load_weights(str(tmp_path / "w"))
  np.testing.assert_array_equal(other.assignment.item_paths.numpy(), pi)
  for name in ("index_keys", "index_offsets", "index_items"):
    np.testing.assert_array_equal(getattr(other.assignment, name).numpy(),
                                  getattr(model.assignment, name).numpy())


def test_in_batch_softmax_equals_a_numpy_reference():
  """Row i: logits u_i . w_{y_j} + b_{y_j} - log Q(y_j) over the batch,
  the other copies of y_i masked out, cross-entropy on the diagonal."""
  tf.random.set_seed(3)
  reranker = dr.SoftmaxReranker(12, 4)
  reranker.item_bias.assign(np.linspace(-1, 1, 12).astype(np.float32))
  query = tf.random.normal([6, 4], seed=4)
  labels = tf.constant([5, 2, 5, 9, 0, 2])     # 5 and 2 repeat
  counts = np.arange(1, 13, dtype=np.float64)
  log_q = tf.constant(np.log(counts / counts.sum()), tf.float32)
  got = reranker.in_batch_loss(query, labels, log_q).numpy()

  w = reranker.item_weights.numpy()[labels.numpy()]
  b = reranker.item_bias.numpy()[labels.numpy()]
  logits = (query.numpy() @ w.T + b[None, :] -
            log_q.numpy()[labels.numpy()][None, :])
  same = labels.numpy()[:, None] == labels.numpy()[None, :]
  logits[same & ~np.eye(6, dtype=bool)] = -np.inf
  log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  expected = -np.mean(np.diag(log_softmax))
  assert got == pytest.approx(expected, rel=1e-4)


def test_in_batch_softmax_trains_and_bad_estimator_fails():
  kwargs = dict(num_nodes=3, depth=2, num_paths=1, beam_size=2,
                score_paths=2, num_sampled=5, embedding_dim=8, gru_units=8,
                user_dim=8, rerank_dim=8, hidden_units=(8,))
  with pytest.raises(ValueError, match="softmax must be one of"):
    DeepRetrievalModel(30, softmax="full", **kwargs)
  model = DeepRetrievalModel(30, softmax="in_batch", **kwargs)
  assert DeepRetrievalModel.from_config(
      model.get_config()).softmax == "in_batch"
  model.compile(optimizer=keras.optimizers.Adam(0.05))
  rng = np.random.default_rng(0)
  features = {"history": tf.constant(rng.integers(0, 30, (32, 4))),
              "history_mask": tf.ones([32, 4], tf.bool),
              "item_id": tf.constant(rng.integers(0, 30, 32))}
  first = model.train_on_batch(features, return_dict=True)
  for _ in range(20):
    last = model.train_on_batch(features, return_dict=True)
  assert np.isfinite(last["softmax_loss"])
  assert last["softmax_loss"] < first["softmax_loss"]

