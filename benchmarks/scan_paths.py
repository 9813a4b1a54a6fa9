"""The search paths inside the pure-TF inverted-file indexes, side by side.

    python -m benchmarks.scan_paths [--num_items=1000000,200000]

`IVFPQIndex` has two scans that give the same scores: query by query (one
look-up table per query, one flattened gather of every candidate's codes)
and list by list (a `tf.while_loop` that decodes each probed list once and
scores it with one matmul against all the queries that probe it). Which is
faster depends on how many queries share a list. `IVFFlatIndex` has a
single-query path (one gather of the probed chunks, one mat-vec) besides
the tiled batch path. This benchmark times both paths of the same layer on
the same probes, alternating calls, one thread, for every batch size and
nprobe given, and shows which one the layer picks (`list_scan_from`, by
default `retrieval_tf.index.default_list_scan_from`) and what that choice
costs against the faster one: a cost near 1 everywhere means no step where
the path changes.

Vectors: `benchmarks.vectors.clustered_vectors` (N x 64). IVF-PQ: J = 1024,
D = 16, K = 256, width 300 (the ADC candidates kept for re-ranking 300).
IVF-Flat: `build_index(..., "ivf_flat")` defaults (J = sqrt(N)), k = 100.
Times are medians of compiled concrete functions (as a loaded servable's
signature is called). Writes the `scan_paths` section of RESULTS.md and
`results/scan_paths.json`.
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Callable, Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from benchmarks.vectors import clustered_vectors

flags.DEFINE_list("num_items", ["1000000", "200000"], "Sizes of the "
                  "clustered sets.")
flags.DEFINE_list("batches", ["1", "2", "4", "8", "16", "32", "64", "128"],
                  "Query batch sizes of the IVF-PQ grid.")
flags.DEFINE_list("nprobes", ["8", "16", "32", "64", "128"], "nprobe values "
                  "of both indexes.")
flags.DEFINE_integer("num_lists", 1024, "IVF-PQ lists J.")
flags.DEFINE_integer("width", 300, "ADC candidates kept per query.")
flags.DEFINE_float("seconds", 0.5, "Least time spent timing each path of "
                   "each cell (at least 3 calls each).")
FLAGS = flags.FLAGS
# The switch before 2026-12-04: list by list above 64 (query, list) pairs
# whatever J and N; its cost is shown next to the default's.
OLD_LIST_SCAN_FROM = 64


def _median_ms(calls: Dict[str, Callable[[], object]]) -> Dict[str, float]:
  """Median wall time of each call, ms, the calls alternating so that both
  see the same machine."""
  for call in calls.values():
    call()
  times: Dict[str, List[float]] = {name: [] for name in calls}
  start = time.perf_counter()
  while (min(len(t) for t in times.values()) < 3
         or time.perf_counter() - start < FLAGS.seconds):
    for name, call in calls.items():
      begin = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - begin)
  return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def ivfpq_grid(items: np.ndarray, queries: np.ndarray) -> dict:
  """Both IVF-PQ scans of one layer over the batch x nprobe grid."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.index import IVFPQIndex  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  index = IVFPQIndex.from_embeddings(items, num_lists=FLAGS.num_lists,
                                     num_subspaces=16, max_k=FLAGS.width,
                                     rerank=FLAGS.width, store_vectors=True)
  build = time.perf_counter() - start
  width = tf.constant(FLAGS.width)
  spec = tf.TensorSpec([None, items.shape[1]], tf.float32)

  def scan(method):
    # The layer's own scans on its own probes (the private methods are what
    # is compared; `call` picks one of them).
    def run(queries, nprobe):
      rotated, coarse, probes = index._probe(queries, nprobe)  # pylint: disable=protected-access
      return method(rotated, coarse, probes, width, None)
    return tf.function(run).get_concrete_function(
        spec, tf.TensorSpec([], tf.int32))

  scans = {"by query": scan(index._scan_by_query),  # pylint: disable=protected-access
           "by list": scan(index._scan_by_list)}  # pylint: disable=protected-access
  rows = []
  for batch in map(int, FLAGS.batches):
    batch_queries = tf.constant(queries[:batch])
    for nprobe in map(int, FLAGS.nprobes):
      probe = tf.constant(nprobe)
      ms = _median_ms({name: (lambda f=f: f(batch_queries, probe))
                       for name, f in scans.items()})
      picked = ("by list" if index.scans_by_list(batch, nprobe)
                else "by query")
      old = ("by list" if batch > 1 and batch * nprobe > OLD_LIST_SCAN_FROM
             else "by query")
      rows.append({"batch": batch, "nprobe": nprobe,
                   "pairs_per_list": batch * nprobe / FLAGS.num_lists,
                   "by_query_ms": round(ms["by query"], 3),
                   "by_list_ms": round(ms["by list"], 3), "picked": picked,
                   "picked_over_best": round(ms[picked] / min(ms.values()),
                                             3),
                   "old_rule_over_best": round(ms[old] / min(ms.values()),
                                               3)})
      print(rows[-1], flush=True)
  return {"build_seconds": round(build, 1),
          "list_scan_from": index.list_scan_from, "rows": rows}


def ivf_flat_single(items: np.ndarray, queries: np.ndarray) -> dict:
  """One query through `IVFFlatIndex`'s single-query path and through its
  batch path, same probes."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.index import build_index  # pylint: disable=g-import-not-at-top
  index = build_index(items, "ivf_flat", max_k=100)
  spec = tf.TensorSpec([1, items.shape[1]], tf.float32)

  def path(name):
    # The layer's own paths on its own probes, as for IVF-PQ above.
    def run(query, nprobe):
      starts, ends = index._probe_chunks(query, nprobe)  # pylint: disable=protected-access
      if name == "single-query path":
        return index._search_one(query, 100, starts, ends, None)  # pylint: disable=protected-access
      return index._search_batch(query, 100, nprobe, starts, ends, None)  # pylint: disable=protected-access
    return tf.function(run).get_concrete_function(
        spec, tf.TensorSpec([], tf.int32))

  paths = {name: path(name) for name in ("single-query path", "batch path")}
  rows = []
  for nprobe in map(int, FLAGS.nprobes):
    if nprobe > index.num_lists:
      continue
    probe = tf.constant(nprobe)
    times = [_median_ms({name: (lambda f=f, q=q: f(q, probe))
                         for name, f in paths.items()})
             for q in (tf.constant(queries[i:i + 1]) for i in range(5))]
    ms = {name: float(np.median([t[name] for t in times])) for name in paths}
    rows.append({"nprobe": nprobe,
                 "single_ms": round(ms["single-query path"], 3),
                 "batch_path_ms": round(ms["batch path"], 3)})
    print(rows[-1], flush=True)
  return {"num_lists": index.num_lists, "rows": rows}


def main(unused_argv):
  harness.pin_threads()
  command = shlex.join(["python", "-m", "benchmarks.scan_paths"] +
                       sys.argv[1:])
  raw = {"machine": report.machine(), "num_lists": FLAGS.num_lists,
         "width": FLAGS.width, "sets": {}}
  text = [
      "## Search paths of the pure-TF inverted files",
      "",
      f"`{command}` on "
      f"{raw['machine']}, one thread, "
      "clustered N x 64 vectors (`benchmarks/vectors.py`). Both paths of "
      "one layer on the same probes, alternating calls, median ms of a "
      "concrete function; \"picked\" is the path the layer takes by "
      "default, \"cost\" its time over the faster path's.",
  ]
  for count in map(int, FLAGS.num_items):
    items, queries = clustered_vectors(
        count, max(max(map(int, FLAGS.batches)), 5))
    pq = ivfpq_grid(items, queries)
    flat = ivf_flat_single(items, queries)
    raw["sets"][str(count)] = {"ivfpq": pq, "ivf_flat": flat}
    worst = max(r["picked_over_best"] for r in pq["rows"])
    worst_old = max(r["old_rule_over_best"] for r in pq["rows"])
    text += [
        "", f"### {count:,} x 64: IVF-PQ by query against by list", "",
        f"J = {FLAGS.num_lists}, D = 16, width {FLAGS.width}, "
        f"`list_scan_from` = {pq['list_scan_from']} pairs (built in "
        f"{pq['build_seconds']} s). Worst cost of the picked scan: "
        f"{worst:.2f}x; of the switch at {OLD_LIST_SCAN_FROM} pairs used "
        f"until 2026-12-04: {worst_old:.2f}x.", "",
        report.markdown_table(
            ["batch", "nprobe", "(query, list) pairs per list",
             "by query ms", "by list ms", "picked", "cost",
             f"cost, switch at {OLD_LIST_SCAN_FROM} pairs"],
            [[r["batch"], r["nprobe"], f"{r['pairs_per_list']:.2f}",
              f"{r['by_query_ms']:.2f}", f"{r['by_list_ms']:.2f}",
              r["picked"], f"{r['picked_over_best']:.2f}x",
              f"{r['old_rule_over_best']:.2f}x"]
             for r in pq["rows"]]),
        "", f"### {count:,} x 64: IVF-Flat, one query", "",
        f"J = {flat['num_lists']}, k = 100; the layer takes the "
        "single-query path for one query.", "",
        report.markdown_table(
            ["nprobe", "single-query path ms", "batch path ms"],
            [[r["nprobe"], f"{r['single_ms']:.3f}",
              f"{r['batch_path_ms']:.3f}"] for r in flat["rows"]])]
  report.write_section("scan_paths", "\n".join(text), raw)


if __name__ == "__main__":
  app.run(main)
