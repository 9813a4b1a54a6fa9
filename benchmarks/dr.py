"""Deep Retrieval benchmarks (Gao et al., CIKM'21, Sec. 4).

    python -m benchmarks.dr --part=table        # Table 1/2 analogue
    python -m benchmarks.dr --part=sensitivity  # Sec. 4.3 + Table 5
    python -m benchmarks.dr --part=timing       # Table 3 analogue

* `table` (section `dr_table`): `python -m dr_tf.train` on ML-1M and Amazon
  Beauty for `--seeds` seeds; precision / recall / F-measure @10 and @50 of
  DR with reranking, DR alone (path order), brute force over the same
  softmax embeddings, the shared two-tower baseline
  (`retrieval_tf.train --protocol=held_out_users`: the same held-out users
  and truth, the same step budget; with and without the datasets' user and
  item fields, which DR does not use) and most-popular, mean and standard
  deviation over seeds; recall@10 against the beam size B from the same
  models (`--eval_beam_sizes`). With `--early_stopping=N` (section
  `dr_table_valid`) each DR and two-tower run trains up to `--max_epochs`
  (two-tower: `--two_tower_max_epochs`) epochs and keeps its best epoch on `--num_valid_users` validation users
  held out of training like the test users (patience N; the epoch chosen
  per seed goes into the table), never looking at the test users.
* `sensitivity` (section `dr_sensitivity`): one ML-1M run per setting of
  alpha (Table 5: top path size against alpha, alpha = 0 showing the
  collapse), D, J and K, others at their defaults. With `--early_stopping`
  (section `dr_sensitivity_valid`) each run's length is chosen on
  validation users as in the table, and the default row is the validated
  table's seed-0 run.
* `timing` (section `dr_timing`): milliseconds per request of the exported
  DR servable (raw ids -> encoder -> beam search -> CSR -> rerank -> top-k)
  against brute force in TF (encoder -> all V logits -> top-k) over the
  same embeddings, as the item count grows to 1M, one thread (pinned).
  The timing models are untrained (random weights, random pi with about 3
  items per path): the cost of inference does not depend on training.

Training runs are kept in `runs/dr_bench/` and reused when their
`metrics.json` exists (delete the folder to remeasure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from benchmarks import harness, report

RUNS = "runs/dr_bench"
DATA = os.path.join(os.path.dirname(harness.REPO_ROOT), "shared", "data")
DATASETS = {"ml-1m": "ml-1m", "amazon-beauty": "amazon-beauty"}
METHODS = (("DR + rerank", ""), ("DR alone (path order)", "norerank_"),
           ("brute force, same softmax embeddings", "brute_"),
           ("two-tower baseline (retrieval_tf, same users)", "two_tower_"),
           ("two-tower, history only (--noside_features)",
            "two_tower_ids_"),
           ("most popular", "popular_"))
EVAL_BEAMS = ("5", "10", "50", "100")


def _train(name: str, dataset: str, extra: List[str], common: List[str],
           module: str = "dr_tf.train", threads: int = 0) -> Dict:
  out = f"{RUNS}/{name}"
  if not os.path.exists(os.path.join(harness.REPO_ROOT, out,
                                     "metrics.json")):
    cmd = ["python", "-m", module, f"--dataset={dataset}",
           f"--data_dir={os.path.relpath(os.path.join(DATA, DATASETS[dataset]), harness.REPO_ROOT)}",
           f"--output_dir={out}", "--overwrite", "--verbose=2"]
    harness.run_command(cmd + common + extra, threads=threads or None)
  metrics = harness.read_metrics(out)
  return metrics


def _two_tower(dataset: str, seed: int, common: List[str], suffix: str = "",
               threads: int = 0) -> Dict:
  """The shared two-tower baseline (`retrieval_tf.train`) on the same
  held-out users and truth as `dr_tf.train --seed=seed` (same split flags,
  history length 69), with the DR runs' step budget and batch size; its
  metrics under the `two_tower_` prefix, and those of the same model
  without the dataset's user and item fields (DR's information: the
  history only) under `two_tower_ids_`. `suffix` names the runs of a
  training-length setting other than the default."""
  budget = [flag for flag in common if flag.startswith(
      ("--epochs=", "--steps_per_epoch=", "--batch_size=",
       "--early_stopping=", "--num_valid_users="))]
  flags = ["--model=two_tower", "--protocol=held_out_users",
           f"--seed={seed}", "--min_rating=4", "--min_user_events=10",
           "--num_test_users=1000", "--history_length=69"]
  metrics = {}
  for prefix, extra in (("two_tower", []),
                        ("two_tower_ids", ["--noside_features"])):
    run = _train(f"{dataset}_{prefix}_s{seed}{suffix}", dataset,
                 flags + extra, budget, module="retrieval_tf.train",
                 threads=threads)
    metrics.update({f"{prefix}_{key}": value for key, value in run.items()})
  return metrics


def _mean_std(values):
  values = [float(v) for v in values]
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else 0.0)


# The run whose epoch count a table row reports ("" : DR's own).
EPOCH_SOURCE = {"two_tower_": "two_tower_", "two_tower_ids_": "two_tower_ids_",
                "popular_": None}


def _chosen_epochs(runs: List[Dict], prefix: str) -> str:
  """The epochs validation chose per seed for a row's model ("-": no
  training)."""
  source = EPOCH_SOURCE.get(prefix, "")
  if source is None:
    return "-"
  return report.chosen_epochs(runs, f"{source}best_epoch")


def _training_flags(args) -> Tuple[List[str], str]:
  """Every DR run's flags (`--train_flags`, and with `--early_stopping`
  the cap, patience and validation users) and the suffix of its run
  folder ("" without validation)."""
  common = args.train_flags.split()
  if not args.early_stopping:
    return common, ""
  if args.max_epochs < 1:
    raise SystemExit("--early_stopping needs --max_epochs >= 1 (the "
                     "longest training tried).")
  return common + [f"--epochs={args.max_epochs}",
                   f"--early_stopping={args.early_stopping}",
                   f"--num_valid_users={args.num_valid_users}"], (
                       f"_es{args.early_stopping}x{args.max_epochs}")


def table(args) -> None:
  common, suffix = _training_flags(args)
  section = "dr_table_valid" if args.early_stopping else "dr_table"
  two_tower_cap = args.two_tower_max_epochs or args.max_epochs
  two_tower_common, two_tower_suffix = common, suffix
  if args.early_stopping and two_tower_cap != args.max_epochs:
    two_tower_common = [f for f in common if not f.startswith("--epochs=")]
    two_tower_common.append(f"--epochs={two_tower_cap}")
    two_tower_suffix = f"_es{args.early_stopping}x{two_tower_cap}"
  raw, lines = {"command_flags": common, "runs": {}}, []
  for spec in args.datasets.split(","):
    dataset, _, seeds = spec.partition(":")   # "name" or "name:seeds"
    runs = [dict(_train(f"{dataset}_s{seed}{suffix}", dataset,
                        [f"--seed={seed}", "--eval_beam_sizes=" +
                         ",".join(EVAL_BEAMS)], common,
                        threads=args.threads),
                 **_two_tower(dataset, seed, two_tower_common,
                              two_tower_suffix, args.threads))
            for seed in range(int(seeds or args.seeds))]
    raw["runs"][dataset] = runs
    rows = []
    for label, prefix in METHODS:
      row = [label]
      for k in (10, 50):
        for metric in ("precision", "recall", "f"):
          mean, std = _mean_std(r[f"{prefix}{metric}@{k}"] for r in runs)
          row.append(f"{mean:.4f} ± {std:.4f}")
      if args.early_stopping:
        row.append(_chosen_epochs(runs, prefix))
      rows.append(row)
    lines.append(f"### {dataset}: {len(runs)} seed(s), "
                 f"{runs[0]['num_test_users']} held-out users, "
                 f"{runs[0]['num_items']} items\n")
    lines.append(report.markdown_table(
        ["method", "P@10", "R@10", "F@10", "P@50", "R@50", "F@50"] +
        (["epochs (validation)"] if args.early_stopping else []), rows))
    with open(os.path.join(harness.REPO_ROOT, RUNS, f"{dataset}_s0{suffix}",
                           "config.json")) as f:
      config = json.load(f)
    lines.append(
        f"\nDR retrieved {_mean_std(r['mean_candidates'] for r in runs)[0]:.0f}"
        f" distinct items per user (K = {config['num_nodes']}, D = "
        f"{config['depth']}, J = {config['num_paths']}, B = "
        f"{config['beam_size']}, alpha = {config['alpha']}"
        f"); top path size {_mean_std(r['top_path_size'] for r in runs)[0]:.0f},"
        f" used paths {_mean_std(r['used_paths'] for r in runs)[0]:.0f}, "
        f"train {_mean_std(r['train_seconds'] for r in runs)[0]:.0f} s per "
        "run.\n")
    beam_rows = []
    for b in EVAL_BEAMS:
      beam_rows.append(
          [b, _mean_std(r[f"b{b}_recall@10"] for r in runs)[0],
           _mean_std(r[f"b{b}_precision@10"] for r in runs)[0],
           _mean_std(r[f"b{b}_mean_candidates"] for r in runs)[0]])
    lines.append("Beam size B (same models, reranked):\n")
    lines.append(report.markdown_table(
        ["B", "recall@10", "precision@10", "items retrieved"], beam_rows))
    lines.append("")
  command = (f"python -m benchmarks.dr --part=table "
             f"--datasets={args.datasets} --train_flags='{args.train_flags}'")
  if args.early_stopping:
    command += (f" --max_epochs={args.max_epochs} --two_tower_max_epochs="
                f"{two_tower_cap} --early_stopping="
                f"{args.early_stopping} --num_valid_users="
                f"{args.num_valid_users}")
  if args.threads:
    command += f" --threads={args.threads}"
  header = (f"## Deep Retrieval, Table 1/2 analogue"
            f"{' (training length chosen on validation)' if suffix else ''}"
            f"\n\n`{command}` on {report.machine()}. DR protocol: held-out "
            "users, first half of the history in, second half as truth, "
            "input items excluded; mean ± std over seeds (seed = split + "
            "init).\n")
  if args.early_stopping:
    header += (
        f"\nEvery DR run trains up to {args.max_epochs} epochs, every "
        f"two-tower run up to {two_tower_cap}, and each keeps the weights "
        f"(DR: and paths) of its best epoch by recall@50 on {args.num_valid_users} validation users held out "
        "of training like the test users (the test users are the same as "
        f"without validation), stopping after {args.early_stopping} "
        "epoch(s) without improvement; the test users are evaluated once, "
        "at that epoch. \"epochs (validation)\": the chosen epoch per "
        "seed (DR alone and brute force use DR's model).\n")
  report.write_section(section, header + "\n" + "\n".join(lines), raw)


def sensitivity(args) -> None:
  common, suffix = _training_flags(args)
  settings = []
  for alpha in args.alphas.split(","):
    settings.append((f"alpha={alpha}", [f"--alpha={alpha}"]))
  for item in filter(None, args.structures.split(";")):
    settings.append((item, [f"--{kv}" for kv in item.split(",")]))
  rows, raw = [], {"command_flags": common, "runs": {}}
  for label, extra in settings:
    name = "sens_" + label.replace("=", "").replace(",", "_") + suffix
    if label == "alpha=1":    # the default: the table's seed-0 run
      name = "ml-1m_s0" + suffix
      extra = ["--eval_beam_sizes=" + ",".join(EVAL_BEAMS)]
    m = _train(name, "ml-1m", extra + ["--seed=0"], common,
               threads=args.threads)
    raw["runs"][label] = m
    rows.append([label, m["recall@10"], m["precision@10"],
                 m["norerank_recall@10"], m["brute_recall@10"],
                 m["mean_candidates"], m["top_path_size"], m["used_paths"],
                 round(m["mean_path_size"], 2)] +
                ([m["best_epoch"]] if args.early_stopping else []))
  benchmark_flags = (
      f" --early_stopping={args.early_stopping} --max_epochs="
      f"{args.max_epochs} --num_valid_users={args.num_valid_users}"
      if args.early_stopping else "") + (
          f" --threads={args.threads}" if args.threads else "")
  text = (f"## Deep Retrieval, sensitivity (Sec. 4.3) and Table 5"
          f"{', training length chosen on validation' if suffix else ''}"
          f"\n\n`python -m benchmarks.dr --part=sensitivity "
          f"--alphas={args.alphas} --structures='{args.structures}' "
          f"--train_flags='{args.train_flags}'{benchmark_flags}` on "
          f"{report.machine()}; ML-1M, seed 0, one run per row, other flags "
          "at their defaults"
          + (" (the default row is the validated table's seed-0 run); each "
             "run keeps its best epoch by the validation users' recall@50 "
             "(\"epoch\")" if suffix else "") + ".\n\n"
          + report.markdown_table(
              ["setting", "R@10 (DR+rerank)", "P@10", "R@10 (DR alone)",
               "R@10 (brute force)", "items retrieved", "top path size",
               "used paths", "mean path size"] +
              (["epoch"] if suffix else []), rows))
  report.write_section("dr_sensitivity_valid" if suffix else
                       "dr_sensitivity", text, raw)


def _timing_dataset(num_items: int):
  from retrieval_tf.datasets.types import (  # pylint: disable=g-import-not-at-top
      Interactions, RecDataset, Vocabulary)
  return RecDataset(
      name="timing", interactions=Interactions(
          np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]),
          timestamp=np.arange(4)),
      users=Vocabulary(["u0", "u1"]),
      items=Vocabulary([str(i) for i in range(num_items)]))


def _median_ms(fn, repeats: int) -> float:
  fn()
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def timing(args) -> None:
  harness.pin_threads()
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from dr_tf.model import DeepRetrievalModel  # pylint: disable=g-import-not-at-top
  from dr_tf.servable import export_dr  # pylint: disable=g-import-not-at-top
  rows, raw = [], {"k": args.k, "history_length": 69, "runs": []}
  rng = np.random.default_rng(0)
  for num_items in [int(v) for v in args.sizes.split(",")]:
    # K^D ~ V so that pi (J = 3) holds about 3 items per path.
    k_nodes = max(2, int(round(num_items ** (1 / 3))))
    model = DeepRetrievalModel(num_items, num_nodes=k_nodes, depth=3,
                               num_paths=3, beam_size=args.beam,
                               score_paths=0, seed=0)
    history = rng.integers(0, num_items, (args.batch, 69)).astype(np.int32)
    model({"history": tf.constant(history), "item_id": tf.constant(
        history[:, 0])})
    folder = tempfile.mkdtemp(prefix="dr_timing_")
    start = time.perf_counter()
    path = export_dr(model, folder, _timing_dataset(num_items), 69,
                     beam_size=args.beam, max_k=args.k)
    export_seconds = time.perf_counter() - start
    serve = tf.saved_model.load(path).signatures["serving_default"]
    strings = tf.constant(history.astype(str))
    ks = tf.fill([args.batch], args.k)
    ids = tf.constant(history)
    brute = tf.function(lambda h: model.brute_force(h, h >= 0, k=args.k))
    in_memory = tf.function(lambda h: model.retrieve(h, h >= 0, h,
                                                     k=args.k))
    served = _median_ms(lambda: serve(history=strings, k=ks), args.repeats)
    dr_ms = _median_ms(lambda: in_memory(ids), args.repeats)
    brute_ms = _median_ms(lambda: brute(ids), args.repeats)
    count = float(np.mean(serve(history=strings, k=ks)[
        "num_candidates"].numpy()))
    run = {"num_items": num_items, "K": k_nodes, "D": 3, "J": 3,
           "B": args.beam, "batch": args.batch, "dr_servable_ms": served,
           "dr_in_process_ms": dr_ms, "brute_force_ms": brute_ms,
           "items_retrieved": count, "export_seconds": export_seconds,
           "speedup_servable": brute_ms / served,
           "speedup_in_process": brute_ms / dr_ms}
    print(run, flush=True)
    raw["runs"].append(run)
    rows.append([f"{num_items:,}", f"{k_nodes}x3", round(count),
                 f"{served:.2f}", f"{dr_ms:.2f}", f"{brute_ms:.2f}",
                 f"{brute_ms / served:.1f}x", f"{brute_ms / dr_ms:.1f}x"])
  text = (f"## Deep Retrieval, Table 3 analogue: inference time\n\n"
          f"`python -m benchmarks.dr --part=timing --sizes={args.sizes} "
          f"--batch={args.batch} --beam={args.beam} --k={args.k}` on "
          f"{report.machine()}, TensorFlow pinned to one thread; median "
          f"ms per call of {args.batch} request row(s) (history length 69)"
          " over "
          f"{args.repeats} calls. Untrained models (random weights, random "
          "pi, J = 3, K^3 ~ V): inference cost does not depend on "
          "training. DR servable = the exported SavedModel (string ids in "
          "and out); DR in process = `model.retrieve` in a `tf.function`; "
          "brute force = the same encoder, all V reranker logits, top-k, "
          "in a `tf.function`.\n\n" + report.markdown_table(
              ["items", "K x D", "items retrieved", "DR servable ms",
               "DR in process ms", "brute force ms",
               "speed-up (servable)", "speed-up (in process)"], rows))
  report.write_section("dr_timing", text, raw)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--part", choices=("table", "sensitivity", "timing"),
                      required=True)
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--datasets", default="ml-1m,amazon-beauty",
                      help="comma-separated NAME or NAME:SEEDS")
  parser.add_argument("--train_flags", default="",
                      help="extra flags for every dr_tf.train run")
  parser.add_argument("--early_stopping", type=int, default=0,
                      help="table, sensitivity: patience in epochs; each "
                      "run keeps its "
                      "best epoch on validation users (0: train "
                      "--train_flags' epochs, no validation)")
  parser.add_argument("--max_epochs", type=int, default=0,
                      help="with --early_stopping: the longest "
                      "training tried (epochs of --train_flags' "
                      "--steps_per_epoch)")
  parser.add_argument("--two_tower_max_epochs", type=int, default=0,
                      help="table with --early_stopping: the longest "
                      "two-tower training tried (0: --max_epochs)")
  parser.add_argument("--num_valid_users", type=int, default=500,
                      help="with --early_stopping: validation users")
  parser.add_argument("--threads", type=int, default=0,
                      help="TF threads of each training process (0: TF's "
                      "default)")
  parser.add_argument("--alphas", default="0,1,10")
  parser.add_argument("--structures",
                      default="depth=2;num_paths=1;num_nodes=15")
  parser.add_argument("--sizes", default="10000,100000,1000000")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--beam", type=int, default=100)
  parser.add_argument("--k", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()
  {"table": table, "sensitivity": sensitivity, "timing": timing}[args.part](
      args)


if __name__ == "__main__":
  main()
