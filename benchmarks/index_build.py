"""IVF-PQ build time and recall: the TF trainer against Faiss, in one run.

    python -m benchmarks.index_build [--num_items=1000000]

On `--num_items` x 64 vectors of two kinds (`benchmarks.vectors`: the
clustered set of the ANN benchmark, and a set whose clusters overlap:
within-cluster spread comparable to the distance between centres), one
thread everywhere, for each J in `--num_lists` with D=`--num_subspaces`
and K=`--num_codewords`:

* build wall time (and CPU time of this process) of
  `retrieval_tf.index.IVFPQIndex.from_embeddings` (k-means of the coarse
  quantizer and of the residual PQ on their training samples, encoding
  every item, filling the index; library defaults: lists by angle, at most
  64 training points per centroid, at most 20 Lloyd iterations stopped
  early at a relative improvement below 5e-3), split into training + encoding
  (`quantization.train_ivfpq`) and filling the index;
* for each J in `--sample_study`, the same build with Faiss' training
  sample (256 points per centroid), to show what the smaller sample costs
  in recall;
* the same for Faiss `IndexIVFPQ` (inner product, Faiss defaults): `train`
  + `add`;
* recall@100 of both against the exact top-100 (inner product, NumPy) of
  `--num_queries` queries at each nprobe of `--nprobes` and J / 16 (the
  `build_index` default), without re-ranking (PQ against PQ) and with the
  best `--rerank` ADC candidates re-scored exactly (TF `rerank=`, Faiss
  `IndexRefineFlat` with `k_factor = rerank / 100`).

The two builds of one setting run back to back in this process, so their
ratio holds even on a loaded machine; the load average before each build
is recorded next to it. Writes the `index_build` section of RESULTS.md and
`results/index_build.json`; a run of some `--datasets` keeps the other
sets' rows of the earlier run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from benchmarks import vectors

flags.DEFINE_integer("num_items", 1_000_000, "Vectors indexed.")
flags.DEFINE_integer("num_queries", 1000, "Queries with exact ground truth.")
flags.DEFINE_list("num_lists", ["1024", "4000"], "J values.")
flags.DEFINE_integer("num_subspaces", 16, "D.")
flags.DEFINE_integer("num_codewords", 256, "K.")
flags.DEFINE_list("nprobes", ["16", "32", "64"], "nprobe values (J / 16 "
                  "is added).")
flags.DEFINE_integer("rerank", 300, "Candidates re-scored exactly in the "
                     "re-ranked rows (a multiple of 100).")
flags.DEFINE_list("datasets", ["clustered", "overlapping"], "Which sets.")
flags.DEFINE_list("sample_study", ["1024"], "J values at which TF is also "
                  "built on 256 training points per centroid.")
FLAGS = flags.FLAGS

K = 100


def datasets() -> Dict[str, tuple]:
  """name -> (items, queries)."""
  sets = {}
  for name in FLAGS.datasets:
    if name == "clustered":
      items, queries = vectors.clustered_vectors(FLAGS.num_items,
                                                 FLAGS.num_queries)
    elif name == "overlapping":
      items, queries = vectors.overlapping_vectors(FLAGS.num_items,
                                                   FLAGS.num_queries)
    else:
      raise app.UsageError(f"--datasets: unknown set {name!r}; use "
                           "clustered and/or overlapping")
    sets[f"{name} {len(items):,} x {items.shape[1]}"] = (items, queries)
  return sets


def exact_top(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
  """The exact top-K ids by inner product `[num_queries, K]`."""
  top = []
  for start in range(0, len(queries), 256):
    scores = queries[start:start + 256] @ items.T
    top.append(np.argpartition(-scores, K - 1, axis=1)[:, :K])
  return np.concatenate(top)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  return float(np.mean([len(set(f) & set(t)) / K
                        for f, t in zip(found, truth)]))


def load() -> float:
  """The 1-minute load average (other processes share the CPU)."""
  return os.getloadavg()[0]


def build_tf(items: np.ndarray, lists: int, points_per_centroid=None):
  """`IVFPQIndex.from_embeddings` with its training recorded (and, when
  given, `points_per_centroid` passed to its `train_ivfpq`): returns
  (index, seconds, breakdown)."""
  from retrieval_tf import index as index_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf import quantization  # pylint: disable=g-import-not-at-top
  recorded = {}
  train_ivfpq = quantization.train_ivfpq

  def recording(*args, **kwargs):    # the same call, timed and kept
    if points_per_centroid:
      kwargs["max_points_per_centroid"] = points_per_centroid
    start = time.perf_counter()
    book = train_ivfpq(*args, **kwargs)
    recorded.update(train_seconds=time.perf_counter() - start,
                    training_points=list(book.training_points),
                    iterations=list(book.iterations),
                    distortion=book.distortion)
    return book

  quantization.train_ivfpq = recording
  try:
    start, cpu = time.perf_counter(), time.process_time()
    index = index_lib.IVFPQIndex.from_embeddings(
        items, lists, FLAGS.num_subspaces, FLAGS.num_codewords, max_k=K,
        store_vectors=True)
    seconds = time.perf_counter() - start
    recorded["cpu_seconds"] = time.process_time() - cpu
  finally:
    quantization.train_ivfpq = train_ivfpq
  recorded["fill_seconds"] = seconds - recorded["train_seconds"]
  return index, seconds, recorded


def build_faiss(items: np.ndarray, lists: int):
  """Faiss `IndexIVFPQ` train + add: returns (index, seconds, breakdown)."""
  import faiss  # pylint: disable=g-import-not-at-top
  dim = items.shape[1]
  bits = int(np.log2(FLAGS.num_codewords))
  start, cpu = time.perf_counter(), time.process_time()
  index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists,
                           FLAGS.num_subspaces, bits,
                           faiss.METRIC_INNER_PRODUCT)
  index.train(items)
  trained = time.perf_counter()
  index.add(items)
  done = time.perf_counter()
  return index, done - start, {"train_seconds": trained - start,
                               "add_seconds": done - trained,
                               "cpu_seconds": time.process_time() - cpu}


def searches(tf_indexes, faiss_index, items, nprobes):
  """(nprobe, rerank) -> {method: search(queries) -> ids}."""
  import faiss  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  spec = [tf.TensorSpec([None, items.shape[1]], tf.float32)]
  refined = faiss.IndexRefineFlat(faiss_index, faiss.swig_ptr(items))
  refined.k_factor = FLAGS.rerank / K
  out = {}
  for nprobe in nprobes:
    for rerank in (0, FLAGS.rerank):
      out[(nprobe, rerank)] = methods = {}
      for method, index in tf_indexes.items():
        call = tf.function(
            lambda q, i=index, n=nprobe, r=rerank: i(q, K, nprobe=n,
                                                     rerank=r),
            input_signature=spec)
        methods[method] = lambda q, c=call: c(tf.constant(q))[1].numpy()

      def faiss_search(q, n=nprobe, r=rerank):
        faiss_index.nprobe = n
        return (refined if r else faiss_index).search(q, K)[1]

      methods["faiss"] = faiss_search
  return out


def run_setting(name: str, items, queries, truth, lists: int):
  """Builds both (and the sample study's TF index), measures recall;
  returns (build record, recall rows)."""
  builds = {"dataset": name, "num_lists": lists}
  tf_indexes = {}
  variants = [("tf", None)]
  if str(lists) in FLAGS.sample_study:
    variants.append(("tf_256", 256))
  for method, points in variants:
    print(f"[{name}] J={lists}: {method} build", flush=True)
    builds[f"load_before_{method}"] = load()
    tf_indexes[method], seconds, parts = build_tf(items, lists, points)
    builds[method] = dict(parts, seconds=seconds)
    print(f"  {seconds:.1f} s {json.dumps(parts)}", flush=True)
  print(f"[{name}] J={lists}: Faiss build", flush=True)
  builds["load_before_faiss"] = load()
  faiss_index, seconds, parts = build_faiss(items, lists)
  builds["faiss"] = dict(parts, seconds=seconds)
  print(f"  {seconds:.1f} s {json.dumps(parts)}", flush=True)
  nprobes = sorted({int(n) for n in FLAGS.nprobes} | {max(1, lists // 16)})
  rows = []
  for (nprobe, rerank), search in searches(
      tf_indexes, faiss_index, items,
      [n for n in nprobes if n <= lists]).items():
    row = {"dataset": name, "num_lists": lists, "nprobe": nprobe,
           "rerank": rerank}
    for method, method_search in search.items():
      row[f"{method}_recall@100"] = recall(method_search(queries), truth)
    print(json.dumps(row), flush=True)
    rows.append(row)
  return builds, rows


def main(unused_argv):
  os.chdir(harness.REPO_ROOT)
  harness.pin_threads()
  builds, rows = [], []
  measured = datasets()
  for name, (items, queries) in measured.items():
    truth = exact_top(items, queries)
    for lists in FLAGS.num_lists:
      build, recalls = run_setting(name, items, queries, truth, int(lists))
      builds.append(build)
      rows += recalls
      write(builds, rows, list(measured))   # what is done so far


def write(builds, rows, measured):
  """The section and JSON of `builds` and `rows`, with the other sets' rows
  of an earlier run (one set per run is fine)."""
  command = " ".join(["python -m benchmarks.index_build"] + sys.argv[1:])
  commands = {name: command for name in measured}
  path = os.path.join(report.RESULTS_DIR, "index_build.json")
  if os.path.exists(path):
    with open(path) as f:
      earlier = json.load(f)
    kept = set(earlier.get("commands", {})) - set(measured)
    builds = [b for b in earlier["builds"] if b["dataset"] in kept] + builds
    rows = [r for r in earlier["recall"] if r["dataset"] in kept] + rows
    commands = dict({n: c for n, c in earlier["commands"].items()
                     if n in kept}, **commands)

  def seconds(build, method):
    b = build[method]
    split = (f"{b['train_seconds']:.1f} / {b['fill_seconds']:.1f}"
             if method != "faiss" else
             f"{b['train_seconds']:.1f} / {b['add_seconds']:.1f}")
    return f"{b['seconds']:.1f} ({split}; CPU {b['cpu_seconds']:.1f})"

  build_rows = []
  for b in builds:
    for method in ("tf", "tf_256"):
      if method not in b:
        continue
      t, f = b[method], b["faiss"]
      build_rows.append([
          b["dataset"], b["num_lists"],
          "TF" if method == "tf" else "TF, 256 points / centroid",
          seconds(b, method), ", ".join(map(str, t["iterations"])),
          ", ".join(f"{p:,}" for p in t["training_points"]),
          seconds(b, "faiss"), f"{t['seconds'] / f['seconds']:.2f}",
          f"{t['cpu_seconds'] / f['cpu_seconds']:.2f}",
          f"{b['load_before_' + method]:.1f}, {b['load_before_faiss']:.1f}"])
  build_table = report.markdown_table(
      ["vectors", "J", "TF build", "TF s (train + encode / fill; CPU)",
       "TF iterations (coarse, PQ)", "TF training points (coarse, PQ)",
       "Faiss s (train / add; CPU)", "TF / Faiss wall", "TF / Faiss CPU",
       "load avg (TF, Faiss)"], build_rows)
  recall_table = report.markdown_table(
      ["vectors", "J", "nprobe", "re-rank", "TF recall@100",
       "TF (256 / centroid)", "Faiss recall@100"],
      [[r["dataset"], r["num_lists"], r["nprobe"], r["rerank"] or "off",
        r["tf_recall@100"],
        r.get("tf_256_recall@100", "-"), r["faiss_recall@100"]]
       for r in rows])
  listed = "\n".join(f"    {c}" for c in dict.fromkeys(commands.values()))
  report.write_section("index_build", f"""
## IVF-PQ build: the TF trainer against Faiss

Measured on {report.machine()} by

{listed}

one thread (TF intra/inter
op, Faiss OpenMP), D={FLAGS.num_subspaces}, K={FLAGS.num_codewords}, the
same J for both. TF: `IVFPQIndex.from_embeddings` with its defaults (lists
by angle with centroids scaled to their members, at most 64 training
points per centroid, at most 20 Lloyd iterations stopped at a relative
improvement below 5e-3, coarse k-means seeded by k-means++ for J <= 256
and random points above, product k-means by random points); "TF, 256
points / centroid": the same on Faiss' training sample. Faiss:
`IndexIVFPQ` (inner product) `train` + `add` with its defaults (256 points
per centroid, spherical coarse k-means, 10 coarse and 25 PQ iterations).
The builds of a row ran back to back in one process (the 1-minute load
average before each build is in the last column, on {os.cpu_count()}
cores; above 1 another job shared the CPU): the ratios, and the CPU
seconds of this process, are the figures to read.

{build_table}

Recall@100 against the exact top-100 (inner product) of
{FLAGS.num_queries:,} queries; re-rank {FLAGS.rerank}: TF `rerank=`
{FLAGS.rerank}, Faiss `IndexRefineFlat` with k_factor
{FLAGS.rerank / K:g}:

{recall_table}
""", {"builds": builds, "recall": rows, "commands": commands})


if __name__ == "__main__":
  app.run(main)
