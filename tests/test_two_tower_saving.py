"""Keras saving of `TwoTowerModel` after a short `fit`: `.keras` files,
`ModelCheckpoint`, SavedModel folders and `load_weights` into a fresh model."""

import numpy as np
import pytest

import retrieval_tf
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.index import BruteForceIndex

L = 6


@pytest.fixture(scope="module")
def data():
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=5, num_items=200, num_users=80, mean_events_per_user=12))
  return world.to_rec_dataset()


def _train(data, batch_size=64):
  return retrieval_tf.training_dataset(
      data.interactions, batch_size=batch_size, history_length=L,
      user_features={"gender": data.user_features["gender"]},
      item_features={"brand": data.item_features["brand"]},
      num_users=data.num_users, num_items=data.num_items, with_log_q=True)


def _model(data, **kwargs):
  model = retrieval_tf.TwoTowerModel(
      data.num_users, data.num_items,
      user_features={"gender": len(data.feature_vocabularies["gender"])},
      item_features={"brand": len(data.feature_vocabularies["brand"])},
      embedding_dim=8, hidden_units=[16], output_dim=8, **kwargs)
  model.compile(keras.optimizers.Adagrad(0.3))
  return model


def _batch(data):
  return next(iter(_train(data, batch_size=32)))


def _outputs(model, batch):
  """Both towers' vectors and the top-5 items of every user."""
  users = model.user_embedding(batch).numpy()
  items = model.item_embedding(batch).numpy()
  _, top = BruteForceIndex.from_embeddings(items, max_k=5)(users, 5)
  return users, items, top.numpy()


def _assert_same(got, want):
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  """A model after two epochs, each epoch checkpointed as a `.keras` file."""
  folder = tmp_path_factory.mktemp("checkpoints")
  model = _model(data)
  model.fit(_train(data), epochs=2, verbose=0, callbacks=[
      keras.callbacks.ModelCheckpoint(str(folder / "e{epoch}.keras"),
                                      save_weights_only=False)])
  return model, folder


def test_keras_file_round_trip_gives_identical_outputs(data, trained,
                                                      tmp_path):
  model, _ = trained
  model.save(str(tmp_path / "m.keras"))
  loaded = keras.models.load_model(str(tmp_path / "m.keras"))
  assert isinstance(loaded, retrieval_tf.TwoTowerModel)
  assert loaded.get_config() == model.get_config()
  batch = _batch(data)
  _assert_same(_outputs(loaded, batch), _outputs(model, batch))


def test_model_checkpoint_files_load_as_the_last_epoch(data, trained):
  model, folder = trained
  assert sorted(p.name for p in folder.iterdir()) == ["e1.keras", "e2.keras"]
  last = keras.models.load_model(str(folder / "e2.keras"))
  first = keras.models.load_model(str(folder / "e1.keras"))
  batch = _batch(data)
  _assert_same(_outputs(last, batch), _outputs(model, batch))
  assert not np.array_equal(first.user_embedding(batch).numpy(),
                            last.user_embedding(batch).numpy())
  # Training goes on from the checkpoint (optimizer restored).
  last.fit(_train(data), epochs=1, verbose=0)


def test_saved_model_folder_right_after_fit(data, tmp_path):
  model = _model(data)
  model.fit(_train(data), epochs=1, verbose=0)  # no manual model(batch)
  model.save(str(tmp_path / "dir"))
  loaded = tf.saved_model.load(str(tmp_path / "dir"))
  batch = _batch(data)
  np.testing.assert_allclose(loaded(batch, training=False).numpy(),
                             model(batch).numpy(), rtol=1e-6, atol=1e-6)


def test_load_weights_restores_every_tower_and_refuses_another_config(
    data, trained, tmp_path):
  model, _ = trained
  for path in (tmp_path / "w.keras", tmp_path / "ckpt"):
    if path.suffix == ".keras":
      model.save(str(path))
    else:
      model.save_weights(str(path))
    fresh = retrieval_tf.TwoTowerModel.from_config(model.get_config())
    fresh.load_weights(str(path))
    batch = _batch(data)
    _assert_same(_outputs(fresh, batch), _outputs(model, batch))
    other = retrieval_tf.TwoTowerModel.from_config(
        dict(model.get_config(), hidden_units=[16, 16]))
    with pytest.raises(ValueError):
      other.load_weights(str(path))


def test_evaluate_reports_in_batch_hit_rate(data, trained):
  model, _ = trained
  logs = model.evaluate(_train(data), return_dict=True, verbose=0)
  assert 0.0 <= logs["in_batch_hr@10"] <= 1.0
  untrained = _model(data, in_batch_k=10)
  before = untrained.evaluate(_train(data), return_dict=True, verbose=0)
  assert logs["in_batch_hr@10"] > before["in_batch_hr@10"]
  with pytest.raises(ValueError, match="in_batch_k"):
    _model(data, in_batch_k=0)
