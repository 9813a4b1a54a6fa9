"""The baselines every paper is compared with, on the leave-one-out protocol.

    python -m benchmarks.baselines [--data_root=../shared/data] [--quick]

Runs `python -m retrieval_tf.train` for two_tower, most_popular and item_cf on
NCF ML-1M and Amazon Beauty, each as its own process (the exact commands are
written into RESULTS.md), and records HR@10 / NDCG@10 among the target + 99
negatives, recall@10/@50 over the full corpus, and training examples/s.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from benchmarks import harness
from benchmarks import report

flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ncf-ml-1m/ and amazon-beauty/ (relative "
                    "to the repository root).")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks"),
                    "Where the runs go (relative to the repository root).")
flags.DEFINE_integer("epochs", 5, "Two-tower training epochs.")
FLAGS = flags.FLAGS

REPO_ROOT = harness.REPO_ROOT
DATASETS = ("ncf-ml-1m", "amazon-beauty")
MODELS = ("most_popular", "item_cf", "two_tower")
# The PDN paper's Table 2 (NCF ML-1M, target + 99 negatives).
PAPER = {"YouTube DNN (PDN paper)": (0.6187, 0.3579),
         "item-based CF, item-to-item (PDN paper)": (0.4033, 0.2132)}


def _command(model: str, dataset: str, output_dir: str):
  data_dir = os.path.join(FLAGS.data_root, dataset)
  cmd = ["python", "-m", "retrieval_tf.train", f"--model={model}",
         f"--dataset={dataset}", f"--data_dir={data_dir}",
         f"--output_dir={output_dir}", "--overwrite", "--verbose=2"]
  if model == "two_tower":
    cmd.append(f"--epochs={FLAGS.epochs}")
  return cmd


def main(unused_argv):
  os.chdir(REPO_ROOT)  # the recorded commands run from the repository root
  root = FLAGS.output_root
  rows, raw = [], {}
  for dataset in DATASETS:
    for model in MODELS:
      out = os.path.join(root, dataset, model)
      cmd = _command(model, dataset, out)
      line = harness.run_command(cmd)
      metrics = harness.read_metrics(out)
      raw[f"{dataset}/{model}"] = dict(metrics, command=line)
      rows.append([dataset, model, metrics["hr@10"], metrics["ndcg@10"],
                   metrics["recall@10"], metrics["recall@50"],
                   metrics.get("train_examples_per_second", "-"),
                   f"{metrics['total_seconds']:.1f}"])
  for name, (hr, ndcg) in PAPER.items():
    rows.append(["ncf-ml-1m", name, hr, ndcg, "-", "-", "-", "-"])
  table = report.markdown_table(
      ["dataset", "model", "HR@10 (1+99)", "NDCG@10 (1+99)",
       "recall@10 (full)", "recall@50 (full)", "train ex/s", "total s"],
      rows)
  commands = "\n".join(f"    {v['command']}" for v in raw.values())
  report.write_section("baselines", f"""
## Baselines: two-tower, most popular, item-CF (leave-one-out)

Measured on {report.machine()} by `python -m benchmarks.baselines`, which
runs each row as its own process, from the repository root:

{commands}

{table}
""", raw)


if __name__ == "__main__":
  app.run(main)
