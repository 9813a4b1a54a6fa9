"""Index layers against NumPy references; serialization; big indexes."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.index import (BruteForceIndex, IVFFlatIndex, IVFPQIndex,
                                build_index, index_parameters)


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
  index.index(items)
  for ban in (None, exclude):
    scores, ids = index(queries, 10, exclude=ban)
    want_scores, want_ids = _reference(queries, items, 10, ban,
                                       cosine=metric == "cosine")
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(ids.numpy(), want_ids)


def test_k_is_a_tensor_in_a_traced_function_and_checked():
  index = BruteForceIndex(30, 4, max_k=8, chunk_size=11)
  index.index(np.random.default_rng(1).normal(size=(30, 4)))
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
    index.index(np.zeros((4, 2)))
  with pytest.raises(ValueError, match="NaN"):
    index.index(np.full((3, 2), np.nan))


def test_config_and_checkpoint_round_trip(tmp_path):
  index = BruteForceIndex(20, 3, metric="cosine", max_k=5, chunk_size=6)
  index.index(np.random.default_rng(2).normal(size=(20, 3)))
  clone = keras.layers.deserialize(keras.layers.serialize(index))
  assert clone.get_config() == index.get_config()
  path = tf.train.Checkpoint(index=index).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(index=clone).read(path).assert_consumed()
  queries = tf.random.normal([4, 3], seed=1)
  for a, b in zip(index(queries, 5), clone(queries, 5)):
    np.testing.assert_allclose(a.numpy(), b.numpy())


@pytest.mark.parametrize("make", [
    lambda: BruteForceIndex(1_000_000, 64, max_k=100, chunk_size=250_000),
    lambda: IVFPQIndex(1_000_000, 64, num_lists=1024, num_subspaces=16,
                       max_k=100, store_vectors=True, rerank=200)],
                         ids=["brute_force", "ivfpq"])
def test_a_1m_x_64_index_exports_as_variables(tmp_path, make):
  index = make()
  module = tf.Module()
  module.index = index
  module.search = tf.function(
      lambda q: index(q, 10),
      input_signature=[tf.TensorSpec([None, 64], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / "big"))
  graph_bytes = (tmp_path / "big" / "saved_model.pb").stat().st_size
  assert graph_bytes < 10 * 2**20  # the 256 MB of vectors are variables


def _random_ivfpq(num_items=300, dim=8, lists=6, subspaces=4, codewords=16,
                  seed=3, rotation=False, store_vectors=False, metric="dot",
                  list_scan_from=64):
  """An index filled with random quantizers and codes, plus the arrays."""
  rng = np.random.default_rng(seed)
  parts = {
      "centroids": rng.normal(size=(lists, dim)).astype(np.float32),
      "codebooks": rng.normal(
          size=(subspaces, codewords, dim // subspaces)).astype(np.float32),
      "assignments": rng.integers(0, lists, num_items),
      "codes": rng.integers(0, codewords, (num_items, subspaces)),
      "vectors": (rng.normal(size=(num_items, dim)).astype(np.float32)
                  if store_vectors else None),
      "rotation": (np.linalg.qr(rng.normal(size=(dim, dim)))[0]
                   if rotation else None)}
  index = IVFPQIndex(num_items, dim, lists, subspaces, codewords,
                     metric=metric, max_k=50, nprobe=2, rotation=rotation,
                     store_vectors=store_vectors,
                     list_scan_from=list_scan_from)
  index.index_from_codes(**parts)
  return index, parts


def _reference_adc(queries, parts, k, nprobe, exclude=None, rerank=0,
                   cosine=False):
  """Plain NumPy IVF-PQ: probe lists, score candidates by ADC, top-k
  (padded with -1 / -inf), optionally re-rank the best `rerank` exactly."""
  if cosine:
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  rotated = queries if parts["rotation"] is None else queries @ parts[
      "rotation"]
  centroids, codebooks = parts["centroids"], parts["codebooks"]
  subspaces, _, sub_dim = codebooks.shape
  all_scores, all_ids = [], []
  for row, q in enumerate(rotated):
    coarse = centroids @ q
    probed = np.argsort(-coarse, kind="stable")[:nprobe]
    candidates = np.flatnonzero(np.isin(parts["assignments"], probed))
    if exclude is not None:
      candidates = np.setdiff1d(candidates, exclude[row])
    scores = coarse[parts["assignments"][candidates]].astype(np.float64)
    for m in range(subspaces):
      lut = codebooks[m] @ q[m * sub_dim:(m + 1) * sub_dim]
      scores += lut[parts["codes"][candidates, m]]
    order = np.argsort(-scores, kind="stable")[:max(k, rerank)]
    candidates, scores = candidates[order], scores[order]
    if rerank:
      vectors = parts["vectors"][candidates]
      if cosine:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
      scores = vectors @ queries[row]
      order = np.argsort(-scores, kind="stable")[:k]
      candidates, scores = candidates[order], scores[order]
    missing = k - len(candidates)
    all_ids.append(np.pad(candidates[:k], (0, max(missing, 0)),
                          constant_values=-1))
    all_scores.append(np.pad(scores[:k], (0, max(missing, 0)),
                             constant_values=-np.inf))
  return np.array(all_scores), np.array(all_ids)


@pytest.mark.parametrize("list_scan_from", [0, 10_000])  # both scans
@pytest.mark.parametrize("rotation", [False, True])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_ivfpq_equals_numpy_adc(rotation, metric, list_scan_from):
  index, parts = _random_ivfpq(rotation=rotation, metric=metric,
                               store_vectors=True,
                               list_scan_from=list_scan_from)
  queries = np.random.default_rng(4).normal(size=(7, 8)).astype(np.float32)
  exclude = np.random.default_rng(5).integers(-1, 300, (7, 5))
  # rerank 150 / 120 exceed every list (~50 items): the by-list scan keeps
  # at most a list's length per (query, list) and pads the row after.
  for nprobe, ban, rerank in [(1, None, 0), (2, exclude, 0), (6, None, 0),
                              (3, exclude, 40), (6, None, 25), (4, None, 7),
                              (6, None, 150), (2, exclude, 120)]:
    scores, ids = index(queries, 20, nprobe=nprobe, rerank=rerank,
                        exclude=ban)
    want_scores, want_ids = _reference_adc(queries, parts, 20, nprobe, ban,
                                           rerank, cosine=metric == "cosine")
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=1e-5,
                               rtol=1e-5)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    # A single query is scanned query by query whatever list_scan_from
    # says, with the same answer.
    scores, ids = index(queries[:1], 20, nprobe=nprobe, rerank=rerank,
                        exclude=None if ban is None else ban[:1])
    np.testing.assert_allclose(scores.numpy(), want_scores[:1], atol=1e-5,
                               rtol=1e-5)
    np.testing.assert_array_equal(ids.numpy(), want_ids[:1])


@pytest.mark.parametrize("rotation", [False, True])
def test_ivfpq_counts_the_candidates_it_scans(rotation):
  index, parts = _random_ivfpq(rotation=rotation)
  queries = np.random.default_rng(7).normal(size=(5, 8)).astype(np.float32)
  rotated = queries if parts["rotation"] is None else \
      queries @ parts["rotation"]
  sizes = np.bincount(parts["assignments"], minlength=6)
  for nprobe in (1, 3, 6):
    probed = np.argsort(-rotated @ parts["centroids"].T, axis=1,
                        kind="stable")[:, :nprobe]
    np.testing.assert_array_equal(
        index.candidates_scanned(queries, nprobe).numpy(),
        sizes[probed].sum(axis=1))
  assert (index.candidates_scanned(queries, 6).numpy() == 300).all()


@pytest.mark.parametrize("list_scan_from", [0, 10_000])
def test_ivfpq_pads_rows_with_too_few_candidates(list_scan_from):
  index, parts = _random_ivfpq(num_items=30, lists=6,
                               list_scan_from=list_scan_from)
  queries = np.random.default_rng(6).normal(size=(3, 8)).astype(np.float32)
  scores, ids = index(queries, 25, nprobe=1)
  want_scores, want_ids = _reference_adc(queries, parts, 25, 1)
  assert (ids.numpy() == -1).any()
  np.testing.assert_array_equal(ids.numpy(), want_ids)
  assert np.all(np.isneginf(scores.numpy()) == (ids.numpy() == -1))


def test_ivfpq_call_arguments_are_checked_in_a_traced_function():
  index, _ = _random_ivfpq(store_vectors=True)
  search = tf.function(
      lambda q, k, nprobe, rerank: index(q, k, nprobe=nprobe, rerank=rerank),
      input_signature=[tf.TensorSpec([None, 8], tf.float32)] +
      [tf.TensorSpec([], tf.int32)] * 3)
  queries = tf.ones([2, 8])
  assert search(queries, 5, 2, 0)[1].shape == (2, 5)
  assert search(queries, 5, 6, 10)[1].shape == (2, 5)
  for args, message in [((0, 2, 0), "k must be >= 1"),
                        ((51, 2, 0), "k must be <= 50"),
                        ((5, 0, 0), "nprobe must be >= 1"),
                        ((5, 7, 0), "nprobe must be <= 6"),
                        ((5, 2, -1), "rerank must be >= 0"),
                        ((5, 2, 301), "rerank must be <= 300")]:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      search(queries, *args)
  plain, _ = _random_ivfpq()
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="rerank must be <= 0"):
    plain(queries, 5, rerank=10)


def test_ivfpq_construction_and_loading_errors():
  with pytest.raises(ValueError, match="must divide"):
    IVFPQIndex(10, 6, 2, 4)
  with pytest.raises(ValueError, match="num_codewords"):
    IVFPQIndex(10, 8, 2, 4, num_codewords=300)
  with pytest.raises(ValueError, match="num_lists"):
    IVFPQIndex(10, 8, 11, 4)
  with pytest.raises(ValueError, match="store_vectors"):
    IVFPQIndex(10, 8, 2, 4, rerank=5)
  index, parts = _random_ivfpq()
  bad = dict(parts, codes=parts["codes"] + 16)
  with pytest.raises(ValueError, match="codes must be in 0..15"):
    index.index_from_codes(**bad)
  with pytest.raises(ValueError, match="assignments"):
    index.index_from_codes(**dict(parts, assignments=parts["assignments"] - 1))
  with pytest.raises(ValueError, match="centroids has shape"):
    index.index_from_codes(**dict(parts, centroids=parts["centroids"][:2]))
  with pytest.raises(ValueError, match="NaN"):
    index.index_from_codes(**dict(parts, centroids=parts["centroids"] * np.nan))
  with pytest.raises(ValueError, match="vectors must be given"):
    index.index_from_codes(**dict(parts, vectors=np.zeros((300, 8))))
  with pytest.raises(ValueError, match="rotation must be given"):
    index.index_from_codes(**dict(parts, rotation=np.eye(8)))


@pytest.mark.parametrize("slice_bytes", [64, 1 << 24])  # many slices, one
def test_ivfpq_holds_codes_and_vectors_in_list_order(monkeypatch,
                                                     slice_bytes):
  """The codes and vectors are written into their variables slice by slice
  (`_assign_rows`); the result is the list-ordered table, and loading other
  codes into the same index replaces every row."""
  from retrieval_tf import index as index_lib
  monkeypatch.setattr(index_lib, "_ASSIGN_SLICE_BYTES", slice_bytes)
  index, parts = _random_ivfpq(store_vectors=True)
  for reload_seed in (None, 11):
    if reload_seed is not None:
      _, parts = _random_ivfpq(store_vectors=True, seed=reload_seed)
      index.index_from_codes(**parts)
    order = np.argsort(parts["assignments"], kind="stable")
    np.testing.assert_array_equal(index.list_items.numpy(), order)
    np.testing.assert_array_equal(index.codes.numpy(), parts["codes"][order])
    assert index.codes.dtype == tf.uint8
    np.testing.assert_array_equal(index.vectors.numpy(),
                                  parts["vectors"][order])


def test_ivfpq_config_and_checkpoint_round_trip(tmp_path):
  index, _ = _random_ivfpq(rotation=True, store_vectors=True,
                           metric="cosine")
  clone = keras.layers.deserialize(keras.layers.serialize(index))
  assert clone.get_config() == index.get_config()
  path = tf.train.Checkpoint(index=index).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(index=clone).read(path).assert_consumed()
  queries = tf.random.normal([4, 8], seed=1)
  for rerank in (0, 30):
    for a, b in zip(index(queries, 10, rerank=rerank),
                    clone(queries, 10, rerank=rerank)):
      np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_ivfpq_from_embeddings_finds_the_true_neighbours():
  rng = np.random.default_rng(7)
  centres = rng.normal(size=(20, 16)) * 3
  items = (centres[rng.integers(0, 20, 4000)] +
           rng.normal(size=(4000, 16))).astype(np.float32)
  queries = (centres[rng.integers(0, 20, 50)] +
             rng.normal(size=(50, 16))).astype(np.float32)
  index = IVFPQIndex.from_embeddings(items, num_lists=20, num_subspaces=8,
                                     num_codewords=32, nprobe=4, rerank=100,
                                     store_vectors=True, max_k=100)
  truth = np.argsort(-(queries @ items.T), axis=1)[:, :10]
  _, found = index(queries, 10)
  recall = np.mean([len(set(a) & set(b)) / 10
                    for a, b in zip(truth, found.numpy())])
  assert recall >= 0.9
  _, exhaustive = index(queries, 10, nprobe=20, rerank=4000)
  np.testing.assert_array_equal(exhaustive.numpy(), truth)
  card = index_parameters(index)
  assert card["type"] == "IVFPQIndex" and card["num_lists"] == 20
  assert card["bytes"] > 4000 * (8 + 16 * 4)  # codes, ids, vectors


def test_ivfpq_lists_by_angle_find_more_inner_product_neighbours():
  """IVFPQIndex trains its lists by angle (train_ivfpq's default): for
  inner-product search on clusters of different norms the probed lists
  hold more of the true top-10 than lists of the L2-nearest centroid."""
  from retrieval_tf import quantization
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(200, 32)).astype(np.float32)
  spread = rng.uniform(0.3, 0.8, 200).astype(np.float32)
  labels = rng.integers(0, 200, 20_200)
  vectors = (centres[labels] + spread[labels, None] *
             rng.normal(size=(20_200, 32))).astype(np.float32)
  items, queries = vectors[:20_000], vectors[20_000:]
  truth = np.argsort(-(queries @ items.T), axis=1)[:, :10]
  index = IVFPQIndex.from_embeddings(items, 64, 8, 16, max_k=10,
                                     store_vectors=True)
  l2 = quantization.train_ivfpq(items, 64, 8, 16, assign_by="l2")
  l2_index = IVFPQIndex(20_000, 32, 64, 8, 16, max_k=10, store_vectors=True)
  l2_index.index_from_codes(l2.centroids, l2.codebooks, l2.assignments,
                            l2.codes, vectors=items)

  def recall(layer):
    found = layer(queries, 10, nprobe=2, rerank=50)[1].numpy()
    return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])

  assert recall(index) > recall(l2_index) + 0.05


def test_build_index_defaults_by_corpus_size():
  vectors = np.random.default_rng(8).normal(size=(2000, 12))
  exact = build_index(vectors, "brute_force", max_k=5000)
  assert isinstance(exact, BruteForceIndex) and exact.max_k == 2000
  approx = build_index(vectors, "ivfpq", rerank=50)
  assert isinstance(approx, IVFPQIndex)
  assert (approx.num_lists, approx.num_subspaces) == (51, 3)
  assert approx.nprobe == 3 and approx.store_vectors
  # By default a batch goes list by list once its (query, list) pairs
  # reach J (1.5 + 500 J / N): 51 x (1.5 + 12.75) here.
  assert approx.list_scan_from == 727
  assert not approx.scans_by_list(1, 51)  # one query: always by query
  assert not approx.scans_by_list(14, 51) and approx.scans_by_list(15, 51)
  _, ids = approx(vectors[:3].astype(np.float32), 5, nprobe=51, rerank=2000)
  _, want = exact(vectors[:3].astype(np.float32), 5)
  np.testing.assert_array_equal(ids.numpy(), want.numpy())
  for kind, options, message in [
      ("hnsw", {}, "index must be one of"),
      ("brute_force", {"nprobe": 2}, "nprobe only apply to index=ivfpq"),
      ("ivfpq", {"num_subspaces": 5}, "must divide the embedding size 12"),
      ("ivfpq", {"num_lists": 4, "nprobe": 5},
       "nprobe=5 must be <= num_lists=4"),
      ("ivfpq", {"num_lists": 0}, "num_lists must be >= 1"),
      ("ivfpq", {"rerank": -1}, "rerank must be >= 0")]:
    with pytest.raises(ValueError, match=message):
      build_index(vectors, kind, **options)
  with pytest.raises(ValueError, match="non-empty"):
    build_index(np.zeros((0, 4)))


def test_build_index_ivfpq_default_rerank_lifts_recall_beyond_the_codes():
  # Re-scoring only k candidates cannot change which k come back; the
  # default re-scores max(300, k), so its recall@k beats the codes'.
  rng = np.random.default_rng(3)
  vectors = rng.normal(size=(3000, 16)).astype(np.float32)
  queries = rng.normal(size=(50, 16)).astype(np.float32)
  index = build_index(vectors, "ivfpq")
  _, want = _reference(queries, vectors, 20)

  def recall(rerank):
    _, ids = index(queries, 20, nprobe=index.num_lists, rerank=rerank)
    return np.mean([len(set(a) & set(b)) / 20
                    for a, b in zip(ids.numpy(), want)])

  assert index.rerank == 300
  assert recall(20) < 0.9 and recall(None) > 0.99




def _ivf_flat_reference(queries, items, centroids, assignments, k, nprobe,
                        exclude=None):
  """Plain NumPy IVF-Flat: the nprobe lists of largest <q, c_j>, exact
  scores of their items, top-k padded with -1 / -inf."""
  all_scores, all_ids = [], []
  for row, q in enumerate(queries):
    probed = np.argsort(-(centroids @ q), kind="stable")[:nprobe]
    candidates = np.flatnonzero(np.isin(assignments, probed))
    if exclude is not None:
      candidates = np.setdiff1d(candidates, exclude[row])
    scores = items[candidates] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    missing = max(k - len(order), 0)
    all_ids.append(np.pad(candidates[order], (0, missing),
                          constant_values=-1))
    all_scores.append(np.pad(scores[order], (0, missing),
                             constant_values=-np.inf))
  return np.array(all_scores), np.array(all_ids)


@pytest.mark.parametrize("scan_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("chunk_size", [1, 4, 32])
@pytest.mark.parametrize("rows", [1, 2, 40])  # one to many queries per tile
def test_ivf_flat_equals_numpy(chunk_size, rows, scan_dtype):
  rng = np.random.default_rng(20)
  items = rng.normal(size=(300, 8)).astype(np.float32)
  centroids = rng.normal(size=(7, 8)).astype(np.float32)
  assignments = rng.integers(0, 7, 300)
  assignments[assignments == 5] = 4  # an empty list
  index = IVFFlatIndex(300, 8, 7, max_k=60, nprobe=3, chunk_size=chunk_size,
                       scan_dtype=scan_dtype)
  index.index_from_assignments(items, centroids, assignments)
  queries = rng.normal(size=(rows, 8)).astype(np.float32)
  exclude = rng.integers(-1, 300, size=(rows, 5)).astype(np.int32)
  for nprobe, ban in [(3, None), (2, exclude), (7, exclude)]:
    scores, ids = index(queries, 60, nprobe=nprobe, exclude=ban)
    want_scores, want_ids = _ivf_flat_reference(
        queries, items, centroids, assignments, 60, nprobe, ban)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    # bfloat16: re-scored from hi + lo, about 16 bits of mantissa.
    tolerance = 1e-5 if scan_dtype == "float32" else 1e-4
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=tolerance,
                               atol=tolerance)


@pytest.mark.parametrize("rows", [1, 3])
def test_ivf_flat_bfloat16_rescoring_separates_what_bfloat16_cannot(rows):
  # Item 0 beats item 1 by 2^-10, below bfloat16's resolution at 1.0: the
  # scan scores tie, the float32 re-scoring of hi + lo puts 0 first.
  items = np.zeros((40, 4), np.float32)
  items[0, 0], items[1, 0] = 1 + 2.0**-10, 1.0
  items[2:, 1] = 1.0
  index = IVFFlatIndex(40, 4, 2, max_k=5, nprobe=2, chunk_size=4,
                       scan_dtype="bfloat16")
  index.index_from_assignments(items, np.eye(2, 4, dtype=np.float32),
                               np.array([1] + [0] * 39))
  scores, ids = index(np.tile([[1, 0, 0, 0]], [rows, 1]).astype(np.float32),
                      2)
  np.testing.assert_array_equal(ids.numpy(), [[0, 1]] * rows)
  np.testing.assert_array_equal(scores.numpy(), [[1 + 2.0**-10, 1]] * rows)
  assert index.vectors.dtype == tf.bfloat16
  float32 = IVFFlatIndex(40, 4, 2, chunk_size=4)
  assert index_parameters(index)["bytes"] == index_parameters(float32)[
      "bytes"]  # hi + lo: the 4 bytes of float32


def test_ivf_flat_probing_every_list_is_brute_force():
  rng = np.random.default_rng(21)
  items = rng.normal(size=(500, 6)).astype(np.float32)
  queries = rng.normal(size=(9, 6)).astype(np.float32)
  for metric in ("dot", "cosine"):
    index = IVFFlatIndex.from_embeddings(items, num_lists=12, metric=metric,
                                         max_k=50)
    exact = BruteForceIndex.from_embeddings(items, metric=metric, max_k=50)
    scores, ids = index(queries, 50, nprobe=12)
    want_scores, want_ids = exact(queries, 50)
    np.testing.assert_array_equal(ids.numpy(), want_ids.numpy())
    np.testing.assert_allclose(scores.numpy(), want_scores.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_ivf_flat_finds_the_true_neighbours_of_clustered_vectors():
  rng = np.random.default_rng(22)
  centres = rng.normal(size=(20, 16)).astype(np.float32)
  def draw(n):
    return (centres[rng.integers(0, 20, n)] +
            0.3 * rng.normal(size=(n, 16))).astype(np.float32)
  items, queries = draw(4000), draw(50)
  index = build_index(items, "ivf_flat", max_k=10, nprobe=4)
  assert index.num_lists == 63  # sqrt(N) lists
  _, ids = index(queries, 10)
  truth = np.argsort(-(queries @ items.T), axis=1)[:, :10]
  recall = np.mean([len(set(a) & set(b)) / 10
                    for a, b in zip(ids.numpy(), truth)])
  assert recall > 0.9
  scanned = index.candidates_scanned(queries).numpy()
  assert (scanned < 4000 / 4).all() and (scanned > 0).all()


def test_ivf_flat_pads_rows_with_too_few_candidates():
  items = np.eye(4, dtype=np.float32)[np.arange(12) % 4] * np.arange(
      1, 13, dtype=np.float32)[:, None]
  index = IVFFlatIndex(12, 4, 4, max_k=8, nprobe=1, chunk_size=2)
  index.index_from_assignments(items, np.eye(4, dtype=np.float32),
                               np.arange(12) % 4)
  scores, ids = index(np.array([[0, 1, 0, 0]], np.float32), 8)
  np.testing.assert_array_equal(ids.numpy(), [[9, 5, 1, -1, -1, -1, -1, -1]])
  assert np.isneginf(scores.numpy()[0, 3:]).all()
  # An excluded item is never returned, not even as padding.
  _, ids = index(np.array([[0, 1, 0, 0]], np.float32), 3,
                 exclude=np.array([[5, -1]]))
  np.testing.assert_array_equal(ids.numpy(), [[9, 1, -1]])


def test_ivf_flat_arguments_are_checked():
  index = IVFFlatIndex(30, 4, 3, max_k=8)
  index.index(np.random.default_rng(23).normal(size=(30, 4)))
  search = tf.function(lambda q, k, n: index(q, k, nprobe=n),
                       input_signature=[tf.TensorSpec([None, 4]),
                                        tf.TensorSpec([], tf.int32),
                                        tf.TensorSpec([], tf.int32)])
  queries = tf.ones([2, 4])
  assert search(queries, 8, 3)[1].shape == (2, 8)
  for k, nprobe, message in [(9, 1, "k must be <= 8"), (0, 1, "k must be >= 1"),
                             (2, 4, "nprobe must be <= 3"),
                             (2, 0, "nprobe must be >= 1")]:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      search(queries, k, nprobe)
  for make, message in [
      (lambda: IVFFlatIndex(30, 4, 31), "num_lists must be in 1..num_items"),
      (lambda: IVFFlatIndex(30, 4, 3, nprobe=4), "nprobe=4 must be <= "),
      (lambda: IVFFlatIndex(30, 4, 3, chunk_size=0), "chunk_size must be"),
      (lambda: IVFFlatIndex(30, 4, 3, metric="l2"), "metric"),
      (lambda: IVFFlatIndex(30, 4, 3, scan_dtype="float16"),
       "scan_dtype must be one of"),
      (lambda: IVFFlatIndex(30, 4, 3, rescore_margin=-1),
       "rescore_margin must be >= 0"),
      (lambda: IVFFlatIndex(30, 4, 3, chunk_size=8, num_chunks=3),
       "num_chunks=3 cannot hold 30 items")]:
    with pytest.raises(ValueError, match=message):
      make()
  with pytest.raises(ValueError, match="expects \\(30, 4\\)"):
    index.index(np.zeros((30, 5)))
  with pytest.raises(ValueError, match="NaN"):
    index.index(np.full((30, 4), np.nan))
  with pytest.raises(ValueError, match="assignments must be \\[30\\]"):
    index.index_from_assignments(np.zeros((30, 4)), np.zeros((3, 4)),
                                 np.full(30, 3))
  tight = IVFFlatIndex(30, 4, 3, chunk_size=8, num_chunks=4)
  with pytest.raises(ValueError, match="the lists need 6 chunks"):
    tight.index_from_assignments(np.zeros((30, 4)), np.zeros((3, 4)),
                                 np.arange(30) % 3)


@pytest.mark.parametrize("scan_dtype", ["float32", "bfloat16"])
def test_ivf_flat_config_keras_file_and_checkpoint_round_trip(tmp_path,
                                                              scan_dtype):
  vectors = np.random.default_rng(24).normal(size=(200, 6)).astype(
      np.float32)
  index = IVFFlatIndex.from_embeddings(vectors, num_lists=8, metric="cosine",
                                       max_k=20, nprobe=3, chunk_size=5,
                                       scan_dtype=scan_dtype)
  clone = keras.layers.deserialize(keras.layers.serialize(index))
  assert clone.get_config() == index.get_config()
  path = tf.train.Checkpoint(index=index).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(index=clone).read(path).assert_consumed()
  inputs = keras.Input([6])
  model = keras.Model(inputs, index(inputs, 20)[1])
  model.save(str(tmp_path / "m.keras"))
  loaded = keras.models.load_model(str(tmp_path / "m.keras"))
  queries = vectors[:4] + 0.1
  for a, b in zip(index(queries, 20), clone(queries, 20)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  np.testing.assert_array_equal(loaded(queries).numpy(),
                                index(queries, 20)[1].numpy())
  card = index_parameters(index)
  assert card["type"] == "IVFFlatIndex" and card["chunk_size"] == 5
  assert card["scan_dtype"] == scan_dtype


def test_build_index_ivf_flat_and_auto_by_memory_budget():
  vectors = np.random.default_rng(25).normal(size=(2000, 12))
  flat = build_index(vectors, "ivf_flat", max_k=50)
  assert isinstance(flat, IVFFlatIndex)
  assert (flat.num_lists, flat.nprobe) == (44, 8)
  flat_bytes = index_parameters(flat)["bytes"]
  roomy = build_index(vectors, "auto", memory_budget_bytes=flat_bytes,
                      scan_dtype="bfloat16")
  assert isinstance(roomy, IVFFlatIndex) and roomy.scan_dtype == "bfloat16"
  tight = build_index(vectors, "auto", memory_budget_bytes=flat_bytes - 1)
  assert isinstance(tight, IVFPQIndex) and not tight.store_vectors
  assert index_parameters(tight)["bytes"] < flat_bytes / 4
  for kind, options, message in [
      ("auto", {}, "memory_budget_bytes must be given exactly when"),
      ("ivf_flat", {"memory_budget_bytes": 10**9},
       "memory_budget_bytes must be given exactly when"),
      ("auto", {"memory_budget_bytes": 1000}, "holds neither an IVF-Flat"),
      ("ivf_flat", {"num_subspaces": 4}, "num_subspaces only applies to"),
      ("ivf_flat", {"num_lists": 4, "nprobe": 5},
       "nprobe=5 must be <= num_lists=4"),
      ("ivfpq", {"scan_dtype": "bfloat16"},
       "scan_dtype=bfloat16 only applies to index=ivf_flat or auto"),
      ("ivf_flat", {"scan_dtype": "int8"}, "scan_dtype must be one of")]:
    with pytest.raises(ValueError, match=message):
      build_index(vectors, kind, **options)
