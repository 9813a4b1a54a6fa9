"""`python -m dpsr_tf.train`: flag errors, a short synthetic DPSR-h run with
a sharded export, and BM25 on the real CrowdFlower data."""

import functools
import json
import os

import numpy as np
import pytest

from conftest import dataset_dir, read_metrics, run_module

SMALL = ["--synthetic_items=300", "--epochs=1", "--steps_per_epoch=5",
         "--batch_size=32", "--num_buckets=4096", "--token_dim=16",
         "--embedding_dim=16", "--hidden_units=32", "--verbose=0"]


_run = functools.partial(run_module, "dpsr_tf.train")


def test_flag_errors(tmp_path):
  proc = _run(*["--dataset=crowdflower", f"--data_dir={tmp_path}",
               "--personalization=history", f"--output_dir={tmp_path}/o"])
  assert proc.returncode == 2
  assert "--personalization=history needs users" in proc.stderr
  proc = _run(*["--dataset=synthetic", "--model=bm25", "--title_positives",
               f"--output_dir={tmp_path}/o"])
  assert proc.returncode == 2
  assert "--title_positives trains the DPSR model" in proc.stderr
  proc = _run(*["--dataset=synthetic", "--lexical_skip",
               "--lexical_skip_init=identity", "--token_dim=32",
               f"--output_dir={tmp_path}/o"])
  assert proc.returncode == 2
  assert "--lexical_skip_init=identity needs --lexical_skip" in proc.stderr
  proc = _run(*["--dataset=synthetic", "--num_heads=1", "--head_balance=1",
               f"--output_dir={tmp_path}/o"])
  assert proc.returncode == 2
  assert "--head_balance must be >= 0, and > 0 needs" in proc.stderr
  proc = _run(*["--dataset=synthetic", "--model=bm25", "--early_stopping=1",
               f"--output_dir={tmp_path}/o"])
  assert proc.returncode == 2
  assert "--early_stopping: --model=bm25 is not trained by epochs" in (
      proc.stderr)


def test_synthetic_dpsr_h_with_sharded_export(tmp_path):
  out, export = tmp_path / "run", tmp_path / "export"
  proc = _run(*["--dataset=synthetic", "--personalization=history",
               f"--output_dir={out}", f"--export_dir={export}",
               "--num_shards=2", "--max_k=50"] + SMALL)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  for key in ("top1", "top10", "mrr", "auc", "p_good@100", "recall@100"):
    assert np.isfinite(metrics[key]) and 0 <= metrics[key] <= 1, key
  assert metrics["top1"] <= metrics["top10"]
  assert metrics["num_top_k_rows"] > 0 and metrics["train_steps"] == 5
  paths = metrics["export_paths"].split(",")
  assert [os.path.basename(os.path.dirname(p)) for p in paths] == [
      "shard-0-of-2", "shard-1-of-2"]
  card = json.loads((export / "shard-1-of-2" / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert card["shard"] == 1 and card["num_shards"] == 2


def test_bm25_on_crowdflower(data_root, tmp_path):
  pytest.importorskip("rank_bm25")
  data = dataset_dir(data_root, "crowdflower-search")
  proc = _run(*["--dataset=crowdflower", f"--data_dir={data}", "--model=bm25",
               f"--output_dir={tmp_path}/bm25", "--verbose=0"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(tmp_path / "bm25")
  # Lexical matching finds the judged-relevant items far above chance
  # (chance: top10 = 10 / 1025).
  assert metrics["top10"] > 0.3 and metrics["auc"] > 0.5
