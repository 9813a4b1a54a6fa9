"""The EM loop of Deep Retrieval (Sec. 3) around `model.fit`.

E-step: gradient steps on Q_pen(theta, pi) with pi fixed; meanwhile
`DeepRetrievalModel.train_step` streams each example's top-S beam-search
paths into the `PathScoreEstimator` (s[v, c], decay eta).

M-step (`penalized_assignment`, Algorithm 2): coordinate descent over
items. For t = 1..T sweeps and each item v in order: remove v's current
paths from the path sizes |c| (t > 1), then for j = 1..J pick, among v's
top-S candidate paths not yet chosen, the c maximising

    N_v [log(sum_{j'<j} s[v, pi_j'] + s[v, c]) - log(sum_{j'<j} s[v, pi_j'])]
        - alpha (f(|c| + 1) - f(|c|)),        f(x) = x^4 / 4,

(for j = 1 the constant -log(0) is dropped: N_v log s[v, c] - penalty), add
s[v, c] — the score, not the gain — to the partial sum and increment |c|.
Items without J candidate paths (never seen in the training stream) keep
their current paths, which count in |c|; they are reported, never dropped.

`EMCallback` runs the M-step on a schedule and logs path-size statistics
(top path size, used paths); `FreezeReranker` freezes the softmax
reranker's item embeddings after a given epoch (Sec. 4.1).
"""

from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from retrieval_tf.compat import keras, tf

_TINY = 1e-30


def path_penalty(size: np.ndarray, alpha: float, power: float = 4.0):
  """alpha (f(|c| + 1) - f(|c|)) with f(x) = x^power / power."""
  size = np.asarray(size, np.float64)
  return alpha * ((size + 1.0) ** power - size ** power) / power


def penalized_assignment(candidate_paths: np.ndarray,
                         candidate_scores: np.ndarray, counts: np.ndarray,
                         current: np.ndarray, alpha: float,
                         sweeps: int = 3, power: float = 4.0
                         ) -> Tuple[np.ndarray, Dict[str, float]]:
  """Algorithm 2: the penalised path assignment by coordinate descent.

  Args:
    candidate_paths: `[V, S]` path ids of each item's top-S candidates
      (-1: empty slot).
    candidate_scores: `[V, S]` their scores s[v, c] (>= 0).
    counts: `[V]` N_v, occurrences of each item in the training data.
    current: `[V, J]` the current assignment pi (kept for items with fewer
      than J candidates).
    alpha: the penalty factor; sweeps: T; power: f(x) = x^power / power.

  Returns:
    `(pi [V, J] int32, stats)`; stats: `items_without_candidates`,
    `items_changed` (share of items whose path set changed).
  """
  candidate_paths = np.asarray(candidate_paths, np.int64)
  scores = np.maximum(np.asarray(candidate_scores, np.float64), _TINY)
  counts = np.asarray(counts, np.float64)
  current = np.asarray(current, np.int64)
  num_items, num_paths = current.shape
  if candidate_paths.shape != scores.shape or len(candidate_paths) != num_items:
    raise ValueError("candidate_paths, candidate_scores and current must "
                     "have one row per item")
  if sweeps < 1 or alpha < 0:
    raise ValueError(f"need sweeps >= 1 and alpha >= 0, got {sweeps}, "
                     f"{alpha}")
  valid = candidate_paths >= 0
  learnable = valid.sum(axis=1) >= num_paths
  # Compact path indices, so |c| is a dense array.
  universe, compact = np.unique(
      np.concatenate([candidate_paths[valid], current.ravel()]),
      return_inverse=True)
  cand = np.full(candidate_paths.shape, -1, np.int64)
  cand[valid] = compact[:valid.sum()]
  assigned = compact[valid.sum():].reshape(num_items, num_paths)
  sizes = np.zeros(len(universe), np.float64)
  np.add.at(sizes, assigned[~learnable].ravel(), 1.0)
  new = assigned.copy()
  rows = np.flatnonzero(learnable)
  for sweep in range(sweeps):
    for v in rows:
      if sweep > 0:
        np.subtract.at(sizes, new[v], 1.0)
      keep = valid[v]
      paths, s = cand[v][keep], scores[v][keep]
      taken = np.zeros(len(paths), bool)
      partial = 0.0
      for j in range(num_paths):
        penalty = path_penalty(sizes[paths], alpha, power)
        if partial > 0.0:
          gain = counts[v] * (np.log(partial + s) - math.log(partial))
        else:
          gain = counts[v] * np.log(s)
        gain = np.where(taken, -np.inf, gain - penalty)
        best = int(np.argmax(gain))
        taken[best] = True
        partial += s[best]
        sizes[paths[best]] += 1.0
        new[v, j] = paths[best]
  result = universe[new].astype(np.int32)
  changed = (np.sort(result, axis=1) != np.sort(current, axis=1)).any(axis=1)
  return result, {"items_without_candidates": int((~learnable).sum()),
                  "items_changed": float(changed.mean())}


def path_size_stats(item_paths: np.ndarray, total_paths: int
                    ) -> Dict[str, float]:
  """top path size (Table 5), used paths and their mean size."""
  sizes = np.unique(np.asarray(item_paths).ravel(), return_counts=True)[1]
  return {"top_path_size": int(sizes.max()), "used_paths": int(len(sizes)),
          "used_path_share": float(len(sizes) / total_paths),
          "mean_path_size": float(sizes.mean())}


class EMCallback(keras.callbacks.Callback):
  """Runs the M-step during `model.fit` (Sec. 3).

  The model's `PathScoreEstimator` collects s[v, c] during training (the
  E-step); the M-step runs at the end of every `every_epochs`-th epoch from
  `start_epoch` on (0-based), and additionally every `every_steps` training
  steps when > 0. After each M-step pi and its inverted index are replaced
  and the statistics are appended to `history` and written to TensorBoard
  (`log_dir/em`).

  `DeepRetrievalModel.fit` adds one built from the model's config when the
  callbacks hold none; pass one to change the schedule or to log.

  Args:
    counts: `[V]` N_v over the training data; None: the model's
      `item_counts` (set by `model.set_item_counts`).
    alpha: penalty factor; sweeps: T of Algorithm 2; power: f's exponent.
    reset_scores: forget the score estimates after each M-step (default:
      keep streaming across epochs, as the decayed estimate is meant to).

  Raises:
    ValueError (when training begins): a model without score collection
      (`score_paths=0`), counts of another length than V, or no counts
      at all (neither given nor set on the model).

  Example:

      model.fit(data, epochs=4, callbacks=[dr_tf.EMCallback(
          counts, alpha=1.0, every_steps=500, log_dir="logs")])
  """

  def __init__(self, counts: Optional[np.ndarray], alpha: float,
               sweeps: int = 3,
               power: float = 4.0, start_epoch: int = 0,
               every_epochs: int = 1, every_steps: int = 0,
               log_dir: Optional[str] = None, reset_scores: bool = False,
               verbose: bool = True):
    super().__init__()
    if every_epochs < 1 or every_steps < 0 or start_epoch < 0:
      raise ValueError("need every_epochs >= 1, every_steps >= 0 and "
                       "start_epoch >= 0")
    self.counts = None if counts is None else np.asarray(counts, np.float64)
    self.alpha, self.sweeps, self.power = float(alpha), int(sweeps), power
    self.start_epoch, self.every_epochs = int(start_epoch), int(every_epochs)
    self.every_steps = int(every_steps)
    self.reset_scores, self.verbose = reset_scores, verbose
    self.writer = (tf.summary.create_file_writer(os.path.join(log_dir, "em"))
                   if log_dir else None)
    self.history: List[Dict[str, float]] = []
    self._epoch = 0
    self._counts: Optional[np.ndarray] = None

  def on_train_begin(self, logs=None):
    self._counts = self.item_counts()
    model = self.model
    assignment = model.assignment
    self.history.append(dict(
        path_size_stats(assignment.item_paths.numpy(),
                        assignment.total_paths), step=0, m_step=0))

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def item_counts(self) -> np.ndarray:
    """N_v: the given counts, else the model's `item_counts` (checked)."""
    model = self.model
    if model.score_estimator is None:
      raise ValueError("EMCallback needs a model that collects path scores "
                       "(score_paths >= num_paths); this one has "
                       "score_paths=0")
    counts = (self.counts if self.counts is not None
              else model.item_counts.numpy().astype(np.float64))
    if counts.shape != (model.num_items,):
      raise ValueError(f"EMCallback counts must have shape "
                       f"({model.num_items},), got {counts.shape}")
    if not counts.any():
      raise ValueError(
          "the M-step needs N_v, the training count of each item: call "
          "model.set_item_counts(np.bincount(train.item, minlength=V)) "
          "before fit, or pass counts to EMCallback")
    return counts

  def on_train_batch_end(self, batch, logs=None):
    if self.every_steps and self._epoch >= self.start_epoch:
      step = int(self.model.optimizer.iterations.numpy())
      if step % self.every_steps == 0:
        self.m_step()

  def on_epoch_end(self, epoch, logs=None):
    if (epoch >= self.start_epoch and
        (epoch - self.start_epoch) % self.every_epochs == 0):
      stats = self.m_step()
      if logs is not None:
        logs.update({f"em_{k}": stats[k] for k in (
            "top_path_size", "used_paths", "items_changed")})

  def m_step(self) -> Dict[str, float]:
    """One M-step from the current score estimates; returns its stats."""
    model = self.model
    estimator, assignment = model.score_estimator, model.assignment
    start = time.perf_counter()
    new, stats = penalized_assignment(
        estimator.paths.numpy(), estimator.scores.numpy(),
        self._counts if self._counts is not None else self.item_counts(),
        assignment.item_paths.numpy(), self.alpha, self.sweeps, self.power)
    assignment.assign(new)
    if self.reset_scores:
      estimator.reset()
    stats.update(path_size_stats(new, assignment.total_paths))
    stats["m_step_seconds"] = time.perf_counter() - start
    step = int(model.optimizer.iterations.numpy())
    stats.update(step=step, m_step=len(self.history))
    self.history.append(stats)
    if self.writer is not None:
      with self.writer.as_default():
        for key, value in stats.items():
          tf.summary.scalar(key, value, step=step)
    if self.verbose:
      print(f"\nM-step {stats['m_step']} at step {step}: top path size "
            f"{stats['top_path_size']}, used paths {stats['used_paths']}, "
            f"changed {stats['items_changed']:.1%}, without candidates "
            f"{stats['items_without_candidates']} "
            f"({stats['m_step_seconds']:.1f} s)", flush=True)
    return stats


class FreezeReranker(keras.callbacks.Callback):
  """From epoch `epoch` (0-based) on, the softmax reranker's item
  embeddings are frozen (Sec. 4.1: joint training for two epochs, then the
  softmax embeddings fixed while DR trains on). The train function is
  retraced once so the optimizer no longer touches them.
  `DeepRetrievalModel.fit` adds one when the model's `freeze_epoch` is set.

  Example:

      model.fit(data, epochs=4, callbacks=[dr_tf.FreezeReranker(2)])
  """

  def __init__(self, epoch: int):
    super().__init__()
    self.epoch = int(epoch)

  def on_epoch_begin(self, epoch, logs=None):
    if epoch >= self.epoch and not self.model.reranker_frozen:
      self.model.reranker_frozen = True
      self.model.train_function = self.model.make_train_function(force=True)
