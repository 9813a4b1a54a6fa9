"""Training CLI of the shared baselines, on the runner every package uses.

    python -m retrieval_tf.train --model=two_tower --dataset=ncf-ml-1m \\
        --data_dir=../shared/data/ncf-ml-1m --output_dir=runs/two_tower

Models: `two_tower` (YouTube-DNN style, `retrieval_tf.models.two_tower`),
`most_popular` and `item_cf` (the floors, `retrieval_tf.baselines`).

Protocols (`--protocol`):

* `leave_one_out` (default; `retrieval_tf.datasets.registry.leave_one_out`):
  `hr@k`, `ndcg@k` and `mrr` of the target among its sampled negatives
  (NCF: 99), and `recall@k` / `full_ndcg@k` of the target over the full
  corpus with the user's training items excluded.
* `held_out_users` (`registry.held_out_split`, the Deep Retrieval protocol
  that `dr_tf` and `poeem_tf` report on): `--num_test_users` users with at
  least `--min_user_events` events are held out of training; the first half
  of each one's history is the input (the two-tower has no user-id
  embedding then), the second half the truth; `precision@k`, `recall@k`,
  `f@k` over the full corpus, input items excluded. Run with a paper
  package's `--seed`, `--min_rating` and `--num_test_users`, it scores the
  same users on the same truth as that package.

`--early_stopping=N` (two_tower) trains on a validation split carved from
the training side, evaluated after every epoch, and keeps the best epoch's
weights: `leave_one_out` holds each user's latest training event out, with
its own sampled negatives (`validation.npz` in `--output_dir`), and follows
the validation `hr@10`; `held_out_users` holds `--num_valid_users` more
training users out (halved like the test users) and follows their
`recall@50`. The test rows are the same with or without it, and a test
user's input history holds every training event, the held-out validation
event included (`LeaveOneOut.for_test`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict

from absl import flags
import numpy as np

from retrieval_tf import baselines
from retrieval_tf import data as pipeline
from retrieval_tf import evaluation
from retrieval_tf import index as index_lib
from retrieval_tf import runner
from retrieval_tf.compat import keras
from retrieval_tf.datasets import registry, splits
from retrieval_tf.models.two_tower import TwoTowerModel, save_model
from retrieval_tf.models.two_tower_servable import export_two_tower

MODELS = ("two_tower", "most_popular", "item_cf")
PROTOCOLS = ("leave_one_out", "held_out_users")
SAMPLED_KS = (10,)
FULL_KS = (10, 50)

runner.define_common_flags(registry.REC_DATASETS, default_epochs=3,
                           default_batch_size=1024,
                           default_learning_rate=0.1)
flags.DEFINE_enum("model", "two_tower", MODELS, "Which baseline to run.")
flags.DEFINE_enum("protocol", "leave_one_out", PROTOCOLS,
                  "Evaluation protocol (see the module docstring).")
flags.DEFINE_integer("num_test_users", 1000, "held_out_users: test users.")
flags.DEFINE_integer("num_valid_users", 500, "held_out_users with "
                     "--early_stopping: validation users, taken from the "
                     "training users.")
flags.DEFINE_integer("min_user_events", 10, "held_out_users: events a user "
                     "needs to be held out.")
flags.DEFINE_float("min_rating", 0, "held_out_users: keep events rated >= "
                   "this (datasets with ratings; 0: keep all).")
flags.DEFINE_integer("history_length", 50,
                     "Behaviour-history window of the user tower.")
flags.DEFINE_integer("embedding_dim", 64, "Embedding and tower size.")
flags.DEFINE_float("temperature", 0.05, "Softmax temperature (cosine).")
flags.DEFINE_bool("side_features", True, "two_tower: embed the dataset's "
                  "categorical user and item fields (--noside_features: "
                  "item ids and the history only).")
flags.DEFINE_integer("num_negatives", 99,
                     "Sampled negatives per test user (NCF: 99).")
flags.DEFINE_integer("eval_batch_size", 4096, "Batch size of evaluation.")
flags.DEFINE_string("export_dir", None,
                    "two_tower only: export the servable (raw request -> "
                    "top-k item ids) as the next version of this folder.")
runner.define_index_flags("the item embeddings")
flags.DEFINE_bool("save_embeddings", False,
                  "two_tower only: write item_embeddings.npy and the test "
                  "users' user_embeddings.npy to --output_dir.")


VALIDATION_FILE = "validation.npz"


def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  """Loads the dataset, trains (or fits) the model, evaluates it."""
  f = ctx.flags
  dataset = registry.load_rec_dataset(
      f["dataset"], f["data_dir"], seed=f["seed"],
      synthetic_config=runner.synthetic_config(f))
  if f["protocol"] == "held_out_users":
    return _held_out_users(ctx, dataset)
  data = registry.leave_one_out(dataset, num_negatives=f["num_negatives"],
                                seed=f["seed"],
                                validation=ctx.early_stopping > 0)
  train = data.dataset.interactions
  metrics = _dataset_metrics(f, data.dataset, len(train), len(data.test))
  if f["model"] == "two_tower":
    ctx.check_data(train=train, test=data.test, negatives=data.negatives,
                   valid=data.valid, valid_negatives=data.valid_negatives,
                   num_users=data.dataset.num_users,
                   num_items=data.dataset.num_items,
                   user_features=data.dataset.user_features,
                   item_features=data.dataset.item_features)
    validate = None
    if data.valid is not None:
      metrics["num_valid_users"] = len(data.valid)
      if ctx.chief:
        data.save_validation(os.path.join(ctx.output_dir, VALIDATION_FILE))
      valid = data.validation()
      validate = lambda model: evaluation.two_tower_leave_one_out(
          model, valid, f["history_length"], SAMPLED_KS, FULL_KS,
          batch_size=f["eval_batch_size"])[0]
    model, fit_metrics = _train_two_tower(ctx, data.dataset,
                                          validation=validate,
                                          monitor="hr@10")
    metrics.update(fit_metrics)
    test = data.for_test()  # validation events back in the histories
    report, user_vectors, item_vectors = evaluation.two_tower_leave_one_out(
        model, test, f["history_length"], SAMPLED_KS, FULL_KS,
        batch_size=f["eval_batch_size"])
    metrics.update(report)
    _save_and_export(ctx, model, test.dataset, user_vectors, item_vectors,
                     metrics)
    return metrics
  model = _fit_floor(f["model"], train, data.dataset.num_items)
  histories = evaluation.exclusion_from_interactions(
      train, data.test.user, data.dataset.num_items)
  metrics.update(evaluation.leave_one_out_metrics(
      lambda rows, items: model.score(histories[rows], items),
      model.top_k(histories, max(FULL_KS), exclude_history=True), data,
      SAMPLED_KS, FULL_KS))
  return metrics


def _held_out_users(ctx: runner.RunContext, dataset) -> Dict[str, Any]:
  """The held-out-user protocol (see the module docstring)."""
  f = ctx.flags
  split = registry.held_out_split(
      dataset, f["num_test_users"], f["seed"],
      min_user_events=f["min_user_events"], min_rating=f["min_rating"],
      num_valid_users=f["num_valid_users"] if ctx.early_stopping else 0)
  protocol = evaluation.HeldOutProtocol.from_held_out(split.test,
                                                      dataset.num_items)
  train_set = dataclasses.replace(dataset, interactions=split.train)
  metrics = _dataset_metrics(f, dataset, len(split.train),
                             len(protocol.users))
  if f["model"] == "two_tower":
    ctx.check_data(train=split.train, test=split.test, valid=split.valid,
                   num_users=dataset.num_users, num_items=dataset.num_items,
                   user_features=dataset.user_features,
                   item_features=dataset.item_features)
    validate = None
    if len(split.valid.users):
      metrics["num_valid_users"] = len(split.valid.users)
      if ctx.chief:
        _save_held_out(os.path.join(ctx.output_dir, VALIDATION_FILE),
                       split.valid, dataset)
      valid = dataclasses.replace(split, test=split.valid)
      validate = lambda model: evaluation.two_tower_held_out(
          model, dataset, valid, f["history_length"], FULL_KS,
          batch_size=f["eval_batch_size"])[0]
    model, fit_metrics = _train_two_tower(ctx, train_set, use_user_id=False,
                                          validation=validate,
                                          monitor="recall@50")
    metrics.update(fit_metrics)
    report, user_vectors, item_vectors = evaluation.two_tower_held_out(
        model, dataset, split, f["history_length"], FULL_KS,
        batch_size=f["eval_batch_size"])
    metrics.update(report)
    _save_and_export(ctx, model, train_set, user_vectors, item_vectors,
                     metrics)
    return metrics
  model = _fit_floor(f["model"], split.train, dataset.num_items)
  metrics.update(protocol.report(
      model.top_k(protocol.exclude, max(FULL_KS), exclude_history=True),
      FULL_KS))
  return metrics


def _save_held_out(path: str, held: splits.HeldOutUsers, dataset) -> None:
  """Writes held-out validation users (indices and ids), their input and
  truth events, for auditing the run."""
  np.savez(path, users=held.users,
           user_id=dataset.users.ids[held.users].astype(str),
           input_user=held.inputs.user, input_item=held.inputs.item,
           truth_user=held.truth.user, truth_item=held.truth.item)


def _dataset_metrics(f, dataset, num_train: int, num_test: int):
  return {"model": f["model"], "protocol": f["protocol"],
          "num_users": dataset.num_users, "num_items": dataset.num_items,
          "num_train_examples": num_train, "num_test_users": num_test}


def _fit_floor(name: str, train, num_items: int):
  model = (baselines.MostPopular() if name == "most_popular"
           else baselines.ItemCF())
  return model.fit(train, num_items)


def _save_and_export(ctx: runner.RunContext, model: TwoTowerModel, dataset,
                     user_vectors: np.ndarray, item_vectors: np.ndarray,
                     metrics: Dict[str, Any]) -> None:
  """`--save_embeddings` and `--export_dir` of a trained two-tower."""
  f = ctx.flags
  if not ctx.chief:
    return
  if f["save_embeddings"]:
    np.save(os.path.join(ctx.output_dir, "item_embeddings.npy"),
            item_vectors)
    np.save(os.path.join(ctx.output_dir, "user_embeddings.npy"),
            user_vectors)
  if f["export_dir"]:

    def export():
      index = index_lib.build_index(item_vectors, seed=f["seed"],
                                    **runner.index_options(f))
      return export_two_tower(
          model, f["export_dir"], dataset, item_vectors,
          history_length=f["history_length"],
          model_card={"config": f, "dataset": f["dataset"],
                      "metrics": dict(metrics)}, index=index)

    path = ctx.export(export, metrics)
    if path:
      metrics["export_path"] = path
      print(f"exported the servable to {path}")


def _train_two_tower(ctx: runner.RunContext, dataset,
                     use_user_id: bool = True, validation=None,
                     monitor=None):
  """Trains on `dataset.interactions` (early stopping on `validation`'s
  `monitor` with `--early_stopping`); (model, fit metrics)."""
  f = ctx.flags
  train = dataset.interactions
  user_features = _categorical(f, dataset, "user")
  item_features = _categorical(f, dataset, "item")
  user_sizes = {k: len(dataset.feature_vocabularies[k]) for k in user_features}
  item_sizes = {k: len(dataset.feature_vocabularies[k]) for k in item_features}
  dataset_fn = pipeline.distributed_dataset_fn(
      train, batch_size=f["batch_size"], history_length=f["history_length"],
      user_features=user_features, item_features=item_features,
      num_users=dataset.num_users, num_items=dataset.num_items,
      shuffle=True, seed=f["seed"],
      repeat=True, with_log_q=True, drop_remainder=True)

  def build():
    model = TwoTowerModel(
        dataset.num_users, dataset.num_items, user_features=user_sizes,
        item_features=item_sizes, embedding_dim=f["embedding_dim"],
        output_dim=f["embedding_dim"], temperature=f["temperature"],
        use_user_id=use_user_id)
    model.compile(optimizer=keras.optimizers.Adagrad(f["learning_rate"]))
    return model

  result = ctx.fit(build, dataset_fn, num_examples=len(train),
                   validation=validation, monitor=monitor)
  model = result.model
  if ctx.chief:
    save_model(model, os.path.join(ctx.output_dir, "model"))
  fit_metrics = {
      "train_seconds": round(result.train_seconds, 3),
      "train_examples_per_second": round(result.examples_per_second, 1),
      "train_steps": result.train_steps,
      "epochs_run": result.epochs_run,
      "resumed_from_epoch": result.resumed_from_epoch,
      "final_loss": result.history["loss"][-1] if result.history.get(
          "loss") else math.nan,
  }
  return model, fit_metrics


def _categorical(f, dataset, side: str):
  """The `side` ("user" / "item") categorical fields (those with a
  vocabulary) the two-tower gets; none without `--side_features`."""
  if not f["side_features"]:
    return {}
  features = getattr(dataset, f"{side}_features")
  return {k: v for k, v in features.items()
          if k in dataset.feature_vocabularies}


def validate_flags(values: Dict[str, Any]) -> None:
  """This command's own flags; runs before any work."""
  for name in ("export_dir", "save_embeddings"):
    if values[name] and values["model"] != "two_tower":
      raise runner.UsageError(f"--{name} works with --model=two_tower only")
  if values["early_stopping"] and values["model"] != "two_tower":
    raise runner.UsageError(f"--early_stopping works with --model=two_tower "
                            f"only (--model={values['model']} is not "
                            "trained by epochs)")
  for name in ("history_length", "embedding_dim", "num_negatives",
               "eval_batch_size", "num_test_users", "min_user_events",
               "num_valid_users"):
    if values[name] < 1:
      raise runner.UsageError(f"--{name} must be >= 1, got {values[name]}")
  runner.check_index_flags(values, values["embedding_dim"])
  if not values["temperature"] > 0:
    raise runner.UsageError("--temperature must be > 0")


def run_main():
  """Console entry point (`retrieval-tf-train`)."""
  runner.run(run_experiment, validate_command=validate_flags)


if __name__ == "__main__":
  run_main()
