"""History windows equal a plain-Python reference: right-aligned, padded,
masked, empty for a user's first event, the same inside tf.function/map."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from retrieval_tf.data import HistoryIndex, history_window
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions


def _log(n=60, users=5, items=9, seed=0, with_time=True):
  rng = np.random.default_rng(seed)
  # Few distinct timestamps, so that ties (broken by file order) occur.
  time = rng.integers(0, 8, n) if with_time else None
  return Interactions(rng.integers(0, users, n), rng.integers(0, items, n),
                      timestamp=time)


def _reference_histories(log):
  """Row -> the same user's earlier items, by (timestamp, file order)."""
  time = (log.timestamp if log.timestamp is not None
          else np.zeros(len(log), np.int64))
  out = []
  for r in range(len(log)):
    earlier = [s for s in range(len(log))
               if log.user[s] == log.user[r]
               and (time[s], s) < (time[r], r)]
    earlier.sort(key=lambda s: (time[s], s))
    out.append([int(log.item[s]) for s in earlier])
  return out


def _reference_window(history, length, pad):
  recent = history[-length:]
  ids = [pad] * (length - len(recent)) + recent
  mask = [False] * (length - len(recent)) + [True] * len(recent)
  return ids, mask


@pytest.mark.parametrize("with_time", [True, False])
def test_event_ranges_match_reference(with_time):
  log = _log(with_time=with_time)
  index = HistoryIndex.from_interactions(log)
  expected = _reference_histories(log)
  for r in range(len(log)):
    got = index.items[index.event_starts[r]:index.event_ends[r]].tolist()
    assert got == expected[r], r


@pytest.mark.parametrize("length", [1, 3, 20])
def test_windows_match_reference(length):
  log = _log()
  index = HistoryIndex.from_interactions(log)
  ids, mask = history_window(index.items, index.event_starts,
                             index.event_ends, length, pad_id=-7)
  assert ids.shape == (len(log), length) and ids.dtype == tf.int32
  assert mask.dtype == tf.bool
  for r, history in enumerate(_reference_histories(log)):
    want_ids, want_mask = _reference_window(history, length, -7)
    assert ids[r].numpy().tolist() == want_ids
    assert mask[r].numpy().tolist() == want_mask


def test_first_event_has_empty_history_and_right_alignment():
  log = Interactions([0, 0, 0, 1], [5, 6, 7, 8], timestamp=[1, 2, 3, 1])
  index = HistoryIndex.from_interactions(log)
  ids, mask = history_window(index.items, index.event_starts,
                             index.event_ends, 4)
  np.testing.assert_array_equal(ids.numpy(), [[-1, -1, -1, -1],
                                              [-1, -1, -1, 5],
                                              [-1, -1, 5, 6],
                                              [-1, -1, -1, -1]])
  np.testing.assert_array_equal(mask.numpy()[2], [False, False, True, True])
  assert not mask.numpy()[[0, 3]].any()


def test_truncates_to_the_most_recent_items():
  log = Interactions([3] * 6, [10, 11, 12, 13, 14, 15],
                     timestamp=[6, 5, 4, 3, 2, 1])
  index = HistoryIndex.from_interactions(log)
  starts, ends = index.user_history([3])
  ids, mask = history_window(index.items, starts, ends, 2)
  # Chronological order is 15, 14, ..., 10: the most recent is 10, last.
  np.testing.assert_array_equal(ids.numpy(), [[11, 10]])
  assert mask.numpy().all()


def test_user_history_is_the_whole_sequence():
  log = _log()
  index = HistoryIndex.from_interactions(log, num_users=7)
  sequences = log.sequences()
  starts, ends = index.user_history(np.arange(9))
  for u in range(9):
    got = index.items[starts[u]:ends[u]].tolist()
    assert got == sequences.get(u, np.zeros(0)).tolist(), u
  assert index.num_users == 7 and len(index) == len(log)
  with pytest.raises(DataError, match="negative"):
    index.user_history([-1])


def test_from_sequences_equals_from_interactions():
  log = _log()
  a = HistoryIndex.from_interactions(log)
  b = HistoryIndex.from_sequences(log.sequences())
  users = np.arange(6)
  sa, ea = a.user_history(users)
  sb, eb = b.user_history(users)
  for u in users:
    assert a.items[sa[u]:ea[u]].tolist() == b.items[sb[u]:eb[u]].tolist()


def test_works_in_tf_function_and_batched_map():
  log = _log()
  index = HistoryIndex.from_interactions(log)
  eager_ids, eager_mask = history_window(index.items, index.event_starts,
                                         index.event_ends, 4)

  @tf.function
  def windows(starts, ends):
    return history_window(index.items, starts, ends, 4)

  ids, mask = windows(tf.constant(index.event_starts),
                      tf.constant(index.event_ends))
  np.testing.assert_array_equal(ids.numpy(), eager_ids.numpy())
  np.testing.assert_array_equal(mask.numpy(), eager_mask.numpy())
  ds = (tf.data.Dataset.from_tensor_slices((index.event_starts,
                                            index.event_ends))
        .batch(7).map(lambda s, e: history_window(index.items, s, e, 4)))
  mapped = np.concatenate([i.numpy() for i, _ in ds])
  np.testing.assert_array_equal(mapped, eager_ids.numpy())


def test_errors():
  with pytest.raises(DataError, match="empty"):
    HistoryIndex.from_interactions(Interactions([], []))
  with pytest.raises(DataError, match="outside"):
    HistoryIndex.from_interactions(Interactions([0, 4], [1, 1]), num_users=3)
  with pytest.raises(ValueError, match="length"):
    history_window([1, 2], [0], [1], 0)
