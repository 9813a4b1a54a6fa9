"""The library face: `retrieval_tf`'s and `retrieval_tf.datasets`' public
names, the lazy top level, and `retrieval_tf.evaluate` / `export_two_tower`
used as a Python caller would."""

import subprocess
import sys

import numpy as np
import pytest

import retrieval_tf
from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf

L = 5
LEAVE_ONE_OUT_KEYS = {"hr@10", "ndcg@10", "mrr", "recall@10", "recall@50",
                      "full_ndcg@10", "full_ndcg@50"}


def test_every_public_name_exists():
  assert set(retrieval_tf.__all__) == {
      "TwoTowerModel", "training_dataset", "evaluate", "export_two_tower",
      "BruteForceIndex", "IVFPQIndex", "IVFFlatIndex", "build_index"}
  for name in retrieval_tf.__all__:
    assert callable(getattr(retrieval_tf, name)), name
    assert getattr(retrieval_tf, name).__doc__, name
  for name in datasets.__all__:
    assert getattr(datasets, name) is not None, name
  for loader in ("load_interactions_csv", "load_ml1m", "load_ncf_ml1m",
                 "load_amazon", "load_crowdflower", "load_bestbuy",
                 "generate", "load_rec_dataset"):
    assert loader in datasets.__all__ and callable(getattr(datasets, loader))
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    retrieval_tf.nope  # pylint: disable=pointless-statement


def test_import_is_lazy_and_still_binds_keras_2_first():
  code = ("import sys, retrieval_tf, retrieval_tf.datasets\n"
          "assert 'tensorflow' not in sys.modules, 'eager TF import'\n"
          "model = retrieval_tf.TwoTowerModel\n"
          "import tensorflow as tf\n"
          "print(tf.keras.__name__)\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().startswith("tf_keras")


@pytest.fixture(scope="module")
def trained():
  world = datasets.generate(datasets.SyntheticConfig(
      seed=2, num_items=200, num_users=100, mean_events_per_user=12))
  dataset = world.to_rec_dataset()
  split = datasets.leave_one_out(dataset, num_negatives=20)
  model = retrieval_tf.TwoTowerModel(
      dataset.num_users, dataset.num_items, embedding_dim=8,
      hidden_units=[16], output_dim=8)
  model.compile(keras.optimizers.Adagrad(0.3))
  model.fit(retrieval_tf.training_dataset(
      split.dataset.interactions, batch_size=64, history_length=L,
      num_users=dataset.num_users, num_items=dataset.num_items), epochs=1,
            verbose=0)
  return dataset, split, model


def test_evaluate_gives_the_cli_keys_on_both_protocols(trained):
  dataset, split, model = trained
  report = retrieval_tf.evaluate(model, split, history_length=L)
  assert set(report) == LEAVE_ONE_OUT_KEYS
  assert all(0.0 <= value <= 1.0 for value in report.values())
  held_out = datasets.held_out_split(dataset, 20, seed=0, min_user_events=4)
  report = retrieval_tf.evaluate(model, held_out, dataset,
                                 history_length=L, full_ks=(10,))
  assert set(report) == {"precision@10", "recall@10", "f@10"}


def test_evaluate_refuses_what_it_cannot_score(trained):
  dataset, split, model = trained
  with pytest.raises(ValueError, match="history_length"):
    retrieval_tf.evaluate(model, split)
  with pytest.raises(ValueError, match="LeaveOneOut"):
    retrieval_tf.evaluate(model, dataset, history_length=L)
  held_out = datasets.held_out_split(dataset, 20, seed=0, min_user_events=4)
  with pytest.raises(ValueError, match="dataset="):
    retrieval_tf.evaluate(model, held_out, history_length=L)


def test_export_with_the_item_tower_serves_its_top_k(trained, tmp_path):
  dataset, split, model = trained
  with pytest.raises(ValueError, match="history_length"):
    retrieval_tf.export_two_tower(model, str(tmp_path), split.dataset)
  path = retrieval_tf.export_two_tower(model, str(tmp_path), split.dataset,
                                       history_length=L, max_k=20)
  serve = tf.saved_model.load(path).signatures["serving_default"]
  history = [str(i) for i in split.dataset.interactions.sequences()[0][-L:]]
  answer = serve(user_id=tf.constant(["0"]), history=tf.constant([history]),
                 k=tf.constant([7]))
  items = retrieval_tf.evaluation.item_tower_vectors(model, split.dataset)
  user = model.user_embedding({
      "user_id": np.array([0]),
      "history": np.array([[int(i) for i in history]]),
      "history_mask": np.ones([1, len(history)], bool)}).numpy()
  want = np.argsort(-(user @ items.T)[0], kind="stable")[:7]
  assert [int(i) for i in answer["item_ids"].numpy()[0]] == [
      int(dataset.items.ids[i]) for i in want]
