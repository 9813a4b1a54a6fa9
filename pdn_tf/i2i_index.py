"""The offline item-to-item (I2I) index of PDN (Sec. 5.2, Step 1 of 5.1).

Three steps, all batched (NumPy over the co-occurrence table, TensorFlow for
the neighbour search and SimNet; no Python loop over items):

1. candidate pairs: for each trigger item j, its `num_cooccurring` strongest
   co-occurring items (`CooccurrenceTable.top_neighbors`) and its
   `num_neighbors` nearest items by the cosine of SimNet's item-field
   embeddings E(x) (the item-profile strategy: items with similar profiles
   that never co-occurred), duplicates removed;
2. ranking: s_ji = SimNet(x_j, c_ji, x_i) (Eq. 9) of every candidate pair,
   with c_ji from the full training co-occurrence table;
3. index: the top `k` pairs of each trigger, stored as tensors
   `items int32 [N, k]` and `scores float32 [N, k]` (padding: -1 / -inf).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.cooccurrence import CooccurrenceTable

from pdn_tf.model import PDNModel


@dataclasses.dataclass
class I2IIndex:
  """Each trigger item's top-k targets by SimNet score s_ji (Sec. 5.2).

  Attributes:
    items: int32 `[N, k]` target item indices per trigger, best first
      (-1: empty slot).
    scores: float32 `[N, k]` their s_ji (-inf on empty slots).
    build_seconds, candidates_per_item: build statistics.

      index = build_i2i_index(model, cooccurrence, k=100)
      index.neighbours(7)  # trigger 7's targets, best first
  """

  items: np.ndarray  # int32 [N, k], -1 = empty slot
  scores: np.ndarray  # float32 [N, k], -inf on empty slots
  build_seconds: float = 0.0
  candidates_per_item: float = 0.0

  @property
  def num_items(self) -> int:
    return self.items.shape[0]

  @property
  def k(self) -> int:
    return self.items.shape[1]

  def neighbours(self, item: int) -> np.ndarray:
    row = self.items[item]
    return row[row >= 0]


def _dedup_rows(candidates: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
  """-1 for repeated ids within a row and for the row's own item."""
  order = np.argsort(candidates, axis=1, kind="stable")
  ordered = np.take_along_axis(candidates, order, axis=1)
  repeated = np.zeros_like(ordered, dtype=bool)
  repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
  drop = np.zeros_like(repeated)
  np.put_along_axis(drop, order, repeated, axis=1)
  out = np.where(drop | (candidates == self_ids[:, None]), -1, candidates)
  return out.astype(np.int32)


def embedding_neighbours(vectors: np.ndarray, k: int,
                         batch_size: int = 1024) -> np.ndarray:
  """int32 `[N, k]`: each row's k nearest other rows by cosine (batched
  TF matmul + top_k)."""
  normed = tf.math.l2_normalize(tf.constant(vectors, tf.float32), axis=1)
  n = vectors.shape[0]
  k = min(k, n - 1)
  out = []
  for start in range(0, n, batch_size):
    block = normed[start:start + batch_size]
    sims = tf.matmul(block, normed, transpose_b=True)
    rows = tf.range(start, start + tf.shape(block)[0])
    sims = tf.tensor_scatter_nd_update(
        sims, tf.stack([tf.range(tf.shape(block)[0]), rows], axis=1),
        tf.fill(tf.shape(rows), -np.inf))
    out.append(tf.math.top_k(sims, k).indices.numpy())
  return np.concatenate(out).astype(np.int32)


def candidate_pairs(model: PDNModel, cooccurrence: CooccurrenceTable,
                    num_cooccurring: int, num_neighbors: int) -> np.ndarray:
  """Step 1: `[N, num_cooccurring + num_neighbors]` candidate targets per
  trigger, -1 where empty or repeated."""
  parts = []
  if num_cooccurring:
    parts.append(cooccurrence.top_neighbors(num_cooccurring)[0])
  if num_neighbors:
    vectors = model.item_embedding(
        tf.range(model.num_items, dtype=tf.int32)).numpy()
    parts.append(embedding_neighbours(vectors, num_neighbors))
  if not parts:
    raise ValueError("candidate_pairs: num_cooccurring and num_neighbors are "
                     "both 0")
  return _dedup_rows(np.concatenate(parts, axis=1),
                     np.arange(model.num_items))


def build_i2i_index(model: PDNModel, cooccurrence: CooccurrenceTable, k: int,
                    num_cooccurring: int = 200, num_neighbors: int = 100,
                    batch_items: int = 512) -> I2IIndex:
  """The SimNet I2I index of a trained model (Sec. 5.2): candidate pairs
  from co-occurrence and embedding neighbours, ranked by s_ji (Eq. 9), the
  top `k` kept per trigger item.

      index = build_i2i_index(model, cooccurrence, k=100)
      index.items[j], index.scores[j]  # trigger j's targets, best first

  Args:
    model: a trained `PDNModel`.
    cooccurrence: the training co-occurrence table the model was built with.
    k: targets kept per trigger (>= 1; padded with -1 / -inf).
    num_cooccurring, num_neighbors: candidates per trigger from
      co-occurrence and from item-embedding neighbours (not both 0).
    batch_items: triggers ranked per SimNet batch.

  Returns:
    An `I2IIndex` (`items int32 [N, k]`, `scores float32 [N, k]`).
  """
  if k < 1:
    raise ValueError(f"build_i2i_index: k must be >= 1, got {k}")
  if cooccurrence.num_items != model.num_items:
    raise ValueError(f"the co-occurrence table has {cooccurrence.num_items} "
                     f"items, the model {model.num_items}")
  start = time.perf_counter()
  candidates = candidate_pairs(model, cooccurrence, num_cooccurring,
                               num_neighbors)
  width = candidates.shape[1]
  k_kept = min(k, width)

  @tf.function(reduce_retracing=True)
  def rank(triggers, targets):
    valid = targets >= 0
    safe = tf.where(valid, targets, tf.zeros_like(targets))
    counts = model.pairs.cooccurrence(triggers[:, tf.newaxis], safe)
    n_j = model.pairs.popularity(triggers)[:, tf.newaxis]
    n_i = model.pairs.popularity(safe)
    scores = model.pair_similarity(triggers[:, tf.newaxis], safe, counts,
                                   n_j, n_i)
    scores = tf.where(valid, scores, -np.inf)
    top = tf.math.top_k(scores, k_kept)
    ids = tf.gather(targets, top.indices, batch_dims=1)
    return tf.where(tf.math.is_finite(top.values), ids, -1), top.values

  items, scores = [], []
  for lo in range(0, model.num_items, batch_items):
    hi = min(lo + batch_items, model.num_items)
    ids, values = rank(tf.range(lo, hi, dtype=tf.int32),
                       tf.constant(candidates[lo:hi]))
    items.append(ids.numpy())
    scores.append(values.numpy())
  items = np.concatenate(items).astype(np.int32)
  scores = np.concatenate(scores).astype(np.float32)
  if k_kept < k:
    items = np.pad(items, ((0, 0), (0, k - k_kept)), constant_values=-1)
    scores = np.pad(scores, ((0, 0), (0, k - k_kept)),
                    constant_values=-np.inf)
  return I2IIndex(items, scores, time.perf_counter() - start,
                  float((candidates >= 0).sum(axis=1).mean()))
