"""Poeem's embedding indexing layer (Zhang et al., SIGIR'21, Sec. 2.2-2.3).

The full quantization function (Eq. 6)

    T(x) = R^T rho(psi(x'), phi(x' - v_psi(x'))),   x' = R x,

is composed of a rotation R (`GivensRotation`), a coarse quantizer psi
(`CoarseQuantizer`, Eq. 2), a product quantizer phi on the residual
(`ProductQuantizer`, Eq. 3-5) and the decoder rho (the sum of the chosen
coarse centroid and the concatenated PQ codewords). `EmbeddingIndexLayer`
wires them, emits the straight-through estimate H(x) = x - sg(x - T(x))
(Eq. 7) and adds the distortion loss sum ||T(x) - sg(x)||^2 (Sec. 2.3.1).
Vectors are rows here, so x' = R x is written `x @ R^T`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.quantization import nearest_centroids

_PACKAGE = "poeem_tf"
CENTROID_UPDATES = ("ema", "gradient")


@keras.utils.register_keras_serializable(package=_PACKAGE)
class GivensRotation(keras.layers.Layer):
  """x' = R x with R orthonormal (Eq. 6), learned as a product of Givens
  rotations by steepest block coordinate descent (Sec. 2.3.3).

  R starts at the identity and is left alone by the optimizer (it is not a
  trainable weight). `apply_gradient(dL/dR, learning_rate)` takes one step:
  for a rotation by angle t in the plane (i, j), R <- G_ij(t) R, the
  derivative dL/dt at t = 0 is A_ij with A = G R^T - R G^T (G = dL/dR). The
  steepest block is a set of d/2 disjoint planes picked greedily by |A_ij|;
  each is rotated by t_ij = -learning_rate * A_ij, and the product of these
  Givens rotations (orthonormal by construction) multiplies R. One
  Newton-Schulz step, R <- R (3I - R^T R) / 2, then removes float32 drift,
  so R stays orthonormal to ~1e-6 after any number of steps.

  `call(x) = x R^T` (rotate), `inverse(y) = y R` (rotate back).
  """

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    if dim < 2:
      raise ValueError(f"GivensRotation needs dim >= 2, got {dim}")
    self.dim = int(dim)
    self.rotation = self.add_weight(
        name="rotation", shape=(self.dim, self.dim),
        initializer=keras.initializers.Identity(), trainable=False,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def call(self, inputs):
    return tf.matmul(inputs, self.rotation, transpose_b=True)

  def inverse(self, rotated):
    return tf.matmul(rotated, self.rotation)

  def apply_gradient(self, gradient, learning_rate) -> None:
    """One steepest block coordinate descent step from `dL/dR`."""
    rotation = tf.convert_to_tensor(self.rotation)
    product = tf.matmul(gradient, rotation, transpose_b=True)
    skew = product - tf.transpose(product)
    rows, cols = _disjoint_planes(skew, self.dim // 2)
    angles = -learning_rate * tf.gather_nd(
        skew, tf.stack([rows, cols], axis=1))
    cos, sin = tf.cos(angles), tf.sin(angles)
    givens = tf.tensor_scatter_nd_update(
        tf.eye(self.dim),
        tf.concat([tf.stack([rows, rows], 1), tf.stack([cols, cols], 1),
                   tf.stack([rows, cols], 1), tf.stack([cols, rows], 1)], 0),
        tf.concat([cos, cos, sin, -sin], 0))
    rotated = tf.matmul(givens, rotation)
    gram = tf.matmul(rotated, rotated, transpose_a=True)
    self.rotation.assign(
        0.5 * tf.matmul(rotated, 3.0 * tf.eye(self.dim) - gram))

  def get_config(self):
    return dict(super().get_config(), dim=self.dim)


def _disjoint_planes(skew, count: int):
  """Greedy maximum-|A_ij| matching: `count` planes (i < j) sharing no
  axis."""
  dim = tf.shape(skew)[0]
  ones = tf.ones_like(skew)
  upper = (tf.linalg.band_part(ones, 0, -1) -
           tf.linalg.band_part(ones, 0, 0)) > 0          # i < j only
  scores = tf.abs(skew)
  free = tf.ones([dim], tf.bool)
  rows = tf.TensorArray(tf.int32, size=count)
  cols = tf.TensorArray(tf.int32, size=count)

  def pick(step, free, rows, cols):
    allowed = tf.logical_and(
        upper, tf.logical_and(free[:, tf.newaxis], free[tf.newaxis, :]))
    masked = tf.where(allowed, scores, -1.0)
    flat = tf.argmax(tf.reshape(masked, [-1]), output_type=tf.int32)
    i, j = flat // dim, flat % dim
    free = tf.tensor_scatter_nd_update(free, [[i], [j]], [False, False])
    return step + 1, free, rows.write(step, i), cols.write(step, j)

  _, _, rows, cols = tf.while_loop(lambda step, *_: step < count, pick,
                                   (0, free, rows, cols))
  return rows.stack(), cols.stack()


@keras.utils.register_keras_serializable(package=_PACKAGE)
class CoarseQuantizer(keras.layers.Layer):
  """psi(x) = argmin_k dist(x, v_k) over J centroids (Eq. 2).

  `call(x) -> (codes [B] int32, v_codes [B, d])`; the residual is
  `x - v_codes`. Centroids are trainable weights: the distortion loss moves
  them toward the mean of their members.
  """

  def __init__(self, num_centroids: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    if num_centroids < 1 or dim < 1:
      raise ValueError(f"CoarseQuantizer needs num_centroids >= 1 and "
                       f"dim >= 1, got {num_centroids} and {dim}")
    self.num_centroids, self.dim = int(num_centroids), int(dim)
    self.centroids = self.add_weight(
        name="centroids", shape=(self.num_centroids, self.dim),
        initializer=keras.initializers.RandomNormal(
            stddev=1.0 / np.sqrt(self.dim)),
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def call(self, inputs):
    codes, _ = nearest_centroids(tf.stop_gradient(inputs), self.centroids)
    return codes, tf.gather(self.centroids, codes)

  def get_config(self):
    return dict(super().get_config(), num_centroids=self.num_centroids,
                dim=self.dim)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class ProductQuantizer(keras.layers.Layer):
  """phi(y) = [c^1, ..., c^D], c^j = argmin_k dist(y^j, v^j_k) (Eq. 3-5),
  each sub-vector y^j of d / D dimensions quantized by its own K codewords.

  `call(y) -> (codes [B, D] int32, quantized [B, d])` where `quantized` is
  the concatenation of the chosen codewords.
  """

  def __init__(self, num_subspaces: int, num_codewords: int, dim: int,
               **kwargs):
    super().__init__(**kwargs)
    if num_subspaces < 1 or dim % num_subspaces:
      raise ValueError(f"ProductQuantizer: the embedding size d={dim} must be"
                       f" divisible by D={num_subspaces}")
    if num_codewords < 1:
      raise ValueError(f"ProductQuantizer needs K >= 1, got {num_codewords}")
    self.num_subspaces, self.num_codewords = int(num_subspaces), int(
        num_codewords)
    self.dim = int(dim)
    self.codebooks = self.add_weight(
        name="codebooks",
        shape=(self.num_subspaces, self.num_codewords,
               self.dim // self.num_subspaces),
        initializer=keras.initializers.RandomNormal(
            stddev=1.0 / np.sqrt(self.dim)),
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def call(self, inputs):
    parts = tf.transpose(tf.reshape(
        inputs, [-1, self.num_subspaces, self.dim // self.num_subspaces]),
                         [1, 0, 2])                      # [D, B, d/D]
    codes, _ = nearest_centroids(tf.stop_gradient(parts),
                                 self.codebooks)               # [D, B]
    chosen = tf.gather(self.codebooks, codes, batch_dims=1)    # [D, B, d/D]
    quantized = tf.reshape(tf.transpose(chosen, [1, 0, 2]), [-1, self.dim])
    return tf.transpose(codes), quantized

  def get_config(self):
    return dict(super().get_config(), num_subspaces=self.num_subspaces,
                num_codewords=self.num_codewords, dim=self.dim)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class EmbeddingIndexLayer(keras.layers.Layer):
  """The indexing layer: T(x) (Eq. 6), the straight-through output
  H(x) = x - sg(x - T(x)) (Eq. 7) and the distortion loss
  `distortion_weight * mean_x ||T(x) - sg(x)||^2` via `add_loss`.

  Until `enable()` (cold start: at construction; warm start: after the
  k-means initialisation of `WarmStart`) the layer passes x through and adds
  no loss, so a model can train without the index first (Sec. 2.3.2).

  How the centroids reach "the mean of their members" (Sec. 2.3.1):
  `centroid_update="gradient"` lets the model's optimizer step them along
  the distortion loss, as in the paper; `"ema"` (the default) moves each
  coarse centroid and codeword to an exponential moving average (decay
  `ema_decay`) of its members in the training batches, the same fixed point
  reached without the optimizer, and the distortion loss then only trains
  the rotation. Why the default differs: with Adagrad, whose steps do not
  shrink with the gradient, the centroids of small cells jump away from
  their members and die; on ML-1M the share of coarse centroids in use fell
  from 100 % after the warm start to 50-72 % (see the package README).

  Args:
    dim: embedding size d.
    num_centroids: J coarse centroids.
    num_subspaces: D PQ sub-spaces (must divide d).
    num_codewords: K codewords per sub-space.
    rotation: learn a Givens rotation R (off: R = I, "Poeem-nr").
    distortion_weight: weight of the distortion loss.
    enabled: quantize from the start (cold start).
    centroid_update: "ema" or "gradient" (see above).
    ema_decay: decay of the moving averages.
    num_items: when set, the layer remembers the codes of the items it
      quantizes in training (`call(..., item_ids=...)`), so that the index
      of a trained model is the codes it already holds (Sec. 3.4):
      `item_codes()` returns them, -1 for items not quantized since the
      layer was last enabled.
  """

  def __init__(self, dim: int, num_centroids: int, num_subspaces: int,
               num_codewords: int, rotation: bool = True,
               distortion_weight: float = 1.0, enabled: bool = True,
               centroid_update: str = "ema", ema_decay: float = 0.99,
               num_items: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    if centroid_update not in CENTROID_UPDATES:
      raise ValueError(f"centroid_update must be one of {CENTROID_UPDATES}, "
                       f"got {centroid_update!r}")
    if not 0.0 < ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    self.dim = int(dim)
    self.use_rotation = bool(rotation)
    self.distortion_weight = float(distortion_weight)
    self.centroid_update, self.ema_decay = centroid_update, float(ema_decay)
    by_gradient = centroid_update == "gradient"
    self.rotation = GivensRotation(dim, name="rotation") if rotation else None
    self.coarse = CoarseQuantizer(num_centroids, dim, name="coarse",
                                  trainable=by_gradient)
    self.product = ProductQuantizer(num_subspaces, num_codewords, dim,
                                    name="product", trainable=by_gradient)

    def state(name, shape, value=0.0):
      return self.add_weight(
          name=name, shape=shape, trainable=False,
          initializer=keras.initializers.Constant(value),
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    self.enabled = state("enabled", (), float(enabled))
    if num_items is not None and num_items < 1:
      raise ValueError(f"num_items must be >= 1, got {num_items}")
    self.num_items = None if num_items is None else int(num_items)
    if self.num_items:
      # Codes as one int32 row per item: [coarse, pq_1 .. pq_D].
      self.stored_codes = self.add_weight(
          name="stored_codes", shape=(self.num_items, 1 + num_subspaces),
          dtype=tf.int32, trainable=False,
          initializer=keras.initializers.Constant(-1),
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    if not by_gradient:
      sub_dim = dim // num_subspaces
      self.coarse_counts = state("coarse_counts", (num_centroids,), 1.0)
      self.coarse_sums = state("coarse_sums", (num_centroids, dim))
      self.codeword_counts = state("codeword_counts",
                                   (num_subspaces, num_codewords), 1.0)
      self.codeword_sums = state(
          "codeword_sums", (num_subspaces, num_codewords, sub_dim))

  def reset_averages(self) -> None:
    """Restarts the moving averages from the current centroids (after they
    were set, e.g. by the warm start's k-means)."""
    if self.centroid_update == "ema":
      self.coarse_counts.assign(tf.ones_like(self.coarse_counts))
      self.coarse_sums.assign(self.coarse.centroids)
      self.codeword_counts.assign(tf.ones_like(self.codeword_counts))
      self.codeword_sums.assign(self.product.codebooks)

  def _update_averages(self, codes: Dict[str, tf.Tensor]) -> None:
    """One EMA step of every centroid toward its members in this batch
    (summed over replicas)."""
    rotated = tf.stop_gradient(codes["rotated"])
    coarse_codes, pq_codes = codes["coarse_codes"], codes["pq_codes"]
    num_centroids = self.coarse.num_centroids
    subspaces = self.product.num_subspaces
    codewords = self.product.num_codewords
    residual = rotated - tf.gather(self.coarse.centroids, coarse_codes)
    slots = tf.reshape(pq_codes + tf.range(subspaces) * codewords, [-1])
    parts = tf.reshape(residual, [-1, self.dim // subspaces])
    stats = [
        tf.math.unsorted_segment_sum(tf.ones_like(coarse_codes, tf.float32),
                                     coarse_codes, num_centroids),
        tf.math.unsorted_segment_sum(rotated, coarse_codes, num_centroids),
        tf.math.unsorted_segment_sum(tf.ones_like(slots, tf.float32), slots,
                                     subspaces * codewords),
        tf.math.unsorted_segment_sum(parts, slots, subspaces * codewords)]
    context = tf.distribute.get_replica_context()
    if context is not None:
      stats = context.all_reduce(tf.distribute.ReduceOp.SUM, stats)
    rate = (1.0 - self.ema_decay) * self.enabled
    targets = [self.coarse_counts, self.coarse_sums, self.codeword_counts,
               self.codeword_sums]
    for variable, batch in zip(targets, stats):
      variable.assign(variable * (1.0 - rate) +
                      rate * tf.reshape(batch, variable.shape))
    self.coarse.centroids.assign(
        self.coarse_sums / self.coarse_counts[:, tf.newaxis])
    self.product.codebooks.assign(
        self.codeword_sums / self.codeword_counts[..., tf.newaxis])

  def enable(self) -> None:
    """Quantize from now on; remembered codes (of other centroids) are
    forgotten."""
    self.enabled.assign(1.0)
    if self.num_items:
      self.stored_codes.assign(tf.fill(tf.shape(self.stored_codes), -1))

  def _remember_codes(self, item_ids, codes: Dict[str, tf.Tensor]) -> None:
    """Writes the batch's codes into `stored_codes` (rows of all replicas:
    the first replica's update is applied everywhere)."""
    ids = tf.reshape(tf.cast(item_ids, tf.int32), [-1])
    rows = tf.concat([codes["coarse_codes"][:, tf.newaxis],
                      codes["pq_codes"]], axis=1)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      ids, rows = context.all_gather([ids, rows], axis=0)
    in_range = tf.debugging.assert_less(
        ids, self.num_items, message="Poeem: an item id exceeds the "
        "layer's num_items")
    with tf.control_dependencies([in_range]):
      self.stored_codes.scatter_update(tf.IndexedSlices(rows, ids))

  def item_codes(self) -> Tuple[np.ndarray, np.ndarray]:
    """The remembered `(coarse [V], pq [V, D])` codes; -1 marks items not
    quantized in training since the layer was enabled."""
    if not self.num_items:
      raise ValueError("this EmbeddingIndexLayer keeps no codes: build it "
                       "with num_items")
    stored = self.stored_codes.numpy()
    return stored[:, 0], stored[:, 1:]

  def encode(self, inputs) -> Dict[str, tf.Tensor]:
    """Everything the quantization computes: `rotated` x', `coarse_codes`
    [B], `pq_codes` [B, D] and `quantized` T(x) [B, d]."""
    rotated = inputs if self.rotation is None else self.rotation(inputs)
    coarse_codes, centroids = self.coarse(rotated)
    pq_codes, residual = self.product(rotated - centroids)
    decoded = centroids + residual                       # rho(...)
    quantized = decoded if self.rotation is None else \
        self.rotation.inverse(decoded)
    return {"rotated": rotated, "coarse_codes": coarse_codes,
            "pq_codes": pq_codes, "quantized": quantized}

  def call(self, inputs, training=None, item_ids=None):
    """H(x) of `inputs [B, d]`; in training, `item_ids [B]` (optional) are
    the items whose codes the layer remembers (see `num_items`)."""
    inputs = tf.convert_to_tensor(inputs)
    codes = self.encode(inputs)
    quantized = codes["quantized"]
    if training and item_ids is not None and self.num_items:
      self._remember_codes(item_ids, codes)
    if training and self.centroid_update == "ema":
      self._update_averages(codes)
    distortion = tf.reduce_mean(tf.reduce_sum(
        tf.square(quantized - tf.stop_gradient(inputs)), axis=-1))
    tf.debugging.assert_all_finite(
        distortion, "Poeem: the quantization distortion is NaN or infinite "
        "(embeddings or centroids diverged)")
    self.add_loss(self.enabled * self.distortion_weight * distortion)
    straight_through = inputs - tf.stop_gradient(inputs - quantized)
    return self.enabled * straight_through + (1.0 - self.enabled) * inputs

  def get_config(self):
    return dict(super().get_config(), dim=self.dim,
                num_centroids=self.coarse.num_centroids,
                num_subspaces=self.product.num_subspaces,
                num_codewords=self.product.num_codewords,
                rotation=self.use_rotation,
                distortion_weight=self.distortion_weight,
                enabled=bool(self.enabled.numpy()),
                centroid_update=self.centroid_update,
                ema_decay=self.ema_decay, num_items=self.num_items)


def encode_catalogue(layer: EmbeddingIndexLayer, vectors: np.ndarray,
                     batch_size: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
  """The coarse codes `[N]` and PQ codes `[N, D]` of many vectors, encoded in
  batches of `batch_size` so memory stays bounded."""
  @tf.function(reduce_retracing=True)
  def encode(batch):   # only the codes: T(x) is pruned from the graph
    codes = layer.encode(batch)
    return codes["coarse_codes"], codes["pq_codes"]

  coarse, pq = [], []
  for begin in range(0, len(vectors), batch_size):
    coarse_codes, pq_codes = encode(
        tf.constant(vectors[begin:begin + batch_size], tf.float32))
    coarse.append(coarse_codes.numpy())
    pq.append(pq_codes.numpy())
  return np.concatenate(coarse), np.concatenate(pq)
