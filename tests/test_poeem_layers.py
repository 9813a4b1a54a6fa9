"""Poeem's indexing layer: rotation, quantizers, STE, distortion loss."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from poeem_tf.layers import (CoarseQuantizer, EmbeddingIndexLayer,
                             GivensRotation, ProductQuantizer)


def _reference_t(x, rotation, centroids, codebooks):
  """NumPy T(x) (Eq. 6): rotate, nearest centroid, PQ of the residual,
  decode, rotate back; also the codes."""
  rotated = x @ rotation.T
  coarse = ((rotated[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
  residual = rotated - centroids[coarse]
  parts = np.split(residual, codebooks.shape[0], axis=1)
  codes = np.stack([((p[:, None] - cb[None]) ** 2).sum(-1).argmin(1)
                    for p, cb in zip(parts, codebooks)], axis=1)
  decoded = centroids[coarse] + np.concatenate(
      [cb[c] for cb, c in zip(codebooks, codes.T)], axis=1)
  return decoded @ rotation, coarse, codes


def test_t_of_x_equals_numpy_reference():
  layer = EmbeddingIndexLayer(8, num_centroids=5, num_subspaces=4,
                              num_codewords=6)
  x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
  layer(x)
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
  layer.rotation.rotation.assign(q.astype(np.float32))
  got = layer.encode(x)
  want, coarse, codes = _reference_t(x, q, layer.coarse.centroids.numpy(),
                                     layer.product.codebooks.numpy())
  np.testing.assert_allclose(got["quantized"].numpy(), want, atol=1e-5)
  np.testing.assert_array_equal(got["coarse_codes"].numpy(), coarse)
  np.testing.assert_array_equal(got["pq_codes"].numpy(), codes)
  # Forward: H(x) = T(x); the loss is the mean squared distortion.
  np.testing.assert_allclose(layer(x).numpy(), want, atol=1e-5)
  np.testing.assert_allclose(layer.losses[-1].numpy(),
                             ((want - x) ** 2).sum(1).mean(), rtol=1e-4)


def test_straight_through_and_distortion_gradients():
  layer = EmbeddingIndexLayer(8, 4, 2, 3, rotation=True)
  x = tf.constant(np.random.default_rng(2).normal(size=(16, 8)), tf.float32)
  layer(x)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    tape.watch(layer.rotation.rotation)
    out = layer(x)
    task = tf.reduce_sum(out * tf.range(8, dtype=tf.float32))
    distortion = layer.losses[-1]
  # Eq. 7: the task gradient reaches x unchanged and no centroid.
  np.testing.assert_allclose(tape.gradient(task, x).numpy(),
                             np.tile(np.arange(8.0), (16, 1)))
  assert tape.gradient(task, layer.coarse.centroids) is None or not np.any(
      tape.gradient(task, layer.coarse.centroids).numpy())
  # The distortion loss reaches the centroids, codebooks and rotation only.
  for variable in (layer.coarse.centroids, layer.product.codebooks,
                   layer.rotation.rotation):
    gradient = tf.convert_to_tensor(tape.gradient(distortion, variable))
    assert np.abs(gradient.numpy()).sum() > 0
  assert tape.gradient(distortion, x) is None


def test_disabled_layer_is_the_identity_without_loss():
  layer = EmbeddingIndexLayer(4, 2, 2, 2, enabled=False)
  x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
  np.testing.assert_allclose(layer(x).numpy(), x)
  assert float(layer.losses[-1]) == 0.0
  layer.enable()
  assert not np.allclose(layer(x).numpy(), x)


def test_givens_steps_descend_and_stay_orthonormal():
  rotation = GivensRotation(16)
  target, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(16, 16)))
  target[:, 0] *= np.sign(np.linalg.det(target))  # a rotation: det = +1
  target = tf.constant(target, tf.float32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      tape.watch(rotation.rotation)
      loss = tf.reduce_sum(tf.square(rotation.rotation - target))
    rotation.apply_gradient(tape.gradient(loss, rotation.rotation), 0.05)
    return loss

  losses = [float(step()) for _ in range(3000)]
  r = rotation.rotation.numpy()
  np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-5)
  assert losses[-1] < 0.05 * losses[0]


def test_construction_errors_name_the_broken_constraint():
  with pytest.raises(ValueError, match="d=10 must be divisible by D=4"):
    EmbeddingIndexLayer(10, 4, 4, 8)
  with pytest.raises(ValueError, match="num_centroids"):
    CoarseQuantizer(0, 4)
  with pytest.raises(ValueError, match="K >= 1"):
    ProductQuantizer(2, 0, 4)


def test_layers_round_trip_through_config():
  layer = EmbeddingIndexLayer(8, 4, 2, 3, rotation=False,
                              distortion_weight=0.5, enabled=False)
  clone = keras.layers.deserialize(keras.layers.serialize(layer))
  assert clone.get_config() == layer.get_config()
  assert clone.rotation is None


def test_a_zero_gradient_leaves_the_rotation_unchanged():
  rotation = GivensRotation(6)
  rotation.apply_gradient(tf.zeros([6, 6]), 0.1)
  np.testing.assert_allclose(rotation.rotation.numpy(), np.eye(6), atol=1e-7)


def test_moving_averages_take_centroids_to_their_members_means():
  layer = EmbeddingIndexLayer(4, num_centroids=3, num_subspaces=2,
                              num_codewords=2, rotation=False,
                              ema_decay=0.5)
  x = np.random.default_rng(6).normal(size=(60, 4)).astype(np.float32)
  layer(x)
  layer.reset_averages()
  for _ in range(40):
    codes = layer.encode(x)
    layer(x, training=True)
  coarse = codes["coarse_codes"].numpy()
  centroids = layer.coarse.centroids.numpy()
  for k in np.unique(coarse):
    np.testing.assert_allclose(centroids[k], x[coarse == k].mean(0),
                               atol=1e-3)
  # Inference calls leave the averages alone.
  before = layer.coarse.centroids.numpy().copy()
  layer(x * 3.0)
  np.testing.assert_array_equal(layer.coarse.centroids.numpy(), before)


def test_gradient_update_keeps_centroids_trainable():
  ema = EmbeddingIndexLayer(4, 2, 2, 2)
  by_gradient = EmbeddingIndexLayer(4, 2, 2, 2, centroid_update="gradient")
  assert not ema.coarse.trainable_weights
  assert by_gradient.coarse.trainable_weights
  with pytest.raises(ValueError, match="centroid_update"):
    EmbeddingIndexLayer(4, 2, 2, 2, centroid_update="kmeans")


def test_the_layer_remembers_the_codes_of_the_items_it_quantizes():
  layer = EmbeddingIndexLayer(4, 3, 2, 2, num_items=6,
                              centroid_update="gradient")
  x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)), tf.float32)
  layer(x, training=True, item_ids=tf.constant([4, 1, 2]))
  coarse, pq = layer.item_codes()
  codes = layer.encode(x)
  np.testing.assert_array_equal(coarse[[4, 1, 2]],
                                codes["coarse_codes"].numpy())
  np.testing.assert_array_equal(pq[[4, 1, 2]], codes["pq_codes"].numpy())
  assert (coarse[[0, 3, 5]] == -1).all()
  layer(x, training=False, item_ids=tf.constant([0, 3, 5]))  # inference
  assert (layer.item_codes()[0][[0, 3, 5]] == -1).all()
  clone = EmbeddingIndexLayer.from_config(layer.get_config())
  assert clone.num_items == 6
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_items"):
    layer(x, training=True, item_ids=tf.constant([0, 6, 1]))
  layer.enable()                      # new centroids: the codes are stale
  assert (layer.item_codes()[0] == -1).all()
  with pytest.raises(ValueError, match="keeps no codes"):
    EmbeddingIndexLayer(4, 3, 2, 2).item_codes()
