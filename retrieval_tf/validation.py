"""Early stopping on a validation split, resumable with the training run.

`EarlyStopping` runs an experiment's validation callable after every epoch
(`model -> {"hr@10": ..., ...}`, higher is better), logs each figure as
`val_<metric>` into the epoch's logs (so the Keras history, TensorBoard and
the progress bar show it), stops training after `patience` epochs without
an improvement of the monitored metric, and gives the model back the best
epoch's weights at the end. The runner (`retrieval_tf.runner`, flag
`--early_stopping=N`) places it right after `BackupAndRestore`.

Its state lives in `folder`: `state.json` (every validated epoch's
figures and the best epoch) and the best epoch's weights
(`best-epoch-NNN.npz`, NumPy arrays in `model.get_weights()` order). A
killed run that `BackupAndRestore` resumes picks the state up again: the
epochs not yet validated (at most the one whose backup was written last) are
validated from the restored weights, so the best epoch and its weights are
the same as in an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import logging
import numpy as np

from retrieval_tf.compat import keras
from retrieval_tf.files import write_json_atomic

STATE_FILE = "state.json"


class EarlyStopping(keras.callbacks.Callback):
  """Validation after every epoch, patience and the best epoch's weights.

  Args:
    validate: `model -> {metric: value}` on the validation split.
    monitor: the metric (a key of `validate`'s result) to maximise.
    patience: epochs without an improvement after which training stops
      (>= 1).
    folder: where the state and the best weights are kept.

  After training, `summary()` gives `best_epoch` (1-based; 0 when no
  validation figure was finite), `stopped_epoch` (1-based epoch after which
  training stopped early; 0 when every epoch ran) and the best epoch's
  `val_<metric>` figures.
  """

  def __init__(self, validate: Callable[[keras.Model], Mapping[str, float]],
               monitor: str, patience: int, folder: str):
    super().__init__()
    if patience < 1:
      raise ValueError(f"EarlyStopping: patience must be >= 1, got "
                       f"{patience}")
    self.validate, self.monitor = validate, monitor
    self.patience, self.folder = int(patience), folder
    self.records: List[Dict[str, Any]] = []
    self.best_epoch = 0
    self.stopped_epoch = 0
    self._started = False
    self._done = False

  # -- state ---------------------------------------------------------------

  def _weights_path(self, epoch: int) -> str:
    return os.path.join(self.folder, f"best-epoch-{epoch:03d}.npz")

  def _save_state(self) -> None:
    write_json_atomic(os.path.join(self.folder, STATE_FILE),
                      {"monitor": self.monitor, "records": self.records,
                       "best_epoch": self.best_epoch,
                       "stopped_epoch": self.stopped_epoch})
    keep = os.path.basename(self._weights_path(self.best_epoch))
    for name in os.listdir(self.folder):
      if name.startswith("best-epoch-") and name != keep:
        os.remove(os.path.join(self.folder, name))

  def _save_weights(self, epoch: int) -> None:
    path = self._weights_path(epoch)
    tmp = path + ".tmp.npz"
    np.savez(tmp, *self.model.get_weights())
    os.replace(tmp, path)

  def _load_state(self, first_epoch: int) -> None:
    """The saved records of the epochs before `first_epoch` (0-based: the
    ones that count as run), the best one among them."""
    os.makedirs(self.folder, exist_ok=True)
    path = os.path.join(self.folder, STATE_FILE)
    if not os.path.exists(path):
      return
    with open(path) as f:
      state = json.load(f)
    if state.get("monitor") != self.monitor:
      return  # another metric: validate afresh
    self.records = [r for r in state["records"] if r["epoch"] <= first_epoch]
    best = state.get("best_epoch", 0)
    if best and best <= first_epoch and os.path.exists(
        self._weights_path(best)):
      self.best_epoch = best
    else:
      self.best_epoch = self._best_of_records_with_weights()
    if state.get("stopped_epoch") and state["stopped_epoch"] <= first_epoch:
      self.stopped_epoch = state["stopped_epoch"]

  def _best_of_records_with_weights(self) -> int:
    best, value = 0, None
    for record in self.records:
      v = record[self.monitor]
      if (math.isfinite(v) and (value is None or v > value) and
          os.path.exists(self._weights_path(record["epoch"]))):
        best, value = record["epoch"], v
    return best

  def _best_value(self) -> Optional[float]:
    for record in self.records:
      if record["epoch"] == self.best_epoch:
        return record[self.monitor]
    return None

  # -- Keras hooks ---------------------------------------------------------

  def on_epoch_begin(self, epoch, logs=None):
    if self._started:
      return
    self._started = True
    self._load_state(epoch)
    if epoch > 0 and (not self.records or self.records[-1]["epoch"] < epoch):
      # Resumed after the backup of epoch `epoch` but before its validation:
      # the restored weights are that epoch's.
      self._record(epoch, self._evaluate())
    if self.stopped_epoch or (self.best_epoch and
                              epoch - self.best_epoch >= self.patience):
      self.stopped_epoch = self.stopped_epoch or epoch
      self._done = True
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    if self._done:
      return
    scores = self._evaluate()
    if logs is not None:
      logs.update({f"val_{k}": v for k, v in scores.items()})
    self._record(epoch + 1, scores)
    if epoch + 1 - self.best_epoch >= self.patience:
      self.stopped_epoch = epoch + 1
      self._done = True
      self.model.stop_training = True
      self._save_state()

  def on_train_end(self, logs=None):
    last = self.records[-1]["epoch"] if self.records else 0
    if self.best_epoch and self.best_epoch != last:
      with np.load(self._weights_path(self.best_epoch)) as saved:
        self.model.set_weights([saved[f"arr_{i}"]
                                for i in range(len(saved.files))])
      logging.info("early stopping: restored the weights of epoch %d "
                   "(val_%s = %.4f)", self.best_epoch, self.monitor,
                   self._best_value())

  def _evaluate(self) -> Dict[str, float]:
    scores = {k: float(v) for k, v in self.validate(self.model).items()}
    if self.monitor not in scores:
      raise KeyError(f"early stopping monitors {self.monitor!r}, but the "
                     f"validation gives only {sorted(scores)}")
    return scores

  def _record(self, epoch: int, scores: Mapping[str, float]) -> None:
    """Keeps epoch `epoch`'s (1-based) figures; saves its weights when it
    is the best so far, then the state."""
    self.records = [r for r in self.records if r["epoch"] < epoch]
    self.records.append(dict(scores, epoch=epoch))
    value, best = scores[self.monitor], self._best_value()
    if math.isfinite(value) and (best is None or value > best):
      self._save_weights(epoch)
      self.best_epoch = epoch
    self._save_state()
    logging.info("epoch %d: %s", epoch, ", ".join(
        f"val_{k} = {v:.4f}" for k, v in sorted(scores.items())))

  def summary(self) -> Dict[str, Any]:
    """`best_epoch`, `stopped_epoch` and the best epoch's `val_*`."""
    out: Dict[str, Any] = {"best_epoch": self.best_epoch,
                           "stopped_epoch": self.stopped_epoch}
    for record in self.records:
      if record["epoch"] == self.best_epoch:
        out.update({f"val_{k}": v for k, v in record.items()
                    if k != "epoch"})
    return out
