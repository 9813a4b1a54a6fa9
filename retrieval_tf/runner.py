"""The one training runner that every package's `train` command stands on.

A package's CLI defines its own flags next to `define_common_flags()`, then
calls `run(experiment)` where `experiment(ctx: RunContext) -> metrics` loads its
data, calls `ctx.fit(...)` and evaluates. The runner owns everything else:

* flag validation before any work (`validate`), with clear messages;
* the output directory: a finished run (`metrics.json` present) is never
  overwritten without `--overwrite`; an unfinished run with the same
  `config.json` is resumed by `keras.callbacks.BackupAndRestore`;
* `tf.distribute` strategies: `default`, `mirrored`, `multi_worker`
  (`TF_CONFIG`) and `parameter_server` (`TF_CONFIG`, `model.fit` with a
  `DatasetCreator`);
* callbacks: Keras progress bar, TensorBoard in `output_dir/logs`, backups in
  `output_dir/backup`, weights in `output_dir/checkpoints` (the last
  `--keep_checkpoints` epochs), and a hard stop with a clear error on a NaN or
  infinite loss;
* `config.json` and `metrics.json` (flat `{"hr@10": ...}` plus dataset and
  timing), written atomically;
* the data a run trains on: the experiment hands it to
  `RunContext.check_data` once loaded; its fingerprint is kept in
  `data.json` and an unfinished run is resumed only on the same data;
* `--export_dir`, when the command defines it, is checked writable before
  any work; `RunContext.export` writes `metrics.json` before exporting, so a
  failed export never loses a finished run's metrics;
* `--early_stopping=N`: the experiment gives `RunContext.fit` a validation
  callable and the metric to monitor (`retrieval_tf.validation`);
* exit status 2 with `error: ...` on a bad flag or bad data (`DataError`,
  or a resume on other data), 3 on a non-finite loss, 4 when the export
  failed (the metrics are written, with `export_error`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Vocabulary
from retrieval_tf.files import write_json_atomic
from retrieval_tf.index import (INDEX_KINDS, RERANK, SCAN_DTYPES,
                                check_build_options)
from retrieval_tf.validation import EarlyStopping
import tensorflow_recommenders as tfrs  # pylint: disable=g-bad-import-order

FLAGS = flags.FLAGS

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


def define_common_flags(datasets: Mapping[str, bool],
                        default_dataset: str = "synthetic",
                        default_epochs: int = 3,
                        default_batch_size: int = 1024,
                        default_learning_rate: float = 0.1) -> None:
  """Defines the flags every `train` command shares.

  Args:
    datasets: `{name: needs_data_dir}` of the datasets this command accepts.
  """
  _DATASETS.clear()
  _DATASETS.update(datasets)
  flags.DEFINE_string("dataset", default_dataset,
                      f"One of: {', '.join(sorted(datasets))}.")
  flags.DEFINE_string("data_dir", None,
                      "Folder of the real dataset (not for synthetic).")
  flags.DEFINE_string("output_dir", None,
                      "Where logs, checkpoints, config.json and metrics.json "
                      "go.")
  flags.DEFINE_integer("epochs", default_epochs, "Training epochs.")
  flags.DEFINE_integer("steps_per_epoch", None,
                       "Steps per epoch (default: one pass over the data).")
  flags.DEFINE_integer("batch_size", default_batch_size,
                       "Global batch size.")
  flags.DEFINE_float("learning_rate", default_learning_rate,
                     "Optimizer learning rate.")
  flags.DEFINE_integer("seed", 0, "Random seed (data order, init, splits).")
  flags.DEFINE_integer("synthetic_items", 0,
                       "--dataset=synthetic only: items of the generated "
                       "world (0: the default 2,000; other sizes scale users,"
                       " categories and queries with it).")
  flags.DEFINE_list("synthetic_config", [],
                    "--dataset=synthetic only: SyntheticConfig fields as "
                    "name=value, e.g. polysemous_search_rate=1.0,"
                    "result_relevance=0.3 (see retrieval_tf.datasets."
                    "synthetic; seed and size come from --seed and "
                    "--synthetic_items).")
  flags.DEFINE_enum("strategy", "default", STRATEGIES,
                    "tf.distribute strategy; multi_worker and "
                    "parameter_server read the cluster from TF_CONFIG.")
  flags.DEFINE_bool("overwrite", False,
                    "Replace a finished run in --output_dir.")
  flags.DEFINE_integer("verbose", 1, "Keras progress output (0, 1 or 2).")
  flags.DEFINE_integer("keep_checkpoints", 3,
                       "Epoch checkpoints kept in output_dir/checkpoints, the "
                       "newest (0: keep every epoch's).")
  flags.DEFINE_integer("early_stopping", 0,
                       "Patience in epochs: stop when the validation metric "
                       "has not improved for this many epochs and keep the "
                       "best epoch's weights (0: off). Holds a validation "
                       "split out of the training data (docs/training.md).")


_DATASETS: Dict[str, bool] = {}

# Flags that do not change what a run computes: a resumed run may differ here.
_NON_CONFIG_FLAGS = ("overwrite", "verbose", "export_dir", "keep_checkpoints")


def synthetic_overrides(pairs) -> Dict[str, Any]:
  """`--synthetic_config` name=value pairs -> typed `SyntheticConfig`
  fields; a `UsageError` names an unknown field or a bad value."""
  defaults = synthetic.SyntheticConfig()
  names = sorted(f.name for f in dataclasses.fields(defaults)
                 if f.name not in ("seed", "num_items"))
  out: Dict[str, Any] = {}
  for pair in pairs or ():
    name, sep, text = (part.strip() for part in pair.partition("="))
    if not sep or name not in names:
      raise UsageError(f"--synthetic_config: {pair!r} is not name=value "
                       f"with name one of {', '.join(names)}")
    default = getattr(defaults, name)
    try:
      out[name] = float(text) if isinstance(default, float) else int(text)
    except ValueError:
      kind = "a number" if isinstance(default, float) else "an integer"
      raise UsageError(f"--synthetic_config: {name} must be {kind}, got "
                       f"{text!r}") from None
  return out


def synthetic_config(values: Mapping[str, Any]):
  """The synthetic world's configuration from `--seed`, `--synthetic_items`
  and `--synthetic_config` (None: the default world)."""
  items = values.get("synthetic_items")
  overrides = synthetic_overrides(values.get("synthetic_config"))
  if not items and not overrides:
    return None
  if items:
    return synthetic.SyntheticConfig.scaled(items, seed=values["seed"],
                                            **overrides)
  return synthetic.SyntheticConfig(seed=values["seed"], **overrides)


class UsageError(ValueError):
  """A flag value that cannot work; raised before any work starts."""


def validate(values: Mapping[str, Any]) -> None:
  """Checks the common flags; raises `UsageError` naming the flag."""
  dataset = values["dataset"]
  if dataset not in _DATASETS:
    raise UsageError(f"--dataset={dataset!r} is unknown; choose one of "
                     f"{', '.join(sorted(_DATASETS))}")
  if _DATASETS[dataset]:
    if not values.get("data_dir"):
      raise UsageError(f"--dataset={dataset} needs --data_dir (the folder "
                       "with its files)")
    if not os.path.exists(values["data_dir"]):
      raise UsageError(f"--data_dir={values['data_dir']!r} does not exist")
  elif values.get("data_dir"):
    raise UsageError(f"--dataset={dataset} is generated and reads no files: "
                     "drop --data_dir (or name the dataset of that folder)")
  for name in ("synthetic_items", "synthetic_config"):
    if values.get(name) and dataset != "synthetic":
      raise UsageError(f"--{name} works with --dataset=synthetic only")
  if values.get("synthetic_items") and values["synthetic_items"] < 100:
    raise UsageError(f"--synthetic_items must be >= 100, got "
                     f"{values['synthetic_items']}")
  try:
    synthetic_config(values)
  except UsageError:
    raise
  except ValueError as e:  # SyntheticConfig's own checks
    raise UsageError(f"--synthetic_config: {e}") from None
  if not values.get("output_dir"):
    raise UsageError("--output_dir is required")
  check_writable(values["output_dir"], "--output_dir")
  for name in ("epochs", "batch_size"):
    if values[name] < 1:
      raise UsageError(f"--{name} must be >= 1, got {values[name]}")
  if values.get("steps_per_epoch") is not None and values["steps_per_epoch"] < 1:
    raise UsageError("--steps_per_epoch must be >= 1")
  if not values["learning_rate"] > 0:
    raise UsageError(f"--learning_rate must be > 0, got "
                     f"{values['learning_rate']}")
  for name in ("keep_checkpoints", "early_stopping"):
    if values.get(name, 0) < 0:
      raise UsageError(f"--{name} must be >= 0, got {values[name]}")
  if values.get("export_dir"):  # before training, for every command
    check_writable(values["export_dir"], "--export_dir")


def define_index_flags(what: str = "the item embeddings") -> None:
  """`--index`, `--num_lists`, `--num_subspaces`, `--nprobe`, `--rerank`,
  `--scan_dtype`:
  the servable's item index (`retrieval_tf.index.build_index`; 0 means its
  default), for every CLI that exports one. Check with
  `check_index_flags`, pass on with `index_options`."""
  flags.DEFINE_enum("index", "brute_force", INDEX_KINDS,
                    f"The servable's item index: exact, IVF-Flat or IVF-PQ "
                    f"trained on {what}.")
  flags.DEFINE_integer("num_lists", 0, "Inverted lists J (0: sqrt(N) for "
                       "ivf_flat, from the number of items for ivfpq).")
  flags.DEFINE_integer("num_subspaces", 0, "IVF-PQ sub-spaces D (0: the "
                       "divisor of the dimension nearest dim / 4).")
  flags.DEFINE_integer("nprobe", 0, "Inverted lists searched (0: 8 for "
                       "ivf_flat, J / 16 for ivfpq).")
  flags.DEFINE_integer("rerank", RERANK, "IVF-PQ candidates re-scored exactly "
                       "(max(rerank, k) of them; 0: none).")
  flags.DEFINE_enum("scan_dtype", "float32", SCAN_DTYPES, "IVF-Flat: the "
                    "dtype its scan reads the lists in (bfloat16: faster "
                    "where bfloat16 matrix products are native, the best "
                    "candidates re-scored in float32).")


def check_index_flags(values: Mapping[str, Any], dim: int) -> None:
  """UsageError for index flags that cannot work with embeddings of size
  `dim` (`retrieval_tf.index.check_build_options`)."""
  try:
    check_build_options(dim=dim, prefix="--", **index_options(values))
  except ValueError as error:
    raise UsageError(str(error)) from None


def index_options(values: Mapping[str, Any]) -> Dict[str, Any]:
  """`build_index`'s keyword arguments from the index flags (0: None, its
  default)."""
  return {"kind": values["index"],
          "num_lists": values["num_lists"] or None,
          "num_subspaces": values["num_subspaces"] or None,
          "nprobe": values["nprobe"] or None, "rerank": values["rerank"],
          "scan_dtype": values["scan_dtype"]}


def check_writable(path: str, flag: str) -> None:
  """`UsageError` unless `path` (or its nearest existing parent) is a
  writable folder."""
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise UsageError(f"{flag}={path!r}: {probe!r} is a file, not a folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise UsageError(f"{flag}={path!r} is not writable ({probe!r})")


def prepare_output_dir(output_dir: str, config: Mapping[str, Any],
                       overwrite: bool) -> bool:
  """Makes `output_dir` ready; returns True when an unfinished run resumes.

  With `overwrite`, whatever run the folder holds is discarded and training
  starts afresh. Without it, a finished run (`metrics.json`) is never
  touched, and an unfinished one is resumed only when its `config.json`
  equals `config` (flags that do not change the computation aside).
  """
  metrics_path = os.path.join(output_dir, "metrics.json")
  config_path = os.path.join(output_dir, "config.json")
  if overwrite and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  elif os.path.exists(metrics_path):
    raise UsageError(
        f"--output_dir={output_dir!r} already holds a finished run "
        "(metrics.json); pass --overwrite to replace it or choose another "
        "folder")
  elif os.path.exists(config_path):
    with open(config_path) as f:
      previous = json.load(f)
    old = {k: v for k, v in previous.items() if k not in _NON_CONFIG_FLAGS}
    new = {k: v for k, v in config.items() if k not in _NON_CONFIG_FLAGS}
    if old != new:
      changed = sorted(k for k in set(old) | set(new)
                       if old.get(k) != new.get(k))
      raise UsageError(
          f"--output_dir={output_dir!r} holds an unfinished run with a "
          f"different configuration (changed: {', '.join(changed)}); pass "
          "--overwrite to discard it or choose another folder")
    return True
  elif os.path.isdir(output_dir) and os.listdir(output_dir):
    raise UsageError(
        f"--output_dir={output_dir!r} is not empty and holds no run of this "
        "library; pass --overwrite or choose another folder")
  os.makedirs(output_dir, exist_ok=True)
  write_json_atomic(config_path, dict(config))
  return False


DATA_FILE = "data.json"


def data_fingerprint(**parts) -> Dict[str, Dict[str, Any]]:
  """`{name: {"sha256": ..., "size": ...}}` of the data a run trains on.

  Each part is hashed from its values (NumPy arrays by dtype, shape and
  bytes; dataclasses such as `Interactions` field by field; dicts, lists,
  `Vocabulary`, strings and numbers), not from files, so generated data
  has a fingerprint too. `size` is the part's length (rows) or, for a
  number, the number itself: what a message about a change can name.
  """
  out = {}
  for name, value in sorted(parts.items()):
    digest = hashlib.sha256()
    _digest(value, digest)
    if isinstance(value, (int, float, np.integer, np.floating)):
      size = value.item() if hasattr(value, "item") else value
    else:
      size = len(value) if hasattr(value, "__len__") else None
    out[name] = {"sha256": digest.hexdigest(), "size": size}
  return out


def _digest(value, digest) -> None:
  """Feeds `value` into the hash; TypeError on a kind it cannot hash."""
  if isinstance(value, np.ndarray):
    digest.update(f"array{value.dtype}{value.shape}".encode())
    if value.dtype == object:
      digest.update("\x1f".join(map(str, value.ravel())).encode())
    else:
      digest.update(np.ascontiguousarray(value).tobytes())
  elif dataclasses.is_dataclass(value) and not isinstance(value, type):
    digest.update(type(value).__name__.encode())
    for field in dataclasses.fields(value):
      digest.update(f"|{field.name}=".encode())
      _digest(getattr(value, field.name), digest)
  elif isinstance(value, Vocabulary):
    _digest(value.ids, digest)
  elif isinstance(value, Mapping):
    digest.update(b"{")
    for key in sorted(value, key=str):
      digest.update(f"{key}:".encode())
      _digest(value[key], digest)
    digest.update(b"}")
  elif isinstance(value, (list, tuple)):
    digest.update(b"[")
    for item in value:
      _digest(item, digest)
    digest.update(b"]")
  elif value is None or isinstance(value, (str, bool, int, float, np.integer,
                                           np.floating)):
    digest.update(repr(value.item() if hasattr(value, "item") else value
                       ).encode())
  else:
    raise TypeError(f"data_fingerprint: cannot hash a "
                    f"{type(value).__name__}; pass arrays, dataclasses, "
                    "dicts, lists, strings or numbers")


def data_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
  """What differs between two `data_fingerprint`s, one phrase per part."""
  changes = []
  for name in sorted(set(old) | set(new)):
    before, after = old.get(name), new.get(name)
    if before is None or after is None:
      changes.append(f"{name} {'added' if before is None else 'removed'}")
    elif before["sha256"] != after["sha256"]:
      if before.get("size") != after.get("size"):
        changes.append(f"{name} {before.get('size')} -> {after.get('size')}")
      else:
        changes.append(f"{name} same size, other content")
  return changes


def _has_training_state(output_dir: str) -> bool:
  return any(os.path.isdir(os.path.join(output_dir, name)) and
             os.listdir(os.path.join(output_dir, name))
             for name in ("backup", "checkpoints"))


def make_strategy(name: str, cluster_resolver=None,
                  devices: Optional[List[str]] = None
                  ) -> tf.distribute.Strategy:
  """The `tf.distribute` strategy for `--strategy`.

  `mirrored` uses all local GPUs (or the given `devices`); `multi_worker` and
  `parameter_server` read `TF_CONFIG` unless a `cluster_resolver` is given.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=cluster_resolver)
  if name == "parameter_server":
    resolver = (cluster_resolver or
                tf.distribute.cluster_resolver.TFConfigClusterResolver())
    if not resolver.cluster_spec().as_dict().get("ps"):
      raise UsageError("--strategy=parameter_server needs a cluster with "
                       "'ps' tasks in TF_CONFIG")
    return tf.distribute.experimental.ParameterServerStrategy(resolver)
  raise UsageError(f"--strategy={name!r} is unknown; choose one of "
                   f"{', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's outputs (multi-worker: chief or
  worker 0)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if _is_parameter_server(strategy):
    return True  # the coordinator runs this program
  task_type, task_id = resolver.task_type, resolver.task_id
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return (task_type == "chief" or task_type is None or
          (not has_chief and task_type == "worker" and task_id == 0))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops training with `NonFiniteLossError` when an epoch's loss is NaN/inf.

  The epoch-level check is what ParameterServerStrategy allows (it refuses
  batch-level callbacks); `StopOnNonFiniteBatchLoss` checks every step.
  """

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    self._check((logs or {}).get("loss"), f"in epoch {epoch + 1}")

  def _check(self, loss, where: str):
    if loss is not None and not math.isfinite(float(loss)):
      raise NonFiniteLossError(
          f"the training loss became {float(loss)} {where}; the run "
          "stopped. Lower --learning_rate, check the input features for "
          "NaN, or resume from the last checkpoint in the output folder's "
          "checkpoints/")


class StopOnNonFiniteBatchLoss(StopOnNonFiniteLoss):
  """`StopOnNonFiniteLoss` that checks the loss after every training step."""

  def on_train_batch_end(self, batch, logs=None):
    self._check((logs or {}).get("loss"),
                f"at step {batch} of epoch {self._epoch + 1}")


class KeepLastCheckpoints(keras.callbacks.Callback):
  """Deletes all but the newest `keep` epoch checkpoints (`epoch-NNN.*`,
  written by the `ModelCheckpoint` before it) of `folder` after each epoch:
  a long run no longer fills the disk with one set of weights per epoch."""

  def __init__(self, folder: str, keep: int):
    super().__init__()
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.folder, self.keep = folder, int(keep)

  def on_epoch_end(self, epoch, logs=None):
    if not os.path.isdir(self.folder):
      return
    # By epoch number, not by name: "epoch-1000" sorts before "epoch-999".
    epoch_of = {name: int(name.split(".")[0][len("epoch-"):])
                for name in os.listdir(self.folder)
                if name.startswith("epoch-")}
    stale = set(sorted(set(epoch_of.values()))[:-self.keep])
    for name, epoch in epoch_of.items():
      if epoch in stale:
        os.remove(os.path.join(self.folder, name))


class _EpochCounter(keras.callbacks.Callback):
  """Counts the epochs this process ran (fewer than asked when resumed)."""

  def __init__(self):
    super().__init__()
    self.first_epoch = None
    self.epochs_run = 0

  def on_epoch_begin(self, epoch, logs=None):
    if self.first_epoch is None:
      self.first_epoch = epoch
    self.epochs_run += 1


@dataclasses.dataclass
class FitResult:
  """What `fit` returns.

  Attributes:
    validation: with early stopping, `best_epoch` (1-based), `stopped_epoch`
      (0: ran every epoch) and the best epoch's `val_<metric>` figures;
      the model holds that epoch's weights. Empty without it.
  """

  model: keras.Model
  history: Dict[str, List[float]]
  train_seconds: float
  train_steps: int
  epochs_run: int
  resumed_from_epoch: int
  examples_per_second: float
  validation: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunContext:
  """What an experiment needs from the runner.

  Attributes:
    started: `time.perf_counter()` when the run started (`total_seconds`).
    export_error: the one-line error of a failed `export`, else None.
    extra_metrics: figures the runner adds to `metrics.json` (early
      stopping's `best_epoch`, `stopped_epoch`, `val_*`).
    data_checked: whether `check_data` ran (`fit` requires it).
  """

  flags: Dict[str, Any]
  output_dir: str
  strategy: tf.distribute.Strategy
  resumed: bool
  chief: bool
  started: float = dataclasses.field(default_factory=time.perf_counter)
  export_error: Optional[str] = None
  extra_metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
  data_checked: bool = False

  @property
  def seed(self) -> int:
    return self.flags["seed"]

  @property
  def early_stopping(self) -> int:
    """`--early_stopping`: the patience in epochs (0: off)."""
    return self.flags.get("early_stopping", 0)

  def check_data(self, **parts) -> None:
    """Records the data this run trains on; call it once the experiment has
    loaded (and split) its data, before `fit`.

    A fresh run keeps the parts' `data_fingerprint` in `data.json`. A resumed
    run compares: other data than the unfinished run trained on raise a
    `UsageError` (exit 2) naming what changed, instead of resuming weights
    trained on one dataset with another (or failing on a shape).

    Args:
      **parts: what identifies the training data, e.g. `train=Interactions`,
        `num_items=...`, the evaluation split; see `data_fingerprint`.
    """
    fingerprint = data_fingerprint(**parts)
    self.data_checked = True
    if not self.chief:
      return
    path = os.path.join(self.output_dir, DATA_FILE)
    where = f"--output_dir={self.output_dir!r}"
    fix = "pass --overwrite to start again or choose another --output_dir"
    if os.path.exists(path):
      with open(path) as f:
        changes = data_changes(json.load(f), fingerprint)
      if changes:
        raise UsageError(f"{where} holds an unfinished run trained on other "
                         f"data (changed: {'; '.join(changes)}); {fix}")
    elif _has_training_state(self.output_dir):
      raise UsageError(f"{where} holds an unfinished run with no record of "
                       f"its data ({DATA_FILE}), so it cannot resume; {fix}")
    write_json_atomic(path, fingerprint)

  def fit(self, build_model: Callable[[], keras.Model],
          dataset_fn: Callable[[tf.distribute.InputContext],
                               tf.data.Dataset],
          num_examples: int,
          callbacks: Optional[List[keras.callbacks.Callback]] = None,
          validation: Optional[Callable[[keras.Model],
                                        Mapping[str, float]]] = None,
          monitor: Optional[str] = None) -> FitResult:
    """Builds (under the strategy's scope) and trains a compiled model.

    Args:
      build_model: returns a compiled model; called inside `strategy.scope()`.
      dataset_fn: `InputContext -> Dataset` of per-replica batches that
        repeats; see `retrieval_tf.data.distributed_dataset_fn`.
      num_examples: training examples per epoch (for the step count).
      callbacks: extra callbacks (e.g. a paper's EM step).
      validation: `model -> {metric: value}` on the validation split (higher
        is better); with `--early_stopping` it runs after every epoch.
      monitor: the key of `validation`'s result that early stopping follows.

    Raises:
      RuntimeError: `check_data` was not called first, or `--early_stopping`
        is on and no `validation` / `monitor` was given.
    """
    if not self.data_checked:
      raise RuntimeError("call ctx.check_data(...) with the loaded training "
                         "data before ctx.fit, so that a resumed run is "
                         "checked to train on the same data")
    output_dir = (self.output_dir if self.chief else
                  tempfile.mkdtemp(prefix="retrieval_tf_worker_"))
    stopper = None
    if self.early_stopping:
      if validation is None or monitor is None:
        raise RuntimeError("--early_stopping needs the experiment to pass "
                           "ctx.fit a validation callable and a monitor")
      stopper = EarlyStopping(validation, monitor, self.early_stopping,
                              os.path.join(output_dir, "validation"))
    result = fit(build_model, dataset_fn, strategy=self.strategy,
                 output_dir=output_dir,
                 epochs=self.flags["epochs"],
                 steps_per_epoch=(self.flags.get("steps_per_epoch") or
                                  max(1, math.ceil(num_examples /
                                                   self.flags["batch_size"]))),
                 batch_size=self.flags["batch_size"],
                 callbacks=callbacks, verbose=self.flags.get("verbose", 1),
                 keep_checkpoints=self.flags.get("keep_checkpoints", 0),
                 early_stopping=stopper)
    self.extra_metrics.update(result.validation)
    return result

  def export(self, export_fn: Callable[[], Any],
             metrics: Dict[str, Any]) -> Any:
    """Runs `export_fn()` on the chief after writing `metrics` to
    `metrics.json`; returns what it returns, or None when it raised.

    A failed export never loses the run: the error is logged, recorded in
    `metrics["export_error"]` (written to `metrics.json` when the experiment
    returns) and the command exits with status 4.
    """
    if not self.chief:
      return None
    self.write_metrics(metrics)
    try:
      return export_fn()
    except Exception as error:  # pylint: disable=broad-except
      logging.exception("the export failed")
      # One line, even for TensorFlow's multi-line tracebacks.
      self.export_error = " ".join(f"{type(error).__name__}: {error}".split())
      metrics["export_error"] = self.export_error
      return None

  def write_metrics(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Completes `metrics` (dataset, validation figures, timing) and writes
    them atomically to `metrics.json` (chief only); returns the written
    dict."""
    out = dict(self.extra_metrics)
    out.update(metrics)
    out.setdefault("dataset", self.flags["dataset"])
    out["total_seconds"] = round(time.perf_counter() - self.started, 3)
    out["finished_at"] = datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds")
    if self.chief:
      write_json_atomic(os.path.join(self.output_dir, "metrics.json"), out)
    return out


def fit(build_model, dataset_fn, *, strategy, output_dir: str, epochs: int,
        steps_per_epoch: int, batch_size: int,
        callbacks=None, verbose: int = 1,
        keep_checkpoints: int = 0,
        early_stopping: Optional[EarlyStopping] = None) -> FitResult:
  """`model.fit` under `strategy` with the runner's callbacks (see module);
  `keep_checkpoints` > 0 keeps only that many epoch checkpoints;
  `early_stopping` runs right after the backup of each epoch (so that a
  resumed run finds its state consistent with the restored weights) and
  before the callbacks that log, which then see its `val_*` figures."""
  with strategy.scope():
    model = build_model()
    _build_on_sample(model, dataset_fn)
  counter = _EpochCounter()
  checkpoints = os.path.join(output_dir, "checkpoints")
  all_callbacks = [
      keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup"))]
  if early_stopping is not None:
    all_callbacks.append(early_stopping)
  all_callbacks += [
      keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"),
                                  update_freq="epoch"),
      keras.callbacks.ModelCheckpoint(
          os.path.join(checkpoints, "epoch-{epoch:03d}"),
          save_weights_only=True)]
  if keep_checkpoints:  # after the ModelCheckpoint that writes the newest
    all_callbacks.append(KeepLastCheckpoints(checkpoints, keep_checkpoints))
  all_callbacks += [
      (StopOnNonFiniteLoss() if _is_parameter_server(strategy)
       else StopOnNonFiniteBatchLoss()),
      counter,
  ] + list(callbacks or [])
  data = keras.utils.experimental.DatasetCreator(dataset_fn)
  start = time.perf_counter()
  history = model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=all_callbacks, verbose=verbose)
  seconds = time.perf_counter() - start
  steps_run = counter.epochs_run * steps_per_epoch
  return FitResult(
      model=model,
      history={k: [float(x) for x in v] for k, v in history.history.items()},
      train_seconds=seconds,
      train_steps=int(model.optimizer.iterations.numpy()),
      epochs_run=counter.epochs_run,
      resumed_from_epoch=counter.first_epoch or 0,
      examples_per_second=steps_run * batch_size / max(seconds, 1e-9),
      validation=(early_stopping.summary() if early_stopping is not None
                  else {}))


def _build_on_sample(model: keras.Model, dataset_fn) -> None:
  """Creates every variable before `fit`: `BackupAndRestore` can only
  restore a built model, and a subclassed model builds on its first batch.
  TFRS models build through `compute_loss` (both towers and the task)."""
  if model.built:
    return
  sample = next(iter(dataset_fn(tf.distribute.InputContext())))
  if isinstance(sample, tuple):
    sample = sample[0]
  if isinstance(model, tfrs.Model):
    model.compute_loss(sample, training=False)
  model(sample, training=False)  # marks the model built


def _is_parameter_server(strategy) -> bool:
  return isinstance(strategy,
                    tf.distribute.experimental.ParameterServerStrategy)


def run(experiment: Callable[[RunContext], Dict[str, Any]],
        argv: Optional[List[str]] = None,
        validate_command: Optional[Callable[[Dict[str, Any]], None]] = None
        ) -> None:
  """Runs `experiment` from the parsed flags; see the module docstring.

  `validate_command(values)` checks the command's own flags (raising
  `UsageError`) before any work, after the common ones.
  """
  app.run(lambda unused_argv: execute(experiment, command_flag_values(),
                                      validate_command), argv=argv)


def execute(experiment: Callable[[RunContext], Dict[str, Any]],
            values: Dict[str, Any],
            validate_command: Optional[Callable[[Dict[str, Any]],
                                                None]] = None) -> int:
  """`run` on already parsed flag `values`; returns the exit status."""
  try:
    validate(values)
    if validate_command is not None:
      validate_command(values)
    strategy = make_strategy(values["strategy"])
    chief = is_chief(strategy)
    output_dir = values["output_dir"]
    resumed = (prepare_output_dir(output_dir, values, values["overwrite"])
               if chief else False)
  except UsageError as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  keras.utils.set_random_seed(values["seed"])
  ctx = RunContext(flags=values, output_dir=output_dir, strategy=strategy,
                   resumed=resumed, chief=chief)
  if resumed:
    logging.info("resuming the unfinished run in %s", output_dir)
  try:
    metrics = experiment(ctx)
  except (DataError, UsageError) as e:  # bad files, ids, fields; other data
    sys.stderr.write(f"error: {e}\n")
    return 2
  except NonFiniteLossError as e:
    sys.stderr.write(f"error: {e}\n")
    return 3
  metrics = ctx.write_metrics(metrics)
  if chief:
    print(format_metrics(metrics))
  if ctx.export_error:
    sys.stderr.write(f"error: export failed: {ctx.export_error}; the "
                     f"metrics are in "
                     f"{os.path.join(output_dir, 'metrics.json')}\n")
    return 4
  return 0


def command_flag_values() -> Dict[str, Any]:
  """The values of the flags the running command defined (not absl's/TF's)."""
  values = {}
  for module, module_flags in FLAGS.flags_by_module_dict().items():
    if module.startswith(("absl", "tensorflow")):
      continue
    values.update((f.name, f.value) for f in module_flags)
  return dict(sorted(values.items()))


def format_metrics(metrics: Mapping[str, Any]) -> str:
  """A readable block of the flat metrics, quality first."""
  lines = []
  for key in sorted(metrics):
    value = metrics[key]
    if isinstance(value, float):
      value = f"{value:.4f}"
    lines.append(f"  {key:<28} {value}")
  return "metrics:\n" + "\n".join(lines)
