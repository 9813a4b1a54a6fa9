"""Pure-TF index layers for servables: stock TensorFlow ops only, state in
non-trainable variables (so a 1M x 64 index never becomes a graph constant and
never meets the 2 GB graph-proto limit).

The layers (`BruteForceIndex`, `IVFFlatIndex`, `IVFPQIndex`) are filled the
same way: the classmethod `from_embeddings(...)` returns a filled index, the
instance method `index(embeddings)` (re)fills one;
`IVFPQIndex.index_from_codes(...)` loads quantizers a model learned and
`IVFFlatIndex.index_from_assignments(...)` given lists. `build_index` picks
the kind and its defaults from the corpus size (or from a memory budget
with `kind="auto"`). Called
eagerly, a layer runs its search through one cached `tf.function` (traced
once per argument structure, with relaxed shapes), so a Python caller gets
graph speed; inside a `tf.function` or a servable the search is inlined.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from retrieval_tf import quantization
from retrieval_tf.compat import keras, tf

# Rows of a large table are written into a variable in slices of about this
# many bytes (`_assign_rows`).
_ASSIGN_SLICE_BYTES = 16 << 20


class _CompiledSearch:
  """An index layer's eager search as one cached `tf.function`.

  A plain holder (not a trackable), set with `object.__setattr__`, so that
  neither checkpoints nor SavedModels of the layer see the function."""

  def __init__(self, search: Callable):
    self.function = tf.function(search, reduce_retracing=True)


def _eager_search(layer: keras.layers.Layer, *args):
  """`layer._search(*args)` through the layer's cached `tf.function`."""
  compiled = layer.__dict__.get("_compiled_search")
  if compiled is None:
    compiled = _CompiledSearch(layer._search)  # pylint: disable=protected-access
    object.__setattr__(layer, "_compiled_search", compiled)
  return compiled.function(*args)


@keras.utils.register_keras_serializable(package="retrieval_tf")
class BruteForceIndex(keras.layers.Layer):
  """Exact top-k by inner product (or cosine) over all items.

  `call(queries [B, d], k, exclude=None) -> (scores [B, k], indices [B, k])`:
  float32 scores, best first, and int32 item indices (rows of the indexed
  embeddings). `k` is a Python int or an int32 scalar tensor, checked in the
  graph to be in `1..min(max_k, num_items)`. `exclude [B, E]` (padded with
  -1) lists item indices never to return for that row. With `chunk_size`,
  items are scanned in chunks with a running top-k, so memory stays
  O(B x (chunk + k)).

      item_vectors = model.item_embedding({"item_id": np.arange(n)})
      index = BruteForceIndex.from_embeddings(item_vectors, max_k=100)
      user_vectors = model.user_embedding(user_features)
      scores, items = index(user_vectors, 10)          # [B, 10] each
      scores, items = index(user_vectors, 10, exclude=seen_items)

  Args:
    num_items, dim: the index shape.
    metric: "dot" or "cosine" (rows and queries L2-normalised).
    max_k: the largest k a caller may ask for.
    chunk_size: items scored at once (None: all).
  """

  def __init__(self, num_items: int, dim: int, metric: str = "dot",
               max_k: int = 1000, chunk_size: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    _check_shape_and_metric(self, num_items, dim, metric, max_k)
    if chunk_size is not None and chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    self.num_items, self.dim = int(num_items), int(dim)
    self.metric, self.max_k = metric, int(min(max_k, num_items))
    self.chunk_size = None if chunk_size is None else int(chunk_size)
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.num_items, self.dim),
        initializer="zeros", trainable=False)

  @classmethod
  def from_embeddings(cls, embeddings, metric: str = "dot",
                      max_k: int = 1000, chunk_size: Optional[int] = None,
                      **kwargs) -> "BruteForceIndex":
    """A filled index over `embeddings [num_items, dim]` (kwargs go to the
    constructor)."""
    embeddings = _item_matrix(embeddings)
    index = cls(len(embeddings), embeddings.shape[1], metric=metric,
                max_k=max_k, chunk_size=chunk_size, **kwargs)
    return index.index(embeddings)

  def index(self, embeddings) -> "BruteForceIndex":
    """Loads the item vectors `[num_items, dim]` (row i = item index i);
    returns the index. Raises ValueError on another shape or non-finite
    values."""
    embeddings = _layer_embeddings(self, embeddings)
    if self.metric == "cosine":
      embeddings = quantization.unit_rows(embeddings)
    self.embeddings.assign(embeddings)
    return self

  def set_embeddings(self, embeddings) -> "BruteForceIndex":
    """The former name of `index` (dpsr_tf and mgdspr_tf servables)."""
    return self.index(embeddings)

  def _scores(self, queries, items, offset, exclude):
    scores = tf.matmul(queries, items, transpose_b=True)
    if exclude is not None:
      ids = offset + tf.range(tf.shape(items)[0])
      hit = tf.reduce_any(
          exclude[:, :, tf.newaxis] == ids[tf.newaxis, tf.newaxis, :], axis=1)
      scores = tf.where(hit, tf.constant(-np.inf, scores.dtype), scores)
    return scores

  def call(self, queries, k, exclude=None):
    queries = tf.convert_to_tensor(queries, tf.float32)
    k = tf.convert_to_tensor(k, tf.int32)
    if exclude is not None:
      exclude = tf.convert_to_tensor(exclude)
    if tf.executing_eagerly():
      return _eager_search(self, queries, k, exclude)
    return self._search(queries, k, exclude)

  def _search(self, queries, k, exclude):
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    k = _checked(k, 1, self.max_k, "k")
    if exclude is not None:
      exclude = tf.cast(exclude, tf.int32)
    if self.chunk_size is None or self.chunk_size >= self.num_items:
      scores = self._scores(queries, self.embeddings, 0, exclude)
      values, indices = tf.math.top_k(scores, k=k)
      return values, indices
    return self._chunked(queries, k, exclude)

  def _chunked(self, queries, k, exclude):
    batch = tf.shape(queries)[0]
    best_scores = tf.fill([batch, k], tf.constant(-np.inf, tf.float32))
    best_ids = tf.fill([batch, k], -1)
    num_chunks = -(-self.num_items // self.chunk_size)

    def body(i, best_scores, best_ids):
      start = i * self.chunk_size
      size = tf.minimum(self.chunk_size, self.num_items - start)
      items = tf.slice(self.embeddings, [start, 0], [size, self.dim])
      scores = self._scores(queries, items, start, exclude)
      chunk_k = tf.minimum(k, size)
      values, indices = tf.math.top_k(scores, k=chunk_k)
      merged_scores = tf.concat([best_scores, values], axis=1)
      merged_ids = tf.concat([best_ids, indices + start], axis=1)
      top_scores, top = tf.math.top_k(merged_scores, k=k)
      return i + 1, top_scores, tf.gather(merged_ids, top, batch_dims=1)

    _, best_scores, best_ids = tf.while_loop(
        lambda i, *_: i < num_chunks, body, (0, best_scores, best_ids),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None]),
                          tf.TensorShape([None, None])))
    return best_scores, best_ids

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "dim": self.dim,
                   "metric": self.metric, "max_k": self.max_k,
                   "chunk_size": self.chunk_size})
    return config


def default_list_scan_from(num_items: int, num_lists: int) -> int:
  """`IVFPQIndex.list_scan_from` by default: J (1.5 + 500 J / N) probed
  (query, list) pairs, i.e. list by list once each probed list is shared
  by about 2 queries on average (lists of about 1,000 items) up to about 4
  (lists of about 200 items), where the per-list loop step weighs more.
  Measured where the two scans cost the same, one thread, D = 16, 64-d,
  width 300 (`python -m benchmarks.scan_paths`)."""
  return int(round(num_lists * (1.5 + 500 * num_lists / num_items)))


@keras.utils.register_keras_serializable(package="retrieval_tf")
class IVFPQIndex(keras.layers.Layer):
  """Inverted file + product quantization, searched by asymmetric distance
  computation (ADC) with a look-up table.

  Each item x lives in one inverted list j(x) (its coarse centroid c_j) and
  is stored as the PQ codes of its residual, one of K codewords b_{m, .} in
  each of D sub-spaces: T(x) = c_j + concat_m b_{m, code_m(x)} (Poeem Eq. 2
  and 4; Jegou et al., TPAMI'11). With an optional rotation R (Poeem's
  Givens rotation, Eq. 6) the quantizers live in the rotated space and the
  query is rotated: q' = q R. For a query:

      coarse score    s_j = <q', c_j>          -> the `nprobe` best lists
      look-up table   LUT[m, c] = <q'_m, b_{m,c}>          [D, K]
      ADC score       s(x) = s_j(x) + sum_m LUT[m, code_m(x)] = <q', T(x)>

  and optionally the best `rerank` candidates by ADC are re-scored exactly,
  <q, x>, from the stored vectors. Inverted lists are stored CSR-style:
  `list_offsets [J + 1]` into `list_items [N]`, with codes and vectors kept
  in list order so that a probed list is one contiguous slice.

  `call(queries [B, d], k, nprobe=None, rerank=None, exclude=None) ->
  (scores [B, k], indices [B, k])`. `k`, `nprobe` and `rerank` may be
  tensors and are checked in the graph (`1 <= k <= max_k`,
  `1 <= nprobe <= num_lists`, `0 <= rerank <= num_items`, and `rerank` must
  be 0 without `store_vectors`); re-ranking re-scores the best
  `max(rerank, k)` candidates. When the probed lists hold fewer than k
  candidates the row is padded with index -1 and score -inf. The work is
  batched over queries: one matmul for the coarse scores, one for the LUTs,
  and gathers over the flattened candidates of the whole batch.

  Fill it from embeddings with the TF k-means / PQ trainer
  (`IVFPQIndex.from_embeddings(...)`, or `index(embeddings)` on a built
  layer) or from codes a model learned (`index_from_codes`).

      item_vectors = model.item_embedding({"item_id": np.arange(n)})
      index = IVFPQIndex.from_embeddings(item_vectors, num_lists=64,
                                         num_subspaces=16, nprobe=8)
      user_vectors = model.user_embedding(user_features)
      scores, items = index(user_vectors, 10)       # [B, 10] each
      scores, items = index(user_vectors, 10, nprobe=64)  # every list

  Args:
    num_items, dim: the index shape.
    num_lists: J, coarse centroids.
    num_subspaces: D, PQ sub-spaces (must divide dim).
    num_codewords: K <= 256 codewords per sub-space (codes are bytes).
    metric: "dot" or "cosine" (queries and stored vectors L2-normalised).
    max_k: the largest k a caller may ask for.
    nprobe: default number of lists searched (None: min(8, num_lists)).
    rerank: default number of ADC candidates re-scored exactly (0: none).
    store_vectors: keep the full vectors for re-ranking.
    rotation: hold a `[d, d]` query rotation (set by `index_from_codes`).
    list_scan_from: batches of two or more queries probing more than this
      many (query, list) pairs are scanned list by list (each list decoded
      once, one matmul with all the queries that probe it); smaller ones,
      and a single query at any nprobe (where list by list only adds a loop
      step per list), query by query with look-up tables. Both give the same
      scores; this only trades speed. None: `default_list_scan_from`, about
      where the two cost the same, so time grows smoothly with nprobe and
      batch size (no step where the scan changes).
  """

  def __init__(self, num_items: int, dim: int, num_lists: int,
               num_subspaces: int, num_codewords: int = 256,
               metric: str = "dot", max_k: int = 1000,
               nprobe: Optional[int] = None,
               rerank: int = 0, store_vectors: bool = False,
               rotation: bool = False,
               list_scan_from: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    _check_shape_and_metric(self, num_items, dim, metric, max_k)
    check_build_options("ivfpq", dim, num_lists, num_subspaces, nprobe,
                        rerank)
    if num_lists > num_items:
      raise ValueError(f"num_lists must be in 1..num_items={num_items}, got "
                       f"{num_lists}")
    if not 1 <= num_codewords <= 256:
      raise ValueError(f"num_codewords must be in 1..256, got "
                       f"{num_codewords}")
    if nprobe is None:
      nprobe = min(8, num_lists)
    if rerank and not store_vectors:
      raise ValueError(f"rerank={rerank}: re-ranking needs "
                       "store_vectors=True")
    self.num_items, self.dim = int(num_items), int(dim)
    self.num_lists, self.num_subspaces = int(num_lists), int(num_subspaces)
    self.num_codewords, self.metric = int(num_codewords), metric
    self.max_k = int(min(max_k, num_items))
    self.nprobe, self.rerank = int(nprobe), int(rerank)
    self.store_vectors, self.use_rotation = bool(store_vectors), bool(rotation)
    self.list_scan_from = int(
        default_list_scan_from(num_items, num_lists)
        if list_scan_from is None else list_scan_from)
    sub_dim = self.dim // self.num_subspaces

    def state(name, shape, dtype=tf.float32):
      return self.add_weight(name=name, shape=shape, dtype=dtype,
                             initializer="zeros", trainable=False)

    self.centroids = state("centroids", (self.num_lists, self.dim))
    self.codebooks = state(
        "codebooks", (self.num_subspaces, self.num_codewords, sub_dim))
    self.list_offsets = state("list_offsets", (self.num_lists + 1,), tf.int32)
    self.list_items = state("list_items", (self.num_items,), tf.int32)
    self.codes = state("codes", (self.num_items, self.num_subspaces),
                       tf.uint8)
    self.vectors = (state("vectors", (self.num_items, self.dim))
                    if self.store_vectors else None)
    self.rotation = (state("rotation", (self.dim, self.dim))
                     if self.use_rotation else None)

  @classmethod
  def from_embeddings(cls, embeddings, num_lists: int, num_subspaces: int,
                      num_codewords: int = 256, iterations: int = 20,
                      seed: int = 0, **kwargs) -> "IVFPQIndex":
    """Trains the quantizers on `embeddings [num_items, dim]` with the TF
    k-means / PQ trainer and returns the filled index (kwargs go to the
    constructor)."""
    embeddings = _item_matrix(embeddings)
    index = cls(len(embeddings), embeddings.shape[1], num_lists,
                num_subspaces, num_codewords, **kwargs)
    return index.index(embeddings, iterations=iterations, seed=seed)

  def index(self, embeddings, iterations: int = 20,
            seed: int = 0) -> "IVFPQIndex":
    """Trains the quantizers on `embeddings [num_items, dim]` (`iterations`
    of k-means, seeded) and loads the items' codes; returns the index."""
    embeddings = _layer_embeddings(self, embeddings)
    codebook = quantization.train_ivfpq(
        embeddings, self.num_lists, self.num_subspaces, self.num_codewords,
        iterations, seed=seed, normalize=self.metric == "cosine")
    return self.index_from_codes(
        codebook.centroids, codebook.codebooks, codebook.assignments,
        codebook.codes, vectors=embeddings if self.store_vectors else None)

  def index_from_codes(self, centroids, codebooks, assignments, codes,
                       vectors=None, rotation=None) -> "IVFPQIndex":
    """Loads quantizers and item codes (e.g. learned by a model); returns
    the index.

    Args:
      centroids: `[J, d]` coarse centroids (in the rotated space).
      codebooks: `[D, K, d / D]` residual codewords (rotated space).
      assignments: `[N]` coarse list of each item.
      codes: `[N, D]` PQ codes of each item.
      vectors: `[N, d]` original vectors, needed when `store_vectors`.
      rotation: `[d, d]`, needed when the index was built with `rotation`.
    """
    def array(value, name, shape, dtype=None):
      """`value` checked for shape and finiteness, cast to `dtype`; integer
      arrays keep their dtype when `dtype` is None (no wide copy)."""
      value = np.asarray(value)
      if value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, the index expects "
                         f"{shape}")
      if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
      if dtype is None:
        return value if value.dtype.kind in "iu" else value.astype(np.int64)
      return value.astype(dtype, copy=False)

    centroids = array(centroids, "centroids", (self.num_lists, self.dim),
                      np.float32)
    codebooks = array(codebooks, "codebooks", tuple(self.codebooks.shape),
                      np.float32)
    assignments = array(assignments, "assignments", (self.num_items,))
    codes = array(codes, "codes", (self.num_items, self.num_subspaces))
    if assignments.min() < 0 or assignments.max() >= self.num_lists:
      raise ValueError(f"assignments must be in 0..{self.num_lists - 1}")
    if codes.min() < 0 or codes.max() >= self.num_codewords:
      raise ValueError(f"codes must be in 0..{self.num_codewords - 1}")
    if (vectors is None) == self.store_vectors:
      raise ValueError("vectors must be given exactly when the index was "
                       f"built with store_vectors (={self.store_vectors})")
    if (rotation is None) == self.use_rotation:
      raise ValueError("rotation must be given exactly when the index was "
                       f"built with rotation (={self.use_rotation})")
    order = np.argsort(assignments, kind="stable")
    offsets = np.searchsorted(assignments[order],
                              np.arange(self.num_lists + 1))
    self.centroids.assign(centroids)
    self.codebooks.assign(codebooks)
    self.list_offsets.assign(offsets.astype(np.int32))
    self.list_items.assign(order.astype(np.int32))
    # Row of each item in the list-ordered tables.
    position = np.empty_like(order)
    position[order] = np.arange(len(order), dtype=order.dtype)
    _assign_rows(self.codes, codes, position, np.uint8)
    if vectors is not None:
      vectors = array(vectors, "vectors", (self.num_items, self.dim),
                      np.float32)
      if self.metric == "cosine":
        vectors = quantization.unit_rows(vectors)
      _assign_rows(self.vectors, vectors, position, np.float32)
    if rotation is not None:
      self.rotation.assign(array(rotation, "rotation", (self.dim, self.dim),
                                 np.float32))
    return self

  def set_index(self, *args, **kwargs) -> "IVFPQIndex":
    """The former name of `index_from_codes` (poeem_tf's servable)."""
    return self.index_from_codes(*args, **kwargs)

  def call(self, queries, k, nprobe=None, rerank=None, exclude=None):
    queries = tf.convert_to_tensor(queries, tf.float32)
    k = tf.convert_to_tensor(k, tf.int32)
    nprobe = tf.convert_to_tensor(self.nprobe if nprobe is None else nprobe,
                                  tf.int32)
    rerank = tf.convert_to_tensor(self.rerank if rerank is None else rerank,
                                  tf.int32)
    if exclude is not None:
      exclude = tf.convert_to_tensor(exclude)
    if tf.executing_eagerly():
      return _eager_search(self, queries, k, nprobe, rerank, exclude)
    return self._search(queries, k, nprobe, rerank, exclude)

  def _search(self, queries, k, nprobe, rerank, exclude):
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    k = _checked(k, 1, self.max_k, "k")
    nprobe = _checked(nprobe, 1, self.num_lists, "nprobe")
    rerank = _checked(rerank, 0,
                      self.num_items if self.store_vectors else 0, "rerank")
    rotated, coarse, probes = self._probe(queries, nprobe)
    if exclude is not None:
      exclude = tf.cast(exclude, tf.int32)
    # The best `width` candidates by ADC (k, or rerank when re-ranking);
    # rows with fewer candidates are padded with position -1 / -inf.
    width = tf.maximum(k, rerank)
    top_scores, top_positions = tf.cond(
        self.scans_by_list(tf.shape(probes)[0], tf.shape(probes)[1]),
        lambda: self._scan_by_list(rotated, coarse, probes, width, exclude),
        lambda: self._scan_by_query(rotated, coarse, probes, width, exclude))
    if self.store_vectors:
      top_scores, top_positions = tf.cond(
          rerank > 0,
          lambda: self._rerank(queries, top_scores, top_positions, k),
          lambda: (top_scores[:, :k], top_positions[:, :k]))
    valid = top_positions >= 0
    indices = tf.where(valid, tf.gather(self.list_items,
                                        tf.maximum(top_positions, 0)), -1)
    return top_scores, indices

  def scans_by_list(self, batch, nprobe):
    """Whether a batch of `batch` queries probing `nprobe` lists each is
    scanned list by list (else query by query); ints or int32 tensors."""
    return (batch > 1) & (batch * nprobe > self.list_scan_from)

  def _probe(self, queries, nprobe):
    """Coarse step: the rotated queries, and the scores and ids of the
    `nprobe` best lists of every query."""
    rotated = queries if self.rotation is None else tf.matmul(
        queries, self.rotation)
    coarse, probes = tf.math.top_k(
        tf.matmul(rotated, self.centroids, transpose_b=True), k=nprobe)
    return rotated, coarse, probes

  def candidates_scanned(self, queries, nprobe=None) -> tf.Tensor:
    """`[B]` int32: how many items a search with `nprobe` lists scores for
    each query (the sizes of its probed lists), the cost that makes indexes
    with uneven lists comparable."""
    queries = tf.convert_to_tensor(queries, tf.float32)
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    nprobe = _checked(self.nprobe if nprobe is None else nprobe, 1,
                      self.num_lists, "nprobe")
    sizes = self.list_offsets[1:] - self.list_offsets[:-1]
    return tf.reduce_sum(tf.gather(sizes, self._probe(queries, nprobe)[2]),
                         axis=1)

  def _scan_by_query(self, rotated, coarse, probes, width, exclude):
    """ADC with a look-up table per query: every candidate of the batch,
    flattened, sums its D table entries (best for small batches)."""
    batch = tf.shape(rotated)[0]
    starts = tf.gather(self.list_offsets, probes)
    lengths = tf.gather(self.list_offsets, probes + 1) - starts
    # Each candidate's position in list order, query row and coarse score.
    positions = tf.ragged.range(tf.reshape(starts, [-1]),
                                tf.reshape(starts + lengths, [-1])).flat_values
    row_lengths = tf.reduce_sum(lengths, axis=1)
    rows = tf.repeat(tf.range(batch), row_lengths)
    base = tf.repeat(tf.reshape(coarse, [-1]), tf.reshape(lengths, [-1]))
    # LUT[b, m, c] = <q'_{b,m}, b_{m,c}>, summed over the item's codes.
    sub_queries = tf.reshape(rotated, [batch, self.num_subspaces, -1])
    lut = tf.einsum("bmd,mcd->bmc", sub_queries, self.codebooks)
    codes = tf.cast(tf.gather(self.codes, positions), tf.int32)
    lut_index = (codes + tf.range(self.num_subspaces) * self.num_codewords
                 + rows[:, tf.newaxis] * (self.num_subspaces *
                                          self.num_codewords))
    scores = base + tf.reduce_sum(
        tf.gather(tf.reshape(lut, [-1]), lut_index), axis=1)
    if exclude is not None:
      scores = self._mask_excluded(scores, tf.gather(exclude, rows),
                                   positions)
    dense_scores = _pad_columns(
        tf.RaggedTensor.from_row_lengths(scores, row_lengths).to_tensor(
            -np.inf), width, -np.inf)
    dense_positions = _pad_columns(
        tf.RaggedTensor.from_row_lengths(positions, row_lengths).to_tensor(
            -1), width, -1)
    top_scores, top = tf.math.top_k(dense_scores, k=width)
    return top_scores, tf.gather(dense_positions, top, batch_dims=1)

  def _scan_by_list(self, rotated, coarse, probes, width, exclude):
    """The same ADC scores, list by list: each probed list is decoded once,
    <q', c_j + concat_m b_{m, code_m}> = s_j + sum_m LUT[m, code_m], and
    multiplied with all the queries that probe it in one matmul (best for
    large batches, where lists are shared by many queries)."""
    batch, nprobe = tf.shape(probes)[0], tf.shape(probes)[1]
    pair_lists = tf.reshape(probes, [-1])
    pair_base = tf.reshape(coarse, [-1])
    order = tf.argsort(pair_lists, stable=True)
    lists, _, counts = tf.unique_with_counts(tf.gather(pair_lists, order))
    ends = tf.cumsum(counts)
    flat_codebooks = tf.reshape(self.codebooks, [-1, self.codebooks.shape[2]])
    code_offsets = tf.range(self.num_subspaces) * self.num_codewords
    offsets = tf.convert_to_tensor(self.list_offsets)
    # A list contributes at most its length: memory is pairs x min(width,
    # longest list), not pairs x width (rerank can be far above a list).
    list_width = tf.minimum(width, tf.reduce_max(offsets[1:] - offsets[:-1]))

    def scan(i, found_scores, found_positions):
      pairs = order[ends[i] - counts[i]:ends[i]]
      rows = pairs // nprobe
      start, end = offsets[lists[i]], offsets[lists[i] + 1]
      positions = tf.range(start, end)
      # A gather, not a slice: slicing a variable would copy all of it.
      codes = tf.cast(tf.gather(self.codes, positions), tf.int32) + code_offsets
      decoded = tf.reshape(tf.gather(flat_codebooks, codes), [-1, self.dim])
      scores = tf.gather(pair_base, pairs)[:, tf.newaxis] + tf.matmul(
          tf.gather(rotated, rows), decoded, transpose_b=True)
      if exclude is not None:
        scores = self._mask_excluded(scores, tf.gather(exclude, rows),
                                     positions)
      best, top = tf.math.top_k(scores, k=tf.minimum(list_width, end - start))
      best = _pad_columns(best, list_width, -np.inf)
      top = _pad_columns(tf.gather(positions, top), list_width, -1)
      return (i + 1, found_scores.write(i, best),
              found_positions.write(i, top))

    arrays = (tf.TensorArray(tf.float32, size=tf.size(lists),
                             infer_shape=False),
              tf.TensorArray(tf.int32, size=tf.size(lists),
                             infer_shape=False))
    _, found_scores, found_positions = tf.while_loop(
        lambda i, *_: i < tf.size(lists), scan, (0,) + arrays)
    # Rows come out grouped by list; put them back in (query, probe) order.
    unsort = tf.math.invert_permutation(order)
    scores = _pad_columns(tf.reshape(
        tf.gather(found_scores.concat(), unsort),
        [batch, nprobe * list_width]), width, -np.inf)
    positions = _pad_columns(tf.reshape(
        tf.gather(found_positions.concat(), unsort),
        [batch, nprobe * list_width]), width, -1)
    top_scores, top = tf.math.top_k(scores, k=width)
    return top_scores, tf.gather(positions, top, batch_dims=1)

  def _mask_excluded(self, scores, exclude, positions):
    """-inf where the item at `positions` is in that row's `exclude`;
    scores [n, L] or [n] with exclude [n, E] and positions [L] or [n]."""
    ids = tf.gather(self.list_items, positions)
    if scores.shape.rank == 2:
      banned = tf.reduce_any(
          exclude[:, :, tf.newaxis] == ids[tf.newaxis, tf.newaxis, :], axis=1)
    else:
      banned = tf.reduce_any(exclude == ids[:, tf.newaxis], axis=1)
    return tf.where(banned, tf.constant(-np.inf), scores)

  def _rerank(self, queries, adc_scores, positions, k):
    """Exact <q, x> for the ADC candidates, then the best k."""
    vectors = tf.gather(self.vectors, tf.maximum(positions, 0))
    exact = tf.einsum("bd,brd->br", queries, vectors)
    exact = tf.where(tf.math.is_finite(adc_scores), exact,
                     tf.constant(-np.inf))
    scores, top = tf.math.top_k(exact, k=k)
    return scores, tf.gather(positions, top, batch_dims=1)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_items": self.num_items, "dim": self.dim,
        "num_lists": self.num_lists, "num_subspaces": self.num_subspaces,
        "num_codewords": self.num_codewords, "metric": self.metric,
        "max_k": self.max_k, "nprobe": self.nprobe, "rerank": self.rerank,
        "store_vectors": self.store_vectors, "rotation": self.use_rotation,
        "list_scan_from": self.list_scan_from})
    return config


# IVFFlatIndex: rows per chunk of an inverted list.
CHUNK_SIZE = 32
# IVFFlatIndex: most queries scored together against one chunk.
MAX_TILE_QUERIES = 64
# IVFFlatIndex.from_embeddings: k-means trains on at most this many points per
# list (as Faiss does).
POINTS_PER_LIST = 256
# IVFFlatIndex: the dtypes its scan can read the lists in.
SCAN_DTYPES = ("float32", "bfloat16")


@keras.utils.register_keras_serializable(package="retrieval_tf")
class IVFFlatIndex(keras.layers.Layer):
  """Inverted file over the full vectors: exact scores of the probed lists.

  Each item x lives in the inverted list of its L2-nearest coarse centroid
  c_j (k-means). A query q probes the `nprobe` lists with the best <q, c_j>
  and scores every item in them exactly, <q, x>; there is no quantization
  error, so recall only depends on whether the true neighbours lie in the
  probed lists, and with `nprobe = num_lists` the search is exact.

  Lists are stored as fixed-size chunks: `vectors [C, L, d]` with
  `chunk_items [C, L]` (item index, -1 on padding) and `list_chunks [J + 1]`
  (list j = chunks `list_chunks[j]` to `list_chunks[j + 1]`), so a probed
  list is a range of whole chunks. The search has no loop and no switch on
  nprobe: the (query, chunk) pairs of the batch are grouped by chunk and cut
  into tiles of at most G queries, G = the batch's mean queries per probed
  chunk (up to `MAX_TILE_QUERIES`), so each chunk is read once per tile and
  scored against its tile's queries in one batched matmul
  `[T, G, d] x [T, d, L]`; a large batch, where many queries share a list,
  does the work of a list-by-list scan in one op. A single query (G = 1)
  skips the grouping: one gather of its chunks and one mat-vec, the same
  scores on a shorter latency path. Cost grows linearly with the items
  scanned.
  The scores are put back in (query, chunk) order, padding and excluded
  items get -inf, and one `top_k` per query picks the best k.

  `scan_dtype="bfloat16"` stores each vector as two bfloat16 halves, x =
  hi + lo (hi = bfloat16(x), lo = bfloat16(x - hi): the same 4 bytes per
  dimension as float32). The scan reads hi alone, half the bytes, and
  scores it in bfloat16; the best `k + rescore_margin` of those approximate
  scores are re-scored in float32 from hi + lo (about 16 bits of mantissa:
  within 1e-5 of the float32 score, relative), and the best k of those are
  returned. It is faster where bfloat16 matrix products are native (CPUs
  with AVX512-BF16 or AMX through oneDNN, recent GPUs) and much slower
  where they are emulated (TensorFlow without oneDNN: `benchmarks/ann.py`
  measures it); the margin covers the bfloat16 rounding of the scan's
  scores (k = 10, 100, 1000 on the 1M x 64 sets of `benchmarks/vectors.py`
  returned the float32 scan's items with a margin of 32).

  `call(queries [B, d], k, nprobe=None, exclude=None) -> (scores [B, k],
  indices [B, k])`: float32 scores, best first, int32 item indices; `k` and
  `nprobe` may be tensors and are checked in the graph (`1 <= k <= max_k`,
  `1 <= nprobe <= num_lists`); `exclude [B, E]` (padded with -1) lists items
  never to return. Rows with fewer than k candidates are padded with index
  -1 and score -inf.

      item_vectors = model.item_embedding({"item_id": np.arange(n)})
      index = IVFFlatIndex.from_embeddings(item_vectors, num_lists=1024,
                                           nprobe=32)
      user_vectors = model.user_embedding(user_features)
      scores, items = index(user_vectors, 10)             # [B, 10] each
      scores, items = index(user_vectors, 10, nprobe=1024)  # exact

  Args:
    num_items, dim: the index shape.
    num_lists: J, coarse centroids.
    metric: "dot" or "cosine" (queries and stored vectors L2-normalised).
    max_k: the largest k a caller may ask for.
    nprobe: default number of lists searched (None: min(8, num_lists)).
    chunk_size: L, rows per chunk (lists are padded to whole chunks).
    num_chunks: C, chunks held (None: the most J lists of N items can need,
      N / L + J; `index` fills the first ones and pads the rest).
    scan_dtype: "float32" (exact scan) or "bfloat16" (hi / lo halves, see
      above).
    rescore_margin: with bfloat16, candidates re-scored beyond k.
  """

  def __init__(self, num_items: int, dim: int, num_lists: int,
               metric: str = "dot", max_k: int = 1000,
               nprobe: Optional[int] = None, chunk_size: int = CHUNK_SIZE,
               num_chunks: Optional[int] = None,
               scan_dtype: str = "float32", rescore_margin: int = 32,
               **kwargs):
    super().__init__(**kwargs)
    _check_shape_and_metric(self, num_items, dim, metric, max_k)
    check_build_options("ivf_flat", dim, num_lists, None, nprobe, 0,
                        scan_dtype=scan_dtype)
    if num_lists > num_items:
      raise ValueError(f"num_lists must be in 1..num_items={num_items}, got "
                       f"{num_lists}")
    if chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if rescore_margin < 0:
      raise ValueError(f"rescore_margin must be >= 0, got {rescore_margin}")
    self.scan_dtype, self.rescore_margin = scan_dtype, int(rescore_margin)
    self.num_items, self.dim, self.metric = int(num_items), int(dim), metric
    self.num_lists, self.max_k = int(num_lists), int(min(max_k, num_items))
    self.nprobe = int(min(8, num_lists) if nprobe is None else nprobe)
    self.chunk_size = int(chunk_size)
    most = -(-self.num_items // self.chunk_size) + self.num_lists
    self.num_chunks = int(most if num_chunks is None else num_chunks)
    if not -(-self.num_items // self.chunk_size) <= self.num_chunks:
      raise ValueError(f"num_chunks={num_chunks} cannot hold {num_items} "
                       f"items in chunks of {chunk_size}")

    def state(name, shape, dtype=tf.float32):
      return self.add_weight(name=name, shape=shape, dtype=dtype,
                             initializer="zeros", trainable=False)

    self.centroids = state("centroids", (self.num_lists, self.dim))
    self.list_chunks = state("list_chunks", (self.num_lists + 1,), tf.int32)
    rows = (self.num_chunks, self.chunk_size, self.dim)
    self.vectors = state("vectors", rows, tf.dtypes.as_dtype(scan_dtype))
    # bfloat16 scan: the low halves, read only to re-score candidates.
    self.vector_residuals = (state("vector_residuals", rows, tf.bfloat16)
                             if scan_dtype == "bfloat16" else None)
    self.chunk_items = state("chunk_items",
                             (self.num_chunks, self.chunk_size), tf.int32)

  @classmethod
  def from_embeddings(cls, embeddings, num_lists: int, iterations: int = 20,
                      seed: int = 0, **kwargs) -> "IVFFlatIndex":
    """Trains the coarse quantizer on `embeddings [num_items, dim]` and
    returns the filled index (kwargs go to the constructor)."""
    embeddings = _item_matrix(embeddings)
    index = cls(len(embeddings), embeddings.shape[1], num_lists, **kwargs)
    return index.index(embeddings, iterations=iterations, seed=seed)

  def index(self, embeddings, iterations: int = 20,
            seed: int = 0) -> "IVFFlatIndex":
    """Trains the coarse quantizer on `embeddings [num_items, dim]` and puts
    every item in a list; returns the index.

    Spherical k-means, as Faiss trains inverted files for inner products:
    `retrieval_tf.quantization.kmeans` (`iterations`, seeded) on at most
    `POINTS_PER_LIST` random rows per list, L2-normalised, then unit
    centroids; every item goes to the list of largest <x, c_j>. Lists are
    then ranked for a query by direction alone, which is what inner-product
    search needs (un-normalised centroids favour long ones).
    """
    embeddings = _layer_embeddings(self, embeddings)
    if self.metric == "cosine":
      embeddings = quantization.unit_rows(embeddings)
    sample = embeddings
    if self.num_items > POINTS_PER_LIST * self.num_lists:
      sample = embeddings[np.sort(np.random.default_rng(seed).choice(
          self.num_items, POINTS_PER_LIST * self.num_lists, replace=False))]
    centroids = quantization.unit_rows(quantization.kmeans(
        quantization.unit_rows(sample), self.num_lists, iterations, seed=seed))
    # For unit centroids the L2-nearest is the one of largest <x, c_j>.
    assignments, _ = quantization.assign(embeddings, centroids)
    return self.index_from_assignments(embeddings, centroids, assignments)

  def index_from_assignments(self, embeddings, centroids,
                             assignments) -> "IVFFlatIndex":
    """Loads `embeddings [N, d]` into the lists `assignments [N]` of the
    coarse `centroids [J, d]`; returns the index."""
    embeddings = _layer_embeddings(self, embeddings)
    centroids = np.asarray(centroids, np.float32)
    assignments = np.asarray(assignments)
    if centroids.shape != (self.num_lists, self.dim):
      raise ValueError(f"centroids have shape {centroids.shape}, the index "
                       f"expects {(self.num_lists, self.dim)}")
    if assignments.shape != (self.num_items,) or assignments.min() < 0 or \
        assignments.max() >= self.num_lists:
      raise ValueError(f"assignments must be [{self.num_items}] lists in "
                       f"0..{self.num_lists - 1}")
    if not (np.isfinite(embeddings).all() and np.isfinite(centroids).all()):
      raise ValueError("embeddings or centroids contain NaN or infinite "
                       "values")
    if self.metric == "cosine":
      embeddings = quantization.unit_rows(embeddings)
    sizes = np.bincount(assignments, minlength=self.num_lists)
    chunks = -(-sizes // self.chunk_size)
    if chunks.sum() > self.num_chunks:
      raise ValueError(f"the lists need {chunks.sum()} chunks, the index "
                       f"holds num_chunks={self.num_chunks}")
    list_chunks = np.concatenate([[0], np.cumsum(chunks)])
    order = np.argsort(assignments, kind="stable")
    # Row of each item (in list order) in the flattened [C * L] chunk rows.
    first_row = list_chunks[:-1] * self.chunk_size
    list_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sorted_lists = assignments[order]
    rows = first_row[sorted_lists] + (np.arange(self.num_items) -
                                      list_start[sorted_lists])
    items = np.full(self.num_chunks * self.chunk_size, -1, np.int32)
    items[rows] = order
    vectors = np.zeros((self.num_chunks * self.chunk_size, self.dim),
                       np.float32)
    vectors[rows] = embeddings[order]
    vectors = tf.constant(vectors.reshape(self.vectors.shape))
    high = tf.cast(vectors, self.vectors.dtype)
    self.vectors.assign(high)
    if self.vector_residuals is not None:
      self.vector_residuals.assign(
          tf.cast(vectors - tf.cast(high, tf.float32), tf.bfloat16))
    self.centroids.assign(centroids)
    self.list_chunks.assign(list_chunks.astype(np.int32))
    self.chunk_items.assign(items.reshape(self.chunk_items.shape))
    return self

  def call(self, queries, k, nprobe=None, exclude=None):
    queries = tf.convert_to_tensor(queries, tf.float32)
    k = tf.convert_to_tensor(k, tf.int32)
    nprobe = tf.convert_to_tensor(self.nprobe if nprobe is None else nprobe,
                                  tf.int32)
    if exclude is not None:
      exclude = tf.convert_to_tensor(exclude)
    if tf.executing_eagerly():
      return _eager_search(self, queries, k, nprobe, exclude)
    return self._search(queries, k, nprobe, exclude)

  def _search(self, queries, k, nprobe, exclude):
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    k = _checked(k, 1, self.max_k, "k")
    nprobe = _checked(nprobe, 1, self.num_lists, "nprobe")
    batch = tf.shape(queries)[0]
    starts, ends = self._probe_chunks(queries, nprobe)
    if exclude is not None:
      exclude = tf.cast(exclude, tf.int32)
    # One query takes the short path (fewer ops is lower latency); both
    # paths score the same chunks.
    scores, rows = tf.cond(
        batch == 1,
        lambda: self._scan_one(queries, starts, ends, exclude),
        lambda: self._scan_batch(queries, nprobe, starts, ends, exclude))
    if self.vector_residuals is not None:
      scores, rows = self._rescore(queries, scores, rows,
                                   k + self.rescore_margin)
    scores, rows = _best_k(scores, rows, k)
    items = self._gather_rows(self.chunk_items, tf.maximum(rows, 0))
    return scores, tf.where(rows >= 0, items, -1)

  def _probe_chunks(self, queries, nprobe):
    """Coarse step: the chunk ranges `starts[i]` to `ends[i]` `[B * nprobe]`
    of the `nprobe` best lists of every query, query by query."""
    _, probes = tf.math.top_k(
        tf.matmul(queries, self.centroids, transpose_b=True), k=nprobe)
    return (tf.reshape(tf.gather(self.list_chunks, probes), [-1]),
            tf.reshape(tf.gather(self.list_chunks, probes + 1), [-1]))

  def _scan_one(self, query, starts, ends, exclude):
    """Scan scores `[1, n]` (-inf: padding or excluded) of one query `[1, d]`
    over the chunks `starts[i]` to `ends[i]` of its probed lists, with their
    rows in the flattened `[C * L]` chunk rows: one gather of the chunks and
    one mat-vec."""
    chunks = tf.ragged.range(starts, ends).flat_values
    scores = tf.matmul(self._scan_queries(query),
                       tf.reshape(tf.gather(self.vectors, chunks),
                                  [-1, self.dim]), transpose_b=True)
    items = tf.reshape(tf.gather(self.chunk_items, chunks), [1, -1])
    banned = items < 0
    if exclude is not None:
      banned |= tf.reduce_any(exclude[0][:, tf.newaxis] == items, axis=0)
    scores = tf.where(banned, tf.constant(-np.inf),
                      tf.cast(scores, tf.float32))
    return scores, tf.reshape(self._chunk_rows(chunks), [1, -1])

  def _scan_batch(self, queries, nprobe, starts, ends, exclude):
    """Scan scores `[B, n]` of each query of a batch with their chunk rows
    (as `_scan_one`): the probed (query, chunk) pairs scored through the
    tiles (`_tiled_scores`), then each query's chunks side by side."""
    batch = tf.shape(queries)[0]
    pair_chunks = tf.ragged.range(starts, ends)
    chunks = pair_chunks.flat_values
    rows = tf.cast(pair_chunks.value_rowids(), tf.int32) // nprobe
    pairs = tf.size(chunks)
    per_query = tf.reduce_sum(tf.reshape(ends - starts, [batch, nprobe]),
                              axis=1)
    scores = tf.cast(self._tiled_scores(self._scan_queries(queries), chunks,
                                        rows, pairs), tf.float32)
    items = tf.gather(self.chunk_items, chunks)
    banned = items < 0
    if exclude is not None:
      exclude = tf.gather(exclude, rows)
      banned |= tf.reduce_any(
          exclude[:, :, tf.newaxis] == items[:, tf.newaxis, :], axis=1)
    scores = tf.where(banned, tf.constant(-np.inf), scores)
    # Each query's chunks side by side, [B, most chunks * L] (a gather; a
    # query with fewer chunks reads the padding pair `pairs`).
    width = tf.reduce_max(per_query)
    column = tf.range(width)[tf.newaxis, :]
    source = tf.where(column < per_query[:, tf.newaxis],
                      tf.cumsum(per_query, exclusive=True)[:, tf.newaxis] +
                      column, pairs)
    dense_scores = tf.reshape(tf.gather(tf.concat(
        [scores, tf.fill([1, self.chunk_size], tf.constant(-np.inf))], 0),
        source), [batch, -1])
    dense_chunks = tf.gather(tf.concat([chunks, [0]], 0), source)
    return dense_scores, tf.reshape(self._chunk_rows(dense_chunks),
                                    [batch, -1])

  def _chunk_rows(self, chunks):
    """`[..., L]` rows, in the flattened `[C * L]` chunk rows, of `chunks`."""
    return (chunks[..., tf.newaxis] * self.chunk_size +
            tf.range(self.chunk_size))

  def _gather_rows(self, variable, rows):
    """`variable [C, L, ...]` at the flattened chunk `rows`, read sparsely
    (a gather on the variable: a dense read of a variable that is also
    gathered copies all of it on every call)."""
    return tf.gather_nd(variable, tf.stack(
        [rows // self.chunk_size, rows % self.chunk_size], axis=-1))

  def _scan_queries(self, queries):
    """The queries in the dtype the scan reads the lists in."""
    return tf.cast(queries, self.vectors.dtype)

  def _rescore(self, queries, scores, rows, count):
    """The best `count` `[B, n]` bfloat16 scan scores re-scored in float32
    from hi + lo: `(scores [B, count], rows [B, count])`, -inf and row -1
    where there is no candidate."""
    scores, rows = _best_k(scores, rows, count)
    found = rows >= 0
    rows = tf.maximum(rows, 0)
    vectors = (
        tf.cast(self._gather_rows(self.vectors, rows), tf.float32) +
        tf.cast(self._gather_rows(self.vector_residuals, rows), tf.float32))
    exact = tf.squeeze(tf.matmul(vectors, queries[:, :, tf.newaxis]), -1)
    return (tf.where(found, exact, tf.constant(-np.inf)),
            tf.where(found, rows, -1))

  def _tiled_scores(self, queries, chunks, rows, pairs):
    """`[pairs, L]` scores of each (query `rows[i]`, chunk `chunks[i]`)
    pair: the pairs grouped by chunk and cut into tiles of at most G
    queries, each tile one `[G, d] x [d, L]` matmul of a batched matmul."""
    # Pair `order[s]` sits in row `slot[s]` of the tiles' [T * G, L] scores.
    order = tf.argsort(chunks, stable=True)
    unique, group, counts = tf.unique_with_counts(tf.gather(chunks, order))
    tile_queries = tf.clip_by_value(
        -(-pairs // tf.maximum(tf.size(unique), 1)), 1, MAX_TILE_QUERIES)
    tiles_per_group = -(-counts // tile_queries)
    rank = tf.range(pairs) - tf.gather(tf.cumsum(counts, exclusive=True),
                                       group)
    slot = ((tf.gather(tf.cumsum(tiles_per_group, exclusive=True), group) +
             rank // tile_queries) * tile_queries + rank % tile_queries)
    num_tiles = tf.reduce_sum(tiles_per_group)
    sorted_rows = tf.gather(rows, order)
    slot_rows = tf.scatter_nd(slot[:, tf.newaxis], sorted_rows + 1,
                              [num_tiles * tile_queries]) - 1
    tile_chunks = tf.gather(unique, tf.searchsorted(
        tf.cumsum(tiles_per_group), tf.range(num_tiles), side="right"))
    tile_vectors = tf.gather(self.vectors, tile_chunks)
    tile_query_vectors = tf.reshape(
        tf.gather(queries, tf.maximum(slot_rows, 0)),
        [num_tiles, tile_queries, self.dim])
    # Back to pair order: pair p's scores are in slot `slot[unsort[p]]`.
    unsort = tf.math.invert_permutation(order)
    return tf.gather(tf.reshape(
        tf.matmul(tile_query_vectors, tile_vectors, transpose_b=True),
        [-1, self.chunk_size]), tf.gather(slot, unsort))

  def candidates_scanned(self, queries, nprobe=None) -> tf.Tensor:
    """`[B]` int32: the chunk rows (items and padding) a search with
    `nprobe` lists scores for each query."""
    queries = tf.convert_to_tensor(queries, tf.float32)
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    nprobe = _checked(self.nprobe if nprobe is None else nprobe, 1,
                      self.num_lists, "nprobe")
    _, probes = tf.math.top_k(
        tf.matmul(queries, self.centroids, transpose_b=True), k=nprobe)
    sizes = self.list_chunks[1:] - self.list_chunks[:-1]
    return self.chunk_size * tf.reduce_sum(tf.gather(sizes, probes), axis=1)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_items": self.num_items, "dim": self.dim,
        "num_lists": self.num_lists, "metric": self.metric,
        "max_k": self.max_k, "nprobe": self.nprobe,
        "chunk_size": self.chunk_size, "num_chunks": self.num_chunks,
        "scan_dtype": self.scan_dtype,
        "rescore_margin": self.rescore_margin})
    return config

  def save_own_variables(self, store):
    super().save_own_variables(_Bfloat16AsBits(store, self.weights))

  def load_own_variables(self, store):
    super().load_own_variables(_Bfloat16AsBits(store, self.weights))


class _Bfloat16AsBits:
  """A layer's `.keras` weights store with its bfloat16 variables held as
  their uint16 bits: HDF5, that file's format, has no bfloat16 (a plain
  save writes bytes that no longer load)."""

  def __init__(self, store, variables):
    self._store = store
    self._bfloat16 = {f"{i}" for i, v in enumerate(variables)
                      if v.dtype == tf.bfloat16}

  def keys(self):
    return self._store.keys()

  def __setitem__(self, key, value):
    self._store[key] = (np.asarray(value).view(np.uint16)
                        if key in self._bfloat16 else value)

  def __getitem__(self, key):
    value = self._store[key]
    if key not in self._bfloat16:
      return value
    return tf.bitcast(tf.constant(np.asarray(value), tf.uint16), tf.bfloat16)


def _layer_embeddings(layer, embeddings) -> np.ndarray:
  """`embeddings` as float32, checked to be `layer`'s `[num_items, dim]` and
  finite (else ValueError)."""
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.shape != (layer.num_items, layer.dim):
    raise ValueError(f"embeddings have shape {embeddings.shape}, the index "
                     f"expects {(layer.num_items, layer.dim)}")
  if not np.isfinite(embeddings).all():
    raise ValueError("embeddings contain NaN or infinite values")
  return embeddings


def _assign_rows(variable, values: np.ndarray, position: np.ndarray,
                 dtype) -> None:
  """Row i of `values` (cast to `dtype`) written to row `position[i]` of
  `variable`, without a second full-size copy of a large table: slices of
  `values` are scattered into the variable's buffer."""
  rows = max(1, _ASSIGN_SLICE_BYTES // max(1, values[0].nbytes))
  for start in range(0, len(values), rows):
    variable.scatter_update(tf.IndexedSlices(
        values[start:start + rows].astype(dtype, copy=False),
        position[start:start + rows]))


def _item_matrix(embeddings) -> np.ndarray:
  """`embeddings` as a float32 `[N, d]` array, N, d >= 1 (else ValueError)."""
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or 0 in embeddings.shape:
    raise ValueError(f"embeddings must be a non-empty [num_items, dim] "
                     f"array, got shape {embeddings.shape}")
  return embeddings


def _check_shape_and_metric(layer, num_items, dim, metric, max_k) -> None:
  if num_items < 1 or dim < 1:
    raise ValueError(f"{type(layer).__name__} needs num_items >= 1 and "
                     f"dim >= 1, got {num_items} and {dim}")
  if metric not in ("dot", "cosine"):
    raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}")
  if max_k < 1:
    raise ValueError(f"max_k must be >= 1, got {max_k}")


def _checked(value, low: int, high: int, name: str) -> tf.Tensor:
  """`value` as an int32 tensor that can only be used once it has been
  checked to lie in `low..high` (the checks run before any op reading it)."""
  value = tf.convert_to_tensor(value, tf.int32)
  with tf.control_dependencies([
      tf.debugging.assert_greater_equal(value, low,
                                        message=f"{name} must be >= {low}"),
      tf.debugging.assert_less_equal(value, high,
                                     message=f"{name} must be <= {high}")]):
    return tf.identity(value)


def _pad_columns(matrix, width, value):
  """Pads `[B, n]` on the right to at least `width` columns."""
  missing = tf.maximum(width - tf.shape(matrix)[1], 0)
  return tf.pad(matrix, [[0, 0], [0, missing]], constant_values=value)


def _best_k(scores, items, k):
  """The k best `[B, n]` scores (-inf: no candidate) with their items, best
  first; rows with fewer than k candidates padded with -inf and item -1."""
  top_scores, top = tf.math.top_k(_pad_columns(scores, k, -np.inf), k=k)
  indices = tf.gather(_pad_columns(items, k, -1), top, batch_dims=1)
  return top_scores, tf.where(tf.math.is_finite(top_scores), indices, -1)


INDEX_KINDS = ("brute_force", "ivfpq", "ivf_flat")
# build_index: IVF-PQ candidates re-scored exactly by default, max(RERANK, k)
# of them. Re-scoring only k cannot change which k are returned, so the
# recall@100 of IVF-PQ is its PQ recall unless about 3k are re-scored (0.77
# against 0.99 at 1M x 64, `benchmarks.index_build`).
RERANK = 300


def check_build_options(kind: str, dim: int,
                        num_lists: Optional[int] = None,
                        num_subspaces: Optional[int] = None,
                        nprobe: Optional[int] = None, rerank: int = RERANK,
                        prefix: str = "", scan_dtype: str = "float32"
                        ) -> None:
  """ValueError for `build_index` options that cannot work on `dim`-d
  vectors (None: its default), so callers fail before any quantizer is
  trained. `prefix` goes before each option's name in the messages ("--"
  when they are command-line flags). `kind` is one of `INDEX_KINDS` or
  "auto"."""
  if kind not in INDEX_KINDS + ("auto",):
    raise ValueError(f"{prefix}index must be one of {INDEX_KINDS} or 'auto', "
                     f"got {kind!r}")
  if scan_dtype not in SCAN_DTYPES:
    raise ValueError(f"{prefix}scan_dtype must be one of {SCAN_DTYPES}, got "
                     f"{scan_dtype!r}")
  if scan_dtype != "float32" and kind not in ("ivf_flat", "auto"):
    raise ValueError(f"{prefix}scan_dtype={scan_dtype} only applies to "
                     f"{prefix}index=ivf_flat or auto")
  if rerank < 0:
    raise ValueError(f"{prefix}rerank must be >= 0, got {rerank}")
  ivf_options = {"num_lists": num_lists, "num_subspaces": num_subspaces,
                 "nprobe": nprobe}
  if kind == "brute_force":
    given = [prefix + name for name, value in ivf_options.items()
             if value is not None]
    if given:
      raise ValueError(f"{', '.join(given)} only apply to "
                       f"{prefix}index=ivfpq, ivf_flat or auto")
    return
  if kind == "ivf_flat" and num_subspaces is not None:
    raise ValueError(f"{prefix}num_subspaces only applies to "
                     f"{prefix}index=ivfpq or auto (ivf_flat stores the "
                     "full vectors)")
  for name, value in ivf_options.items():
    if value is not None and value < 1:
      raise ValueError(f"{prefix}{name} must be >= 1 or the default, got "
                       f"{value}")
  if num_subspaces is not None and dim % num_subspaces:
    raise ValueError(f"{prefix}num_subspaces={num_subspaces} must divide "
                     f"the embedding size {dim}")
  if None not in (num_lists, nprobe) and nprobe > num_lists:
    raise ValueError(f"{prefix}nprobe={nprobe} must be <= "
                     f"{prefix}num_lists={num_lists}")


def default_num_lists(count: int) -> int:
  """J for N = `count` items: min(4 sqrt(N), N / 39), at least 1 (Faiss'
  guidance; N / 39 keeps 39 training points per list)."""
  return max(1, min(int(4 * np.sqrt(count)), count // 39))


def ivf_flat_bytes(count: int, dim: int, num_lists: int,
                   chunk_size: int = CHUNK_SIZE) -> int:
  """The bytes of an `IVFFlatIndex` over `count` x `dim` vectors (its
  variables, with the most padding its lists can need)."""
  chunks = -(-count // chunk_size) + num_lists
  return 4 * (chunks * chunk_size * (dim + 1) + num_lists * (dim + 1) + 1)


def ivfpq_bytes(count: int, dim: int, num_lists: int, num_subspaces: int,
                store_vectors: bool, num_codewords: int = 256) -> int:
  """The bytes of an `IVFPQIndex` (its variables)."""
  return (4 * (num_lists * dim + num_codewords * dim + num_lists + 1 + count)
          + count * num_subspaces + (4 * count * dim if store_vectors else 0))


def build_index(item_vectors, kind: str = "brute_force", metric: str = "dot",
                max_k: int = 1000, num_lists: Optional[int] = None,
                num_subspaces: Optional[int] = None,
                nprobe: Optional[int] = None, rerank: int = RERANK,
                seed: int = 0, memory_budget_bytes: Optional[int] = None,
                scan_dtype: str = "float32") -> keras.layers.Layer:
  """The index a servable ships, filled with `item_vectors [N, d]`.

      index = build_index(item_vectors, "ivf_flat", max_k=100)
      scores, items = index(user_vectors, 10)   # [B, 10] each, best first
      index = build_index(item_vectors, "auto", memory_budget_bytes=2**30)

  `kind`:

  * "brute_force": a `BruteForceIndex`, exact (chunked above 262,144 items
    so memory stays bounded);
  * "ivf_flat": an `IVFFlatIndex` (exact scores of the probed lists, the
    fastest at a given recall; 4 (d + 1) bytes per item plus padding);
    by default J = sqrt(N) lists (lists of about sqrt(N) items) and
    nprobe = min(8, J) (recall@100 >= 0.95 at 1M x 64 on the clustered and
    overlapping sets of `benchmarks/vectors.py`, held-out queries);
  * "ivfpq": an `IVFPQIndex` (PQ codes, d / 4 bytes per item; with
    `rerank > 0` it also stores the vectors to re-score the best
    max(rerank, k) ADC candidates exactly): J = min(4 sqrt(N), N / 39)
    lists (Faiss' guidance), the divisor of d
    nearest d / 4 as sub-spaces (4-d sub-spaces, one byte each),
    nprobe = J / 16 (at least 1);
  * "auto": "ivf_flat" when it fits in `memory_budget_bytes` (required),
    else "ivfpq" without stored vectors (`rerank` 0) when its codes fit,
    else ValueError.

  `metric` is "dot" or "cosine", `max_k` the largest k a caller may ask for
  (capped at N); `num_lists` and `nprobe` apply to the inverted files,
  `num_subspaces` to IVF-PQ (ValueError otherwise, or when they cannot work
  on d-dimensional vectors, see `check_build_options`); `rerank` only
  applies to IVF-PQ (IVF-Flat scores are exact; default `RERANK` = 300,
  so that recall@100 is not capped by the codes); `scan_dtype` to IVF-Flat
  ("bfloat16": the lists held as bfloat16 halves, the scan reading one,
  the best candidates re-scored from both; faster where bfloat16 matrix
  products are native, see `IVFFlatIndex`).
  """
  item_vectors = np.asarray(item_vectors, np.float32)
  if item_vectors.ndim != 2 or not len(item_vectors):
    raise ValueError(f"item_vectors must be a non-empty [N, d] array, got "
                     f"shape {item_vectors.shape}")
  count, dim = item_vectors.shape
  check_build_options(kind, dim, num_lists, num_subspaces, nprobe, rerank,
                      scan_dtype=scan_dtype)
  if (memory_budget_bytes is None) == (kind == "auto"):
    raise ValueError("memory_budget_bytes must be given exactly when "
                     f"kind='auto' (got kind={kind!r})")
  max_k = min(max_k, count)
  if kind == "brute_force":
    return BruteForceIndex.from_embeddings(
        item_vectors, metric=metric, max_k=max_k,
        chunk_size=262_144 if count > 262_144 else None)
  flat_lists = num_lists or max(1, int(np.sqrt(count)))
  num_lists = num_lists or default_num_lists(count)
  num_subspaces = num_subspaces or min(
      (s for s in range(1, dim + 1) if dim % s == 0),
      key=lambda s: abs(s - dim / 4))
  if kind == "auto":
    if ivf_flat_bytes(count, dim, flat_lists) <= memory_budget_bytes:
      kind = "ivf_flat"
    elif ivfpq_bytes(count, dim, num_lists, num_subspaces,
                     False) <= memory_budget_bytes:
      kind, rerank = "ivfpq", 0
    else:
      codes = ivfpq_bytes(count, dim, num_lists, num_subspaces, False)
      raise ValueError(
          f"memory_budget_bytes={memory_budget_bytes} holds neither an "
          f"IVF-Flat index ({ivf_flat_bytes(count, dim, flat_lists)} bytes) "
          f"nor IVF-PQ codes ({codes} bytes) of these vectors: raise the "
          "budget")
  if kind == "ivf_flat":
    return IVFFlatIndex.from_embeddings(
        item_vectors, flat_lists, seed=seed, metric=metric, max_k=max_k,
        nprobe=nprobe or min(8, flat_lists), scan_dtype=scan_dtype)
  nprobe = nprobe or max(1, num_lists // 16)
  return IVFPQIndex.from_embeddings(
      item_vectors, num_lists, num_subspaces,
      num_codewords=min(256, count), seed=seed, metric=metric, max_k=max_k,
      nprobe=nprobe, rerank=rerank, store_vectors=rerank > 0)


def index_parameters(index: keras.layers.Layer) -> dict:
  """What a model card says of an index: its type, config and bytes."""
  config = {k: v for k, v in index.get_config().items()
            if k not in ("name", "trainable", "dtype")}
  size = int(sum(np.prod(v.shape) * v.dtype.size for v in index.weights))
  return dict(config, type=type(index).__name__, bytes=size)
