"""`PoeemModel`: a two-tower retrieval model with Poeem's indexing layer on
the item side (Sec. 2.1-2.3).

The towers are the shared `retrieval_tf` two-tower's, with the user id
dropped (the user tower reads the behaviour history, so held-out users
work). The item tower's L2-normalised output x goes through
`EmbeddingIndexLayer`, whose straight-through output H(x) (Eq. 7) is scored
against the normalised user vector u by the inner product <u, H(x)>:
the cosine of the towers before quantization, and exactly the score the
exported IVF-PQ index computes from the codes afterwards (T(x) is not
re-normalised, so training and serving agree). Losses (Sec. 3.1):

* `hinge` (default): mean over negatives x- of
  max(0, margin - <u, H(x+)> + <u, H(x-)>), margin 0.1, with the batch's
  `negative_ids` (random negatives from a shared sampler) when present, else
  the other items of the batch;
* `softmax`: the two-tower's in-batch sampled softmax
  (`tfrs.tasks.Retrieval`, temperature, logQ correction when the batch
  carries `item_log_q`).

plus the layer's distortion loss. `train_step` steps the Givens rotation by
steepest block coordinate descent from dL/dR and everything else with the
optimizer (Adagrad 0.01 in the paper).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

from retrieval_tf.compat import keras, tf
from retrieval_tf.models.two_tower import TwoTowerModel

from poeem_tf.layers import EmbeddingIndexLayer

LOSSES = ("hinge", "softmax")


@keras.utils.register_keras_serializable(package="poeem_tf")
class PoeemModel(TwoTowerModel):
  """Two-tower + embedding indexing layer.

  Args:
    num_items: item vocabulary size.
    item_features: `{field: vocabulary size}` of categorical item fields.
    embedding_dim, hidden_units, output_dim: tower sizes (d = output_dim).
    num_centroids: J; num_subspaces: D (divides d); num_codewords: K.
    rotation: learn the Givens rotation (False: "Poeem-nr").
    loss: "hinge" (margin `margin`) or "softmax" (`temperature`).
    rotation_learning_rate: step size of the rotation's coordinate descent.
    distortion_weight: weight of the distortion loss.
    quantize_from_start: cold start (True) or wait for `WarmStart` (False).
    centroid_update: "ema" or "gradient" (see `EmbeddingIndexLayer`).
    remember_codes: the index layer keeps the codes of the items it
      quantizes in training, so the index is built from them (Sec. 3.4).
  """

  def __init__(self, num_items: int,
               item_features: Optional[Mapping[str, int]] = None,
               embedding_dim: int = 64, hidden_units: Sequence[int] = (128,),
               output_dim: int = 64, num_centroids: int = 64,
               num_subspaces: int = 16, num_codewords: int = 16,
               rotation: bool = True, loss: str = "hinge",
               margin: float = 0.1, temperature: float = 0.05,
               rotation_learning_rate: float = 0.01,
               distortion_weight: float = 1.0,
               quantize_from_start: bool = True,
               centroid_update: str = "ema", remember_codes: bool = True,
               **kwargs):
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if num_codewords > num_items or num_centroids > num_items:
      raise ValueError(
          f"J={num_centroids} and K={num_codewords} must not exceed the "
          f"number of items ({num_items})")
    super().__init__(num_users=1, num_items=num_items,
                     item_features=item_features,
                     embedding_dim=embedding_dim, hidden_units=hidden_units,
                     output_dim=output_dim, temperature=temperature,
                     use_user_id=False, use_history=True, **kwargs)
    self.loss_name, self.margin = loss, float(margin)
    self.rotation_learning_rate = float(rotation_learning_rate)
    self.index_layer = EmbeddingIndexLayer(
        output_dim, num_centroids, num_subspaces, num_codewords,
        rotation=rotation, distortion_weight=distortion_weight,
        enabled=quantize_from_start, centroid_update=centroid_update,
        num_items=num_items if remember_codes else None,
        name="index_layer")

  def raw_item_embedding(self, features: Dict[str, tf.Tensor],
                         training: bool = False) -> tf.Tensor:
    """x: the item tower before quantization (what offline indexes get)."""
    return super().item_embedding(features, training=training)

  def item_embedding(self, features: Dict[str, tf.Tensor],
                     training: bool = False) -> tf.Tensor:
    """H(x): T(x) forward, identity backward (Eq. 7); in training the
    layer remembers the items' codes."""
    return self.index_layer(self.raw_item_embedding(features, training),
                            training=training,
                            item_ids=features["item_id"] if training
                            else None)

  def compute_loss(self, features, training=False) -> tf.Tensor:
    if self.loss_name == "softmax":
      return super().compute_loss(features, training=training)
    users = self.user_embedding(features, training=training)
    items = self.item_embedding(features, training=training)
    ids = features["item_id"]
    positive = tf.reduce_sum(users * items, axis=-1, keepdims=True)
    if "negative_ids" in features:           # random negatives [B, n]
      negative_ids = tf.cast(features["negative_ids"], ids.dtype)
      negatives = tf.reshape(
          self.item_embedding({"item_id": tf.reshape(negative_ids, [-1])},
                              training=training),
          [tf.shape(negative_ids)[0], tf.shape(negative_ids)[1], -1])
      scores = tf.einsum("bd,bnd->bn", users, negatives)
    else:                                    # the other items of the batch
      negative_ids = tf.broadcast_to(ids[tf.newaxis, :],
                                     [tf.shape(ids)[0], tf.shape(ids)[0]])
      scores = tf.matmul(users, items, transpose_b=True)
    valid = tf.not_equal(negative_ids, ids[:, tf.newaxis])
    hinge = tf.where(valid, tf.nn.relu(self.margin - positive + scores), 0.0)
    return tf.reduce_sum(hinge) / tf.maximum(
        tf.reduce_sum(tf.cast(valid, tf.float32)), 1.0)

  def train_step(self, inputs):
    rotation = self.index_layer.rotation
    with tf.GradientTape() as tape:
      if rotation is not None:
        tape.watch(rotation.rotation)
      loss = self.compute_loss(inputs, training=True)
      regularization = tf.add_n(self.losses) if self.losses else 0.0
      total = loss + regularization
    sources = list(self.trainable_variables)
    if rotation is not None:
      sources.append(rotation.rotation)
    gradients = tape.gradient(total, sources)
    if rotation is not None:
      rotation_gradient = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, tf.convert_to_tensor(gradients.pop()))
      rotation.apply_gradient(rotation_gradient,
                              self.rotation_learning_rate)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return {"loss": loss, "regularization_loss": regularization,
            "total_loss": total}

  def get_config(self):
    config = super().get_config()
    for name in ("num_users", "use_user_id", "use_history", "user_features"):
      config.pop(name)
    layer = self.index_layer
    config.update({
        "num_centroids": layer.coarse.num_centroids,
        "num_subspaces": layer.product.num_subspaces,
        "num_codewords": layer.product.num_codewords,
        "rotation": layer.use_rotation, "loss": self.loss_name,
        "margin": self.margin,
        "rotation_learning_rate": self.rotation_learning_rate,
        "distortion_weight": layer.distortion_weight,
        "centroid_update": layer.centroid_update,
        "remember_codes": layer.num_items is not None,
        "quantize_from_start": bool(layer.enabled.numpy())})
    return config
