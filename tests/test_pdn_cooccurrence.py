"""retrieval_tf.cooccurrence (PDN's co-occurrence field c_ji) against a
brute-force count, and its vocabulary checks."""

import itertools

import numpy as np
import pytest

from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, Vocabulary


def _log(seed=0, users=30, items=25, events=300):
  rng = np.random.default_rng(seed)
  return Interactions(rng.integers(0, users, events),
                      rng.integers(0, items, events),
                      timestamp=rng.permutation(events))


def _brute_force(log, num_items, window):
  counts = np.zeros((num_items, num_items), np.int64)
  for user, seq in log.sequences().items():
    pairs = set()
    for a, b in itertools.combinations(range(len(seq)), 2):
      if window is None or b - a <= window:
        if seq[a] != seq[b]:
          pairs.add((seq[a], seq[b]))
          pairs.add((seq[b], seq[a]))
    for j, i in pairs:
      counts[j, i] += 1
  return counts


@pytest.mark.parametrize("window", [None, 1, 3])
def test_counts_equal_brute_force(window):
  log = _log()
  table = cooccurrence_counts(log, 25, window=window)
  np.testing.assert_array_equal(table.counts.toarray(),
                                _brute_force(log, 25, window))
  assert (table.counts.toarray() == table.counts.toarray().T).all()
  users_per_item = [len(set(log.user[log.item == i])) for i in range(25)]
  np.testing.assert_array_equal(table.item_counts, users_per_item)


def test_lookup_pairs_and_top_neighbors():
  log = _log(1)
  table = cooccurrence_counts(log, 25)
  dense = table.counts.toarray()
  j = np.array([[0, 1], [2, 3]])
  i = np.array([[4, 5], [6, 7]])
  np.testing.assert_array_equal(table.lookup(j, i), dense[j, i])
  keys, values = table.pair_arrays()
  assert np.all(np.diff(keys) > 0)
  np.testing.assert_array_equal(values, dense[keys // 25, keys % 25])
  ids, counts = table.top_neighbors(4)
  for row in range(25):
    order = sorted(np.flatnonzero(dense[row]), key=lambda c: (-dense[row, c],
                                                              c))[:4]
    assert ids[row][ids[row] >= 0].tolist() == order
    np.testing.assert_array_equal(counts[row][:len(order)], dense[row, order])


def test_vocabulary_mismatch_fails_clearly():
  log = _log()
  vocab = Vocabulary([f"i{k}" for k in range(25)], name="item")
  table = cooccurrence_counts(log, 25, vocabulary=vocab)
  table.check_vocabulary(vocab)
  other = Vocabulary([f"j{k}" for k in range(25)], name="item")
  with pytest.raises(DataError, match="different item vocabulary"):
    table.check_vocabulary(other)
  with pytest.raises(DataError, match="has 25 items but the model has an "
                     "item vocabulary of 26"):
    table.check_vocabulary(Vocabulary([f"i{k}" for k in range(26)]))


def test_bad_input():
  log = _log()
  with pytest.raises(DataError, match="outside the vocabulary"):
    cooccurrence_counts(log, 10)
  with pytest.raises(ValueError, match="window must be >= 1"):
    cooccurrence_counts(log, 25, window=0)
  with pytest.raises(DataError, match="empty"):
    cooccurrence_counts(Interactions([], []), 5)
