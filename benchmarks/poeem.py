"""Poeem's Table 2: the jointly trained index against offline indexes of the
same embeddings.

    python -m benchmarks.poeem [--data_root=../shared/data] [--datasets=ml-1m]

Trains Poeem (`python -m poeem_tf.train ... --save_embeddings`, the command
is recorded), then indexes the model's own unquantized item embeddings x
offline, as a user of the two-tower model would, and searches them with the
same held-out users' query vectors (DR protocol, the input half excluded):

* exact brute force over x (the ceiling of any offline index);
* Faiss IVFPQ with Poeem's J, K, D (`nbits = log2 K`) and the same nprobe;
* ScaNN with J leaves, the same leaves searched, 4-bit AH on d/D-dim blocks;
* Annoy and Faiss `IndexLSH` (D log2 K bits, Poeem's code size) at about the
  same search cost (Annoy: search_k = the candidates Poeem scans);
* Poeem's own served index (its learned codes in `IVFPQIndex`).

Reports p@100 and r@100 (and build seconds) in the `poeem` section of
`RESULTS.md` and `results/poeem.json`. One thread everywhere.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from retrieval_tf import metrics as metrics_lib

flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ml-1m/ and amazon-beauty/.")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks",
                                                "poeem"), "Where runs go.")
flags.DEFINE_list("datasets", ["ml-1m", "amazon-beauty"], "Datasets.")
flags.DEFINE_list("train_flags", [
    "--loss=softmax", "--learning_rate=0.1", "--epochs=3",
    "--steps_per_epoch=400", "--warm_start_steps=300"],
                  "Extra flags of the Poeem training run.")
flags.DEFINE_bool("figures", False, "Instead of Table 2: Figure 2 (r@100 "
                  "over J, K, D with and without rotation, against Faiss "
                  "IVFPQ) and Figure 3 (r@100 over warm-start steps, coarse "
                  "list sizes cold vs warm) on the first dataset, as PNGs.")
FLAGS = flags.FLAGS

# Figure 2: one parameter varied at a time around J=64, K=16, D=16.
SWEEP = {"num_centroids": (16, 64, 256), "num_codewords": (4, 16, 64),
         "num_subspaces": (4, 16, 32)}
WARM_STEPS = (0, 100, 300, 900)

K = 100
REPO_ROOT = harness.REPO_ROOT


def _filtered(ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
  """The first K ids of each row not in that row's exclusions (-1 pads)."""
  out = np.full((len(ids), K), -1, np.int64)
  for row, (found, banned) in enumerate(zip(ids, exclude)):
    keep = found[(found >= 0) & ~np.isin(found, banned)][:K]
    out[row, :len(keep)] = keep
  return out


def offline_indexes(items, queries, exclude, config, only_faiss=False):
  """name -> (build seconds, top-K ids with exclusions) on the same x."""
  import faiss  # pylint: disable=g-import-not-at-top
  num, dim = items.shape
  lists, subspaces = config["num_centroids"], config["num_subspaces"]
  codewords = config["num_codewords"]
  nprobe = config["nprobe"] or max(1, lists // 4)
  bits = int(math.log2(codewords))
  depth = K + exclude.shape[1]      # enough to fill K after exclusions
  results = {}

  def timed(name, build, search):
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    results[name] = (seconds, _filtered(search(index), exclude))

  def faiss_ivfpq():
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, subspaces,
                             bits, faiss.METRIC_INNER_PRODUCT)
    index.train(items)
    index.add(items)
    index.nprobe = nprobe
    return index

  timed(f"Faiss IVFPQ (J={lists}, D={subspaces}, K={codewords}, "
        f"nprobe={nprobe})", faiss_ivfpq,
        lambda index: index.search(queries, min(depth, num))[1])
  if only_faiss:
    return results

  def scann_index():
    import scann  # pylint: disable=g-import-not-at-top
    return (scann.scann_ops_pybind.builder(items, min(depth, num),
                                           "dot_product")
            .tree(num_leaves=lists, num_leaves_to_search=nprobe,
                  training_sample_size=num)
            .score_ah(dim // subspaces,
                      anisotropic_quantization_threshold=0.2).build())

  timed(f"ScaNN ({lists} leaves, {nprobe} searched, AH)", scann_index,
        lambda index: index.search_batched(queries)[0])

  def lsh():
    index = faiss.IndexLSH(dim, subspaces * bits)
    index.add(items)
    return index

  timed(f"Faiss IndexLSH ({subspaces * bits} bits)", lsh,
        lambda index: index.search(queries, min(depth, num))[1])

  def annoy_index():
    from annoy import AnnoyIndex  # pylint: disable=g-import-not-at-top
    index = AnnoyIndex(dim, "dot")
    for i, vector in enumerate(items):
      index.add_item(i, vector)
    index.build(10, n_jobs=1)
    return index

  scanned = int(num * nprobe / lists)
  def annoy_search(index):
    found = np.full((len(queries), min(depth, num)), -1, np.int64)
    for row, query in enumerate(queries):
      ids = index.get_nns_by_vector(query, min(depth, num), search_k=scanned)
      found[row, :len(ids)] = ids
    return found

  timed(f"Annoy (10 trees, search_k={scanned})", annoy_index, annoy_search)

  def exact():
    return items

  timed("brute force on x (exact)", exact,
        lambda items_: np.argsort(-(queries @ items_.T), axis=1)[
            :, :min(depth, num)])
  return results


# Ablations (Figure 2's rotation axis, Figure 3's cold start): extra flags.
ABLATIONS = {"Poeem": [], "Poeem-nr (no rotation)": ["--norotation"],
             "Poeem, cold start": ["--warm_start_steps=0"]}


def recall_at_scan(metrics, scanned: float) -> float:
  """r@100 of a run's served index at `scanned` items per query,
  interpolated (linearly in log items scanned) along its nprobe sweep."""
  sweep = sorted((metrics[f"nprobe{n}_scanned"], metrics[f"nprobe{n}_recall@{K}"])
                 for n in (int(key[6:-8]) for key in metrics
                           if key.startswith("nprobe") and
                           key.endswith("_scanned")))
  cost, recall = np.array(sweep).T
  return float(np.interp(np.log(scanned), np.log(cost), recall))


def _train(dataset: str, out: str, extra, threads: int = 1):
  """Runs one Poeem training; returns (command, metrics)."""
  cmd = ["python", "-m", "poeem_tf.train", f"--dataset={dataset}",
         f"--data_dir={os.path.join(FLAGS.data_root, dataset)}",
         f"--output_dir={out}", "--overwrite", "--verbose=2",
         "--save_embeddings", "--nprobe_sweep"] + FLAGS.train_flags + \
      list(extra)
  harness.run_command(cmd, threads)
  return cmd, harness.read_metrics(out)


def _faiss_recall(out: str, config) -> float:
  """r@100 of Faiss IVFPQ with the run's J, K, D on its own x."""
  saved = np.load(os.path.join(out, "embeddings.npz"))
  name, (_, top) = next(iter(offline_indexes(
      saved["items"], saved["queries"], saved["exclude"], config,
      only_faiss=True).items()))
  return metrics_lib.ranking_report(topk=top, truth=saved["truth"],
                                    ks=(K,))[f"recall@{K}"]


def figures(dataset: str) -> None:
  """Figures 2 and 3 of the paper on `dataset` (two threads per run: these
  are quality figures, not timings)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  base = {"num_centroids": 64, "num_codewords": 16, "num_subspaces": 16}
  root = os.path.join(FLAGS.output_root, "figures", dataset)
  points, commands, done = {}, [], {}
  for param, values in SWEEP.items():
    for value in values:
      config = dict(base, **{param: value})
      for rotation in (True, False):
        flags_ = [f"--{k}={v}" for k, v in config.items()] + (
            [] if rotation else ["--norotation"])
        out = os.path.join(root, "-".join(f[2:] for f in flags_))
        if out not in done:   # the base point is shared by the sweeps
          cmd, found = _train(dataset, out, flags_, threads=2)
          commands.append(shlex.join(cmd))
          done[out] = (found[f"recall@{K}"],
                       _faiss_recall(out, dict(config, nprobe=0)))
        points[(param, value, rotation)] = done[out]
  warm = {}
  for steps in WARM_STEPS:
    out = os.path.join(root, f"warm-{steps}")
    cmd, found = _train(dataset, out, [f"--warm_start_steps={steps}"],
                        threads=2)
    commands.append(shlex.join(cmd))
    saved = np.load(os.path.join(out, "embeddings.npz"))
    warm[steps] = (found[f"recall@{K}"], found["coarse_used"],
                   saved["list_sizes"], found)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, (param, values) in zip(axes, SWEEP.items()):
    ax.plot(values, [points[(param, v, True)][0] for v in values], "o-",
            label="Poeem")
    ax.plot(values, [points[(param, v, False)][0] for v in values], "s--",
            label="Poeem-nr")
    ax.plot(values, [points[(param, v, True)][1] for v in values], "^:",
            label="Faiss IVFPQ (x of the Poeem run)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(param.replace("num_", "").replace("centroids", "J")
                  .replace("codewords", "K").replace("subspaces", "D"))
    ax.set_ylabel(f"r@{K}")
    ax.legend(fontsize=7)
  fig.suptitle(f"Figure 2 on {dataset}")
  fig.tight_layout()
  fig.savefig(os.path.join(report.RESULTS_DIR, "poeem_figure2.png"), dpi=110)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot(WARM_STEPS, [warm[s][0] for s in WARM_STEPS], "o-")
  axes[0].set_xlabel("warm-start steps (0 = cold start)")
  axes[0].set_ylabel(f"r@{K}")
  for steps in (0, max(WARM_STEPS)):
    axes[1].bar(np.arange(len(warm[steps][2])), np.sort(warm[steps][2])[::-1],
                alpha=0.6, label=f"{steps} warm-start steps")
  axes[1].set_xlabel("coarse centroid (sorted by size)")
  axes[1].set_ylabel("items")
  axes[1].legend()
  fig.suptitle(f"Figure 3 on {dataset}")
  fig.tight_layout()
  fig.savefig(os.path.join(report.RESULTS_DIR, "poeem_figure3.png"), dpi=110)
  rows2 = [[param, value, f"{points[(param, value, True)][0]:.4f}",
            f"{points[(param, value, False)][0]:.4f}",
            f"{points[(param, value, True)][1]:.4f}"]
           for param, values in SWEEP.items() for value in values]
  scan = warm[max(WARM_STEPS)][3]["scanned"]
  rows3 = [[steps, f"{warm[steps][0]:.4f}", f"{warm[steps][3]['scanned']:,.0f}",
            f"{recall_at_scan(warm[steps][3], scan):.4f}",
            f"{warm[steps][1]:.2f}"] for steps in WARM_STEPS]
  listed = "\n".join(f"    {c}" for c in commands)
  report.write_section("poeem_figures", f"""
## Poeem, Figures 2 and 3 on {dataset}

Measured by `python -m benchmarks.poeem --figures
{' '.join(a for a in sys.argv[1:] if a != '--figures')}` (two threads per
training run; served index, nprobe = J/4); plots in
`results/poeem_figure2.png` and `results/poeem_figure3.png`. Faiss IVFPQ is
built on the unquantized embeddings of the Poeem run with the same J, K, D.

{report.markdown_table(["varied", "value", f"Poeem r@{K}",
                        f"Poeem-nr r@{K}", f"Faiss IVFPQ r@{K}"], rows2)}

{report.markdown_table(["warm-start steps", f"r@{K}", "items scanned",
                        f"r@{K} at {scan:,.0f} items scanned",
                        "coarse centroids used"], rows3)}

"items scanned": mean items the served index scores per query; the column
after it interpolates each run's recall along its nprobe sweep to the scan
of the {max(WARM_STEPS)}-step run (equal search cost).

<details><summary>commands</summary>

{listed}

</details>
""", {"figure2": {f"{p}={v} rotation={r}": list(x)
                  for (p, v, r), x in points.items()},
      "figure3": {str(s): [w[0], w[1], w[2].tolist(), w[3]["scanned"]]
                  for s, w in warm.items()},
      "commands": commands})


def main(unused_argv):
  os.chdir(REPO_ROOT)
  harness.pin_threads()
  if FLAGS.figures:
    figures(FLAGS.datasets[0])
    return
  rows, ablation_rows, staleness, raw = [], [], [], {}
  for dataset in FLAGS.datasets:
    out = os.path.join(FLAGS.output_root, dataset)
    cmd, metrics = _train(dataset, out, [])
    with open(os.path.join(out, "config.json")) as f:
      config = json.load(f)
    saved = np.load(os.path.join(out, "embeddings.npz"))
    items, queries = saved["items"], saved["queries"]
    truth, exclude = saved["truth"], saved["exclude"]
    table = {}
    for name, (seconds, top) in offline_indexes(items, queries, exclude,
                                                config).items():
      scores = metrics_lib.ranking_report(topk=top, truth=truth, ks=(K,))
      table[name] = (scores[f"precision@{K}"], scores[f"recall@{K}"],
                     seconds)
    table["Poeem (served index: codes remembered in training, same "
          "nprobe)"] = (metrics[f"precision@{K}"], metrics[f"recall@{K}"],
                        metrics["index_build_seconds"])
    table["Poeem (codes re-encoded by the final quantizers, same nprobe)"] \
        = (metrics[f"fresh_precision@{K}"], metrics[f"fresh_recall@{K}"],
           math.nan)
    staleness.append([dataset, metrics["codes_never_stored"],
                      metrics["coarse_codes_changed"],
                      metrics["pq_codes_changed"]])
    table["most popular (floor)"] = (metrics[f"popular_precision@{K}"],
                                     metrics[f"popular_recall@{K}"], 0.0)
    raw[dataset] = {"command": shlex.join(cmd), "rows": table,
                    "poeem_metrics": metrics, "ablations": {}}
    for name, extra in ABLATIONS.items():
      found = metrics if not extra else _train(
          dataset, f"{out}-{extra[0].lstrip('-').split('=')[0]}", extra)[1]
      raw[dataset]["ablations"][name] = found
      ablation_rows.append([
          dataset, name, " ".join(extra) or "-", found[f"precision@{K}"],
          found[f"recall@{K}"], f"{found['scanned']:,.0f}",
          recall_at_scan(found, metrics["scanned"]), found["coarse_used"],
          found["coarse_entropy"]])
    rows += [[dataset, name, p, r, "-" if math.isnan(s) else f"{s:.2f}"]
             for name, (p, r, s) in table.items()]
  commands = "\n".join(f"    {v['command']}" for v in raw.values())
  table_md = report.markdown_table(
      ["dataset", "index", f"p@{K}", f"r@{K}", "build s"], rows)
  report.write_section("poeem", f"""
## Poeem, Table 2: the jointly trained index vs offline indexes

Measured on {report.machine()} by `python -m benchmarks.poeem
{' '.join(sys.argv[1:])}`, one thread. Poeem is trained by

{commands}

and every offline index is built on that model's own unquantized item
embeddings x and searched with the same held-out users' query vectors (DR
protocol, {len(queries)} users, the input half excluded). "build s" of Poeem
is copying the codes its index layer remembered in training into the index
(items never quantized after the warm start are encoded then); the row
below it re-encodes every item with the final quantizers instead.

{table_md}

How stale the remembered codes are at the end of training (share of items
never quantized after the warm start; among the others, share whose coarse
code, and share of PQ codes, differ from the final quantizers' codes):

{report.markdown_table(
    ["dataset", "never stored", "coarse code changed", "PQ codes changed"],
    staleness)}

Ablations, each a full training run with the flags added (served index):

{report.markdown_table(
    ["dataset", "variant", "flags", f"p@{K}", f"r@{K}", "items scanned",
     f"r@{K} at Poeem's scan", "coarse centroids used", "coarse entropy"],
    ablation_rows)}

"items scanned" is the mean number of items the served index scores per
query (the sizes of its probed lists); "r@{K} at Poeem's scan" is the
variant's recall when it scans as many items per query as Poeem's default
run, interpolated along its nprobe sweep (`--nprobe_sweep`): the
comparison at equal search cost.
""", raw)


if __name__ == "__main__":
  app.run(main)
