"""Poeem Sec. 3.4: indexing time and the training-time cost of the layer.

    python -m benchmarks.poeem_indexing [--num_items=1000000] [--dim=512]

Indexing, side by side in one run with one thread each, on `--num_items` x
`--dim` clustered synthetic vectors (`benchmarks.vectors.clustered_vectors`):

* Poeem, the index is the codes: the quantizers are already trained (here:
  initialised by the warm start's k-means on a sample, not timed, as
  training would have done) and the layer holds every item's code, as it
  does after training (`EmbeddingIndexLayer(num_items=...)` remembers the
  codes of the items it quantizes; here they are written untimed); building
  the index is copying them into `IVFPQIndex`
  (`poeem_tf.servable.index_from_codes(codes="stored")`);
* Poeem, fresh codes: encoding every item with the trained quantizers, then
  filling the index (`codes="fresh"`);
* Faiss IVFPQ with the same J, D, K: train + add;
* ScaNN (J leaves, AH on d/D-dim blocks): build;
* Annoy (10 trees) and Faiss `IndexLSH` (D log2 K bits): build;
* Poeem, the full export: `export_poeem` of a `PoeemModel` with
  `--num_items` items and `--dim`-d towers, the same J, D, K, in the state
  training leaves it (quantizers initialised by the warm start's k-means,
  every item's code remembered; untimed), timed end to end from the model
  to a loadable servable folder: the item tower over the catalogue, the
  `IVFPQIndex` from the stored codes, the index-health check and the
  SavedModel with its vocabularies, into a temporary folder; then,
  untimed, the folder is loaded in this process and answers a request.

`--parts` picks what to measure (indexing, export, overhead); the others keep
the figures and command of the earlier run, listed per part.

Training overhead, in this process with one thread: `model.fit` on ML-1M
(the DR split and batches of `python -m poeem_tf.train --loss=softmax`) of
the same towers without the index layer (`TwoTowerModel`), with it
(`PoeemModel`, layer enabled from the first step) and with it remembering
the codes, compared by training examples/s (median of interleaved fits).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import tempfile
import time
import types

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from benchmarks.vectors import clustered_vectors

PARTS = ("indexing", "export", "overhead")
flags.DEFINE_integer("num_items", 1_000_000, "Vectors indexed.")
flags.DEFINE_integer("dim", 512, "Their dimension.")
flags.DEFINE_integer("num_centroids", 1024, "J.")
flags.DEFINE_integer("num_subspaces", 64, "D.")
flags.DEFINE_integer("num_codewords", 256, "K.")
flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ml-1m/ (training overhead).")
flags.DEFINE_list("parts", list(PARTS), "What to measure: indexing (the "
                  "builds), export (the full export), overhead (training); "
                  "the others keep the figures of the earlier run.")
flags.DEFINE_integer("overhead_steps", 200, "Steps of each timed fit.")
flags.DEFINE_integer("overhead_rounds", 5, "Timed fits per model, "
                     "interleaved; the median is reported.")
FLAGS = flags.FLAGS

REPO_ROOT = harness.REPO_ROOT
STORED = "Poeem (the codes remembered in training -> IVFPQIndex)"
EXPORT = ("Poeem, full export (export_poeem: item tower over the catalogue + "
          "IVFPQIndex from the stored codes + SavedModel)")


def indexing_times(items: np.ndarray):
  """name -> seconds to build each index of `items`."""
  import faiss  # pylint: disable=g-import-not-at-top
  from poeem_tf.callbacks import initialise_from_embeddings  # pylint: disable=g-import-not-at-top
  from poeem_tf.layers import EmbeddingIndexLayer, encode_catalogue  # pylint: disable=g-import-not-at-top
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

  layer = EmbeddingIndexLayer(dim, lists, subspaces, codewords, rotation=True,
                              num_items=num)
  sample = items[np.random.default_rng(0).choice(num, min(num, 100 * lists),
                                                  replace=False)]
  initialise_from_embeddings(layer, sample, iterations=5)
  coarse, pq = encode_catalogue(layer, items)   # what training remembered
  layer.stored_codes.assign(np.concatenate([coarse[:, None], pq], axis=1))
  holder = types.SimpleNamespace(index_layer=layer)
  timed(STORED,
        lambda: index_from_codes(holder, items, nprobe=16, max_k=100,
                                 codes="stored"))
  timed("Poeem (encode with the trained quantizers + fill IVFPQIndex)",
        lambda: index_from_codes(holder, items, nprobe=16, max_k=100,
                                 codes="fresh"))

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


def export_seconds(num_items: int, dim: int):
  """Seconds of `export_poeem` from a model in its trained state to a
  servable folder, and the seconds that folder then takes to load and
  answer one request."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets.types import Interactions, RecDataset, Vocabulary  # pylint: disable=g-import-not-at-top
  from poeem_tf.callbacks import initialise_from_embeddings  # pylint: disable=g-import-not-at-top
  from poeem_tf.layers import encode_catalogue  # pylint: disable=g-import-not-at-top
  from poeem_tf.model import PoeemModel  # pylint: disable=g-import-not-at-top
  from poeem_tf.servable import export_poeem  # pylint: disable=g-import-not-at-top
  lists = FLAGS.num_centroids
  print("preparing the Poeem model for the full export", flush=True)
  model = PoeemModel(num_items, embedding_dim=64, hidden_units=[128],
                     output_dim=dim, num_centroids=lists,
                     num_subspaces=FLAGS.num_subspaces,
                     num_codewords=FLAGS.num_codewords, warm_start_steps=0)
  items = model.catalogue_embeddings()
  layer = model.index_layer
  initialise_from_embeddings(
      layer, items[np.random.default_rng(0).choice(
          num_items, min(num_items, 100 * lists), replace=False)],
      iterations=5)
  coarse, pq = encode_catalogue(layer, items)   # what training remembered
  layer.stored_codes.assign(np.concatenate([coarse[:, None], pq], axis=1))
  del items, coarse, pq
  dataset = RecDataset("synthetic", Interactions(user=[0], item=[0]),
                       Vocabulary(["0"], "user"),
                       Vocabulary(range(num_items), "item"))
  with tempfile.TemporaryDirectory() as export_dir:
    print("exporting", flush=True)
    start = time.perf_counter()
    path = export_poeem(model, export_dir, dataset, history_length=50,
                        nprobe=16, max_k=100)
    seconds = time.perf_counter() - start
    print(f"  {seconds:.1f} s -> {path}", flush=True)
    start = time.perf_counter()
    serve = tf.saved_model.load(path).signatures["serving_default"]
    answer = serve(history=tf.constant([["1", "2", "3"]]),
                   k=tf.constant([100]))["item_ids"].numpy()
    load = time.perf_counter() - start
  if answer.shape != (1, 100):
    raise RuntimeError(f"the exported servable answered {answer.shape}")
  return seconds, load


def training_overhead():
  """Training examples/s on ML-1M of the towers without the index layer,
  with it, and with it remembering the codes."""
  from retrieval_tf import data as pipeline  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import keras  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets import registry, splits  # pylint: disable=g-import-not-at-top
  from retrieval_tf.models.two_tower import TwoTowerModel  # pylint: disable=g-import-not-at-top
  from poeem_tf.model import PoeemModel  # pylint: disable=g-import-not-at-top
  dataset = registry.load_rec_dataset(
      "ml-1m", os.path.join(FLAGS.data_root, "ml-1m"))
  split = splits.dr_split(dataset.interactions, 0, 1000, seed=0)
  batches = pipeline.training_dataset(
      split.train, batch_size=1024, history_length=50, shuffle=True, seed=0,
      repeat=True, drop_remainder=True, with_log_q=True,
      num_users=dataset.num_users, num_items=dataset.num_items)
  towers = dict(embedding_dim=64, output_dim=64, hidden_units=[128])
  # The layer quantizes from the first step (warm_start_steps=0), so every
  # timed step pays for it.
  poeem = dict(towers, num_centroids=64, num_subspaces=16, num_codewords=16,
               loss="softmax", warm_start_steps=0)
  builds = {
      "towers only (TwoTowerModel, no index layer)": lambda: TwoTowerModel(
          num_users=1, num_items=dataset.num_items, use_user_id=False,
          use_history=True, **towers),
      "index layer on": lambda: PoeemModel(
          dataset.num_items, remember_codes=False, **poeem),
      "index layer on, remembering the codes": lambda: PoeemModel(
          dataset.num_items, remember_codes=True, **poeem)}
  models = {}
  for name, build in builds.items():
    models[name] = build()
    models[name].compile(optimizer=keras.optimizers.Adagrad(0.1))
    models[name].fit(batches, epochs=1, steps_per_epoch=20, verbose=0)
  rates = {name: [] for name in builds}
  steps = FLAGS.overhead_steps
  for _ in range(FLAGS.overhead_rounds):    # interleaved against drift
    for name, model in models.items():
      start = time.perf_counter()
      model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
      rates[name].append(steps * 1024 / (time.perf_counter() - start))
      print(f"{name}: {rates[name][-1]:,.0f} examples/s", flush=True)
  return {name: float(np.median(r)) for name, r in rates.items()}


def main(unused_argv):
  os.chdir(REPO_ROOT)
  harness.pin_threads()
  unknown = set(FLAGS.parts) - set(PARTS)
  if unknown:
    raise app.UsageError(f"--parts: unknown {sorted(unknown)}; use some of "
                         f"{PARTS}")
  command = shlex.join(["python", "-m", "benchmarks.poeem_indexing"] +
                       sys.argv[1:])
  # Parts not run now keep the figures (and command) of the earlier run.
  path = os.path.join(report.RESULTS_DIR, "poeem_indexing.json")
  earlier = {}
  if set(FLAGS.parts) != set(PARTS):
    with open(path) as f:
      earlier = json.load(f)
  commands = dict(earlier.get("commands", {}))
  times = {k: v for k, v in earlier.get("indexing_seconds", {}).items()
           if k != EXPORT}
  if "indexing" in FLAGS.parts:
    items, _ = clustered_vectors(FLAGS.num_items, 1, dim=FLAGS.dim)
    times = indexing_times(items)
    del items
    commands["indexing"] = command
  if "export" in FLAGS.parts:
    export, load = export_seconds(FLAGS.num_items, FLAGS.dim)
    commands["export"] = command
  else:
    export = earlier["indexing_seconds"][EXPORT]
    load = earlier["export_load_seconds"]
  times[EXPORT] = export
  if "overhead" in FLAGS.parts:
    overhead = training_overhead()
    commands["overhead"] = command
  else:
    overhead = earlier["training_examples_per_second"]
  earlier_command = "python -m benchmarks.poeem_indexing (an earlier run)"
  listed = "\n".join(
      f"    {commands.get(part, earlier_command)}   # {part}"
      for part in PARTS)
  poeem = times[STORED]
  order = sorted(times, key=lambda name: (not name.startswith("Poeem"),
                                          name != STORED, name == EXPORT))
  rows = [[name, f"{times[name]:.2f}", f"{times[name] / poeem:,.0f}x"]
          for name in order]
  off = overhead["towers only (TwoTowerModel, no index layer)"]
  overhead_rows = [[name, f"{rate:,.0f}", f"{100 * (off - rate) / off:.1f} %"]
                   for name, rate in overhead.items()]
  report.write_section("poeem_indexing", f"""
## Poeem, Sec. 3.4: indexing time and training overhead

Measured on {report.machine()} by (each part's command)

{listed}

one thread each, {FLAGS.num_items:,} x
{FLAGS.dim} clustered synthetic vectors, J={FLAGS.num_centroids},
D={FLAGS.num_subspaces}, K={FLAGS.num_codewords}:

{report.markdown_table(["index", "build s", "vs Poeem"], rows)}

"Poeem (the codes remembered in training)" is the paper's claim that the
index is just the codes: the encoding was paid during training (below).
The full export is the wall time of `export_poeem` from a {FLAGS.num_items:,}-item
Poeem model (64-d item embeddings, a 128-unit hidden layer, {FLAGS.dim}-d
output, the same J, D, K; its quantizers and remembered codes set as
training leaves them, untimed) to a servable folder: the item tower over the
catalogue, the index from the stored codes, the index-health check and the
SavedModel with its vocabularies; the folder then loaded in
{load:.1f} s and answered a request (untimed).
How stale remembered codes are after a real run, and what that costs in
recall, is in the `poeem` section (`coarse_codes_changed`, `fresh r@100`).

Training overhead of the index layer (ML-1M DR split, batches of 1,024,
softmax, one thread, same process; the median of {FLAGS.overhead_rounds}
interleaved fits of {FLAGS.overhead_steps} steps per model, after 20 warm-up
steps):

{report.markdown_table(["model", "training examples/s", "overhead"],
                       overhead_rows)}
""", {"indexing_seconds": times, "export_load_seconds": load,
       "training_examples_per_second": overhead, "commands": commands})


if __name__ == "__main__":
  app.run(main)
