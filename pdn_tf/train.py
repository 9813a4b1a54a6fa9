"""Training CLI of PDN on the shared runner.

    python -m pdn_tf.train --dataset=ncf-ml-1m \\
        --data_dir=../shared/data/ncf-ml-1m --output_dir=runs/pdn_ml1m \\
        --export_dir=exports/pdn_ml1m [--nodirect_net] [--nobias_net]

Protocol (Sec. 6.1, Table 2): leave-one-out
(`retrieval_tf.datasets.registry.leave_one_out`; NCF ML-1M uses its own
files): each user's last interaction is the target, ranked against 99
sampled negatives; the history is the user's training interactions (the
last `--history_length` of them feed TrigNet). Reported (flat keys in
`metrics.json`):

* `hr@10`, `ndcg@10`, `mrr`: the personalised score, Eq. 12 without the
  Bias Net (Table 2 "Personalise");
* `i2i_hr@10`, `i2i_ndcg@10`: SimNet alone, Σ_j softplus(s_ji) over the
  history (Table 2 "Item to Item");
* `recall@50`, `recall@300`: the servable's retrieval (greedy path
  retrieval, Eq. 14, over the SimNet I2I index) on the full corpus, the
  user's training items excluded;
* `index_build_seconds`, `index_candidates_per_item`, training timings.

`--early_stopping=N` holds each user's latest training interaction out as
a validation target with its own sampled negatives (`validation.npz` in
`--output_dir`; the test rows do not change), follows its `hr@10` after
every epoch and keeps the best epoch's weights (`best_epoch`, `val_*`).

Training (Sec. 4.6): one example per training interaction, its history the
user's earlier interactions, `--num_negatives` uniform negatives per
positive (`retrieval_tf.data.samplers.UniformSampler`, the distribution
the protocol's negatives come from), cross-entropy of Eq. 13. The
co-occurrence field comes from the training interactions only
(`retrieval_tf.cooccurrence`, user level).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict

from absl import flags
import numpy as np

from retrieval_tf import runner
from retrieval_tf.compat import keras
from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.datasets import registry

from pdn_tf.data import training_dataset_fn
from pdn_tf.evaluation import FULL_KS, evaluate
from pdn_tf.i2i_index import build_i2i_index
from pdn_tf.model import PDNModel, build_pdn_model
from pdn_tf.retrieval import PDNRetriever
from pdn_tf import servable

DATASETS = {name: needs for name, needs in registry.REC_DATASETS.items()
            if name in ("synthetic", "ncf-ml-1m", "ml-1m", "amazon-beauty",
                        "amazon-toys", "amazon")}

runner.define_common_flags(DATASETS, default_epochs=2,
                           default_batch_size=1024,
                           default_learning_rate=0.002)
flags.DEFINE_integer("history_length", 20, "Triggers per example: the last "
                     "interactions TrigNet reads.")
flags.DEFINE_integer("num_negatives", 4, "Uniform negatives per positive.")
flags.DEFINE_integer("embedding_dim", 32, "Embedding size of each feature.")
flags.DEFINE_list("trigger_units", ["64", "32"], "TrigNet hidden layers.")
flags.DEFINE_list("similarity_units", ["64", "32"], "SimNet hidden layers.")
flags.DEFINE_integer("direct_dim", 32, "Direct Net p_u / q_i size.")
flags.DEFINE_bool("direct_net", True, "Use the Direct Net (ablation: "
                  "--nodirect_net).")
flags.DEFINE_bool("direct_item_id", True, "The Direct Net's item tower reads "
                  "the item id (--nodirect_item_id: only the item's other "
                  "features).")
flags.DEFINE_bool("bias_net", True, "Use the Bias Net in training "
                  "(ablation: --nobias_net).")
flags.DEFINE_integer("index_k", 100, "Targets kept per trigger in the I2I "
                     "index.")
flags.DEFINE_integer("num_cooccurring", 200, "I2I candidates per item from "
                     "co-occurrence.")
flags.DEFINE_integer("num_neighbors", 100, "I2I candidates per item from "
                     "item-embedding neighbours.")
flags.DEFINE_integer("num_triggers", 20, "m: triggers expanded at serving.")
flags.DEFINE_integer("pool_size", 1000, "Fallback pool of popular items "
                     "(also the servable's largest k).")
flags.DEFINE_integer("num_eval_negatives", 99, "Sampled negatives per test "
                     "user (NCF: 99).")
flags.DEFINE_integer("eval_batch_size", 256, "Users per evaluation batch.")
flags.DEFINE_bool("save_scores", False, "Write scores.npz: the test users, "
                  "their sampled candidates' personalised and item-to-item "
                  "scores and the servable's top-300 (for per-bucket "
                  "analyses).")
flags.DEFINE_string("export_dir", None, "Export the servable (raw request "
                    "-> item ids) as the next version of this folder.")


VALIDATION_FILE = "validation.npz"


def _int_list(values):
  return [int(v) for v in values]


def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  f = ctx.flags
  data = registry.leave_one_out(
      registry.load_rec_dataset(f["dataset"], f["data_dir"], seed=f["seed"],
                                synthetic_config=runner.synthetic_config(f)),
      num_negatives=f["num_eval_negatives"], seed=f["seed"],
      validation=ctx.early_stopping > 0)
  dataset = data.dataset
  train = dataset.interactions
  ctx.check_data(train=train, test=data.test, negatives=data.negatives,
                 valid=data.valid, valid_negatives=data.valid_negatives,
                 num_users=dataset.num_users, num_items=dataset.num_items,
                 user_features=dataset.user_features,
                 item_features=dataset.item_features)
  cooccurrence = cooccurrence_counts(train, dataset.num_items,
                                     vocabulary=dataset.items)
  cooccurrence.check_vocabulary(dataset.items, "the dataset")
  dataset_fn = training_dataset_fn(
      dataset, batch_size=f["batch_size"], history_length=f["history_length"],
      num_negatives=f["num_negatives"], shuffle=True, seed=f["seed"],
      repeat=True, drop_remainder=True)

  def build():
    model = build_pdn_model(
        dataset, cooccurrence, embedding_dim=f["embedding_dim"],
        trigger_units=_int_list(f["trigger_units"]),
        similarity_units=_int_list(f["similarity_units"]),
        direct_dim=f["direct_dim"], use_direct=f["direct_net"],
        direct_item_id=f["direct_item_id"], use_bias=f["bias_net"],
        num_negatives=f["num_negatives"])
    model.compile(optimizer=keras.optimizers.Adam(f["learning_rate"]))
    return model

  validate = None
  if data.valid is not None:
    if ctx.chief:
      data.save_validation(os.path.join(ctx.output_dir, VALIDATION_FILE))
    valid = data.validation()
    validate = lambda model: evaluate(
        model, valid, history_length=f["history_length"],
        batch_size=f["eval_batch_size"])
  result = ctx.fit(build, dataset_fn, num_examples=len(train),
                   validation=validate, monitor="hr@10")
  model: PDNModel = result.model
  metrics: Dict[str, Any] = {
      "num_users": dataset.num_users, "num_items": dataset.num_items,
      "num_train_examples": len(train), "num_test_users": len(data.test),
      "num_valid_users": 0 if data.valid is None else len(data.valid),
      "direct_net": int(f["direct_net"]), "bias_net": int(f["bias_net"]),
      "direct_item_id": int(f["direct_item_id"]),
      "cooccurrence_pairs": cooccurrence.nnz,
      "train_seconds": round(result.train_seconds, 3),
      "train_examples_per_second": round(result.examples_per_second, 1),
      "train_steps": result.train_steps,
      "final_loss": result.history["loss"][-1] if result.history.get(
          "loss") else math.nan}
  index = build_i2i_index(model, cooccurrence, f["index_k"],
                          f["num_cooccurring"], f["num_neighbors"])
  metrics["index_build_seconds"] = round(index.build_seconds, 3)
  metrics["index_candidates_per_item"] = round(index.candidates_per_item, 1)
  retriever = PDNRetriever(model, index, f["history_length"],
                           f["num_triggers"], f["pool_size"])
  scores: Dict[str, np.ndarray] = {}
  test = data.for_test()  # validation events back in the histories
  metrics.update(evaluate(model, test, history_length=f["history_length"],
                          retriever=retriever,
                          batch_size=f["eval_batch_size"], full_ks=FULL_KS,
                          outputs=scores))
  if f["save_scores"] and ctx.chief:
    np.savez(os.path.join(ctx.output_dir, "scores.npz"),
             users=data.test.user, targets=data.test.item,
             negatives=data.negatives, **scores)
  if f["export_dir"]:
    path = ctx.export(lambda: servable.export_pdn(
        retriever, f["export_dir"], test.dataset,
        model_card={"config": f, "dataset": f["dataset"],
                    "metrics": dict(metrics)}), metrics)
    if path:
      metrics["export_path"] = path
      print(f"exported the servable to {path}")
  return metrics


def validate_flags(values: Dict[str, Any]) -> None:
  for name in ("history_length", "num_negatives", "embedding_dim",
               "direct_dim", "index_k", "num_triggers", "pool_size",
               "num_eval_negatives", "eval_batch_size"):
    if values[name] < 1:
      raise runner.UsageError(f"--{name} must be >= 1, got {values[name]}")
  for name in ("num_cooccurring", "num_neighbors"):
    if values[name] < 0:
      raise runner.UsageError(f"--{name} must be >= 0, got {values[name]}")
  if not values["num_cooccurring"] and not values["num_neighbors"]:
    raise runner.UsageError("--num_cooccurring and --num_neighbors cannot "
                            "both be 0 (the I2I index needs candidates)")
  for name in ("trigger_units", "similarity_units"):
    try:
      units = _int_list(values[name])
    except ValueError:
      units = []
    if not units or min(units) < 1:
      raise runner.UsageError(f"--{name} must be a comma-separated list of "
                              f"positive ints, got {values[name]}")


def run_main():
  runner.run(run_experiment, validate_command=validate_flags)


if __name__ == "__main__":
  run_main()
