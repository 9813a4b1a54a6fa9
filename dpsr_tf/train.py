"""Training CLI of DPSR on the shared runner.

    python -m dpsr_tf.train --dataset=crowdflower \\
        --data_dir=../shared/data/crowdflower-search \\
        --output_dir=runs/dpsr_cf --export_dir=exports/dpsr_cf

`--model=dpsr` (the default) trains `DPSRModel` with `--num_heads`, `--beta`,
`--delta`, `--alpha`, `--num_negatives` and `--personalization`
(none = DPSR, profile = DPSR-p, history = DPSR-h; synthetic world only, the
real datasets have no users). `--model=dssm` trains the same towers as DSSM
(one head, softmax over the clicked and unclicked items); `--model=bm25` and
`--model=bm25_bigram` score with Okapi BM25 (no training). Every model is
evaluated the same way (`dpsr_tf.evaluation.evaluate`): `top1`, `top10`,
`mrr` among `--num_random_items` random items, `auc` on the test queries' labelled pairs,
and on the synthetic world `p_good@100` and `recall@100`.

`--early_stopping=N` moves a query-disjoint `--valid_fraction` of the
training queries out of training (the test queries do not change),
follows their Top-10 among random items after every epoch and keeps the
best epoch's weights (`best_epoch`, `val_top10`, ...).

`--supervision_file` adds human supervision pairs (Sec. 4.5);
`--title_positives` adds each item's title as a training query for it
(catalogue self-supervision, not in the paper). `--export_dir`
writes the one servable (or `--num_shards` item shards sharing the query
tower), checked with `retrieval_tf.serving.check`. Its index is exact
(`--index=brute_force`, the default) or IVF-PQ (`--index=ivfpq` with
`--num_lists`, `--num_subspaces`, `--nprobe`, `--rerank`, as in
`retrieval_tf.train`; 0 = `retrieval_tf.index.build_index`'s default).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict

from absl import flags

from retrieval_tf import runner
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import splits
from retrieval_tf.datasets.types import Vocabulary
from retrieval_tf.text import Tokenizer, padded_ids

from dpsr_tf import data as data_lib
from dpsr_tf import evaluation
from dpsr_tf.model import (LEXICAL_SKIP_INITS, PERSONALIZATION, DPSRModel,
                            all_item_embeddings, check_batch_size,
                            check_head_balance, check_lexical_skip)
from dpsr_tf import servable

MODELS = ("dpsr", "dssm", "bm25", "bm25_bigram")
ITEM_TOKENS = 128

runner.define_common_flags(data_lib.DATASETS, default_epochs=5,
                           default_batch_size=64, default_learning_rate=0.05)
flags.DEFINE_enum("model", "dpsr", MODELS, "What to train and evaluate.")
flags.DEFINE_integer("num_heads", 2, "m: query heads (Sec. 4.2).")
flags.DEFINE_float("beta", 0.1, "Soft dot product temperature (Eq. 1).")
flags.DEFINE_float("delta", 0.1, "Hinge loss margin (Eq. 2).")
flags.DEFINE_float("alpha", 0.5, "Share of random negatives (Sec. 4.4.3).")
flags.DEFINE_integer("num_negatives", 0, "Negatives per example "
                     "(0: batch_size - 1).")
flags.DEFINE_enum("personalization", "none", PERSONALIZATION,
                  "none: DPSR, profile: DPSR-p, history: DPSR-h.")
flags.DEFINE_integer("embedding_dim", 64, "d: output embedding size.")
flags.DEFINE_integer("token_dim", 64, "n-gram embedding size.")
flags.DEFINE_list("hidden_units", ["128"], "ReLU layers of both towers.")
flags.DEFINE_integer("num_buckets", 1 << 17, "Hashed token ids.")
flags.DEFINE_integer("history_length", 20, "DPSR-h: browsing events.")
flags.DEFINE_float("test_fraction", 0.2, "Share of queries held out.")
flags.DEFINE_float("valid_fraction", 0.1, "With --early_stopping: share of "
                   "the training queries held out for validation "
                   "(query-disjoint, like the test).")
flags.DEFINE_float("gamma", 10.0, "DSSM softmax smoothing factor.")
flags.DEFINE_string("supervision_file", None, "Human supervision pairs: "
                    "query<TAB>item_id<TAB>label (1 positive, 0 negative).")
flags.DEFINE_bool("title_positives", False, "Add each item's title as a "
                  "training query for that item (catalogue "
                  "self-supervision, not in the paper; for catalogues with "
                  "few training queries).")
flags.DEFINE_bool("lexical_skip", False, "Add one linear map of the mean "
                  "n-gram embedding, shared by both towers, to their "
                  "outputs before normalising (not in the paper).")
flags.DEFINE_enum("lexical_skip_init", "glorot_uniform", LEXICAL_SKIP_INITS,
                  "Initializer of the lexical skip's map; identity (needs "
                  "--token_dim == --embedding_dim) starts it as the "
                  "n-gram table's own match.")
flags.DEFINE_float("head_balance", 0.0, "Weight of the head load-balancing "
                   "term (not in the paper; needs --num_heads >= 2): keeps "
                   "every head winning some positives.")
flags.DEFINE_integer("num_random_items", 1024, "Top-k: random items per "
                     "positive.")
flags.DEFINE_string("export_dir", None, "Export the servable here.")
flags.DEFINE_integer("num_shards", 1, "Item shards of the export.")
flags.DEFINE_integer("max_k", 1000, "Largest k the servable answers.")
runner.define_index_flags("each shard's item embeddings")


def model_config(task: data_lib.SearchTask, f: Dict[str, Any],
                 title_width: int) -> Dict[str, Any]:
  """`DPSRModel`'s arguments from the flags."""
  dssm = f["model"] == "dssm"
  return dict(
      num_items=task.num_items, title_width=title_width,
      item_feature_sizes=task.item_feature_sizes,
      tokenizer=Tokenizer(num_buckets=f["num_buckets"]).get_config(),
      num_heads=1 if dssm else f["num_heads"], token_dim=f["token_dim"],
      output_dim=f["embedding_dim"],
      hidden_units=[int(u) for u in f["hidden_units"]], beta=f["beta"],
      delta=f["delta"], alpha=f["alpha"],
      num_negatives=f["num_negatives"] or f["batch_size"] - 1,
      personalization=f["personalization"],
      user_feature_sizes=task.user_feature_sizes or None,
      loss="dssm" if dssm else "hinge", gamma=f["gamma"],
      lexical_skip=f["lexical_skip"],
      lexical_skip_init=f["lexical_skip_init"],
      head_balance=f["head_balance"])


def run_experiment(ctx: runner.RunContext) -> Dict[str, Any]:
  f = ctx.flags
  task = data_lib.load_task(f["dataset"], f["data_dir"], seed=f["seed"],
                            synthetic_config=runner.synthetic_config(f),
                            history_length=f["history_length"],
                            test_fraction=f["test_fraction"])
  valid = None
  if ctx.early_stopping:
    task, valid = hold_out_validation(task, f["valid_fraction"], f["seed"])
  train = task.train
  if f["supervision_file"]:
    pairs = data_lib.load_supervision(f["supervision_file"],
                                      Vocabulary(task.item_ids, "item"))
    train = data_lib.add_supervision(task, pairs, seed=f["seed"])
  if f["title_positives"]:
    train = data_lib.add_title_positives(task, train)
  metrics: Dict[str, Any] = {
      "model": f["model"], "num_items": task.num_items,
      "num_train_examples": int(len(train["item_id"])),
      "num_test_examples": int(len(task.test["item_id"]))}
  if valid is not None:
    metrics["num_valid_examples"] = int(len(valid["item_id"]))
  if f["model"].startswith("bm25"):
    from dpsr_tf.bm25 import BM25Scorer  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    scorer = BM25Scorer(task.item_text, bigrams=f["model"] == "bm25_bigram")
    metrics["index_build_seconds"] = round(time.perf_counter() - start, 3)
    metrics.update(evaluation.evaluate(scorer, task, f["num_random_items"],
                                       seed=f["seed"]))
    return metrics
  if f["model"] == "dssm":
    train = dict(train, hard_negatives=task.unclicked if "hard_negatives"
                 not in train else train["hard_negatives"])
  ctx.check_data(train=train, test=task.test, item_ids=task.item_ids,
                 item_text=task.item_text, item_columns=task.item_columns)
  tokenizer = Tokenizer(num_buckets=f["num_buckets"])
  titles = padded_ids(tokenizer, task.item_text, max_tokens=ITEM_TOKENS)
  config = model_config(task, f, titles.shape[1])

  def build():
    model = DPSRModel(**config)
    model.set_item_tables(titles, task.item_columns)
    model.compile(optimizer=keras.optimizers.Adagrad(f["learning_rate"]))
    return model

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    return data_lib.training_dataset(train, config, f["batch_size"],
                                     seed=f["seed"], input_context=context)

  def validate(model) -> Dict[str, float]:
    scores = evaluation.top_k_metrics(
        evaluation.ModelScorer(model, all_item_embeddings(model)), valid,
        task.num_items, f["num_random_items"], seed=f["seed"])
    return {k: scores[k] for k in ("top1", "top10", "mrr")}

  result = ctx.fit(build, dataset_fn, num_examples=len(train["item_id"]),
                   validation=validate if valid is not None else None,
                   monitor="top10")
  model = result.model
  vectors = all_item_embeddings(model)
  metrics.update({
      "train_seconds": round(result.train_seconds, 3),
      "train_steps": result.train_steps,
      "train_examples_per_second": round(result.examples_per_second, 1),
      "final_loss": result.history["loss"][-1] if result.history.get(
          "loss") else math.nan})
  metrics.update(evaluation.evaluate(model, task, f["num_random_items"],
                                     seed=f["seed"], item_vectors=vectors))
  if f["export_dir"]:
    paths = ctx.export(lambda: servable.export_dpsr(
        model, f["export_dir"], [str(i) for i in task.item_ids],
        item_vectors=vectors, user_vocabularies=task.user_vocabularies,
        num_shards=f["num_shards"],
        max_k=f["max_k"],
        model_card={"dataset": f["dataset"], "flags": f,
                    "metrics": dict(metrics)},
        seed=f["seed"], **export_index_options(f)), metrics)
    if paths:
      metrics["export_paths"] = ",".join(paths)
      print("exported the servable to " + ", ".join(paths))
  return metrics


def hold_out_validation(task: data_lib.SearchTask, fraction: float,
                        seed: int):
  """`(task, valid)`: the task with a query-disjoint share `fraction` of its
  training queries (`splits.query_disjoint_split`, seeded by
  `splits.validation_seed(seed)`) moved out of `train` into the `valid`
  rows; the test side is untouched."""
  keep, held = splits.query_disjoint_split(task.train["query"], fraction,
                                           splits.validation_seed(seed))
  valid = {k: v[held] for k, v in task.train.items()}
  task = dataclasses.replace(
      task, train={k: v[keep] for k, v in task.train.items()},
      unclicked=task.unclicked[keep])
  return task, valid


def export_index_options(values: Dict[str, Any]) -> Dict[str, Any]:
  """`export_dpsr`'s index arguments from the flags (0: default)."""
  options = runner.index_options(values)
  return dict(options, index=options.pop("kind"))


def validate_index_flags(values: Dict[str, Any]) -> None:
  runner.check_index_flags(values, values["embedding_dim"])
  if values["index"] != "brute_force" and not values["export_dir"]:
    raise runner.UsageError(f"--index={values['index']} is the servable's "
                            "index: it needs --export_dir")


def validate_flags(values: Dict[str, Any]) -> None:
  if values["personalization"] != "none" and values["dataset"] != "synthetic":
    raise runner.UsageError(
        f"--personalization={values['personalization']} needs users; "
        f"--dataset={values['dataset']} has none (use --dataset=synthetic)")
  if values["model"] == "dssm" and values["personalization"] != "none":
    raise runner.UsageError("--model=dssm takes no --personalization")
  if values["title_positives"] and values["model"] != "dpsr":
    raise runner.UsageError(f"--title_positives trains the DPSR model; "
                            f"--model={values['model']} does not use it")
  try:  # the flag's enum already holds it to LEXICAL_SKIP_INITS
    check_lexical_skip(values["lexical_skip"], values["lexical_skip_init"],
                       values["token_dim"], values["embedding_dim"])
  except ValueError:
    raise runner.UsageError(
        "--lexical_skip_init=identity needs --lexical_skip and --token_dim "
        f"== --embedding_dim (got --lexical_skip={values['lexical_skip']}, "
        f"{values['token_dim']} and {values['embedding_dim']})") from None
  if not 0.0 <= values["alpha"] <= 1.0:
    raise runner.UsageError(f"--alpha must be in [0, 1], got "
                            f"{values['alpha']}")
  for name in ("beta", "gamma"):
    if not values[name] > 0:
      raise runner.UsageError(f"--{name} must be > 0")
  if values["delta"] < 0:
    raise runner.UsageError("--delta must be >= 0")
  try:  # --model=dpsr trains the hinge loss; the others cannot balance heads
    check_head_balance(values["head_balance"], values["num_heads"],
                       "hinge" if values["model"] == "dpsr" else
                       values["model"])
  except ValueError:
    raise runner.UsageError(
        "--head_balance must be >= 0, and > 0 needs --model=dpsr and "
        f"--num_heads >= 2 (got {values['head_balance']}, "
        f"--model={values['model']}, --num_heads={values['num_heads']})"
    ) from None
  for name in ("num_heads", "embedding_dim", "token_dim", "num_buckets",
               "history_length", "num_shards", "max_k", "num_random_items"):
    if values[name] < 1:
      raise runner.UsageError(f"--{name} must be >= 1, got {values[name]}")
  negatives = values["num_negatives"] or values["batch_size"] - 1
  if values["num_negatives"] < 0 or negatives < 1:
    raise runner.UsageError("--num_negatives must be >= 0 and the batch "
                            "must hold at least 2 examples")
  batch_part = negatives - int(round(values["alpha"] * negatives))
  try:  # the rule of DPSRModel and dpsr_tf.training_dataset
    check_batch_size(values["batch_size"], negatives, values["alpha"])
  except ValueError:
    raise runner.UsageError(
        f"{batch_part} batch negatives (--num_negatives={negatives}, "
        f"--alpha={values['alpha']}) need --batch_size >= {batch_part + 1}"
    ) from None
  for name in ("test_fraction", "valid_fraction"):
    if not 0.0 < values[name] < 1.0:
      raise runner.UsageError(f"--{name} must be in (0, 1)")
  if values["early_stopping"] and values["model"].startswith("bm25"):
    raise runner.UsageError(f"--early_stopping: --model={values['model']} "
                            "is not trained by epochs")
  if values["export_dir"] and values["model"].startswith("bm25"):
    raise runner.UsageError("--export_dir: BM25 has no servable")
  validate_index_flags(values)


def run_main():
  runner.run(run_experiment, validate_command=validate_flags)


if __name__ == "__main__":
  run_main()
