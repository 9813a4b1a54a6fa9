"""Splits over interaction and query logs: each protocol's invariants."""

import numpy as np
import pytest

from retrieval_tf.datasets import splits
from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions


@pytest.fixture(scope="module")
def log():
  """A shuffled synthetic browsing log (users of 1 to ~100 events)."""
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=5, num_users=300, min_events_per_user=1))
  rows = np.random.default_rng(0).permutation(len(world.event_user))
  return Interactions(world.event_user[rows], world.event_item[rows],
                      world.event_time[rows])


def _rows(inter):
  """The multiset of (user, item, time) rows."""
  return sorted(zip(inter.user.tolist(), inter.item.tolist(),
                    inter.timestamp.tolist()))


def test_dr_split_disjoint_users_and_halves(log):
  split = splits.dr_split(log, num_valid_users=30, num_test_users=40, seed=1)
  valid, test = split.valid, split.test
  assert len(valid.users) == 30 and len(test.users) == 40
  assert valid.users.dtype == np.int32
  assert not set(valid.users) & set(test.users)
  held = set(valid.users) | set(test.users)
  assert not held & set(split.train.user)
  assert _rows(log) == sorted(_rows(split.train) + _rows(valid.inputs)
                              + _rows(valid.truth) + _rows(test.inputs)
                              + _rows(test.truth))
  for part in (valid, test):
    assert set(part.inputs.user) == set(part.truth.user) == set(part.users)
    for user in part.users:
      inputs = part.inputs.timestamp[part.inputs.user == user]
      truth = part.truth.timestamp[part.truth.user == user]
      n = len(inputs) + len(truth)
      assert len(inputs) == n // 2
      assert (np.diff(inputs) >= 0).all() and (np.diff(truth) >= 0).all()
      assert inputs.max() <= truth.min()


def test_dr_split_min_history_and_determinism(log):
  counts = np.bincount(log.user)
  short = np.flatnonzero((counts > 0) & (counts < 6))
  assert short.size
  split = splits.dr_split(log, 50, 50, seed=2, min_history=6)
  assert set(short) <= set(split.train.user)
  again = splits.dr_split(log, 50, 50, seed=2, min_history=6)
  assert np.array_equal(split.test.users, again.test.users)
  assert np.array_equal(split.valid.truth.item, again.valid.truth.item)
  other = splits.dr_split(log, 50, 50, seed=3, min_history=6)
  assert not np.array_equal(split.test.users, other.test.users)


def test_dr_split_errors(log):
  with pytest.raises(DataError, match="held-out users"):
    splits.dr_split(log, 200, 200, seed=0)
  with pytest.raises(DataError, match="empty"):
    splits.dr_split(Interactions([], []), 1, 1, seed=0)
  with pytest.raises(ValueError):
    splits.dr_split(log, 1, 1, seed=0, min_history=1)


def test_leave_one_out_picks_the_latest(log):
  train, test = splits.leave_one_out(log)
  counts = np.bincount(log.user)
  eligible = np.flatnonzero(counts >= 2)
  assert np.array_equal(test.user, eligible)
  latest = np.full(len(counts), -1, dtype=np.int64)
  np.maximum.at(latest, log.user, log.timestamp)
  assert np.array_equal(test.timestamp, latest[test.user])
  assert len(train) + len(test) == len(log)
  assert _rows(log) == sorted(_rows(train) + _rows(test))
  singles = np.flatnonzero(counts == 1)
  assert singles.size and set(singles) <= set(train.user)
  assert not set(singles) & set(test.user)


def test_leave_one_out_ties_and_no_timestamps():
  # Equal timestamps: the later row is the later event.
  inter = Interactions([0, 0, 1, 1], [5, 6, 7, 8], [10, 10, 3, 1])
  train, test = splits.leave_one_out(inter)
  assert test.item.tolist() == [6, 7]
  untimed = Interactions([1, 0, 1, 0], [1, 2, 3, 4])
  train, test = splits.leave_one_out(untimed)
  assert test.item.tolist() == [4, 3] and train.item.tolist() == [1, 2]


def test_temporal_split(log):
  train, test = splits.temporal_split(log, test_fraction=0.2)
  assert train.timestamp.max() < test.timestamp.min()
  assert len(train) + len(test) == len(log)
  assert 0.2 <= len(test) / len(log) < 0.21
  cut = int(np.median(log.timestamp))
  train, test = splits.temporal_split(log, cutoff=cut)
  assert (train.timestamp < cut).all() and (test.timestamp >= cut).all()
  with pytest.raises(ValueError):
    splits.temporal_split(log)
  with pytest.raises(ValueError):
    splits.temporal_split(log, test_fraction=0.1, cutoff=cut)
  with pytest.raises(ValueError):
    splits.temporal_split(log, test_fraction=1.0)
  with pytest.raises(DataError, match="no timestamps"):
    splits.temporal_split(Interactions([0], [0]), test_fraction=0.5)
  with pytest.raises(DataError, match="empty"):
    splits.temporal_split(log, cutoff=int(log.timestamp.max()) + 1)


def test_query_disjoint_split():
  queries = np.array(["Red  Mouse", "red mouse", " red mouse ", "laptop",
                      "LAPTOP", "tea", "green tea", "apple", "bass", "mat"] * 3,
                     dtype=object)
  train, test = splits.query_disjoint_split(queries, 0.3, seed=0)
  assert (train ^ test).all()
  norm = np.array([splits.normalize_query(q) for q in queries])
  assert not set(norm[train]) & set(norm[test])
  assert len(set(norm[test])) == 2  # round(0.3 * 7 groups)
  again = splits.query_disjoint_split(queries, 0.3, seed=0)
  assert np.array_equal(test, again[1])
  with pytest.raises(DataError):
    splits.query_disjoint_split(np.array(["a", " A "], dtype=object), 0.5, 0)
  with pytest.raises(DataError):
    splits.query_disjoint_split(np.array(["a", None], dtype=object), 0.5, 0)
  with pytest.raises(DataError):
    splits.query_disjoint_split(np.array([], dtype=object), 0.5, 0)
  with pytest.raises(ValueError):
    splits.query_disjoint_split(queries, 0.0, 0)


def test_query_disjoint_split_on_synthetic_clicks():
  world = synthetic.generate(synthetic.SyntheticConfig(num_users=200))
  queries = world.to_search_dataset().interactions.query
  train, test = splits.query_disjoint_split(queries, 0.25, seed=4)
  assert not set(queries[train]) & set(queries[test])
  assert 0.05 < test.mean() < 0.6


def test_sample_negatives_exclude_seen(log):
  train, test = splits.leave_one_out(log)
  num_items = int(log.item.max()) + 1
  negatives = splits.sample_negatives(test, num_items, 99, exclude=train,
                                      seed=0)
  assert negatives.shape == (len(test), 99) and negatives.dtype == np.int32
  assert negatives.min() >= 0 and negatives.max() < num_items
  assert all(len(set(row)) == 99 for row in negatives)
  seen = set(zip(log.user.tolist(), log.item.tolist()))
  users = np.repeat(test.user, 99)
  assert not any((u, i) in seen for u, i in zip(users.tolist(),
                                                negatives.ravel().tolist()))
  again = splits.sample_negatives(test, num_items, 99, exclude=train, seed=0)
  assert np.array_equal(negatives, again)
  other = splits.sample_negatives(test, num_items, 99, exclude=train, seed=1)
  assert not np.array_equal(negatives, other)


def test_sample_negatives_dense_users_and_errors():
  # User 0 has seen 45 of 50 items (the exact path), user 1 only one.
  exclude = Interactions(np.r_[np.zeros(45), 1], np.r_[np.arange(45), 0])
  test = Interactions([0, 1], [49, 1])
  negatives = splits.sample_negatives(test, 50, 4, exclude=exclude, seed=0)
  assert sorted(negatives[0]) in ([45, 46, 47, 48],)
  assert 0 not in negatives[1] and 1 not in negatives[1]
  assert len(set(negatives[1])) == 4
  with pytest.raises(DataError, match="user 0 has only 4 unseen"):
    splits.sample_negatives(test, 50, 5, exclude=exclude, seed=0)
  with pytest.raises(DataError, match="outside"):
    splits.sample_negatives(test, 40, 4, exclude=exclude, seed=0)
  with pytest.raises(DataError, match="empty"):
    splits.sample_negatives(Interactions([], []), 50, 4, exclude=exclude,
                            seed=0)
  assert splits.sample_negatives(test, 50, 0, exclude=exclude,
                                 seed=0).shape == (2, 0)


def _pairs(inter):
  return set(zip(inter.user.tolist(), inter.item.tolist()))


def test_dr_split_test_users_do_not_depend_on_validation_users(log):
  without = splits.dr_split(log, 0, 40, seed=4)
  with_valid = splits.dr_split(log, 30, 40, seed=4)
  np.testing.assert_array_equal(without.test.users, with_valid.test.users)
  assert not set(with_valid.valid.users) & set(with_valid.test.users)
  # Validation users come out of the training side only.
  assert set(with_valid.valid.users) <= set(without.train.user.tolist())


def test_leave_one_out_validation_is_the_latest_training_event(log):
  train, test = splits.leave_one_out(log)
  num_items = int(log.item.max()) + 1
  rest, valid, negatives = splits.leave_one_out_validation(
      train, test, num_items, num_negatives=20, seed=3)
  # Each validation row is its user's latest training event, held out.
  assert len(rest) + len(valid) == len(train)
  latest = {}
  for u, t in zip(train.user.tolist(), train.timestamp.tolist()):
    latest[u] = max(latest.get(u, t), t)
  assert all(latest[u] == t for u, t in zip(valid.user.tolist(),
                                            valid.timestamp.tolist()))
  assert len(np.unique(valid.user)) == len(valid)
  assert sorted(_rows(rest) + _rows(valid)) == _rows(train)
  # Disjoint from the test rows; negatives never touched by the user.
  assert not set(_rows(valid)) & set(_rows(test))
  touched = _pairs(log)
  assert negatives.shape == (len(valid), 20)
  assert not any((u, int(i)) in touched
                 for u, row in zip(valid.user.tolist(), negatives)
                 for i in row)
  assert all(len(set(row)) == 20 for row in negatives.tolist())
  # Seeded: the same seed draws the same negatives, another seed others,
  # and they are not the test negatives of the same seed.
  again = splits.leave_one_out_validation(train, test, num_items, 20, seed=3)
  np.testing.assert_array_equal(again[2], negatives)
  other = splits.leave_one_out_validation(train, test, num_items, 20, seed=4)
  assert not np.array_equal(other[2], negatives)


def test_saved_validation_reloads(log, tmp_path):
  train, test = splits.leave_one_out(log)
  num_items = int(log.item.max()) + 1
  _, valid, negatives = splits.leave_one_out_validation(
      train, test, num_items, 10, seed=0)
  item_ids = np.asarray([f"i{i}" for i in range(num_items)], dtype=object)
  path = tmp_path / "validation.npz"
  splits.save_validation(str(path), valid, negatives, item_ids=item_ids)
  loaded, loaded_negatives = splits.load_validation(str(path))
  np.testing.assert_array_equal(loaded.user, valid.user)
  np.testing.assert_array_equal(loaded.item, valid.item)
  np.testing.assert_array_equal(loaded_negatives, negatives)
  with np.load(path) as saved:
    assert saved["item_id"][0] == f"i{valid.item[0]}"
    assert saved["negative_ids"].shape == negatives.shape
  (tmp_path / "bad.npz").write_text("not a zip")
  with pytest.raises(DataError, match="bad.npz: not a validation split"):
    splits.load_validation(str(tmp_path / "bad.npz"))


def test_registry_validation_keeps_the_test_rows():
  from retrieval_tf.datasets import registry
  dataset = registry.load_rec_dataset(
      "synthetic", synthetic_config=synthetic.SyntheticConfig(
          seed=1, num_items=300, num_users=200))
  plain = registry.leave_one_out(dataset, num_negatives=30, seed=2)
  held = registry.leave_one_out(dataset, num_negatives=30, seed=2,
                                validation=True)
  assert plain.valid is None
  np.testing.assert_array_equal(plain.test.user, held.test.user)
  np.testing.assert_array_equal(plain.test.item, held.test.item)
  np.testing.assert_array_equal(plain.negatives, held.negatives)
  assert (len(held.dataset.interactions) + len(held.valid) ==
          len(plain.dataset.interactions))
  # As events (user, item, time): from the training side, not the test.
  assert set(_rows(held.valid)) <= set(_rows(plain.dataset.interactions))
  assert not set(_rows(held.valid)) & set(_rows(held.test))
  validation = held.validation()
  assert validation.test is held.valid
  assert validation.negatives is held.valid_negatives
  with pytest.raises(ValueError, match="validation=True"):
    plain.validation()
  # The test is scored on the full histories: validation events included.
  test = held.for_test()
  assert plain.for_test() is plain
  assert (sorted(_rows(test.dataset.interactions)) ==
          sorted(_rows(plain.dataset.interactions)))
  assert test.test is held.test and test.negatives is held.negatives
