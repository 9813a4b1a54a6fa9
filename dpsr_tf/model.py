"""`DPSRModel`: the DPSR two-tower model (Sec. 4) with its personalised
variants (Table 2) as one flag.

Query side: raw query text -> the shared in-graph `retrieval_tf.text.
Tokenizer` (Sec. 5.1.1) -> mean n-gram embedding, concatenated with

* nothing (`personalization="none"`: DPSR),
* user profile embeddings (`"profile"`: DPSR-p; features `user_<name>`),
* profile + the mean item-id embedding of the user's recent events
  (`"history"`: DPSR-h; feature `history` int `[B, L]`, -1 padded),

-> `QueryTower` (m heads). Item side: the item id indexes in-memory feature
tables (title token ids and categorical columns, Sec. 5.1.2's feature
lookups) -> `ItemTower`. Feature names follow `retrieval_tf.data.pipeline`:
`query` (raw strings) or `query_tokens` (the pipeline's ragged ids),
`item_id` (the positive), `user_<field>`, `history`. Training
(Algorithm 1): each batch's positives and R random items go through the
item tower once; `MixedNegatives` picks each example's negatives among
them; the score is the soft dot product G (Eq. 1)
and the loss the attention hinge loss (Eq. 2). Optional human-supervision
negatives (Sec. 4.5) arrive per example as `hard_negatives` int `[B, H]`
(-1 padded) and join the example's negative set.

`lexical_skip=True` (not in the paper) adds P t to both towers' outputs
before their normalisation, t the mean n-gram embedding of the query or of
the title and P one `Dense(d, use_bias=False)` shared by the two sides, so
that the shared n-gram table's lexical match reaches the score past the
MLPs (which keep only part of it; see docs/dpsr.md, CrowdFlower).
`lexical_skip_init="identity"` (needs `token_dim == output_dim`) starts P
as the identity, so that at the start the skip passes the table's match
through unchanged instead of through a random projection.

`head_balance > 0` (not in the paper) adds `head_balance` times
`layers.head_balance_loss` of the positives' per-head inner products to the
hinge loss, so that every head keeps winning some positives (without it the
heads collapse into one; see docs/dpsr.md).

`loss="dssm"` turns the same towers into the DSSM baseline of Table 2: one
head, softmax over (the clicked item, the example's `hard_negatives`, i.e.
unclicked items) with smoothing factor `gamma`, no random or batch
negatives.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.layers import MaskedMeanEmbedding
from retrieval_tf.saving import SavableModel
from retrieval_tf.text import Tokenizer

from dpsr_tf.layers import (ItemTower, MixedNegatives, QueryTower,
                            SoftDotProduct, attention_hinge_loss,
                            head_balance_loss)

PERSONALIZATION = ("none", "profile", "history")
LOSSES = ("hinge", "dssm")
LEXICAL_SKIP_INITS = ("glorot_uniform", "identity")
# Routing temperature of the head load-balancing term (inner products of
# unit vectors lie in [-1, 1]). beta = 0.1 cures the collapse too, but at 1
# the heads more often take one meaning each (docs/dpsr.md, Results).
HEAD_BALANCE_TEMPERATURE = 1.0


def check_lexical_skip(lexical_skip: bool, lexical_skip_init: str,
                       token_dim: int, output_dim: int) -> None:
  """ValueError unless `lexical_skip_init` is one of `LEXICAL_SKIP_INITS`
  and, for "identity", the skip is on and P is square."""
  if lexical_skip_init not in LEXICAL_SKIP_INITS:
    raise ValueError(f"lexical_skip_init must be one of "
                     f"{LEXICAL_SKIP_INITS}, got {lexical_skip_init!r}")
  if lexical_skip_init == "identity" and (
      not lexical_skip or int(token_dim) != int(output_dim)):
    raise ValueError(
        "lexical_skip_init='identity' needs lexical_skip=True and "
        f"token_dim == output_dim (got lexical_skip={lexical_skip}, "
        f"token_dim={token_dim}, output_dim={output_dim})")


def check_head_balance(head_balance: float, num_heads: int,
                       loss: str) -> None:
  """ValueError unless `head_balance` >= 0 and, when > 0, the model has
  several heads and the hinge loss (the term balances the heads' wins)."""
  if not head_balance >= 0:
    raise ValueError(f"head_balance must be >= 0, got {head_balance}")
  if head_balance > 0 and (int(num_heads) < 2 or loss != "hinge"):
    raise ValueError("head_balance > 0 needs num_heads >= 2 and "
                     f"loss='hinge' (got num_heads={num_heads}, "
                     f"loss={loss!r})")


def check_batch_size(batch_size: int, num_negatives: int, alpha: float
                     ) -> None:
  """ValueError unless a batch of `batch_size` examples can give each
  example its M - R batch negatives (Algorithm 1, `MixedNegatives`): they
  are other examples of the batch, so the batch needs M - R + 1 rows.

      check_batch_size(64, num_negatives=63, alpha=0.5)  # fine: 32 + 1 <= 64
      check_batch_size(16, num_negatives=63, alpha=0.5)  # ValueError
  """
  batch_part = int(num_negatives) - int(round(float(alpha) *
                                              int(num_negatives)))
  if int(batch_size) < batch_part + 1:
    raise ValueError(
        f"batch_size={batch_size} is too small: num_negatives="
        f"{num_negatives} with alpha={alpha} takes {batch_part} negatives "
        f"from the other examples of each batch (Algorithm 1), so a batch "
        f"needs at least {batch_part + 1} examples; use batch_size >= "
        f"{batch_part + 1}, or fewer num_negatives or a larger alpha")


@keras.utils.register_keras_serializable(package="dpsr_tf")
class DPSRModel(SavableModel, keras.Model):
  """The DPSR model (Sec. 4): query heads Q(q) `[B, m, d]`, item vectors
  S(s) `[N, d]`, score G (Eq. 1), trained with Eq. 2 on mixed negatives.

  Inputs (a dict of batches, as `dpsr_tf.training_dataset` builds them):
  `query` string `[B]` (or `query_tokens` ragged int64 ids), `item_id`
  int `[B]` (the positive; training only), `user_<field>` int `[B]`
  (DPSR-p/-h), `history` int `[B, L]` -1 padded (DPSR-h), optional
  `hard_negatives` int `[B, H]` -1 padded (Sec. 4.5; DSSM's unclicked
  items). Outputs: `model(features)` and `query_heads(features)` give the
  m unit head vectors `[B, m, d]`; `item_embedding(ids)` the unit item
  vectors `[n, d]`; `similarity(heads, vectors)` G. `fit` and `evaluate`
  report the loss and `in_batch_hr@k`: the share of examples whose positive
  ranks in the top `in_batch_k` of the batch's positives by G (other
  examples with the same positive excluded). Training batches need at
  least `min_batch_size` examples (see `check_batch_size`).

      model = DPSRModel(task.num_items, titles.shape[1],
                        task.item_feature_sizes, num_negatives=31)
      model.set_item_tables(titles, task.item_columns)
      model.compile(optimizer=keras.optimizers.Adagrad(0.05))
      model.fit(dpsr_tf.training_dataset(task.train, model, 64), epochs=2,
                steps_per_epoch=100)
      heads = model({"query": tf.constant(["red shoes"])})  # [1, 2, 64]

  Args:
    num_items: N; item ids are `0..N-1`.
    title_width: T, the columns of the item token table.
    item_feature_sizes: categorical item column -> vocabulary size.
    tokenizer: `retrieval_tf.text.Tokenizer` config (a dict).
    num_heads: m. token_dim: n-gram (and feature) embedding size.
    output_dim: d. hidden_units: ReLU layers of both towers.
    beta: soft dot product temperature. delta: hinge margin.
    alpha: share of random negatives. num_negatives: M per example.
    personalization: one of `PERSONALIZATION`.
    user_feature_sizes: profile column -> vocabulary size (-p, -h).
    loss: "hinge" (DPSR) or "dssm" (the baseline); gamma: DSSM smoothing.
    lexical_skip: add the shared linear skip P t to both towers.
    lexical_skip_init: P's initializer, one of `LEXICAL_SKIP_INITS`.
    head_balance: weight of the head load-balancing term (0: the paper's
      loss; needs num_heads >= 2 and the hinge loss).
    in_batch_k: the k of the `in_batch_hr@k` metric.

  Raises:
    ValueError: an unknown personalization, loss or lexical_skip_init, a
      bad head_balance, personalization without user_feature_sizes, or
      in_batch_k < 1.
  """

  def __init__(self, num_items: int, title_width: int,
               item_feature_sizes: Mapping[str, int],
               tokenizer: Optional[Mapping] = None, num_heads: int = 2,
               token_dim: int = 64, output_dim: int = 64,
               hidden_units: Sequence[int] = (128,), beta: float = 0.1,
               delta: float = 0.1, alpha: float = 0.5,
               num_negatives: int = 63, personalization: str = "none",
               user_feature_sizes: Optional[Mapping[str, int]] = None,
               loss: str = "hinge", gamma: float = 10.0,
               lexical_skip: bool = False,
               lexical_skip_init: str = "glorot_uniform",
               head_balance: float = 0.0, in_batch_k: int = 10, **kwargs):
    super().__init__(**kwargs)
    if personalization not in PERSONALIZATION:
      raise ValueError(f"personalization must be one of {PERSONALIZATION}, "
                       f"got {personalization!r}")
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_lexical_skip(lexical_skip, lexical_skip_init, token_dim,
                       output_dim)
    check_head_balance(head_balance, num_heads, loss)
    if int(in_batch_k) < 1:
      raise ValueError(f"in_batch_k must be >= 1, got {in_batch_k}")
    if personalization != "none" and not user_feature_sizes:
      raise ValueError(f"personalization={personalization!r} needs user "
                       "profile features (user_feature_sizes)")
    self.num_items, self.title_width = int(num_items), int(title_width)
    self.item_feature_sizes = {k: int(v) for k, v in
                               sorted(item_feature_sizes.items())}
    self.tokenizer_config = dict(tokenizer or {})
    self.num_heads, self.token_dim = int(num_heads), int(token_dim)
    self.output_dim = int(output_dim)
    self.hidden_units = [int(u) for u in hidden_units]
    self.beta, self.delta, self.alpha = float(beta), float(delta), float(
        alpha)
    self.num_negatives = int(num_negatives)
    self.personalization = personalization
    self.user_feature_sizes = ({} if personalization == "none" else
                               {k: int(v) for k, v in
                                sorted(user_feature_sizes.items())})
    self.loss_name, self.gamma = loss, float(gamma)
    self.lexical_skip = bool(lexical_skip)
    self.lexical_skip_init = lexical_skip_init
    self.head_balance = float(head_balance)
    self.in_batch_k = int(in_batch_k)

    self.tokenizer = Tokenizer.from_config(self.tokenizer_config) \
        if self.tokenizer_config else Tokenizer()
    self.tokenizer_config = self.tokenizer.get_config()
    vocab = self.tokenizer.vocabulary_size
    self.token_embedding = keras.layers.Embedding(vocab, self.token_dim,
                                                  name="token_embedding")
    self.query_tokens = MaskedMeanEmbedding(vocab, self.token_dim,
                                            embeddings=self.token_embedding,
                                            name="query_tokens")
    self.profile = {name: MaskedMeanEmbedding(size, 16, name=f"user_{name}")
                    for name, size in self.user_feature_sizes.items()}
    self.history_embedding = (
        MaskedMeanEmbedding(self.num_items, self.token_dim, name="history")
        if personalization == "history" else None)
    self.query_tower = QueryTower(self.num_heads, self.output_dim,
                                  self.hidden_units, name="query_tower")
    self.item_tower = ItemTower(vocab, self.token_dim,
                                self.item_feature_sizes, self.output_dim,
                                self.hidden_units,
                                token_embedding=self.token_embedding,
                                name="item_tower")
    self.skip_projection = (
        keras.layers.Dense(self.output_dim, use_bias=False,
                           kernel_initializer=self.lexical_skip_init,
                           name="lexical_skip") if self.lexical_skip else None)
    self.similarity = SoftDotProduct(self.beta, name="soft_dot_product")
    self.negatives = MixedNegatives(self.num_items, self.num_negatives,
                                    self.alpha, name="negatives")
    # In-memory item feature tables (Sec. 5.1.2), filled by set_item_tables.
    self.item_title = self.add_weight(
        "item_title", shape=(self.num_items, self.title_width),
        dtype=tf.int64, initializer="zeros", trainable=False)
    self.item_columns = {
        name: self.add_weight(f"item_{name}", shape=(self.num_items,),
                              dtype=tf.int32, initializer="zeros",
                              trainable=False)
        for name in self.item_feature_sizes}
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.in_batch_hr = keras.metrics.Mean(name=f"in_batch_hr@{self.in_batch_k}")

  @property
  def min_batch_size(self) -> int:
    """The smallest training batch the hinge loss takes (M - R + 1)."""
    return (self.negatives.num_batch + 1 if self.loss_name == "hinge" else 1)

  # -- item side ------------------------------------------------------------

  def set_item_tables(self, title_tokens: np.ndarray,
                      columns: Mapping[str, np.ndarray]) -> None:
    """Loads the item feature tables: title token ids `[N, T]` (-1 padded)
    and one int `[N]` column per categorical feature (-1 = absent)."""
    title_tokens = np.asarray(title_tokens, np.int64)
    if title_tokens.shape != (self.num_items, self.title_width):
      raise ValueError(f"title tokens have shape {title_tokens.shape}, the "
                       f"model expects {(self.num_items, self.title_width)}")
    self.item_title.assign(title_tokens)
    for name, variable in self.item_columns.items():
      if name not in columns:
        raise ValueError(f"item feature column {name!r} is missing")
      values = np.asarray(columns[name], np.int32)
      if values.shape != (self.num_items,) or values.max(
          initial=-1) >= self.item_feature_sizes[name]:
        raise ValueError(f"item feature {name!r}: expected {self.num_items} "
                         f"ids below {self.item_feature_sizes[name]}")
      variable.assign(values)

  def item_features(self, item_ids) -> Dict[str, tf.Tensor]:
    item_ids = tf.cast(item_ids, tf.int32)
    features = {"tokens": tf.gather(self.item_title, item_ids)}
    for name, variable in self.item_columns.items():
      features[name] = tf.gather(variable, item_ids)
    return features

  def item_embedding(self, item_ids, training=False) -> tf.Tensor:
    """S(s): `[n, d]` unit vectors of item ids `[n]`."""
    return self.item_tower(self.item_features(item_ids),
                           skip=self.skip_projection, training=training)

  # -- query side -----------------------------------------------------------

  def query_heads(self, features: Dict[str, tf.Tensor], training=False
                  ) -> tf.Tensor:
    """Q(q): `[B, m, d]` from `query` (raw strings) or `query_tokens` (the
    pipeline's ragged ids), plus the user features of the variant."""
    tokens = features.get("query_tokens")
    if tokens is None:
      tokens = self.tokenizer(features["query"])
    if isinstance(tokens, tf.RaggedTensor):
      tokens = tokens.to_tensor(default_value=-1)
    parts = [self.query_tokens(tokens)]
    residual = (self.skip_projection(parts[0]) if self.skip_projection
                is not None else None)
    for name, layer in self.profile.items():
      parts.append(layer(features[f"user_{name}"]))
    if self.history_embedding is not None:
      parts.append(self.history_embedding(features["history"]))
    return self.query_tower(tf.concat(parts, axis=-1), residual=residual,
                            training=training)

  def call(self, features, training=False):
    heads = self.query_heads(features, training)
    if "item_id" in features:  # builds the item tower too
      self.item_embedding(features["item_id"][:1], training)
    return heads

  # -- saving (retrieval_tf.saving.SavableModel) ----------------------------

  def example_features(self) -> Dict[str, tf.Tensor]:
    """Two rows of valid features, made from the config alone."""
    features = {"query": tf.constant(["red shoes", ""]),
                "item_id": tf.constant([0, self.num_items - 1], tf.int32)}
    for name in self.user_feature_sizes:
      features[f"user_{name}"] = tf.constant([0, -1], tf.int32)
    if self.personalization == "history":
      features["history"] = tf.constant([[0, -1], [-1, -1]], tf.int32)
    return features

  def create_weights(self, features) -> None:
    """Runs the query tower, the item tower and G once."""
    heads = self.query_heads(features)
    self.similarity(heads, self.item_embedding(features["item_id"]))

  # -- training -------------------------------------------------------------

  def compute_loss_value(self, features, training=True) -> tf.Tensor:
    """The loss of a batch (Eq. 2, or DSSM's softmax); also updates
    `in_batch_hr@k`. Raises ValueError when the batch's static size is
    below `min_batch_size`."""
    if "item_id" not in features:
      raise ValueError("training features need 'item_id' (the positive "
                       f"item); got {sorted(features)}")
    positive_ids = tf.cast(features["item_id"], tf.int32)
    batch = positive_ids.shape[0]
    if batch is not None and self.loss_name == "hinge":
      check_batch_size(batch, self.num_negatives, self.alpha)
    heads = self.query_heads(features, training)
    hard = features.get("hard_negatives")
    if self.loss_name == "dssm":
      self._update_in_batch_hr(
          heads, self.item_embedding(positive_ids, training), positive_ids)
      return self._dssm_loss(heads, positive_ids, hard, training)
    candidates, columns, valid = self.negatives(positive_ids)
    vectors = self.item_embedding(candidates, training)
    b = tf.shape(heads)[0]
    self._update_in_batch_hr(heads, vectors[:b], positive_ids)
    scores = self.similarity(heads, vectors)  # [b, b + R]
    positive = tf.linalg.diag_part(scores[:, :b])
    negative = tf.gather(scores, columns, batch_dims=1)
    if hard is not None:
      hard = tf.cast(hard, tf.int32)
      hard_scores = self._pair_scores(heads, hard, training)
      negative = tf.concat([negative, hard_scores], axis=1)
      valid = tf.concat([valid, (hard >= 0) &
                         (hard != positive_ids[:, tf.newaxis])], axis=1)
    loss = attention_hinge_loss(positive, negative, valid, self.delta)
    if self.head_balance > 0:
      inner = tf.einsum("bmd,bd->bm", heads, vectors[:b])
      loss += self.head_balance * head_balance_loss(
          inner, HEAD_BALANCE_TEMPERATURE)
    return loss

  def _update_in_batch_hr(self, heads, positives, positive_ids) -> None:
    """`in_batch_hr@k`: the positive's rank by G among the batch's
    positives `[b, d]` (rows with the same item are no competitors)."""
    scores = tf.stop_gradient(self.similarity(heads, positives))  # [b, b]
    own = tf.linalg.diag_part(scores)
    same = tf.equal(positive_ids[:, tf.newaxis], positive_ids[tf.newaxis, :])
    beaten = tf.logical_and(scores > own[:, tf.newaxis], tf.logical_not(same))
    rank = tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
    self.in_batch_hr.update_state(
        tf.cast(rank < self.in_batch_k, tf.float32))

  def _pair_scores(self, heads, items, training):
    """G of each query with its own items `[b, H]` (-1 padded; padding
    scores are meaningless and must be masked)."""
    shape = tf.shape(items)
    vectors = self.item_embedding(tf.reshape(tf.maximum(items, 0), [-1]),
                                  training)
    vectors = tf.reshape(vectors, [shape[0], shape[1], self.output_dim])
    return self.similarity(heads, vectors)

  def _dssm_loss(self, heads, positive_ids, hard, training):
    if hard is None:
      raise ValueError("loss='dssm' needs hard_negatives (unclicked items)")
    hard = tf.cast(hard, tf.int32)
    items = tf.concat([positive_ids[:, tf.newaxis], hard], axis=1)
    logits = self.gamma * self._pair_scores(heads, items, training)
    valid = tf.concat([tf.ones_like(positive_ids[:, tf.newaxis], tf.bool),
                       hard >= 0], axis=1)
    logits = tf.where(valid, logits, tf.constant(-1e9, logits.dtype))
    return tf.reduce_mean(-tf.nn.log_softmax(logits, axis=1)[:, 0])

  def train_step(self, features):
    self._remember_input_spec(features)
    if isinstance(features, tuple):
      features = features[0]
    with tf.GradientTape() as tape:
      loss = self.compute_loss_value(features, training=True)
      total = loss + tf.add_n(self.losses) if self.losses else loss
    variables = self.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(total, variables),
                                       variables))
    self.loss_tracker.update_state(loss)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, features):
    self._remember_input_spec(features)
    if isinstance(features, tuple):
      features = features[0]
    self.loss_tracker.update_state(
        self.compute_loss_value(features, training=False))
    return {m.name: m.result() for m in self.metrics}

  @property
  def metrics(self):
    return [self.loss_tracker, self.in_batch_hr]

  def get_config(self):
    return {"num_items": self.num_items, "title_width": self.title_width,
            "item_feature_sizes": self.item_feature_sizes,
            "tokenizer": self.tokenizer_config, "num_heads": self.num_heads,
            "token_dim": self.token_dim, "output_dim": self.output_dim,
            "hidden_units": self.hidden_units, "beta": self.beta,
            "delta": self.delta, "alpha": self.alpha,
            "num_negatives": self.num_negatives,
            "personalization": self.personalization,
            "user_feature_sizes": self.user_feature_sizes,
            "loss": self.loss_name, "gamma": self.gamma,
            "lexical_skip": self.lexical_skip,
            "lexical_skip_init": self.lexical_skip_init,
            "head_balance": self.head_balance,
            "in_batch_k": self.in_batch_k}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def all_item_embeddings(model: DPSRModel, batch_size: int = 8192
                        ) -> np.ndarray:
  """S(s) of every item, float32 `[N, d]`, in item-id order, computed in
  batches of `batch_size` ids.

      vectors = all_item_embeddings(model)   # [model.num_items, d]
  """
  embed = tf.function(lambda ids: model.item_embedding(ids, training=False))
  return np.concatenate([
      embed(tf.range(s, min(s + batch_size, model.num_items))).numpy()
      for s in range(0, model.num_items, batch_size)], axis=0)
