"""`--early_stopping` end to end in the paper CLIs (the two-tower and MGDSPR
CLIs have their own tests): each scores its validation split after every
epoch, keeps the best epoch's weights and reports that epoch's figures."""

import json

import numpy as np
import pytest

from conftest import read_metrics, run_module

# CLI -> (extra flags for a small synthetic run, the monitored metric).
CLIS = {
    "poeem_tf.train": (["--num_valid_users=200", "--num_test_users=200"],
                       "recall@100"),
    "dr_tf.train": (["--num_valid_users=200", "--num_test_users=200"],
                    "recall@50"),
    "pdn_tf.train": ([], "hr@10"),
    "dpsr_tf.train": ([], "top10"),
}


@pytest.mark.parametrize("module", sorted(CLIS))
def test_cli_keeps_its_best_validation_epoch(module, tmp_path):
  extra, monitor = CLIS[module]
  out = tmp_path / "run"
  proc = run_module(module, "--dataset=synthetic", f"--output_dir={out}",
                    "--epochs=2", "--steps_per_epoch=20",
                    "--early_stopping=1", "--verbose=0", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  with open(out / "validation" / "state.json") as f:
    state = json.load(f)
  assert state["monitor"] == monitor
  curve = [record[monitor] for record in state["records"]]
  assert [r["epoch"] for r in state["records"]] == [1, 2]
  best = metrics["best_epoch"]
  assert best == 1 + int(np.argmax(curve))  # the first of equal bests
  assert metrics[f"val_{monitor}"] == curve[best - 1]
  # Patience 1: a first epoch that stays best stops the run after epoch 2.
  assert metrics["stopped_epoch"] == (2 if best == 1 else 0)
  assert (out / "validation" / f"best-epoch-{best:03d}.npz").exists()
