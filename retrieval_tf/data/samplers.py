"""Negative samplers and the logQ correction of in-batch negatives.

Samplers are small, stateless objects: `sample(shape, seed)` draws int32 item
ids with `tf.random.stateless_*` ops (the same seed gives the same ids, on any
device), `log_prob(ids)` is the log sampling probability of ids, as needed by
the sampled-softmax logQ correction (Yi et al., RecSys'19). Both are plain TF
ops, so they run inside `tf.function` and `Dataset.map`. Their tables are kept
as NumPy arrays and become graph constants where the methods are traced.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, check_index_range


class NegativeSampler(Protocol):
  """What `training_dataset(negatives=(sampler, n))` needs of a sampler."""

  num_items: int

  def sample(self, shape, seed) -> tf.Tensor:
    ...

  def log_prob(self, ids) -> tf.Tensor:
    ...


def as_seed(seed) -> tf.Tensor:
  """A stateless-RNG seed: an int becomes `[seed, 0]`; a `[2]` integer
  tensor is kept. Returns int64 `[2]`."""
  seed = tf.cast(seed, tf.int64)
  if seed.shape.rank == 0:
    return tf.stack([seed, tf.zeros([], tf.int64)])
  return seed


class UniformSampler:
  """Items drawn uniformly from `[0, num_items)`."""

  def __init__(self, num_items: int):
    if num_items < 1:
      raise ValueError(f"UniformSampler needs num_items >= 1, got "
                       f"{num_items}")
    self.num_items = int(num_items)

  def sample(self, shape, seed) -> tf.Tensor:
    """int32 ids of the given shape; `seed` is an int or `[2]` tensor."""
    return tf.random.stateless_uniform(shape, as_seed(seed), minval=0,
                                       maxval=self.num_items, dtype=tf.int32)

  def log_prob(self, ids) -> tf.Tensor:
    """float32 `log(1 / num_items)`, shaped like `ids`."""
    return tf.fill(tf.shape(ids), tf.constant(-math.log(self.num_items),
                                              tf.float32))


class PopularitySampler:
  """Items drawn with probability proportional to `count ** beta`.

  Sampling inverts the cumulative distribution (`tf.searchsorted`, float64):
  O(log N) per draw, so it suits million-item catalogues. `beta=0.75` is the
  word2vec unigram smoothing; `beta=0` is uniform over items with a non-zero
  count; items with count 0 are never drawn (`log_prob` = -inf).

  Args:
    counts: `[num_items]` non-negative counts (e.g. `item_popularity()`).
    beta: the exponent, >= 0.
  """

  def __init__(self, counts, beta: float = 0.75):
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
      raise ValueError(f"PopularitySampler: counts must be a non-empty 1-D "
                       f"array, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or counts.min() < 0:
      raise ValueError("PopularitySampler: counts must be finite and >= 0")
    if beta < 0:
      raise ValueError(f"PopularitySampler: beta must be >= 0, got {beta}")
    weights = np.where(counts > 0, counts ** beta, 0.0)
    total = weights.sum()
    if total <= 0:
      raise ValueError("PopularitySampler: every count is 0")
    self.num_items = counts.size
    self.beta = float(beta)
    self.probabilities = weights / total
    self._cdf = np.cumsum(weights) / total
    self._cdf[-1] = 1.0
    with np.errstate(divide="ignore"):
      self._log_probs = np.log(self.probabilities).astype(np.float32)

  def sample(self, shape, seed) -> tf.Tensor:
    """int32 ids of the given shape; `seed` is an int or `[2]` tensor."""
    uniform = tf.random.stateless_uniform([tf.reduce_prod(shape)],
                                          as_seed(seed), dtype=tf.float64)
    ids = tf.searchsorted(tf.constant(self._cdf), uniform, side="right",
                          out_type=tf.int32)
    return tf.reshape(ids, shape)

  def log_prob(self, ids) -> tf.Tensor:
    """float32 log sampling probabilities of `ids`."""
    return tf.gather(tf.constant(self._log_probs), ids)


def item_frequencies(interactions: Interactions,
                     num_items: int) -> np.ndarray:
  """float32 `[num_items]`: each item's share of the training events, the
  probability that a uniformly drawn training example has it as positive."""
  if len(interactions) == 0:
    raise DataError("item_frequencies: the interaction log is empty")
  check_index_range(interactions.item, num_items, "item", "item_frequencies")
  counts = np.bincount(interactions.item, minlength=num_items)
  return (counts / len(interactions)).astype(np.float32)


def in_batch_log_q(item_ids, item_probabilities) -> tf.Tensor:
  """The logQ correction of in-batch negatives: float32 `log q` `[B]`.

  With in-batch negatives every positive of the batch is also a candidate,
  sampled as often as it occurs in the training stream, so its sampling
  probability is its frequency (`item_frequencies`). The result is what the
  pipeline puts in `features["item_log_q"]`; `tf.exp` of it is what
  `tfrs.tasks.Retrieval()(..., candidate_sampling_probability=...)` expects
  (TFRS subtracts its log from the logits).

  Args:
    item_ids: `[B]` int ids of the batch's positive items.
    item_probabilities: `[num_items]` float probabilities.
  """
  return tf.math.log(tf.gather(tf.cast(item_probabilities, tf.float32),
                               item_ids))
