"""The training / evaluation datasets: coverage, gathered features, seeds,
sharding per input pipeline, and input validation."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from retrieval_tf.data import (HistoryIndex, PopularitySampler,
                               UniformSampler, distributed_dataset_fn,
                               item_dataset, training_dataset,
                               user_eval_dataset)
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions

USERS, ITEMS, EVENTS = 6, 11, 53


def _world(seed=0):
  rng = np.random.default_rng(seed)
  # timestamp = row number, so every example names its row.
  log = Interactions(rng.integers(0, USERS, EVENTS),
                     rng.integers(0, ITEMS, EVENTS),
                     timestamp=rng.permutation(EVENTS),
                     rating=rng.random(EVENTS))
  user_features = {"gender": rng.integers(0, 2, USERS),
                   "tags": rng.integers(-1, 5, (USERS, 3))}
  item_features = {"genres": rng.integers(-1, 7, (ITEMS, 4)),
                   "price": rng.random(ITEMS)}
  return log, user_features, item_features


def _rows(batches, log):
  """Row number of every example (timestamps are a permutation)."""
  where = np.argsort(log.timestamp)
  return [where[b["timestamp"].numpy()] for b in batches]


def _reference_history(log, row, length):
  earlier = [s for s in range(len(log)) if log.user[s] == log.user[row]
             and log.timestamp[s] < log.timestamp[row]]
  earlier.sort(key=lambda s: log.timestamp[s])
  recent = [int(log.item[s]) for s in earlier][-length:]
  return [-1] * (length - len(recent)) + recent


def test_every_row_once_per_epoch_and_features_match_numpy():
  log, user_features, item_features = _world()
  ds = training_dataset(log, batch_size=8, history_length=4,
                        user_features=user_features,
                        item_features=item_features, with_log_q=True)
  batches = list(ds)
  rows = _rows(batches, log)
  assert [len(r) for r in rows] == [8] * 6 + [5]
  np.testing.assert_array_equal(np.sort(np.concatenate(rows)),
                                np.arange(EVENTS))
  freq = np.bincount(log.item, minlength=ITEMS) / EVENTS
  for batch, row in zip(batches, rows):
    b = {k: v.numpy() for k, v in batch.items()}
    np.testing.assert_array_equal(b["user_id"], log.user[row])
    np.testing.assert_array_equal(b["item_id"], log.item[row])
    np.testing.assert_allclose(b["rating"], log.rating[row])
    np.testing.assert_array_equal(b["user_gender"],
                                  user_features["gender"][log.user[row]])
    np.testing.assert_array_equal(b["user_tags"],
                                  user_features["tags"][log.user[row]])
    np.testing.assert_array_equal(b["item_genres"],
                                  item_features["genres"][log.item[row]])
    np.testing.assert_allclose(b["item_price"],
                               item_features["price"][log.item[row]],
                               rtol=1e-6)
    np.testing.assert_allclose(b["item_log_q"], np.log(freq[log.item[row]]),
                               rtol=1e-5)
    for i, r in enumerate(row):
      want = _reference_history(log, r, 4)
      assert b["history"][i].tolist() == want
      assert b["history_mask"][i].tolist() == [w >= 0 for w in want]
  assert batches[0]["user_tags"].dtype == tf.int32
  assert batches[0]["item_price"].dtype == tf.float32


def test_unshuffled_keeps_file_order():
  log, _, _ = _world()
  ds = training_dataset(log, batch_size=10, shuffle=False)
  np.testing.assert_array_equal(np.concatenate(_rows(ds, log)),
                                np.arange(EVENTS))


def test_same_seed_same_batches_and_each_epoch_reshuffled():
  log, _, _ = _world()

  def epochs(seed, n=3):
    ds = training_dataset(log, batch_size=5, seed=seed, repeat=True)
    rows = np.concatenate(_rows(ds.take(11 * n), log))
    return rows.reshape(n, EVENTS)

  a, b, c = epochs(0), epochs(0), epochs(1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(epochs(None), epochs(None))  # fresh randomness
  for epoch in a:  # batches never straddle epochs; each is a permutation
    np.testing.assert_array_equal(np.sort(epoch), np.arange(EVENTS))
  assert not np.array_equal(a[0], a[1])
  # A non-repeating dataset reshuffles on each iteration (Keras epochs),
  # reproducibly.
  once, twin = (training_dataset(log, batch_size=5, seed=0)
                for _ in range(2))
  first, second = (np.concatenate(_rows(once, log)) for _ in range(2))
  np.testing.assert_array_equal(first, a[0])
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(np.sort(second), np.arange(EVENTS))
  for want in (first, second):
    np.testing.assert_array_equal(np.concatenate(_rows(twin, log)), want)


def test_drop_remainder_gives_static_full_batches():
  log, _, _ = _world()
  ds = training_dataset(log, batch_size=8, drop_remainder=True,
                        history_length=3)
  assert ds.element_spec["history"].shape == (8, 3)
  assert [int(b["user_id"].shape[0]) for b in ds] == [8] * 6


@pytest.mark.parametrize("sampler", [UniformSampler(ITEMS),
                                     PopularitySampler(np.arange(ITEMS))])
def test_negatives(sampler):
  log, _, _ = _world()
  ds = training_dataset(log, batch_size=8, repeat=True,
                        negatives=(sampler, 6))
  batches = [b["negative_ids"].numpy() for b in ds.take(14)]
  again = [b["negative_ids"].numpy()
           for b in training_dataset(log, batch_size=8, repeat=True,
                                     negatives=(sampler, 6)).take(14)]
  assert batches[0].shape == (8, 6) and batches[6].shape == (5, 6)
  everything = np.concatenate([b.ravel() for b in batches])
  assert everything.min() >= 0 and everything.max() < ITEMS
  for x, y in zip(batches, again):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(batches[0], batches[7])


def test_sharding_by_input_context_is_disjoint_and_complete():
  log, _, _ = _world()
  fn = distributed_dataset_fn(log, batch_size=8, history_length=2)
  shards = []
  for i in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=i,
                                         num_replicas_in_sync=2)
    batches = list(fn(context))
    assert max(int(b["user_id"].shape[0]) for b in batches) == 4
    shards.append(np.concatenate(_rows(batches, log)))
    direct = training_dataset(log, batch_size=8, history_length=2,
                              input_context=context)
    np.testing.assert_array_equal(
        np.concatenate(_rows(direct, log)), shards[-1])
  assert not set(shards[0]) & set(shards[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(shards)),
                                np.arange(EVENTS))


def test_distribute_datasets_from_function():
  log, _, _ = _world()
  strategy = tf.distribute.get_strategy()
  ds = strategy.distribute_datasets_from_function(
      distributed_dataset_fn(log, batch_size=4, repeat=True,
                             drop_remainder=True))
  batch = next(iter(ds))
  assert batch["item_id"].shape == (4,)


def test_user_eval_dataset():
  log, user_features, _ = _world()
  users = np.array([3, 0, 5, 1, 2])
  index = HistoryIndex.from_interactions(log)
  sequences = log.sequences()
  for history in (index, sequences):
    batches = list(user_eval_dataset(users, history, 3, user_features,
                                     batch_size=2))
    assert [int(b["user_id"].shape[0]) for b in batches] == [2, 2, 1]
    got = np.concatenate([b["history"].numpy() for b in batches])
    np.testing.assert_array_equal(
        np.concatenate([b["user_id"].numpy() for b in batches]), users)
    for u, row in zip(users, got):
      recent = sequences[u][-3:].tolist()
      assert row.tolist() == [-1] * (3 - len(recent)) + recent
    gender = np.concatenate([b["user_gender"].numpy() for b in batches])
    np.testing.assert_array_equal(gender, user_features["gender"][users])
  plain = next(iter(user_eval_dataset(users, None, None, batch_size=8)))
  assert set(plain) == {"user_id"}


def test_item_dataset():
  _, _, item_features = _world()
  batches = list(item_dataset(ITEMS, item_features, batch_size=4))
  ids = np.concatenate([b["item_id"].numpy() for b in batches])
  np.testing.assert_array_equal(ids, np.arange(ITEMS))
  genres = np.concatenate([b["item_genres"].numpy() for b in batches])
  np.testing.assert_array_equal(genres, item_features["genres"])


def test_errors():
  log, user_features, item_features = _world()
  with pytest.raises(DataError, match="empty"):
    training_dataset(Interactions([], []), batch_size=4)
  with pytest.raises(ValueError, match="batch_size"):
    training_dataset(log, batch_size=0)
  with pytest.raises(ValueError, match="history_length"):
    training_dataset(log, batch_size=4, history_length=0)
  with pytest.raises(DataError, match="'genres' has 11 rows.*12 items"):
    training_dataset(log, batch_size=4, item_features=item_features,
                     num_items=12)
  with pytest.raises(DataError, match="'tags' has 6 rows .* has 4 users"):
    training_dataset(log, batch_size=4, user_features={
        "gender": np.zeros(4), "tags": user_features["tags"]})
  with pytest.raises(DataError, match="item index .* outside"):
    training_dataset(log, batch_size=4, num_items=3)
  with pytest.raises(DataError, match="user index .* outside"):
    training_dataset(log, batch_size=4,
                     user_features={"gender": np.zeros(2)})
  with pytest.raises(DataError, match="fewer than one batch"):
    training_dataset(log, batch_size=64, drop_remainder=True)
  with pytest.raises(ValueError, match="sampler draws from 5 items"):
    training_dataset(log, batch_size=4, negatives=(UniformSampler(5), 3))
  with pytest.raises(ValueError, match="number of negatives"):
    training_dataset(log, batch_size=4, negatives=(UniformSampler(ITEMS), 0))
  with pytest.raises(DataError, match="'genres' has 11 rows"):
    item_dataset(12, item_features)
  with pytest.raises(DataError, match="user index .* outside"):
    user_eval_dataset([7], None, None, user_features)
  with pytest.raises(ValueError, match="needs a history"):
    user_eval_dataset([1], None, 5)
