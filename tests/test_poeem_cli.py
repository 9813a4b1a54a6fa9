"""`python -m poeem_tf.train` as a user runs it."""

import functools
import subprocess
import sys

import numpy as np
import pytest

from conftest import dataset_dir, read_metrics, run_module

_run = functools.partial(run_module, "poeem_tf.train")


@pytest.mark.parametrize("args, message", [
    (["--num_subspaces=5"], "--embedding_dim=64 is not divisible by "
     "--num_subspaces=5"),
    (["--num_codewords=300"], "K must be <= 256"),
    (["--nprobe=100"], "--nprobe must be in 0..--num_centroids=64"),
    (["--dataset=ml-1m"], "needs --data_dir"),
    (["--warm_start_steps=-1"], "must be >= 0"),
])
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
  out = tmp_path / "run"
  proc = _run(f"--output_dir={out}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
  assert not out.exists()


def test_synthetic_run_exports_a_checked_servable(tmp_path):
  out, export = tmp_path / "run", tmp_path / "export"
  proc = _run("--dataset=synthetic", f"--output_dir={out}",
              f"--export_dir={export}", "--epochs=2", "--num_test_users=100",
              "--warm_start_steps=30", "--save_embeddings", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  for key in ("recall@100", "precision@100", "adc_recall@100",
              "exact_recall@100", "popular_recall@100", "coarse_used",
              "index_build_seconds", "fresh_recall@100",
              "coarse_codes_changed"):
    assert key in metrics
  assert 0.0 <= metrics["codes_never_stored"] < 0.5
  assert metrics["coarse_used"] > 0.5
  saved = np.load(out / "embeddings.npz")
  assert saved["items"].shape == (metrics["num_items"], 64)
  assert saved["queries"].shape == (100, 64)
  assert len(saved["truth"]) == len(saved["exclude"]) == 100
  check = subprocess.run([sys.executable, "-m", "retrieval_tf.serving.check",
                          str(export)], capture_output=True, text=True,
                         timeout=600)
  assert check.returncode == 0, check.stdout + check.stderr
  assert "index built in" in proc.stdout


def test_a_small_ml1m_run_beats_most_popular(data_root, tmp_path):
  ml1m = dataset_dir(data_root, "ml-1m")
  out = tmp_path / "run"
  proc = _run("--dataset=ml-1m", f"--data_dir={ml1m}", f"--output_dir={out}",
              "--loss=softmax", "--learning_rate=0.1", "--epochs=3",
              "--steps_per_epoch=300", "--warm_start_steps=300",
              "--verbose=0", timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert metrics["recall@100"] > metrics["popular_recall@100"]
  assert metrics["precision@100"] > metrics["popular_precision@100"]
