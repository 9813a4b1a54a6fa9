"""`python -m retrieval_tf.train` end to end, as a user runs it."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, dataset_dir, read_metrics, run_module

_run = functools.partial(run_module, "retrieval_tf.train")


@pytest.mark.parametrize("args, message", [
    (["--dataset=nope"], "--dataset='nope' is unknown"),
    (["--dataset=ncf-ml-1m"], "needs --data_dir"),
    (["--dataset=ml-1m", "--data_dir=/no/such/folder"], "does not exist"),
    (["--epochs=0"], "--epochs must be >= 1"),
    (["--dataset=ml-1m", "--data_dir=.", "--synthetic_items=5000"],
     "--synthetic_items works with --dataset=synthetic only"),
    (["--synthetic_items=50"], "--synthetic_items must be >= 100"),
    (["--dataset=synthetic", "--data_dir=."],
     "--dataset=synthetic is generated and reads no files"),
    (["--dataset=ml-1m", "--data_dir=.",
      "--synthetic_config=polysemous_search_rate=0.5"],
     "--synthetic_config works with --dataset=synthetic only"),
    (["--synthetic_config=no_such_field=1"],
     "'no_such_field=1' is not name=value with name one of"),
    (["--synthetic_config=num_users=many"],
     "num_users must be an integer, got 'many'"),
    (["--synthetic_config=polysemous_search_rate=1.5"],
     "SyntheticConfig.polysemous_search_rate is a probability"),
    (["--model=item_cf", "--save_embeddings"],
     "--save_embeddings works with --model=two_tower only"),
    (["--index=ivfpq", "--num_subspaces=5"],
     "--num_subspaces=5 must divide the embedding size 64"),
    (["--index=ivfpq", "--num_lists=4", "--nprobe=5"],
     "--nprobe=5 must be <= --num_lists=4"),
    (["--num_lists=4"], "--num_lists only apply to --index=ivfpq"),
    (["--rerank=-1"], "--rerank must be >= 0"),
    (["--protocol=held_out_users", "--num_test_users=0"],
     "--num_test_users must be >= 1"),
])
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
  out = tmp_path / "run"
  proc = _run(f"--output_dir={out}", *args)
  assert proc.returncode == 2
  assert message in proc.stderr
  assert not out.exists()


def test_finished_run_is_kept_without_overwrite_and_resumes_after_a_kill(
    tmp_path):
  out = tmp_path / "run"
  args = ["--model=two_tower", "--dataset=synthetic", f"--output_dir={out}",
          "--epochs=8", "--steps_per_epoch=25", "--batch_size=256",
          "--verbose=0"]
  proc = subprocess.Popen(
      [sys.executable, "-m", "retrieval_tf.train", *args],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  second_epoch = out / "checkpoints" / "epoch-002.index"
  deadline = time.time() + 240
  while not second_epoch.exists() and proc.poll() is None:
    assert time.time() < deadline, "training never reached epoch 2"
    time.sleep(0.05)
  assert proc.poll() is None, "training ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "metrics.json").exists()

  resumed = _run(*args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  metrics = read_metrics(out)
  assert metrics["train_steps"] == 8 * 25
  assert metrics["resumed_from_epoch"] >= 2
  assert metrics["epochs_run"] == 8 - metrics["resumed_from_epoch"]
  for key in ("hr@10", "ndcg@10", "recall@10", "recall@50"):
    assert 0.0 <= metrics[key] <= 1.0
  assert (out / "logs").is_dir() and (out / "model" / "config.json").exists()

  again = _run(*args)
  assert again.returncode == 2
  assert "already holds a finished run" in again.stderr
  assert read_metrics(out) == metrics


def test_two_tower_exports_an_ivfpq_servable_and_its_embeddings(tmp_path):
  out, export = tmp_path / "run", tmp_path / "export"
  proc = _run("--model=two_tower", "--dataset=synthetic",
              "--synthetic_items=3000", f"--output_dir={out}",
              f"--export_dir={export}", "--index=ivfpq", "--num_lists=16",
              "--nprobe=4", "--rerank=50", "--save_embeddings", "--epochs=1",
              "--batch_size=512", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert metrics["num_items"] == 3000
  items = np.load(out / "item_embeddings.npy")
  users = np.load(out / "user_embeddings.npy")
  assert items.shape == (3000, 64)
  assert users.shape == (metrics["num_test_users"], 64)
  card = json.loads((export / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert card["index"]["type"] == "IVFPQIndex"
  assert (card["index"]["num_lists"], card["index"]["nprobe"],
          card["index"]["rerank"]) == (16, 4, 50)


def test_two_tower_without_side_features(tmp_path):
  """--noside_features: ids and history only, in the model and in the
  servable's signature."""
  out, export = tmp_path / "run", tmp_path / "export"
  proc = _run("--model=two_tower", "--dataset=synthetic", "--noside_features",
              f"--output_dir={out}", f"--export_dir={export}", "--epochs=1",
              "--steps_per_epoch=30", "--batch_size=256", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = json.loads((out / "model" / "config.json").read_text())
  assert config["user_features"] == {} and config["item_features"] == {}
  card = json.loads((export / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert set(card["example_requests"]["serving_default"]) == {
      "history", "user_id", "k"}


def test_floors_on_the_ncf_split(data_root, tmp_path):
  ncf = dataset_dir(data_root, "ncf-ml-1m")
  results = {}
  for model in ("most_popular", "item_cf"):
    out = tmp_path / model
    proc = _run(f"--model={model}", "--dataset=ncf-ml-1m",
                f"--data_dir={ncf}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[model] = read_metrics(out)
  for metrics in results.values():
    assert metrics["num_test_users"] == 6040
    # Random ranking of 1 target among 100 gives HR@10 = 0.1.
    assert metrics["hr@10"] > 0.3
    assert metrics["ndcg@10"] < metrics["hr@10"]
    assert metrics["recall@10"] <= metrics["recall@50"]


def test_two_tower_learns_on_the_ncf_split(data_root, tmp_path):
  ncf = dataset_dir(data_root, "ncf-ml-1m")
  out = tmp_path / "tt"
  proc = _run("--model=two_tower", "--dataset=ncf-ml-1m",
              f"--data_dir={ncf}", f"--output_dir={out}", "--epochs=1",
              "--steps_per_epoch=150", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert metrics["train_steps"] == 150
  assert metrics["hr@10"] > 0.3


def test_held_out_users_protocol_scores_the_dr_split(tmp_path):
  """The floors and the two-tower on held-out users: the split is the
  DR one (`registry.held_out_split`) and the popular floor's figures equal
  MostPopular scored directly on it."""
  from retrieval_tf.baselines import MostPopular
  from retrieval_tf.datasets import registry
  from retrieval_tf.evaluation import HeldOutProtocol
  flags = ["--dataset=synthetic", "--protocol=held_out_users",
           "--num_test_users=200", "--min_user_events=4", "--seed=3",
           "--verbose=0"]
  results = {}
  for model in ("most_popular", "two_tower"):
    out = tmp_path / model
    proc = _run(f"--model={model}", f"--output_dir={out}", "--epochs=1",
                "--steps_per_epoch=60", "--batch_size=256", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[model] = read_metrics(out)
  dataset = registry.load_rec_dataset("synthetic", seed=3)
  split = registry.held_out_split(dataset, 200, 3, min_user_events=4)
  protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
  popular = MostPopular().fit(split.train, dataset.num_items)
  expected = protocol.report(
      popular.top_k(protocol.exclude, 50, exclude_history=True), (10, 50))
  assert {k: results["most_popular"][k] for k in expected} == \
      pytest.approx(expected)
  tower = results["two_tower"]
  assert tower["num_test_users"] == 200
  assert tower["protocol"] == "held_out_users"
  assert tower["recall@50"] > results["most_popular"]["recall@50"]


CLIS = ("retrieval_tf.train", "poeem_tf.train", "dr_tf.train",
        "pdn_tf.train", "dpsr_tf.train", "mgdspr_tf.train")


@pytest.mark.parametrize("module", CLIS)
def test_every_cli_refuses_an_unwritable_export_dir_before_training(
    tmp_path, module):
  """A folder under a file cannot be created, even by root."""
  blocker = tmp_path / "file"
  blocker.write_text("x")
  out = tmp_path / "run"
  proc = run_module(module, f"--output_dir={out}",
                    f"--export_dir={blocker / 'export'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"error: --export_dir='{blocker / 'export'}'" in proc.stderr
  assert "is a file, not a folder" in proc.stderr
  assert proc.stdout == "" and not out.exists()


_FAILING_EXPORT = """
import sys
import retrieval_tf.train as cli
def export_two_tower(*args, **kwargs):
  raise OSError("No space left on device")
cli.export_two_tower = export_two_tower
sys.argv[0] = "retrieval_tf.train"
cli.run_main()
"""


def test_a_failed_export_after_training_keeps_the_metrics(tmp_path):
  out, export = tmp_path / "run", tmp_path / "export"
  proc = subprocess.run(
      [sys.executable, "-c", _FAILING_EXPORT, f"--output_dir={out}",
       f"--export_dir={export}", "--synthetic_items=300", "--epochs=1",
       "--steps_per_epoch=3", "--batch_size=64", "--verbose=0"],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), cwd=REPO_ROOT)
  assert proc.returncode == 4, proc.stderr[-3000:]
  assert ("error: export failed: OSError: No space left on device; the "
          f"metrics are in {out / 'metrics.json'}") in proc.stderr
  metrics = read_metrics(out)
  assert 0.0 <= metrics["hr@10"] <= 1.0
  assert metrics["export_error"] == "OSError: No space left on device"
  assert "export_path" not in metrics


def _write_csv(path, rows):
  path.write_text("user,item,timestamp\n" + "".join(
      f"u{u},i{i},{t}\n" for u, i, t in rows))


def test_a_killed_run_resumes_only_on_the_same_data(tmp_path):
  """Unfinished (config.json, data.json and checkpoints, no metrics.json)
  and re-run on a changed file: refused, naming what changed."""
  rng = np.random.default_rng(0)
  rows = [(u, int(i), t) for u in range(40)
          for t, i in enumerate(rng.choice(30, 8, replace=False))]
  data = tmp_path / "events.csv"
  _write_csv(data, rows)
  out = tmp_path / "run"
  args = ["--dataset=csv", f"--data_dir={data}", f"--output_dir={out}",
          "--epochs=1", "--steps_per_epoch=2", "--batch_size=32",
          "--num_negatives=10", "--embedding_dim=8", "--verbose=0"]
  assert _run(*args).returncode == 0
  os.remove(out / "metrics.json")  # as if killed before the evaluation
  # Same users and items, one event moved to another item.
  moved = list(rows)
  used = {i for u, i, _ in rows if u == 0}
  moved[0] = (0, next(i for i in range(30) if i not in used), rows[0][2])
  _write_csv(data, moved)
  proc = _run(*args)
  assert proc.returncode == 2
  assert ("holds an unfinished run trained on other data (changed: "
          "negatives same size, other content; test same size, other "
          "content; train same size, other content); pass --overwrite to "
          "start again or choose another --output_dir") in proc.stderr, \
      proc.stderr[-2000:]
  # One more item: named with both counts, no Keras shape error.
  _write_csv(data, rows + [(0, 30, 99)])
  proc = _run(*args)
  assert proc.returncode == 2
  assert "num_items 30 -> 31" in proc.stderr
  assert "Traceback" not in proc.stderr
  _write_csv(data, rows)
  proc = _run(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert read_metrics(out)["num_items"] == 30


def test_early_stopping_on_the_leave_one_out_validation(tmp_path):
  from retrieval_tf.datasets import registry, splits
  out = tmp_path / "run"
  proc = _run("--dataset=synthetic", "--synthetic_items=300",
              f"--output_dir={out}", "--early_stopping=1", "--epochs=4",
              "--steps_per_epoch=3", "--batch_size=64", "--embedding_dim=16",
              "--seed=2", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 4
  if metrics["stopped_epoch"]:
    assert metrics["stopped_epoch"] == metrics["best_epoch"] + 1
  for key in ("val_hr@10", "val_ndcg@10", "val_recall@50", "hr@10"):
    assert 0.0 <= metrics[key] <= 1.0
  # The saved validation rows are the registry's, disjoint from the test.
  dataset = registry.load_rec_dataset(
      "synthetic", synthetic_config=runner_config(300, seed=2))
  split = registry.leave_one_out(dataset, seed=2, validation=True)
  valid, negatives = splits.load_validation(str(out / "validation.npz"))
  np.testing.assert_array_equal(valid.user, split.valid.user)
  np.testing.assert_array_equal(valid.item, split.valid.item)
  np.testing.assert_array_equal(negatives, split.valid_negatives)
  assert metrics["num_valid_users"] == len(valid)
  assert metrics["num_train_examples"] == len(split.dataset.interactions)
  assert metrics["num_test_users"] == len(split.test)


def runner_config(items, seed):
  from retrieval_tf import runner
  return runner.synthetic_config({"seed": seed, "synthetic_items": items})


@pytest.mark.parametrize("args, message", [
    (["--model=item_cf", "--early_stopping=2"],
     "--early_stopping works with --model=two_tower only"),
    (["--early_stopping=-1"], "--early_stopping must be >= 0"),
])
def test_early_stopping_flag_errors(tmp_path, args, message):
  proc = _run(f"--output_dir={tmp_path / 'run'}", *args)
  assert proc.returncode == 2
  assert message in proc.stderr
