"""`python -m dr_tf.train` as a user runs it: flag errors before any work,
and a short ML-1M run that beats most-popular."""


import functools
import pytest

from conftest import dataset_dir, read_metrics, run_module

_run = functools.partial(run_module, "dr_tf.train")


@pytest.mark.parametrize("args, message", [
    (["--num_nodes=1"], "K (nodes per layer) must be >= 2"),
    (["--score_paths=2"], "--score_paths must be in --num_paths..K^D"),
])
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
  out = tmp_path / "run"
  proc = _run(f"--output_dir={out}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
  assert not out.exists()


def test_a_short_ml1m_run_beats_most_popular(data_root, tmp_path):
  ml1m = dataset_dir(data_root, "ml-1m")
  out = tmp_path / "run"
  proc = _run("--dataset=ml-1m", f"--data_dir={ml1m}", f"--output_dir={out}",
              "--epochs=2", "--steps_per_epoch=120", "--history_length=20",
              "--learning_rate=0.01", "--m_step_start_epoch=0",
              "--num_test_users=500", "--ks=10", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert metrics["recall@10"] > metrics["popular_recall@10"]
  assert metrics["precision@10"] > metrics["popular_precision@10"]
  assert metrics["brute_recall@10"] > metrics["popular_recall@10"]
  assert len(metrics["em_history"]) == 3
  assert metrics["top_path_size"] < 10 * metrics["mean_path_size"]
