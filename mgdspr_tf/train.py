"""Training CLI of MGDSPR on the shared runner.

    python -m mgdspr_tf.train --dataset=synthetic --output_dir=runs/mgdspr \\
        --export_dir=exports/mgdspr

Datasets and protocols (`mgdspr_tf.data`): `synthetic` (search clicks,
temporal split, ground-truth relevance), `crowdflower` and `bestbuy`
(relevant (query, item) judgments, query-disjoint split), `amazon-beauty`
(leave-one-out sequences, empty query). Reported: the flat metric keys
of `mgdspr_tf.evaluation`.

`--early_stopping=N` holds a validation part out of the training rows, made
as the test side is (`load_data`; the test rows do not change), follows
its `recall@k` (the largest of `--ks`) after every epoch and keeps the best
epoch's weights (`best_epoch`, `val_*`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from absl import flags
import numpy as np

from retrieval_tf import runner
from retrieval_tf.datasets import registry, splits, synthetic
from retrieval_tf.datasets.errors import DataError

from mgdspr_tf import data as data_lib
from mgdspr_tf import evaluation
from mgdspr_tf.model import (LOSSES, SIMILARITIES, MGDSPRModel,
                             paper_optimizer)

DATASETS = {"synthetic": False, "amazon-beauty": True, "crowdflower": True,
            "bestbuy": True}

runner.define_common_flags(DATASETS, default_epochs=3, default_batch_size=256,
                           default_learning_rate=0.1)
flags.DEFINE_float("temperature", 2.0, "tau of the softmax (Sec. 3.4).")
flags.DEFINE_integer("num_hard", -1, "N hard negatives mixed per row "
                     "(0: none; -1: batch_size / 4, the paper's N = 684 "
                     "scaled to our in-batch negative pool).")
flags.DEFINE_float("mix_low", 0.4, "a of alpha ~ U(a, b).")
flags.DEFINE_float("mix_high", 0.6, "b of alpha ~ U(a, b).")
flags.DEFINE_enum("loss", "softmax", LOSSES, "Softmax or hinge (ablation).")
flags.DEFINE_float("margin", 0.1, "Hinge margin.")
flags.DEFINE_enum("similarity", "dot", SIMILARITIES, "F: inner product of "
                  "the towers' outputs (the paper) or of their "
                  "L2-normalised outputs (cosine; then tau is a real "
                  "smoothing parameter, try 0.05-0.5).")
flags.DEFINE_bool("mgs", True, "Multi-granular query unit (False: mean "
                  "word embedding).")
flags.DEFINE_bool("behaviour", True, "Query-attentive behaviour encoders.")
flags.DEFINE_bool("zero_vector", True, "Prepend the all-zero vector.")
flags.DEFINE_integer("embedding_dim", 128, "Hidden size d.")
flags.DEFINE_integer("num_heads", 8, "Heads of the behaviour self-attention.")
flags.DEFINE_integer("num_buckets", 1 << 15, "Hashed ids per granularity.")
flags.DEFINE_integer("max_real", 50, "Real-time sequence maximum.")
flags.DEFINE_integer("max_short", 100, "Short-term sequence maximum.")
flags.DEFINE_integer("max_long", 100, "Long-term sequence maximum.")
flags.DEFINE_float("clipnorm", 3.0, "Global gradient clipping norm.")
flags.DEFINE_list("ks", ["10", "100"], "Cut-offs of recall@k and p_good@k.")
flags.DEFINE_integer("rc_k", 100, "Top-k that relevance control filters.")
flags.DEFINE_list("rc_fields", [], "Item fields whose values relevance "
                  "control recognises in queries (default: all the "
                  "catalogue has; synthetic: leaf_category, brand, colour, "
                  "size; bestbuy: brand, category_lvl0, category_lvl1, "
                  "category_lvl2).")
flags.DEFINE_integer("max_test", 2000, "Test searches evaluated at most "
                     "(and validation searches, with --early_stopping).")
flags.DEFINE_float("valid_fraction", 0.1, "With --early_stopping: share of "
                   "the training searches (synthetic) or queries "
                   "(crowdflower, bestbuy) held out for validation.")
flags.DEFINE_string("export_dir", None, "Export the servable (raw query + "
                    "behaviour -> item ids) as the next version here.")


def validate_command(values: Dict[str, Any]) -> None:
  if not values["temperature"] > 0:
    raise runner.UsageError("--temperature must be > 0")
  if not 0 <= values["mix_low"] < values["mix_high"] <= 1:
    raise runner.UsageError("need 0 <= --mix_low < --mix_high <= 1")
  if values["num_hard"] >= values["batch_size"]:
    raise runner.UsageError("--num_hard must be < --batch_size (the hard "
                            "negatives are the batch's other items)")
  try:
    ks = [int(k) for k in values["ks"]]
  except ValueError:
    raise runner.UsageError("--ks must be integers") from None
  if not ks or min(ks) < 1 or values["rc_k"] < 1:
    raise runner.UsageError("--ks and --rc_k must be >= 1")
  if values["embedding_dim"] < 1 or values["max_test"] < 1:
    raise runner.UsageError("--embedding_dim and --max_test must be >= 1")
  if not 0.0 < values["valid_fraction"] < 1.0:
    raise runner.UsageError("--valid_fraction must be in (0, 1)")


def load_data(f: Dict[str, Any]
              ) -> Tuple[data_lib.MGDSPRData, Optional[np.ndarray]]:
  """The data of `--dataset` and, with `--early_stopping`, the bool mask of
  its training rows held out for validation (None without it): the latest
  `--valid_fraction` of the training searches in time (synthetic), a
  query-disjoint `--valid_fraction` of the training queries (crowdflower,
  bestbuy), or each user's last training event (amazon-beauty), as the
  test side is made."""
  lengths = (f["max_real"], f["max_short"], f["max_long"])
  name, fraction = f["dataset"], f["valid_fraction"]
  seed = splits.validation_seed(f["seed"])
  if name == "synthetic":
    config = (runner.synthetic_config(f) or
              synthetic.SyntheticConfig(seed=f["seed"]))
    world = synthetic.generate(config)
    data = data_lib.from_synthetic(world, lengths, max_test=f["max_test"])
    return data, (splits.temporal_mask(
        world.search_time[data.train.search], fraction)
                  if f["early_stopping"] else None)
  if name in ("crowdflower", "bestbuy"):
    # pylint: disable=g-import-not-at-top
    if name == "crowdflower":
      from retrieval_tf.datasets.crowdflower import load_crowdflower as load
    else:
      from retrieval_tf.datasets.bestbuy import load_bestbuy as load
    data = data_lib.from_search_dataset(load(f["data_dir"]), lengths,
                                        seed=f["seed"],
                                        max_test=f["max_test"])
    return data, (splits.query_disjoint_split(
        data.train.query, fraction, seed)[1] if f["early_stopping"] else None)
  dataset = registry.load_rec_dataset(name, f["data_dir"], seed=f["seed"])
  data = data_lib.from_rec_dataset(dataset, lengths, max_test=f["max_test"])
  if not f["early_stopping"]:
    return data, None
  # Training rows are the sorted log's rows (`search`) minus each user's
  # last; hold out the new last one of users who keep a training event.
  user = dataset.interactions.sorted().user[data.train.search]
  last = np.append(user[1:] != user[:-1], True)
  first = np.insert(user[1:] != user[:-1], 0, True)
  return data, last & ~first & (data.train.real_time[:, 0] >= 0)


def build_model(f: Dict[str, Any], data: data_lib.MGDSPRData) -> MGDSPRModel:
  num_hard = f["num_hard"] if f["num_hard"] >= 0 else f["batch_size"] // 4
  model = MGDSPRModel(
      data.num_items, data.attribute_sizes, title_length=16,
      dim=f["embedding_dim"], num_buckets=f["num_buckets"],
      num_heads=f["num_heads"], max_real=f["max_real"],
      max_short=f["max_short"], max_long=f["max_long"], mgs=f["mgs"],
      behaviour=f["behaviour"], zero_vector=f["zero_vector"],
      loss=f["loss"], temperature=f["temperature"], margin=f["margin"],
      num_hard=num_hard, mix_low=f["mix_low"], mix_high=f["mix_high"],
      similarity=f["similarity"])
  model.set_catalogue(data.attributes, data.titles)
  model.compile(optimizer=paper_optimizer(f["learning_rate"], f["clipnorm"]))
  return model


def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  f = ctx.flags
  data, held = load_data(f)
  data = data_lib.with_intent_fields(data, f["rc_fields"])
  ks = [int(k) for k in f["ks"]]
  valid = None
  if held is not None:
    if not held.any():
      raise DataError(f"{data.name}: no training rows left for validation")
    train = data.train.take(~held)
    valid = dataclasses.replace(
        data, train=train,
        test=data.train.take(held).first_searches(f["max_test"]),
        unrelated=None, donor=None)
    data = dataclasses.replace(data, train=train)
  if len(data.train) < f["batch_size"]:
    raise DataError(f"{data.name}: {len(data.train)} training examples, "
                    f"fewer than one batch of {f['batch_size']}")
  ctx.check_data(train=data.train, test=data.test, item_ids=data.item_ids,
                 titles=data.titles, attributes=data.attributes)
  holder = {}

  def build():
    holder["model"] = build_model(f, data)
    return holder["model"]

  def dataset_fn(context):
    del context
    return data_lib.training_dataset(data.train, f["batch_size"],
                                     seed=f["seed"],
                                     num_items=data.num_items)

  result = ctx.fit(build, dataset_fn, num_examples=len(data.train),
                   validation=None if valid is None else (
                       lambda model: evaluation.evaluate(model, valid, ks,
                                                         f["rc_k"])),
                   monitor=f"recall@{max(ks)}")
  model = result.model
  out = evaluation.evaluate(model, data, ks, f["rc_k"])
  if valid is not None:
    out["num_valid_searches"] = int(len(np.unique(valid.test.search)))
  out.update({"train_seconds": round(result.train_seconds, 3),
              "train_steps": result.train_steps,
              "final_loss": result.history.get("loss", [float("nan")])[-1],
              "num_items": data.num_items})
  if f["export_dir"]:
    from mgdspr_tf.servable import export_mgdspr  # pylint: disable=g-import-not-at-top
    path = ctx.export(lambda: export_mgdspr(
        model, f["export_dir"], data.item_ids, data.intent_fields,
        data.item_fields, max_k=min(1000, data.num_items),
        model_card={"dataset": data.name, "metrics": dict(out)}), out)
    if path:
      out["export_path"] = os.path.abspath(path)
  return out


def run_main():
  runner.run(run_experiment, validate_command=validate_command)


if __name__ == "__main__":
  run_main()
