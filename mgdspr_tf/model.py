"""`MGDSPRModel`: the user tower (Sec. 3.2), the item tower (Sec. 3.3) and
the loss (Sec. 3.4) of MGDSPR (Li et al., KDD'21).

Features (one dict, batch first; item indices padded with -1):

* `query` string `[B]`, `history_query` string `[B]` (the user's earlier
  queries, joined by spaces);
* `real_time` `[B, max_real]`, `short_term` `[B, max_short]`, `long_term`
  `[B, max_long]`: int32 item indices, oldest first;
* `item_id` int32 `[B]`: the clicked item (training only).

A behaviour item is e_item + the sum of its attribute embeddings (leaf
category, brand, shop, ...: the side information of Sec. 3.2.2); the long-term
sequence is attended per attribute. Attributes and title word ids of every
item live in non-trainable variables (`set_catalogue`), so a model is its
weights.

Loss (Sec. 3.4): temperature softmax over the in-batch negatives and the
mixed hard negatives,

  y(i+ | q_u) = exp(F(q_u, i+)/tau) / sum_{i' in I u I_mix} exp(F(q_u, i')/tau),
  I_mix = alpha h_{i+} + (1 - alpha) h_{I_hard}, alpha ~ U(a, b) per negative,

with I_hard the top-N in-batch negatives by inner product F, and a hinge loss
over the same negatives for the ablation. Component switches: `mgs`
(False: q_seg alone), `behaviour` (False: the fusion sees Q_mgs only),
`zero_vector`, `num_hard` (0: no I_mix), `temperature` (1: none).

`similarity="cosine"` (not in the paper) L2-normalises H_qu and H_item, so
F is a cosine in [-1, 1] and tau is a true smoothing parameter; with the
paper's unnormalised F ("dot", the default) the vectors' norms absorb tau.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.saving import SavableModel

from mgdspr_tf import layers

LOSSES = ("softmax", "hinge")
SIMILARITIES = ("dot", "cosine")
SEQUENCES = ("real_time", "short_term", "long_term")
_NEG = -1e9


def truncate_recent(ids, length: int):
  """The documented truncation rule: per row, the non-padding prefix of
  `ids [B, T]` (oldest first, -1 padded at the end) cut to its last
  `length` (most recent) entries, `[B, length]` -1 padded."""
  ragged = tf.RaggedTensor.from_tensor(ids, padding=-1)
  return ragged[:, -length:].to_tensor(-1, shape=[None, length])


def mix_hard_negatives(user, positive, pool, pool_mask, num_hard: int,
                       low: float, high: float, seed: Optional[int] = None):
  """Relevance-improving hard negatives in embedding space (Sec. 3.4).

  Args:
    user: q_u `[B, d]`; positive: h_{i+} `[B, d]`.
    pool: the negatives' vectors `[M, d]` (in-batch items).
    pool_mask: bool `[B, M]`: pool item j is a negative of row i.
    num_hard: N (<= M).
    low, high: alpha ~ U(low, high), drawn per row and per negative.

  Returns:
    `(mixed [B, N, d], alpha [B, N, 1], valid [B, N], hard [B, N])`:
    I_mix = alpha h_{i+} + (1 - alpha) h_{I_hard}; `hard` indexes `pool`;
    `valid` is False where a row has fewer than N negatives.
  """
  scores = tf.matmul(user, pool, transpose_b=True)
  scores = tf.where(pool_mask, scores, tf.constant(-np.inf, scores.dtype))
  top, hard = tf.math.top_k(scores, k=num_hard)
  valid = tf.math.is_finite(top)
  alpha = tf.random.uniform(tf.concat([tf.shape(hard), [1]], 0), low, high,
                            dtype=user.dtype, seed=seed)
  mixed = alpha * positive[:, tf.newaxis, :] + (1.0 - alpha) * tf.gather(
      pool, hard)
  return mixed, alpha, valid, hard


def in_batch_negative_mask(items):
  """bool `[B, B]`: item j of the batch is a negative of row i (not the row
  itself and not another click of the same item)."""
  return items[:, tf.newaxis] != items[tf.newaxis, :]


def _negative_scores(user, negatives):
  """F(q_u, i-) `[B, M]` of shared `[M, d]` or per-row `[B, M, d]`."""
  user = tf.convert_to_tensor(user)
  negatives = tf.convert_to_tensor(negatives, user.dtype)
  if negatives.shape.rank == 2:
    return tf.matmul(user, negatives, transpose_b=True)
  return tf.einsum("bd,bmd->bm", user, negatives)


def temperature_softmax_loss(user, positive, negatives, negative_mask,
                             temperature: float):
  """Mean of -log y(i+ | q_u) with F = inner product over tau (Sec. 3.4).

  `negatives [B, M, d]` with `negative_mask [B, M]` (False: not a
  negative), or `[M, d]` shared by every row. With the paper's
  unnormalised vectors the loss at tau equals the loss at tau = 1 with
  `user / tau`: a model can absorb tau into its norms, and a larger tau
  mostly learns more slowly (docs/mgdspr.md, "Measured results"); with
  L2-normalised vectors (`similarity="cosine"`) it cannot.
  """
  pos = tf.reduce_sum(user * positive, -1, keepdims=True) / temperature
  neg = _negative_scores(user, negatives)
  neg = tf.where(negative_mask, neg / temperature, _NEG)
  logits = tf.concat([pos, neg], axis=1)
  return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - pos[:, 0])


def hinge_loss(user, positive, negatives, negative_mask, margin: float):
  """Mean over valid negatives of max(0, margin - F(q, i+) + F(q, i-))."""
  pos = tf.reduce_sum(user * positive, -1, keepdims=True)
  neg = _negative_scores(user, negatives)
  weights = tf.cast(negative_mask, user.dtype)
  losses = tf.nn.relu(margin - pos + neg) * weights
  return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.reduce_sum(weights))


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class MGDSPRModel(SavableModel, keras.Model):
  """The MGDSPR two-tower model: `call(features) -> H_qu [B, d]`.

  Inputs are the module docstring's features (`mgdspr_tf.training_dataset`
  builds them); `fit` minimises the loss of Sec. 3.4 and `evaluate` reports
  it with `in_batch_hr@k` (share of rows whose clicked item ranks in the
  top k of the batch's items by F, a copy of the same item being no
  competitor). The item attributes and title word ids (`set_catalogue`)
  live in non-trainable variables shaped by the config, so `.keras` files,
  SavedModels and `load_weights` restore them with the towers.

  Args:
    num_items: item vocabulary size.
    attribute_sizes: `{name: vocabulary size}` of the item attributes used
      as side information and as long-term attribute sequences.
    title_length: title word ids kept per item.
    dim: hidden size d (128 in the paper).
    num_buckets: hashed ids per query granularity (and title words).
    num_heads: heads of the behaviour self-attention (8 in the paper).
    max_real, max_short, max_long: sequence maxima (50 / 100 / 100).
    mgs, behaviour, zero_vector: component switches (see module).
    loss: "softmax" or "hinge"; temperature: tau; margin: hinge margin.
    similarity: F is the inner product of the towers' outputs ("dot", the
      paper) or of their L2-normalised outputs ("cosine").
    num_hard: N hard negatives mixed per row (0: none); mix_low, mix_high:
      a and b of alpha ~ U(a, b).
    dropout: the real-time LSTM's dropout.
    in_batch_k: the k of the `in_batch_hr@k` metric.

  Example:

      model = MGDSPRModel(data.num_items, data.attribute_sizes, dim=32)
      model.set_catalogue(data.attributes, data.titles)
      model.compile(optimizer=paper_optimizer())
      model.fit(training_dataset(data.train, 64), epochs=1,
                steps_per_epoch=100)
      users = model(data.test.take(range(4)).features(with_item=False))
      items = model.all_item_vectors()      # [num_items, d]
  """

  def __init__(self, num_items: int,
               attribute_sizes: Optional[Mapping[str, int]] = None,
               title_length: int = 16, dim: int = 128,
               num_buckets: int = 1 << 15, num_heads: int = 8,
               max_real: int = 50, max_short: int = 100, max_long: int = 100,
               mgs: bool = True, behaviour: bool = True,
               zero_vector: bool = True, loss: str = "softmax",
               temperature: float = 2.0, margin: float = 0.1,
               num_hard: int = 64, mix_low: float = 0.4,
               mix_high: float = 0.6, dropout: float = 0.2,
               similarity: str = "dot", in_batch_k: int = 10, **kwargs):
    super().__init__(**kwargs)
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if similarity not in SIMILARITIES:
      raise ValueError(f"similarity must be one of {SIMILARITIES}, got "
                       f"{similarity!r}")
    if not temperature > 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= mix_low < mix_high <= 1.0:
      raise ValueError(f"need 0 <= mix_low < mix_high <= 1, got {mix_low}, "
                       f"{mix_high}")
    if in_batch_k < 1:
      raise ValueError(f"in_batch_k must be >= 1, got {in_batch_k}")
    if num_hard < 0 or num_items < 1 or title_length < 1:
      raise ValueError("num_hard must be >= 0, num_items and title_length "
                       ">= 1")
    for name, value in (("max_real", max_real), ("max_short", max_short),
                        ("max_long", max_long)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    self.num_items, self.dim = int(num_items), int(dim)
    self.attribute_sizes = {k: int(v) for k, v in
                            sorted((attribute_sizes or {}).items())}
    self.title_length, self.num_buckets = int(title_length), int(num_buckets)
    self.num_heads = int(num_heads)
    self.max_lengths = {"real_time": int(max_real),
                        "short_term": int(max_short),
                        "long_term": int(max_long)}
    self.mgs, self.behaviour = bool(mgs), bool(behaviour)
    self.zero_vector, self.loss_name = bool(zero_vector), loss
    self.temperature, self.margin = float(temperature), float(margin)
    self.num_hard = int(num_hard)
    self.mix_low, self.mix_high = float(mix_low), float(mix_high)
    self.dropout = float(dropout)
    self.similarity = similarity
    self.in_batch_k = int(in_batch_k)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.in_batch_hr = keras.metrics.TopKCategoricalAccuracy(
        self.in_batch_k, name=f"in_batch_hr@{self.in_batch_k}")

    self.query_unit = layers.MultiGranularQuery(
        self.dim, self.num_buckets, num_heads=max(1, self.num_heads // 2),
        mgs=self.mgs)
    self.item_embedding = keras.layers.Embedding(self.num_items, self.dim,
                                                 name="item_embedding")
    self.attribute_embeddings = {
        name: keras.layers.Embedding(size, self.dim, name=f"{name}_embedding")
        for name, size in self.attribute_sizes.items()}
    self.item_tower = layers.ItemTower(self.dim)
    if self.behaviour:
      self.real_time = layers.RealTimeEncoder(
          self.dim, self.num_heads, self.dropout, self.zero_vector)
      self.short_term = layers.ShortTermEncoder(self.dim, self.num_heads,
                                                self.zero_vector)
      self.long_term = layers.LongTermEncoder(self.zero_vector)
    self.fusion = layers.Fusion(self.dim, max(1, self.num_heads // 2))
    self.item_attributes = tf.Variable(
        tf.fill([self.num_items, max(1, len(self.attribute_sizes))], -1),
        trainable=False, name="item_attributes")
    self.item_title_ids = tf.Variable(
        tf.fill([self.num_items, self.title_length], tf.constant(-1,
                                                                 tf.int64)),
        trainable=False, name="item_title_ids")

  # -- catalogue ----------------------------------------------------------

  def set_catalogue(self, attributes: Mapping[str, np.ndarray],
                    titles) -> None:
    """Stores every item's attributes (`{name: int [N]}`, -1 = unknown) and
    title word ids (tokenized by the query unit's word tokenizer)."""
    from retrieval_tf import text  # pylint: disable=g-import-not-at-top
    missing = set(self.attribute_sizes) - set(attributes)
    if missing:
      raise ValueError(f"attributes missing: {sorted(missing)}")
    if self.attribute_sizes:
      table = np.stack([np.asarray(attributes[n], np.int32)
                        for n in self.attribute_sizes], axis=1)
      if table.shape[0] != self.num_items:
        raise ValueError(f"attributes have {table.shape[0]} rows, the model "
                         f"{self.num_items} items")
      sizes = np.asarray(list(self.attribute_sizes.values()))
      if (table >= sizes).any() or (table < -1).any():
        raise ValueError("an attribute value is outside its vocabulary")
      self.item_attributes.assign(table)
    if len(titles) != self.num_items:
      raise ValueError(f"{len(titles)} titles for {self.num_items} items")
    ids = text.padded_ids(self.query_unit.word_tokenizer, titles,
                          self.title_length)
    full = np.full((self.num_items, self.title_length), -1, np.int64)
    full[:, :ids.shape[1]] = ids
    self.item_title_ids.assign(full)

  # -- towers -------------------------------------------------------------

  def _attributes(self, items):
    """`{name: [..., d]}` embeddings of the items' attributes (0 for -1)."""
    values = tf.gather(self.item_attributes, tf.maximum(items, 0))
    out = {}
    for column, name in enumerate(self.attribute_sizes):
      out[name], _ = layers.gather_padded(self.attribute_embeddings[name],
                                          values[..., column])
    return out

  def behaviour_items(self, items):
    """Sequence item vectors e_item + sum of attribute embeddings, mask."""
    vectors, mask = layers.gather_padded(self.item_embedding, items)
    weights = tf.cast(mask, vectors.dtype)[..., tf.newaxis]
    for value in self._attributes(items).values():
      vectors += value * weights
    return vectors, mask

  def query_rows(self, features, training=None):
    """Q_mgs `[B, 6, d]` (`[B, 1, d]` without MGS)."""
    return self.query_unit(features["query"], features.get("history_query"),
                           training=training)

  def user_vector(self, features, training=None):
    """H_qu `[B, d]`: the [CLS] output of the fusion layer (Sec. 3.2.3)."""
    q_mgs = self.query_rows(features, training)
    parts = [q_mgs]
    if self.behaviour:
      items, mask = self.behaviour_items(self._sequence(features,
                                                        "real_time"))
      parts.append(self.real_time(q_mgs, items, mask, training=training))
      items, mask = self.behaviour_items(self._sequence(features,
                                                        "short_term"))
      parts.append(self.short_term(q_mgs, items, mask, training=training))
      ids = self._sequence(features, "long_term")
      item_vectors, mask = layers.gather_padded(self.item_embedding, ids)
      attributes = dict(self._attributes(ids), item=item_vectors)
      parts.append(self.long_term(q_mgs, attributes, mask))
    return self._output(self.fusion(tf.concat(parts, axis=1),
                                    training=training))

  def _output(self, vectors):
    """A tower's output as F reads it: L2-normalised under "cosine"."""
    if self.similarity == "cosine":
      return tf.math.l2_normalize(vectors, axis=-1)
    return vectors

  def _sequence(self, features, name):
    return truncate_recent(tf.cast(features[name], tf.int32),
                           self.max_lengths[name])

  def item_vectors(self, items):
    """H_item `[B, d]` of item indices `[B]` (Sec. 3.3)."""
    items = tf.cast(items, tf.int32)
    words, mask = layers.gather_padded(
        self.query_unit.word_embedding,
        tf.gather(self.item_title_ids, items))
    return self._output(self.item_tower(self.item_embedding(items), words,
                                        mask))

  def traced(self, name: str):
    """`item_vectors` or `user_vector` (with training=False) as one
    `tf.function` per model, traced once and reused by every evaluation
    (a function made per call would retrace each epoch). Kept outside the
    model's tracked state, so it is not saved with the model."""
    methods = {"item_vectors": self.item_vectors,
               "user_vector": lambda x: self.user_vector(x, training=False)}
    if name not in methods:
      raise ValueError(f"traced: name must be one of {sorted(methods)}, got "
                       f"{name!r}")
    cache = self.__dict__.setdefault("_traced_functions", {})
    if name not in cache:
      cache[name] = tf.function(methods[name], reduce_retracing=True)
    return cache[name]

  def all_item_vectors(self, batch_size: int = 4096) -> np.ndarray:
    """H_item of every item, `[num_items, d]` float32."""
    fn = self.traced("item_vectors")
    return np.concatenate([
        fn(tf.range(s, min(s + batch_size, self.num_items))).numpy()
        for s in range(0, self.num_items, batch_size)])

  def call(self, features, training=None):
    """The user vector H_qu `[B, d]`; with an `item_id` feature the item
    tower runs too (a call on a training batch builds every weight)."""
    if "item_id" in features:
      self.item_vectors(features["item_id"])
    return self.user_vector(features, training)

  def example_features(self) -> Dict[str, tf.Tensor]:
    """Two rows, one with an empty query and no behaviour, one with item 0
    everywhere: every tower and every embedding runs on them."""
    features = {"query": tf.constant(["", "a b"]),
                "history_query": tf.constant(["", "a"]),
                "item_id": tf.zeros([2], tf.int32)}
    features.update({name: tf.constant([[-1], [0]], tf.int32)
                     for name in SEQUENCES})
    return features

  # -- loss ---------------------------------------------------------------

  def compute_mgdspr_loss(self, features, training=None):
    """The loss of Sec. 3.4 on one batch (see the module docstring)."""
    return self._loss_and_vectors(features, training)[0]

  def _loss_and_vectors(self, features, training=None):
    """(loss, H_qu, H_item of the clicked items, item ids) of one batch."""
    user = self.user_vector(features, training)
    items = tf.cast(features["item_id"], tf.int32)
    positive = self.item_vectors(items)
    mask = in_batch_negative_mask(items)
    negatives, negative_mask = positive, mask
    if self.num_hard:
      n = tf.minimum(self.num_hard, tf.shape(items)[0])
      mixed, _, valid, _ = mix_hard_negatives(
          user, positive, positive, mask, n, self.mix_low, self.mix_high)
      batch = tf.shape(items)[0]
      negatives = tf.concat([tf.tile(positive[tf.newaxis], [batch, 1, 1]),
                             mixed], axis=1)
      negative_mask = tf.concat([mask, valid], axis=1)
    if self.loss_name == "hinge":
      loss = hinge_loss(user, positive, negatives, negative_mask, self.margin)
    else:
      loss = temperature_softmax_loss(user, positive, negatives,
                                      negative_mask, self.temperature)
    return loss, user, positive, items

  def _update_metrics(self, loss, user, positive, items):
    """Mean loss and `in_batch_hr@k`: F over the batch's clicked items, a
    copy of the row's own item elsewhere in the batch is no competitor."""
    self.loss_tracker.update_state(loss)
    scores = tf.matmul(user, positive, transpose_b=True)
    labels = tf.eye(tf.shape(scores)[0], dtype=scores.dtype)
    duplicate = ~in_batch_negative_mask(items) & (labels < 0.5)
    scores = tf.where(duplicate, tf.constant(_NEG, scores.dtype), scores)
    self.in_batch_hr.update_state(labels, scores)
    return {m.name: m.result() for m in self.metrics}

  @property
  def metrics(self):
    return [self.loss_tracker, self.in_batch_hr]

  def train_step(self, data):
    self._remember_input_spec(data)
    features = data[0] if isinstance(data, tuple) else data
    with tf.GradientTape() as tape:
      loss, user, positive, items = self._loss_and_vectors(features,
                                                           training=True)
    variables = self.trainable_variables
    grads = tape.gradient(loss, variables)
    self.optimizer.apply_gradients(
        (g, v) for g, v in zip(grads, variables) if g is not None)
    return self._update_metrics(loss, user, positive, items)

  def test_step(self, data):
    self._remember_input_spec(data)
    features = data[0] if isinstance(data, tuple) else data
    return self._update_metrics(*self._loss_and_vectors(features,
                                                        training=False))

  def get_config(self):
    return {"num_items": self.num_items,
            "attribute_sizes": dict(self.attribute_sizes),
            "title_length": self.title_length, "dim": self.dim,
            "num_buckets": self.num_buckets, "num_heads": self.num_heads,
            "max_real": self.max_lengths["real_time"],
            "max_short": self.max_lengths["short_term"],
            "max_long": self.max_lengths["long_term"],
            "mgs": self.mgs, "behaviour": self.behaviour,
            "zero_vector": self.zero_vector, "loss": self.loss_name,
            "temperature": self.temperature, "margin": self.margin,
            "num_hard": self.num_hard, "mix_low": self.mix_low,
            "mix_high": self.mix_high, "dropout": self.dropout,
            "similarity": self.similarity, "in_batch_k": self.in_batch_k}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def paper_optimizer(learning_rate: float = 0.1, clipnorm: float = 3.0):
  """The paper's optimiser (Sec. 5.1): AdaGrad, learning rate 0.1,
  gradients clipped at global L2 norm 3. Returns a Keras optimizer.

      model.compile(optimizer=paper_optimizer())
  """
  return keras.optimizers.Adagrad(learning_rate, global_clipnorm=clipnorm)
