"""Online greedy path retrieval (Sec. 5.1, Eq. 14, Figure 4), in TF ops.

For each user: TrigNet weights t_uj over the history window (Step 2), the
top-m triggers, each trigger's list in the SimNet I2I index (Step 3), path
weights softplus(t_uj + s_ji) summed over the triggers that reach the same
item, plus softplus(d_ui) of the Direct Net (p_u and the static q_i):

    ŝ_ui = softplus(d_ui) + Σ_{j in top-m} softplus(t_uj + s_ji)    (Eq. 14)

then the top-K items. Items of the request's history are never returned.

Cold start / fallback: a pool of the P most popular training items is
always among the candidates (scored by the Direct Net alone unless a path
reaches them), so a user with an empty or fully unknown history gets the
Direct Net's ranking of the pool (with no Direct Net: the pool in popularity
order), and a user whose paths reach fewer than K items is filled up from
the pool. Unknown user ids / profile values embed to zeros.

`greedy_path_retrieval` is the algorithm on index tensors; `PDNRetriever`
holds the serving parts of a trained `PDNModel` (no SimNet, no Bias Net, no
training tables) plus the index, and is what the servable wraps.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex, history_window
from retrieval_tf.datasets.types import Interactions

from retrieval_tf.cooccurrence import CooccurrenceTable, cooccurrence_counts
from retrieval_tf.datasets.types import RecDataset

from pdn_tf.i2i_index import I2IIndex, build_i2i_index
from pdn_tf.model import PDNModel, behaviour_ids


def greedy_path_retrieval(trigger_weights, triggers, exclude, index_items,
                          index_scores, pool, num_triggers, k,
                          user_vectors=None, item_vectors=None):
  """Eq. 14 top-k: ŝ_ui = softplus(d_ui) + Σ_{j in top-m} softplus(t_uj +
  s_ji) over the top-m triggers' I2I lists and the fallback pool, the
  history excluded.

      scores, ids = greedy_path_retrieval(t, history, history, index.items,
                                          index.scores, pool, 20, k=10)

  Args:
    trigger_weights: `[B, L]` t_uj.
    triggers: `[B, L]` int32 item indices, -1 for padding / unknown.
    exclude: `[B, H]` int32 items never returned (the history), -1 padding.
    index_items, index_scores: the I2I index `[N, k_i]` (-1 / -inf empty).
    pool: `[P]` int32 fallback items (most popular first).
    num_triggers: m, the triggers expanded per user.
    k: results per row (<= m * k_i + P).
    user_vectors, item_vectors: Direct Net p_u `[B, k_d]` and q_i
      `[N, k_d]`, or None (no Direct Net).

  Returns:
    `(scores [B, k] float32, ids [B, k] int32)`, best first; rows with fewer
    than k eligible items end with score -inf and id -1. Ties keep the
    candidate order (paths of higher-weighted triggers, then the pool).
  """
  triggers = tf.cast(triggers, tf.int32)
  batch = tf.shape(triggers)[0]
  valid = triggers >= 0
  weights = tf.where(valid, trigger_weights, -np.inf)
  m = tf.minimum(tf.cast(num_triggers, tf.int32), tf.shape(weights)[1])
  top = tf.math.top_k(weights, m)
  chosen = tf.gather(triggers, top.indices, batch_dims=1)
  chosen_ok = tf.math.is_finite(top.values)
  safe = tf.where(chosen_ok, chosen, tf.zeros_like(chosen))
  items = tf.gather(index_items, safe)  # [B, m, k_i]
  ok = tf.logical_and(chosen_ok[:, :, tf.newaxis], items >= 0)
  paths = tf.where(ok, tf.nn.softplus(top.values[:, :, tf.newaxis] +
                                      tf.gather(index_scores, safe)), 0.0)
  items = tf.where(ok, items, -tf.ones_like(items))
  pool = tf.cast(pool, tf.int32)
  candidates = tf.concat(
      [tf.reshape(items, [batch, -1]),
       tf.tile(pool[tf.newaxis, :], [batch, 1])], axis=1)
  paths = tf.concat([tf.reshape(paths, [batch, -1]),
                     tf.zeros([batch, tf.size(pool)], paths.dtype)], axis=1)
  width = tf.shape(candidates)[1]
  # Σ over the paths reaching the same item: sort by id, segment sums.
  order = tf.argsort(candidates, axis=1, stable=True)
  ordered = tf.gather(candidates, order, batch_dims=1)
  first = tf.concat([tf.ones([batch, 1], tf.bool),
                     ordered[:, 1:] != ordered[:, :-1]], axis=1)
  segments = (tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1 +
              tf.range(batch)[:, tf.newaxis] * width)
  sums = tf.math.unsorted_segment_sum(
      tf.reshape(tf.gather(paths, order, batch_dims=1), [-1]),
      tf.reshape(segments, [-1]), batch * width)
  inverse = tf.argsort(order, axis=1, stable=True)
  total = tf.gather(tf.gather(sums, segments), inverse, batch_dims=1)
  keep = tf.logical_and(tf.gather(first, inverse, batch_dims=1),
                        candidates >= 0)
  # never the request's own history
  exclude = tf.cast(exclude, tf.int32)
  banned = tf.sort(tf.concat([exclude, -tf.ones([batch, 1], tf.int32)],
                             axis=1), axis=1)
  position = tf.minimum(tf.searchsorted(banned, candidates, side="left"),
                        tf.shape(banned)[1] - 1)
  seen = tf.gather(banned, position, batch_dims=1) == candidates
  keep = tf.logical_and(keep, tf.logical_not(seen))
  if user_vectors is not None:
    q = tf.gather(item_vectors, tf.maximum(candidates, 0))
    total = total + tf.nn.softplus(tf.einsum("bd,bcd->bc", user_vectors, q))
  scores = tf.where(keep, total, -np.inf)
  best = tf.math.top_k(scores, tf.minimum(tf.cast(k, tf.int32), width))
  ids = tf.gather(candidates, best.indices, batch_dims=1)
  return best.values, tf.where(tf.math.is_finite(best.values), ids, -1)


def popular_pool(item_counts: np.ndarray, size: int) -> np.ndarray:
  """The `size` most popular items, most popular first (ties: lower id)."""
  order = np.lexsort((np.arange(len(item_counts)), -np.asarray(item_counts)))
  return order[:size].astype(np.int32)


class PDNRetriever(tf.Module):
  """The serving parts of a `PDNModel` + an I2I index (index-level API).

  `retrieve(features, k)`: `user_id [B]`, `user_<field> [B]` int indices
  (-1 unknown), `history [B, H]` int item indices, newest LAST, -1 for
  padding or unknown, and `history_rating [B, H]` when the model reads
  ratings (0: unknown). TrigNet reads the last `history_length` columns
  (the training window); all H columns are excluded from the results.
  """

  def __init__(self, model: PDNModel, index: I2IIndex, history_length: int,
               num_triggers: int, pool_size: int):
    super().__init__()
    if index.num_items != model.num_items:
      raise ValueError(f"the I2I index holds {index.num_items} items, the "
                       f"model {model.num_items}")
    self.num_items = model.num_items
    self.history_length = int(history_length)
    self.num_triggers = int(num_triggers)
    self.use_rating = model.use_rating
    self.user_feature_names = list(model.user_feature_names)
    # Only what serving needs: TrigNet with its fields, the Direct Net.
    self.user_field = model.user_field
    self.item_table = model.item_table
    self.item_field = model.item_field
    self.behaviour_field = model.behaviour_field
    self.trigger_net = model.trigger_net
    self.use_direct = model.use_direct
    counts = model.pairs.item_counts.numpy()
    self.pool = tf.Variable(popular_pool(counts, min(pool_size,
                                                     self.num_items)),
                            trainable=False, name="pool")
    self.index_items = tf.Variable(index.items, trainable=False,
                                   name="index_items")
    self.index_scores = tf.Variable(index.scores, trainable=False,
                                    name="index_scores")
    self.max_k = int(min(pool_size, self.num_items))
    if self.use_direct:
      self.direct_user_field = model.direct_user_field
      self.direct_net = model.direct_net
      vectors = np.concatenate([
          model.direct_item_vector(tf.range(lo, min(lo + 65536,
                                                    self.num_items))).numpy()
          for lo in range(0, self.num_items, 65536)])
      self.item_vectors = tf.Variable(vectors, trainable=False,
                                      name="item_vectors")

  def _user_ids(self, features):
    ids = {"id": features["user_id"]}
    ids.update({f: features[f"user_{f}"] for f in self.user_feature_names})
    return ids

  def trigger_weights(self, features):
    """t_uj `[B, L]` and the window's items `[B, L]`."""
    window = tf.cast(features["history"], tf.int32)[:, -self.history_length:]
    rating = features.get("history_rating")
    if rating is not None:
      rating = rating[:, -self.history_length:]
    user = self.user_field(self._user_ids(features))
    weights = self.trigger_net(
        user, self.behaviour_field(behaviour_ids(window, rating,
                                                 self.use_rating)),
        self.item_field(self.item_table(window)))
    return weights, window

  def retrieve(self, features: Dict[str, tf.Tensor], k
               ) -> Dict[str, tf.Tensor]:
    weights, window = self.trigger_weights(features)
    user_vectors = item_vectors = None
    if self.use_direct:
      user_vectors = self.direct_net.user_vector(
          self.direct_user_field(self._user_ids(features)))
      item_vectors = self.item_vectors
    scores, ids = greedy_path_retrieval(
        weights, window, features["history"], self.index_items,
        self.index_scores, self.pool, self.num_triggers, k,
        user_vectors=user_vectors, item_vectors=item_vectors)
    return {"scores": scores, "ids": ids}

  def parameters(self) -> Dict[str, int]:
    return {"num_items": self.num_items,
            "index_k": int(self.index_items.shape[1]),
            "num_triggers": self.num_triggers,
            "history_length": self.history_length,
            "pool_size": int(self.pool.shape[0]),
            "direct_net": int(self.use_direct)}


def build_retriever(model: PDNModel, dataset: RecDataset,
                    cooccurrence: Optional[CooccurrenceTable] = None, *,
                    history_length: int = 20, num_triggers: int = 20,
                    pool_size: int = 1000, index_k: int = 100,
                    num_cooccurring: int = 200, num_neighbors: int = 100
                    ) -> PDNRetriever:
  """A `PDNRetriever` of a trained model: builds the SimNet I2I index (Sec.
  5.1 Steps 1-3) and wraps the serving parts.

      retriever = pdn_tf.build_retriever(model, split.dataset)
      retriever.retrieve({"user_id": ..., "history": ...}, k=10)["ids"]

  Args:
    model: a trained `PDNModel`.
    dataset: its training `RecDataset` (the co-occurrence table is counted
      from `dataset.interactions` when `cooccurrence` is None).
    cooccurrence: the user-level table the model was built with, or None.
    history_length: TrigNet's window (as in training).
    num_triggers: m, the triggers expanded per user (Eq. 14).
    pool_size: the fallback pool of popular items (the largest k).
    index_k, num_cooccurring, num_neighbors: the I2I index's kept targets
      per trigger and its candidates from co-occurrence / embeddings.

  Returns:
    The `PDNRetriever`.
  """
  if dataset.num_items != model.num_items:
    raise ValueError(f"dataset has {dataset.num_items} items, the model "
                     f"{model.num_items}: pass the dataset it was built from")
  for name, value in (("history_length", history_length),
                      ("num_triggers", num_triggers),
                      ("pool_size", pool_size)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if cooccurrence is None:
    cooccurrence = cooccurrence_counts(dataset.interactions,
                                       dataset.num_items,
                                       vocabulary=dataset.items)
  index = build_i2i_index(model, cooccurrence, index_k, num_cooccurring,
                          num_neighbors)
  return PDNRetriever(model, index, history_length, num_triggers, pool_size)


def _full_history_features(dataset, users: np.ndarray, index: HistoryIndex,
                           ratings: np.ndarray) -> Dict[str, tf.Tensor]:
  starts, ends = index.user_history(users)
  width = int(max(1, (ends - starts).max()))
  history, mask = history_window(index.items, starts, ends, width)
  rating, _ = history_window(ratings, starts, ends, width, pad_id=0)
  features = {"user_id": tf.constant(users, tf.int32), "history": history,
              "history_rating": tf.where(mask, rating, 0.0)}
  for field, values in dataset.user_features.items():
    if field in dataset.feature_vocabularies:
      features[f"user_{field}"] = tf.constant(values[users], tf.int32)
  return features


def history_ratings(log: Interactions) -> np.ndarray:
  """The ratings of `log` in `HistoryIndex` order (by user, then time), so
  that they line up with the histories; zeros when the log has none."""
  order = Interactions(log.user, np.arange(len(log)), log.timestamp
                       ).sorted().item
  return (log.rating[order] if log.rating is not None
          else np.zeros(len(log), np.float32))


def retrieve_users(retriever: PDNRetriever, dataset, users, k: int,
                   batch_size: int = 256) -> np.ndarray:
  """`retriever`'s top-k item indices `[U, k]` for dataset users, each with
  the whole training history (newest last) and its ratings: what the
  servable answers for these users' full logs."""
  users = np.asarray(users, np.int64)
  log: Interactions = dataset.interactions
  index = HistoryIndex.from_interactions(log, dataset.num_users)
  ratings = history_ratings(log)
  call = tf.function(lambda f: retriever.retrieve(f, k)["ids"],
                     reduce_retracing=True)
  out = [call(_full_history_features(dataset, users[lo:lo + batch_size],
                                     index, ratings)).numpy()
         for lo in range(0, len(users), batch_size)]
  return np.concatenate(out)
