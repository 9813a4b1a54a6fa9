"""Negative samplers: distributions, log-probabilities, seeds, tf.function;
the in-batch logQ correction."""

import math

import numpy as np
import pytest
import tensorflow_recommenders as tfrs

from retrieval_tf.compat import tf
from retrieval_tf.data import (PopularitySampler, UniformSampler,
                               in_batch_log_q, item_frequencies)
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions

COUNTS = np.array([0, 1, 5, 20, 100, 400, 3, 0, 50, 1000])


def test_popularity_frequencies_follow_count_power_beta():
  n = 200_000
  sampler = PopularitySampler(COUNTS, beta=0.75)
  ids = sampler.sample([n], seed=3).numpy()
  assert ids.dtype == np.int32
  expected = COUNTS ** 0.75 / (COUNTS ** 0.75).sum()
  empirical = np.bincount(ids, minlength=len(COUNTS)) / n
  tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9
  assert np.all(np.abs(empirical - expected) <= tolerance), (empirical,
                                                             expected)
  assert empirical[COUNTS == 0].sum() == 0


def test_popularity_log_prob_normalises():
  sampler = PopularitySampler(COUNTS, beta=0.5)
  log_p = sampler.log_prob(tf.range(len(COUNTS))).numpy()
  assert log_p.dtype == np.float32
  np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-6)
  expected = COUNTS ** 0.5 / (COUNTS ** 0.5).sum()
  np.testing.assert_allclose(np.exp(log_p), expected, rtol=1e-5)
  assert np.isneginf(log_p[COUNTS == 0]).all()
  # beta = 0: uniform over the items that occur.
  flat = PopularitySampler(COUNTS, beta=0.0).probabilities
  np.testing.assert_allclose(flat[COUNTS > 0], 1 / (COUNTS > 0).sum())


def test_uniform_range_and_log_prob():
  sampler = UniformSampler(7)
  ids = sampler.sample([5000, 3], seed=1).numpy()
  assert ids.shape == (5000, 3) and ids.dtype == np.int32
  assert ids.min() == 0 and ids.max() == 6
  counts = np.bincount(ids.ravel(), minlength=7)
  assert counts.min() > 0.8 * ids.size / 7
  log_p = sampler.log_prob(tf.constant([[0, 6]])).numpy()
  np.testing.assert_allclose(log_p, np.full((1, 2), -math.log(7)), rtol=1e-6)


@pytest.mark.parametrize("sampler", [UniformSampler(50),
                                     PopularitySampler(np.arange(50))])
def test_same_seed_same_ids_and_tf_function(sampler):
  a = sampler.sample([4, 8], seed=11).numpy()
  b = sampler.sample([4, 8], seed=tf.constant([11, 0])).numpy()
  c = sampler.sample([4, 8], seed=12).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  traced = tf.function(lambda seed: sampler.sample([4, 8], seed))
  np.testing.assert_array_equal(traced(tf.constant([11, 0], tf.int64)), a)
  dynamic = tf.function(lambda n: sampler.sample(tf.stack([n, 8]), 11))
  np.testing.assert_array_equal(dynamic(tf.constant(4)), a)


def test_sampler_errors():
  with pytest.raises(ValueError, match="num_items"):
    UniformSampler(0)
  with pytest.raises(ValueError, match=">= 0"):
    PopularitySampler([1, -1])
  with pytest.raises(ValueError, match="every count is 0"):
    PopularitySampler([0, 0])
  with pytest.raises(ValueError, match="beta"):
    PopularitySampler([1, 2], beta=-1)
  with pytest.raises(ValueError, match="1-D"):
    PopularitySampler([[1, 2]])


def test_item_frequencies_and_in_batch_log_q():
  log = Interactions([0, 0, 1, 2], [1, 1, 3, 1])
  freq = item_frequencies(log, num_items=5)
  np.testing.assert_allclose(freq, [0, 0.75, 0, 0.25, 0])
  log_q = in_batch_log_q(tf.constant([1, 3]), freq).numpy()
  np.testing.assert_allclose(log_q, np.log([0.75, 0.25]), rtol=1e-6)
  with pytest.raises(DataError, match="outside"):
    item_frequencies(log, num_items=3)
  with pytest.raises(DataError, match="empty"):
    item_frequencies(Interactions([], []), num_items=3)


def test_log_q_is_what_tfrs_retrieval_expects():
  """`exp(item_log_q)` as candidate_sampling_probability subtracts log q
  from every candidate's logit (here: the same as shifting the logits)."""
  rng = np.random.default_rng(0)
  users = tf.constant(rng.normal(size=(4, 3)), tf.float32)
  items = tf.constant(rng.normal(size=(4, 3)), tf.float32)
  freq = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
  log_q = in_batch_log_q(tf.range(4), freq)
  task = tfrs.tasks.Retrieval()
  corrected = task(users, items,
                   candidate_sampling_probability=tf.exp(log_q))
  logits = tf.matmul(users, items, transpose_b=True) - log_q[tf.newaxis, :]
  manual = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(
      tf.eye(4), logits))
  np.testing.assert_allclose(corrected.numpy(), manual.numpy(), rtol=1e-5)
