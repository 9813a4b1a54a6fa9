"""Training CLI of Poeem on the shared runner.

    python -m poeem_tf.train --dataset=ml-1m --data_dir=../shared/data/ml-1m \\
        --output_dir=runs/poeem_ml1m --export_dir=exports/poeem

Protocol (Sec. 3.1, behaviour -> next behaviours): the Deep Retrieval split
(`retrieval_tf.datasets.registry.held_out_split`): `--num_test_users` held-out
users whose first half of history is the input and second half the truth;
every other user trains. Reported (flat keys in `metrics.json`):

* `recall@k`, `precision@k` (k = 10, 100): the served index, i.e. the
  learned codes searched by `IVFPQIndex` with `--nprobe` lists;
* `adc_recall@k`, `adc_precision@k`: the same codes, every list probed;
* `exact_recall@k`, `exact_precision@k`: brute force over the unquantized
  item embeddings x (what an offline index of these embeddings approaches);
* `popular_recall@k`, `popular_precision@k`: the most popular training
  items (the floor);
* `scanned`: mean items scored per query by the served index (the sizes of
  its probed lists: the search cost, uneven when lists are);
  `--nprobe_sweep` adds `nprobe{n}_recall@100` and `nprobe{n}_scanned` for
  n = 1, 2, 4, ..., J (recall against search cost);
* `coarse_used`, `codewords_used`, `coarse_entropy`: centroid utilisation;
* `index_build_seconds`: from the trained model to the filled index;
  with `--index_codes=stored` (default) the index is the codes the layer
  remembered in training (Sec. 3.4), with `fresh` every item is encoded
  again by the final quantizers;
* `fresh_recall@k`, `fresh_precision@k` (stored codes only): the index of
  fresh codes, and the staleness of the stored ones (`codes_never_stored`,
  `coarse_codes_changed`, `pq_codes_changed`).

`--early_stopping=N` holds `--num_valid_users` more users out of training
(halved like the test users; the test users do not change), follows the
served index's `recall@100` on them after every epoch and keeps the best
epoch's weights, index included (`best_epoch`, `val_*`).

Items of the user's input half are excluded from the results. The item
tower reads the item id only, so that sampled negatives (ids) go through the
same tower as positives.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict

from absl import flags
import numpy as np

from retrieval_tf import runner
from retrieval_tf.compat import keras
from retrieval_tf.datasets import registry
from retrieval_tf.evaluation import HeldOutProtocol

from poeem_tf import callbacks as callbacks_lib
from poeem_tf import data, evaluation
from poeem_tf.model import LOSSES, PoeemModel
from poeem_tf import servable

DATASETS = {name: needs for name, needs in registry.REC_DATASETS.items()
            if name in ("synthetic", "ml-1m", "amazon-beauty", "amazon-toys",
                        "amazon", "csv")}

runner.define_common_flags(DATASETS, default_epochs=5,
                           default_batch_size=1024,
                           default_learning_rate=0.01)
flags.DEFINE_integer("num_centroids", 64, "J: coarse centroids.")
flags.DEFINE_integer("num_codewords", 16, "K: codewords per sub-space "
                     "(<= 256).")
flags.DEFINE_integer("num_subspaces", 16, "D: PQ sub-spaces (divides "
                     "--embedding_dim).")
flags.DEFINE_bool("rotation", True, "Learn the Givens rotation.")
flags.DEFINE_integer("warm_start_steps", 200, "Steps without the index "
                     "before its k-means initialisation (Sec. 2.3.2; a "
                     "shorter run initialises when it ends). 0: cold "
                     "start, which collapses the index (warned about).")
flags.DEFINE_enum("loss", "hinge", LOSSES, "Hinge (margin) or softmax.")
flags.DEFINE_float("margin", 0.1, "Hinge loss margin.")
flags.DEFINE_integer("num_negatives", 20, "Hinge: uniform random negatives "
                     "per example (0: the other items of the batch).")
flags.DEFINE_float("temperature", 0.05, "Softmax temperature.")
flags.DEFINE_float("distortion_weight", 1.0, "Weight of the distortion "
                   "loss (Sec. 2.3.1).")
flags.DEFINE_enum("centroid_update", "ema", ("ema", "gradient"),
                  "Centroids follow their members by moving average, or by "
                  "the optimizer on the distortion loss (the paper).")
flags.DEFINE_float("rotation_learning_rate", 0.01,
                   "Step size of the Givens coordinate descent.")
flags.DEFINE_integer("embedding_dim", 64, "Embedding and tower size d.")
flags.DEFINE_integer("history_length", 50, "Behaviour-history window.")
flags.DEFINE_integer("num_test_users", 1000, "Held-out test users.")
flags.DEFINE_integer("num_valid_users", 500, "With --early_stopping: "
                     "validation users, held out of the training users "
                     "like the test users.")
flags.DEFINE_integer("nprobe", 0, "Lists the served index probes "
                     "(0: J / 4).")
flags.DEFINE_integer("rerank", 0, "Candidates the servable re-scores "
                     "exactly (0: the codes alone, as in the paper).")
flags.DEFINE_enum("index_codes", "stored", servable.CODE_SOURCES,
                  "The served index holds the codes remembered in "
                  "training (items never quantized are encoded at build "
                  "time) or codes of the final quantizers.")
flags.DEFINE_bool("nprobe_sweep", False, "Also report recall@100 and the "
                  "items scanned for nprobe = 1, 2, 4, ..., J.")
flags.DEFINE_bool("save_embeddings", False, "Write embeddings.npz: raw item "
                  "embeddings x, the test users' query vectors, their truth "
                  "and excluded items (padded with -1), for offline "
                  "indexes, and the items per coarse list.")
flags.DEFINE_string("export_dir", None, "Export the servable (raw history "
                    "-> item ids) as the next version of this folder.")


def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  f = ctx.flags
  dataset = registry.load_rec_dataset(
      f["dataset"], f["data_dir"], seed=f["seed"],
      synthetic_config=runner.synthetic_config(f))
  split = registry.held_out_split(
      dataset, f["num_test_users"], f["seed"],
      num_valid_users=f["num_valid_users"] if ctx.early_stopping else 0)
  ctx.check_data(train=split.train, test=split.test, valid=split.valid,
                 num_users=dataset.num_users, num_items=dataset.num_items)
  hinge = f["loss"] == "hinge"
  dataset_fn = data.dataset_fn(
      split.train, batch_size=f["batch_size"],
      history_length=f["history_length"], num_users=dataset.num_users,
      num_items=dataset.num_items, shuffle=True, seed=f["seed"],
      repeat=True, drop_remainder=True,
      num_negatives=f["num_negatives"] if hinge else 0,
      with_log_q=not hinge)
  holder = {}

  def build():
    model = PoeemModel(
        dataset.num_items,
        embedding_dim=f["embedding_dim"], output_dim=f["embedding_dim"],
        num_centroids=f["num_centroids"], num_subspaces=f["num_subspaces"],
        num_codewords=f["num_codewords"], rotation=f["rotation"],
        loss=f["loss"], margin=f["margin"], temperature=f["temperature"],
        rotation_learning_rate=f["rotation_learning_rate"],
        distortion_weight=f["distortion_weight"],
        centroid_update=f["centroid_update"],
        remember_codes=f["index_codes"] == "stored",
        warm_start_steps=f["warm_start_steps"], warm_start_seed=f["seed"])
    model.compile(optimizer=keras.optimizers.Adagrad(f["learning_rate"]))
    holder["model"] = model
    return model

  # `fit` adds the warm start (--warm_start_steps) and the health check.
  usage_logger = callbacks_lib.UtilisationLogger(
      lambda: holder["model"].catalogue_embeddings(),
      os.path.join(ctx.output_dir, "logs") if ctx.chief else None)
  nprobe = f["nprobe"] or max(1, f["num_centroids"] // 4)
  valid = dataclasses.replace(split, test=split.valid)
  validate = lambda model: evaluation.evaluate(
      model, valid, dataset, f["history_length"], ks=evaluation.KS,
      nprobe=nprobe, rerank=f["rerank"], codes=f["index_codes"])
  result = ctx.fit(build, dataset_fn, num_examples=len(split.train),
                   callbacks=[usage_logger], validation=validate,
                   monitor=f"recall@{evaluation.KS[-1]}")
  model = result.model

  vectors = model.catalogue_embeddings()
  # One index for the evaluation and the export (whose k may reach 1,000).
  index, build_seconds = servable.index_from_codes(
      model, vectors, nprobe, f["rerank"], max_k=1000,
      codes=f["index_codes"])
  metrics: Dict[str, Any] = {
      "num_items": dataset.num_items, "num_train_users": int(
          len(np.unique(split.train.user))),
      "num_test_users": len(split.test.users),
      "num_valid_users": len(split.valid.users),
      "train_examples_per_second": round(result.examples_per_second, 1),
      "train_seconds": round(result.train_seconds, 3),
      "train_steps": result.train_steps,
      "final_loss": result.history["loss"][-1] if result.history.get(
          "loss") else math.nan,
      "index_build_seconds": round(build_seconds, 3)}
  metrics.update(evaluation.evaluate(
      model, split, dataset, f["history_length"], ks=evaluation.KS,
      nprobe=nprobe, rerank=f["rerank"], codes=f["index_codes"],
      nprobe_sweep=f["nprobe_sweep"], index=index, item_vectors=vectors))
  if f["save_embeddings"] and ctx.chief:
    protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
    np.savez(os.path.join(ctx.output_dir, "embeddings.npz"), items=vectors,
             queries=evaluation.user_queries(model, protocol,
                                             dataset.num_users,
                                             f["history_length"]),
             truth=protocol.truth, exclude=protocol.banned,
             list_sizes=np.diff(index.list_offsets.numpy()))
  if f["export_dir"]:
    path = ctx.export(lambda: servable.export_poeem(
        model, f["export_dir"], dataset, f["history_length"], index=index,
        item_vectors=vectors, index_build_seconds=build_seconds,
        model_card={"config": f, "dataset": f["dataset"],
                    "metrics": dict(metrics)}), metrics)
    if path:
      metrics["export_path"] = path
      print(f"index built in {build_seconds:.2f} s; exported the servable "
            f"to {path}")
  return metrics


def validate_flags(values: Dict[str, Any]) -> None:
  d, j, k, m = (values["embedding_dim"], values["num_centroids"],
                values["num_codewords"], values["num_subspaces"])
  if values["num_negatives"] < 0:
    raise runner.UsageError("--num_negatives must be >= 0")
  for name in ("embedding_dim", "num_centroids", "num_codewords",
               "num_subspaces", "history_length", "num_test_users",
               "num_valid_users"):
    if values[name] < 1:
      raise runner.UsageError(f"--{name} must be >= 1, got {values[name]}")
  if d % m:
    raise runner.UsageError(f"--embedding_dim={d} is not divisible by "
                            f"--num_subspaces={m}")
  if k > 256:
    raise runner.UsageError(f"--num_codewords={k}: the index stores one "
                            "byte per code, so K must be <= 256")
  if values["nprobe"] < 0 or values["nprobe"] > j:
    raise runner.UsageError(f"--nprobe must be in 0..--num_centroids={j}")
  if values["warm_start_steps"] < 0 or values["rerank"] < 0:
    raise runner.UsageError("--warm_start_steps and --rerank must be >= 0")


def run_main():
  runner.run(run_experiment, validate_command=validate_flags)


if __name__ == "__main__":
  run_main()
