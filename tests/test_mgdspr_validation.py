"""MGDSPR's validation split (`mgdspr_tf.train.load_data` with
`--early_stopping`): made as the test side is, out of the training rows
only, the test rows unchanged; and the CLI keeps the best epoch by it."""

import numpy as np

from conftest import dataset_dir, read_metrics, run_module
from mgdspr_tf import train
from retrieval_tf.datasets import registry, synthetic


def _flags(**overrides):
  flags = {"dataset": "synthetic", "data_dir": None, "seed": 0,
           "synthetic_items": 200, "synthetic_config": None,
           "max_real": 5, "max_short": 5, "max_long": 5, "max_test": None,
           "early_stopping": 1, "valid_fraction": 0.1}
  flags.update(overrides)
  return flags


def test_synthetic_validation_is_the_latest_training_searches():
  data, held = train.load_data(_flags())
  plain, none = train.load_data(_flags(early_stopping=0))
  assert none is None
  np.testing.assert_array_equal(data.test.search, plain.test.search)
  np.testing.assert_array_equal(data.test.item_id, plain.test.item_id)
  searches = np.unique(data.train.search)
  held_searches = np.unique(data.train.search[held])
  assert 0.05 < len(held_searches) / len(searches) < 0.15
  # Every row of a held-out search is held out, and each is later in
  # time than every training search that stays.
  assert not np.isin(data.train.search[~held], held_searches).any()
  world = synthetic.generate(synthetic.SyntheticConfig.scaled(200, seed=0))
  times = world.search_time[data.train.search]
  assert times[held].min() >= times[~held].max()


def test_amazon_validation_is_each_users_last_training_event(data_root):
  flags = _flags(dataset="amazon-beauty", max_test=None,
                 data_dir=str(dataset_dir(data_root, "amazon-beauty")))
  data, held = train.load_data(flags)
  plain, _ = train.load_data(dict(flags, early_stopping=0))
  np.testing.assert_array_equal(data.test.item_id, plain.test.item_id)
  dataset = registry.load_rec_dataset("amazon-beauty", flags["data_dir"])
  user = dataset.interactions.sorted().user[data.train.search]
  # At most one row per user, that user's last training row, and never a
  # user's only one (a validation user keeps a training event).
  held_users = user[held]
  assert len(held_users) == len(np.unique(held_users)) > 1000
  rows = np.arange(len(user))
  for u in held_users[:200]:
    mine = rows[user == u]
    assert len(mine) >= 2 and held[mine[-1]] and not held[mine[:-1]].any()


def test_cli_keeps_the_best_validation_epoch(tmp_path):
  out = tmp_path / "run"
  proc = run_module(
      "mgdspr_tf.train", "--dataset=synthetic", "--synthetic_items=200",
      f"--output_dir={out}", "--epochs=3", "--early_stopping=1",
      "--batch_size=64", "--embedding_dim=8", "--num_heads=2",
      "--num_buckets=512", "--max_real=4", "--max_short=4", "--max_long=4",
      "--ks=10,50", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert 1 <= metrics["best_epoch"] <= 3
  assert metrics["num_valid_searches"] > 0
  assert 0.0 <= metrics["val_recall@50"] <= 1.0
  # The validation figures describe the model that was trained: on the
  # training rows left after the hold-out.
  assert metrics["val_num_train_examples"] == metrics["num_train_examples"]
