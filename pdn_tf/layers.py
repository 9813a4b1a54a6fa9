"""PDN's building blocks (Li et al., Path-based Deep Network for Candidate
Item Matching in Recommenders, SIGIR'21, Sec. 4), scalar-based PDN.

* `TriggerNet` (Eq. 8): t_uj = MLP(CAT(E(z_u), E(a_uj), E(x_j))), the user's
  interest in each trigger (interacted item) j: the first hop.
* `SimilarityNet` (Eq. 9): s_ji = MLP(CAT(E(x_j), E(c_ji), E(x_i))), the
  relevance of trigger j to target i from both items' fields and their
  co-occurrence field: the second hop.
* `path_weight` (Eq. 10, MEG): PATH_uji = ln(1 + e^t e^s) = softplus(t + s).
* `DirectNet` (Eq. 11): d_ui = MLP(E(z_u)) MLP(E(x_i))ᵀ with LeakyReLU
  towers over their own embeddings: the direct (1-hop) path.
* `BiasNet` (Sec. 4.5): a shallow tower over selection-bias features
  (position, hour, ...) whose logit y_bias joins the score in training only.
* `relevance` (Eq. 12): y = softplus(d) + Σ_j PATH_uji + softplus(y_bias);
  `click_probability` (Eq. 13): p = 1 - exp(-y); `pdn_cross_entropy`: the
  cross-entropy of Sec. 4.6, computed from y without forming log(p) naively.

The MLP first layers of `TriggerNet` and `SimilarityNet` are applied to each
field separately and summed (W·CAT(a, b, c) = W_a a + W_b b + W_c c): the
same function as a Dense layer on the concatenation, but the per-trigger and
per-target projections are computed once, not once per (trigger, target)
pair, and the inputs only need to broadcast against each other.
"""

from __future__ import annotations

from typing import Sequence

from retrieval_tf.compat import keras, tf

_PACKAGE = "pdn_tf"

# Initial output bias of TrigNet, SimNet and the Bias Net: t + s starts near
# -4, so each path weight softplus(t + s) starts near 0.02, small (the sum
# over a history of n triggers stays moderate) but not in softplus's flat
# tail, where the gradient e^(t+s) would vanish.
INITIAL_BIAS = -2.0

# Eq. 13 needs y > 0 for log p; scores are clamped to at least this
# (p >= 1e-7, so a positive's loss is at most ~16.1, never inf).
MIN_RELEVANCE = 1e-7


def path_weight(trigger_weight, similarity):
  """MEG (Eq. 10): ln(1 + e^t · e^s), computed as softplus(t + s) so that
  large t + s never overflows."""
  return tf.nn.softplus(trigger_weight + similarity)


def relevance(direct, paths, path_mask=None, bias_logit=None):
  """Eq. 12: softplus(d_ui) + Σ_j PATH_uji (+ softplus(y_bias)).

  Args:
    direct: `[...]` direct-path logits d_ui, or None (no Direct Net).
    paths: `[..., n]` path weights PATH_uji over the triggers j.
    path_mask: `[..., n]` bool, False for padded triggers (optional).
    bias_logit: logits y_bias broadcastable to `direct` (training only).
  """
  if path_mask is not None:
    paths = tf.where(path_mask, paths, tf.zeros_like(paths))
  y = tf.reduce_sum(paths, axis=-1)
  if direct is not None:
    y = y + tf.nn.softplus(direct)
  if bias_logit is not None:
    y = y + tf.nn.softplus(bias_logit)
  return y


def click_probability(y):
  """Eq. 13: p = 1 - exp(-y) = -expm1(-y), in [0, 1) for y >= 0."""
  return -tf.math.expm1(-tf.maximum(y, 0.0))


def pdn_cross_entropy(labels, y):
  """Sec. 4.6 cross-entropy with p = 1 - exp(-y) (Eq. 13), elementwise.

  -log(1 - p) = y exactly, and -log p = -log(-expm1(-y)) with y clamped to
  `MIN_RELEVANCE`, so the loss is finite for any y >= 0 (including y = 0
  and y = +large).
  """
  labels = tf.cast(labels, y.dtype)
  y = tf.maximum(y, MIN_RELEVANCE)
  positive = -tf.math.log(-tf.math.expm1(-y))
  return labels * positive + (1.0 - labels) * y


class _FactorisedMLP(keras.layers.Layer):
  """Dense(CAT(x_1..x_k)) -> activation -> Dense layers -> 1 scalar, with the
  first layer split per input (see the module): inputs need only broadcast
  against each other after their projections."""

  def __init__(self, num_inputs: int, hidden_units: Sequence[int],
               activation: str = "relu", output_bias: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    if not hidden_units:
      raise ValueError(f"{type(self).__name__} needs at least one hidden "
                       "layer")
    self.hidden_units = [int(u) for u in hidden_units]
    self.activation = activation
    self.output_bias = float(output_bias)
    self.first = [keras.layers.Dense(self.hidden_units[0], use_bias=(i == 0),
                                     name=f"first_{i}")
                  for i in range(num_inputs)]
    self.hidden = [keras.layers.Dense(u, activation=activation,
                                      name=f"hidden_{i + 1}")
                   for i, u in enumerate(self.hidden_units[1:])]
    self.output_layer = keras.layers.Dense(
        1, bias_initializer=keras.initializers.Constant(self.output_bias),
        name="output")

  def project(self, position: int, x):
    """The first layer's share of input `position` (no activation)."""
    return self.first[position](x)

  def finish(self, summed):
    """Activation of the summed projections, the rest of the MLP -> [...]."""
    x = keras.activations.get(self.activation)(summed)
    for layer in self.hidden:
      x = layer(x)
    return tf.squeeze(self.output_layer(x), axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_units": self.hidden_units,
                   "activation": self.activation,
                   "output_bias": self.output_bias})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class TriggerNet(_FactorisedMLP):
  """Eq. 8: t_uj = MLP(CAT(E(z_u), E(a_uj), E(x_j))).

  `call(user [B, d_u], behaviour [B, n, d_a], trigger [B, n, d_i])` ->
  `[B, n]` trigger weights (one scalar per trigger: scalar-based PDN).
  """

  def __init__(self, hidden_units: Sequence[int] = (64, 32),
               activation: str = "relu", output_bias: float = INITIAL_BIAS,
               **kwargs):
    super().__init__(3, hidden_units, activation, output_bias, **kwargs)

  def call(self, user, behaviour, trigger):
    summed = (self.project(0, user)[:, tf.newaxis, :] +
              self.project(1, behaviour) + self.project(2, trigger))
    return self.finish(summed)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class SimilarityNet(_FactorisedMLP):
  """Eq. 9: s_ji = MLP(CAT(E(x_j), E(c_ji), E(x_i))).

  `call(trigger [..., d_i], cooccurrence [..., d_c], target [..., d_i])`
  -> `[...]` with the three leading shapes broadcast: e.g. trigger
  `[B, 1, n, d]`, co-occurrence `[B, C, n, d_c]`, target `[B, C, 1, d]`
  -> `[B, C, n]` (every candidate against every trigger), or all three
  `[P, d]` -> `[P]` (item pairs, for the I2I index of Sec. 5.2).
  """

  def __init__(self, hidden_units: Sequence[int] = (64, 32),
               activation: str = "relu", output_bias: float = INITIAL_BIAS,
               **kwargs):
    super().__init__(3, hidden_units, activation, output_bias, **kwargs)

  def call(self, trigger, cooccurrence, target):
    summed = (self.project(0, trigger) + self.project(1, cooccurrence) +
              self.project(2, target))
    return self.finish(summed)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class DirectNet(keras.layers.Layer):
  """Eq. 11: d_ui = p_u q_iᵀ with p_u = MLP(E(z_u)), q_i = MLP(E(x_i)),
  LeakyReLU hidden layers (Sec. 4.4).

  `call(user [B, d_u], items [B, C, d_i])` -> `[B, C]`;
  `user_vector` / `item_vector` give p_u `[B, k]` / q_i `[..., k]` (static
  representations, Sec. 5.1: computed offline for serving).
  """

  def __init__(self, hidden_units: Sequence[int] = (64,), output_dim: int = 32,
               **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = [int(u) for u in hidden_units]
    self.output_dim = int(output_dim)

    def tower(name):
      layers = [keras.layers.Dense(u, activation=tf.nn.leaky_relu,
                                   name=f"{name}_hidden_{i}")
                for i, u in enumerate(self.hidden_units)]
      return layers + [keras.layers.Dense(self.output_dim,
                                          name=f"{name}_output")]

    self.user_tower = tower("user")
    self.item_tower = tower("item")

  @staticmethod
  def _apply(layers, x):
    for layer in layers:
      x = layer(x)
    return x

  def user_vector(self, user):
    return self._apply(self.user_tower, user)

  def item_vector(self, items):
    return self._apply(self.item_tower, items)

  def call(self, user, items):
    return tf.einsum("bk,bck->bc", self.user_vector(user),
                     self.item_vector(items))

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_units": self.hidden_units,
                   "output_dim": self.output_dim})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class BiasNet(keras.layers.Layer):
  """Sec. 4.5: a shallow tower over embedded selection-bias features
  (position, hour, ...) -> the bias logit y_bias `[B]`. It is added to the
  score in training (Eq. 12) and removed at serving (never part of the
  servable)."""

  def __init__(self, hidden_units: Sequence[int] = (16,),
               output_bias: float = INITIAL_BIAS, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = [int(u) for u in hidden_units]
    self.output_bias = float(output_bias)
    self.hidden = [keras.layers.Dense(u, activation="relu",
                                      name=f"hidden_{i}")
                   for i, u in enumerate(self.hidden_units)]
    self.output_layer = keras.layers.Dense(
        1, bias_initializer=keras.initializers.Constant(self.output_bias),
        name="output")

  def call(self, features):
    x = features
    for layer in self.hidden:
      x = layer(x)
    return tf.squeeze(self.output_layer(x), axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_units": self.hidden_units,
                   "output_bias": self.output_bias})
    return config


def log2_bucket(values, num_buckets: int):
  """floor(log2(1 + max(v, 0))) clipped to `[0, num_buckets - 1]` (int32):
  the discretisation of count-like fields (Sec. 4.2)."""
  values = tf.maximum(tf.cast(values, tf.float32), 0.0)
  bucket = tf.floor(tf.math.log(1.0 + values) / tf.math.log(2.0))
  return tf.cast(tf.minimum(bucket, float(num_buckets - 1)), tf.int32)

