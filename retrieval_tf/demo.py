"""`make demo`: the main job end to end on the embedded synthetic world.

Generates the deterministic synthetic e-commerce world, trains the two-tower
baseline with the shared runner, evaluates it next to the most-popular and item-CF floors,
and prints readable top-K recommendations for a few users beside their recent
history. Runs in a few minutes on 2 CPU cores.

    python -m retrieval_tf.demo [--output_dir=runs/demo] [--k=5]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

flags.DEFINE_string("output_dir", "runs/demo", "Where the demo's runs go.")
flags.DEFINE_integer("k", 5, "How many recommendations to print per user.")
flags.DEFINE_integer("users", 3, "How many users to show.")
FLAGS = flags.FLAGS

# The synthetic world is small (30k events): smaller batches, more epochs.
TWO_TOWER_FLAGS = ("--batch_size=256", "--epochs=10", "--learning_rate=0.3")


def _train(model: str, extra=()) -> dict:
  out = os.path.join(FLAGS.output_dir, model)
  cmd = [sys.executable, "-m", "retrieval_tf.train", f"--model={model}",
         "--dataset=synthetic", f"--output_dir={out}", "--overwrite",
         "--verbose=2", *extra]
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)
  with open(os.path.join(out, "metrics.json")) as f:
    return json.load(f)


def main(unused_argv):
  results = {m: _train(m) for m in ("most_popular", "item_cf")}
  results["two_tower"] = _train("two_tower", TWO_TOWER_FLAGS)
  print("\nleave-one-out on the synthetic world (target + 99 negatives; "
        "full corpus)")
  keys = ("hr@10", "ndcg@10", "recall@10", "recall@50")
  print(f"{'model':<14}" + "".join(f"{k:>11}" for k in keys))
  for model, metrics in results.items():
    print(f"{model:<14}" + "".join(f"{metrics[k]:>11.4f}" for k in keys))
  _show_recommendations()


def _show_recommendations():
  """Reloads the trained two-tower weights and prints top-K per user."""
  from retrieval_tf import data as pipeline  # pylint: disable=g-import-not-at-top
  from retrieval_tf import evaluation  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  from retrieval_tf.models.two_tower import load_model  # pylint: disable=g-import-not-at-top

  run_dir = os.path.join(FLAGS.output_dir, "two_tower")
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  data = registry.leave_one_out(
      registry.load_rec_dataset("synthetic", seed=config["seed"]),
      seed=config["seed"])
  dataset = data.dataset
  users = data.test.user[:FLAGS.users]
  history = pipeline.HistoryIndex.from_interactions(dataset.interactions)
  user_batch = next(iter(pipeline.user_eval_dataset(
      users, history, config["history_length"], dataset.user_features,
      batch_size=len(users))))
  item_batch = next(iter(pipeline.item_dataset(
      dataset.num_items, dataset.item_features,
      batch_size=dataset.num_items)))
  model = load_model(os.path.join(run_dir, "model"), user_batch, item_batch)
  u = model.user_embedding(user_batch).numpy()
  v = model.item_embedding(item_batch).numpy()
  seen = evaluation.exclusion_from_interactions(dataset.interactions, users)
  top = evaluation.top_k_items(u, v, FLAGS.k, exclude=seen)
  titles = dataset.item_titles
  for row, user in enumerate(users):
    recent = user_batch["history"][row].numpy()
    recent = [titles[i] for i in recent[recent >= 0][-3:]]
    print(f"\nuser {dataset.users.ids[user]} recently: " + "; ".join(recent))
    print(f"  held-out next item: {titles[data.test.item[row]]}")
    for rank, item in enumerate(top[row], 1):
      mark = "  <- held-out item" if item == data.test.item[row] else ""
      print(f"  {rank}. {titles[item]}  (score {u[row] @ v[item]:.3f}){mark}")


if __name__ == "__main__":
  app.run(main)
