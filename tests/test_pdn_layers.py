"""PDN's nets (Eq. 8-11, Sec. 4.5), MEG (Eq. 10) and Eq. 12-13."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from pdn_tf import layers as L


def _mlp_on_concat(net, parts):
  """The same net as a plain Dense stack on CAT(parts) (NumPy)."""
  w = np.concatenate([layer.kernel.numpy() for layer in net.first], axis=0)
  x = np.concatenate(parts, axis=-1) @ w + net.first[0].bias.numpy()
  x = np.maximum(x, 0.0)
  for layer in net.hidden:
    x = np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0.0)
  out = net.output_layer
  return (x @ out.kernel.numpy() + out.bias.numpy())[..., 0]


def test_trigger_net_shapes_and_equals_mlp_on_concatenation():
  rng = np.random.default_rng(0)
  user = rng.normal(size=(3, 8)).astype(np.float32)
  behaviour = rng.normal(size=(3, 5, 4)).astype(np.float32)
  trigger = rng.normal(size=(3, 5, 6)).astype(np.float32)
  net = L.TriggerNet([16, 8])
  t = net(user, behaviour, trigger).numpy()
  assert t.shape == (3, 5)
  expected = _mlp_on_concat(
      net, [np.broadcast_to(user[:, None], (3, 5, 8)), behaviour, trigger])
  np.testing.assert_allclose(t, expected, rtol=1e-5, atol=1e-5)


def test_similarity_net_broadcasts_and_equals_pairwise():
  rng = np.random.default_rng(1)
  trigger = rng.normal(size=(2, 1, 4, 6)).astype(np.float32)
  target = rng.normal(size=(2, 3, 1, 6)).astype(np.float32)
  cooc = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  net = L.SimilarityNet([16, 8])
  s = net(trigger, cooc, target).numpy()
  assert s.shape == (2, 3, 4)
  # the same pairs, flattened to [P, d] (the I2I index's call)
  flat = net(np.broadcast_to(trigger, (2, 3, 4, 6)).reshape(-1, 6),
             cooc.reshape(-1, 5),
             np.broadcast_to(target, (2, 3, 4, 6)).reshape(-1, 6)).numpy()
  np.testing.assert_allclose(s.reshape(-1), flat, rtol=1e-5, atol=1e-5)
  expected = _mlp_on_concat(net, [np.broadcast_to(trigger, (2, 3, 4, 6)),
                                  cooc,
                                  np.broadcast_to(target, (2, 3, 4, 6))])
  np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)


def test_direct_and_bias_net_shapes():
  rng = np.random.default_rng(2)
  direct = L.DirectNet([16], output_dim=8)
  d = direct(rng.normal(size=(4, 10)).astype(np.float32),
             rng.normal(size=(4, 7, 12)).astype(np.float32))
  assert d.shape == (4, 7)
  p = direct.user_vector(np.ones((4, 10), np.float32))
  assert p.shape == (4, 8)
  bias = L.BiasNet([4])
  assert bias(rng.normal(size=(4, 9)).astype(np.float32)).shape == (4,)


@pytest.mark.parametrize("cls, args", [
    (L.TriggerNet, ([8, 4],)), (L.SimilarityNet, ([8],)),
    (L.DirectNet, ([8], 4)), (L.BiasNet, ([3],))])
def test_layers_serialize(cls, args):
  layer = cls(*args, name="x")
  config = keras.layers.serialize(layer)
  restored = keras.layers.deserialize(config)
  assert type(restored) is cls
  assert restored.get_config() == layer.get_config()


def test_meg_identity():
  t = np.linspace(-6, 6, 25)
  s = np.linspace(5, -7, 25)
  got = L.path_weight(tf.constant(t), tf.constant(s)).numpy()
  np.testing.assert_allclose(got, np.log1p(np.exp(t) * np.exp(s)),
                             rtol=1e-12)
  # no overflow where e^t e^s would be inf
  big = L.path_weight(tf.constant([400.0]), tf.constant([400.0])).numpy()
  np.testing.assert_allclose(big, [800.0])


def test_relevance_eq12_masks_padding_and_adds_softplus_terms():
  direct = tf.constant([0.3, -2.0])
  paths = tf.constant([[1.0, 2.0, 50.0], [0.5, 0.25, 7.0]])
  mask = tf.constant([[True, True, False], [True, False, False]])
  bias = tf.constant([1.0, -1.0])
  y = L.relevance(direct, paths, mask, bias).numpy()
  sp = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(
      y, [sp(0.3) + 3.0 + sp(1.0), sp(-2.0) + 0.5 + sp(-1.0)], rtol=1e-6)
  assert L.relevance(None, paths).numpy().tolist() == [53.0, 7.75]


def test_eq13_valid_probabilities_and_finite_loss_at_extremes():
  y = tf.constant([0.0, 1e-30, 1e-8, 1e-3, 1.0, 30.0, 1e4, 3e38])
  p = L.click_probability(y).numpy()
  assert np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(p))
  assert p[0] == 0.0 and p[-1] == 1.0
  for label in (0.0, 1.0):
    with tf.GradientTape() as tape:
      tape.watch(y)
      loss = L.pdn_cross_entropy(tf.fill(tf.shape(y), label), y)
    assert np.all(np.isfinite(loss.numpy())), (label, loss.numpy())
    assert np.all(np.isfinite(tape.gradient(loss, y).numpy()))
  # moderate y: the textbook cross-entropy of p = 1 - exp(-y)
  y = np.array([0.1, 1.0, 3.0])
  p = 1 - np.exp(-y)
  np.testing.assert_allclose(
      L.pdn_cross_entropy(tf.ones(3, tf.float64), tf.constant(y)).numpy(),
      -np.log(p), rtol=1e-6)
  np.testing.assert_allclose(
      L.pdn_cross_entropy(tf.zeros(3, tf.float64), tf.constant(y)).numpy(),
      -np.log(1 - p), rtol=1e-6)
  assert float(L.pdn_cross_entropy(tf.ones(1), tf.zeros(1))[0]) < 17.0


def test_nets_work_inside_tf_function():
  net = L.SimilarityNet([8])
  fn = tf.function(lambda a, b, c: net(a, b, c))
  out = fn(tf.ones([2, 1, 3, 4]), tf.ones([2, 5, 3, 2]), tf.ones([2, 5, 1, 4]))
  assert out.shape == (2, 5, 3)
