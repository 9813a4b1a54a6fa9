"""Poeem Sec. 3.4: indexing time and the training-time cost of the layer.

    python -m benchmarks.poeem_indexing [--num_items=1000000] [--dim=512]

Indexing, side by side in one run with one thread each, on `--num_items` x
`--dim` clustered synthetic vectors (`benchmarks.vectors.clustered_vectors`):

* Poeem: the quantizers are already trained (here: initialised by the warm
  start's k-means on a sample, not timed, as training would have done);
  building the index is encoding every item with them and filling
  `IVFPQIndex` (`poeem_tf.servable.index_from_codes`);
* Faiss IVFPQ with the same J, D, K: train + add;
* ScaNN (J leaves, AH on d/D-dim blocks): build;
* Annoy (10 trees) and Faiss `IndexLSH` (D log2 K bits): build.

Training overhead: `python -m poeem_tf.train` on ML-1M with the index layer
enabled from the first step vs never enabled (same steps, one thread),
compared by training examples/s.
"""

from __future__ import annotations

import math
import os
import sys
import time
import types

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from benchmarks.vectors import clustered_vectors

flags.DEFINE_integer("num_items", 1_000_000, "Vectors indexed.")
flags.DEFINE_integer("dim", 512, "Their dimension.")
flags.DEFINE_integer("num_centroids", 1024, "J.")
flags.DEFINE_integer("num_subspaces", 64, "D.")
flags.DEFINE_integer("num_codewords", 256, "K.")
flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ml-1m/ (training overhead).")
flags.DEFINE_integer("overhead_steps", 400, "Steps of each overhead run.")
FLAGS = flags.FLAGS

REPO_ROOT = harness.REPO_ROOT


def indexing_times(items: np.ndarray):
  """name -> seconds to build each index of `items`."""
  import faiss  # pylint: disable=g-import-not-at-top
  from poeem_tf.callbacks import initialise_from_embeddings  # pylint: disable=g-import-not-at-top
  from poeem_tf.layers import EmbeddingIndexLayer  # pylint: disable=g-import-not-at-top
  from poeem_tf.servable import index_from_codes  # pylint: disable=g-import-not-at-top
  num, dim = items.shape
  lists, subspaces = FLAGS.num_centroids, FLAGS.num_subspaces
  codewords = FLAGS.num_codewords
  bits = int(math.log2(codewords))
  times = {}

  def timed(name, build):
    print(f"building {name}", flush=True)
    start = time.perf_counter()
    build()
    times[name] = time.perf_counter() - start
    print(f"  {times[name]:.1f} s", flush=True)

  layer = EmbeddingIndexLayer(dim, lists, subspaces, codewords, rotation=True)
  sample = items[np.random.default_rng(0).choice(num, min(num, 100 * lists),
                                                  replace=False)]
  initialise_from_embeddings(layer, sample, iterations=5)
  holder = types.SimpleNamespace(index_layer=layer)
  timed("Poeem (encode with the trained quantizers + fill IVFPQIndex)",
        lambda: index_from_codes(holder, items, nprobe=16, max_k=100))

  def faiss_ivfpq():
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, subspaces,
                             bits, faiss.METRIC_INNER_PRODUCT)
    index.train(items)
    index.add(items)

  timed(f"Faiss IVFPQ train + add (J={lists}, D={subspaces}, K={codewords})",
        faiss_ivfpq)

  def scann_build():
    import scann  # pylint: disable=g-import-not-at-top
    (scann.scann_ops_pybind.builder(items, 100, "dot_product")
     .tree(num_leaves=lists, num_leaves_to_search=16,
           training_sample_size=min(num, 250_000))
     .score_ah(dim // subspaces, anisotropic_quantization_threshold=0.2)
     .build())

  timed(f"ScaNN build ({lists} leaves, AH)", scann_build)

  def annoy_build():
    from annoy import AnnoyIndex  # pylint: disable=g-import-not-at-top
    index = AnnoyIndex(dim, "dot")
    for i, vector in enumerate(items):
      index.add_item(i, vector)
    index.build(10, n_jobs=1)

  timed("Annoy build (10 trees)", annoy_build)

  def lsh():
    index = faiss.IndexLSH(dim, subspaces * bits)
    index.add(items)

  timed(f"Faiss IndexLSH add ({subspaces * bits} bits)", lsh)
  return times


def training_overhead():
  """Examples/s of Poeem on ML-1M with the layer on from step 0 vs off."""
  results, commands = {}, []
  for name, warm in (("index layer on", 0), ("index layer off", 10**9)):
    out = os.path.join("runs", "benchmarks", "poeem_overhead",
                       name.replace(" ", "_"))
    cmd = ["python", "-m", "poeem_tf.train", "--dataset=ml-1m",
           f"--data_dir={os.path.join(FLAGS.data_root, 'ml-1m')}",
           f"--output_dir={out}", "--overwrite", "--verbose=2",
           "--epochs=1", f"--steps_per_epoch={FLAGS.overhead_steps}",
           f"--warm_start_steps={warm}", "--loss=softmax"]
    commands.append(harness.run_command(cmd, threads=1))
    results[name] = harness.read_metrics(out)["train_examples_per_second"]
  return results, commands


def main(unused_argv):
  os.chdir(REPO_ROOT)
  harness.pin_threads()
  items, _ = clustered_vectors(FLAGS.num_items, 1, dim=FLAGS.dim)
  times = indexing_times(items)
  overhead, commands = training_overhead()
  poeem = next(v for k, v in times.items() if k.startswith("Poeem"))
  rows = [[name, f"{seconds:.1f}", f"{seconds / poeem:.1f}x"]
          for name, seconds in times.items()]
  on, off = overhead["index layer on"], overhead["index layer off"]
  listed = "\n".join(f"    {c}" for c in commands)
  report.write_section("poeem_indexing", f"""
## Poeem, Sec. 3.4: indexing time and training overhead

Measured on {report.machine()} by `python -m benchmarks.poeem_indexing
{' '.join(sys.argv[1:])}`, one thread each, {FLAGS.num_items:,} x
{FLAGS.dim} clustered synthetic vectors, J={FLAGS.num_centroids},
D={FLAGS.num_subspaces}, K={FLAGS.num_codewords}:

{report.markdown_table(["index", "build s", "vs Poeem"], rows)}

Training overhead of the index layer (ML-1M, {FLAGS.overhead_steps} steps,
one thread), from

{listed}

| run | training examples/s |
|---|---|
| index layer off | {off:,.0f} |
| index layer on | {on:,.0f} |
| overhead | {100 * (off - on) / off:.1f} % |
""", {"indexing_seconds": times, "training_examples_per_second": overhead,
      "commands": commands})


if __name__ == "__main__":
  app.run(main)
