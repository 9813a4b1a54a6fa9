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
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

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
FLAGS = flags.FLAGS

K = 100
REPO_ROOT = os.path.dirname(report.HERE)


def _pin_threads() -> None:
  import faiss  # pylint: disable=g-import-not-at-top
  faiss.omp_set_num_threads(1)


def _filtered(ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
  """The first K ids of each row not in that row's exclusions (-1 pads)."""
  out = np.full((len(ids), K), -1, np.int64)
  for row, (found, banned) in enumerate(zip(ids, exclude)):
    keep = found[(found >= 0) & ~np.isin(found, banned)][:K]
    out[row, :len(keep)] = keep
  return out


def offline_indexes(items, queries, exclude, config):
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


def _train(dataset: str, out: str, extra):
  """Runs one Poeem training (one thread); returns (command, metrics)."""
  cmd = ["python", "-m", "poeem_tf.train", f"--dataset={dataset}",
         f"--data_dir={os.path.join(FLAGS.data_root, dataset)}",
         f"--output_dir={out}", "--overwrite", "--verbose=2",
         "--save_embeddings"] + FLAGS.train_flags + list(extra)
  print("$", shlex.join(cmd), flush=True)
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1",
             TF_NUM_INTEROP_THREADS="1")
  subprocess.run([sys.executable] + cmd[1:], check=True, env=env)
  with open(os.path.join(out, "metrics.json")) as f:
    return cmd, json.load(f)


def main(unused_argv):
  os.chdir(REPO_ROOT)
  _pin_threads()
  rows, ablation_rows, raw = [], [], {}
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
    table["Poeem (served index: learned codes, same nprobe)"] = (
        metrics[f"precision@{K}"], metrics[f"recall@{K}"],
        metrics["index_build_seconds"])
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
          found[f"recall@{K}"], found["coarse_used"],
          found["coarse_entropy"]])
    rows += [[dataset, name, p, r, f"{s:.2f}"]
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
is encoding the catalogue with its trained quantizers and filling the index.

{table_md}

Ablations, each a full training run with the flags added (served index):

{report.markdown_table(
    ["dataset", "variant", "flags", f"p@{K}", f"r@{K}",
     "coarse centroids used", "coarse entropy"], ablation_rows)}
""", raw)


if __name__ == "__main__":
  app.run(main)
