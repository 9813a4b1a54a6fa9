"""Training CLI of Deep Retrieval on the shared runner.

    python -m dr_tf.train --dataset=ml-1m --data_dir=../shared/data/ml-1m \\
        --output_dir=runs/dr_ml1m --export_dir=exports/dr

Protocol (Sec. 4.1): the Deep Retrieval split
(`retrieval_tf.datasets.splits.dr_split`): `--num_test_users` held-out users
(with at least `--min_user_events` events) whose chronological history is
cut in half, the first half the input (its last `--history_length` items
feed the GRU) and the second half the truth; every other user trains (one
example per event, its earlier events as history). On ML-1M only ratings
>= `--min_rating` are kept (4, as the paper does on ML-20M). Reported (flat
keys in `metrics.json`, k in `--ks`, items of the input half excluded
everywhere):

* `precision@k`, `recall@k`, `f@k`: DR, beam search (B) + softmax rerank;
* `norerank_*`: DR alone, the retrieved items in path order;
* `brute_*`: brute force over the same softmax embeddings (all items);
* `popular_*`: the most popular training items;
* `mean_candidates`: distinct items the beam retrieved per user (the paper
  sizes B so this is 5-10x the final k);
* `top_path_size`, `used_paths`, `mean_path_size`: pi after training;
  `items_without_candidates` (items the last M-step could not place: never
  seen in training; they keep their paths and stay in the index),
  `unseen_items`;
* `em_history`: the statistics after every M-step.

`--early_stopping=N` holds `--num_valid_users` more users out of training
(halved like the test users; the test users do not change), follows DR's
`recall@k` (the largest of `--ks`) on them after every epoch and keeps the
best epoch's weights, paths included (`best_epoch`, `val_*`).
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

from dr_tf import data, em
from dr_tf.em import path_size_stats
from dr_tf.evaluation import evaluate
from dr_tf.layers import check_structure
from dr_tf.model import SOFTMAX_ESTIMATORS, DeepRetrievalModel
from dr_tf import servable

DATASETS = {name: needs for name, needs in registry.REC_DATASETS.items()
            if name in ("synthetic", "ml-1m", "amazon-beauty", "amazon-toys",
                        "amazon", "csv")}

runner.define_common_flags(DATASETS, default_epochs=4,
                           default_batch_size=512,
                           default_learning_rate=0.003)
flags.DEFINE_integer("num_nodes", 30, "K: nodes per layer.")
flags.DEFINE_integer("depth", 3, "D: layers.")
flags.DEFINE_integer("num_paths", 3, "J: paths per item.")
flags.DEFINE_integer("beam_size", 25, "B: beam size of retrieval.")
flags.DEFINE_integer("score_paths", 50, "S: candidate paths per item kept "
                     "for the M-step (the E-step's beam size).")
flags.DEFINE_float("alpha", 1.0, "Penalty factor of f(|c|) = |c|^4 / 4.")
flags.DEFINE_float("score_decay", 0.999, "eta of the streaming scores.")
flags.DEFINE_integer("m_step_sweeps", 3, "T: coordinate-descent sweeps.")
flags.DEFINE_integer("m_step_start_epoch", 1, "First epoch (0-based) that "
                     "ends with an M-step.")
flags.DEFINE_integer("m_step_every_epochs", 1, "M-step every n epochs.")
flags.DEFINE_integer("m_step_every_steps", 0, "Also an M-step every n "
                     "training steps (0: only at epoch ends).")
flags.DEFINE_integer("freeze_epoch", 2, "Epoch (0-based) from which the "
                     "softmax item embeddings are frozen (Sec. 4.1; >= "
                     "--epochs: never).")
flags.DEFINE_float("softmax_weight", 1.0, "Weight of Q_softmax in Q.")
flags.DEFINE_enum("softmax", "in_batch", list(SOFTMAX_ESTIMATORS),
                  "How the reranker's softmax is trained: 'sampled' (the "
                  "paper: --num_sampled negatives drawn by item frequency) "
                  "or 'in_batch' (the batch's other items); both "
                  "logQ-corrected.")
flags.DEFINE_integer("num_sampled", 200, "Sampled-softmax negatives.")
flags.DEFINE_integer("embedding_dim", 64, "Item embedding size of the GRU "
                     "input, user embedding and reranker size.")
flags.DEFINE_integer("gru_units", 64, "GRU state size.")
flags.DEFINE_integer("history_length", 69, "Behaviour-sequence length.")
flags.DEFINE_integer("num_test_users", 1000, "Held-out test users.")
flags.DEFINE_integer("num_valid_users", 500, "With --early_stopping: "
                     "validation users, held out of the training users "
                     "like the test users.")
flags.DEFINE_integer("min_user_events", 10, "Events a user needs to be "
                     "held out.")
flags.DEFINE_integer("min_rating", 4, "Keep ratings >= this (datasets with "
                     "ratings; 0: keep all).")
flags.DEFINE_list("ks", ["10", "50"], "Cut-offs of the metrics.")
flags.DEFINE_list("eval_beam_sizes", [], "Also evaluate DR (reranked) at "
                  "these beam sizes: keys b<B>_recall@k, b<B>_precision@k, "
                  "b<B>_mean_candidates (the same trained model).")
flags.DEFINE_string("export_dir", None, "Export the servable (raw history "
                    "-> item ids) as the next version of this folder.")

def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  f = ctx.flags
  ks = sorted(int(k) for k in f["ks"])
  dataset = registry.load_rec_dataset(
      f["dataset"], f["data_dir"], seed=f["seed"],
      synthetic_config=runner.synthetic_config(f))
  split = registry.held_out_split(
      dataset, f["num_test_users"], f["seed"],
      min_user_events=f["min_user_events"], min_rating=f["min_rating"],
      num_valid_users=f["num_valid_users"] if ctx.early_stopping else 0)
  ctx.check_data(train=split.train, test=split.test, valid=split.valid,
                 num_users=dataset.num_users, num_items=dataset.num_items)
  counts = np.bincount(split.train.item, minlength=dataset.num_items)
  dataset_fn = data.dataset_fn(
      split.train, batch_size=f["batch_size"],
      history_length=f["history_length"], num_users=dataset.num_users,
      num_items=dataset.num_items, shuffle=True, seed=f["seed"],
      repeat=True, drop_remainder=True)

  def build():
    model = DeepRetrievalModel(
        dataset.num_items, num_nodes=f["num_nodes"], depth=f["depth"],
        num_paths=f["num_paths"], beam_size=f["beam_size"],
        score_paths=f["score_paths"], score_decay=f["score_decay"],
        embedding_dim=f["embedding_dim"], gru_units=f["gru_units"],
        user_dim=f["embedding_dim"], rerank_dim=f["embedding_dim"],
        softmax=f["softmax"], num_sampled=f["num_sampled"],
        softmax_weight=f["softmax_weight"], seed=f["seed"],
        alpha=f["alpha"], m_step_sweeps=f["m_step_sweeps"],
        m_step_start_epoch=f["m_step_start_epoch"],
        freeze_epoch=f["freeze_epoch"])
    model.set_item_counts(counts)
    model.compile(optimizer=keras.optimizers.Adam(f["learning_rate"]))
    return model

  em_callback = em.EMCallback(
      counts, f["alpha"], sweeps=f["m_step_sweeps"],
      start_epoch=f["m_step_start_epoch"],
      every_epochs=f["m_step_every_epochs"],
      every_steps=f["m_step_every_steps"],
      log_dir=os.path.join(ctx.output_dir, "logs") if ctx.chief else None,
      verbose=f["verbose"] > 0)
  valid = dataclasses.replace(split, test=split.valid)
  validate = lambda model: {  # DR itself, not the baselines
      k: v for k, v in evaluate(model, valid, dataset,
                                history_length=f["history_length"],
                                ks=ks).items()
      if not k.startswith(("brute_", "popular_", "norerank_"))}
  # The model's `fit` adds the FreezeReranker of its `freeze_epoch`.
  result = ctx.fit(build, dataset_fn, num_examples=len(split.train),
                   callbacks=[em_callback], validation=validate,
                   monitor=f"recall@{ks[-1]}")
  model = result.model

  metrics: Dict[str, Any] = {
      "num_items": dataset.num_items,
      "num_train_users": int(len(np.unique(split.train.user))),
      "num_test_users": len(split.test.users),
      "num_valid_users": len(split.valid.users),
      "train_examples": len(split.train),
      "train_examples_per_second": round(result.examples_per_second, 1),
      "train_seconds": round(result.train_seconds, 3),
      "train_steps": result.train_steps,
      "final_loss": result.history["loss"][-1] if result.history.get(
          "loss") else math.nan,
      "unseen_items": int((counts == 0).sum())}
  metrics.update(evaluate(model, split, dataset,
                          history_length=f["history_length"], ks=ks,
                          beam_sizes=[int(b) for b in f["eval_beam_sizes"]]))
  assignment = model.assignment
  metrics.update(path_size_stats(assignment.item_paths.numpy(),
                                 assignment.total_paths))
  last = em_callback.history[-1]
  metrics["items_without_candidates"] = last.get(
      "items_without_candidates", -1)
  metrics["em_history"] = [
      {k: v for k, v in h.items() if k in (
          "step", "top_path_size", "used_paths", "mean_path_size",
          "items_changed", "items_without_candidates")}
      for h in em_callback.history]
  if f["export_dir"]:
    path = ctx.export(lambda: servable.export_dr(
        model, f["export_dir"], dataset, f["history_length"],
        max_k=min(1000, dataset.num_items),
        model_card={"config": f, "dataset": f["dataset"],
                    "metrics": {k: v for k, v in metrics.items()
                                if k != "em_history"}}), metrics)
    if path:
      metrics["export_path"] = path
      print(f"exported the servable to {path}")
  return metrics


def validate_flags(values: Dict[str, Any]) -> None:
  try:
    check_structure(values["num_nodes"], values["depth"],
                    values["num_paths"], values["beam_size"])
  except ValueError as e:
    raise runner.UsageError(f"--num_nodes/--depth/--num_paths/--beam_size: "
                            f"{e}") from None
  total = values["num_nodes"] ** values["depth"]
  if not values["num_paths"] <= values["score_paths"] <= total:
    raise runner.UsageError(f"--score_paths must be in --num_paths..K^D = "
                            f"{values['num_paths']}..{total}")
  if values["alpha"] < 0:
    raise runner.UsageError("--alpha must be >= 0")
  if not 0 < values["score_decay"] <= 1:
    raise runner.UsageError("--score_decay must be in (0, 1]")
  for name in ("m_step_sweeps", "m_step_every_epochs", "num_sampled",
               "embedding_dim", "gru_units", "history_length",
               "num_test_users", "num_valid_users"):
    if values[name] < 1:
      raise runner.UsageError(f"--{name} must be >= 1, got {values[name]}")
  for name in ("m_step_start_epoch", "m_step_every_steps", "freeze_epoch"):
    if values[name] < 0:
      raise runner.UsageError(f"--{name} must be >= 0, got {values[name]}")
  try:
    ks = [int(k) for k in values["ks"]]
  except ValueError:
    raise runner.UsageError(f"--ks must be integers, got {values['ks']}"
                            ) from None
  if not ks or min(ks) < 1:
    raise runner.UsageError("--ks must be integers >= 1")
  total = values["num_nodes"] ** values["depth"]
  try:
    beams = [int(b) for b in values["eval_beam_sizes"]]
  except ValueError:
    beams = [0]
  if any(not 1 <= b <= total for b in beams):
    raise runner.UsageError(f"--eval_beam_sizes must be integers in "
                            f"1..K^D = {total}")


def run_main():
  runner.run(run_experiment, validate_command=validate_flags)


if __name__ == "__main__":
  run_main()
