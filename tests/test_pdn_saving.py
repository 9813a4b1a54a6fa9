"""Keras saving of `PDNModel` after a short `fit` (with and without the
Direct and Bias Nets): `.keras` save/load, `ModelCheckpoint` of whole
models, SavedModel right after `fit`, `load_weights` into a fresh model;
the item feature, co-occurrence and log tables come back with the networks:
identical scores, identical SimNet I2I index and identical `PDNRetriever`
answers. Also `model.evaluate`'s `sampled_hr@1`, `pdn_tf.evaluate` and
`export_pdn` from a model (served answers equal the retriever's)."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.datasets import registry, synthetic

import pdn_tf
from pdn_tf.retrieval import retrieve_users
from pdn_tf.servable import raw_requests

HISTORY = 5
NEGATIVES = 3
VARIANTS = {"full": {}, "no_direct_no_bias": dict(use_direct=False,
                                                  use_bias=False)}


@pytest.fixture(scope="module")
def split():
  dataset = registry.load_rec_dataset("synthetic", synthetic_config=(
      synthetic.SyntheticConfig.scaled(200, num_users=60, seed=0)))
  return registry.leave_one_out(dataset, num_negatives=20, seed=0)


@pytest.fixture(scope="module")
def cooc(split):
  data = split.dataset
  return cooccurrence_counts(data.interactions, data.num_items,
                             vocabulary=data.items)


def _batches(split):
  return pdn_tf.training_dataset(split.dataset, batch_size=32,
                                 history_length=HISTORY,
                                 num_negatives=NEGATIVES, seed=0)


def _fit(split, cooc, variant, callbacks=()):
  keras.utils.set_random_seed(0)
  model = pdn_tf.build_pdn_model(
      split.dataset, cooc, embedding_dim=4, trigger_units=[8],
      similarity_units=[8], direct_units=[8], direct_dim=4, bias_units=[4],
      num_negatives=NEGATIVES, **VARIANTS[variant])
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  model.fit(_batches(split).take(4), epochs=1, verbose=0,
            callbacks=list(callbacks))
  return model


def _probe(split):
  batch = next(iter(_batches(split)))
  candidates = tf.range(16, dtype=tf.int32)[tf.newaxis, :] + tf.zeros(
      [32, 1], tf.int32)
  return batch, candidates


def _outputs(model, split):
  """Eq. 12 scores (with and without the Bias Net), the I2I index and the
  retriever's top-10 of 10 test users."""
  batch, candidates = _probe(split)
  retriever = pdn_tf.build_retriever(
      model, split.dataset, history_length=HISTORY, num_triggers=3,
      pool_size=50, index_k=5, num_cooccurring=10, num_neighbors=5)
  return {
      "served": model.score(batch, candidates)["relevance"].numpy(),
      "trained": model.score(batch, candidates,
                             training=True)["relevance"].numpy(),
      "call": model(batch).numpy(),
      "index": retriever.index_items.numpy(),
      "top": retrieve_users(retriever, split.dataset,
                            split.test.user[:10], 10)}


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keras_file_round_trip(split, cooc, variant, tmp_path):
  model = _fit(split, cooc, variant)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert isinstance(loaded, pdn_tf.PDNModel)
  assert loaded.get_config() == model.get_config()
  for name in ("pair_keys", "pair_counts", "item_counts", "event_keys",
               "event_ratings"):
    np.testing.assert_array_equal(getattr(loaded.pairs, name).numpy(),
                                  getattr(model.pairs, name).numpy())
  _assert_same(_outputs(model, split), _outputs(loaded, split))


def test_model_checkpoint_of_whole_models(split, cooc, tmp_path):
  model = _fit(split, cooc, "full", callbacks=[
      keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.keras"),
                                      save_weights_only=False)])
  loaded = keras.models.load_model(tmp_path / "e1.keras")
  _assert_same(_outputs(model, split), _outputs(loaded, split))


def test_saved_model_right_after_fit(split, cooc, tmp_path):
  model = _fit(split, cooc, "full")
  model.save(str(tmp_path / "dir"))
  restored = tf.saved_model.load(str(tmp_path / "dir"))
  batch, _ = _probe(split)
  np.testing.assert_allclose(restored(batch, training=False).numpy(),
                             model(batch).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_load_weights_into_fresh_model(split, cooc, variant, tmp_path):
  model = _fit(split, cooc, variant)
  model.save_weights(str(tmp_path / "w"))
  fresh = pdn_tf.PDNModel.from_config(model.get_config())
  fresh.load_weights(str(tmp_path / "w"))
  _assert_same(_outputs(model, split), _outputs(fresh, split))
  other = dict(model.get_config(), embedding_dim=6)
  with pytest.raises(ValueError):
    pdn_tf.PDNModel.from_config(other).load_weights(str(tmp_path / "w"))


def test_model_evaluate_reports_sampled_hr(split, cooc):
  model = _fit(split, cooc, "full")
  out = model.evaluate(_batches(split).take(3), return_dict=True, verbose=0)
  assert set(out) == {"loss", "sampled_hr@1"}
  assert 0.0 <= out["sampled_hr@1"] <= 1.0
  # the metric is the share of rows whose positive beats every negative
  batch = next(iter(_batches(split)))
  model.hr_tracker.reset_state()
  y = model(batch).numpy()
  model.compute_loss_terms(batch, training=False)
  seen = model.pairs.seen(batch["user_id"],
                          model.training_candidates(batch)).numpy()
  beaten = (y[:, 1:] >= y[:, :1]) & ~seen[:, 1:]
  np.testing.assert_allclose(model.hr_tracker.result().numpy(),
                             1.0 - beaten.any(axis=1).mean(), atol=1e-6)


def test_evaluate_keys_and_bad_arguments(split, cooc):
  model = _fit(split, cooc, "full")
  retriever = pdn_tf.build_retriever(model, split.dataset,
                                     history_length=HISTORY, pool_size=60,
                                     index_k=5, num_cooccurring=10,
                                     num_neighbors=5)
  outputs = {}
  metrics = pdn_tf.evaluate(model, split, history_length=HISTORY,
                            retriever=retriever, full_ks=(10, 50),
                            outputs=outputs)
  for key in ("hr@10", "ndcg@10", "mrr", "i2i_hr@10", "i2i_ndcg@10",
              "recall@10", "recall@50"):
    assert 0.0 <= metrics[key] <= 1.0, key
  ranks = (outputs["personal"][:, 1:] >= outputs["personal"][:, :1]).sum(1)
  assert metrics["hr@10"] == pytest.approx(np.mean(ranks < 10))
  hits = (outputs["top"][:, :50] == split.test.item[:, None]).any(axis=1)
  assert metrics["recall@50"] == pytest.approx(hits.mean())
  with pytest.raises(ValueError, match="history_length"):
    pdn_tf.evaluate(model, split, history_length=0)
  with pytest.raises(ValueError, match="num_negatives"):
    pdn_tf.training_dataset(split.dataset, batch_size=8, num_negatives=0)
  with pytest.raises(TypeError, match="PDNModel or a PDNRetriever"):
    pdn_tf.export_pdn("model", "/tmp/x", split.dataset)


def test_export_pdn_from_a_model(split, cooc, tmp_path):
  model = _fit(split, cooc, "no_direct_no_bias")
  args = dict(history_length=HISTORY, num_triggers=3, pool_size=50,
              index_k=5, num_cooccurring=10, num_neighbors=5)
  path = pdn_tf.export_pdn(model, str(tmp_path / "export"), split.dataset,
                           **args)
  serve = tf.saved_model.load(path).signatures["serving_default"]
  # whole histories, as retrieve_users sends them
  request = raw_requests(split.dataset, [0, 1],
                         len(split.dataset.interactions),
                         with_rating=model.use_rating)
  answer = serve(k=tf.constant([10, 10]), **{
      name: tf.constant(value) for name, value in request.items()})
  retriever = pdn_tf.build_retriever(model, split.dataset, **args)
  expected = retrieve_users(retriever, split.dataset, [0, 1], 10)
  ids = split.dataset.items.ids
  assert answer["item_ids"].numpy().astype(str).tolist() == [
      [str(ids[i]) for i in row] for row in expected]
  with pytest.raises(ValueError, match="only apply to a PDNModel"):
    pdn_tf.export_pdn(retriever, str(tmp_path / "again"), split.dataset,
                      pool_size=10)
