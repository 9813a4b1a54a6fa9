"""Index layers against NumPy references; serialization; big indexes."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.index import BruteForceIndex


def _reference(queries, items, k, exclude=None, cosine=False):
  if cosine:
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    items = items / np.linalg.norm(items, axis=1, keepdims=True)
  scores = queries @ items.T
  if exclude is not None:
    for row, banned in enumerate(exclude):
      scores[row, banned[banned >= 0]] = -np.inf
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, top, axis=1), top


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_brute_force_equals_numpy(metric, chunk_size):
  rng = np.random.default_rng(0)
  items = rng.normal(size=(53, 6)).astype(np.float32)
  queries = rng.normal(size=(9, 6)).astype(np.float32)
  exclude = rng.integers(-1, 53, size=(9, 4)).astype(np.int32)
  index = BruteForceIndex(53, 6, metric=metric, max_k=20,
                          chunk_size=chunk_size)
  index.set_embeddings(items)
  for ban in (None, exclude):
    scores, ids = index(queries, 10, exclude=ban)
    want_scores, want_ids = _reference(queries, items, 10, ban,
                                       cosine=metric == "cosine")
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(ids.numpy(), want_ids)


def test_k_is_a_tensor_in_a_traced_function_and_checked():
  index = BruteForceIndex(30, 4, max_k=8, chunk_size=11)
  index.set_embeddings(np.random.default_rng(1).normal(size=(30, 4)))
  search = tf.function(lambda q, k: index(q, k), input_signature=[
      tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([], tf.int32)])
  queries = tf.ones([2, 4])
  assert search(queries, tf.constant(3))[1].shape == (2, 3)
  assert search(queries, tf.constant(8))[1].shape == (2, 8)
  with pytest.raises(tf.errors.InvalidArgumentError, match="k must be <= 8"):
    search(queries, tf.constant(9))
  with pytest.raises(tf.errors.InvalidArgumentError, match="k must be >= 1"):
    search(queries, tf.constant(0))


def test_construction_and_loading_errors():
  with pytest.raises(ValueError, match="metric"):
    BruteForceIndex(3, 2, metric="l2")
  index = BruteForceIndex(3, 2)
  with pytest.raises(ValueError, match="expects \\(3, 2\\)"):
    index.set_embeddings(np.zeros((4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    index.set_embeddings(np.full((3, 2), np.nan))


def test_config_and_checkpoint_round_trip(tmp_path):
  index = BruteForceIndex(20, 3, metric="cosine", max_k=5, chunk_size=6)
  index.set_embeddings(np.random.default_rng(2).normal(size=(20, 3)))
  clone = keras.layers.deserialize(keras.layers.serialize(index))
  assert clone.get_config() == index.get_config()
  path = tf.train.Checkpoint(index=index).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(index=clone).read(path).assert_consumed()
  queries = tf.random.normal([4, 3], seed=1)
  for a, b in zip(index(queries, 5), clone(queries, 5)):
    np.testing.assert_allclose(a.numpy(), b.numpy())


def test_a_1m_x_64_index_exports_as_variables(tmp_path):
  index = BruteForceIndex(1_000_000, 64, max_k=100, chunk_size=250_000)
  module = tf.Module()
  module.index = index
  module.search = tf.function(
      lambda q: index(q, 10),
      input_signature=[tf.TensorSpec([None, 64], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / "big"))
  graph_bytes = (tmp_path / "big" / "saved_model.pb").stat().st_size
  assert graph_bytes < 10 * 2**20  # the 256 MB of vectors are variables
