"""`dr_tf` used as a library: the public names, `training_dataset`'s
features, `fit` running the EM without callbacks, `model.evaluate`'s
retrieval metrics, and `dr_tf.evaluate` (the CLI's metrics.json keys) with
clear errors on bad input."""

import numpy as np
import pytest

from retrieval_tf import datasets
from retrieval_tf.compat import keras

import dr_tf

HISTORY = 5
CONFIG = dict(num_nodes=6, depth=2, num_paths=2, beam_size=8, score_paths=6,
              embedding_dim=8, gru_units=8, user_dim=8, rerank_dim=8,
              hidden_units=(16,), num_sampled=10, alpha=0.1)


@pytest.fixture(scope="module")
def data():
  dataset = datasets.generate(datasets.SyntheticConfig(
      seed=3, num_items=200, num_users=120)).to_rec_dataset()
  return dataset, datasets.held_out_split(dataset, num_test_users=30, seed=0)


def _train(split, dataset, **kwargs):
  return dr_tf.training_dataset(split.train, batch_size=64,
                                history_length=HISTORY,
                                num_items=dataset.num_items, **kwargs)


@pytest.fixture(scope="module")
def trained(data):
  dataset, split = data
  keras.utils.set_random_seed(0)
  model = dr_tf.DeepRetrievalModel(dataset.num_items, **CONFIG)
  model.set_item_counts(np.bincount(split.train.item,
                                    minlength=dataset.num_items))
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  initial = model.assignment.item_paths.numpy().copy()
  history = model.fit(_train(split, dataset), epochs=2, verbose=0)
  return model, initial, history


def test_public_names():
  for name in dr_tf.__all__:
    assert getattr(dr_tf, name).__doc__, name
  assert {"DeepRetrievalModel", "training_dataset", "evaluate",
          "export_dr"} <= set(dr_tf.__all__)


def test_training_dataset_has_the_shared_feature_names(data):
  dataset, split = data
  batch = next(iter(_train(split, dataset, shuffle=False)))
  assert {"user_id", "item_id", "history", "history_mask"} <= set(batch)
  assert batch["history"].shape == (64, HISTORY)
  assert batch["history_mask"].dtype.name == "bool"
  with pytest.raises(ValueError, match="batch_size"):
    dr_tf.training_dataset(split.train, batch_size=0)


def test_fit_runs_the_em_without_callbacks(trained):
  model, initial, history = trained
  assert not np.array_equal(initial, model.assignment.item_paths.numpy())
  assert len(history.history["loss"]) == 2


def test_fit_without_item_counts_fails_clearly(data):
  dataset, split = data
  model = dr_tf.DeepRetrievalModel(dataset.num_items, **CONFIG)
  model.compile(optimizer="adam")
  with pytest.raises(ValueError, match="set_item_counts"):
    model.fit(_train(split, dataset), epochs=1, steps_per_epoch=1, verbose=0)
  with pytest.raises(ValueError, match=r"counts must have shape \(200,\)"):
    model.set_item_counts(np.ones(7))


def test_model_evaluate_reports_retrieval_metrics(trained, data):
  dataset, split = data
  model = trained[0]
  report = model.evaluate(_train(split, dataset), return_dict=True,
                          verbose=0)
  assert {"loss", "hr@10", "beam_recall"} <= set(report)
  for key in ("hr@10", "beam_recall"):
    assert 0.0 < report[key] <= 1.0, report
  # The hit rate of the whole pipeline beats ten random items of 200.
  assert report["hr@10"] > 10 / dataset.num_items
  # The losses are averages over the batches, not the last batch's.
  batches = list(_train(split, dataset, shuffle=False).take(3))
  report = model.evaluate(_train(split, dataset, shuffle=False), steps=3,
                          return_dict=True, verbose=0)
  nll = [model.losses_of(b)["structure_nll"].numpy() for b in batches]
  np.testing.assert_allclose(report["structure_nll"], np.mean(nll),
                             rtol=1e-5)


def test_evaluate_gives_the_cli_keys(trained, data):
  dataset, split = data
  model = trained[0]
  metrics = dr_tf.evaluate(model, split, dataset, history_length=HISTORY,
                           ks=[5, 10], beam_sizes=[4])
  for prefix in ("", "norerank_", "brute_", "popular_", "b4_"):
    for k in (5, 10):
      for name in ("precision", "recall", "f"):
        assert 0.0 <= metrics[f"{prefix}{name}@{k}"] <= 1.0
  assert 0 < metrics["b4_mean_candidates"] <= metrics["mean_candidates"]
  assert metrics["recall@10"] >= metrics["recall@5"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(ks=[0]), "need ks >= 1"),
    (dict(beam_sizes=[37]), r"B \(beam size\) must be in 1..K\^D = 36"),
])
def test_evaluate_refuses_bad_arguments(trained, data, kwargs, message):
  dataset, split = data
  with pytest.raises(ValueError, match=message):
    dr_tf.evaluate(trained[0], split, dataset, history_length=HISTORY,
                   **kwargs)


def test_evaluate_refuses_a_log_for_a_split(trained, data):
  dataset, split = data
  with pytest.raises(ValueError, match="DRSplit"):
    dr_tf.evaluate(trained[0], split.train, dataset, history_length=HISTORY)
