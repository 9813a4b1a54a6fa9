"""Small Keras layers shared by the towers of every package.

Conventions: categorical ids are int32 indices into a vocabulary of size `n`,
with `-1` (or any negative value) meaning "padding / absent"; multi-valued
features are `[batch, L]` padded with -1.
"""

from __future__ import annotations

from typing import Optional, Sequence

from retrieval_tf.compat import keras, tf


@keras.utils.register_keras_serializable(package="retrieval_tf")
class MaskedMeanEmbedding(keras.layers.Layer):
  """Embeds ids and mean-pools them over the last axis, ignoring padding.

  Input `[batch]` or `[batch, L]` int ids, negative = padding; output
  `[batch, dim]`. A row of only padding embeds to the zero vector. An optional
  explicit boolean `mask` `[batch, L]` is combined with the id >= 0 test.
  Ids >= `input_dim` raise `InvalidArgumentError` in the gather (never wrap).

  Args:
    input_dim: vocabulary size n.
    output_dim: embedding size.
    embeddings: optionally an existing `keras.layers.Embedding` of size
      `input_dim` to share (e.g. item ids in the history and the item tower).
  """

  def __init__(self, input_dim: int, output_dim: int,
               embeddings_regularizer=None, embeddings: Optional[
                   keras.layers.Embedding] = None, **kwargs):
    super().__init__(**kwargs)
    if input_dim < 1 or output_dim < 1:
      raise ValueError(
          f"MaskedMeanEmbedding needs input_dim >= 1 and output_dim >= 1, got "
          f"{input_dim} and {output_dim}")
    self.input_dim = int(input_dim)
    self.output_dim = int(output_dim)
    self.embeddings_regularizer = keras.regularizers.get(
        embeddings_regularizer)
    self.embedding = embeddings or keras.layers.Embedding(
        self.input_dim, self.output_dim,
        embeddings_regularizer=self.embeddings_regularizer,
        name="embedding")

  def call(self, ids, mask=None):
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank == 1:
      ids = ids[:, tf.newaxis]
    vectors, valid = masked_lookup(self.embedding, ids, self.input_dim,
                                   mask, what=f"{self.name}: id")
    return masked_mean(vectors, valid)

  def get_config(self):
    config = super().get_config()
    config.update({
        "input_dim": self.input_dim,
        "output_dim": self.output_dim,
        "embeddings_regularizer": keras.regularizers.serialize(
            self.embeddings_regularizer),
    })
    return config


@keras.utils.register_keras_serializable(package="retrieval_tf")
class MLP(keras.layers.Layer):
  """Dense ReLU layers then a linear projection, optionally L2-normalised.

  Args:
    hidden_units: sizes of the ReLU layers (may be empty).
    output_dim: size of the final linear layer.
    normalize: L2-normalise the output (cosine-similarity towers).
    dropout: dropout rate after each hidden layer.
  """

  def __init__(self, hidden_units: Sequence[int], output_dim: int,
               normalize: bool = False, dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = [int(u) for u in hidden_units]
    self.output_dim = int(output_dim)
    self.normalize = bool(normalize)
    self.dropout = float(dropout)
    self.blocks = []
    for i, units in enumerate(self.hidden_units):
      self.blocks.append(keras.layers.Dense(units, activation="relu",
                                            name=f"hidden_{i}"))
      if self.dropout:
        self.blocks.append(keras.layers.Dropout(self.dropout))
    self.blocks.append(keras.layers.Dense(self.output_dim, name="output"))

  def call(self, inputs, training=None):
    x = inputs
    for block in self.blocks:
      x = block(x, training=training)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    return x

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_units": self.hidden_units,
                   "output_dim": self.output_dim,
                   "normalize": self.normalize, "dropout": self.dropout})
    return config


def masked_lookup(embedding, ids, vocabulary_size: int, mask=None,
                  what: str = "id"):
  """`(embedding(ids), valid)` for int `ids` where negative means padding.

  `valid` is `ids >= 0` (and `mask`, when given); padded positions look up
  row 0, so callers must mask them (`masked_mean`, an RNN's `mask=`). An id
  >= `vocabulary_size` raises `InvalidArgumentError` ("`what` >= vocabulary
  size n") instead of wrapping or reading another row.
  """
  ids = tf.convert_to_tensor(ids)
  valid = ids >= 0
  if mask is not None:
    valid = tf.logical_and(valid, tf.cast(mask, tf.bool))
  tf.debugging.assert_less(
      ids, tf.cast(vocabulary_size, ids.dtype),
      message=f"{what} >= vocabulary size {vocabulary_size}")
  return embedding(tf.where(valid, ids, tf.zeros_like(ids))), valid


def masked_mean(vectors, mask):
  """Mean of `vectors [B, L, d]` over L where `mask [B, L]`; zeros if none."""
  weights = tf.cast(mask, vectors.dtype)[..., tf.newaxis]
  return tf.math.divide_no_nan(tf.reduce_sum(vectors * weights, axis=-2),
                               tf.reduce_sum(weights, axis=-2))
