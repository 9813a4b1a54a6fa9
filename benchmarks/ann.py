"""Approximate nearest neighbours, side by side in one run.

    python -m benchmarks.ann [--data_root=../shared/data] [--num_items=1000000]

Same vectors, same queries, one thread everywhere (TF intra/inter-op, Faiss
OpenMP, hnswlib, ScaNN's serial batch search), exact ground truth by NumPy
brute force. Peers: the pure-TF `BruteForceIndex` and `IVFPQIndex` of this
library, TFRS `BruteForce` and `ScaNN` layers, ScaNN's Python API, Faiss
`IndexFlatIP` and `IndexIVFPQ` (with and without `IndexRefineFlat`), hnswlib
and Annoy. Datasets:

* `ml-1m`: item and user embeddings of the two-tower baseline trained on NCF
  ML-1M (`python -m retrieval_tf.train ... --save_embeddings`), real;
* `clustered-1m`: `--num_items` x 64 vectors drawn around 2,000 Gaussian
  centres with different spreads, queries from the same mixture;
* `overlapping-1m`: `--num_items` x 64 vectors around 1,000 Gaussian centres
  whose within-cluster spread is comparable to the distance between centres
  (`benchmarks.vectors.overlapping_vectors`), queries from the same mixture.

For each method and setting: recall@10 and recall@100 against the exact
top-100, QPS of one 1,000-query batch (median of 3; Annoy has no batch call
and is timed query by query), single-query p50 / p99 latency, build time and
index bytes; for the pure-TF indexes also the single-query p50 of the same
graph exported and called from C, as a model server runs it
(`benchmarks/native_latency.py`). It then trains the two-tower on a
synthetic world of `--num_items` items, exports it with an IVF-PQ index,
and times that servable and the ML-1M one from disk in a TensorFlow-only
process (`benchmarks/servable_latency.py`). Writes the `ann` section of
RESULTS.md, `results/ann.json` and `results/ann.png` (recall@100 vs QPS).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import native_latency
from benchmarks import report
from benchmarks.vectors import clustered_vectors, overlapping_vectors

flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ncf-ml-1m/ (relative to the repository "
                    "root).")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks", "ann"),
                    "Where training runs and exports go.")
flags.DEFINE_integer("num_items", 1_000_000, "Items of the clustered set and"
                     " of the synthetic world behind the 1M servable.")
flags.DEFINE_integer("num_queries", 1000, "Queries (one batch).")
flags.DEFINE_integer("latency_queries", 200, "Single queries timed.")
flags.DEFINE_list("datasets", ["ml-1m", "clustered-1m", "overlapping-1m"],
                  "Which datasets.")
flags.DEFINE_bool("servables", True, "Also time exported servables.")
flags.DEFINE_bool("native", True, "Also time the pure-TF indexes from C "
                  "(benchmarks.native_latency): each exported with one "
                  "signature per setting, as a model server runs them.")
flags.DEFINE_bool("retrain_ml1m", True, "Train the ML-1M two-tower again "
                  "(false: reuse the embeddings an earlier run saved under "
                  "--output_root).")
flags.DEFINE_string("note", "", "A sentence on the conditions of the run "
                    "(e.g. the machine load), printed above the tables and "
                    "kept with the rows it describes.")
flags.DEFINE_list("methods", [], "Only these methods (names as in the table;"
                  " empty: all).")
flags.DEFINE_list("scale", [], "Item counts of the scale table (clustered "
                  "x 64, e.g. 100000,1000000,10000000; empty: none).")
FLAGS = flags.FLAGS

K = 100
REPO_ROOT = harness.REPO_ROOT


def _train_command(dataset: str, output_dir: str, export_dir: str,
                   extra=()) -> List[str]:
  cmd = ["python", "-m", "retrieval_tf.train", "--model=two_tower",
         f"--dataset={dataset}", f"--output_dir={output_dir}",
         f"--export_dir={export_dir}", "--overwrite", "--verbose=2"]
  if dataset != "synthetic":
    cmd.append(f"--data_dir={os.path.join(FLAGS.data_root, dataset)}")
  return cmd + list(extra)


def ml1m_embeddings():
  out = os.path.join(FLAGS.output_root, "ml-1m")
  cmd = _train_command("ncf-ml-1m", out, os.path.join(out, "export"),
                       ["--epochs=5", "--save_embeddings"])
  if FLAGS.retrain_ml1m or not os.path.exists(
      os.path.join(REPO_ROOT, out, "user_embeddings.npy")):
    harness.run_command(cmd)
  items = np.load(os.path.join(REPO_ROOT, out, "item_embeddings.npy"))
  users = np.load(os.path.join(REPO_ROOT, out, "user_embeddings.npy"))
  return items, users, cmd, os.path.join(out, "export")


def exact_top(items, queries, k=K):
  """The true top k of each query by inner product, `[Q, k]` item ids; the
  queries go in blocks of at most 2^27 scores (512 MB), so 10M items fit."""
  top = []
  block = int(np.clip((1 << 27) // len(items), 1, 256))
  for start in range(0, len(queries), block):
    scores = queries[start:start + block] @ items.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
    top.append(np.take_along_axis(part, order, 1))
  return np.concatenate(top)


def recall(found, truth, k):
  return float(np.mean([len(set(f[:k]) & set(t[:k])) / k
                        for f, t in zip(found, truth)]))


def _measure(search: Callable, queries, truth, batch_search=True):
  """recall@10/@100, QPS of the batch (median of 3), single-query p50/p99."""
  found = np.asarray(search(queries))
  if batch_search:
    runs = []
    for _ in range(3):
      start = time.perf_counter()
      search(queries)
      runs.append(time.perf_counter() - start)
    qps = len(queries) / float(np.median(runs))
  latencies = []
  for q in queries[:FLAGS.latency_queries]:
    start = time.perf_counter()
    search(q[None])
    latencies.append(time.perf_counter() - start)
  if not batch_search:
    qps = len(latencies) / float(np.sum(latencies))
  return {"recall@10": recall(found, truth, 10),
          "recall@100": recall(found, truth, K), "qps": qps,
          "p50_ms": 1000 * float(np.percentile(latencies, 50)),
          "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def _file_bytes(save: Callable[[str], None]) -> int:
  with tempfile.TemporaryDirectory() as folder:
    save(os.path.join(folder, "index"))
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)


def methods(items: np.ndarray, large: bool) -> Dict[str, Callable]:
  """name -> builder returning (bytes, {setting: search(queries) -> ids})."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf import index as index_lib  # pylint: disable=g-import-not-at-top
  num, dim = items.shape
  lists = 2048 if large else max(1, min(int(4 * np.sqrt(num)), num // 39))
  leaves = 2000 if large else lists
  probes = (4, 8, 16) if large else tuple(
      sorted({max(1, lists // d) for d in (16, 8, 4)}))
  spec = [tf.TensorSpec([None, dim], tf.float32)]

  def tf_search(call, index=None):
    # A concrete function, as a loaded SavedModel's signatures are: no
    # per-call argument matching. It wraps `call` so that its Python
    # signature is `(q)` alone: a traced function with a defaulted parameter
    # (`lambda q, n=nprobe: ...`) costs 0.3 to 0.5 ms more per call here,
    # in the binding of its arguments, which inflated these p50s before
    # 2026-12-04. A pure-TF index's search also carries (index, call), from
    # which `native_timings` exports the same graph.
    fn = tf.function(lambda q: call(q),
                     input_signature=spec).get_concrete_function()
    search = lambda q: fn(tf.constant(q, tf.float32))[1].numpy()
    search.servable = None if index is None else (index, call)
    return search

  def tf_brute_force():
    index = index_lib.build_index(items, "brute_force", max_k=K)
    return (index_lib.index_parameters(index)["bytes"],
            {"exact": tf_search(lambda q: index(q, K), index)})

  def tf_ivfpq():
    index = index_lib.IVFPQIndex.from_embeddings(
        items, lists, dim // 4, iterations=10, max_k=K, store_vectors=True)
    settings = {}
    for nprobe in probes:
      for rerank in (0, 300):
        settings[f"nprobe={nprobe} rerank={rerank}"] = tf_search(
            lambda q, n=nprobe, r=rerank: index(q, K, nprobe=n, rerank=r),
            index)
    return index_lib.index_parameters(index)["bytes"], settings

  def tf_ivf_flat(scan_dtype: str):
    # build_index's defaults: J = sqrt(N) lists, nprobe 8 when not given.
    index = index_lib.build_index(items, "ivf_flat", max_k=K,
                                  scan_dtype=scan_dtype)
    settings = {}
    for nprobe in sorted({min(n, index.num_lists)
                          for n in (1, 2, 4, 8, 16, 32)}):
      settings[f"J={index.num_lists} nprobe={nprobe}"] = tf_search(
          lambda q, n=nprobe: index(q, K, nprobe=n), index)
    return index_lib.index_parameters(index)["bytes"], settings

  def tfrs_brute_force():
    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
    layer = tfrs.layers.factorized_top_k.BruteForce(k=K)
    layer.index(tf.constant(items))
    return items.nbytes + 8 * num, {"exact": tf_search(layer)}

  def tfrs_scann():
    import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
    searched = max(1, leaves // (40 if large else 8))
    layer = tfrs.layers.factorized_top_k.ScaNN(
        k=K, num_leaves=leaves, num_leaves_to_search=searched,
        num_reordering_candidates=300, parallelize_batch_searches=False)
    layer.index(tf.constant(items))
    return None, {f"leaves={searched} reorder=300": tf_search(layer)}

  def scann_python():
    import scann  # pylint: disable=g-import-not-at-top
    searcher = (scann.scann_ops_pybind.builder(items, K, "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=leaves // 40,
                      training_sample_size=min(num, 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(300).build())
    settings = {}
    for share in ((80, 40, 20) if large else (16, 8, 4, 2)):
      searched = max(1, leaves // share)
      settings[f"leaves={searched} reorder=300"] = (
          lambda q, s=searched: searcher.search_batched(
              q, final_num_neighbors=K, leaves_to_search=s)[0])
    return _file_bytes(lambda p: (os.makedirs(p), searcher.serialize(p))), \
        settings

  def faiss_flat():
    import faiss  # pylint: disable=g-import-not-at-top
    index = faiss.IndexFlatIP(dim)
    index.add(items)
    return (len(faiss.serialize_index(index)),
            {"exact": lambda q: index.search(q, K)[1]})

  def faiss_ivfpq(refine: bool):
    import faiss  # pylint: disable=g-import-not-at-top
    quantizer = faiss.IndexFlatIP(dim)
    ivfpq = faiss.IndexIVFPQ(quantizer, dim, lists, dim // 4, 8,
                             faiss.METRIC_INNER_PRODUCT)
    ivfpq.train(items)
    ivfpq.add(items)
    index = faiss.IndexRefineFlat(ivfpq, faiss.swig_ptr(items)) \
        if refine else ivfpq
    if refine:
      index.k_factor = 3.0
    settings = {}
    for nprobe in probes:
      def search(q, n=nprobe):
        ivfpq.nprobe = n
        return index.search(q, K)[1]
      name = f"nprobe={nprobe}" + (" k_factor=3" if refine else "")
      settings[name] = search
    return len(faiss.serialize_index(index)), settings

  def hnsw():
    import hnswlib  # pylint: disable=g-import-not-at-top
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=num, ef_construction=100, M=16)
    index.set_num_threads(1)
    index.add_items(items)
    settings = {}
    for ef in (100, 200, 400):
      def search(q, ef=ef):
        index.set_ef(ef)
        return index.knn_query(q, k=K)[0]
      settings[f"ef={ef}"] = search
    return _file_bytes(index.save_index), settings

  def annoy():
    from annoy import AnnoyIndex  # pylint: disable=g-import-not-at-top
    trees = 50 if large else 20
    index = AnnoyIndex(dim, "dot")
    for i, vector in enumerate(items):
      index.add_item(i, vector)
    index.build(trees, n_jobs=1)
    settings = {}
    for search_k in (trees * K * 4, trees * K * 16):
      settings[f"trees={trees} search_k={search_k}"] = (
          lambda q, s=search_k: np.array(
              [index.get_nns_by_vector(v, K, search_k=s) for v in q]))
    return _file_bytes(index.save), settings

  return {"tf BruteForceIndex": tf_brute_force, "tf IVFPQIndex": tf_ivfpq,
          "tf IVFFlatIndex": lambda: tf_ivf_flat("float32"),
          "tf IVFFlatIndex bf16": lambda: tf_ivf_flat("bfloat16"),
          "tfrs BruteForce": tfrs_brute_force, "tfrs ScaNN": tfrs_scann,
          "ScaNN (Python)": scann_python, "Faiss IndexFlatIP": faiss_flat,
          "Faiss IVFPQ": lambda: faiss_ivfpq(False),
          "Faiss IVFPQ + refine": lambda: faiss_ivfpq(True),
          "hnswlib": hnsw, "Annoy": annoy}


def benchmark_dataset(name, items, queries):
  truth = exact_top(items, queries)
  rows = []
  for method, build in methods(items, large=len(items) >= 500_000).items():
    if FLAGS.methods and method not in FLAGS.methods:
      continue
    print(f"[{name}] {method}: building", flush=True)
    start = time.perf_counter()
    size, settings = build()
    build_seconds = time.perf_counter() - start
    native = native_timings(settings, queries) if FLAGS.native else {}
    for setting, search in settings.items():
      result = _measure(search, queries, truth,
                        batch_search=method != "Annoy")
      result.update(dataset=name, method=method, setting=setting,
                    build_seconds=build_seconds, bytes=size)
      if setting in native:
        result.update(native_p50_ms=native[setting]["p50_ms"],
                      native_p99_ms=native[setting]["p99_ms"],
                      native_qps=native[setting]["batch_rows_per_second"])
      print(json.dumps(result), flush=True)
      rows.append(result)
  return rows


def native_timings(settings, queries) -> Dict[str, dict]:
  """Each setting of a pure-TF index timed from C, as a model server runs
  it (`benchmarks.native_latency`): the index is exported once, one
  signature per setting holding the very graph the in-process search runs,
  `(query_embedding [B, d]) -> (scores, item_ids)`; {} for other methods."""
  servable = {s: f.servable for s, f in settings.items()
              if getattr(f, "servable", None)}
  if not servable:
    return {}
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.index = next(iter(servable.values()))[0]
  spec = [tf.TensorSpec([None, queries.shape[1]], tf.float32,
                        name="query_embedding")]
  names = {setting: f"setting_{i}" for i, setting in enumerate(servable)}
  signatures = {
      names[setting]: tf.function(
          lambda query_embedding, c=call: dict(
              zip(("scores", "item_ids"), c(query_embedding))),
          input_signature=spec).get_concrete_function()
      for setting, (_, call) in servable.items()}
  with tempfile.TemporaryDirectory() as folder:
    tf.saved_model.save(module, folder, signatures=signatures)
    return {setting: native_latency.time_servable(
        folder, {"query_embedding": queries}, calls=FLAGS.latency_queries,
        batch=len(queries), signature=names[setting])
            for setting in servable}


def call_floor_ms() -> float:
  """p50 ms of a single query through a TF function that only adds 1 to it,
  called as the TF indexes are (a concrete function): the fixed cost of a
  TF call from Python on this machine, below which no TF index's p50 can
  go."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  fn = tf.function(lambda q: q + 1.0, input_signature=[
      tf.TensorSpec([None, 64], tf.float32)]).get_concrete_function()
  query = np.zeros((1, 64), np.float32)
  latencies = []
  for _ in range(1000):
    start = time.perf_counter()
    fn(tf.constant(query)).numpy()
    latencies.append(time.perf_counter() - start)
  return 1000 * float(np.percentile(latencies[100:], 50))


def servable_timings(ml1m_export: str):
  """Load time and latency of exported servables, each in its own process."""
  out = os.path.join(FLAGS.output_root, "synthetic")
  results, commands = [], []
  exports = []
  if ml1m_export:
    exports.append(("ncf-ml-1m two-tower + BruteForceIndex (3,706 items)",
                    ml1m_export, None))
  export = os.path.join(out, "export")
  cmd = _train_command(
      "synthetic", out, export,
      [f"--synthetic_items={FLAGS.num_items}", "--epochs=1",
       "--batch_size=1024", "--learning_rate=0.3", "--index=ivf_flat"])
  commands.append(harness.run_command(cmd))
  exports.append((f"synthetic world, {FLAGS.num_items:,} items, two-tower + "
                  "IVFFlatIndex (build_index defaults)", export, out))
  for label, export, run_dir in exports:
    request_file = None
    if run_dir:
      request_file = os.path.join(REPO_ROOT, run_dir, "requests.json")
      _write_requests(request_file)
    cmd = [sys.executable, "-m", "benchmarks.servable_latency",
           os.path.join(REPO_ROOT, export), f"--k={K}"]
    if request_file:
      cmd.append(f"--requests={request_file}")
    line = subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    result = dict(json.loads(line), servable_label=label)
    print(json.dumps(result), flush=True)
    results.append(result)
  return results, commands


def _servable_timing(export: str, request_file: str) -> dict:
  """`benchmarks.servable_latency` of an export, in its own process."""
  cmd = [sys.executable, "-m", "benchmarks.servable_latency",
         os.path.join(REPO_ROOT, export), f"--k={K}",
         f"--requests={request_file}"]
  line = subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True,
                        text=True).stdout.strip().splitlines()[-1]
  return json.loads(line)


def export_index(index, export: str, queries: np.ndarray) -> str:
  """An index alone as a servable: `serving_default(query_embedding [B, d],
  k [B]) -> item_ids, scores`; returns the version folder."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf import index as index_lib  # pylint: disable=g-import-not-at-top
  from retrieval_tf.serving import assets  # pylint: disable=g-import-not-at-top
  limit = assets.k_range(K, index.num_items)
  module = tf.Module()
  module.index = index

  @tf.function(input_signature=[
      tf.TensorSpec([None, index.dim], tf.float32, name="query_embedding"),
      tf.TensorSpec([None], tf.int32, name="k")])
  def serve(query_embedding, k):
    k0 = assets.request_k(k, tf.shape(query_embedding)[0], limit)
    scores, ids = index(query_embedding, k0)
    return {"item_ids": ids, "scores": scores}

  example = {"query_embedding": queries[:2].tolist(), "k": [10, 10]}
  return export_lib.export_servable(
      export, module, {"serving_default": serve.get_concrete_function()},
      {"index": index_lib.index_parameters(index),
       "example_requests": {"serving_default": example}})


def scale_table(counts: List[int]):
  """Build time, bytes, load time, QPS and p50 of the best stock-TF index
  (`build_index(..., "ivf_flat")` defaults, exported and timed from disk in a
  TensorFlow-only process, then checked by `retrieval_tf.serving.check`)
  and ScaNN (leaves 2 sqrt(N), 1/40 of them searched, reorder 300) on
  clustered N x 64 vectors."""
  import scann  # pylint: disable=g-import-not-at-top
  from retrieval_tf import index as index_lib  # pylint: disable=g-import-not-at-top
  rows = []
  for count in counts:
    items, queries = clustered_vectors(count, FLAGS.num_queries)
    truth = exact_top(items, queries)
    name = f"clustered {count:,} x 64"
    print(f"[scale] {name}: tf IVFFlatIndex", flush=True)
    start = time.perf_counter()
    index = index_lib.build_index(items, "ivf_flat", max_k=K)
    build = time.perf_counter() - start
    from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
    fn = tf.function(lambda q: index(q, K), input_signature=[
        tf.TensorSpec([None, items.shape[1]], tf.float32)]
                     ).get_concrete_function()
    result = _measure(lambda q: fn(tf.constant(q))[1].numpy(), queries,
                      truth)
    folder = os.path.join(FLAGS.output_root, "scale", str(count))
    export = export_index(index, os.path.join(folder, "export"), queries)
    size = index_lib.index_parameters(index)["bytes"]
    setting = f"J={index.num_lists} nprobe={index.nprobe}"
    del index, fn
    request_file = os.path.join(REPO_ROOT, folder, "requests.json")
    with open(request_file, "w") as f:
      json.dump({"query_embedding": queries.tolist()}, f)
    served = _servable_timing(os.path.join(folder, "export"), request_file)
    native = native_latency.time_servable(
        export, {"query_embedding": queries,
                 "k": np.full([len(queries)], K, np.int32)},
        calls=FLAGS.latency_queries, batch=len(queries))
    check = subprocess.run(
        [sys.executable, "-m", "retrieval_tf.serving.check", export],
        cwd=REPO_ROOT, capture_output=True, text=True)
    rows.append(dict(result, dataset=name, items=count,
                     method="tf IVFFlatIndex (servable)", setting=setting,
                     build_seconds=build, bytes=size,
                     load_seconds=served["load_seconds"],
                     servable_p50_ms=served["p50_ms"],
                     servable_native_p50_ms=native["p50_ms"],
                     servable_rows_per_second=served[
                         "batch_1000_rows_per_second"],
                     check="passed" if check.returncode == 0 else
                     "FAILED: " + check.stdout[-300:]))
    print(json.dumps(rows[-1]), flush=True)
    print(f"[scale] {name}: ScaNN", flush=True)
    leaves = int(2 * np.sqrt(count))
    start = time.perf_counter()
    searcher = (scann.scann_ops_pybind.builder(items, K, "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=leaves // 40,
                      training_sample_size=min(count, 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(300).build())
    build = time.perf_counter() - start
    saved = os.path.join(REPO_ROOT, folder, "scann")
    os.makedirs(saved, exist_ok=True)
    searcher.serialize(saved)
    size = sum(os.path.getsize(os.path.join(saved, n))
               for n in os.listdir(saved))
    del searcher
    start = time.perf_counter()
    searcher = scann.scann_ops_pybind.load_searcher(saved)
    load = time.perf_counter() - start
    result = _measure(lambda q: searcher.search_batched(
        q, final_num_neighbors=K)[0], queries, truth)
    rows.append(dict(result, dataset=name, items=count, method="ScaNN "
                     "(Python)", setting=f"leaves={leaves // 40}/{leaves} "
                     "reorder=300", build_seconds=build, bytes=size,
                     load_seconds=load))
    print(json.dumps(rows[-1]), flush=True)
    del searcher, items, queries, truth
  return rows


def _write_requests(path: str) -> None:
  """1,000 raw requests of the synthetic world's users, as clients send
  them."""
  from retrieval_tf.datasets import registry, synthetic  # pylint: disable=g-import-not-at-top
  from retrieval_tf.models.two_tower_servable import raw_requests  # pylint: disable=g-import-not-at-top
  dataset = registry.load_rec_dataset(
      "synthetic", synthetic_config=synthetic.SyntheticConfig.scaled(
          FLAGS.num_items, seed=0))
  users = np.random.default_rng(0).choice(dataset.num_users, 1000,
                                          replace=False)
  with open(path, "w") as f:
    json.dump(raw_requests(dataset, users, 50), f)


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  datasets = sorted({r["dataset"] for r in rows})
  fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5),
                           squeeze=False)
  names = list(dict.fromkeys(r["method"] for r in rows))
  # One colour and marker per method, the same in every panel.
  styles = {m: (plt.cm.tab10(i % 10), "os^Dv<>pP*X"[i % 11])
            for i, m in enumerate(names)}
  for ax, dataset in zip(axes[0], datasets):
    for method in names:
      points = sorted(((r["recall@100"], r["qps"]) for r in rows
                       if r["dataset"] == dataset and r["method"] == method),
                      key=lambda p: (-p[0], -p[1]))
      if not points:
        continue
      # As ann-benchmarks: the line is the Pareto frontier (no other
      # setting is both more accurate and faster); dots are all settings.
      frontier, best = [], -1.0
      for recall_value, qps in points:
        if qps > best:
          frontier.append((recall_value, qps))
          best = qps
      colour, marker = styles[method]
      ax.plot(*zip(*frontier), marker=marker, color=colour, label=method)
      ax.scatter(*zip(*points), color=colour, marker=marker, s=12)
    ax.set_yscale("log")
    ax.set_xlabel("recall@100")
    ax.set_ylabel("queries per second (batch of 1,000, 1 thread)")
    ax.set_title(dataset)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(unused_argv):
  os.chdir(REPO_ROOT)
  harness.pin_threads()
  rows, commands, ml1m_export = [], [], None
  floor = call_floor_ms() if FLAGS.datasets else None
  native_floor = (native_latency.call_floor_ms()
                  if FLAGS.datasets and FLAGS.native else None)
  if "ml-1m" in FLAGS.datasets:
    items, users, cmd, ml1m_export = ml1m_embeddings()
    commands.append(shlex.join(cmd))
    queries = users[np.random.default_rng(0).choice(
        len(users), min(FLAGS.num_queries, len(users)), replace=False)]
    rows += benchmark_dataset("ml-1m two-tower", items, queries)
  if "clustered-1m" in FLAGS.datasets:
    items, queries = clustered_vectors(FLAGS.num_items, FLAGS.num_queries)
    rows += benchmark_dataset(f"clustered {len(items):,} x 64", items,
                              queries)
  if "overlapping-1m" in FLAGS.datasets:
    items, queries = overlapping_vectors(FLAGS.num_items, FLAGS.num_queries)
    rows += benchmark_dataset(f"overlapping {len(items):,} x 64", items,
                              queries)
  scale = scale_table([int(c) for c in FLAGS.scale])
  servables = []
  if FLAGS.servables:
    servables, more = servable_timings(ml1m_export)
    commands += more
  argv = shlex.join(["python", "-m", "benchmarks.ann"] + sys.argv[1:])
  for row in rows + scale + servables:
    row["command"] = argv
    row["load_average"] = os.getloadavg()[0]
    row["note"] = FLAGS.note
  for row in rows:
    row["tf_call_floor_ms"] = floor
    if native_floor is not None:
      row["native_floor_ms"] = native_floor
  rows, scale, servables, commands = _merge_earlier(
      rows, scale, servables, commands)
  # Each run's note and TF call floor travel with its rows.
  notes = [n for n in dict.fromkeys(r.get("note", "")
                                    for r in rows + scale + servables) if n]
  floors = _floors(rows, "tf_call_floor_ms")
  if floors:
    notes.append("A TF function that only adds 1 to a single query, called "
                 f"like the TF indexes, takes {floors} ms p50 in the run(s) "
                 "of these rows: the floor under every TF index's p50 here.")
  native_floors = _floors(rows, "native_floor_ms")
  if native_floors:
    notes.append("From C (\"native p50\", `benchmarks.native_latency`), a "
                 f"signature that only adds 1 takes {native_floors} ms p50 "
                 "in the run(s) of these rows.")
  plot(rows, os.path.join(report.RESULTS_DIR, "ann.png"))
  table = report.markdown_table(
      ["dataset", "method", "setting", "recall@10", "recall@100", "QPS",
       "p50 ms", "p99 ms", "native p50 ms", "build s", "MB"],
      [[r["dataset"], r["method"], r["setting"], r["recall@10"],
        r["recall@100"], f"{r['qps']:,.0f}", f"{r['p50_ms']:.3f}",
        f"{r['p99_ms']:.3f}", _ms(r.get("native_p50_ms")),
        f"{r['build_seconds']:.1f}",
        "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f}"]
       for r in rows])
  scaling = report.markdown_table(
      ["items", "method", "setting", "build s", "MB", "load s",
       "recall@100", "QPS", "p50 ms", "servable p50 ms",
       "servable native p50 ms", "servable rows/s", "serving.check"],
      [[f"{r['items']:,}", r["method"], r["setting"],
        f"{r['build_seconds']:.1f}", f"{r['bytes'] / 2**20:,.0f}",
        f"{r['load_seconds']:.2f}", r["recall@100"], f"{r['qps']:,.0f}",
        f"{r['p50_ms']:.3f}", f"{r.get('servable_p50_ms', '-')}",
        _ms(r.get("servable_native_p50_ms")),
        f"{r.get('servable_rows_per_second', '-')}", r.get("check", "-")]
       for r in scale])
  serving = report.markdown_table(
      ["servable", "load s", "p50 ms", "p99 ms", "rows/s (1,000-row "
       "request)"],
      [[s["servable_label"], f"{s['load_seconds']:.2f}",
        f"{s['p50_ms']:.3f}", f"{s['p99_ms']:.3f}",
        f"{s['batch_1000_rows_per_second']:,.0f}"] for s in servables])
  runs = "\n".join(f"    {c}" for c in dict.fromkeys(
      r["command"] for r in rows + scale + servables))
  listed = "\n".join(f"    {c}" for c in commands)
  report.write_section("ann", f"""
## ANN: pure-TF indexes against TFRS, ScaNN, Faiss, hnswlib, Annoy

Measured on {report.machine()}, one thread per method, exact top-{K} by
brute force as ground truth, by (each row's JSON names its command):

{runs}

{chr(10).join(notes)}

The embeddings and servables come from:

{listed}

QPS is for one batch of {FLAGS.num_queries} queries (Annoy: one query at a
time); p50/p99 over {FLAGS.latency_queries} single queries (TF and TFRS: a
concrete function, as a loaded servable's signature is called); MB is the
serialised index (TF indexes: their variables; TFRS ScaNN: not measured).
Peers of one dataset are measured side by side in one process.
"native p50 ms" (pure-TF indexes): the same graph exported as a SavedModel
signature and called from C through TensorFlow's C API, as a C++ model
server (TF Serving) runs it, one intra-op thread and every op in the
calling thread, {FLAGS.latency_queries} single
queries (`benchmarks.native_latency`): what a served index costs without
Python's call path, which the "p50 ms" column includes (ScaNN's p50 is a
call of its C++ searcher through its Python binding).
Plot: `results/ann.png` (recall@100 against QPS, one panel per dataset).

{table}

`tf IVFPQIndex` has two scans that give the same scores: query by query
(look-up tables, one flattened gather of the candidates' codes) and list by
list (a `tf.while_loop` that decodes each probed list once and scores it
against every query of the batch that probes it). A batch of two or more
queries goes list by list once its probed (query, list) pairs exceed
`list_scan_from`, by default J (1.5 + 500 J / N): about where the two cost
the same, so time grows smoothly with nprobe and batch size (both scans
side by side over batch x nprobe: the `scan_paths` section,
`python -m benchmarks.scan_paths`). A single query always goes query by
query. Until 2026-12-04 the switch sat at 64 pairs whatever J, and small
batches past it paid the list loop's per-list cost: a step, not a slope.
`tf IVFFlatIndex` has one path for every nprobe: a batch's
(query, chunk) pairs are grouped by chunk into tiles of up to 64 queries,
scored by one batched matmul, and each query's top k is taken once; a single
query skips the grouping (one gather of its chunks, one mat-vec). Its cost
grows with the chunks it scans.

### Scale (clustered N x 64)

The stock-TF index is `build_index(items, "ivf_flat")` with its defaults,
exported alone as a servable (`serving_default(query_embedding, k)`), its
load time, servable p50 and rows/s (1,000-row request) taken from disk in a
TensorFlow-only process (`benchmarks.servable_latency`), its p50 from C as
above ("servable native p50", `benchmarks.native_latency`), and the export
checked by `python -m retrieval_tf.serving.check`; QPS and p50 in process as
above. ScaNN: 2 sqrt(N) leaves, 1/40 of them searched, reorder 300, load
time of its serialised searcher.

{scaling}

### Servables end to end (raw request -> top-{K}, loaded from disk)

Each timed by `python -m benchmarks.servable_latency` in a TensorFlow-only
process with one thread; synthetic requests are 1,000 users' real histories.

{serving}
""", {"rows": rows, "scale": scale, "servables": servables,
      "commands": commands, "notes": notes})


def _floors(rows, key: str) -> str:
  """The distinct `key` values of `rows` (ms, 3 places) as "a / b"; "" when
  no row has one."""
  return " / ".join(f"{f:.3f}" for f in sorted(
      {round(r[key], 3) for r in rows if key in r}))


def _ms(value) -> str:
  """A latency cell: milliseconds to 3 places, "-" when not measured."""
  return "-" if value is None else f"{value:.3f}"


def _merge_earlier(rows, scale, servables, commands):
  """Keeps the earlier run's parts (results/ann.json) that this run did not
  measure: rows of other (dataset, method) pairs, the scale table and the
  servables when not asked for, and the commands that made their inputs."""
  path = os.path.join(report.RESULTS_DIR, "ann.json")
  if not os.path.exists(path):
    return rows, scale, servables, commands
  with open(path) as f:
    earlier = json.load(f)
  measured = {(r["dataset"], r["method"]) for r in rows}
  kept = [r for r in earlier.get("rows", [])
          if (r["dataset"], r["method"]) not in measured]
  scale = scale or earlier.get("scale", [])
  servables = servables or earlier.get("servables", [])
  if kept or not commands:
    commands = list(dict.fromkeys(earlier.get("commands", []) + commands))
  for row in kept + scale + servables:
    row.setdefault("command", "an earlier run")
  merged = kept + rows
  datasets = list(dict.fromkeys(r["dataset"] for r in merged))
  names = list(dict.fromkeys(r["method"] for r in merged))
  merged.sort(key=lambda r: (datasets.index(r["dataset"]),
                             names.index(r["method"])))
  return merged, scale, servables, commands


if __name__ == "__main__":
  app.run(main)
