"""Keras saving of `MGDSPRModel` after a short `fit` (the full model and the
base tower without MGS and behaviour): `.keras` save/load, `ModelCheckpoint`
of whole models, SavedModel right after `fit`, `load_weights` into a fresh
model; the catalogue (item attributes, title word ids) comes back with the
towers: identical user and item vectors and identical top-10 answers. Also
`model.evaluate`'s `in_batch_hr@10`, `mgdspr_tf.training_dataset`'s feature
names and errors, and `mgdspr_tf.evaluate`'s keys and bad arguments."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic

import mgdspr_tf

LENGTHS = (4, 6, 6)
BATCH = 32
VARIANTS = {"full": {}, "base": dict(mgs=False, behaviour=False)}


@pytest.fixture(scope="module")
def data():
  world = synthetic.generate(synthetic.SyntheticConfig.scaled(
      300, num_users=100, seed=0))
  return mgdspr_tf.from_synthetic(world, lengths=LENGTHS, max_test=40)


def _batches(data):
  return mgdspr_tf.training_dataset(data.train, BATCH, seed=0,
                                    num_items=data.num_items)


def _fit(data, variant="full", callbacks=()):
  keras.utils.set_random_seed(0)
  model = mgdspr_tf.MGDSPRModel(
      data.num_items, data.attribute_sizes, title_length=6, dim=8,
      num_buckets=512, num_heads=2, max_real=LENGTHS[0],
      max_short=LENGTHS[1], max_long=LENGTHS[2], num_hard=4,
      **VARIANTS[variant])
  model.set_catalogue(data.attributes, data.titles)
  model.compile(optimizer=mgdspr_tf.paper_optimizer())
  model.fit(_batches(data), epochs=1, steps_per_epoch=3, verbose=0,
            callbacks=list(callbacks))
  return model


def _probe(data):
  return {k: tf.constant(v[:16]) for k, v in
          data.test.features(with_item=False).items()}


def _outputs(model, data):
  """User vectors (call and user_vector), every item vector, the top-10
  items of the probe rows and the catalogue variables."""
  users = model.user_vector(_probe(data)).numpy()
  items = model.all_item_vectors()
  return {"call": model(_probe(data)).numpy(), "users": users,
          "items": items,
          "top": np.argsort(-(users @ items.T), axis=1)[:, :10],
          "attributes": model.item_attributes.numpy(),
          "titles": model.item_title_ids.numpy()}


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keras_file_round_trip(data, variant, tmp_path):
  model = _fit(data, variant)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert isinstance(loaded, mgdspr_tf.MGDSPRModel)
  assert loaded.get_config() == model.get_config()
  assert (model.item_title_ids.numpy() >= 0).any()  # a catalogue was set
  _assert_same(_outputs(model, data), _outputs(loaded, data))


def test_model_checkpoint_of_whole_models(data, tmp_path):
  model = _fit(data, callbacks=[keras.callbacks.ModelCheckpoint(
      str(tmp_path / "e{epoch}.keras"), save_weights_only=False)])
  loaded = keras.models.load_model(tmp_path / "e1.keras")
  _assert_same(_outputs(model, data), _outputs(loaded, data))


def test_saved_model_right_after_fit(data, tmp_path):
  model = _fit(data)
  model.save(str(tmp_path / "dir"))
  restored = tf.saved_model.load(str(tmp_path / "dir"))
  batch = next(iter(_batches(data)))
  np.testing.assert_allclose(restored(batch, training=False).numpy(),
                             model(batch).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_load_weights_into_fresh_model(data, variant, tmp_path):
  model = _fit(data, variant)
  model.save_weights(str(tmp_path / "w"))
  fresh = mgdspr_tf.MGDSPRModel.from_config(model.get_config())
  fresh.load_weights(str(tmp_path / "w"))
  _assert_same(_outputs(model, data), _outputs(fresh, data))
  other = dict(model.get_config(), dim=6)
  with pytest.raises(ValueError):
    mgdspr_tf.MGDSPRModel.from_config(other).load_weights(
        str(tmp_path / "w"))


def test_model_evaluate_reports_in_batch_hr(data):
  model = _fit(data)
  batch = next(iter(_batches(data)))
  out = model.evaluate(tf.data.Dataset.from_tensors(batch),
                       return_dict=True, verbose=0)
  assert set(out) == {"loss", "in_batch_hr@10"}
  np.testing.assert_allclose(out["loss"],
                             model.compute_mgdspr_loss(batch).numpy(),
                             rtol=1e-5)
  # the share of rows whose clicked item is in the top 10 of the batch's
  # items (copies of the same item are no competitors)
  users = model.user_vector(batch).numpy()
  items = model.item_vectors(batch["item_id"]).numpy()
  scores = users @ items.T
  ids = batch["item_id"].numpy()
  rank = ((scores > np.diag(scores)[:, None]) &
          (ids[None, :] != ids[:, None])).sum(axis=1)
  np.testing.assert_allclose(out["in_batch_hr@10"], (rank < 10).mean(),
                             atol=1e-6)


def test_training_dataset_features_and_errors(data):
  batch = next(iter(_batches(data)))
  assert set(batch) == {"query", "history_query", "real_time", "short_term",
                        "long_term", "item_id"}
  assert batch["item_id"].shape == [BATCH]
  assert batch["real_time"].shape == [BATCH, LENGTHS[0]]
  with pytest.raises(ValueError, match="batch_size"):
    mgdspr_tf.training_dataset(data.train, 0)
  with pytest.raises(ValueError, match="batch_size"):
    mgdspr_tf.training_dataset(data.train, len(data.train) + 1)
  with pytest.raises(ValueError, match="num_items"):
    mgdspr_tf.training_dataset(data.train, BATCH, num_items=10)


def test_evaluate_keys_and_bad_arguments(data):
  model = _fit(data, "base")
  out = mgdspr_tf.evaluate(model, data, ks=[5, 10], rc_k=20)
  for key in ("recall@5", "recall@10", "p_good@5", "p_good@10",
              "rc_removal_rate", "rc_p_good", "rc_recall", "recall@20",
              "swapped_recall@10", "num_test_searches"):
    assert key in out, key
  assert all(0.0 <= out[k] <= 1.0 for k in ("recall@10", "p_good@10"))
  with pytest.raises(ValueError, match="ks"):
    mgdspr_tf.evaluate(model, data, ks=[0])
  small = mgdspr_tf.MGDSPRModel(10, data.attribute_sizes, dim=8,
                                num_buckets=64, num_heads=2)
  with pytest.raises(ValueError, match="items"):
    mgdspr_tf.evaluate(small, data)
