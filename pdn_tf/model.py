"""`PDNModel`: scalar-based PDN (Sec. 4) as a `keras.Model`.

Feature fields (Sec. 4.2), each embedded as the concatenation of its
features' embeddings:

* user field z_u: `user_id` and the categorical profile `user_<field>`
  (ML-1M: gender, age, occupation), from the batch or the request;
* behaviour field a_uj: the user's rating of trigger j (when the data has
  ratings) and j's recency (log2 of its distance from the newest event);
* co-occurrence field c_ji: log2 buckets of the count of users who
  interacted with both j and i, and of its cosine c_ji / sqrt(n_j n_i)
  (`retrieval_tf.cooccurrence`, training interactions only). The scored
  user's own contribution is left out (so a training positive does not see
  its own event, exactly as a test target does not);
* item field x: `item_id` and the categorical item features (ML-1M: genres,
  year), gathered from tables the model holds (`ItemFeatureTable`), for
  triggers and targets alike.

`call(features, training)` scores the candidates `[B, C]` (the batch's
`item_id` and `negative_ids`, or `candidates`) with Eq. 12; the Bias Net
(Sec. 4.5) joins only with `training=True`. `train_step` minimises the
cross-entropy of Eq. 13 with the positive in column 0 and the sampled
negatives after it; negatives the user did interact with are not counted.

Tables (item features, co-occurrence pairs, the user-item log) are
non-trainable variables sized by the config and filled with `set_tables`,
so `from_config` + `load_weights` restores a model.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.cooccurrence import CooccurrenceTable
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, check_index_range
from retrieval_tf.saving import SavableModel

from pdn_tf import layers as pdn_layers

_PACKAGE = "pdn_tf"
RATING_BUCKETS = 6  # 0: unknown, 1..5: the rating rounded
RECENCY_BUCKETS = 8
COUNT_BUCKETS = 24
COSINE_BUCKETS = 32
HISTORY_BUCKETS = 12


@keras.utils.register_keras_serializable(package=_PACKAGE)
class CategoricalFields(keras.layers.Layer):
  """E(field) = CAT of one embedding per feature (Sec. 4.2).

  `call({name: ids})`: single-valued features are int ids `[...]`, multi-
  valued ones `[..., G]` (mean of their embeddings); negative ids (padding,
  unknown) embed to zeros. Output `[..., dim * len(sizes)]`.
  """

  def __init__(self, sizes: Mapping[str, int], dim: int,
               multi_valued: Sequence[str] = (), **kwargs):
    super().__init__(**kwargs)
    self.sizes = {k: int(v) for k, v in sorted(sizes.items())}
    self.dim = int(dim)
    self.multi_valued = sorted(multi_valued)
    self.embeddings = {
        name: keras.layers.Embedding(size, self.dim, name=f"{name}_embedding")
        for name, size in self.sizes.items()}

  @property
  def output_dim(self) -> int:
    return self.dim * len(self.sizes)

  def call(self, ids: Mapping[str, tf.Tensor]):
    parts = []
    for name, size in self.sizes.items():
      value = tf.cast(ids[name], tf.int32)
      valid = tf.logical_and(value >= 0, value < size)
      vectors = self.embeddings[name](tf.where(valid, value,
                                               tf.zeros_like(value)))
      weights = tf.cast(valid, vectors.dtype)[..., tf.newaxis]
      if name in self.multi_valued:
        vectors = tf.math.divide_no_nan(
            tf.reduce_sum(vectors * weights, axis=-2),
            tf.reduce_sum(weights, axis=-2))
      else:
        vectors = vectors * weights
      parts.append(vectors)
    return tf.concat(parts, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"sizes": self.sizes, "dim": self.dim,
                   "multi_valued": self.multi_valued})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class ItemFeatureTable(keras.layers.Layer):
  """The item field's raw features by item index: `call(item_ids [...])` ->
  `{"id": ids, name: feature ids [...] or [..., G]}`; ids < 0 give -1
  everywhere (padding)."""

  def __init__(self, num_items: int, widths: Mapping[str, int], **kwargs):
    super().__init__(**kwargs)
    self.num_items = int(num_items)
    self.widths = {k: int(v) for k, v in sorted(widths.items())}
    self.tables = {
        name: self.add_weight(
            name=f"{name}_table",
            shape=(self.num_items,) + ((width,) if width else ()),
            dtype=tf.int32, initializer="zeros", trainable=False)
        for name, width in self.widths.items()}

  def set_tables(self, features: Mapping[str, np.ndarray]) -> None:
    for name, table in self.tables.items():
      values = np.asarray(features[name], np.int32)
      if tuple(values.shape) != tuple(table.shape):
        raise DataError(f"item feature {name!r} has shape {values.shape}, "
                        f"the model expects {tuple(table.shape)}")
      table.assign(values)

  def call(self, item_ids):
    item_ids = tf.cast(item_ids, tf.int32)
    valid = tf.logical_and(item_ids >= 0, item_ids < self.num_items)
    safe = tf.where(valid, item_ids, tf.zeros_like(item_ids))
    out = {"id": tf.where(valid, item_ids, -tf.ones_like(item_ids))}
    for name, width in self.widths.items():
      values = tf.gather(self.tables[name], safe)
      mask = valid[..., tf.newaxis] if width else valid
      out[name] = tf.where(mask, values, -tf.ones_like(values))
    return out

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "widths": self.widths})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class PairTables(keras.layers.Layer):
  """Training-time lookups by sorted int64 keys (`tf.searchsorted`):

  * co-occurrence counts c_ji (key j * N + i) and users per item n_i;
  * the training log (key u * N + i) -> the user's rating of i (or 0), which
    is also "did u interact with i" (for leaving the user's own
    contribution out of c_ji and for dropping seen negatives).
  """

  def __init__(self, num_items: int, num_pairs: int, num_events: int,
               **kwargs):
    super().__init__(**kwargs)
    self.num_items = int(num_items)
    self.num_pairs = int(num_pairs)
    self.num_events = int(num_events)
    weight = lambda name, shape, dtype: self.add_weight(
        name=name, shape=shape, dtype=dtype, initializer="zeros",
        trainable=False)
    self.pair_keys = weight("pair_keys", (self.num_pairs,), tf.int64)
    self.pair_counts = weight("pair_counts", (self.num_pairs,), tf.int32)
    self.item_counts = weight("item_counts", (self.num_items,), tf.int32)
    self.event_keys = weight("event_keys", (self.num_events,), tf.int64)
    self.event_ratings = weight("event_ratings", (self.num_events,),
                                tf.float32)

  def set_tables(self, cooccurrence: CooccurrenceTable,
                 interactions: Interactions) -> None:
    keys, counts = cooccurrence.pair_arrays()
    if len(keys) != self.num_pairs:
      raise DataError(f"co-occurrence table has {len(keys)} pairs, the model "
                      f"was configured for {self.num_pairs}")
    self.pair_keys.assign(keys)
    self.pair_counts.assign(counts)
    self.item_counts.assign(cooccurrence.item_counts.astype(np.int32))
    event_keys, ratings = event_table(interactions, self.num_items)
    if len(event_keys) != self.num_events:
      raise DataError(f"training log has {len(event_keys)} distinct "
                      f"user-item pairs, the model was configured for "
                      f"{self.num_events}")
    self.event_keys.assign(event_keys)
    self.event_ratings.assign(ratings)

  @staticmethod
  def _find(keys, values, query, default):
    position = tf.searchsorted(keys, tf.reshape(query, [-1]), side="left")
    position = tf.minimum(position, tf.maximum(tf.size(keys) - 1, 0))
    found = tf.gather(keys, position) == tf.reshape(query, [-1])
    out = tf.where(found, tf.gather(values, position),
                   tf.cast(default, values.dtype))
    return tf.reshape(out, tf.shape(query))

  def cooccurrence(self, j, i):
    """c_ji int32, shaped like the broadcast of `j` and `i`."""
    j = tf.cast(j, tf.int64)
    i = tf.cast(i, tf.int64)
    return self._find(self.pair_keys, self.pair_counts,
                      j * self.num_items + i, 0)

  def popularity(self, i):
    return tf.gather(self.item_counts, tf.maximum(tf.cast(i, tf.int32), 0))

  def rating(self, users, items):
    """The user's rating of each item, 0 when never interacted (or no
    rating); users `[B]`, items `[B, ...]`."""
    users = tf.cast(users, tf.int64)
    items = tf.cast(items, tf.int64)
    shape = [-1] + [1] * (items.shape.rank - 1)
    keys = tf.reshape(users, shape) * self.num_items + items
    return self._find(self.event_keys, self.event_ratings, keys, 0.0)

  def seen(self, users, items):
    users = tf.cast(users, tf.int64)
    items = tf.cast(items, tf.int64)
    shape = [-1] + [1] * (items.shape.rank - 1)
    keys = tf.reshape(users, shape) * self.num_items + items
    return self._find(self.event_keys, tf.ones_like(self.event_ratings),
                      keys, 0.0) > 0

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "num_pairs": self.num_pairs,
                   "num_events": self.num_events})
    return config


def event_table(interactions: Interactions, num_items: int
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Sorted distinct keys u * N + i of a log and the (last) rating of each
  (1 where the log has no ratings)."""
  check_index_range(interactions.item, num_items, "item", "PDN event table")
  log = interactions.sorted()
  keys = log.user.astype(np.int64) * num_items + log.item
  ratings = (log.rating if log.rating is not None
             else np.ones(len(keys), np.float32))
  # the last occurrence of each key wins
  order = np.argsort(keys, kind="stable")
  keys, ratings = keys[order], ratings[order]
  last = np.ones(len(keys), bool)
  last[:-1] = keys[1:] != keys[:-1]
  return keys[last], np.maximum(ratings[last], 1e-3).astype(np.float32)


def behaviour_ids(history, history_rating, use_rating: bool):
  """The behaviour field's ids for a right-aligned window `[B, L]`: recency
  = log2 bucket of the distance from the newest (last) column, and the
  rating rounded to 0..5 (0: unknown) when `use_rating`."""
  length = tf.shape(history)[1]
  recency = pdn_layers.log2_bucket(tf.range(length - 1, -1, -1),
                                   RECENCY_BUCKETS)
  ids = {"recency": tf.broadcast_to(recency[tf.newaxis, :],
                                    tf.shape(history))}
  if use_rating:
    rating = (history_rating if history_rating is not None
              else tf.zeros(tf.shape(history), tf.float32))
    ids["rating"] = tf.cast(
        tf.clip_by_value(tf.round(tf.cast(rating, tf.float32)), 0.0,
                         RATING_BUCKETS - 1), tf.int32)
  return ids


def cooccurrence_buckets(counts, n_j, n_i):
  """(count bucket, cosine bucket) int32 of c_ji and c_ji / sqrt(n_j n_i):
  log2(1 + c), and 0 for c = 0 else 1 + floor(-2 log2(cosine))."""
  counts = tf.cast(counts, tf.float32)
  denominator = tf.sqrt(tf.maximum(tf.cast(n_j, tf.float32) *
                                   tf.cast(n_i, tf.float32), 1.0))
  cosine = tf.clip_by_value(counts / denominator, 1e-12, 1.0)
  cosine_bucket = tf.where(
      counts > 0,
      1 + tf.cast(tf.minimum(tf.floor(-2.0 * tf.math.log(cosine) /
                                      tf.math.log(2.0)),
                             float(COSINE_BUCKETS - 2)), tf.int32),
      0)
  return pdn_layers.log2_bucket(counts, COUNT_BUCKETS), cosine_bucket


@keras.utils.register_keras_serializable(package=_PACKAGE)
class PDNModel(SavableModel, keras.Model):
  """Scalar-based PDN (Eq. 12) with its training objective (Eq. 13).

  Inputs (`call`, `fit`, `evaluate`): feature dicts of `user_id [B]`,
  `user_<field> [B]`, `history [B, L]` (item indices, newest last),
  `history_mask [B, L]`, `item_id [B]` (the positive), `negative_ids
  [B, n]` and, with `bias_time`, `timestamp [B]` (`pdn_tf.training_dataset`
  builds them). `call` returns the relevance logits `[B, 1 + n]` (Eq. 12,
  positive first); `score(features, candidates)` scores any `[B, C]`.
  `model.evaluate` reports the loss and `sampled_hr@1`, the share of rows
  whose positive outscores every unseen sampled negative.

  Every table lives in a non-trainable variable sized by the config, so
  `.keras` save/load, `ModelCheckpoint` and `from_config` + `load_weights`
  restore a trained model whole (tables included).

      model = pdn_tf.build_pdn_model(split.dataset, cooccurrence,
                                     embedding_dim=16, num_negatives=4)
      model.compile(optimizer=keras.optimizers.Adam(0.005))
      model.fit(pdn_tf.training_dataset(split.dataset, batch_size=256,
                                        history_length=10, num_negatives=4))
      pdn_tf.evaluate(model, split)  # {"hr@10": ..., "ndcg@10": ...}

  Args:
    num_users, num_items: vocabulary sizes.
    user_features: `{field: vocabulary size}` of `user_<field>` inputs.
    item_features: `{field: (vocabulary size, width)}`, width 0 for a single
      value per item, G for multi-valued `[N, G]` (padded with -1).
    num_pairs, num_events: sizes of the co-occurrence and log tables.
    embedding_dim: the embedding size of every feature.
    trigger_units, similarity_units: hidden layers of TrigNet / SimNet.
    direct_units, direct_dim: Direct Net towers and p_u, q_i size k.
    bias_units: Bias Net hidden layers.
    use_direct, use_bias: the ablation switches (Table 2).
    direct_item_id: the Direct Net's item tower reads the item id besides
      the item's other features (the paper's x_i; False: only the other
      features, the variant measured in docs/pdn.md).
    use_rating: behaviour field includes the rating of the trigger.
    bias_time: Bias Net reads hour and weekday of the event's timestamp
      (Unix seconds) besides the history-length (position) bucket.
    num_negatives: sampled negatives per positive in training.
  """

  def __init__(self, num_users: int, num_items: int,
               user_features: Mapping[str, int],
               item_features: Mapping[str, Sequence[int]],
               num_pairs: int, num_events: int, embedding_dim: int = 32,
               trigger_units: Sequence[int] = (64, 32),
               similarity_units: Sequence[int] = (64, 32),
               direct_units: Sequence[int] = (64,), direct_dim: int = 32,
               bias_units: Sequence[int] = (16,), use_direct: bool = True,
               use_bias: bool = True, use_rating: bool = True,
               bias_time: bool = True, num_negatives: int = 4,
               direct_item_id: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.config = dict(
        num_users=int(num_users), num_items=int(num_items),
        user_features={k: int(v) for k, v in sorted(user_features.items())},
        item_features={k: [int(v[0]), int(v[1])]
                       for k, v in sorted(item_features.items())},
        num_pairs=int(num_pairs), num_events=int(num_events),
        embedding_dim=int(embedding_dim),
        trigger_units=[int(u) for u in trigger_units],
        similarity_units=[int(u) for u in similarity_units],
        direct_units=[int(u) for u in direct_units],
        direct_dim=int(direct_dim), bias_units=[int(u) for u in bias_units],
        use_direct=bool(use_direct), use_bias=bool(use_bias),
        use_rating=bool(use_rating), bias_time=bool(bias_time),
        num_negatives=int(num_negatives),
        direct_item_id=bool(direct_item_id))
    c = self.config
    self.num_users, self.num_items = c["num_users"], c["num_items"]
    self.user_feature_names = sorted(c["user_features"])
    self.use_direct, self.use_bias = c["use_direct"], c["use_bias"]
    self.use_rating, self.bias_time = c["use_rating"], c["bias_time"]
    self.num_negatives = c["num_negatives"]
    dim = c["embedding_dim"]
    user_sizes = dict(c["user_features"], id=self.num_users)
    item_sizes = {k: v[0] for k, v in c["item_features"].items()}
    item_sizes["id"] = self.num_items
    multi = [k for k, v in c["item_features"].items() if v[1]]
    self.item_table = ItemFeatureTable(
        self.num_items, {k: v[1] for k, v in c["item_features"].items()},
        name="item_table")
    self.pairs = PairTables(self.num_items, c["num_pairs"], c["num_events"],
                            name="pairs")
    self.user_field = CategoricalFields(user_sizes, dim, name="user_field")
    self.item_field = CategoricalFields(item_sizes, dim, multi,
                                        name="item_field")
    behaviour = {"recency": RECENCY_BUCKETS}
    if self.use_rating:
      behaviour["rating"] = RATING_BUCKETS
    self.behaviour_field = CategoricalFields(behaviour, dim // 2 or 1,
                                             name="behaviour_field")
    self.cooccurrence_field = CategoricalFields(
        {"count": COUNT_BUCKETS, "cosine": COSINE_BUCKETS}, dim // 2 or 1,
        name="cooccurrence_field")
    self.trigger_net = pdn_layers.TriggerNet(c["trigger_units"],
                                             name="trigger_net")
    self.similarity_net = pdn_layers.SimilarityNet(c["similarity_units"],
                                                   name="similarity_net")
    if self.use_direct:
      direct_item_sizes = dict(item_sizes)
      if not c["direct_item_id"]:
        del direct_item_sizes["id"]
        if not direct_item_sizes:
          raise DataError("direct_item_id=False leaves the Direct Net's "
                           "item tower without features: the items have "
                           "none besides the id")
      # "another set of user and item embeddings" (Sec. 4.4)
      self.direct_user_field = CategoricalFields(user_sizes, dim,
                                                 name="direct_user_field")
      self.direct_item_field = CategoricalFields(  # "id" is never multi
          direct_item_sizes, dim, multi, name="direct_item_field")
      self.direct_net = pdn_layers.DirectNet(c["direct_units"],
                                             c["direct_dim"],
                                             name="direct_net")
    if self.use_bias:
      bias = {"history": HISTORY_BUCKETS}
      if self.bias_time:
        bias.update(hour=24, weekday=7)
      self.bias_field = CategoricalFields(bias, 8, name="bias_field")
      self.bias_net = pdn_layers.BiasNet(c["bias_units"], name="bias_net")
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.hr_tracker = keras.metrics.Mean(name="sampled_hr@1")

  # -- saving --------------------------------------------------------------

  def example_features(self):
    """Two rows of index 0 in every feature the model reads (history of 2,
    `num_negatives` negatives), made from the config alone."""
    zeros = tf.zeros([2], tf.int32)
    features = {"user_id": zeros, "item_id": zeros,
                "history": tf.zeros([2, 2], tf.int32),
                "history_mask": tf.ones([2, 2], tf.bool),
                "negative_ids": tf.zeros([2, self.num_negatives], tf.int32)}
    for name in self.user_feature_names:
      features[f"user_{name}"] = zeros
    if self.use_bias and self.bias_time:
      features["timestamp"] = tf.zeros([2], tf.int64)
    return features

  # -- tables -------------------------------------------------------------

  def set_tables(self, item_features: Mapping[str, np.ndarray],
                 cooccurrence: CooccurrenceTable,
                 interactions: Interactions) -> None:
    """Fills the item feature, co-occurrence and log tables."""
    if cooccurrence.num_items != self.num_items:
      raise DataError(f"co-occurrence table has {cooccurrence.num_items} "
                      f"items, the model {self.num_items}")
    if cooccurrence.window is not None:
      raise DataError("PDN leaves the scored user's own pair out of c_ji, "
                      "which is exact for user-level co-occurrence only; "
                      "build the table with window=None")
    self.item_table.set_tables(item_features)
    self.pairs.set_tables(cooccurrence, interactions)

  # -- the fields ----------------------------------------------------------

  def user_embedding(self, features):
    """E(z_u) `[B, d_u]`."""
    return self.user_field(self._user_ids(features))

  def _user_ids(self, features):
    ids = {"id": features["user_id"]}
    ids.update({f: features[f"user_{f}"] for f in self.user_feature_names})
    return ids

  def item_embedding(self, items):
    """E(x) of item indices `[...]` -> `[..., d_i]` (negative: zeros)."""
    return self.item_field(self.item_table(items))

  def behaviour_embedding(self, history, history_rating=None):
    """E(a_uj) `[B, L, d_a]`: recency (newest last) and rating."""
    return self.behaviour_field(behaviour_ids(history, history_rating,
                                              self.use_rating))

  def trigger_weights(self, features, history_rating=None):
    """t_uj (Eq. 8) `[B, L]` of the history window (padding included)."""
    history = features["history"]
    return self.trigger_net(self.user_embedding(features),
                            self.behaviour_embedding(history, history_rating),
                            self.item_embedding(history))

  def pair_similarity(self, triggers, targets, counts, n_j, n_i):
    """s_ji (Eq. 9) for item index arrays that broadcast together."""
    count_bucket, cosine_bucket = cooccurrence_buckets(counts, n_j, n_i)
    return self.similarity_net(
        self.item_embedding(triggers),
        self.cooccurrence_field({"count": count_bucket,
                                 "cosine": cosine_bucket}),
        self.item_embedding(targets))

  def direct_user_vector(self, features):
    return self.direct_net.user_vector(
        self.direct_user_field(self._user_ids(features)))

  def direct_item_vector(self, items):
    return self.direct_net.item_vector(
        self.direct_item_field(self.item_table(items)))

  # -- scoring -------------------------------------------------------------

  def score(self, features, candidates, training=False):
    """Eq. 12 for `candidates [B, C]`; returns a dict of `relevance`
    `[B, C]` (bias included when training), `direct` `[B, C]` (or None),
    `trigger` `[B, L]`, `similarity` and `paths` `[B, C, L]`."""
    history = tf.cast(features["history"], tf.int32)
    mask = tf.logical_and(tf.cast(features["history_mask"], tf.bool),
                          history >= 0)
    history = tf.where(mask, history, -tf.ones_like(history))
    candidates = tf.cast(candidates, tf.int32)
    users = features["user_id"]
    rating = features.get("history_rating")
    if rating is None and self.use_rating:
      rating = self.pairs.rating(users, history)
    trigger = self.trigger_weights(dict(features, history=history), rating)
    # c_ji and n_i without the scored user's own contribution (Sec. 4.2
    # field; see the module docstring).
    own = tf.cast(self.pairs.seen(users, candidates), tf.int32)
    counts = self.pairs.cooccurrence(history[:, tf.newaxis, :],
                                     candidates[:, :, tf.newaxis])
    counts = tf.maximum(counts - own[:, :, tf.newaxis], 0)
    n_j = self.pairs.popularity(history)[:, tf.newaxis, :]
    n_i = tf.maximum(self.pairs.popularity(candidates) - own, 0)
    similarity = self.pair_similarity(
        history[:, tf.newaxis, :], candidates[:, :, tf.newaxis], counts, n_j,
        n_i[:, :, tf.newaxis])
    paths = pdn_layers.path_weight(trigger[:, tf.newaxis, :], similarity)
    direct = None
    if self.use_direct:
      direct = tf.einsum("bk,bck->bc", self.direct_user_vector(features),
                         self.direct_item_vector(candidates))
    bias = None
    if training and self.use_bias:
      bias = self.bias_logit(features, mask)[:, tf.newaxis]
    relevance = pdn_layers.relevance(direct, paths, mask[:, tf.newaxis, :],
                                     bias)
    return {"relevance": relevance, "direct": direct, "trigger": trigger,
            "similarity": similarity, "paths": paths, "mask": mask}

  def bias_logit(self, features, mask):
    """y_bias `[B]` (Sec. 4.5) from the position (history length) and, with
    `bias_time`, the hour and weekday of the event."""
    length = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    ids = {"history": pdn_layers.log2_bucket(length, HISTORY_BUCKETS)}
    if self.bias_time:
      seconds = tf.cast(features["timestamp"], tf.int64)
      ids["hour"] = tf.cast((seconds // 3600) % 24, tf.int32)
      ids["weekday"] = tf.cast((seconds // 86400 + 4) % 7, tf.int32)
    return self.bias_net(self.bias_field(ids))

  def item_to_item(self, features, candidates):
    """The Table 2 "Item to Item" score: Σ_j softplus(s_ji) over the
    history, SimNet alone (no TrigNet, no Direct Net)."""
    return self.item_to_item_scores(
        self.score(features, candidates, training=False))

  @staticmethod
  def item_to_item_scores(out):
    """`item_to_item` from the dict `score` returned."""
    return pdn_layers.relevance(None, tf.nn.softplus(out["similarity"]),
                                out["mask"][:, tf.newaxis, :])

  @staticmethod
  def training_candidates(features):
    candidates = features.get("candidates")
    if candidates is not None:
      return candidates
    positive = tf.cast(features["item_id"], tf.int32)[:, tf.newaxis]
    if "negative_ids" in features:
      return tf.concat([positive, tf.cast(features["negative_ids"],
                                          tf.int32)], axis=1)
    return positive

  def call(self, features, training=False):
    out = self.score(features, self.training_candidates(features),
                     training=training)
    if self.use_bias and not training and not self.bias_net.built:
      # Create the Bias Net's variables on the build call (the runner builds
      # with training=False) so that the optimizer knows them.
      self.bias_logit(features, out["mask"])
    return out["relevance"]

  def compute_loss_terms(self, features, training=True):
    """Mean Sec. 4.6 cross-entropy over the positive (column 0) and the
    negatives the user did not interact with; also updates `sampled_hr@1`
    (the positive outscores every counted negative)."""
    candidates = self.training_candidates(features)
    y = self.score(features, candidates, training=training)["relevance"]
    labels = tf.one_hot(tf.zeros(tf.shape(y)[:1], tf.int32), tf.shape(y)[1])
    seen = self.pairs.seen(features["user_id"], candidates)
    weights = tf.where(labels > 0, 1.0, 1.0 - tf.cast(seen, tf.float32))
    losses = pdn_layers.pdn_cross_entropy(labels, y)
    beaten = tf.logical_and(y[:, 1:] >= y[:, :1], weights[:, 1:] > 0)
    self.hr_tracker.update_state(
        1.0 - tf.cast(tf.reduce_any(beaten, axis=1), tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weights),
                                 tf.reduce_sum(weights))

  def train_step(self, features):
    self._remember_input_spec(features)
    with tf.GradientTape() as tape:
      loss = self.compute_loss_terms(features, training=True)
      total = loss + tf.add_n(self.losses) if self.losses else loss
    variables = self.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(total, variables),
                                       variables))
    self.loss_tracker.update_state(loss)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, features):
    self._remember_input_spec(features)
    self.loss_tracker.update_state(self.compute_loss_terms(features, False))
    return {m.name: m.result() for m in self.metrics}

  @property
  def metrics(self):
    return [self.loss_tracker, self.hr_tracker]

  def get_config(self):
    return dict(self.config)

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def build_pdn_model(dataset, cooccurrence: CooccurrenceTable,
                    **config) -> PDNModel:
  """A `PDNModel` for a `RecDataset` (its categorical user and item
  features, its training log) with its tables filled; `config` holds the
  other `PDNModel` arguments. The behaviour field reads ratings when the log
  has them; the Bias Net reads hour and weekday when timestamps are Unix
  seconds.

      split = retrieval_tf.datasets.registry.leave_one_out(dataset)
      cooc = cooccurrence_counts(split.dataset.interactions,
                                 split.dataset.num_items,
                                 vocabulary=split.dataset.items)
      model = build_pdn_model(split.dataset, cooc, num_negatives=4)

  Args:
    dataset: the training `RecDataset` (a leave-one-out split's `dataset`).
    cooccurrence: its user-level co-occurrence table (`window=None`) on the
      same item vocabulary.
    **config: `PDNModel` keyword arguments.

  Returns:
    The `PDNModel`, tables filled (untrained).

  Raises:
    DataError: a table on another vocabulary or with windows.
  """
  cooccurrence.check_vocabulary(dataset.items, "the dataset")
  item_features = {
      k: (len(dataset.feature_vocabularies[k]),
          v.shape[1] if v.ndim > 1 else 0)
      for k, v in dataset.item_features.items()
      if k in dataset.feature_vocabularies}
  user_features = {k: len(dataset.feature_vocabularies[k])
                   for k in dataset.user_features
                   if k in dataset.feature_vocabularies}
  log = dataset.interactions
  events, _ = event_table(log, dataset.num_items)
  stamps = log.timestamp
  config.setdefault("use_rating", log.rating is not None)
  config.setdefault("bias_time",
                    stamps is not None and int(stamps.min()) > 10**8)
  model = PDNModel(dataset.num_users, dataset.num_items, user_features,
                   item_features, num_pairs=cooccurrence.nnz,
                   num_events=len(events), **config)
  model.set_tables({k: dataset.item_features[k] for k in item_features},
                   cooccurrence, log)
  return model
