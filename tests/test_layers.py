"""Shared layers: masking semantics and Keras serialization."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.layers import MLP, MaskedMeanEmbedding, masked_mean


def test_masked_mean_embedding_ignores_padding():
  layer = MaskedMeanEmbedding(5, 3)
  ids = np.array([[1, 2, -1], [4, -1, -1], [-1, -1, -1]])
  out = layer(ids).numpy()
  table = layer.embedding.embeddings.numpy()
  np.testing.assert_allclose(out[0], (table[1] + table[2]) / 2, rtol=1e-6)
  np.testing.assert_allclose(out[1], table[4], rtol=1e-6)
  np.testing.assert_allclose(out[2], np.zeros(3))


def test_masked_mean_embedding_scalar_ids_and_explicit_mask():
  layer = MaskedMeanEmbedding(5, 2)
  table_row = layer(np.array([3])).numpy()[0]
  masked = layer(np.array([[3, 1]]), mask=np.array([[True, False]])).numpy()
  np.testing.assert_allclose(masked[0], table_row, rtol=1e-6)


def test_masked_mean_embedding_rejects_out_of_vocabulary_ids():
  layer = MaskedMeanEmbedding(5, 2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary"):
    layer(np.array([[5]]))


def test_masked_mean_helper_all_masked_is_zero():
  vectors = tf.ones([2, 3, 4])
  mask = tf.constant([[True, False, False], [False, False, False]])
  np.testing.assert_allclose(masked_mean(vectors, mask).numpy(),
                             [[1, 1, 1, 1], [0, 0, 0, 0]])


def test_mlp_normalizes_and_round_trips_config():
  # Seeded: with few ReLU units a random row can come out all zero, and a
  # zero vector has no direction to normalise.
  keras.utils.set_random_seed(3)
  mlp = MLP([32], 4, normalize=True, dropout=0.1)
  out = mlp(tf.random.normal([3, 5])).numpy()
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  clone = MLP.from_config(mlp.get_config())
  assert clone.get_config() == mlp.get_config()


def test_layers_deserialize_by_registered_name():
  layer = MaskedMeanEmbedding(7, 3, name="genres")
  restored = keras.layers.deserialize(keras.layers.serialize(layer))
  assert isinstance(restored, MaskedMeanEmbedding)
  assert restored.get_config() == layer.get_config()


def test_invalid_sizes_are_clear_errors():
  with pytest.raises(ValueError, match="input_dim"):
    MaskedMeanEmbedding(0, 3)
