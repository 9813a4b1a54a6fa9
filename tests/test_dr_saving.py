"""Keras saving of `DeepRetrievalModel` after a short `fit` (with the EM it
runs by itself): `.keras` save/load, `ModelCheckpoint` of whole models,
SavedModel right after `fit`, and `load_weights` into a fresh model. The
item-to-path assignment pi, its inverted index, the score estimates, N_v
and log Q come back with the towers: `retrieve` answers identically."""

import numpy as np
import pytest

from conftest import keras_file_round_trip, saved_model_matches

from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf

import dr_tf

HISTORY = 6
CONFIG = dict(num_nodes=4, depth=2, num_paths=2, beam_size=6, score_paths=4,
              embedding_dim=8, gru_units=8, user_dim=8, rerank_dim=8,
              hidden_units=(16,), num_sampled=10, alpha=0.1)


@pytest.fixture(scope="module")
def data():
  world = datasets.generate(datasets.SyntheticConfig(
      seed=1, num_items=150, num_users=80))
  dataset = world.to_rec_dataset()
  split = datasets.held_out_split(dataset, num_test_users=20, seed=0)
  return dataset, split


def _state(model):
  """Every non-trainable array `retrieve` and the M-step read."""
  return [model.assignment.item_paths, model.assignment.index_keys,
          model.assignment.index_offsets, model.assignment.index_items,
          model.score_estimator.paths, model.score_estimator.scores,
          model.item_counts, model.sampling_log_q]


def _assert_same(model, other, data):
  dataset, split = data
  batch = next(iter(dr_tf.training_dataset(
      split.train, batch_size=16, history_length=HISTORY,
      num_items=dataset.num_items, shuffle=False)))
  np.testing.assert_array_equal(model(batch).numpy(), other(batch).numpy())
  for mine, theirs in zip(_state(model), _state(other)):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
  for rerank in (True, False):
    want = model.retrieve(batch["history"], batch["history_mask"], k=8,
                          rerank=rerank)
    got = other.retrieve(batch["history"], batch["history_mask"], k=8,
                         rerank=rerank)
    for a, b in zip(want, got):
      np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  dataset, split = data
  keras.utils.set_random_seed(0)
  root = tmp_path_factory.mktemp("dr_saving")
  model = dr_tf.DeepRetrievalModel(dataset.num_items, **CONFIG)
  model.set_item_counts(np.bincount(split.train.item,
                                    minlength=dataset.num_items))
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  initial = model.assignment.item_paths.numpy().copy()
  train = dr_tf.training_dataset(split.train, batch_size=32,
                                 history_length=HISTORY,
                                 num_items=dataset.num_items, repeat=True)
  checkpoint = keras.callbacks.ModelCheckpoint(
      str(root / "e{epoch}.keras"), save_weights_only=False)
  model.fit(train, epochs=2, steps_per_epoch=4, verbose=0,
            callbacks=[checkpoint])
  # SavedModel right after fit, before any manual call of the model.
  model.save(str(root / "dir"))
  # fit ran the M-step by itself: pi moved from its random start.
  assert not np.array_equal(initial, model.assignment.item_paths.numpy())
  return dict(model=model, root=root, train=train)


def test_keras_file_round_trip(trained, data):
  model, root = trained["model"], trained["root"]
  _assert_same(model, keras_file_round_trip(model, root / "m.keras",
                                            dr_tf.DeepRetrievalModel), data)


def test_model_checkpoint_holds_the_whole_model(trained, data):
  model, root = trained["model"], trained["root"]
  _assert_same(model, keras.models.load_model(str(root / "e2.keras")), data)
  first = keras.models.load_model(str(root / "e1.keras"))
  assert not np.array_equal(first.reranker.item_weights.numpy(),
                            model.reranker.item_weights.numpy())


def test_saved_model_right_after_fit(trained):
  model = trained["model"]
  loaded = saved_model_matches(trained)
  np.testing.assert_array_equal(
      loaded.assignment.item_paths.numpy(),
      model.assignment.item_paths.numpy())


def test_load_weights_restores_every_tower(trained, data):
  model, root = trained["model"], trained["root"]
  model.save_weights(str(root / "weights" / "ckpt"))
  fresh = dr_tf.DeepRetrievalModel.from_config(model.get_config())
  # A fresh model draws the same random pi from the seed; the file's wins.
  fresh.assignment.assign(np.roll(model.assignment.item_paths.numpy(), 1,
                                  axis=0))
  fresh.load_weights(str(root / "weights" / "ckpt"))
  _assert_same(model, fresh, data)
  wider = dr_tf.DeepRetrievalModel.from_config(
      dict(model.get_config(), user_dim=12))
  with pytest.raises(ValueError, match="shape"):
    wider.load_weights(str(root / "weights" / "ckpt"))
  deeper = dr_tf.DeepRetrievalModel.from_config(  # a weight the file lacks
      dict(model.get_config(), depth=3))
  with pytest.raises(ValueError, match="shape|does not hold every weight"):
    deeper.load_weights(str(root / "weights" / "ckpt"))
