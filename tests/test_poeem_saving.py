"""Keras saving of `PoeemModel` after a short `fit` (with the warm start it
runs by itself): `.keras` save/load, `ModelCheckpoint` of whole models,
SavedModel right after `fit`, and `load_weights` into a fresh model. The
index layer's state comes back with the towers: the Givens rotation,
centroids, codebooks, moving averages, the `enabled` switch and the item
codes remembered in training, so the index built from the reloaded model
equals the original's and answers identically."""

import numpy as np
import pytest

from conftest import keras_file_round_trip, saved_model_matches

from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf

import poeem_tf
from poeem_tf import servable

HISTORY = 6
CONFIG = dict(embedding_dim=8, output_dim=8, hidden_units=(16,),
              num_centroids=8, num_subspaces=4, num_codewords=8,
              warm_start_steps=4)


@pytest.fixture(scope="module")
def data():
  dataset = datasets.generate(datasets.SyntheticConfig(
      seed=1, num_items=150, num_users=80)).to_rec_dataset()
  split = datasets.held_out_split(dataset, num_test_users=20, seed=0)
  return dataset, split


def _state(model):
  """Every non-trainable array of the index layer."""
  layer = model.index_layer
  return [layer.rotation.rotation, layer.coarse.centroids,
          layer.product.codebooks, layer.enabled, layer.stored_codes,
          layer.coarse_counts, layer.coarse_sums, layer.codeword_counts,
          layer.codeword_sums]


def _index_parts(model):
  index, _ = servable.index_from_codes(model, model.catalogue_embeddings(),
                                       nprobe=2, max_k=20)
  return index, [index.centroids, index.codebooks, index.list_offsets,
                 index.list_items, index.codes, index.rotation]


def _assert_same(model, other, data):
  dataset, split = data
  batch = next(iter(poeem_tf.training_dataset(
      split.train, batch_size=16, history_length=HISTORY,
      num_items=dataset.num_items, shuffle=False)))
  np.testing.assert_array_equal(model(batch).numpy(), other(batch).numpy())
  np.testing.assert_array_equal(model.item_embedding(batch).numpy(),
                                other.item_embedding(batch).numpy())
  for mine, theirs in zip(_state(model), _state(other)):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
  index, parts = _index_parts(model)
  other_index, other_parts = _index_parts(other)
  for mine, theirs in zip(parts, other_parts):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
  queries = model(batch)
  for a, b in zip(index(queries, 10), other_index(queries, 10)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  dataset, split = data
  keras.utils.set_random_seed(0)
  root = tmp_path_factory.mktemp("poeem_saving")
  model = poeem_tf.PoeemModel(dataset.num_items, **CONFIG)
  model.compile(optimizer=keras.optimizers.Adagrad(0.05))
  train = poeem_tf.training_dataset(split.train, batch_size=32,
                                    history_length=HISTORY,
                                    num_items=dataset.num_items,
                                    num_negatives=4, repeat=True)
  checkpoint = keras.callbacks.ModelCheckpoint(
      str(root / "e{epoch}.keras"), save_weights_only=False)
  model.fit(train, epochs=2, steps_per_epoch=6, verbose=0,
            callbacks=[checkpoint])
  # SavedModel right after fit, before any manual call of the model.
  model.save(str(root / "dir"))
  # fit warm-started by itself, then remembered codes and rotated.
  assert float(model.index_layer.enabled.numpy()) == 1.0
  assert (model.index_layer.item_codes()[0] >= 0).any()
  assert not np.allclose(model.index_layer.rotation.rotation.numpy(),
                         np.eye(8))
  return dict(model=model, root=root, train=train)


def test_keras_file_round_trip(trained, data):
  model, root = trained["model"], trained["root"]
  _assert_same(model, keras_file_round_trip(model, root / "m.keras",
                                            poeem_tf.PoeemModel), data)


def test_model_checkpoint_holds_the_whole_model(trained, data):
  model, root = trained["model"], trained["root"]
  _assert_same(model, keras.models.load_model(str(root / "e2.keras")), data)
  first = keras.models.load_model(str(root / "e1.keras"))
  assert not np.array_equal(first.index_layer.rotation.rotation.numpy(),
                            model.index_layer.rotation.rotation.numpy())


def test_saved_model_right_after_fit(trained):
  model = trained["model"]
  loaded = saved_model_matches(trained)
  np.testing.assert_array_equal(
      loaded.index_layer.stored_codes.numpy(),
      model.index_layer.stored_codes.numpy())


def test_load_weights_restores_every_tower(trained, data):
  model, root = trained["model"], trained["root"]
  model.save_weights(str(root / "weights" / "ckpt"))
  fresh = poeem_tf.PoeemModel.from_config(model.get_config())
  assert float(fresh.index_layer.enabled.numpy()) == 0.0   # not warm yet
  fresh.load_weights(str(root / "weights" / "ckpt"))
  _assert_same(model, fresh, data)
  wider = poeem_tf.PoeemModel.from_config(
      dict(model.get_config(), num_centroids=12))
  with pytest.raises(ValueError, match="shape"):
    wider.load_weights(str(root / "weights" / "ckpt"))
