"""The index layers' public face: one way to fill them (`from_embeddings` /
`index` / `index_from_codes`), eager calls through one cached trace, the
former method names, and exports that never see the cached function."""

import numpy as np
import pytest

import retrieval_tf
from retrieval_tf.compat import tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.index import (BruteForceIndex, IVFFlatIndex, IVFPQIndex,
                                build_index)
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.models.two_tower_servable import (export_two_tower,
                                                    raw_requests)
from retrieval_tf.serving import check


def test_both_layers_fill_by_from_embeddings_and_index():
  vectors = np.random.default_rng(9).normal(size=(120, 8)).astype(np.float32)
  exact = BruteForceIndex.from_embeddings(vectors, metric="cosine", max_k=20)
  refilled = BruteForceIndex(120, 8, metric="cosine", max_k=20)
  assert refilled.index(vectors) is refilled
  approx = IVFPQIndex.from_embeddings(vectors, num_lists=4, num_subspaces=4,
                                      num_codewords=16, seed=1, max_k=20)
  approx_refilled = IVFPQIndex(120, 8, 4, 4, 16, max_k=20)
  assert approx_refilled.index(vectors, seed=1) is approx_refilled
  flat = IVFFlatIndex.from_embeddings(vectors, num_lists=5, seed=2, max_k=20)
  flat_refilled = IVFFlatIndex(120, 8, 5, max_k=20)
  assert flat_refilled.index(vectors, seed=2) is flat_refilled
  queries = vectors[:5]
  for a, b in [(exact, refilled), (approx, approx_refilled),
               (flat, flat_refilled)]:
    for x, y in zip(a(queries, 7), b(queries, 7)):
      np.testing.assert_array_equal(x.numpy(), y.numpy())
  with pytest.raises(ValueError, match="non-empty"):
    BruteForceIndex.from_embeddings(np.zeros((0, 3)))
  with pytest.raises(ValueError, match="expects \\(120, 8\\)"):
    approx_refilled.index(vectors[:, :4])


@pytest.mark.parametrize("kind", ["brute_force", "ivfpq", "ivf_flat"])
def test_eager_calls_equal_traced_calls_and_reuse_one_trace(kind):
  vectors = np.random.default_rng(10).normal(size=(400, 8)).astype(np.float32)
  options = {"rerank": 20} if kind == "ivfpq" else {}
  index = build_index(vectors, kind, max_k=30, **options)
  traced = tf.function(lambda q, k: index(q, k))
  for rows, k in [(3, 5), (7, 10), (1, 30)]:
    queries = vectors[:rows] + 0.1
    for a, b in zip(index(queries, k), traced(tf.constant(queries), k)):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Three batch sizes and three ks: at most one relaxed retrace.
  assert index._compiled_search.function.experimental_get_tracing_count() <= 2
  with pytest.raises(tf.errors.InvalidArgumentError, match="k must be <= 30"):
    index(vectors[:2], 31)



def test_former_names_fill_the_same_index():
  vectors = np.random.default_rng(11).normal(size=(60, 4)).astype(np.float32)
  old = BruteForceIndex(60, 4, max_k=5)
  assert old.set_embeddings(vectors) is old
  new = BruteForceIndex.from_embeddings(vectors, max_k=5)
  np.testing.assert_array_equal(old(vectors[:3], 5)[1].numpy(),
                                new(vectors[:3], 5)[1].numpy())
  trained = IVFPQIndex.from_embeddings(vectors, num_lists=3, num_subspaces=2,
                                       num_codewords=8, max_k=5)
  parts = {name: getattr(trained, name).numpy() for name in
           ("centroids", "codebooks", "codes")}
  assignments = np.zeros(60, np.int64)
  offsets = trained.list_offsets.numpy()
  for j in range(3):
    assignments[trained.list_items.numpy()[offsets[j]:offsets[j + 1]]] = j
  codes = np.zeros_like(parts["codes"])
  codes[trained.list_items.numpy()] = parts["codes"]
  copy = IVFPQIndex(60, 4, 3, 2, 8, max_k=5)
  assert copy.set_index(parts["centroids"], parts["codebooks"], assignments,
                        codes) is copy
  for a, b in zip(copy(vectors[:4], 5), trained(vectors[:4], 5)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_top_level_names_are_the_index_module_ones():
  assert retrieval_tf.BruteForceIndex is BruteForceIndex
  assert retrieval_tf.IVFPQIndex is IVFPQIndex
  assert retrieval_tf.IVFFlatIndex is IVFFlatIndex
  assert retrieval_tf.build_index is build_index


def test_an_eagerly_used_index_exports_without_its_cached_function(tmp_path):
  vectors = np.random.default_rng(12).normal(size=(50, 4)).astype(np.float32)
  index = build_index(vectors, "brute_force", max_k=5)
  eager = index(vectors[:2], 3)  # creates the cached tf.function
  module = tf.Module()
  module.index = index
  module.search = tf.function(
      lambda q: index(q, 3), input_signature=[tf.TensorSpec([None, 4])])
  tf.saved_model.save(module, str(tmp_path / "m"))
  loaded = tf.saved_model.load(str(tmp_path / "m"))
  np.testing.assert_array_equal(loaded.search(vectors[:2])[1].numpy(),
                                eager[1].numpy())
  assert not hasattr(loaded.index, "_compiled_search")


@pytest.mark.parametrize("scan_dtype", ["float32", "bfloat16"])
def test_an_ivf_flat_two_tower_servable_passes_the_checker(tmp_path,
                                                           scan_dtype):
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=4, num_items=300, num_users=80))
  data = world.to_rec_dataset()
  model = TwoTowerModel(data.num_users, data.num_items,
                        {f: len(data.feature_vocabularies[f])
                         for f in data.user_features},
                        embedding_dim=8, output_dim=8, hidden_units=[16])
  items = model.item_embedding({"item_id": np.arange(data.num_items)}).numpy()
  index = build_index(items, "ivf_flat", max_k=50, nprobe=3,
                      scan_dtype=scan_dtype)
  path = export_two_tower(model, str(tmp_path / "flat"), data, items,
                          history_length=5, max_k=50, index=index)
  assert check.check(path)["checks"] == ["ops", "load", "cli", "rest"]
  request = raw_requests(data, [0, 3], 5)
  served = tf.saved_model.load(path).signatures["serving_default"](
      **{n: tf.constant(v) for n, v in request.items()},
      k=tf.constant([10, 10]))
  vectors = tf.saved_model.load(path).signatures["query_embedding"](
      **{n: tf.constant(v) for n, v in request.items()})["query_embedding"]
  want_scores, want = index(vectors, 10)
  np.testing.assert_allclose(served["scores"].numpy(), want_scores.numpy(),
                             rtol=1e-5, atol=1e-6)
  got = [[x.decode() for x in row] for row in served["item_ids"].numpy()]
  np.testing.assert_array_equal(got, data.items.decode(want.numpy()))
