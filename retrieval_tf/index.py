"""Pure-TF index layers for servables: stock TensorFlow ops only, state in
non-trainable variables (so a 1M x 64 index never becomes a graph constant and
never meets the 2 GB graph-proto limit).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from retrieval_tf.compat import keras, tf


@keras.utils.register_keras_serializable(package="retrieval_tf")
class BruteForceIndex(keras.layers.Layer):
  """Exact top-k by inner product (or cosine) over all items.

  `call(queries [B, d], k, exclude=None) -> (scores [B, k], indices [B, k])`.
  `k` is a Python int or an int32 scalar tensor, checked in the graph to be
  in `1..min(max_k, num_items)`. `exclude [B, E]` (padded with -1) lists item
  indices never to return for that row. With `chunk_size`, items are scanned
  in chunks with a running top-k, so memory stays O(B x (chunk + k)).

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
    if num_items < 1 or dim < 1:
      raise ValueError(f"BruteForceIndex needs num_items >= 1 and dim >= 1, "
                       f"got {num_items} and {dim}")
    if metric not in ("dot", "cosine"):
      raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}")
    if max_k < 1:
      raise ValueError(f"max_k must be >= 1, got {max_k}")
    if chunk_size is not None and chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    self.num_items, self.dim = int(num_items), int(dim)
    self.metric, self.max_k = metric, int(min(max_k, num_items))
    self.chunk_size = None if chunk_size is None else int(chunk_size)
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.num_items, self.dim),
        initializer="zeros", trainable=False)

  def set_embeddings(self, embeddings) -> None:
    """Loads the item vectors `[num_items, dim]`."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape != (self.num_items, self.dim):
      raise ValueError(f"embeddings have shape {embeddings.shape}, the index "
                       f"expects {(self.num_items, self.dim)}")
    if not np.isfinite(embeddings).all():
      raise ValueError("embeddings contain NaN or infinite values")
    if self.metric == "cosine":
      norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
      embeddings = embeddings / np.maximum(norms, 1e-12)
    self.embeddings.assign(embeddings)

  def _check_k(self, k):
    k = tf.convert_to_tensor(k, tf.int32)
    tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1")
    tf.debugging.assert_less_equal(
        k, self.max_k, message=f"k must be <= {self.max_k}")
    return k

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
    if self.metric == "cosine":
      queries = tf.math.l2_normalize(queries, axis=-1)
    k = self._check_k(k)
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
