"""The shared runner: flag validation, output folders, NaN stop, JSON writes."""

import json
import os

import numpy as np
import pytest

from retrieval_tf import runner
from retrieval_tf.compat import keras, tf
from retrieval_tf.files import write_json_atomic


@pytest.fixture(autouse=True)
def _datasets(monkeypatch):
  """The registry `define_common_flags` fills, per test: a package's train
  module imported by another test replaces it."""
  monkeypatch.setattr(runner, "_DATASETS", {"synthetic": False,
                                            "ml-1m": True})


def _flags(tmp_path, **overrides):
  values = dict(dataset="synthetic", data_dir=None,
                output_dir=str(tmp_path / "run"), epochs=1, batch_size=8,
                learning_rate=0.1, steps_per_epoch=None, seed=0,
                strategy="default", overwrite=False, verbose=0)
  values.update(overrides)
  return values


def test_validate_accepts_good_flags(tmp_path):
  runner.validate(_flags(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "nope"}, "--dataset='nope' is unknown"),
    ({"dataset": "ml-1m"}, "needs --data_dir"),
    ({"dataset": "ml-1m", "data_dir": "/does/not/exist"}, "does not exist"),
    ({"output_dir": None}, "--output_dir is required"),
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"batch_size": -4}, "--batch_size must be >= 1"),
    ({"learning_rate": 0.0}, "--learning_rate must be > 0"),
    ({"steps_per_epoch": 0}, "--steps_per_epoch must be >= 1"),
    ({"keep_checkpoints": -1}, "--keep_checkpoints must be >= 0"),
])
def test_validate_names_the_bad_flag(tmp_path, overrides, message):
  with pytest.raises(runner.UsageError, match=message):
    runner.validate(_flags(tmp_path, **overrides))


def test_synthetic_config_overrides_typed_fields():
  assert runner.synthetic_config({"seed": 3}) is None
  config = runner.synthetic_config(
      {"seed": 3, "synthetic_config": ["polysemous_search_rate=0.5",
                                       "num_users=500"]})
  assert (config.seed, config.polysemous_search_rate, config.num_users) == (
      3, 0.5, 500)
  assert isinstance(config.num_users, int)
  scaled = runner.synthetic_config(
      {"seed": 1, "synthetic_items": 50_000,
       "synthetic_config": ["result_relevance=0.3"]})
  assert (scaled.num_items, scaled.result_relevance) == (50_000, 0.3)
  assert scaled.num_brands == 50_000 // 200  # the rest still scales


def test_validate_rejects_unwritable_output_dir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(runner.UsageError, match="is a file"):
    runner.validate(_flags(tmp_path, output_dir=str(blocker / "run")))
  locked = tmp_path / "locked"
  locked.mkdir()
  os.chmod(locked, 0o500)
  try:
    if os.access(locked, os.W_OK):
      pytest.skip("running as a user who can write anywhere (root)")
    with pytest.raises(runner.UsageError, match="not writable"):
      runner.validate(_flags(tmp_path, output_dir=str(locked / "run")))
  finally:
    os.chmod(locked, 0o700)


def test_prepare_output_dir_never_overwrites_a_finished_run(tmp_path):
  values = _flags(tmp_path)
  out = values["output_dir"]
  assert runner.prepare_output_dir(out, values, overwrite=False) is False
  write_json_atomic(os.path.join(out, "metrics.json"), {"hr@10": 0.5})
  with pytest.raises(runner.UsageError, match="finished run"):
    runner.prepare_output_dir(out, values, overwrite=False)
  with open(os.path.join(out, "metrics.json")) as f:
    assert json.load(f) == {"hr@10": 0.5}
  assert runner.prepare_output_dir(out, values, overwrite=True) is False
  assert not os.path.exists(os.path.join(out, "metrics.json"))


def test_prepare_output_dir_resumes_only_the_same_config(tmp_path):
  values = _flags(tmp_path)
  out = values["output_dir"]
  runner.prepare_output_dir(out, values, overwrite=False)
  assert runner.prepare_output_dir(out, dict(values, verbose=2),
                                   overwrite=False) is True
  with pytest.raises(runner.UsageError, match="changed: epochs"):
    runner.prepare_output_dir(out, dict(values, epochs=5), overwrite=False)
  # --overwrite never resumes: it starts afresh.
  (tmp_path / "run" / "backup").mkdir()
  assert runner.prepare_output_dir(out, values, overwrite=True) is False
  assert not (tmp_path / "run" / "backup").exists()


def test_prepare_output_dir_refuses_a_foreign_non_empty_folder(tmp_path):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(runner.UsageError, match="not empty"):
    runner.prepare_output_dir(str(out), _flags(tmp_path), overwrite=False)
  assert (out / "notes.txt").read_text() == "keep me"


def test_write_json_atomic_leaves_no_partial_file(tmp_path):
  path = tmp_path / "m.json"
  write_json_atomic(str(path), {"a": np.float32(0.5), "b": np.arange(2)})
  assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
  with pytest.raises(TypeError):
    write_json_atomic(str(path), {"bad": object()})
  assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
  assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def _fit_linear(output_dir, epochs, targets=None, keep_checkpoints=0):
  """`runner.fit` of a linear model on 32 rows of ones (targets: ones)."""
  x = np.ones((32, 2), np.float32)
  y = x[:, :1] if targets is None else targets

  def build():
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model

  def dataset_fn(context):
    del context
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()

  return runner.fit(build, dataset_fn, strategy=tf.distribute.get_strategy(),
                    output_dir=str(output_dir), epochs=epochs,
                    steps_per_epoch=4, batch_size=8, verbose=0,
                    keep_checkpoints=keep_checkpoints)


def test_nan_loss_stops_training_with_a_clear_error(tmp_path):
  with pytest.raises(runner.NonFiniteLossError, match="became nan at step 0"):
    _fit_linear(tmp_path, 2, targets=np.full((32, 1), np.nan, np.float32))


def _epochs_on_disk(folder):
  return sorted({p.name.split(".")[0] for p in folder.iterdir()
                 if p.name.startswith("epoch-")})


def test_only_the_newest_checkpoints_are_kept(tmp_path):
  _fit_linear(tmp_path / "keep2", 5, keep_checkpoints=2)
  folder = tmp_path / "keep2" / "checkpoints"
  assert _epochs_on_disk(folder) == ["epoch-004", "epoch-005"]
  # What is left still loads, and is the newest.
  assert tf.train.latest_checkpoint(str(folder)).endswith("epoch-005")
  _fit_linear(tmp_path / "all", 3, keep_checkpoints=0)
  assert _epochs_on_disk(tmp_path / "all" / "checkpoints") == [
      "epoch-001", "epoch-002", "epoch-003"]
  with pytest.raises(ValueError, match="keep must be >= 1"):
    runner.KeepLastCheckpoints(str(folder), 0)
  # Past epoch 999 the newest is still kept (by number, not by name).
  long_run = tmp_path / "long"
  long_run.mkdir()
  for epoch in ("epoch-998", "epoch-999", "epoch-1000"):
    for suffix in (".index", ".data-00000-of-00001"):
      (long_run / (epoch + suffix)).write_text("")
  (long_run / "checkpoint").write_text("")
  runner.KeepLastCheckpoints(str(long_run), 2).on_epoch_end(999)
  assert _epochs_on_disk(long_run) == ["epoch-1000", "epoch-999"]
  assert (long_run / "checkpoint").exists()


def test_make_strategy_rejects_parameter_server_without_cluster(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(runner.UsageError, match="'ps' tasks"):
    runner.make_strategy("parameter_server")
  assert runner.is_chief(runner.make_strategy("default"))
