"""`python -m pdn_tf.train` as a user runs it: flag errors before any work,
and a short NCF ML-1M run that beats most-popular on HR@10."""


import functools
import numpy as np
import pytest

from conftest import dataset_dir, read_metrics, run_module

_run = functools.partial(run_module, "pdn_tf.train")


@pytest.mark.parametrize("args, message", [
    (["--num_cooccurring=0", "--num_neighbors=0"], "cannot both be 0"),
    (["--trigger_units=a,b"], "--trigger_units must be a comma-separated"),
    (["--dataset=ncf-ml-1m"], "needs --data_dir"),
])
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
  out = tmp_path / "run"
  proc = _run(f"--output_dir={out}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
  assert not out.exists()


def test_short_ml1m_run_beats_most_popular(data_root, tmp_path):
  from retrieval_tf import evaluation
  from retrieval_tf.baselines import MostPopular
  from retrieval_tf.datasets import registry
  ncf = dataset_dir(data_root, "ncf-ml-1m")
  out = tmp_path / "run"
  proc = _run("--dataset=ncf-ml-1m", f"--data_dir={ncf}",
              f"--output_dir={out}", "--epochs=1", "--steps_per_epoch=250",
              "--batch_size=1024", "--index_k=50", "--num_cooccurring=100",
              "--num_neighbors=20", "--verbose=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = read_metrics(out)
  data = registry.leave_one_out(registry.load_rec_dataset("ncf-ml-1m",
                                                          str(ncf)))
  popular = MostPopular().fit(data.dataset.interactions,
                              data.dataset.num_items)
  floor = evaluation.evaluate_sampled(
      lambda rows, items: popular.score(None, items),
      np.arange(len(data.test)), data.test.item, data.negatives)["hr@10"]
  assert metrics["hr@10"] > floor + 0.02, (metrics["hr@10"], floor)
  assert metrics["num_test_users"] == 6040
  for key in ("ndcg@10", "i2i_hr@10", "i2i_ndcg@10", "recall@50",
              "recall@300", "index_build_seconds"):
    assert np.isfinite(metrics[key]), key
  assert 0 < metrics["recall@50"] <= metrics["recall@300"] <= 1
