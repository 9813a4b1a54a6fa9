"""DPSR benchmarks (Zhang et al., SIGIR'20): Table 2, Figures 6 and 7,
Tables 5/6 (latency, sharding) and Sec. 5.1.2 (compressed input).

    python -m benchmarks.dpsr                 # everything
    python -m benchmarks.dpsr --only=table2   # one part: table2, heads,
                                              # figure7, latency,
                                              # ivfpq_sweep, compressed

* table2: on the synthetic world and CrowdFlower, DPSR (2 heads), DPSR
  1-head without and with `--lexical_skip`, DSSM (unclicked negatives),
  BM25 (unigrams; unigrams + bigrams), on the synthetic world DPSR-p and
  DPSR-h, on CrowdFlower DPSR 1 head with `--title_positives` (hinge
  margin delta 0.1, the paper's, and 0.5; and 0.5 with the lexical skip,
  also with a 256-dimensional table and output and the skip started as
  the identity), every one trained and
  evaluated by `python -m dpsr_tf.train` (the command is recorded); Top-1,
  Top-10, MRR among 1,024 random items, AUC on the test queries' labelled
  pairs, P_good@100 / recall@100 / popularity@100 (synthetic), and the
  trained n-gram table alone (`token_table_top10`, `token_table_auc`: a
  diagnostic of how much lexical match the towers keep); time = p50
  of query text -> top-1,000 over the dataset's corpus, one thread (DPSR:
  the loaded servable via `benchmarks.servable_latency`; BM25: rank_bm25
  scores + top-1,000). Figure 6 (polysemous queries, 1 vs 2 heads) is read
  from the synthetic DPSR runs' polysemy metrics.
* headline: the README's headline rows (synthetic: DPSR 2 heads, 1 head
  with the lexical skip, BM25, DPSR-p, DPSR-h, DSSM; CrowdFlower: 1 head
  with title positives, delta 0.5, the identity-initialised 256-d lexical
  skip, and BM25) over `HEADLINE_SEEDS`, each trained model's epoch count
  chosen on a validation share of the training queries
  (`--early_stopping`), the test queries evaluated once per seed (sections
  `dpsr_headline_synthetic`, `dpsr_headline_crowdflower`; one of them with
  `--headline_dataset`).
* heads: Figure 6 over 5 seeds on the synthetic world whose searches for
  a meaning of a polysemous word type the bare word
  (`polysemous_search_rate=1.0`): 1 head, 2 heads, and 2 heads with the
  head load-balancing term (`--head_balance=1`, not in the paper); Top-10,
  AUC, the least-served meaning's share of the top 100, polysemy recall,
  the meanings the heads cover, head purity and the minority head's share
  of the test positives (section `dpsr_heads`), and seed 0's heads by
  meaning as bars (`results/dpsr_figure6.png`).
* figure7: alpha in {0, 0.25, 0.5, 0.75, 1} on the synthetic world:
  popularity@100 and relevance of what is retrieved (`results/dpsr_figure7
  .png`).
* latency: one trained query tower over 1M x 64 item vectors (random unit
  vectors stand in for the catalogue; brute force costs the same for any
  values): item-tower + index build time for 1M items, then query text ->
  top-1,000 p50/p99 on one thread through the loaded servable, unsharded and
  per shard for N = 2, 4, and the in-process fan-out client. Then the same
  unsharded servable with an IVF-PQ index (`export_dpsr(index="ivfpq")`,
  `build_index` defaults for J, D, rerank; nprobe 32 and 16) over the same
  vectors and over a clustered 1M catalogue: build time, p50/p99, and
  recall of its top-1,000 against the exact servable's top-1,000 for the
  same queries.
* ivfpq_sweep: the same unsharded servable over the clustered 1M catalogue
  with IVF-PQ indexes of J in `IVFPQ_SWEEP` and, per J, several (nprobe,
  rerank): p50/p99 against recall@1000 of the exact top-1,000 (the
  recall / latency frontier; section `dpsr_ivfpq_sweep`).
* compressed: the 3 files vs the joined table (bytes) and the examples/s of
  both `tf.data` readers vs DPSR training examples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks import harness, report

RUNS = "runs/dpsr_bench"
DATA = os.path.join(os.path.dirname(harness.REPO_ROOT), "shared", "data")
EPOCHS = {"synthetic": 15, "crowdflower": 30}
# nprobe of the Tables 5/6 analogue's IVF-PQ servables (larger nprobe:
# the sweep below).
IVFPQ_NPROBE = (32, 16)
# The recall / latency sweep (`--only=ivfpq_sweep`): J -> (nprobe, rerank)
# pairs.
IVFPQ_SWEEP = {1000: ((16, 1000), (32, 1000), (32, 4000), (64, 4000)),
               4000: ((32, 1000), (64, 4000), (128, 4000), (128, 10000),
                      (256, 4000))}
# The heads study (`--only=heads`).
HEADS_WORLD = "--synthetic_config=polysemous_search_rate=1.0"
HEADS_SEEDS = (0, 1, 2, 3, 4)
HEADS_VARIANTS = {"1 head": ["--num_heads=1"],
                  "2 heads": ["--num_heads=2"],
                  "2 heads, head balance 1": ["--num_heads=2",
                                              "--head_balance=1"]}
HEADS_KEYS = ("top10", "auc", "polysemy_min_share@100",
              "polysemy_recall@100", "polysemy_meanings_covered@100",
              "polysemy_head_purity@100")
# The headline study (`--only=headline`).
HEADLINE_SEEDS = (0, 1, 2)
HEADLINE_EPOCHS = {"synthetic": 20, "crowdflower": 30}
HEADLINE_PATIENCE = 3
HEADLINE_VARIANTS = {
    "synthetic": ("DPSR (2 heads)", "DPSR 1 head + lexical skip", "BM25",
                  "DPSR-p", "DPSR-h", "DSSM"),
    "crowdflower": ("DPSR 1 head + title positives, delta 0.5, identity "
                    "lexical skip, 256-d", "BM25")}
HEADLINE_KEYS = {
    "synthetic": ("top1", "top10", "mrr", "auc", "p_good@100", "recall@100"),
    "crowdflower": ("top1", "top10", "mrr", "auc")}
KEYS = ("top1", "top10", "mrr", "auc", "p_good@100", "recall@100",
        "popularity@100", "token_table_top10", "token_table_auc")


def _variants(dataset: str) -> Dict[str, List[str]]:
  out = {"DPSR (2 heads)": ["--model=dpsr", "--num_heads=2"],
         "DPSR 1 head": ["--model=dpsr", "--num_heads=1"],
         "DPSR 1 head + lexical skip": ["--model=dpsr", "--num_heads=1",
                                        "--lexical_skip"]}
  if dataset == "synthetic":
    out["DPSR-p"] = ["--model=dpsr", "--personalization=profile"]
    out["DPSR-h"] = ["--model=dpsr", "--personalization=history"]
  else:  # few training queries: catalogue titles as extra queries
    out["DPSR 1 head + title positives"] = ["--model=dpsr", "--num_heads=1",
                                            "--title_positives"]
    out["DPSR 1 head + title positives, delta 0.5"] = [
        "--model=dpsr", "--num_heads=1", "--title_positives", "--delta=0.5"]
    out["DPSR 1 head + title positives, delta 0.5, lexical skip"] = [
        "--model=dpsr", "--num_heads=1", "--title_positives", "--delta=0.5",
        "--lexical_skip"]
    out["DPSR 1 head + title positives, delta 0.5, identity lexical skip, "
        "256-d"] = [
        "--model=dpsr", "--num_heads=1", "--title_positives", "--delta=0.5",
        "--lexical_skip", "--lexical_skip_init=identity", "--token_dim=256",
        "--embedding_dim=256"]
  out["DSSM"] = ["--model=dssm"]
  out["BM25"] = ["--model=bm25"]
  out["BM25-u&b"] = ["--model=bm25_bigram"]
  return out


def _data_flags(dataset: str) -> List[str]:
  if dataset == "crowdflower":
    return [f"--data_dir={os.path.join(DATA, 'crowdflower-search')}"]
  return []


def _train(name: str, dataset: str, flags: List[str], export: bool,
           epochs: int = 0) -> Dict[str, Any]:
  out = f"{RUNS}/{name}"
  cmd = ["python", "-m", "dpsr_tf.train", f"--dataset={dataset}",
         f"--output_dir={out}", "--overwrite", "--verbose=0",
         f"--epochs={epochs or EPOCHS.get(dataset, 10)}"] + \
      _data_flags(dataset) + flags
  if export:
    shutil.rmtree(f"{RUNS}/{name}_export", ignore_errors=True)
    cmd.append(f"--export_dir={RUNS}/{name}_export")
  line = harness.run_command(cmd)
  metrics = harness.read_metrics(out)
  metrics["command"] = line
  return metrics


def _servable_latency(export_dir: str, requests: Dict[str, list], k: int,
                      calls: int = 200) -> Dict[str, Any]:
  path = os.path.join(harness.REPO_ROOT, export_dir, "requests.json")
  with open(path, "w") as f:
    json.dump(requests, f)
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.servable_latency", export_dir,
       f"--k={k}", f"--calls={calls}", f"--requests={path}"],
      cwd=harness.REPO_ROOT, check=True, capture_output=True, text=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _test_requests(dataset: str, flags: List[str], n: int = 200
                   ) -> Dict[str, list]:
  """The first n test rows as the servable of `flags` takes them."""
  from dpsr_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  task = data_lib.load_task(dataset, _data_dir(dataset))
  test = {k: v[:n] for k, v in task.test.items()}
  request = {"query": [str(q) for q in test["query"]]}
  if any(f.startswith("--personalization=") for f in flags):
    for name, vocab in task.user_vocabularies.items():
      request[f"user_{name}"] = [vocab[v] for v in test[f"user_{name}"]]
  if "--personalization=history" in flags:
    request["history"] = [[str(task.item_ids[i]) if i >= 0 else ""
                           for i in row] for row in test["history"]]
  return request


def _data_dir(dataset: str):
  return (os.path.join(DATA, "crowdflower-search")
          if dataset == "crowdflower" else None)


def _bm25_latency(dataset: str, bigrams: bool, k: int = 1000,
                  calls: int = 100) -> float:
  from dpsr_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from dpsr_tf.bm25 import BM25Scorer, terms  # pylint: disable=g-import-not-at-top
  task = data_lib.load_task(dataset, _data_dir(dataset))
  scorer = BM25Scorer(task.item_text, bigrams)
  queries = terms(task.test["query"][:calls], bigrams)
  k = min(k, task.num_items)
  times = []
  for q in queries:
    start = time.perf_counter()
    scores = scorer.index.get_scores(q)
    top = np.argpartition(-scores, k - 1)[:k]
    top[np.argsort(-scores[top])]
    times.append(time.perf_counter() - start)
  return 1000 * float(np.percentile(times, 50))


def table2() -> None:
  raw: Dict[str, Any] = {}
  sections = []
  for dataset in ("synthetic", "crowdflower"):
    rows = []
    for label, flags in _variants(dataset).items():
      slug = f"{dataset}_{label.split()[0].lower()}_{len(flags)}_" + \
          "_".join(f.split("=")[-1].lstrip("-") for f in flags)
      bm25 = "bm25" in flags[0]
      metrics = _train(slug, dataset, flags, export=not bm25)
      if bm25:
        harness.pin_threads()
        metrics["time_p50_ms"] = _bm25_latency(dataset, "bigram" in flags[0])
      else:
        k = min(1000, metrics["num_items"])
        latency = _servable_latency(f"{RUNS}/{slug}_export",
                                    _test_requests(dataset, flags), k)
        metrics["time_p50_ms"] = latency["p50_ms"]
      raw[f"{dataset}/{label}"] = metrics
      rows.append([label] + [metrics.get(key, "") for key in KEYS] +
                  [metrics["time_p50_ms"]])
    sections.append(f"**{dataset}** ({raw[f'{dataset}/BM25']['num_items']:,}"
                    " items)\n\n" + report.markdown_table(
                        ["model"] + list(KEYS) + ["time p50 ms"], rows))
  poly = []
  for label in ("DPSR 1 head", "DPSR (2 heads)"):
    m = raw[f"synthetic/{label}"]
    poly.append([label] + [m.get(k, "") for k in sorted(m) if
                           k.startswith("polysemy_")])
  poly_keys = sorted(k for k in raw["synthetic/DPSR (2 heads)"]
                     if k.startswith("polysemy_"))
  commands = "\n".join(f"    {m['command']}" for m in raw.values())
  text = (
      "## DPSR: Table 2 and Figure 6 analogues\n\n"
      "`python -m benchmarks.dpsr --only=table2` on " + report.machine() +
      ". Top-k: the held-out positive among 1,024 random items; AUC: "
      "labelled pairs of the test queries (query-disjoint split); "
      "time: query text -> top-1,000 (CrowdFlower: of 9,913 items; "
      "synthetic: all 2,000), p50, one thread.\n\n" +
      "\n\n".join(sections) +
      "\n\n**Figure 6 analogue** (synthetic polysemous queries; share of "
      "the top 100 in each meaning's root category; head purity = share of "
      "a head's own top 100 in its dominant meaning)\n\n" +
      report.markdown_table(["model"] + [k.replace("polysemy_", "")
                                         for k in poly_keys], poly) +
      "\n\nCommands:\n\n" + commands)
  report.write_section("dpsr_table2", text, raw)


def headline(dataset: str) -> None:
  """The README's headline rows on `dataset` over `HEADLINE_SEEDS`, every
  trained model's epoch count chosen on validation (`--early_stopping`: a
  query-disjoint tenth of the training queries, Top-10 among random items
  after every epoch, up to `HEADLINE_EPOCHS`, the best epoch's weights tested
  once). The section is rewritten after every model, so that an interrupted
  run keeps the models it finished."""
  raw: Dict[str, Any] = {}
  rows, commands = [], []
  variants = _variants(dataset)
  keys = HEADLINE_KEYS[dataset]
  for label in HEADLINE_VARIANTS[dataset]:
    flags = variants[label]
    bm25 = "bm25" in flags[0]
    runs = []
    for seed in HEADLINE_SEEDS:
      slug = (f"headline/{dataset}_" + "_".join(
          f.split("=")[-1].lstrip("-") for f in flags) + f"_seed{seed}")
      extra = [f"--seed={seed}"] + (
          [] if bm25 else [f"--early_stopping={HEADLINE_PATIENCE}"])
      metrics = _train(slug, dataset, flags + extra, export=False,
                       epochs=HEADLINE_EPOCHS[dataset])
      if not bm25:
        with open(f"{RUNS}/{slug}/validation/state.json") as f:
          metrics["validation_curve"] = json.load(f)["records"]
      metrics["seed"] = seed
      commands.append(metrics["command"])
      runs.append(metrics)
    raw[label] = runs
    rows.append([label] + [report.mean_std(runs, k) for k in keys] +
                [", ".join(str(r.get("best_epoch", "-")) for r in runs)])
    curves = "\n".join(
        f"* {name}, seed {r['seed']}: " +
        ", ".join(f"{c['top10']:.3f}" for c in r["validation_curve"])
        for name, found in raw.items() for r in found
        if "validation_curve" in r)
    listed = "\n".join(f"    {c}" for c in commands)
    report.write_section(f"dpsr_headline_{dataset}", f"""
## DPSR on {dataset}: headline rows over {len(HEADLINE_SEEDS)} seeds, epochs chosen on validation

`python -m benchmarks.dpsr --only=headline --headline_dataset={dataset}` on
{report.machine()} (shared with other jobs). Seeds
{', '.join(map(str, HEADLINE_SEEDS))}; each trained model runs up to
{HEADLINE_EPOCHS[dataset]} epochs with
`--early_stopping={HEADLINE_PATIENCE}`: a query-disjoint tenth of the
training queries is held out of training, its Top-10 among random items
after every epoch picks the epoch whose weights are tested (training stops
after {HEADLINE_PATIENCE} epochs without a gain); the test queries are
evaluated once per seed. Mean ± std (population) over the seeds; metrics
as in the Table 2 analogue.

{report.markdown_table(["model"] + list(keys) + ["epochs (validation)"],
                       rows)}

Validation Top-10 after each epoch (epoch 1 first):

{curves}

<details><summary>commands</summary>

{listed}

</details>
""", raw)


def _minority_head_share(metrics: Dict[str, Any]) -> float:
  """The smallest `head_win_share_<i>` of a run with several heads."""
  shares = [v for k, v in metrics.items() if k.startswith("head_win_share_")]
  return min(shares) if len(shares) > 1 else float("nan")


def _plot_head_meanings(runs: Dict[str, Dict[str, Any]], path: str) -> None:
  """Figure 6b as bars: per model (a panel), per polysemous word and head
  (a bar), the shares of the head's top 100 in the word's first and second
  meaning (stacked), from `polysemy_<word>_head<i>_<root>@100`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  pattern = re.compile(r"polysemy_(.+?)_head(\d+)_(.+)@100$")
  fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4),
                           sharey=True)
  for ax, (label, metrics) in zip(np.atleast_1d(axes), runs.items()):
    shares: Dict[str, Dict[int, Dict[str, float]]] = {}
    for key, value in metrics.items():
      match = pattern.match(key)
      if match:
        word, head, root = match.group(1), int(match.group(2)), match.group(3)
        shares.setdefault(word, {}).setdefault(head, {})[root] = value
    ticks, names, meanings = [], [], []
    for w, word in enumerate(sorted(shares)):
      heads = shares[word]
      roots = sorted(heads[0])
      meanings.append(f"{word}: {roots[0]} / {roots[1]}")
      for head in sorted(heads):
        x = w * 3 + head
        first, second = heads[head][roots[0]], heads[head][roots[1]]
        ax.bar(x, first, color="tab:blue")
        ax.bar(x, second, bottom=first, color="tab:orange")
        ticks.append(x)
        names.append(f"{word}\nh{head}" if len(heads) > 1 else word)
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, fontsize=7)
    ax.set_title(label, fontsize=9)
    ax.set_ylim(0, 1)
  np.atleast_1d(axes)[0].set_ylabel("share of the head's top 100")
  fig.suptitle("blue / orange: " + ", ".join(meanings), fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def heads() -> None:
  raw: Dict[str, Any] = {}
  rows = []
  for label, flags in HEADS_VARIANTS.items():
    slug = "heads_" + "_".join(f.split("=")[-1] for f in flags)
    runs = [_train(f"{slug}_s{seed}", "synthetic",
                   ["--model=dpsr", HEADS_WORLD, f"--seed={seed}"] + flags,
                   export=False) for seed in HEADS_SEEDS]
    raw[label] = runs
    minority = [_minority_head_share(m) for m in runs]
    rows.append([label] + [report.mean_std(runs, k) for k in HEADS_KEYS] +
                ["-" if np.isnan(minority).all() else
                 f"{min(minority):.3f}-{max(minority):.3f}"])
  _plot_head_meanings({label: runs[0] for label, runs in raw.items()},
                      os.path.join(report.RESULTS_DIR, "dpsr_figure6.png"))
  commands = "\n".join(f"    {m['command']}" for runs in raw.values()
                       for m in runs)
  text = (
      "## DPSR: heads on polysemous queries (Figure 6)\n\n"
      "`python -m benchmarks.dpsr --only=heads` on " + report.machine() +
      f". The synthetic world with `{HEADS_WORLD}` (every search for a "
      "meaning of a polysemous word types the bare word), "
      f"{EPOCHS['synthetic']} epochs, seeds {', '.join(map(str, HEADS_SEEDS))}"
      ", mean ± std. min_share: the least-served meaning's share of a "
      "polysemous word's top 100 (the servable's union); meanings_covered: "
      "the share of a word's meanings that hold more than half of some "
      "head's top 100; minority head: the range over seeds of the smallest "
      "head's share of the test positives. `results/dpsr_figure6.png`: "
      f"seed {HEADS_SEEDS[0]}, each head's top 100 by meaning.\n\n" +
      report.markdown_table(["model"] + [k.replace("polysemy_", "")
                                         for k in HEADS_KEYS] +
                            ["minority head"], rows) +
      "\n\nCommands:\n\n" + commands)
  report.write_section("dpsr_heads", text, raw)


def figure7() -> None:
  raw, rows = {}, []
  for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
    metrics = _train(f"alpha_{alpha}", "synthetic", [f"--alpha={alpha}"],
                     export=False)
    raw[str(alpha)] = metrics
    rows.append([alpha, metrics["popularity@100"], metrics["p_good@100"],
                 metrics["recall@100"], metrics["top10"], metrics["auc"]])
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  alphas = [r[0] for r in rows]
  ax.plot(alphas, [r[1] for r in rows], "o-", label="popularity@100")
  ax.plot(alphas, [r[2] for r in rows], "s-", label="P_good@100")
  ax.plot(alphas, [r[4] for r in rows], "^-", label="Top-10")
  ax.set_xlabel("alpha (share of random negatives)")
  ax.legend()
  fig.tight_layout()
  os.makedirs(report.RESULTS_DIR, exist_ok=True)
  fig.savefig(os.path.join(report.RESULTS_DIR, "dpsr_figure7.png"), dpi=120)
  text = ("## DPSR: Figure 7 analogue (mixing ratio alpha)\n\n"
          "`python -m benchmarks.dpsr --only=figure7` on " + report.machine()
          + ", synthetic world. popularity@100: mean popularity percentile "
          "of the top 100 (1 = most popular item). Plot: "
          "`results/dpsr_figure7.png`.\n\n" + report.markdown_table(
              ["alpha", "popularity@100", "P_good@100", "recall@100",
               "Top-10", "AUC"], rows) + "\n\nCommands:\n\n" +
          "\n".join(f"    {m['command']}" for m in raw.values()))
  report.write_section("dpsr_figure7", text, raw)


def _latency_model():
  """The query side of the latency parts: a 2-head DPSR model trained 50
  steps on the synthetic world (latency does not depend on how well it is
  trained), with its task and title token table."""
  from retrieval_tf.compat import keras, tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.text import Tokenizer, padded_ids  # pylint: disable=g-import-not-at-top
  from dpsr_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from dpsr_tf.model import DPSRModel  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)  # the same model, hence queries, every run
  task = data_lib.load_task("synthetic")
  tok = Tokenizer()
  titles = padded_ids(tok, task.item_text)
  model = DPSRModel(task.num_items, titles.shape[1], task.item_feature_sizes,
                    tokenizer=tok.get_config())
  model.set_item_tables(titles, task.item_columns)
  model.compile(optimizer=keras.optimizers.Adagrad(0.05))
  ds = tf.data.Dataset.from_tensor_slices(
      {"query": task.train["query"].astype(str),
       "item_id": task.train["item_id"]}).repeat().batch(
           64, drop_remainder=True)
  model.fit(ds, steps_per_epoch=50, epochs=1, verbose=0)
  return task, model, titles


def _serving_setup(task, model, name: str, num_items: int, calls: int):
  """A fresh `RUNS/name` folder with the item-id asset of `num_items`
  items, the model's fingerprint, and the first `calls` test queries as
  requests."""
  from retrieval_tf.serving.assets import write_vocabulary  # pylint: disable=g-import-not-at-top
  from dpsr_tf.servable import model_fingerprint  # pylint: disable=g-import-not-at-top
  folder = os.path.join(harness.REPO_ROOT, RUNS, name)
  shutil.rmtree(folder, ignore_errors=True)
  os.makedirs(folder)
  items_asset = write_vocabulary(folder, "items",
                                  [f"item{i}" for i in range(num_items)])
  requests = {"query": [str(q) for q in task.test["query"][:calls]]}
  return folder, items_asset, model_fingerprint(model), requests


def latency(num_items: int = 1_000_000, calls: int = 200) -> None:
  """See the module docstring."""
  harness.pin_threads()
  from retrieval_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from dpsr_tf.servable import DPSRServable  # pylint: disable=g-import-not-at-top

  task, model, titles = _latency_model()
  # Index build: the item tower over 1M items (the world's rows tiled) and
  # filling the index.
  embed = tf.function(lambda f: model.item_tower(f, training=False))
  start = time.perf_counter()
  vectors = np.empty((num_items, model.output_dim), np.float32)
  for s in range(0, num_items, 16384):
    rows = np.arange(s, min(s + 16384, num_items)) % task.num_items
    features = {"tokens": tf.constant(titles[rows])}
    features.update({k: tf.constant(v[rows])
                     for k, v in task.item_columns.items()})
    vectors[s:s + len(rows)] = embed(features).numpy()
  tower_seconds = time.perf_counter() - start
  # The catalogue stand-in: random unit vectors (see the module docstring).
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=vectors.shape).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  folder, items_asset, fingerprint, requests = _serving_setup(
      task, model, "latency", num_items, calls)
  raw: Dict[str, Any] = {"num_items": num_items,
                         "item_tower_seconds": round(tower_seconds, 2)}
  rows = []
  for shards in (1, 2, 4):
    per_shard = []
    for shard, indices in enumerate(np.array_split(np.arange(num_items),
                                                   shards)):
      start = time.perf_counter()
      servable = DPSRServable(model, vectors[indices], indices, items_asset,
                              {}, 1000, fingerprint, shard, shards)
      build = time.perf_counter() - start
      target = os.path.join(folder, f"n{shards}", f"shard{shard}")
      export_lib.export_servable(
          target, servable,
          {"serving_default": servable.serve.get_concrete_function()},
          {"model": "dpsr", "example_requests": {
              "serving_default": dict(requests, k=[1000] * calls)}})
      measured = _servable_latency(os.path.relpath(target, harness.REPO_ROOT),
                                   requests, 1000, calls)
      measured["index_fill_seconds"] = round(build, 2)
      per_shard.append(measured)
      if shards == 1:
        exact_ids = _top_ids(servable, requests["query"], 1000)
      del servable
    raw[f"shards_{shards}"] = per_shard
    rows.append([shards, num_items // shards,
                 max(m["p50_ms"] for m in per_shard),
                 max(m["p99_ms"] for m in per_shard),
                 round(1000 / max(m["p50_ms"] for m in per_shard), 1),
                 per_shard[0]["index_fill_seconds"],
                 per_shard[0]["load_seconds"]])
  raw["fanout"] = _fanout_latency(folder, requests, calls)
  # IVF-PQ on the same random vectors, and on a clustered catalogue
  # (`benchmarks.vectors`, as the ANN benchmark) whose exact top-1,000
  # comes from the exact servable in memory (its latency is the same).
  from benchmarks.vectors import clustered_vectors  # pylint: disable=g-import-not-at-top
  from dpsr_tf.servable import DPSRServable  # pylint: disable=g-import-not-at-top
  clustered = clustered_vectors(num_items, 0)[0]
  exact_clustered = _top_ids(
      DPSRServable(model, clustered, np.arange(num_items), items_asset, {},
                   1000, fingerprint), requests["query"], 1000)
  raw["ivfpq"] = {
      "random": _ivfpq_latency(model, vectors, items_asset, fingerprint,
                               requests, exact_ids, folder, calls, "random"),
      "clustered": _ivfpq_latency(model, clustered, items_asset,
                                  fingerprint, requests, exact_clustered,
                                  folder, calls, "clustered")}
  exact = raw["shards_1"][0]
  ann_rows = [["random / clustered", "exact (BruteForceIndex)", "-",
               exact["p50_ms"], exact["p99_ms"],
               round(1000 / exact["p50_ms"], 1), 1.0,
               exact["index_fill_seconds"], exact["load_seconds"]]]
  for catalogue, result in raw["ivfpq"].items():
    for m in result["runs"]:
      ann_rows.append([
          catalogue, "IVF-PQ (IVFPQIndex)",
          f"J={m['num_lists']} D={m['num_subspaces']} "
          f"nprobe={m['nprobe']} rerank={m['rerank']}", m["p50_ms"],
          m["p99_ms"], round(1000 / m["p50_ms"], 1),
          round(m["recall_at_1000"], 4), result["build_seconds"],
          m["load_seconds"]])
  raw["load_average_1min_after"] = os.getloadavg()[0]
  text = (
      "## DPSR: Tables 5/6 analogue (1M items, one servable, sharding)\n\n"
      "`python -m benchmarks.dpsr --only=latency` on " + report.machine() +
      f". Item tower over {num_items:,} items: "
      f"{tower_seconds:.1f} s (one thread). Query text -> tokenizer -> "
      "2-head query tower -> each head's top-1,000 by brute force -> union "
      "cut to 1,000, one request at a time, one intra-op and one inter-op "
      "thread (`benchmarks.servable_latency`). Sharded rows: the slowest "
      "shard (each shard would run on its own machine; QPS per shard "
      "replica = 1000 / p50).\n\n" + report.markdown_table(
          ["shards", "items per shard", "p50 ms", "p99 ms",
           "QPS per replica", "index fill s", "load s"], rows) +
      "\n\n**Exact vs IVF-PQ, unsharded** (the same servable, vectors and "
      "queries; `export_dpsr(index=\"ivfpq\")`, J, D and rerank from "
      "`build_index`'s defaults, nprobe 32 and 16 (larger nprobe: the "
      "IVF-PQ frontier section); the union of the heads' results is still "
      "cut by exact inner products). "
      "Recall@1000: share of the exact servable's top-1,000 that the IVF-PQ "
      f"servable returns, mean over {len(exact_ids)} queries. Index build "
      "s: exact, filling the index; IVF-PQ, training the quantizers and "
      "encoding all items, one thread. Catalogue: the random unit vectors "
      "above (no cluster structure, the hard case for an inverted file) or "
      f"{num_items:,} vectors of a 2,000-component Gaussian mixture "
      "(`benchmarks.vectors.clustered_vectors`); the exact servable's "
      "latency does not depend on the values.\n\n" +
      report.markdown_table(
          ["catalogue", "index", "parameters", "p50 ms", "p99 ms", "QPS", "recall@1000",
           "index build s", "load s"], ann_rows) +
      "\n\nIn-process fan-out client over the shards on this 2-core box "
      "(all shards share the 2 cores; merge included): " +
      ", ".join(f"N={n}: p50 {v['p50_ms']:.1f} ms"
                for n, v in raw["fanout"].items()) + ". Load average of the "
      f"box after the runs: {raw['load_average_1min_after']:.1f} (on 2 "
      "cores; above 1 the latencies include waiting for a core).")
  report.write_section("dpsr_latency", text, raw)


def ivfpq_sweep(num_items: int = 1_000_000, calls: int = 200) -> None:
  """The recall / latency frontier of the unsharded IVF-PQ servable on the
  clustered 1M catalogue: J lists in `IVFPQ_SWEEP`, and for each J the
  (nprobe, rerank) pairs listed there."""
  harness.pin_threads()
  from benchmarks.vectors import clustered_vectors  # pylint: disable=g-import-not-at-top
  from dpsr_tf.servable import DPSRServable  # pylint: disable=g-import-not-at-top

  task, model, _ = _latency_model()
  folder, items_asset, fingerprint, requests = _serving_setup(
      task, model, "ivfpq_sweep", num_items, calls)
  vectors = clustered_vectors(num_items, 0)[0]
  exact_ids = _top_ids(
      DPSRServable(model, vectors, np.arange(num_items), items_asset, {},
                   1000, fingerprint), requests["query"], 1000)
  raw: Dict[str, Any] = {"num_items": num_items, "queries": calls,
                         "by_num_lists": {}}
  rows = []
  for num_lists, settings in IVFPQ_SWEEP.items():
    result = _ivfpq_latency(model, vectors, items_asset, fingerprint,
                            requests, exact_ids, folder, calls, "clustered",
                            settings=settings, num_lists=num_lists,
                            keep_exports=False)
    raw["by_num_lists"][str(num_lists)] = result
    for m in result["runs"]:
      rows.append([m["num_lists"], m["num_subspaces"], m["nprobe"],
                   m["rerank"], round(m["candidates_per_head"]),
                   m["p50_ms"], m["p99_ms"], round(m["recall_at_1000"], 4),
                   result["build_seconds"]])
  raw["load_average_1min_after"] = os.getloadavg()[0]
  text = (
      "## DPSR: IVF-PQ recall / latency frontier at 1M items\n\n"
      "`python -m benchmarks.dpsr --only=ivfpq_sweep` on " +
      report.machine() + ". The servable of the Tables 5/6 analogue (query "
      "text -> 2-head query tower -> each head's top-1,000 -> union cut to "
      f"1,000 by exact inner products) over {num_items:,} vectors of the "
      "2,000-component Gaussian mixture (`benchmarks.vectors."
      "clustered_vectors`), with an `IVFPQIndex` of J lists and D "
      "sub-spaces: nprobe lists per head, the best max(rerank, 1,000) "
      "candidates by ADC re-scored exactly. Candidates per head: items in "
      "the probed lists (mean). p50 / p99: one request at a time through "
      "the loaded servable, one intra-op and one inter-op thread "
      f"(`benchmarks.servable_latency`, {calls} queries). Recall@1000: share "
      "of the exact servable's top-1,000 returned, mean over the same "
      "queries. Build s: training the quantizers and encoding all items, "
      "one thread. The exact servable on the same box: see the Tables 5/6 "
      "analogue.\n\n" + report.markdown_table(
          ["J", "D", "nprobe", "rerank", "candidates per head", "p50 ms",
           "p99 ms", "recall@1000", "build s"], rows) +
      f"\n\nLoad average of the box after the runs: "
      f"{raw['load_average_1min_after']:.1f} (on 2 cores).")
  report.write_section("dpsr_ivfpq_sweep", text, raw)
  print(text)


def _top_ids(servable, queries, k: int, batch: int = 20) -> np.ndarray:
  """`[len(queries), k]` item ids the in-memory servable returns."""
  out = []
  for s in range(0, len(queries), batch):
    rows = queries[s:s + batch]
    out.append(servable.serve({"query": np.asarray(rows, object)},
                              np.full(len(rows), k, np.int32))
               ["item_ids"].numpy())
  return np.concatenate(out)


def _ivfpq_latency(model, vectors, items_asset, fingerprint, requests,
                   exact_ids, folder, calls, tag: str,
                   settings=tuple((n, None) for n in IVFPQ_NPROBE),
                   num_lists=None, keep_exports: bool = True
                   ) -> Dict[str, Any]:
  """IVF-PQ servables over the same vectors: one quantizer training
  (`build_index`'s defaults for D and rerank, and for J unless `num_lists`
  is given), then one servable per (nprobe, rerank) of `settings` (rerank
  None: the trained default)."""
  from retrieval_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.index import IVFPQIndex, build_index  # pylint: disable=g-import-not-at-top
  from dpsr_tf.servable import DPSRServable  # pylint: disable=g-import-not-at-top
  num_items = len(vectors)
  start = time.perf_counter()
  trained = build_index(vectors, "ivfpq", max_k=1000, num_lists=num_lists,
                        seed=0)
  out: Dict[str, Any] = {"build_seconds": round(time.perf_counter() - start,
                                                1), "runs": []}
  for nprobe, rerank in settings:
    config = dict(trained.get_config(), nprobe=nprobe)
    if rerank is not None:
      config["rerank"] = rerank
    config.pop("name")
    index = IVFPQIndex.from_config(config)
    index.set_weights(trained.get_weights())
    scanned = float(np.mean(index.candidates_scanned(
        model.query_heads({"query": tf.constant(requests["query"])})
        .numpy().reshape(-1, vectors.shape[1])).numpy()))
    servable = DPSRServable(model, vectors, np.arange(num_items),
                            items_asset, {}, 1000, fingerprint, index=index)
    found = _top_ids(servable, requests["query"], 1000)
    recall = float(np.mean([len(set(a) & set(b)) / len(b)
                            for a, b in zip(found, exact_ids)]))
    target = os.path.join(folder, f"ivfpq_{tag}_j{trained.num_lists}_"
                          f"nprobe{nprobe}_rerank{index.rerank}")
    export_lib.export_servable(
        target, servable,
        {"serving_default": servable.serve.get_concrete_function()},
        {"model": "dpsr", "example_requests": {
            "serving_default": dict(requests, k=[1000] * calls)}})
    del servable, index
    measured = _servable_latency(os.path.relpath(target, harness.REPO_ROOT),
                                 requests, 1000, calls)
    if not keep_exports:
      shutil.rmtree(target)
    measured.update(num_lists=trained.num_lists, nprobe=nprobe,
                    num_subspaces=trained.num_subspaces,
                    rerank=config["rerank"], recall_at_1000=recall,
                    candidates_per_head=scanned)
    out["runs"].append(measured)
  return out


def _fanout_latency(folder: str, requests, calls: int) -> Dict[str, Any]:
  from retrieval_tf.serving.fanout import FanoutClient, InProcessShard  # pylint: disable=g-import-not-at-top
  out = {}
  for shards in (2, 4):
    client = FanoutClient([InProcessShard(os.path.join(
        folder, f"n{shards}", f"shard{i}")) for i in range(shards)])
    client({"query": requests["query"][:1], "k": [1000]})
    times = []
    for q in requests["query"][:min(calls, 100)]:
      start = time.perf_counter()
      client({"query": [q], "k": [1000]})
      times.append(time.perf_counter() - start)
    client.close()
    out[str(shards)] = {"p50_ms": 1000 * float(np.percentile(times, 50)),
                        "p99_ms": 1000 * float(np.percentile(times, 99))}
  return out


def compressed() -> None:
  harness.pin_threads()
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets import synthetic  # pylint: disable=g-import-not-at-top
  from dpsr_tf import compressed as comp  # pylint: disable=g-import-not-at-top
  from dpsr_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  task = data_lib.load_task(
      "synthetic", synthetic_config=synthetic.SyntheticConfig.scaled(
          20000, mean_searches_per_user=20.0))
  users, items, interactions = comp.synthetic_tables(task)
  folder = os.path.join(harness.REPO_ROOT, RUNS, "compressed")
  shutil.rmtree(folder, ignore_errors=True)
  comp.write_compressed(folder, users, items, interactions)
  joined = os.path.join(folder, comp.JOINED)
  comp.write_joined(joined, users, items, interactions)
  three = sum(os.path.getsize(os.path.join(folder, n))
              for n in (comp.USERS, comp.ITEMS, comp.INTERACTIONS))
  full = os.path.getsize(joined)

  def rate(ds):
    count, start = 0, time.perf_counter()
    for batch in ds:
      count += int(tf.shape(batch["query"])[0])
    return count / (time.perf_counter() - start)

  rate(comp.compressed_dataset(folder, 1024))  # warm the file cache
  three_rate = rate(comp.compressed_dataset(folder, 1024))
  joined_rate = rate(comp.joined_dataset(joined, 1024))
  train = harness.read_metrics(f"{RUNS}/synthetic_dpsr_2_dpsr_2") if \
      os.path.exists(os.path.join(harness.REPO_ROOT, RUNS,
                                  "synthetic_dpsr_2_dpsr_2",
                                  "metrics.json")) else {}
  raw = {"interactions": len(interactions["query"]),
         "users": len(users["user_id"]), "items": len(items["item_id"]),
         "three_file_bytes": three, "joined_bytes": full,
         "size_ratio": three / full,
         "three_file_examples_per_second": three_rate,
         "joined_examples_per_second": joined_rate,
         "dpsr_train_examples_per_second": train.get(
             "train_examples_per_second")}
  text = (
      "## DPSR: compressed input (Sec. 5.1.2)\n\n"
      "`python -m benchmarks.dpsr --only=compressed` on " + report.machine() +
      f". Synthetic world, {raw['interactions']:,} search clicks of "
      f"{raw['users']:,} users on {raw['items']:,} items; text TSV files; "
      "one thread.\n\n" + report.markdown_table(
          ["input", "bytes", "examples/s"],
          [["3 files (users, items, interactions)", three, three_rate],
           ["joined table", full, joined_rate]]) +
      f"\n\nThe 3 files take {100 * three / full:.0f}% of the joined "
      "table's bytes. DPSR training on the default synthetic world runs at "
      f"{raw['dpsr_train_examples_per_second']} examples/s (Table 2 run), "
      "so the 3-file reader is not the bottleneck when it is faster than "
      "that.")
  report.write_section("dpsr_compressed", text, raw)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", choices=("table2", "headline", "heads",
                                         "figure7",
                                         "latency", "ivfpq_sweep",
                                         "compressed"))
  parser.add_argument("--latency_items", type=int, default=1_000_000)
  parser.add_argument("--headline_dataset", choices=tuple(HEADLINE_VARIANTS),
                      help="--only=headline on this dataset alone")
  args = parser.parse_args()

  def headlines():
    for dataset in HEADLINE_VARIANTS:
      if args.headline_dataset in (None, dataset):
        headline(dataset)

  parts = {"table2": table2, "headline": headlines, "heads": heads,
           "figure7": figure7, "compressed": compressed,
           "latency": lambda: latency(args.latency_items),
           "ivfpq_sweep": lambda: ivfpq_sweep(args.latency_items)}
  for name, fn in parts.items():
    if args.only in (None, name):
      fn()


if __name__ == "__main__":
  main()
