"""Keras saving of `DPSRModel` after a short `fit`: `.keras` save/load,
`ModelCheckpoint` of whole models, SavedModel right after `fit`, and
`load_weights` into a fresh model; the tokenizer (hashed and vocabulary
mode), the heads, the item tables, the lexical skip and the personalisation
embeddings all come back: identical query heads, item embeddings and top-k
answers."""

import numpy as np
import pytest

from conftest import keras_file_round_trip, saved_model_matches

from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.text import Tokenizer, build_vocabulary, padded_ids

import dpsr_tf
from dpsr_tf.evaluation import ModelScorer

BATCH = 16
VARIANTS = {
    # DPSR-h, hashed tokenizer, lexical skip.
    "history": dict(personalization="history", lexical_skip=True),
    # DPSR-p, vocabulary tokenizer (its token list lives in the config).
    "profile_vocabulary": dict(personalization="profile"),
}


@pytest.fixture(scope="module")
def task():
  return dpsr_tf.load_task("synthetic", synthetic_config=(
      synthetic.SyntheticConfig.scaled(200, num_users=60, seed=0)),
                           history_length=4)


def _tokenizer(task, variant):
  if variant == "profile_vocabulary":
    return Tokenizer(vocabulary=build_vocabulary(task.item_text),
                     num_oov_buckets=64)
  return Tokenizer(num_buckets=2048)


def _model(task, variant, **overrides):
  tokenizer = _tokenizer(task, variant)
  titles = padded_ids(tokenizer, task.item_text, max_tokens=32)
  kwargs = dict(tokenizer=tokenizer.get_config(), num_heads=2, token_dim=8,
                output_dim=8, hidden_units=(16,), num_negatives=BATCH - 1,
                user_feature_sizes=task.user_feature_sizes)
  kwargs.update(VARIANTS[variant])
  kwargs.update(overrides)
  model = dpsr_tf.DPSRModel(task.num_items, titles.shape[1],
                            task.item_feature_sizes, **kwargs)
  model.set_item_tables(titles, task.item_columns)
  model.compile(optimizer=keras.optimizers.Adagrad(0.1))
  return model


def _queries(task):
  """Raw-query features of 8 test rows, with the variant's user inputs."""
  rows = {k: v[:8] for k, v in task.test.items()}
  features = {"query": tf.constant(rows["query"].astype(str))}
  for name in task.user_feature_sizes:
    features[f"user_{name}"] = tf.constant(rows[f"user_{name}"])
  features["history"] = tf.constant(rows["history"])
  return rows, features


def _assert_same(model, other, task):
  rows, features = _queries(task)
  np.testing.assert_array_equal(model.query_heads(features).numpy(),
                                other.query_heads(features).numpy())
  vectors = dpsr_tf.all_item_embeddings(model)
  np.testing.assert_array_equal(vectors,
                                dpsr_tf.all_item_embeddings(other))
  np.testing.assert_array_equal(model.item_title.numpy(),
                                other.item_title.numpy())
  tokens = tf.constant(["red shoes", "zzqx unknown words"])
  assert model.tokenizer(tokens).to_list() == other.tokenizer(
      tokens).to_list()
  np.testing.assert_array_equal(
      ModelScorer(model, vectors).retrieve(rows, 10),
      ModelScorer(other, dpsr_tf.all_item_embeddings(other)).retrieve(
          rows, 10))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request, task, tmp_path_factory):
  variant = request.param
  tf.random.set_seed(0)
  root = tmp_path_factory.mktemp(f"dpsr_saving_{variant}")
  model = _model(task, variant)
  train = dpsr_tf.training_dataset(task.train, model, BATCH)
  checkpoint = keras.callbacks.ModelCheckpoint(
      str(root / "e{epoch}.keras"), save_weights_only=False)
  model.fit(train, epochs=2, steps_per_epoch=5, verbose=0,
            callbacks=[checkpoint])
  # SavedModel right after fit, before any manual call of the model.
  model.save(str(root / "dir"))
  return dict(variant=variant, model=model, root=root, train=train)


def test_keras_file_round_trip(trained, task):
  model, root = trained["model"], trained["root"]
  _assert_same(model, keras_file_round_trip(model, root / "m.keras",
                                            dpsr_tf.DPSRModel), task)


def test_model_checkpoint_holds_the_whole_model(trained, task):
  loaded = keras.models.load_model(str(trained["root"] / "e2.keras"))
  _assert_same(trained["model"], loaded, task)
  first = keras.models.load_model(str(trained["root"] / "e1.keras"))
  assert not np.array_equal(  # the checkpoint of epoch 1 is older
      dpsr_tf.all_item_embeddings(first),
      dpsr_tf.all_item_embeddings(trained["model"]))


def test_saved_model_right_after_fit(trained):
  saved_model_matches(trained)


def test_load_weights_restores_every_tower(trained, task):
  model, root = trained["model"], trained["root"]
  model.save_weights(str(root / "weights" / "ckpt"))
  fresh = dpsr_tf.DPSRModel.from_config(model.get_config())
  fresh.load_weights(str(root / "weights" / "ckpt"))
  _assert_same(model, fresh, task)
  wider = dpsr_tf.DPSRModel.from_config(
      dict(model.get_config(), output_dim=12))
  with pytest.raises(ValueError, match="shape"):
    wider.load_weights(str(root / "weights" / "ckpt"))
  if not model.lexical_skip:  # a layer the file does not hold
    more = dpsr_tf.DPSRModel.from_config(
        dict(model.get_config(), lexical_skip=True))
    with pytest.raises(ValueError, match="does not hold every weight"):
      more.load_weights(str(root / "weights" / "ckpt"))
