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

import weakref
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.models.two_tower import TwoTowerModel

from poeem_tf import callbacks as callbacks_lib
from poeem_tf.layers import EmbeddingIndexLayer

LOSSES = ("hinge", "softmax")

# The traced item tower of each model (weak keys: not tracked by Keras).
_EMBEDDERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@keras.utils.register_keras_serializable(package="poeem_tf")
class PoeemModel(TwoTowerModel):
  """Two-tower + embedding indexing layer (Sec. 2), trained by `fit`.

  Inputs: feature dicts of `poeem_tf.training_dataset`: `history`,
  `history_mask` `[B, L]` (the user tower), `item_id` `[B]` (the positive,
  the item tower), optional `negative_ids` `[B, n]` (hinge negatives) and
  `item_log_q` `[B]` (softmax logQ). Outputs: `model(features)` /
  `user_embedding` the L2-normalised user vectors u `[B, d]`,
  `item_embedding` the straight-through H(x) (Eq. 7), `raw_item_embedding`
  x before quantization, `catalogue_embeddings()` x of every item.

  Warm start is on by default (Sec. 2.3.2, the paper's recommendation):
  `fit` trains the towers alone for `warm_start_steps` steps, then
  initialises the quantizers by k-means over the catalogue and quantizes
  from then on (`callbacks.WarmStart`, added by `fit` itself; a shorter
  `fit` initialises when it ends). `warm_start_steps=0` is the cold start
  (random centroids from the first step), which collapses the index onto a
  few lists; `fit` then warns (`callbacks.IndexHealth`: `logging.warning`
  and `warnings.warn`). `fit` and `evaluate` report `in_batch_hr@k`.

      model = PoeemModel(num_items=1000, num_centroids=16, num_subspaces=8,
                         num_codewords=16)
      model.compile(optimizer=keras.optimizers.Adagrad(0.05))
      model.fit(poeem_tf.training_dataset(log, batch_size=256,
                                          history_length=20,
                                          num_items=1000), epochs=3)
      poeem_tf.evaluate(model, split, dataset, history_length=20)

  Args:
    num_items: item vocabulary size.
    item_features: `{field: vocabulary size}` of categorical item fields
      (the automatic warm start then needs a `WarmStart` callback given to
      `fit` with the catalogue's field values).
    embedding_dim, hidden_units, output_dim: tower sizes (d = output_dim).
    num_centroids: J; num_subspaces: D (divides d); num_codewords: K.
    rotation: learn the Givens rotation (False: "Poeem-nr").
    loss: "hinge" (margin `margin`) or "softmax" (`temperature`).
    rotation_learning_rate: step size of the rotation's coordinate descent.
    distortion_weight: weight of the distortion loss.
    warm_start_steps: optimizer steps before the k-means initialisation
      (0: cold start, quantize from the first step).
    warm_start_seed: seed of the warm start's k-means.
    centroid_update: "ema" or "gradient" (see `EmbeddingIndexLayer`).
    remember_codes: the index layer keeps the codes of the items it
      quantizes in training, so the index is built from them (Sec. 3.4).

  Raises:
    ValueError: an unknown loss, J or K above the number of items, D not
      dividing d, or warm_start_steps < 0.
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
               warm_start_steps: int = 200, warm_start_seed: int = 0,
               centroid_update: str = "ema", remember_codes: bool = True,
               **kwargs):
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if num_codewords > num_items or num_centroids > num_items:
      raise ValueError(
          f"J={num_centroids} and K={num_codewords} must not exceed the "
          f"number of items ({num_items})")
    if warm_start_steps < 0:
      raise ValueError(f"warm_start_steps must be >= 0 (0: cold start), got "
                       f"{warm_start_steps}")
    super().__init__(num_users=1, num_items=num_items,
                     item_features=item_features,
                     embedding_dim=embedding_dim, hidden_units=hidden_units,
                     output_dim=output_dim, temperature=temperature,
                     use_user_id=False, use_history=True, **kwargs)
    self.loss_name, self.margin = loss, float(margin)
    self.rotation_learning_rate = float(rotation_learning_rate)
    self.warm_start_steps = int(warm_start_steps)
    self.warm_start_seed = int(warm_start_seed)
    self.index_layer = EmbeddingIndexLayer(
        output_dim, num_centroids, num_subspaces, num_codewords,
        rotation=rotation, distortion_weight=distortion_weight,
        enabled=self.warm_start_steps == 0, centroid_update=centroid_update,
        num_items=num_items if remember_codes else None,
        name="index_layer")

  def raw_item_embedding(self, features: Dict[str, tf.Tensor],
                         training: bool = False) -> tf.Tensor:
    """x: the item tower before quantization (what offline indexes get)."""
    return super().item_embedding(features, training=training)

  def catalogue_embeddings(self, item_features=None,
                           batch_size: int = 4096) -> np.ndarray:
    """x of every item `[num_items, d]`: the item tower before quantization,
    what the warm start's k-means and the index are built from.

    Args:
      item_features: `{field: array [num_items, ...]}`, the catalogue's
        values of the model's `item_features` (required when it has some).
      batch_size: items per tower call.
    """
    if set(self.item_features) - set(item_features or {}):
      raise ValueError(
          f"catalogue_embeddings needs the catalogue's item_features "
          f"{sorted(self.item_features)}: pass item_features={{field: array "
          f"[num_items]}}")
    embed = _EMBEDDERS.get(self)
    if embed is None:   # one trace per model: the catalogue is embedded often
      embed = _EMBEDDERS[self] = tf.function(
          lambda f: self.raw_item_embedding(f, training=False),
          reduce_retracing=True)
    batches = pipeline.item_dataset(self.num_items, item_features,
                                    batch_size=batch_size)
    return np.concatenate([embed(b).numpy() for b in batches], axis=0)

  def fit(self, *args, callbacks=None, **kwargs):
    """`keras.Model.fit` with Poeem's warm start and index health check:
    adds `WarmStart(warm_start_steps)` when the model warm-starts and
    `callbacks` hold none, and `IndexHealth` (warns about a collapsed or
    untrained index when `fit` ends)."""
    callbacks = list(callbacks or [])
    if self.warm_start_steps and not any(
        isinstance(c, callbacks_lib.WarmStart) for c in callbacks):
      if self.item_features:
        raise ValueError(
            "a PoeemModel with item_features cannot embed its catalogue by "
            "itself: pass callbacks=[poeem_tf.WarmStart(steps, lambda: "
            "model.catalogue_embeddings(item_features))] to fit")
      callbacks.insert(0, callbacks_lib.WarmStart(
          self.warm_start_steps, self.catalogue_embeddings,
          seed=self.warm_start_seed))
    if not self.item_features and not any(
        isinstance(c, callbacks_lib.IndexHealth) for c in callbacks):
      callbacks.append(callbacks_lib.IndexHealth(self.catalogue_embeddings))
    return super().fit(*args, callbacks=callbacks, **kwargs)

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
    self.update_in_batch_hr(users, items, ids)
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
    self._remember_input_spec(inputs)
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
    metrics = {metric.name: metric.result() for metric in self.metrics}
    metrics.update({"loss": loss, "regularization_loss": regularization,
                    "total_loss": total})
    return metrics

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
        "warm_start_steps": self.warm_start_steps,
        "warm_start_seed": self.warm_start_seed})
    return config
