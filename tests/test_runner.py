"""The shared runner: flag validation, output folders, NaN stop, JSON
writes, resuming only on the same data, exports that cannot lose the
metrics, and early stopping on a validation metric."""

import json
import os

import numpy as np
import pytest

from retrieval_tf import runner
from retrieval_tf.compat import keras, tf
from retrieval_tf.files import write_json_atomic
from retrieval_tf.validation import EarlyStopping


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
    ({"early_stopping": -1}, "--early_stopping must be >= 0"),
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


def _linear_model(x, y):
  """`(build, dataset_fn)` of a compiled linear model fitting `y` from `x`
  in batches of 8."""

  def build():
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model

  def dataset_fn(context):
    del context
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()

  return build, dataset_fn


def _fit_linear(output_dir, epochs, targets=None, keep_checkpoints=0,
                early_stopping=None, callbacks=None):
  """`runner.fit` of a linear model on 32 rows of ones (targets: ones)."""
  x = np.ones((32, 2), np.float32)
  build, dataset_fn = _linear_model(x, x[:, :1] if targets is None
                                    else targets)
  return runner.fit(build, dataset_fn, strategy=tf.distribute.get_strategy(),
                    output_dir=str(output_dir), epochs=epochs,
                    steps_per_epoch=4, batch_size=8, verbose=0,
                    keep_checkpoints=keep_checkpoints,
                    early_stopping=early_stopping, callbacks=callbacks)


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


def test_validate_checks_the_export_dir_before_any_work(tmp_path):
  """Every command that defines --export_dir gets it checked by the
  runner; a path under a file is unwritable even for root."""
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(runner.UsageError, match="--export_dir=.* is a file"):
    runner.validate(_flags(tmp_path, export_dir=str(blocker / "export")))
  runner.validate(_flags(tmp_path, export_dir=str(tmp_path / "export")))
  runner.validate(_flags(tmp_path, export_dir=None))


def test_data_fingerprint_names_what_changed():
  a = np.arange(10, dtype=np.int32)
  base = runner.data_fingerprint(train=a, num_items=10, ids=np.array(
      ["x", "y"], dtype=object), extra={"f": a})
  assert base == runner.data_fingerprint(train=a.copy(), num_items=10,
                                         ids=np.array(["x", "y"],
                                                      dtype=object),
                                         extra={"f": a})
  other = runner.data_fingerprint(train=a[::-1].copy(), num_items=11,
                                  ids=np.array(["x", "y"], dtype=object),
                                  extra={"f": a[:5]})
  assert runner.data_changes(base, other) == [
      "extra same size, other content",
      "num_items 10 -> 11", "train same size, other content"]
  assert runner.data_changes(base, {}) == [
      "extra removed", "ids removed", "num_items removed", "train removed"]
  with pytest.raises(TypeError, match="cannot hash a object"):
    runner.data_fingerprint(thing=object())


class _Killed(Exception):
  """Stands for the process dying in the middle of a run."""


def _linear_experiment(x, kill=False, export=None):
  """An experiment on the runner: checks `x` as its data, fits a linear
  model on it, optionally dies before evaluating or exports."""

  def experiment(ctx):
    ctx.check_data(train=x, num_items=x.shape[1])
    build, dataset_fn = _linear_model(x, x[:, :1])
    result = ctx.fit(build, dataset_fn, num_examples=len(x))
    if kill:
      raise _Killed()
    metrics = {"loss": result.history["loss"][-1]}
    if export is not None:
      path = ctx.export(export, metrics)
      if path:
        metrics["export_path"] = path
    return metrics

  return experiment


def test_a_resume_on_other_data_is_refused(tmp_path, capsys):
  values = _flags(tmp_path, epochs=2, keep_checkpoints=0)
  out = values["output_dir"]
  x = np.ones((32, 2), np.float32)
  with pytest.raises(_Killed):  # config.json, data.json, checkpoints; no
    runner.execute(_linear_experiment(x, kill=True), values)  # metrics
  assert not os.path.exists(os.path.join(out, "metrics.json"))
  assert os.path.exists(os.path.join(out, "checkpoints"))
  # Same shape, other rows.
  changed = x.copy()
  changed[3] = 2.0
  assert runner.execute(_linear_experiment(changed), values) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1
  assert ("holds an unfinished run trained on other data (changed: train "
          "same size, other content); pass --overwrite to start again or "
          "choose another --output_dir") in err
  # Another number of columns ("items"): named with both counts.
  wider = np.ones((32, 3), np.float32)
  assert runner.execute(_linear_experiment(wider), values) == 2
  assert "changed: num_items 2 -> 3; train same size" in (
      capsys.readouterr().err)
  assert not os.path.exists(os.path.join(out, "metrics.json"))
  # The same data resumes and finishes.
  assert runner.execute(_linear_experiment(x), values) == 0
  assert os.path.exists(os.path.join(out, "metrics.json"))
  # --overwrite starts again on the new data.
  os.remove(os.path.join(out, "metrics.json"))
  assert runner.execute(_linear_experiment(wider),
                        dict(values, overwrite=True)) == 0
  with open(os.path.join(out, runner.DATA_FILE)) as f:
    assert json.load(f)["num_items"]["size"] == 3


def test_an_unfinished_run_without_a_data_record_is_refused(tmp_path,
                                                             capsys):
  values = _flags(tmp_path)
  out = values["output_dir"]
  runner.prepare_output_dir(out, values, overwrite=False)
  os.makedirs(os.path.join(out, "backup", "chief"))
  (tmp_path / "run" / "backup" / "chief" / "x").write_text("")
  x = np.ones((32, 2), np.float32)
  assert runner.execute(_linear_experiment(x), values) == 2
  assert "no record of its data (data.json)" in capsys.readouterr().err


def test_fit_needs_check_data_first(tmp_path):
  ctx = runner.RunContext(flags=_flags(tmp_path), output_dir=str(tmp_path),
                          strategy=tf.distribute.get_strategy(),
                          resumed=False, chief=True)
  with pytest.raises(RuntimeError, match="ctx.check_data"):
    ctx.fit(lambda: None, lambda c: None, num_examples=1)


def test_a_failed_export_keeps_the_metrics(tmp_path, capsys):
  values = _flags(tmp_path)
  out = values["output_dir"]
  x = np.ones((32, 2), np.float32)
  seen = {}

  def export():
    with open(os.path.join(out, "metrics.json")) as f:
      seen.update(json.load(f))  # written before the export starts
    raise PermissionError("[Errno 13] Permission denied: '/exports/1'")

  assert runner.execute(_linear_experiment(x, export=export), values) == 4
  assert "loss" in seen
  with open(os.path.join(out, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["loss"] == seen["loss"]
  assert metrics["export_error"] == (
      "PermissionError: [Errno 13] Permission denied: '/exports/1'")
  assert "export_path" not in metrics
  err = capsys.readouterr().err
  assert "error: export failed: PermissionError: [Errno 13]" in err
  # A working export: exit 0, its path in the metrics, no error.
  values = _flags(tmp_path, output_dir=str(tmp_path / "ok"))
  assert runner.execute(_linear_experiment(x, export=lambda: "/exports/1"),
                        values) == 0
  with open(tmp_path / "ok" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["export_path"] == "/exports/1"
  assert "export_error" not in metrics


class _Weights:
  """The validation of `_fit_linear`'s model: its weight w moves from 0
  towards 1 under SGD; the score -(w - 0.5)^2 peaks where w passes 0.5."""

  def __init__(self):
    self.seen = []

  def __call__(self, model):
    w = float(model.layers[0].kernel.numpy().sum() +
              model.layers[0].bias.numpy().sum())
    self.seen.append(model.get_weights())
    return {"score": -(w - 0.5) ** 2, "w": w}


def _zero_start(tmp_path, epochs, patience, validate, callbacks=None):
  """`_fit_linear` from zero weights with a small step, early stopping."""
  stopper = EarlyStopping(validate, "score", patience,
                          str(tmp_path / "validation"))

  class Zero(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      if not os.path.exists(tmp_path / "validation" / "state.json"):
        self.model.set_weights([np.zeros_like(w)
                                for w in self.model.get_weights()])

  result = _fit_linear(tmp_path, epochs, early_stopping=stopper,
                       callbacks=[Zero()] + list(callbacks or []))
  return result, stopper


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path):
  validate = _Weights()
  result, stopper = _zero_start(tmp_path, 30, 2, validate)
  scores = result.history["val_score"]
  best = int(np.argmax(scores)) + 1
  assert 1 < best < len(scores)  # it improved, then got worse
  assert result.validation["best_epoch"] == best
  assert result.validation["stopped_epoch"] == best + 2 == len(scores)
  assert result.epochs_run == best + 2 < 30
  assert result.validation["val_score"] == pytest.approx(max(scores))
  for got, want in zip(result.model.get_weights(), validate.seen[best - 1]):
    np.testing.assert_array_equal(got, want)
  assert stopper.summary() == result.validation
  with pytest.raises(ValueError, match="patience must be >= 1"):
    EarlyStopping(validate, "score", 0, str(tmp_path))


def test_early_stopping_resumes_with_the_run(tmp_path):
  """Killed after epoch 3's backup: the resumed run ends as an unbroken
  one does, also when epoch 3 had not been validated yet."""
  unbroken, _ = _zero_start(tmp_path / "unbroken", 30, 2, _Weights())

  class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 2:
        raise _Killed()

  for drop_last in (False, True):
    folder = tmp_path / f"killed{int(drop_last)}"
    with pytest.raises(_Killed):
      _zero_start(folder, 30, 2, _Weights(), callbacks=[Kill()])
    state_path = folder / "validation" / "state.json"
    if drop_last:  # died between the backup and the validation
      state = json.loads(state_path.read_text())
      state["records"] = state["records"][:-1]
      state_path.write_text(json.dumps(state))
    resumed, _ = _zero_start(folder, 30, 2, _Weights())
    assert resumed.resumed_from_epoch == 3
    assert resumed.validation == pytest.approx(unbroken.validation)
    for got, want in zip(resumed.model.get_weights(),
                         unbroken.model.get_weights()):
      np.testing.assert_allclose(got, want, rtol=1e-6)


def test_early_stopping_needs_the_monitored_metric(tmp_path):
  stopper = EarlyStopping(lambda model: {"other": 1.0}, "score", 1,
                          str(tmp_path / "validation"))
  with pytest.raises(KeyError, match="monitors 'score', but the validation "
                     "gives only \\['other'\\]"):
    _fit_linear(tmp_path, 2, early_stopping=stopper)
