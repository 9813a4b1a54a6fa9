"""Is the input pipeline fast enough? tf.data examples/s vs training steps/s.

    python -m benchmarks.pipeline [--events=1000000] [--batch_size=1024]

Builds a 1M-event interaction log (6,040 users, 3,706 items: the NCF ML-1M
shape) and measures, side by side in one run with TF threads pinned:
(1) examples/s of `retrieval_tf.data.training_dataset` alone (history windows
of 50, user/item side features, logQ), and (2) examples/s of two-tower
training steps fed from an in-memory cached batch, so the step rate does not
include the pipeline. The pipeline must be at least 5x the training rate.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import report
from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets.types import Interactions
from retrieval_tf.models.two_tower import TwoTowerModel

flags.DEFINE_integer("events", 1_000_000, "Interactions in the log.")
flags.DEFINE_integer("batch_size", 1024, "Batch size.")
flags.DEFINE_integer("history_length", 50, "History window.")
flags.DEFINE_integer("threads", 2, "TF intra/inter-op threads (pinned).")
flags.DEFINE_integer("steps", 200, "Batches timed for each side.")
FLAGS = flags.FLAGS

USERS, ITEMS = 6040, 3706


def _log(events: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  log = Interactions(rng.integers(0, USERS, events),
                     rng.zipf(1.3, events) % ITEMS,
                     timestamp=rng.integers(0, 10**9, events))
  user_features = {"gender": rng.integers(0, 2, USERS),
                   "age": rng.integers(0, 7, USERS),
                   "occupation": rng.integers(0, 21, USERS)}
  item_features = {"genres": np.where(rng.random((ITEMS, 6)) < 0.3,
                                      rng.integers(0, 18, (ITEMS, 6)), -1)}
  return log, user_features, item_features


def _rate(iterator, steps: int, batch: int, warmup: int = 10) -> float:
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return steps * batch / (time.perf_counter() - start)


def main(unused_argv):
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  log, user_features, item_features = _log(FLAGS.events)
  ds = pipeline.training_dataset(
      log, batch_size=FLAGS.batch_size, history_length=FLAGS.history_length,
      user_features=user_features, item_features=item_features,
      shuffle=True, seed=0, repeat=True, with_log_q=True,
      drop_remainder=True)
  pipeline_rate = _rate(iter(ds), FLAGS.steps, FLAGS.batch_size)

  model = TwoTowerModel(USERS, ITEMS,
                        {k: int(v.max()) + 1 for k, v in
                         user_features.items()},
                        {"genres": 18})
  model.compile(keras.optimizers.Adagrad(0.1))
  batch = next(iter(ds))
  cached = tf.data.Dataset.from_tensors(batch).repeat()
  step = model.make_train_function()
  train_iter = iter(cached)
  for _ in range(10):
    step(train_iter)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    logs = step(train_iter)
  float(logs["loss"])
  train_rate = FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)

  ratio = pipeline_rate / train_rate
  rows = [["tf.data training_dataset (history 50, features, logQ)",
           pipeline_rate],
          ["two-tower train step (cached batch)", train_rate],
          ["pipeline / training", f"{ratio:.1f}x"]]
  table = report.markdown_table(["what", "examples/s"], rows)
  verdict = ("meets" if ratio >= 5 else "MISSES") + " the >= 5x goal"
  report.write_section("pipeline", f"""
## Input pipeline vs training step rate

Measured on {report.machine()}, TF threads pinned to {FLAGS.threads}, batch
{FLAGS.batch_size}, {FLAGS.events:,} events ({USERS} users x {ITEMS} items),
by `python -m benchmarks.pipeline`. The pipeline {verdict}.

{table}
""", {"pipeline_examples_per_second": pipeline_rate,
      "train_examples_per_second": train_rate, "ratio": ratio,
      "batch_size": FLAGS.batch_size, "events": FLAGS.events,
      "threads": FLAGS.threads})
  print(table)


if __name__ == "__main__":
  app.run(main)
