"""The two-tower baseline: towers, loss, serialization, save/load."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.models.two_tower import TwoTowerModel, load_model, save_model

B, USERS, ITEMS, L = 16, 10, 30, 4


def _features(seed=0, with_log_q=True):
  rng = np.random.default_rng(seed)
  items = rng.permutation(ITEMS)[:B].astype(np.int32)
  features = {
      "user_id": rng.integers(0, USERS, B).astype(np.int32),
      "history": rng.integers(-1, ITEMS, (B, L)).astype(np.int32),
      "history_mask": rng.random((B, L)) < 0.8,
      "user_gender": rng.integers(0, 2, B).astype(np.int32),
      "item_id": items,
      "item_genres": rng.integers(-1, 5, (B, 3)).astype(np.int32),
  }
  if with_log_q:
    features["item_log_q"] = np.log(np.full(B, 1 / ITEMS, np.float32))
  return features


def _model(**kwargs):
  return TwoTowerModel(USERS, ITEMS, {"gender": 2}, {"genres": 5},
                       embedding_dim=8, hidden_units=[16], output_dim=8,
                       **kwargs)


def test_towers_give_normalized_embeddings():
  model = _model()
  features = _features()
  users = model.user_embedding(features).numpy()
  items = model.item_embedding(features).numpy()
  assert users.shape == (B, 8) and items.shape == (B, 8)
  np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1, rtol=1e-5)


def test_history_padding_does_not_change_the_user_embedding():
  model = _model()
  features = _features()
  padded = dict(features)
  padded["history"] = np.where(features["history_mask"], features["history"],
                               7)
  np.testing.assert_allclose(model.user_embedding(features).numpy(),
                             model.user_embedding(padded).numpy(), rtol=1e-6)


@pytest.mark.parametrize("with_log_q", [True, False])
def test_training_lowers_the_loss(with_log_q):
  model = _model()
  model.compile(keras.optimizers.Adagrad(0.5))
  features = _features(with_log_q=with_log_q)
  data = tf.data.Dataset.from_tensors(features).repeat(60)
  losses = model.fit(data, epochs=2, verbose=0).history["loss"]
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0]


def test_config_round_trip_and_validation():
  model = _model(temperature=0.2, use_user_id=False)
  clone = TwoTowerModel.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  with pytest.raises(ValueError, match="temperature"):
    _model(temperature=0.0)
  with pytest.raises(ValueError, match="num_items"):
    TwoTowerModel(3, 1)


def test_save_and_load_give_identical_embeddings(tmp_path):
  model = _model()
  features = _features()
  expected_user = model.user_embedding(features).numpy()
  expected_item = model.item_embedding(features).numpy()
  save_model(model, str(tmp_path / "model"))
  restored = load_model(str(tmp_path / "model"), features, features)
  np.testing.assert_allclose(restored.user_embedding(features).numpy(),
                             expected_user, rtol=1e-6)
  np.testing.assert_allclose(restored.item_embedding(features).numpy(),
                             expected_item, rtol=1e-6)


def test_works_inside_tf_function():
  model = _model()
  features = {k: tf.constant(v) for k, v in _features().items()}
  call = tf.function(lambda f: model.compute_loss(f, training=True))
  assert np.isfinite(call(features).numpy())


def test_unknown_user_and_profile_ids_embed_like_absent_fields():
  model = TwoTowerModel(5, 8, {"gender": 2}, embedding_dim=4, output_dim=4,
                        hidden_units=[])
  features = {"user_id": np.array([-1, 2]), "user_gender": np.array([-1, 1]),
              "history": np.array([[-1, 3], [1, 2]]),
              "history_mask": np.array([[False, True], [True, True]])}
  out = model.user_embedding(features).numpy()
  assert np.isfinite(out).all()
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
