"""The baselines every paper is compared with, on the leave-one-out protocol.

    python -m benchmarks.baselines [--data_root=../shared/data] \\
        [--seeds=0,1,2] [--max_epochs=8]

Most popular and item-CF run as `python -m retrieval_tf.train` processes
(the exact commands are written into RESULTS.md; they have no training
length to choose). The two-tower runs in this process, once per seed, with
its training length chosen on a validation split carved from the training
side, never on the test split:

* validation: each user's last training event is that user's validation
  target, ranked among 99 negatives sampled (seeded) from the items the user
  never touched (training items and the test target excluded); the model is
  trained on the training events without the validation targets (the rows
  of `retrieval_tf.datasets.leave_one_out(..., validation=True)`, which
  `retrieval_tf.train --early_stopping` uses; here the negatives are drawn
  with the run's seed itself);
* after every epoch (1 .. `--max_epochs`) the model's validation HR@10 is
  computed; the weights of the best epoch are kept (the curve and the chosen
  epoch go into `results/baselines.json`);
* the test split is evaluated once per seed, with those weights, the user's
  whole training history (validation target included) as the tower's input.

It records HR@10 / NDCG@10 among the target + 99 negatives, recall@10/@50
over the full corpus (training items excluded) as mean ± std over the seeds,
and training examples/s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Sequence

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report

flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ncf-ml-1m/ and amazon-beauty/ (relative "
                    "to the repository root).")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks"),
                    "Where the runs go (relative to the repository root).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Two-tower seeds (each its own "
                  "training run; test figures are mean ± std over them).")
flags.DEFINE_integer("max_epochs", 8, "Two-tower: the longest training "
                     "tried; validation HR@10 after every epoch picks the "
                     "epoch whose weights are tested.")
flags.DEFINE_list("datasets", ["ncf-ml-1m", "amazon-beauty"], "Datasets "
                  "(the rows of the others are kept from the last run).")
FLAGS = flags.FLAGS

REPO_ROOT = harness.REPO_ROOT
DATASETS = ("ncf-ml-1m", "amazon-beauty")
FLOORS = ("most_popular", "item_cf")
KEYS = ("hr@10", "ndcg@10", "recall@10", "recall@50")
# The two-tower's settings: `python -m retrieval_tf.train`'s defaults.
BATCH_SIZE = 1024
HISTORY = 50
DIM = 64
LEARNING_RATE = 0.1
TEMPERATURE = 0.05
NUM_NEGATIVES = 99
# The PDN paper's Table 2 (NCF ML-1M, target + 99 negatives).
PAPER = {"YouTube DNN (PDN paper)": (0.6187, 0.3579),
         "item-based CF, item-to-item (PDN paper)": (0.4033, 0.2132)}


def _floor_command(model: str, dataset: str, output_dir: str):
  data_dir = os.path.join(FLAGS.data_root, dataset)
  return ["python", "-m", "retrieval_tf.train", f"--model={model}",
          f"--dataset={dataset}", f"--data_dir={data_dir}",
          f"--output_dir={output_dir}", "--overwrite", "--verbose=2"]


def validation_split(split, seed: int):
  """`(fit_log, validation)`: the training side of a `LeaveOneOut` split
  without each user's last training event, and those events as a
  `LeaveOneOut` whose 99 negatives are items the user never touched (neither
  in training nor the test target), sampled with `seed`."""
  from retrieval_tf import datasets  # pylint: disable=g-import-not-at-top
  train = split.dataset.interactions
  fit_log, held = datasets.splits.leave_one_out(train)
  touched = datasets.Interactions(
      np.concatenate([train.user, split.test.user]),
      np.concatenate([train.item, split.test.item]))
  negatives = datasets.splits.sample_negatives(
      held, split.dataset.num_items, NUM_NEGATIVES, exclude=touched,
      seed=seed)
  valid = datasets.LeaveOneOut(
      dataclasses.replace(split.dataset, interactions=fit_log), held,
      negatives)
  return fit_log, valid


def two_tower_seed(split, seed: int, max_epochs: int) -> Dict[str, Any]:
  """One seed: train with validation after every epoch, test the best
  epoch's weights once. Returns the test metrics, the validation curve and
  the chosen epoch."""
  import retrieval_tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  dataset = split.dataset
  fit_log, valid = validation_split(split, seed)
  user_fields = {k: v for k, v in dataset.user_features.items()
                 if k in dataset.feature_vocabularies}
  item_fields = {k: v for k, v in dataset.item_features.items()
                 if k in dataset.feature_vocabularies}
  train = retrieval_tf.training_dataset(
      fit_log, batch_size=BATCH_SIZE, history_length=HISTORY,
      user_features=user_fields, item_features=item_fields, shuffle=True,
      seed=seed, repeat=True, with_log_q=True, drop_remainder=True,
      num_users=dataset.num_users, num_items=dataset.num_items)
  model = retrieval_tf.TwoTowerModel(
      dataset.num_users, dataset.num_items,
      user_features={k: len(dataset.feature_vocabularies[k])
                     for k in user_fields},
      item_features={k: len(dataset.feature_vocabularies[k])
                     for k in item_fields},
      embedding_dim=DIM, output_dim=DIM, temperature=TEMPERATURE)
  model.compile(optimizer=keras.optimizers.Adagrad(LEARNING_RATE))
  steps = max(1, math.ceil(len(fit_log) / BATCH_SIZE))
  curve: List[Dict[str, float]] = []
  best = {"hr@10": -1.0}
  train_seconds = 0.0
  for epoch in range(1, max_epochs + 1):
    start = time.perf_counter()
    model.fit(train, epochs=epoch, initial_epoch=epoch - 1,
              steps_per_epoch=steps, verbose=0)
    train_seconds += time.perf_counter() - start
    scores = retrieval_tf.evaluate(model, valid, history_length=HISTORY)
    point = {"epoch": epoch, "valid_hr@10": scores["hr@10"],
             "valid_ndcg@10": scores["ndcg@10"]}
    curve.append(point)
    print(f"seed {seed} epoch {epoch}: validation HR@10 "
          f"{scores['hr@10']:.4f} NDCG@10 {scores['ndcg@10']:.4f}",
          flush=True)
    if scores["hr@10"] > best["hr@10"]:
      best = {"hr@10": scores["hr@10"], "epoch": epoch,
              "weights": model.get_weights()}
  model.set_weights(best["weights"])
  test = retrieval_tf.evaluate(model, split, history_length=HISTORY)
  print(f"seed {seed}: chosen epoch {best['epoch']}, test HR@10 "
        f"{test['hr@10']:.4f}", flush=True)
  return dict(test, seed=seed, chosen_epoch=best["epoch"],
              validation_curve=curve, num_train_examples=len(fit_log),
              num_validation_users=len(valid.test),
              train_examples_per_second=round(
                  steps * BATCH_SIZE * max_epochs / train_seconds, 1))


def _two_tower_row(dataset: str, entry: Dict[str, Any]) -> List[Any]:
  """The table row of a two-tower entry: several seeds with the epoch chosen
  on validation, or (an entry kept from before) one CLI run."""
  if "runs" not in entry:
    return [dataset, "two_tower (one seed, epochs fixed, not chosen on "
                     "validation)"] + [
        entry[k] for k in KEYS] + [
            f"{entry['epochs_run']} (fixed)",
            f"{entry['train_examples_per_second']:,.0f}",
            f"{entry['total_seconds']:.1f}"]
  runs = entry["runs"]
  return [dataset, f"two_tower ({len(runs)} seeds)"] + [
      report.mean_std(runs, k) for k in KEYS] + [
          ", ".join(str(r["chosen_epoch"]) for r in runs),
          f"{np.mean([r['train_examples_per_second'] for r in runs]):,.0f}",
          entry.get("total_seconds", "-")]


def _previous(datasets: Sequence[str]) -> Dict[str, Any]:
  """The recorded entries of the datasets not run now (rerunning one
  dataset keeps the others' rows)."""
  path = os.path.join(report.RESULTS_DIR, "baselines.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {k: v for k, v in json.load(f).items()
            if k.split("/")[0] not in datasets}


def main(unused_argv):
  os.chdir(REPO_ROOT)  # the recorded commands run from the repository root
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  root = FLAGS.output_root
  seeds = [int(s) for s in FLAGS.seeds]
  raw = _previous(FLAGS.datasets)
  for dataset in FLAGS.datasets:
    for model in FLOORS:
      out = os.path.join(root, dataset, model)
      line = harness.run_command(_floor_command(model, dataset, out))
      raw[f"{dataset}/{model}"] = dict(harness.read_metrics(out),
                                       command=line)
    start = time.perf_counter()
    data = registry.leave_one_out(
        registry.load_rec_dataset(dataset,
                                  os.path.join(FLAGS.data_root, dataset)),
        num_negatives=NUM_NEGATIVES, seed=seeds[0])
    runs = []
    for seed in seeds:
      if data.dataset.test_negatives is None and seed != seeds[0]:
        data = registry.leave_one_out(
            registry.load_rec_dataset(
                dataset, os.path.join(FLAGS.data_root, dataset)),
            num_negatives=NUM_NEGATIVES, seed=seed)
      runs.append(two_tower_seed(data, seed, FLAGS.max_epochs))
    raw[f"{dataset}/two_tower"] = {
        "command": "python -m benchmarks.baselines " + " ".join(sys.argv[1:]),
        "seeds": seeds, "max_epochs": FLAGS.max_epochs,
        "settings": {"batch_size": BATCH_SIZE, "history_length": HISTORY,
                     "embedding_dim": DIM, "learning_rate": LEARNING_RATE,
                     "temperature": TEMPERATURE},
        "mean": {k: float(np.mean([r[k] for r in runs])) for k in KEYS},
        "std": {k: float(np.std([r[k] for r in runs])) for k in KEYS},
        "total_seconds": round(time.perf_counter() - start, 1),
        "runs": runs}
  write(raw)


def write(raw: Dict[str, Any]) -> None:
  """The `baselines` section of RESULTS.md and its JSON, from `raw`."""
  datasets = [d for d in DATASETS if f"{d}/two_tower" in raw]
  rows = []
  for dataset in datasets:
    for model in FLOORS:
      metrics = raw[f"{dataset}/{model}"]
      rows.append([dataset, model] + [metrics[k] for k in KEYS] +
                  ["-", "-", f"{metrics['total_seconds']:.1f}"])
    rows.append(_two_tower_row(dataset, raw[f"{dataset}/two_tower"]))
  for name, (hr, ndcg) in PAPER.items():
    rows.append(["ncf-ml-1m", name, hr, ndcg, "-", "-", "-", "-", "-"])
  table = report.markdown_table(
      ["dataset", "model", "HR@10 (1+99)", "NDCG@10 (1+99)",
       "recall@10 (full)", "recall@50 (full)", "epochs (validation)",
       "train ex/s", "total s"], rows)
  commands = "\n".join(f"    {v['command']}" for k, v in raw.items()
                       if not k.endswith("two_tower"))
  two_tower = "\n".join(f"    {raw[f'{d}/two_tower']['command']}   # {d}"
                        for d in datasets)
  curves = "\n".join(
      f"* {name}, seed {r['seed']}: " + ", ".join(
          f"{p['valid_hr@10']:.4f}" for p in r["validation_curve"])
      for name, v in raw.items() if name.endswith("two_tower")
      and "runs" in v for r in v["runs"])
  report.write_section("baselines", f"""
## Baselines: two-tower, most popular, item-CF (leave-one-out)

Measured on {report.machine()} (shared with other jobs: "train ex/s" and
"total s" are loaded timings). The floors run as their own processes, from
the repository root:

{commands}

The two-tower (the `retrieval_tf.train` defaults: batch {BATCH_SIZE},
history {HISTORY}, d {DIM}, Adagrad {LEARNING_RATE}, temperature
{TEMPERATURE}) rows were measured by (a `benchmarks.baselines` command
trains inside the benchmark, one run per seed):

{two_tower}

In the rows with seeds, the epoch count is chosen per seed on a validation
split from the training side (each user's last training event among 99 never-touched items; the
model trains without those events), up to `--max_epochs`, and the test
split is evaluated once per seed at the chosen epoch, the user's whole
training history as input; figures are mean ± std (population) over the
seeds.

{table}

Validation HR@10 after each epoch (epoch 1 first):

{curves}
""", raw)


if __name__ == "__main__":
  app.run(main)
