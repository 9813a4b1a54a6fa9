"""PDN benchmarks: Table 2 and Table 4 analogues, and servable latency.

    python -m benchmarks.pdn [--seeds=0,1,2,3,4] [--epochs=1]
        [--steps_per_epoch=500] [--two_tower_epochs=5] [--early_stopping=0]
        [--variants=PDN,...] [--parallel] [--reuse] [--threads=2]
        [--sections=table2,table4,latency] [--latency_items=1000000]
        [--table2_dataset=ncf-ml-1m|amazon-beauty]
        [--table4_datasets=ncf-ml-1m,amazon-beauty] [--beauty_epochs=2]

* Table 2 (target + 99 negatives, on `--table2_dataset`: NCF ML-1M, the
  paper's protocol, or the leave-one-out split of Amazon Beauty): PDN, PDN
  w/o Bias Net, PDN w/o Direct Net (`python -m pdn_tf.train`), the shared
  two-tower baseline, item-based CF and most popular (`python -m
  retrieval_tf.train`), mean and std over `--seeds`; "Personalise" and
  "Item to Item" columns (PDN: SimNet alone, Σ_j softplus(s_ji); two-tower:
  Σ_j <q_j, q_i> over the training history; item CF: Σ_j cosine(j, i)),
  plus the servable's full-corpus recall@50/@300 (two-tower: exact top-k of
  its embeddings, scored on the run's own split: each seed's, checked
  against the run's HR@10). PDN trains `--epochs` of `--steps_per_epoch`
  steps on NCF ML-1M and `--beauty_epochs` full passes on Amazon Beauty.
  NCF ML-1M's split is predefined, so item CF and most popular run on the
  first seed only; Amazon Beauty's sampled negatives depend on the seed, so
  they run on every seed there. With `--early_stopping=N`, the PDN epochs
  and `--two_tower_epochs` are the longest training tried: each PDN and
  two-tower run holds each user's latest training interaction out as a
  validation target (1 + 99), keeps its best epoch by validation HR@10
  (patience N) and is tested once at that epoch; the epochs chosen per seed
  go into the table. `--variants` picks the PDN rows trained. The section
  written is `pdn` (`pdn_valid` with `--early_stopping`) for NCF ML-1M and
  `pdn_beauty` (`pdn_beauty_valid`) for Amazon Beauty; the paper column
  (its MovieLens figures) only for NCF ML-1M.
* Table 4: PDN (first seed) against the two-tower by the user's number of
  training interactions n: HR@10 (1 + 99) and full-corpus recall@300, with
  the relative gain, on each of `--table4_datasets`. NCF ML-1M reuses the
  NCF ML-1M Table 2 runs; every ML-1M user has at least 20 ratings, so the
  paper's short-history buckets (n <= 15) only exist on Amazon Beauty
  (5-core), which gets its own PDN and two-tower runs (`--beauty_epochs`,
  full passes; the folders of the first seed's Amazon Beauty Table 2 runs,
  kept with `--reuse` when the flags match) in the paper's buckets (n <=
  15, 15-30, 30-45, > 45), the first one split further.
* Latency: `benchmarks.servable_latency` (a TensorFlow-only process, one
  thread) on the ML-1M PDN export and on a PDN servable over a
  `--latency_items` synthetic world, raw request -> top-500. The large world
  is NOT trained (random weights) and its I2I index holds random neighbours
  of the same shape (k per item): only its latency is meaningful.

Every training run is its own process (`benchmarks.harness.run_command`),
with the command recorded in the section.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness, report

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0"], "Seeds of the trained rows.")
flags.DEFINE_integer("epochs", 1, "PDN training epochs on NCF ML-1M (with "
                     "--early_stopping: the most tried).")
flags.DEFINE_integer("steps_per_epoch", 0, "PDN steps per epoch on NCF "
                     "ML-1M (0: one pass over the training log).")
flags.DEFINE_bool("parallel", False, "Run a seed's training commands at the "
                  "same time (one process each), to use the cores of a "
                  "shared machine; timings then are not comparable.")
flags.DEFINE_integer("two_tower_epochs", 5, "Two-tower training epochs "
                     "(with --early_stopping: the most tried; 0: no "
                     "two-tower row, Table 2 only).")
flags.DEFINE_integer("early_stopping", 0, "Patience in epochs: each PDN and "
                     "two-tower run keeps its best epoch by validation HR@10 "
                     "(each user's latest training interaction held out); 0: "
                     "train the epochs given, no validation.")
flags.DEFINE_list("variants", ["PDN", "PDN w/o Bias Net",
                               "PDN w/o Direct Net"],
                  "PDN rows of Table 2 to train.")
flags.DEFINE_list("sections", ["table2", "table4", "latency"],
                  "What to run.")
flags.DEFINE_integer("latency_items", 1000000, "Items of the synthetic "
                     "latency world (0: skip it).")
flags.DEFINE_enum("table2_dataset", "ncf-ml-1m", ["ncf-ml-1m",
                                                  "amazon-beauty"],
                  "Dataset of the Table 2 analogue; each writes its own "
                  "section (ncf-ml-1m: pdn / pdn_valid, amazon-beauty: "
                  "pdn_beauty / pdn_beauty_valid).")
flags.DEFINE_list("table4_datasets", ["ncf-ml-1m", "amazon-beauty"],
                  "Datasets of the Table 4 analogue.")
flags.DEFINE_integer("beauty_epochs", 2, "PDN epochs (full passes) of the "
                     "Amazon Beauty runs, Table 4 and Table 2 (with "
                     "--early_stopping: the most tried).")
flags.DEFINE_integer("threads", 2, "TF threads of the training runs.")
flags.DEFINE_bool("reuse", False, "Keep a training run whose output folder "
                  "already holds metrics.json from the same command instead "
                  "of rerunning it (to resume an interrupted benchmark).")

DATA_DIRS = {"ncf-ml-1m": "../shared/data/ncf-ml-1m",
             "amazon-beauty": "../shared/data/amazon-beauty"}
NAMES = {"ncf-ml-1m": "NCF ML-1M", "amazon-beauty": "Amazon Beauty"}
# RESULTS.md section of each Table 2 dataset (+ "_valid" with validation).
SECTIONS = {"ncf-ml-1m": "pdn", "amazon-beauty": "pdn_beauty"}
# Table 4 history-length bucket edges (training interactions n) per dataset.
TABLE4_EDGES = {"ncf-ml-1m": [0, 50, 100, 200, 400, np.inf],
                "amazon-beauty": [0, 5, 10, 15, 30, 45, np.inf]}
flags.register_validator(
    "table4_datasets", lambda names: set(names) <= set(TABLE4_EDGES),
    f"--table4_datasets: each must be one of {sorted(TABLE4_EDGES)}")
OUT = "runs/benchmarks/pdn"
VARIANTS = {"PDN": [], "PDN w/o Bias Net": ["--nobias_net"],
            "PDN w/o Direct Net": ["--nodirect_net"]}
flags.register_multi_flags_validator(
    ["two_tower_epochs", "sections"],
    lambda v: v["two_tower_epochs"] > 0 or "table4" not in v["sections"],
    "--two_tower_epochs=0 (no two-tower) leaves Table 4 nothing to compare: "
    "drop table4 from --sections or train the two-tower")
flags.register_validator(
    "variants", lambda names: bool(names) and set(names) <= set(VARIANTS),
    f"--variants: each must be one of {sorted(VARIANTS)}")
PAPER = {  # Table 2, MovieLens: personalise HR, NDCG; item-to-item HR, NDCG
    "PDN": (0.6770, 0.4071, 0.5152, 0.2859),
    "PDN w/o Bias Net": (0.6323, 0.3401, 0.5080, 0.2795),
    "PDN w/o Direct Net": (0.6642, 0.3930, 0.5124, 0.2813),
    "two-tower": (0.6187, 0.3579, 0.4362, 0.2324),  # YouTube DNN
    "item CF": (None, None, 0.4033, 0.2132),  # PCF
}


def _slug(name: str) -> str:
  return name.lower().replace(" ", "_").replace("/", "")


def _run_dir(name: str, seed: int, dataset: str) -> str:
  """A training run's output folder (Table 2's NCF runs keep their names)."""
  prefix = "" if dataset == "ncf-ml-1m" else f"{dataset}/"
  return f"{OUT}/{prefix}{name}-s{seed}"


def _fixed_split(dataset: str) -> bool:
  """Whether `dataset`'s test targets and negatives are the same for every
  seed (NCF ML-1M's predefined split; elsewhere the negatives are sampled
  with the seed)."""
  return dataset == "ncf-ml-1m"


def _pdn_epochs(dataset: str) -> int:
  """PDN's epochs on `dataset` (with --early_stopping: the most tried):
  `--epochs` on NCF ML-1M, `--beauty_epochs` full passes on Amazon
  Beauty."""
  return FLAGS.epochs if dataset == "ncf-ml-1m" else FLAGS.beauty_epochs


def pdn_command(variant: str, seed: int, export: bool,
                dataset: str = "ncf-ml-1m") -> List[str]:
  cmd = ["python", "-m", "pdn_tf.train", f"--dataset={dataset}",
         f"--data_dir={DATA_DIRS[dataset]}",
         f"--output_dir={_run_dir(_slug(variant), seed, dataset)}",
         "--overwrite", "--verbose=2", f"--seed={seed}",
         f"--epochs={_pdn_epochs(dataset)}",
         "--save_scores"] + VARIANTS[variant]
  if FLAGS.early_stopping:
    cmd.append(f"--early_stopping={FLAGS.early_stopping}")
  if FLAGS.steps_per_epoch and dataset == "ncf-ml-1m":
    cmd.append(f"--steps_per_epoch={FLAGS.steps_per_epoch}")
  if export:
    cmd.append(f"--export_dir={OUT}/export-ml1m")
  return cmd


def baseline_command(model: str, seed: int,
                     dataset: str = "ncf-ml-1m") -> List[str]:
  cmd = ["python", "-m", "retrieval_tf.train", f"--model={model}",
         f"--dataset={dataset}",
         f"--data_dir={DATA_DIRS[dataset]}",
         f"--output_dir={_run_dir(model, seed, dataset)}", "--overwrite",
         "--verbose=2", f"--seed={seed}"]
  if model == "two_tower":
    cmd += [f"--epochs={FLAGS.two_tower_epochs}", "--save_embeddings"]
    if FLAGS.early_stopping:
      cmd.append(f"--early_stopping={FLAGS.early_stopping}")
  return cmd


def _run(cmd: List[str]) -> str:
  """Runs a recorded command (or, with --reuse, keeps its finished run)."""
  out = next(a.split("=", 1)[1] for a in cmd if a.startswith("--output_dir"))
  config = os.path.join(harness.REPO_ROOT, out, "config.json")
  if FLAGS.reuse and os.path.exists(os.path.join(harness.REPO_ROOT, out,
                                                 "metrics.json")):
    with open(config) as f:
      old = json.load(f)
    wanted = {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in cmd
              if a.startswith("--") and "=" in a}
    if all(str(old.get(k)) == v for k, v in wanted.items()
           if k not in ("data_dir", "output_dir", "export_dir")):
      print("$ (reused)", " ".join(cmd), flush=True)
      return " ".join(cmd)
  return harness.run_command(cmd, threads=FLAGS.threads)


def _run_all(cmds: List[List[str]]) -> List[str]:
  """`_run` each command, one after the other or (--parallel) at once."""
  if not FLAGS.parallel:
    return [_run(cmd) for cmd in cmds]
  with concurrent.futures.ThreadPoolExecutor(len(cmds)) as pool:
    return list(pool.map(_run, cmds))


def _split(dataset: str = "ncf-ml-1m", seed: int = 0):
  """The leave-one-out split the training CLIs use for `dataset` and
  `seed` (NCF ML-1M: the predefined one)."""
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  return registry.leave_one_out(
      registry.load_rec_dataset(dataset, DATA_DIRS[dataset], seed=seed),
      seed=seed)


def _two_tower_scores(run_dir: str, data):
  """Personalised and item-to-item scores `[U, 100]` and the exact
  full-corpus top-300 of a two-tower run's saved embeddings on the split
  `data` (checked to be the run's own: `_check_split`)."""
  from retrieval_tf import evaluation  # pylint: disable=g-import-not-at-top
  users = np.load(os.path.join(harness.REPO_ROOT, run_dir,
                               "user_embeddings.npy"))
  items = np.load(os.path.join(harness.REPO_ROOT, run_dir,
                               "item_embeddings.npy"))
  train = data.dataset.interactions
  candidates = np.concatenate([data.test.item[:, None], data.negatives], 1)
  histories = evaluation.exclusion_from_interactions(
      train, data.test.user, data.dataset.num_items)
  personal = np.einsum("ud,ucd->uc", users, items[candidates])
  _check_split(run_dir, personal, data)
  i2i = np.einsum("ud,ucd->uc", np.asarray(histories @ items),
                  items[candidates])
  top = evaluation.top_k_items(users, items, 300, histories)
  return personal, i2i, top


def _check_split(run_dir: str, personal, data) -> None:
  """Raises unless a two-tower run's personalised scores on the split
  `data` give the HR@10 its metrics.json reports (the same test targets
  and negatives as the run trained and tested on)."""
  hr = _sampled(personal, data)["hr@10"]
  reported = harness.read_metrics(run_dir)["hr@10"]
  if not np.isclose(hr, reported, rtol=0, atol=1e-9):
    raise ValueError(f"{run_dir}: HR@10 {hr:.6f} on this benchmark's split "
                     f"but {reported:.6f} in the run's metrics.json: its "
                     "test split differs; rerun it without --reuse")


def _two_tower_metrics(run_dir: str, data) -> Dict[str, float]:
  """Table 2's columns of a two-tower run, from its saved embeddings on
  the split `data`."""
  personal, i2i, top = _two_tower_scores(run_dir, data)
  p, s = _sampled(personal, data), _sampled(i2i, data)
  return {"hr@10": p["hr@10"], "ndcg@10": p["ndcg@10"],
          "i2i_hr@10": s["hr@10"], "i2i_ndcg@10": s["ndcg@10"],
          "recall@50": _recall(top, data.test.item, 50),
          "recall@300": _recall(top, data.test.item, 300)}


def _sampled(scores, data, rows=None) -> Dict[str, float]:
  from retrieval_tf import evaluation  # pylint: disable=g-import-not-at-top
  rows = np.arange(len(data.test)) if rows is None else rows
  return evaluation.evaluate_sampled(lambda r, c: scores[r], rows,
                                     data.test.item[rows],
                                     data.negatives[rows])


def _recall(top, targets, k) -> float:
  return float(np.mean((top[:, :k] == targets[:, None]).any(axis=1)))


def _mean_std(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def _floors_run(dataset: str, first: bool) -> bool:
  """Whether item CF and most popular (deterministic given the split) run
  on a seed: on every seed where the split changes with it, else on the
  `first` only."""
  return first or not _fixed_split(dataset)


def _table2_commands(dataset: str, seed: int, first: bool
                     ) -> List[List[str]]:
  """One seed's Table 2 training runs on `dataset`: the PDN variants, the
  two-tower, item CF and most popular (`_floors_run`). The `first` seed's
  NCF ML-1M PDN is exported for the latency section."""
  cmds = [pdn_command(variant, seed, export=(
      first and variant == "PDN" and dataset == "ncf-ml-1m"), dataset=dataset)
          for variant in FLAGS.variants]
  if FLAGS.two_tower_epochs:
    cmds.append(baseline_command("two_tower", seed, dataset))
  if _floors_run(dataset, first):
    cmds += [baseline_command(m, seed, dataset) for m in ("item_cf",
                                                          "most_popular")]
  return cmds


def table2(dataset: str, seeds, commands, raw) -> str:
  """Table 2's runs on `dataset` for every seed, then its table."""
  rows: Dict[str, Dict[str, list]] = {}

  def add(name, key, value):
    rows.setdefault(name, {}).setdefault(key, []).append(value)

  for seed in seeds:
    first = seed == seeds[0]
    commands.extend(_run_all(_table2_commands(dataset, seed, first)))
    for variant in FLAGS.variants:
      m = harness.read_metrics(_run_dir(_slug(variant), seed, dataset))
      for key in ("hr@10", "ndcg@10", "i2i_hr@10", "i2i_ndcg@10",
                  "recall@50", "recall@300", "train_seconds"):
        add(variant, key, m[key])
      if FLAGS.early_stopping:
        add(variant, "chosen_epoch", m["best_epoch"])
    if FLAGS.two_tower_epochs:
      run_dir = _run_dir("two_tower", seed, dataset)
      if FLAGS.early_stopping:
        add("two-tower", "chosen_epoch",
            harness.read_metrics(run_dir)["best_epoch"])
      for key, value in _two_tower_metrics(run_dir,
                                           _split(dataset, seed)).items():
        add("two-tower", key, value)
    if not _floors_run(dataset, first):
      continue
    for model, name in (("item_cf", "item CF"),
                        ("most_popular", "most popular")):
      m = harness.read_metrics(_run_dir(model, seed, dataset))
      column = "i2i_" if model == "item_cf" else ""
      add(name, f"{column}hr@10", m["hr@10"])
      add(name, f"{column}ndcg@10", m["ndcg@10"])
      add(name, "recall@50", m["recall@50"])
  raw["table2_dataset"] = dataset
  raw["table2"] = rows
  return _table2_text(dataset, rows)


def _table2_text(dataset: str, rows: Dict[str, Dict[str, list]]) -> str:
  """Table 2 in markdown (the paper's column on NCF ML-1M, its MovieLens
  figures; the chosen epochs with --early_stopping), after its notes."""
  paper = dataset == "ncf-ml-1m"
  header = ["method", "HR@10", "NDCG@10", "I2I HR@10", "I2I NDCG@10",
            "recall@50", "recall@300"]
  if paper:
    header.append("paper (HR, NDCG, I2I HR, I2I NDCG)")
  if FLAGS.early_stopping:
    header.append("epochs (validation)")
  table = []
  for name, values in rows.items():
    table.append([name] + [_mean_std(values.get(k, [])) for k in (
        "hr@10", "ndcg@10", "i2i_hr@10", "i2i_ndcg@10", "recall@50",
        "recall@300")])
    if paper:
      table[-1].append(", ".join("-" if v is None else f"{v:.4f}"
                                 for v in PAPER[name])
                       if name in PAPER else "-")
    if FLAGS.early_stopping:
      table[-1].append(", ".join(str(e) for e in values["chosen_epoch"])
                       if "chosen_epoch" in values else "-")
  text = report.markdown_table(header, table)
  if not _fixed_split(dataset):
    text = ("The 99 negatives of each test target are sampled with the "
            "seed, so every row (item CF and most popular included) is "
            "over the seeds, each on its own seed's split.\n\n" + text)
  if FLAGS.early_stopping:
    length = (f"{FLAGS.epochs} epoch(s) of "
              f"{FLAGS.steps_per_epoch or 'a full pass of'} steps"
              if dataset == "ncf-ml-1m" else
              f"{FLAGS.beauty_epochs} full passes")
    two_tower = (f" and the two-tower up to {FLAGS.two_tower_epochs} full "
                 "passes" if FLAGS.two_tower_epochs else
                 " (no two-tower row: `--two_tower_epochs=0`)")
    text = (f"Each PDN run trains up to {length}{two_tower},"
            " keeping the weights of its best epoch by HR@10 "
            "on a validation split from the training side (each user's "
            "latest training interaction among 99 sampled negatives, held "
            f"out of training), stopping after {FLAGS.early_stopping} "
            "epoch(s) without improvement; the test split is evaluated "
            "once, at that epoch, with the validation events back in the "
            "histories. \"epochs (validation)\": the chosen epoch per "
            "seed.\n\n" + text)
  return text


def table4(dataset: str, seeds, commands, raw) -> str:
  """PDN against the two-tower by training history length on `dataset`."""
  seed = seeds[0]
  data = _split(dataset, seed)
  if dataset != "ncf-ml-1m":  # NCF ML-1M reuses the Table 2 runs
    commands.extend(_run_all([pdn_command("PDN", seed, False, dataset),
                              baseline_command("two_tower", seed, dataset)]))
  saved = np.load(os.path.join(harness.REPO_ROOT,
                               _run_dir("pdn", seed, dataset), "scores.npz"))
  if not (np.array_equal(saved["targets"], data.test.item) and
          np.array_equal(saved["negatives"], data.negatives)):
    raise ValueError(f"{dataset}: the PDN run's test split differs from "
                     "this benchmark's; rerun it without --reuse")
  personal, _, top = _two_tower_scores(_run_dir("two_tower", seed, dataset),
                                       data)
  lengths = np.bincount(data.dataset.interactions.user,
                        minlength=data.dataset.num_users)[data.test.user]
  edges = TABLE4_EDGES[dataset]
  table, out = [], []
  for lo, hi in zip(edges[:-1], edges[1:]):
    rows = np.flatnonzero((lengths > lo) & (lengths <= hi))
    if not len(rows):
      continue
    pdn = _sampled(saved["personal"], data, rows)["hr@10"]
    tt = _sampled(personal, data, rows)["hr@10"]
    pdn_r = _recall(saved["top"][rows], data.test.item[rows], 300)
    tt_r = _recall(top[rows], data.test.item[rows], 300)
    label = f"{lo} < n <= {hi}" if np.isfinite(hi) else f"n > {lo}"
    gain = lambda a, b: f"{100 * (a - b) / b:+.1f}%" if b else "-"
    table.append([label, len(rows), tt, pdn, gain(pdn, tt), tt_r, pdn_r,
                  gain(pdn_r, tt_r)])
    out.append({"bucket": label, "users": int(len(rows)),
                "two_tower_hr@10": tt, "pdn_hr@10": pdn,
                "two_tower_recall@300": tt_r, "pdn_recall@300": pdn_r})
  raw.setdefault("table4", {})[dataset] = out
  return report.markdown_table(
      ["training interactions n", "users", "two-tower HR@10", "PDN HR@10",
       "gain", "two-tower recall@300", "PDN recall@300", "gain"], table)


def _latency(export_dir: str, requests: dict, k: int = 500) -> dict:
  path = os.path.join(harness.REPO_ROOT, OUT, "requests.json")
  with open(path, "w") as f:
    json.dump(requests, f)
  env = {k_: v for k_, v in os.environ.items()
         if k_ not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.servable_latency", export_dir,
       f"--k={k}", "--calls=200", f"--requests={path}"],
      capture_output=True, text=True, check=True, cwd=harness.REPO_ROOT,
      env=env)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def synthetic_servable(num_items: int, export_dir: str, index_k: int = 100,
                       history: int = 50):
  """An untrained PDN servable over a synthetic world of `num_items` items
  with a random I2I index of shape [N, index_k] (latency only)."""
  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import tf
  from retrieval_tf.datasets import synthetic
  from pdn_tf.i2i_index import I2IIndex
  from pdn_tf.model import PDNModel
  from pdn_tf.retrieval import PDNRetriever
  from pdn_tf import servable
  dataset = synthetic.generate(synthetic.SyntheticConfig.scaled(
      num_items, seed=0)).to_rec_dataset()
  item_features = {k: (len(dataset.feature_vocabularies[k]),
                       v.shape[1] if v.ndim > 1 else 0)
                   for k, v in dataset.item_features.items()}
  user_features = {k: len(dataset.feature_vocabularies[k])
                   for k in dataset.user_features}
  model = PDNModel(dataset.num_users, dataset.num_items, user_features,
                   item_features, num_pairs=1, num_events=1,
                   use_rating=False, bias_time=False)
  model.item_table.set_tables(dataset.item_features)
  model.pairs.item_counts.assign(dataset.item_popularity().astype(np.int32))
  rng = np.random.default_rng(0)
  items = rng.integers(0, num_items, (num_items, index_k)).astype(np.int32)
  scores = -np.sort(rng.exponential(size=(num_items, index_k)),
                    axis=1).astype(np.float32)
  retriever = PDNRetriever(model, I2IIndex(items, scores), history,
                           num_triggers=20, pool_size=1000)
  # build the layers once
  retriever.retrieve({"user_id": tf.zeros([1], tf.int32),
                      "history": tf.zeros([1, 2], tf.int32),
                      **{f"user_{f}": tf.zeros([1], tf.int32)
                         for f in user_features}}, 10)
  path = servable.export_pdn(retriever, export_dir, dataset,
                             {"warning": "untrained, random I2I index: "
                              "latency benchmark only"})
  users = rng.choice(dataset.num_users, 200, replace=False)
  return path, servable.raw_requests(dataset, users, history,
                                     with_rating=False)


def latency(seeds, raw) -> str:
  from pdn_tf import servable  # pylint: disable=g-import-not-at-top
  data = _split()
  rows, out = [], {}
  export = os.path.join(harness.REPO_ROOT, OUT, "export-ml1m")
  users = np.arange(0, data.dataset.num_users, 30)[:200]
  requests = servable.raw_requests(data.dataset, users, 50)
  result = _latency(export, requests)
  out["ml-1m"] = result
  rows.append(["NCF ML-1M (trained)", data.dataset.num_items,
               result["p50_ms"], result["p99_ms"], result["load_seconds"],
               result["batch_1000_rows_per_second"]])
  if FLAGS.latency_items:
    folder = os.path.join(harness.REPO_ROOT, OUT,
                          f"export-synthetic-{FLAGS.latency_items}")
    _, requests = synthetic_servable(FLAGS.latency_items, folder)
    result = _latency(folder, requests)
    out["synthetic"] = result
    rows.append(["synthetic (untrained, random index)",
                 FLAGS.latency_items, result["p50_ms"], result["p99_ms"],
                 result["load_seconds"],
                 result["batch_1000_rows_per_second"]])
  raw["latency"] = out
  return report.markdown_table(
      ["servable", "items", "p50 ms", "p99 ms", "load s", "rows/s (1000-row "
       "batch)"], rows)


def _command_line(seeds) -> str:
  """This benchmark's command as the section records it."""
  ncf = FLAGS.table2_dataset == "ncf-ml-1m"
  return ("python -m benchmarks.pdn "
          f"--seeds={','.join(map(str, seeds))}"
          + (f" --epochs={FLAGS.epochs} "
             f"--steps_per_epoch={FLAGS.steps_per_epoch}" if ncf else "")
          + f" --sections={','.join(FLAGS.sections)}"
          + ("" if ncf else f" --table2_dataset={FLAGS.table2_dataset}")
          + (f" --beauty_epochs={FLAGS.beauty_epochs}"
             if not ncf or FLAGS.beauty_epochs != 2 else "")
          + (f" --two_tower_epochs={FLAGS.two_tower_epochs}"
             if FLAGS.two_tower_epochs != 5 or FLAGS.early_stopping else "")
          + (f" --early_stopping={FLAGS.early_stopping}"
             if FLAGS.early_stopping else "")
          + (f" --variants='{','.join(FLAGS.variants)}'"
             if FLAGS.variants != list(VARIANTS) else "")
          + (f" --threads={FLAGS.threads}" if FLAGS.threads != 2 else "")
          + f"{' --parallel' if FLAGS.parallel else ''}"
          f"{' --reuse' if FLAGS.reuse else ''}")


def main(unused_argv):
  seeds = [int(s) for s in FLAGS.seeds]
  os.makedirs(os.path.join(harness.REPO_ROOT, OUT), exist_ok=True)
  commands: List[str] = []
  raw: Dict[str, object] = {"machine": report.machine(), "seeds": seeds}
  parts = []
  dataset = FLAGS.table2_dataset
  if "table2" in FLAGS.sections:
    parts.append(f"### Table 2 analogue: {NAMES[dataset]} leave-one-out "
                 "(1 + 99)\n\n" + table2(dataset, seeds, commands, raw))
  if "table4" in FLAGS.sections:
    for name in FLAGS.table4_datasets:
      parts.append(f"### Table 4 analogue: by training history length, "
                   f"{name} (first seed)\n\n"
                   + table4(name, seeds, commands, raw))
  if "latency" in FLAGS.sections:
    parts.append("### Servable latency: raw request -> top-500, one thread"
                 "\n\n" + latency(seeds, raw))
  raw["commands"] = commands
  where = "" if dataset == "ncf-ml-1m" else f" on {NAMES[dataset]}"
  title = (f"Table 2{where}, training length chosen on validation"
           if FLAGS.early_stopping else
           f"Tables 2{where} and 4, servable latency")
  text = (f"## PDN (SIGIR'21): {title}\n\n"
          f"Measured on {report.machine()} by `{_command_line(seeds)}`, "
          f"{len(seeds)} seed(s)"
          f"{' (finished training runs with the same flags were reused, with the train seconds of when they ran)' if FLAGS.reuse else ''}"
          f"; training runs:\n\n" +
          "\n".join(f"    {c}" for c in commands) + "\n\n" +
          "\n\n".join(parts))
  section = SECTIONS[dataset] + ("_valid" if FLAGS.early_stopping else "")
  report.write_section(section, text, raw)
  print(text)


if __name__ == "__main__":
  app.run(main)
