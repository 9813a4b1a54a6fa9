"""MGDSPR's ablation (the paper's Table 3 analogue), the tau and (a, b)
sweeps, and the servable's latency, on the synthetic world (ground-truth
relevance, clicks biased by position and popularity).

    python -m benchmarks.mgdspr [--seeds=3] [--synthetic_items=1000]

Every configuration is one recorded `python -m mgdspr_tf.train` command
(`--dataset=synthetic`, a temporal split; the flags in `--train_flags` plus
the configuration's own); metrics are averaged over `--seeds` seeds (world,
initialisation and data order all change with the seed):

* ablation: base two-tower (mean word embedding, no behaviour, tau = 1, no
  hard negatives) -> + MGS -> + behaviour attention without / with the
  zero vector -> + temperature (tau = 2) -> + mixed hard negatives (the
  full model) -> + relevance control (the full model's top-K filtered);
  the hard negatives alone (tau = 1); hinge instead of softmax on the full
  model;
* sweeps: tau in `--taus` and (a, b) in `--mixes` on the full model;
* budget: 20 epochs (~1,000 AdaGrad steps on the 1,000-item world), where
  recall@50 and P_good have flattened for tau <= 2. With F an unnormalised
  inner product the vectors' norms absorb tau, so a larger tau mainly
  learns more slowly: a short budget (the earlier 3 epochs) compares
  under-trained tau = 2 / 4 models with trained tau = 1 models and reads
  that as an effect of tau (see `docs/mgdspr.md`);
* latency: the full model of the first seed is exported and timed by
  `benchmarks.servable_latency` (one thread, p50 / p99 of one-row calls,
  top-`--latency_k`), once with relevance control on for every row and once
  off, on the test requests of that world.

Writes the `mgdspr` section of `RESULTS.md` and `results/mgdspr.json`.

With `--early_stopping=N` every run trains up to `--max_epochs` epochs,
holds the latest `--valid_fraction` of its training searches out as
validation (`mgdspr_tf.train --early_stopping`), keeps its best epoch by
validation recall@50 (patience N) and is tested once at that epoch; the
epochs chosen per seed go into the table, which is written to the
`mgdspr_valid` section (`results/mgdspr_valid.json`). `--configs` picks the
ablation rows (the full model is always one); empty `--taus` / `--mixes`
and `--nolatency` skip the sweeps and the latency.

Real data (`--part=real`), a reduced ablation per dataset of `--datasets`:

    python -m benchmarks.mgdspr --part=real \
        --datasets=crowdflower,amazon-beauty --seeds=2

* `crowdflower`: real queries, (query, product) pairs with a human median
  grade of 4 (the top grade) or 3 are the clicks, query-disjoint split;
  P_good@k from the same human grades (grade >= 3; an unjudged product
  counts as not relevant). No users, hence no behaviour rows; no
  structured product fields, hence no relevance control.
* `amazon-beauty`: leave-one-out over the time-ordered sequences with an
  empty query, so only the behaviour encoders carry signal (recall only;
  no MGS row: there is no query text; no relevance control).
* `bestbuy`: the catalogue's popular queries with derived judgments
  (`retrieval_tf.datasets.bestbuy`: grade = category facet levels matched);
  pairs of grade >= 2 are the clicks, query-disjoint split, P_good@k from
  the same grades. The one real catalogue with structured fields (brand,
  category levels), hence the one with relevance control: the full model's
  top-50 filtered by the query's recognised intents of every field, and
  by its brand intents only (`--rc_fields=brand`, a second training run
  of the full model), reported as on the synthetic world.

Rows: base two-tower, + MGS (query datasets), + MGS with tau = 2 and then
also the mixed hard negatives without the behaviour branch (query datasets
without users, where that branch only ever sees empty sequences), the same
two with cosine F at tau 0.1 (`--similarity=cosine`, not in the paper), +
behaviour attention with the zero vector at tau = 1 (behaviour datasets),
the full model without hard negatives (tau = 2), full MGDSPR (tau = 2,
mixed hard negatives), full with hinge loss. Per-dataset training flags in
`--crowdflower_flags` / `--amazon_beauty_flags` / `--bestbuy_flags`, chosen
from learning curves of the test metric (see `docs/mgdspr.md`). Writes the
`mgdspr_real` section of `RESULTS.md` and `results/mgdspr_real.json`.

With `--early_stopping=N` every real-data run holds a validation part out of
its training rows (`mgdspr_tf.train --early_stopping`: a query-disjoint
`--valid_fraction` of the training queries, or each user's last training
event on Amazon Beauty), trains up to `--dataset_max_epochs` epochs, keeps
its best epoch by validation recall@50 and is tested once; the table gains
the epochs chosen per seed and goes to the `mgdspr_real_valid` section
(`results/mgdspr_real_valid.json`). The measured run:

    python -m benchmarks.mgdspr --part=real \
        --datasets=crowdflower,amazon-beauty,bestbuy --seeds=3 \
        --early_stopping=2 \
        --dataset_max_epochs=crowdflower:12,amazon-beauty:10,bestbuy:15 \
        --dataset_steps_per_epoch=crowdflower:250 --threads=1

(CrowdFlower's epochs are 250 steps, five passes over its 6,000 training
pairs, so that a patience of 2 is not spent on the first passes' noise.)

Inner product against cosine F (`--part=similarity`), on the synthetic
world with the ablation's flags:

    python -m benchmarks.mgdspr --part=similarity --seeds=3

base two-tower, full without I_mix and full MGDSPR with the paper's inner
product (tau 1 / 2 / 2: ablation rows, shared with `--reuse`) and with
`--similarity=cosine` at tau 0.1, plus the cosine full model at each of
`--cosine_taus`. With unit vectors tau is a real smoothing parameter, not
a scale the norms absorb. Writes the `mgdspr_similarity` section of
`RESULTS.md` and `results/mgdspr_similarity.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report

flags.DEFINE_integer("seeds", 3, "Seeds per configuration.")
flags.DEFINE_integer("sweep_seeds", 0, "Seeds of the tau and (a, b) sweeps "
                     "(0: --seeds).")
flags.DEFINE_integer("synthetic_items", 1000, "Items of the world.")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks",
                                                "mgdspr"), "Where runs go.")
flags.DEFINE_list("train_flags", [
    "--epochs=20", "--batch_size=128", "--embedding_dim=32", "--num_heads=2",
    "--num_buckets=8192", "--max_real=10", "--max_short=20",
    "--max_long=20", "--max_test=1000", "--ks=10,50", "--rc_k=50",
    "--verbose=0"], "Flags of every training run.")
flags.DEFINE_list("taus", ["0.5", "1", "4"], "Temperatures of the sweep "
                  "(2 is the full model).")
flags.DEFINE_list("mixes", ["0.0:0.2", "0.2:0.4", "0.7:0.9"], "(a, b) of "
                  "the sweep as a:b (0.4:0.6 is the full model).")
flags.DEFINE_integer("latency_k", 1000, "k of the latency runs.")
flags.DEFINE_bool("latency", True, "Export and time the servable.")
flags.DEFINE_bool("reuse", False, "Read the metrics of runs that already "
                  "finished in --output_root instead of training again.")
flags.DEFINE_enum("part", "synthetic", ["synthetic", "real", "similarity"],
                  "The synthetic study (section `mgdspr`), the real-data "
                  "ablation (section `mgdspr_real`) or the paper's inner "
                  "product against cosine F on the synthetic world (section "
                  "`mgdspr_similarity`).")
flags.DEFINE_list("cosine_taus", ["0.05", "0.2", "0.5"], "Temperatures of "
                  "the cosine sweep of --part=similarity (0.1 is its full "
                  "model).")
flags.DEFINE_list("datasets", ["crowdflower", "amazon-beauty"], "Datasets "
                  "of --part=real.")
flags.DEFINE_string("data_root", os.path.join(
    os.path.dirname(harness.REPO_ROOT), "shared", "data"), "Folder holding "
                    "the real datasets' folders.")
flags.DEFINE_list("crowdflower_flags", [
    "--epochs=40", "--batch_size=128", "--embedding_dim=32",
    "--num_heads=2", "--num_buckets=8192", "--max_real=10",
    "--max_short=20", "--max_long=20", "--ks=10,50", "--rc_k=50",
    "--verbose=0"], "Flags of every CrowdFlower run.")
flags.DEFINE_list("amazon_beauty_flags", [
    "--epochs=8", "--batch_size=256", "--embedding_dim=32",
    "--num_heads=2", "--num_buckets=8192", "--max_real=10",
    "--max_short=20", "--max_long=20", "--max_test=25000", "--ks=10,50",
    "--rc_k=50", "--verbose=0"], "Flags of every Amazon Beauty run.")
flags.DEFINE_list("bestbuy_flags", [
    "--epochs=12", "--batch_size=128", "--embedding_dim=32",
    "--num_heads=2", "--num_buckets=8192", "--max_real=10",
    "--max_short=20", "--max_long=20", "--ks=10,50", "--rc_k=50",
    "--verbose=0"], "Flags of every Best Buy run.")
flags.DEFINE_list("dataset_seeds", [], "name:count pairs overriding "
                  "--seeds for that dataset of --part=real.")
flags.DEFINE_integer("early_stopping", 0, "--part=synthetic or real: "
                     "patience in epochs; each run keeps its best epoch by "
                     "validation recall@50 (0: train the flags' epochs, no "
                     "validation).")
flags.DEFINE_integer("max_epochs", 0, "With --early_stopping, "
                     "--part=synthetic: the longest training tried (0: "
                     "--train_flags' --epochs).")
flags.DEFINE_list("dataset_max_epochs", [], "With --early_stopping, "
                  "--part=real: name:count pairs, the longest training "
                  "tried on that dataset (default: its flags' --epochs).")
flags.DEFINE_list("dataset_steps_per_epoch", [], "--part=real: name:count "
                  "pairs, that dataset's steps per epoch (default: one pass "
                  "over its training rows).")
flags.DEFINE_float("valid_fraction", 0.1, "With --early_stopping: share of "
                   "the training searches (synthetic) or queries "
                   "(crowdflower, bestbuy) held out for validation; "
                   "amazon-beauty holds out each user's last training "
                   "event.")
flags.DEFINE_list("configs", [], "--part=synthetic: ablation rows to train "
                  "(empty: all of them).")
flags.DEFINE_integer("threads", 0, "TF threads of each training process "
                     "(0: TF's default).")
FLAGS = flags.FLAGS

BASE = ["--temperature=1", "--num_hard=0"]
ABLATION = [
    ("base two-tower", ["--mgs=false", "--behaviour=false"] + BASE),
    ("+ MGS", ["--behaviour=false"] + BASE),
    ("+ behaviour attention, no zero vector", ["--zero_vector=false"] + BASE),
    ("+ behaviour attention, zero vector", BASE),
    ("+ temperature (tau = 2)", ["--num_hard=0"]),
    ("hard negatives without temperature (tau = 1)", ["--temperature=1"]),
    ("+ hard negatives (full MGDSPR)", []),
    ("full MGDSPR, hinge loss", ["--loss=hinge"]),
]
FULL = "+ hard negatives (full MGDSPR)"
flags.register_validator(
    "configs", lambda names: not names or (
        FULL in names and set(names) <= set(dict(ABLATION))),
    f"--configs: ablation row names (commas), {FULL!r} among them; one of "
    f"{[name for name, _ in ABLATION]}")
# --part=similarity: (label, run name, flags). The inner-product rows are
# ablation rows (same run names, so --reuse shares their runs).
COSINE = ["--similarity=cosine", "--temperature=0.1"]
_ABLATION_FLAGS = dict(ABLATION)
SIMILARITY = [
    ("inner product: base two-tower (tau 1)", "base two-tower",
     _ABLATION_FLAGS["base two-tower"]),
    ("inner product: full without I_mix (tau 2)", "+ temperature (tau = 2)",
     _ABLATION_FLAGS["+ temperature (tau = 2)"]),
    ("inner product: full MGDSPR (tau 2)", FULL, _ABLATION_FLAGS[FULL]),
    ("cosine: base two-tower (tau 0.1)", "cosine base two-tower",
     ["--mgs=false", "--behaviour=false", "--num_hard=0"] + COSINE),
    ("cosine: full without I_mix (tau 0.1)", "cosine full without I_mix",
     ["--num_hard=0"] + COSINE),
    ("cosine: full MGDSPR (tau 0.1)", "cosine full MGDSPR", COSINE),
]
COLUMNS = ["recall@10", "recall@50", "p_good@10", "p_good@50",
           "unrelated_recall@50", "unrelated_p_good@50",
           "swapped_recall@50", "swapped_p_good@10"]


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name).strip("_")[:60]


def _early_stopping_flags(max_epochs: int) -> List[str]:
  """The flags `--early_stopping` adds to every run (`max_epochs` 0: the
  run's own `--epochs` is the cap)."""
  if not FLAGS.early_stopping:
    return []
  cap = [f"--epochs={max_epochs}"] if max_epochs else []
  return cap + [f"--early_stopping={FLAGS.early_stopping}",
                f"--valid_fraction={FLAGS.valid_fraction}"]


def _with_early_stopping(train_flags: List[str],
                         max_epochs: int) -> List[str]:
  """`train_flags`, with `max_epochs` in place of their `--epochs` under
  `--early_stopping`."""
  train_flags = list(train_flags)
  if FLAGS.early_stopping and max_epochs:
    train_flags = [f for f in train_flags if not f.startswith("--epochs=")]
  return train_flags + _early_stopping_flags(max_epochs)


def _synthetic_flags() -> List[str]:
  """Every synthetic run's flags."""
  return _with_early_stopping(FLAGS.train_flags, FLAGS.max_epochs)


def _run_suffix(max_epochs: int) -> str:
  """Run folders of early-stopping runs are their own."""
  return (f"_es{FLAGS.early_stopping}x{max_epochs}"
          if FLAGS.early_stopping else "")


def train(name: str, extra: List[str], seed: int, export: bool = False,
          dataset: str = "synthetic") -> Dict:
  if dataset == "synthetic":
    out = os.path.join(FLAGS.output_root, f"{_slug(name)}_seed{seed}"
                       f"{_run_suffix(FLAGS.max_epochs)}")
    source = [f"--synthetic_items={FLAGS.synthetic_items}"]
    common = _synthetic_flags()
  else:
    out = os.path.join(FLAGS.output_root, "real", dataset,
                       f"{_slug(name)}_seed{seed}"
                       f"{_run_suffix(real_max_epochs(dataset))}")
    source = [f"--data_dir={os.path.join(FLAGS.data_root, REAL[dataset][0])}"]
    common = real_flags(dataset)
  cmd = (["python", "-m", "mgdspr_tf.train", f"--dataset={dataset}"] +
         source + [f"--seed={seed}", f"--output_dir={out}", "--overwrite"] +
         common + list(extra))
  if export:
    cmd.append(f"--export_dir={out}_export")
  done = os.path.join(harness.REPO_ROOT, out, "metrics.json")
  if FLAGS.reuse and os.path.exists(done) and (
      not export or "export_path" in harness.read_metrics(out)):
    metrics = harness.read_metrics(out)
    metrics["command"] = " ".join(cmd)
    return metrics
  line = harness.run_command(cmd, threads=FLAGS.threads or None)
  metrics = harness.read_metrics(out)
  metrics["command"] = line
  return metrics


def _control_table(variants: Dict[str, List[Dict]]) -> str:
  """Relevance control on the full model's top-`rc_k` (mean ± std), one
  row per `{intents: runs}`."""
  return report.markdown_table(
      ["intents", "removal rate", "removal rate (queries with an intent)",
       "queries with an intent", "fallback rate", "relevant@50 before",
       "relevant@50 after"],
      [[label] + [report.mean_std(runs, k) for k in
                  ("rc_removal_rate", "rc_removal_rate_with_intent",
                   "rc_intent_rate", "rc_fallback_rate", "relevant@50",
                   "rc_relevant@50")]
       for label, runs in variants.items()])


def latency_requests(seed: int, path: str, control: int) -> None:
  """The world's test requests (raw strings) as a request body file."""
  from mgdspr_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.SyntheticConfig.scaled(FLAGS.synthetic_items, seed=seed)
  flags_map = dict(f[2:].split("=", 1) for f in FLAGS.train_flags)
  lengths = tuple(int(flags_map.get(n, d)) for n, d in
                  (("max_real", 50), ("max_short", 100), ("max_long", 100)))
  test = data_lib.from_synthetic(synthetic.generate(config), lengths,
                                 max_test=200).test

  def ids(matrix):
    return [[str(i) if i >= 0 else "" for i in row] for row in matrix]

  body = {"query": test.query.astype(str).tolist(),
          "history_query": test.history_query.astype(str).tolist(),
          "real_time": ids(test.real_time), "short_term": ids(test.short_term),
          "long_term": ids(test.long_term),
          "relevance_control": [control] * len(test)}
  with open(path, "w") as f:
    json.dump(body, f)


def measure_latency(export_dir: str, seed: int) -> Dict[str, Dict]:
  out = {}
  for control in (1, 0):
    requests = os.path.join(FLAGS.output_root, f"requests_rc{control}.json")
    latency_requests(seed, os.path.join(harness.REPO_ROOT, requests), control)
    cmd = ["python", "-m", "benchmarks.servable_latency", export_dir,
           f"--k={FLAGS.latency_k}", "--calls=200",
           f"--requests={requests}"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run([sys.executable] + cmd[1:], cwd=harness.REPO_ROOT,
                          capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(cmd)
    out["on" if control else "off"] = result
  return out


# Real datasets: folder under --data_root, has query text, has behaviour.
REAL = {"crowdflower": ("crowdflower-search", True, False),
        "amazon-beauty": ("amazon-beauty", False, True),
        "bestbuy": ("bestbuy-products", True, False)}
# Relevance control with the intents of some fields only (full model).
RC_VARIANTS = {"bestbuy": [("brand intents only", ["--rc_fields=brand"])]}
REAL_FULL = "full MGDSPR (tau 2, mixed hard negatives)"
REAL_COLUMNS = ["recall@10", "recall@50", "p_good@10", "p_good@50"]


def _dataset_counts(pairs: List[str], flag: str) -> Dict[str, int]:
  """`name:count` pairs of `--part=real` datasets as a dict."""
  counts = {}
  for pair in pairs:
    name, _, count = pair.partition(":")
    if name not in REAL or not count.isdigit() or int(count) < 1:
      raise app.UsageError(f"--{flag}: bad {pair!r}; want name:count with "
                           f"name one of {sorted(REAL)}")
    counts[name] = int(count)
  return counts


def real_max_epochs(dataset: str) -> int:
  """With `--early_stopping`: the longest training tried on `dataset`
  (`--dataset_max_epochs`, else the dataset's own `--epochs`)."""
  return _dataset_counts(FLAGS.dataset_max_epochs,
                         "dataset_max_epochs").get(dataset, 0)


def real_flags(dataset: str) -> List[str]:
  """Every `dataset` run's flags."""
  steps = _dataset_counts(FLAGS.dataset_steps_per_epoch,
                          "dataset_steps_per_epoch").get(dataset)
  return _with_early_stopping(
      getattr(FLAGS, dataset.replace("-", "_") + "_flags"),
      real_max_epochs(dataset)) + (
          [f"--steps_per_epoch={steps}"] if steps else [])


def real_ablation(dataset: str) -> List:
  """The rows that `dataset` can inform (see the module docstring)."""
  _, has_query, has_behaviour = REAL[dataset]
  rows = [("base two-tower", ["--nomgs", "--nobehaviour"] + BASE)]
  if has_query:
    rows.append(("+ MGS", ["--nobehaviour"] + BASE))
  if has_query and not has_behaviour:
    # tau and I_mix without the (empty) behaviour branch the full rows carry.
    rows += [("+ MGS, tau 2 (no behaviour branch)",
              ["--nobehaviour", "--num_hard=0"]),
             ("+ MGS, tau 2, mixed hard negatives (no behaviour branch)",
              ["--nobehaviour"]),
             ("+ MGS, cosine F, tau 0.1 (no behaviour branch)",
              ["--nobehaviour", "--num_hard=0"] + COSINE),
             ("+ MGS, cosine F, tau 0.1, mixed hard negatives (no "
              "behaviour branch)", ["--nobehaviour"] + COSINE)]
  if has_behaviour:
    rows.append(("+ behaviour attention, zero vector (tau 1)", BASE))
  rows += [("full without hard negatives (tau 2, no I_mix)",
            ["--num_hard=0"]),
           (REAL_FULL, []), ("full MGDSPR, hinge loss", ["--loss=hinge"])]
  return rows


def main_real() -> None:
  for dataset in FLAGS.datasets:
    if dataset not in REAL:
      raise app.UsageError(f"--datasets: unknown {dataset!r}; known: "
                           f"{sorted(REAL)}")
  counts = {d: FLAGS.seeds for d in FLAGS.datasets}
  counts.update(_dataset_counts(FLAGS.dataset_seeds, "dataset_seeds"))
  raw: Dict = {"machine": report.machine(), "datasets": {}}
  section = "mgdspr_real_valid" if FLAGS.early_stopping else "mgdspr_real"
  title = ("reduced ablation, training length chosen on validation"
           if FLAGS.early_stopping else "reduced ablation")
  text = [f"## MGDSPR (KDD'21) on real data: {title}", "",
          "Seeds per dataset below (seed: initialisation, data order "
          "and, on CrowdFlower, the query-disjoint split), mean ± std; "
          f"{report.machine()}. Every run is `python -m mgdspr_tf.train "
          "--dataset=D --data_dir=... --seed=S` + the dataset's flags + the "
          "row's flags (all recorded in "
          f"`results/{section}.json`). "
          "CrowdFlower: clicks = pairs with human grade >= 3, "
          "query-disjoint split, P_good@k = share of the top-k with human "
          "grade >= 3 among all products (unjudged = not relevant); the "
          "test searches' clicked products are exactly their grade >= 3 "
          "products, so there P_good@k = hits / k and recall@k = hits / "
          "|relevant|: the two move together. Amazon Beauty: "
          "leave-one-out over the time-ordered sequences, empty query, "
          "recall only. Best Buy: clicks = (query, product) pairs whose "
          "category path matches at least two of the query's category "
          "facet levels (derived judgments, `retrieval_tf.datasets."
          "bestbuy`), query-disjoint split, P_good@k = share of the top-k "
          "with derived grade >= 2. Relevance control runs only on Best "
          "Buy, the one catalogue with structured fields (brand, category "
          "levels): intents recognised in the query filter the top-50; its "
          "category part and the derived judgments both come from "
          "categories, so they are not independent."]
  epochs = ["epochs (validation)"] if FLAGS.early_stopping else []
  if FLAGS.early_stopping:
    text += ["", "Every run trains up to the dataset's cap of epochs "
             "(its flags' `--epochs`), holds a validation part out of its "
             f"training rows (CrowdFlower, Best Buy: a query-disjoint "
             f"{FLAGS.valid_fraction:g} of the training queries; Amazon "
             "Beauty: each user's last training event), keeps the weights "
             "of its best epoch by validation recall@50, stopping after "
             f"{FLAGS.early_stopping} epoch(s) without improvement, and is "
             "tested once at that epoch. \"epochs (validation)\": the "
             "chosen epoch per seed."]
  for dataset in FLAGS.datasets:
    seeds = list(range(counts[dataset]))
    rows = real_ablation(dataset)
    runs = {name: [train(name, extra, s, dataset=dataset) for s in seeds]
            for name, extra in rows}
    raw["datasets"][dataset] = {"train_flags": real_flags(dataset),
                                "seeds": seeds, "rows": runs}
    columns = [c for c in REAL_COLUMNS
               if any(c in r for v in runs.values() for r in v)]
    table = [[name] + [report.mean_std(v, c) for c in columns] +
             [f"{np.mean([r['train_seconds'] for r in v]):.0f}"] +
             ([report.chosen_epochs(v)] if epochs else [])
             for name, v in runs.items()]
    full = runs[REAL_FULL]
    # Relevance control variants: the full model's top-50 filtered by the
    # intents of every field, or of the fields of RC_VARIANTS[dataset].
    controls = {}
    if any("rc_removal_rate" in r for r in full):
      controls["all fields"] = full
      for label, extra in RC_VARIANTS.get(dataset, []):
        controls[label] = [train(f"{REAL_FULL}, {label}", extra, s,
                                 dataset=dataset) for s in seeds]
      raw["datasets"][dataset]["relevance_control"] = controls
    for label, variant in controls.items():
      cells = {"recall@50": report.mean_std(variant, "rc_recall"),
               "p_good@50": report.mean_std(variant, "rc_p_good")}
      table.insert(len(table) - 1, [
          f"full MGDSPR + relevance control, {label} (top-50 filtered)"] +
          [cells.get(c, "-") for c in columns] + ["-"] +
          ([report.chosen_epochs(variant)] if epochs else []))
    first = runs[rows[0][0]][0]
    minutes = sum(r.get("total_seconds", 0) for v in runs.values()
                  for r in v) / 60
    text += ["", f"### {dataset}", "",
             f"{first['num_items']} items, {first['num_train_examples']} "
             f"training examples, {first['num_test_searches']} test "
             f"searches (seed 0); {len(seeds)} seed(s). Flags: "
             f"`{' '.join(real_flags(dataset))}`. Total training + "
             f"evaluation time {minutes:.1f} min.", "",
             report.markdown_table(
                 ["configuration"] + columns + ["train s"] + epochs,
                 table)]
    if controls:
      text += ["", "Relevance control on the full model's top-50 (its "
               "recognised intents: every field, or one field only):", "",
               _control_table(controls)]
  report.write_section(section, "\n".join(text), raw)
  print("\n".join(text))


def main_similarity() -> None:
  """F = inner product (the paper) against cosine (`--similarity=cosine`),
  where tau cannot be absorbed by the vectors' norms."""
  seeds = list(range(FLAGS.seeds))
  raw: Dict = {"rows": {}, "cosine_tau": {}, "seeds": seeds,
               "train_flags": list(FLAGS.train_flags),
               "synthetic_items": FLAGS.synthetic_items,
               "machine": report.machine()}
  for label, name, extra in SIMILARITY:
    raw["rows"][label] = [train(name, extra, s) for s in seeds]
  for tau in FLAGS.cosine_taus:
    raw["cosine_tau"][tau] = [
        train(f"cosine tau{tau}", ["--similarity=cosine",
                                   f"--temperature={tau}"], s)
        for s in seeds]
  raw["cosine_tau"]["0.1"] = raw["rows"][SIMILARITY[-1][0]]
  columns = ["recall@10", "recall@50", "p_good@10", "p_good@50"]
  rows = [[label] + [report.mean_std(runs, c) for c in columns]
          for label, runs in raw["rows"].items()]
  taus = [[t] + [report.mean_std(raw["cosine_tau"][t], c) for c in columns]
          for t in sorted(raw["cosine_tau"], key=float)]
  text = [
      "## MGDSPR: inner product (paper) vs cosine F",
      "",
      f"Synthetic world of {FLAGS.synthetic_items} items as in the `mgdspr` "
      f"section, {len(seeds)} seed(s), mean ± std; {report.machine()}. "
      f"Every run: `python -m mgdspr_tf.train --dataset=synthetic "
      f"--synthetic_items={FLAGS.synthetic_items} --seed=S "
      f"{' '.join(FLAGS.train_flags)}` + the row's flags (recorded in "
      "`results/mgdspr_similarity.json`); `python -m benchmarks.mgdspr "
      "--part=similarity`. Cosine rows add `--similarity=cosine` "
      "(L2-normalised towers, not in the paper) and tau 0.1.",
      "",
      report.markdown_table(["configuration"] + columns, rows),
      "",
      "Temperature with cosine F (full model):",
      "",
      report.markdown_table(["tau"] + columns, taus),
  ]
  report.write_section("mgdspr_similarity", "\n".join(text), raw)
  print("\n".join(text))


def main(argv):
  del argv
  os.makedirs(os.path.join(harness.REPO_ROOT, FLAGS.output_root),
              exist_ok=True)
  if FLAGS.part == "real":
    main_real()
    return
  if FLAGS.part == "similarity":
    main_similarity()
    return
  seeds = list(range(FLAGS.seeds))
  sweep_seeds = seeds[:FLAGS.sweep_seeds or len(seeds)]
  raw: Dict = {"ablation": {}, "tau": {}, "mix": {}, "seeds": seeds,
               "sweep_seeds": sweep_seeds,
               "train_flags": list(FLAGS.train_flags),
               "synthetic_items": FLAGS.synthetic_items,
               "machine": report.machine()}
  ablation = [(name, extra) for name, extra in ABLATION
              if not FLAGS.configs or name in FLAGS.configs]
  raw["early_stopping_flags"] = _early_stopping_flags(FLAGS.max_epochs)
  for name, extra in ablation:
    raw["ablation"][name] = [
        train(name, extra, s, export=(FLAGS.latency and name == FULL and
                                      s == 0)) for s in seeds]
  for tau in FLAGS.taus:
    raw["tau"][tau] = [train(f"tau{tau}", [f"--temperature={tau}"], s)
                       for s in sweep_seeds]
  full_sweep = raw["ablation"][FULL][:len(sweep_seeds)]
  raw["tau"]["2"] = full_sweep
  for mix in FLAGS.mixes:
    a, b = mix.split(":")
    raw["mix"][mix] = [train(f"mix{a}_{b}", [f"--mix_low={a}",
                                             f"--mix_high={b}"], s)
                       for s in sweep_seeds]
  raw["mix"]["0.4:0.6"] = full_sweep
  if FLAGS.latency:
    export_dir = raw["ablation"][FULL][0]["export_path"]
    raw["latency"] = measure_latency(os.path.dirname(export_dir), 0)

  epochs = ["epochs (validation)"] if FLAGS.early_stopping else []
  rows = [[name] + [report.mean_std(runs, c) for c in COLUMNS] +
          ([report.chosen_epochs(runs)] if epochs else [])
          for name, runs in raw["ablation"].items()]
  full = raw["ablation"][FULL]
  control_row = {"recall@50": report.mean_std(full, "rc_recall"),
                 "p_good@50": report.mean_std(full, "rc_p_good")}
  rows.insert(len(ablation) - 1,
              ["+ relevance control (top-50 filtered)"] +
              [control_row.get(c, "-") for c in COLUMNS + epochs])
  control = _control_table({"all fields": full})
  taus = report.markdown_table(
      ["tau", "recall@50", "p_good@10", "p_good@50"],
      [[t] + [report.mean_std(raw["tau"][t], c) for c in
              ("recall@50", "p_good@10", "p_good@50")]
       for t in sorted(raw["tau"], key=float)])
  mixes = report.markdown_table(
      ["(a, b)", "recall@50", "p_good@10", "p_good@50"],
      [[m] + [report.mean_std(raw["mix"][m], c) for c in
              ("recall@50", "p_good@10", "p_good@50")]
       for m in sorted(raw["mix"])])
  title = ("ablation, training length chosen on validation"
           if FLAGS.early_stopping else "ablation, tau and (a, b), latency")
  text = [
      f"## MGDSPR (KDD'21): {title}",
      "",
      f"Synthetic world of {FLAGS.synthetic_items} items (temporal split, "
      f"ground-truth relevance: good = grade >= 2), {len(seeds)} seed(s), "
      f"mean ± std; {report.machine()}. Every run: `python -m "
      f"mgdspr_tf.train --dataset=synthetic "
      f"--synthetic_items={FLAGS.synthetic_items} --seed=S "
      f"{' '.join(_synthetic_flags())}` + "
      "the row's flags (recorded in "
      f"`results/{'mgdspr_valid' if FLAGS.early_stopping else 'mgdspr'}"
      ".json`). `unrelated_*`: test searches whose "
      "real-time and short-term behaviour share no mid category with the "
      "query (a few percent of them). `swapped_*`: every test search "
      "re-scored with the history queries and behaviour of another test "
      "user none of whose events shares a mid category with the query "
      "(`mgdspr_tf.data.unrelated_donors`); recall counts the searching "
      "user's own clicks.",
      "",
      report.markdown_table(["configuration"] + COLUMNS + epochs, rows),
      "",
      "Relevance control on the full model's top-50:",
      "",
      control,
  ]
  if FLAGS.early_stopping:
    text[4:4] = [
        f"Every run trains up to {FLAGS.max_epochs or 'the'} epochs, "
        f"holds the latest {FLAGS.valid_fraction:g} of its training "
        "searches out as validation, keeps the weights of its best epoch "
        f"by validation recall@50, stopping after {FLAGS.early_stopping} "
        "epoch(s) without improvement, and is tested once at that epoch. "
        "\"epochs (validation)\": the chosen epoch per seed.", ""]
  if FLAGS.taus:
    text += ["", f"Temperature (full model, {len(sweep_seeds)} seed(s)):",
             "", taus]
  if FLAGS.mixes:
    text += ["", f"Mixing range alpha ~ U(a, b) (full model, "
             f"{len(sweep_seeds)} seed(s)):", "", mixes]
  if "latency" in raw:
    lat = raw["latency"]
    text += ["", f"Servable latency (one thread, top-{FLAGS.latency_k}, "
             "one-row calls, `benchmarks.servable_latency`):", "",
             report.markdown_table(
                 ["relevance control", "p50 ms", "p99 ms",
                  "rows/s (1,000-row batch)"],
                 [[mode, lat[mode]["p50_ms"], lat[mode]["p99_ms"],
                   lat[mode]["batch_1000_rows_per_second"]]
                  for mode in ("off", "on")])]
  report.write_section("mgdspr_valid" if FLAGS.early_stopping else "mgdspr",
                       "\n".join(text), raw)
  print("\n".join(text))


if __name__ == "__main__":
  app.run(main)
