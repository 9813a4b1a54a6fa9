"""DPSR's building blocks (Zhang et al., SIGIR'20, Sec. 4.1-4.4).

* `QueryTower`: one dense query representation -> a linear projection to m
  representations -> m separate ReLU MLPs -> m unit-length head embeddings
  `[B, m, d]` (Sec. 4.2, "multi-head representations").
* `ItemTower`: the concatenated item features (mean n-gram embedding of the
  title, one embedding per categorical feature) -> ReLU MLP -> a unit-length
  item embedding `[N, d]` (Sec. 4.1).
* Both towers can add P t to their output before the normalisation (t the
  mean n-gram embedding, P one linear map shared by the two sides):
  `DPSRModel(lexical_skip=True)`, not in the paper. `QueryTower` takes P t
  as `residual`; `ItemTower` takes P as `skip` and applies it to the title
  mean it computes anyway.
* `SoftDotProduct`: G(Q(q), S(s)) = sum_i w_i e_i^T g with
  w = softmax(e^T g / beta) over the heads (Eq. 1); beta -> 0 gives
  max_i e_i^T g, a large beta the mean.
* `attention_hinge_loss`: sum over negatives of
  max(0, delta - f(q, s+) + f(q, s-)) (Eq. 2), averaged over the batch.
* `head_balance_loss` (not in the paper): a load-balancing term that keeps
  every head winning a share of the positives, against the heads'
  collapse into one (see docs/dpsr.md).
* `MixedNegatives`: Algorithm 1's negative set: a proportion alpha of random
  items shared by the batch (Sec. 4.4.1) and 1 - alpha of the batch's other
  positives (Sec. 4.4.2), as columns of one score matrix (Sec. 4.4.3).
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

from retrieval_tf.compat import keras, tf
from retrieval_tf.layers import MLP, MaskedMeanEmbedding

_PACKAGE = "dpsr_tf"


@keras.utils.register_keras_serializable(package=_PACKAGE)
class HeadwiseDense(keras.layers.Layer):
  """m independent dense layers applied to `[B, m, in]` at once (one einsum,
  no loop over heads): out[:, i] = act(x[:, i] W_i + b_i)."""

  def __init__(self, units: int, activation=None, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    self.activation = keras.activations.get(activation)

  def build(self, input_shape):
    heads, width = int(input_shape[-2]), int(input_shape[-1])
    self.kernel = self.add_weight(
        "kernel", shape=(heads, width, self.units),
        initializer="glorot_uniform")
    self.bias = self.add_weight("bias", shape=(heads, self.units),
                                initializer="zeros")
    super().build(input_shape)

  def call(self, inputs):
    return self.activation(tf.einsum("bmi,mio->bmo", inputs, self.kernel) +
                           self.bias)

  def get_config(self):
    config = super().get_config()
    config.update({"units": self.units,
                   "activation": keras.activations.serialize(
                       self.activation)})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class QueryTower(keras.layers.Layer):
  """Sec. 4.2: `[B, in]` -> projection to m heads -> m ReLU MLPs ->
  L2-normalised `[B, m, d]`. `call(inputs, residual)`: an optional `[B, d]`
  added to every head before the normalisation.

  Args:
    num_heads: m.
    projection_dim: width of each projected representation.
    hidden_units: ReLU layers of every head's encoding MLP.
    output_dim: d.

      heads = QueryTower(num_heads=2, output_dim=64)(queries)  # [B, 2, 64]
  """

  def __init__(self, num_heads: int, output_dim: int,
               hidden_units: Sequence[int] = (128,),
               projection_dim: int = 64, **kwargs):
    super().__init__(**kwargs)
    if num_heads < 1 or output_dim < 1 or projection_dim < 1:
      raise ValueError("QueryTower: num_heads, output_dim and projection_dim "
                       "must be >= 1")
    self.num_heads, self.output_dim = int(num_heads), int(output_dim)
    self.hidden_units = [int(u) for u in hidden_units]
    self.projection_dim = int(projection_dim)
    self.projection = keras.layers.Dense(self.num_heads * self.projection_dim,
                                         name="projection")
    self.encoders = [HeadwiseDense(u, "relu", name=f"head_hidden_{i}")
                     for i, u in enumerate(self.hidden_units)]
    self.output_layer = HeadwiseDense(self.output_dim, name="head_output")

  def call(self, inputs, residual=None):
    x = tf.reshape(self.projection(inputs),
                   [-1, self.num_heads, self.projection_dim])
    for layer in self.encoders:
      x = layer(x)
    x = self.output_layer(x)
    if residual is not None:
      x += residual[:, tf.newaxis, :]
    return tf.math.l2_normalize(x, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"num_heads": self.num_heads, "output_dim": self.output_dim,
                   "hidden_units": self.hidden_units,
                   "projection_dim": self.projection_dim})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class ItemTower(keras.layers.Layer):
  """Sec. 4.1: concatenated item features -> ReLU MLP -> unit-length `[N, d]`.

  `call(features, skip)` takes `tokens` (int `[N, T]` token ids, -1
  padded) and one int `[N]` (or `[N, L]`, -1 padded) column per categorical
  feature of `feature_sizes` (-1 = absent, a zero vector); the optional
  `skip` (a layer `[N, token_dim] -> [N, d]`) of the mean title n-gram
  embedding is added before the normalisation.

  Args:
    num_tokens, token_dim: the token embedding table's shape.
    feature_sizes: categorical feature name -> vocabulary size.
    feature_dim: embedding size of each categorical feature.
    token_embedding: optionally the query side's `keras.layers.Embedding`
      of shape (num_tokens, token_dim), to share.

      tower = ItemTower(4096, 32, {"brand": 50}, output_dim=64)
      vectors = tower({"tokens": title_ids, "brand": brand_ids})  # [N, 64]
  """

  def __init__(self, num_tokens: int, token_dim: int,
               feature_sizes: Mapping[str, int], output_dim: int,
               hidden_units: Sequence[int] = (128,), feature_dim: int = 16,
               token_embedding: keras.layers.Embedding = None, **kwargs):
    super().__init__(**kwargs)
    self.num_tokens, self.token_dim = int(num_tokens), int(token_dim)
    self.feature_sizes = {k: int(v) for k, v in sorted(feature_sizes.items())}
    self.output_dim, self.feature_dim = int(output_dim), int(feature_dim)
    self.hidden_units = [int(u) for u in hidden_units]
    self.tokens = MaskedMeanEmbedding(self.num_tokens, self.token_dim,
                                      embeddings=token_embedding,
                                      name="title_tokens")
    self.features = {name: MaskedMeanEmbedding(size, self.feature_dim,
                                               name=f"feature_{name}")
                     for name, size in self.feature_sizes.items()}
    self.mlp = MLP(self.hidden_units, self.output_dim, name="mlp")

  def call(self, features: Dict[str, tf.Tensor], skip=None):
    title = self.tokens(features["tokens"])
    parts = [title] + [self.features[name](features[name])
                       for name in self.feature_sizes]
    x = self.mlp(tf.concat(parts, axis=-1))
    if skip is not None:
      x += skip(title)
    return tf.math.l2_normalize(x, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"num_tokens": self.num_tokens, "token_dim": self.token_dim,
                   "feature_sizes": self.feature_sizes,
                   "output_dim": self.output_dim,
                   "hidden_units": self.hidden_units,
                   "feature_dim": self.feature_dim})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class SoftDotProduct(keras.layers.Layer):
  """Eq. 1: G = sum_i softmax_i(e_i^T g / beta) e_i^T g.

  `call(heads [B, m, d], items)` with items `[C, d]` (every query against
  every item) -> `[B, C]`, or items `[B, C, d]` (each query against its own
  items) -> `[B, C]`.

      scores = SoftDotProduct(beta=0.1)(heads, item_vectors)  # [B, C]
  """

  def __init__(self, beta: float = 0.1, **kwargs):
    super().__init__(**kwargs)
    if not beta > 0:
      raise ValueError(f"SoftDotProduct: beta must be > 0, got {beta}")
    self.beta = float(beta)

  def call(self, heads, items):
    heads = tf.convert_to_tensor(heads, tf.float32)
    items = tf.convert_to_tensor(items, tf.float32)
    if items.shape.rank == 2:
      inner = tf.einsum("bmd,cd->bcm", heads, items)
    else:
      inner = tf.einsum("bmd,bcd->bcm", heads, items)
    weights = tf.nn.softmax(inner / self.beta, axis=-1)
    return tf.reduce_sum(weights * inner, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"beta": self.beta})
    return config


def attention_hinge_loss(positive, negatives, mask=None, delta: float = 0.1):
  """Eq. 2 per example: sum_j max(0, delta - f(q, s+) + f(q, s_j-)) over the
  valid (`mask`) negatives `[B, M]`; returns the mean over the batch.

  `positive` `[B]` holds f(q, s+), `negatives` `[B, M]` f(q, s_j-), `mask`
  bool `[B, M]` (None: all valid); returns a scalar.

      loss = attention_hinge_loss(g_pos, g_neg, valid, delta=0.1)
  """
  terms = tf.nn.relu(delta - positive[:, tf.newaxis] + negatives)
  if mask is not None:
    terms = terms * tf.cast(mask, terms.dtype)
  return tf.reduce_mean(tf.reduce_sum(terms, axis=-1))


def head_balance_loss(inner, temperature: float = 1.0):
  """Load balancing over the heads (not in the paper; the Switch
  Transformer's auxiliary loss, Fedus et al., JMLR 2022, Sec. 2.2, with
  the heads as experts): m sum_i f_i p_i for `inner` `[B, m]`, the positives' inner
  products with each head. f_i is the share of the batch whose best head is
  i (no gradient), p_i the batch mean of softmax(inner / temperature)_i.
  It is 1 when the heads win equally often and approaches m when one head
  wins everything; its gradient lowers the routing weight of the heads that
  win more than their share, so a head that never wins is pulled towards
  positives instead of only being pushed away from negatives."""
  inner = tf.convert_to_tensor(inner, tf.float32)
  if not temperature > 0:
    raise ValueError(f"head_balance_loss: temperature must be > 0, got "
                     f"{temperature}")
  heads = tf.shape(inner)[-1]
  wins = tf.one_hot(tf.argmax(inner, axis=-1), heads, dtype=inner.dtype)
  share = tf.stop_gradient(tf.reduce_mean(wins, axis=0))
  weight = tf.reduce_mean(tf.nn.softmax(inner / temperature, axis=-1), axis=0)
  return tf.cast(heads, inner.dtype) * tf.reduce_sum(share * weight)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MixedNegatives(keras.layers.Layer):
  """Algorithm 1's negative set as columns of the `[b, b + R]` score matrix
  of the batch's queries against [the b positives; R random items].

  Of `num_negatives` M per example, R = round(alpha M) are random items,
  uniform over the corpus and shared by the batch (Sec. 4.4.1), and
  M - R are other positives of the batch (Sec. 4.4.2): row i takes rows
  (i + o) mod b for M - R distinct offsets o in 1..b-1 drawn per step, so
  an example never takes its own positive.

  `call(positive_ids [b])` -> `(candidate_ids [b + R], columns [b, M],
  valid [b, M])`; `valid` is False where a negative is the example's own
  positive item (duplicates in the batch or a random draw). A batch needs
  at least M - R + 1 examples (`dpsr_tf.model.check_batch_size`).

      candidates, columns, valid = MixedNegatives(1000, 63, 0.5)(positives)
      negatives = tf.gather(scores, columns, batch_dims=1)  # [b, 63]
  """

  def __init__(self, num_items: int, num_negatives: int, alpha: float,
               **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f"MixedNegatives: alpha must be in [0, 1], got "
                       f"{alpha}")
    if num_negatives < 1 or num_items < 1:
      raise ValueError("MixedNegatives: num_negatives and num_items must be "
                       ">= 1")
    self.num_items, self.num_negatives = int(num_items), int(num_negatives)
    self.alpha = float(alpha)
    self.num_random = int(round(self.alpha * self.num_negatives))
    self.num_batch = self.num_negatives - self.num_random

  def call(self, positive_ids):
    positive_ids = tf.cast(positive_ids, tf.int32)
    b = tf.shape(positive_ids)[0]
    tf.debugging.assert_less_equal(
        self.num_batch, b - 1,
        message=f"MixedNegatives: {self.num_batch} batch negatives need "
        f"batches of at least {self.num_batch + 1} examples; batch with "
        f"batch_size >= {self.num_batch + 1} and drop_remainder=True (as "
        "dpsr_tf.training_dataset does)")
    random_ids = tf.random.uniform([self.num_random], 0, self.num_items,
                                   tf.int32)
    offsets = 1 + tf.random.shuffle(tf.range(b - 1))[:self.num_batch]
    rows = tf.range(b)[:, tf.newaxis]
    batch_cols = (rows + offsets[tf.newaxis, :]) % b
    random_cols = tf.broadcast_to(b + tf.range(self.num_random),
                                  [b, self.num_random])
    columns = tf.concat([batch_cols, random_cols], axis=1)
    candidates = tf.concat([positive_ids, random_ids], axis=0)
    valid = tf.gather(candidates, columns) != positive_ids[:, tf.newaxis]
    return candidates, columns, valid

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items,
                   "num_negatives": self.num_negatives,
                   "alpha": self.alpha})
    return config
