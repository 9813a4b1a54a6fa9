"""Warm start (Sec. 2.3.2), centroid utilisation (Sec. 3.3) and the health
checks of Poeem's indexing layer, as Keras callbacks around `model.fit`.

`PoeemModel.fit` adds `WarmStart` (when the model's `warm_start_steps` > 0
and none is given) and `IndexHealth` by itself; pass them explicitly for
another schedule or catalogue."""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf import quantization
from retrieval_tf.compat import keras, tf

from poeem_tf.layers import EmbeddingIndexLayer, encode_catalogue

# k-means of the warm start runs on at most this many item embeddings per
# centroid (Faiss' default), sampled from the catalogue.
_POINTS_PER_CENTROID = 256


def initialise_from_embeddings(layer: EmbeddingIndexLayer,
                               embeddings: np.ndarray, seed: int = 0,
                               iterations: int = 10) -> None:
  """k-means initialisation of the coarse centroids and, on the residuals,
  of the PQ codebooks, in the layer's (current) rotated space; then
  enables the layer."""
  embeddings = np.asarray(embeddings, np.float32)
  if not np.isfinite(embeddings).all():
    raise FloatingPointError("Poeem warm start: the item embeddings contain "
                             "NaN or infinite values")
  rotated = embeddings if layer.rotation is None else \
      layer.rotation(embeddings).numpy()
  book = quantization.train_ivfpq(
      rotated, layer.coarse.num_centroids, layer.product.num_subspaces,
      layer.product.num_codewords, iterations=iterations,
      max_points_per_centroid=_POINTS_PER_CENTROID, seed=seed,
      # The layer assigns items to the nearest centroid (Eq. 2); seeding
      # and stopping as in the runs behind docs/poeem.md.
      assign_by="l2", product_init="auto", tolerance=1e-3)
  layer.coarse.centroids.assign(book.centroids)
  layer.product.codebooks.assign(book.codebooks)
  layer.reset_averages()
  layer.enable()


class WarmStart(keras.callbacks.Callback):
  """Trains without the index layer for `steps` steps, then embeds the
  catalogue with the item tower, initialises the quantizers by k-means and
  plugs the layer in (Sec. 2.3.2). A `fit` shorter than `steps` runs the
  initialisation when it ends, so the layer is never left untrained. A
  resumed run whose layer is already enabled does nothing.

  Args:
    steps: warm-start steps (global optimizer steps).
    item_embeddings: returns the current raw item embeddings `[N, d]`.
    seed: k-means seed.
  """

  def __init__(self, steps: int, item_embeddings: Callable[[], np.ndarray],
               seed: int = 0):
    super().__init__()
    if steps < 1:
      raise ValueError(f"WarmStart needs steps >= 1, got {steps}")
    self.steps, self.item_embeddings, self.seed = int(steps), \
        item_embeddings, int(seed)
    self.done = None

  def on_train_begin(self, logs=None):
    self.done = None

  def on_train_batch_end(self, batch, logs=None):
    if self.done is None:
      # Read once, after the first step: by then BackupAndRestore has
      # restored a resumed run, whose layer may already be enabled.
      self.done = bool(float(self.model.index_layer.enabled.numpy()))
    if self.done or \
        int(self.model.optimizer.iterations.numpy()) < self.steps:
      return
    initialise_from_embeddings(self.model.index_layer, self.item_embeddings(),
                               self.seed)
    self.done = True

  def on_train_end(self, logs=None):
    if self.done or float(self.model.index_layer.enabled.numpy()):
      return
    logging.info("Poeem warm start: fit ended after %d of %d warm-start "
                 "steps; initialising the index layer now",
                 int(self.model.optimizer.iterations.numpy()), self.steps)
    initialise_from_embeddings(self.model.index_layer, self.item_embeddings(),
                               self.seed)
    self.done = True


def code_usage(coarse_codes: np.ndarray, pq_codes: np.ndarray,
               num_centroids: int, num_codewords: int) -> Dict[str, float]:
  """How a catalogue's codes use the quantizers: share of coarse centroids
  and of codewords (mean over sub-spaces) with at least one item, and the
  entropy of the coarse assignment normalised by log J (1 = uniform)."""
  counts = np.bincount(coarse_codes, minlength=num_centroids)
  share = counts[counts > 0] / len(coarse_codes)
  entropy = float(-(share * np.log(share)).sum())
  return {
      "coarse_used": float((counts > 0).mean()),
      "codewords_used": float(np.mean(
          [len(np.unique(pq_codes[:, m])) / num_codewords
           for m in range(pq_codes.shape[1])])),
      "coarse_entropy": entropy / math.log(num_centroids)
      if num_centroids > 1 else 1.0,
  }


def utilisation(layer: EmbeddingIndexLayer,
                embeddings: np.ndarray) -> Dict[str, float]:
  """`code_usage` of `embeddings` encoded by the layer's quantizers."""
  return code_usage(*encode_catalogue(layer, embeddings),
                    layer.coarse.num_centroids, layer.product.num_codewords)


class UtilisationLogger(keras.callbacks.Callback):
  """Logs `utilisation` of the catalogue to TensorBoard after each epoch
  (under `log_dir/utilisation`) and keeps the last values."""

  def __init__(self, item_embeddings: Callable[[], np.ndarray],
               log_dir: Optional[str]):
    super().__init__()
    self.item_embeddings = item_embeddings
    self.writer = tf.summary.create_file_writer(
        os.path.join(log_dir, "utilisation")) if log_dir else None
    self.last: Dict[str, float] = {}

  def on_epoch_end(self, epoch, logs=None):
    self.last = utilisation(self.model.index_layer, self.item_embeddings())
    if self.writer is not None:
      with self.writer.as_default():
        for name, value in self.last.items():
          tf.summary.scalar(name, value, step=epoch)
      self.writer.flush()
    if logs is not None:
      logs.update(self.last)


# Below this share of coarse centroids holding an item, the index is
# collapsed (a cold start typically leaves a few lists holding everything).
MIN_COARSE_USED = 0.5
# Above this share of remembered coarse codes differing from the final
# quantizers' (22-25 % after a healthy run, docs/poeem.md), the stored
# codes are stale: the index should be built from fresh codes.
MAX_STALE_CODES = 0.5


def index_health(layer: EmbeddingIndexLayer,
                 usage: Mapping[str, float],
                 min_coarse_used: float = MIN_COARSE_USED) -> List[str]:
  """What is wrong with an index: a layer never enabled (untrained
  centroids) or a coarse utilisation below `min_coarse_used`.

  Args:
    layer: the model's `EmbeddingIndexLayer`.
    usage: `code_usage` / `utilisation` of the catalogue's codes.
    min_coarse_used: the lowest healthy share of non-empty coarse lists.

  Returns:
    One sentence per problem (empty when healthy).
  """
  problems = []
  if not float(layer.enabled.numpy()):
    problems.append("the index layer was never enabled (warm start not "
                    "reached): the codes come from untrained centroids")
  if usage["coarse_used"] < min_coarse_used:
    problems.append(
        f"collapsed index: only {usage['coarse_used']:.0%} of the "
        f"{layer.coarse.num_centroids} coarse centroids hold an item, the "
        "other lists are empty (train with warm_start_steps > 0)")
  return problems


def warn(problems: Sequence[str]) -> None:
  """Prints each problem as a Python warning and logs it
  (`logging.warning`)."""
  for problem in problems:
    message = f"Poeem index: {problem}"
    logging.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


class IndexHealth(keras.callbacks.Callback):
  """At the end of `fit`, encodes the catalogue and warns (`warn`) when the
  index is collapsed or untrained (`index_health`); keeps the utilisation
  and the problems in `usage` / `problems`.

  Args:
    item_embeddings: returns the current raw item embeddings `[N, d]`.
    min_coarse_used: see `index_health`.
  """

  def __init__(self, item_embeddings: Callable[[], np.ndarray],
               min_coarse_used: float = MIN_COARSE_USED):
    super().__init__()
    self.item_embeddings = item_embeddings
    self.min_coarse_used = float(min_coarse_used)
    self.usage: Dict[str, float] = {}
    self.problems: List[str] = []

  def on_train_end(self, logs=None):
    layer = self.model.index_layer
    self.usage = utilisation(layer, self.item_embeddings())
    self.problems = index_health(layer, self.usage, self.min_coarse_used)
    warn(self.problems)
