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
lookups) -> `ItemTower`. Training (Algorithm 1): each batch's positives and
R random items go through the item tower once; `MixedNegatives` picks each
example's negatives among them; the score is the soft dot product G (Eq. 1)
and the loss the attention hinge loss (Eq. 2). Optional human-supervision
negatives (Sec. 4.5) arrive per example as `hard_negatives` int `[B, H]`
(-1 padded) and join the example's negative set.

`lexical_skip=True` (not in the paper) adds P t to both towers' outputs
before their normalisation, t the mean n-gram embedding of the query or of
the title and P one `Dense(d, use_bias=False)` shared by the two sides, so
that the shared n-gram table's lexical match reaches the score past the
MLPs (which keep only part of it; see the README's CrowdFlower results).
`lexical_skip_init="identity"` (needs `token_dim == output_dim`) starts P
as the identity, so that at the start the skip passes the table's match
through unchanged instead of through a random projection.

`head_balance > 0` (not in the paper) adds `head_balance` times
`layers.head_balance_loss` of the positives' per-head inner products to the
hinge loss, so that every head keeps winning some positives (without it the
heads collapse into one; see the README).

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
from retrieval_tf.text import Tokenizer

from dpsr_tf.layers import (ItemTower, MixedNegatives, QueryTower,
                            SoftDotProduct, attention_hinge_loss,
                            head_balance_loss)

PERSONALIZATION = ("none", "profile", "history")
LOSSES = ("hinge", "dssm")
LEXICAL_SKIP_INITS = ("glorot_uniform", "identity")
# Routing temperature of the head load-balancing term (inner products of
# unit vectors lie in [-1, 1]). beta = 0.1 cures the collapse too, but at 1
# the heads more often take one meaning each (see the README's Results).
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


@keras.utils.register_keras_serializable(package="dpsr_tf")
class DPSRModel(keras.Model):
  """See the module docstring.

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
               head_balance: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if personalization not in PERSONALIZATION:
      raise ValueError(f"personalization must be one of {PERSONALIZATION}, "
                       f"got {personalization!r}")
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_lexical_skip(lexical_skip, lexical_skip_init, token_dim,
                       output_dim)
    check_head_balance(head_balance, num_heads, loss)
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
    if "item" in features:  # builds the item tower too
      self.item_embedding(features["item"][:1], training)
    return heads

  # -- training -------------------------------------------------------------

  def compute_loss_value(self, features, training=True) -> tf.Tensor:
    heads = self.query_heads(features, training)
    positive_ids = tf.cast(features["item"], tf.int32)
    hard = features.get("hard_negatives")
    if self.loss_name == "dssm":
      return self._dssm_loss(heads, positive_ids, hard, training)
    candidates, columns, valid = self.negatives(positive_ids)
    vectors = self.item_embedding(candidates, training)
    scores = self.similarity(heads, vectors)  # [b, b + R]
    b = tf.shape(heads)[0]
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
    if isinstance(features, tuple):
      features = features[0]
    with tf.GradientTape() as tape:
      loss = self.compute_loss_value(features, training=True)
      total = loss + tf.add_n(self.losses) if self.losses else loss
    variables = self.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(total, variables),
                                       variables))
    self.loss_tracker.update_state(loss)
    return {"loss": self.loss_tracker.result()}

  @property
  def metrics(self):
    return [self.loss_tracker]

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
            "head_balance": self.head_balance}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def all_item_embeddings(model: DPSRModel, batch_size: int = 8192
                        ) -> np.ndarray:
  """S(s) of every item, float32 `[N, d]`."""
  embed = tf.function(lambda ids: model.item_embedding(ids, training=False))
  return np.concatenate([
      embed(tf.range(s, min(s + batch_size, model.num_items))).numpy()
      for s in range(0, model.num_items, batch_size)], axis=0)
