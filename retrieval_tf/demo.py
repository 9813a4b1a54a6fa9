"""`make demo`: the main job end to end on the embedded synthetic world.

Generates the deterministic synthetic e-commerce world, trains the two-tower
baseline with the shared runner, evaluates it next to the most-popular and
item-CF floors, exports the two-tower servable, checks that stock TF Serving
can run it, and queries it: readable top-K recommendations for a few users
beside their recent history. About a minute on 2 CPU cores.

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
  export_dir = os.path.join(FLAGS.output_dir, "export")
  results["two_tower"] = _train(
      "two_tower", TWO_TOWER_FLAGS + (f"--export_dir={export_dir}",))
  print("\nleave-one-out on the synthetic world (target + 99 negatives; "
        "full corpus)")
  keys = ("hr@10", "ndcg@10", "recall@10", "recall@50")
  print(f"{'model':<14}" + "".join(f"{k:>11}" for k in keys))
  for model, metrics in results.items():
    print(f"{model:<14}" + "".join(f"{metrics[k]:>11.4f}" for k in keys))
  _check(export_dir)
  _show_recommendations(export_dir)


def _check(export_dir: str) -> None:
  cmd = [sys.executable, "-m", "retrieval_tf.serving.check", export_dir]
  print("\n$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)


def _show_recommendations(export_dir: str):
  """Queries the exported servable and prints readable top-K per user."""
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  from retrieval_tf.query import query  # pylint: disable=g-import-not-at-top

  data = registry.leave_one_out(registry.load_rec_dataset("synthetic"))
  dataset = data.dataset
  sequences = dataset.interactions.sequences()
  users = data.test.user[:FLAGS.users]
  histories = [[dataset.items.ids[i] for i in sequences.get(int(u), [])[-50:]]
               for u in users]
  width = max(len(h) for h in histories)
  request = {"user_id": [dataset.users.ids[u] for u in users],
             "history": [[""] * (width - len(h)) + h for h in histories],
             "k": [FLAGS.k] * len(users)}
  for field, values in dataset.user_features.items():
    vocab = dataset.feature_vocabularies[field]
    request[f"user_{field}"] = [vocab.ids[values[u]] for u in users]
  print("\nquerying the servable (raw ids in, top-K ids out) for "
        f"{len(users)} users")
  outputs = query(export_dir, request)
  title = dict(zip(dataset.items.ids, dataset.item_titles))
  for row, user in enumerate(users):
    target = dataset.items.ids[data.test.item[row]]
    print(f"\nuser {dataset.users.ids[user]} recently: " +
          "; ".join(title[i] for i in histories[row][-3:]))
    print(f"  held-out next item: {title[target]}")
    for rank, (item, score) in enumerate(zip(outputs["item_ids"][row],
                                             outputs["scores"][row]), 1):
      item = item.decode()
      mark = "  <- held-out item" if item == target else ""
      print(f"  {rank}. {title[item]}  (score {score:.3f}){mark}")


if __name__ == "__main__":
  app.run(main)
