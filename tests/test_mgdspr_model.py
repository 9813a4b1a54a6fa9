"""MGDSPR loss pieces against NumPy, hard-negative mixing, the model's
switches, bad input and a short training run."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from mgdspr_tf import model as model_lib
from mgdspr_tf.model import MGDSPRModel

D = 8


def _np_softmax_loss(user, positive, negatives, mask, tau):
  pos = (user * positive).sum(1) / tau
  if negatives.ndim == 2:
    neg = user @ negatives.T / tau
  else:
    neg = np.einsum("bd,bmd->bm", user, negatives) / tau
  losses = []
  for b in range(len(user)):
    logits = np.concatenate([[pos[b]], neg[b][mask[b]]])
    losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max()
                  - pos[b])
  return np.mean(losses)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_temperature_softmax_equals_numpy(shared, tau):
  rng = np.random.default_rng(0)
  user = rng.normal(size=(5, D)).astype(np.float32)
  positive = rng.normal(size=(5, D)).astype(np.float32)
  negatives = rng.normal(size=(7, D) if shared else (5, 7, D)).astype(
      np.float32)
  mask = rng.random((5, 7)) < 0.7
  got = model_lib.temperature_softmax_loss(user, positive, negatives, mask,
                                           tau).numpy()
  np.testing.assert_allclose(got, _np_softmax_loss(user, positive, negatives,
                                                   mask, tau), rtol=1e-5)


def test_temperature_is_absorbed_by_the_vectors_scale():
  """F is an unnormalised inner product (Sec. 3.4), so the loss at tau
  equals the loss at tau = 1 with the user vector scaled by 1 / tau: a
  model can undo any tau by growing its norms, and tau changes what is
  learnt only through the optimisation (docs/mgdspr.md, "Measured
  results")."""
  rng = np.random.default_rng(3)
  user = rng.normal(size=(4, D)).astype(np.float32)
  positive = rng.normal(size=(4, D)).astype(np.float32)
  negatives = rng.normal(size=(4, 5, D)).astype(np.float32)
  mask = rng.random((4, 5)) < 0.8
  for tau in (0.5, 2.0, 4.0):
    at_tau = model_lib.temperature_softmax_loss(user, positive, negatives,
                                                mask, tau).numpy()
    rescaled = model_lib.temperature_softmax_loss(user / tau, positive,
                                                  negatives, mask,
                                                  1.0).numpy()
    np.testing.assert_allclose(at_tau, rescaled, rtol=1e-5)
  soft = model_lib.temperature_softmax_loss(user, positive, negatives, mask,
                                            2.0).numpy()
  sharp = model_lib.temperature_softmax_loss(user, positive, negatives, mask,
                                             1.0).numpy()
  assert soft != pytest.approx(sharp)


def test_hinge_equals_numpy():
  rng = np.random.default_rng(1)
  user, positive = (rng.normal(size=(4, D)).astype(np.float32)
                    for _ in range(2))
  negatives = rng.normal(size=(4, 6, D)).astype(np.float32)
  mask = rng.random((4, 6)) < 0.6
  got = model_lib.hinge_loss(user, positive, negatives, mask, 0.3).numpy()
  pos = (user * positive).sum(1)[:, None]
  neg = np.einsum("bd,bmd->bm", user, negatives)
  expected = np.maximum(0, 0.3 - pos + neg)[mask].mean()
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_hard_negatives_are_top_n_mixed_with_the_positive():
  rng = np.random.default_rng(2)
  b, m, n, low, high = 6, 10, 4, 0.4, 0.6
  user = rng.normal(size=(b, D)).astype(np.float32)
  positive = rng.normal(size=(b, D)).astype(np.float32)
  pool = rng.normal(size=(m, D)).astype(np.float32)
  mask = rng.random((b, m)) < 0.8
  mask[0] = False
  mask[0, :2] = True  # row 0 has only two negatives
  mixed, alpha, valid, hard = (t.numpy() for t in model_lib.mix_hard_negatives(
      user, positive, pool, mask, n, low, high))
  assert mixed.shape == (b, n, D) and alpha.shape == (b, n, 1)
  assert ((alpha >= low) & (alpha <= high)).all()
  assert len(np.unique(alpha)) == b * n  # drawn per row and per negative
  scores = np.where(mask, user @ pool.T, -np.inf)
  for row in range(b):
    k = min(n, mask[row].sum())
    top = np.argsort(-scores[row], kind="stable")[:k]
    assert set(hard[row, :k]) == set(top)
    assert valid[row].sum() == k and mask[row, hard[row, valid[row]]].all()
  # I_mix = alpha h_{i+} + (1 - alpha) h_hard: the positive item, not q_u.
  expected = alpha * positive[:, None] + (1 - alpha) * pool[hard]
  np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)


def test_in_batch_mask_excludes_the_row_and_repeated_items():
  mask = model_lib.in_batch_negative_mask(tf.constant([3, 5, 3])).numpy()
  assert mask.tolist() == [[False, True, False], [True, False, True],
                           [False, True, False]]


def _model(**kwargs):
  args = dict(num_items=40, attribute_sizes={"brand": 4}, title_length=4,
              dim=D, num_buckets=512, num_heads=2, max_real=4, max_short=5,
              max_long=6, num_hard=3)
  args.update(kwargs)
  m = MGDSPRModel(**args)
  m.set_catalogue({"brand": np.arange(40) % 4},
                  [f"thing{i % 9} brand{i % 4}" for i in range(40)])
  return m


def _batch(rng, b=8, empty=False):
  def seq(n):
    ids = rng.integers(0, 40, (b, n)).astype(np.int32)
    return np.full_like(ids, -1) if empty else ids
  return {"query": tf.constant([f"thing{i % 9}" for i in range(b)]),
          "history_query": tf.constant(["thing1 thing2"] * b),
          "real_time": seq(4), "short_term": seq(5), "long_term": seq(6),
          "item_id": np.arange(b, dtype=np.int32)}


@pytest.mark.parametrize("switches", [
    {}, {"mgs": False}, {"behaviour": False}, {"zero_vector": False},
    {"loss": "hinge", "num_hard": 0}, {"similarity": "cosine"}])
def test_switches_give_finite_vectors_and_loss(switches):
  rng = np.random.default_rng(3)
  m = _model(**switches)
  for empty in (False, True):  # users with no history at all
    batch = _batch(rng, empty=empty)
    user = m.user_vector(batch).numpy()
    assert user.shape == (8, D) and np.isfinite(user).all()
    assert np.isfinite(m.compute_mgdspr_loss(batch).numpy())
  clone = MGDSPRModel.from_config(m.get_config())
  assert clone.get_config() == m.get_config()


def test_evaluation_functions_are_traced_once_per_model():
  m = _model()
  batch = {k: v for k, v in _batch(np.random.default_rng(5)).items()
           if k != "item_id"}
  first = m.all_item_vectors(batch_size=16)  # 40 items: batches 16, 16, 8
  traces = m.traced("item_vectors").experimental_get_tracing_count()
  np.testing.assert_allclose(m.all_item_vectors(batch_size=16), first)
  np.testing.assert_allclose(
      first[:8], m.item_vectors(np.arange(8)).numpy(), rtol=1e-5, atol=1e-6)
  users = [m.traced("user_vector")(batch).numpy()]
  traces = (traces, m.traced("user_vector").experimental_get_tracing_count())
  users += [m.traced("user_vector")(batch).numpy() for _ in range(2)]
  np.testing.assert_allclose(users[2], m.user_vector(batch).numpy(),
                             rtol=1e-5, atol=1e-6)
  # Every epoch's evaluation reuses the same functions (no retrace).
  assert m.traced("item_vectors") is m.traced("item_vectors")
  assert (m.traced("item_vectors").experimental_get_tracing_count(),
          m.traced("user_vector").experimental_get_tracing_count()) == traces
  with pytest.raises(ValueError, match="item_vectors', 'user_vector"):
    m.traced("call")


def test_cosine_similarity_gives_unit_vectors_and_keeps_tau():
  rng = np.random.default_rng(7)
  dot, cosine = _model(num_hard=0), _model(num_hard=0, similarity="cosine")
  batch = _batch(rng)
  dot(batch)
  cosine(batch)
  cosine.set_weights(dot.get_weights())  # same towers, only F differs
  user = cosine.user_vector(batch)
  items = cosine.item_vectors(batch["item_id"])
  np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
  raw = dot.user_vector(batch).numpy()
  np.testing.assert_allclose(
      user.numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True),
      atol=1e-5)
  # Unit vectors cannot grow to absorb tau: the loss at tau = 4 is the
  # loss of logits F / 4, not that of F.
  mask = model_lib.in_batch_negative_mask(batch["item_id"])
  losses = [model_lib.temperature_softmax_loss(user, items, items, mask,
                                               tau).numpy()
            for tau in (0.1, 4.0)]
  assert losses[0] != pytest.approx(losses[1], rel=1e-3)
  assert abs(losses[1] - np.log(8)) <= 2 / 4.0  # |F / tau| <= 1 / 4


def test_sequences_longer_than_the_maxima_keep_the_most_recent():
  rng = np.random.default_rng(4)
  m = _model()
  batch = _batch(rng)
  longer = dict(batch)
  older = rng.integers(0, 40, (8, 7)).astype(np.int32)
  pad = np.full((8, 3), -1, np.int32)
  longer["real_time"] = np.concatenate([older, batch["real_time"], pad], 1)
  np.testing.assert_allclose(m.user_vector(longer).numpy(),
                             m.user_vector(batch).numpy(), atol=1e-5)
  got = model_lib.truncate_recent(tf.constant([[1, 2, 3, -1], [4, -1, -1,
                                                               -1]]), 2)
  assert got.numpy().tolist() == [[2, 3], [4, -1]]


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="loss"):
    _model(loss="bpr")
  with pytest.raises(ValueError, match="mix_low"):
    _model(mix_low=0.7, mix_high=0.6)
  with pytest.raises(ValueError, match="temperature"):
    _model(temperature=0)
  with pytest.raises(ValueError, match="similarity"):
    _model(similarity="euclidean")
  m = _model()
  with pytest.raises(ValueError, match="titles"):
    m.set_catalogue({"brand": np.zeros(40, int)}, ["x"])
  with pytest.raises(ValueError, match="outside"):
    m.set_catalogue({"brand": np.full(40, 9)}, ["x"] * 40)


def test_every_variable_gets_a_gradient():
  rng = np.random.default_rng(5)
  m = _model()
  batch = _batch(rng)
  with tf.GradientTape() as tape:
    loss = m.compute_mgdspr_loss(batch, training=True)
  grads = tape.gradient(loss, m.trainable_variables)
  missing = [v.name for v, g in zip(m.trainable_variables, grads) if g is None]
  assert not missing


def test_training_lowers_the_loss():
  # The behaviour encoders are left out only to keep the traced train step
  # cheap on a shared CPU; their gradients are checked above.
  rng = np.random.default_rng(6)
  m = _model(behaviour=False)
  m.compile(optimizer=model_lib.paper_optimizer(0.1))
  batch = _batch(rng)
  data = tf.data.Dataset.from_tensors(batch).repeat(20)
  before = m.compute_mgdspr_loss(batch).numpy()
  history = m.fit(data, epochs=1, verbose=0).history["loss"]
  assert np.isfinite(history).all()
  assert m.compute_mgdspr_loss(batch).numpy() < before
