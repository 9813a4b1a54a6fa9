"""PoeemModel: training with the index layer, warm start (on by default,
run by `fit` itself), the collapsed-index warning, `model.evaluate`'s
in-batch HR, the public data / evaluate / export API."""

import json
import logging

import numpy as np
import pytest

from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.models.two_tower_servable import raw_requests
from retrieval_tf.serving import check
import poeem_tf
from poeem_tf import callbacks, servable
from poeem_tf.model import PoeemModel

L = 10


@pytest.fixture(scope="module")
def world():
  return synthetic.generate(synthetic.SyntheticConfig(
      seed=5, num_items=400, num_users=150)).to_rec_dataset()


def _train(data, warm_start_steps, epochs=3, **kwargs):
  model = PoeemModel(data.num_items, embedding_dim=16, output_dim=16,
                     hidden_units=[32], num_centroids=16, num_subspaces=4,
                     num_codewords=8,
                     warm_start_steps=warm_start_steps, **kwargs)
  model.compile(optimizer=keras.optimizers.Adagrad(0.01))  # the paper's
  train = pipeline.training_dataset(
      data.interactions, batch_size=64, history_length=L, shuffle=True,
      seed=0, drop_remainder=True)
  history = model.fit(train, epochs=epochs, verbose=0)
  return model, history.history


def test_training_steps_the_rotation_and_keeps_it_orthonormal(world):
  model, history = _train(world, warm_start_steps=20)
  assert np.isfinite(history["loss"]).all()
  r = model.index_layer.rotation.rotation.numpy()
  np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-5)
  assert not np.allclose(r, np.eye(16))
  assert float(model.index_layer.enabled.numpy()) == 1.0


def test_warm_start_uses_more_centroids_than_cold_start(world):
  cold, _ = _train(world, warm_start_steps=0, epochs=2)
  warm, _ = _train(world, warm_start_steps=20, epochs=2)
  usage = {name: callbacks.utilisation(
      model.index_layer, model.catalogue_embeddings())
           for name, model in (("cold", cold), ("warm", warm))}
  assert usage["warm"]["coarse_used"] >= 0.9
  assert usage["warm"]["coarse_used"] > usage["cold"]["coarse_used"]
  assert usage["warm"]["coarse_entropy"] > usage["cold"]["coarse_entropy"]


def test_config_round_trip_and_bad_parameters(world):
  model = PoeemModel(world.num_items, num_centroids=8, num_subspaces=8,
                     num_codewords=4, rotation=False, loss="softmax")
  clone = PoeemModel.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  with pytest.raises(ValueError, match="must be divisible by D=5"):
    PoeemModel(world.num_items, num_subspaces=5)
  with pytest.raises(ValueError, match="must not exceed the number of items"):
    PoeemModel(world.num_items, num_codewords=world.num_items + 1)
  with pytest.raises(ValueError, match="loss"):
    PoeemModel(world.num_items, loss="bpr")


def test_nan_embeddings_stop_the_warm_start(world):
  model = PoeemModel(world.num_items, num_centroids=4, num_subspaces=4,
                     num_codewords=4)
  with pytest.raises(FloatingPointError, match="NaN"):
    callbacks.initialise_from_embeddings(model.index_layer,
                                         np.full((50, 64), np.nan))


def test_export_passes_the_checker_and_equals_the_in_memory_index(
    world, tmp_path):
  model, _ = _train(world, warm_start_steps=20, epochs=2)
  vectors = model.catalogue_embeddings()
  index, seconds = servable.index_from_codes(model, vectors, nprobe=4,
                                             max_k=50, codes="fresh")
  path = servable.export_poeem(model, str(tmp_path / "export"), world, L,
                               index=index, item_vectors=vectors,
                               index_build_seconds=seconds)
  check.check(path)
  card = json.loads((tmp_path / "export" / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert card["model"] == "poeem" and card["index"]["rotation"]
  assert card["index_build_seconds"] >= 0 and card["warnings"] == []
  users = [0, 3, 9]
  request = raw_requests(world, users, L, with_user_id=False,
                         with_profile=False)
  fn = tf.saved_model.load(path).signatures["serving_default"]
  served = fn(**{n: tf.constant(v) for n, v in request.items()},
              k=tf.constant([20] * 3))
  # In memory: the same users' vectors against the codes, and against
  # T(x) by brute force when every list is probed.
  history = np.array([[world.items.index(i) if i else -1 for i in row]
                      for row in request["history"]])
  queries = model.user_embedding({"history": history,
                                  "history_mask": history >= 0})
  scores, ids = index(queries, 20)
  np.testing.assert_allclose(served["scores"].numpy(), scores.numpy(),
                             rtol=1e-5, atol=1e-5)
  got = np.array([[x.decode() for x in row] for row in
                  served["item_ids"].numpy()])
  np.testing.assert_array_equal(got, world.items.decode(ids.numpy()))
  # The index's utilisation is read off its codes, without re-encoding.
  assert servable.index_utilisation(index) == callbacks.utilisation(
      model.index_layer, vectors)
  quantized = model.index_layer.encode(vectors)["quantized"].numpy()
  exhaustive, _ = index(queries, 20, nprobe=index.num_lists)
  want = np.sort(queries.numpy() @ quantized.T, axis=1)[:, ::-1][:, :20]
  np.testing.assert_allclose(exhaustive.numpy(), want, atol=1e-5)


def test_an_untrained_index_is_flagged_in_the_model_card(world, tmp_path):
  model = PoeemModel(world.num_items, embedding_dim=16, output_dim=16,
                     num_centroids=16, num_subspaces=4, num_codewords=8,
                     warm_start_steps=100)
  model.user_embedding({"history": np.zeros((1, L), np.int32),
                        "history_mask": np.ones((1, L), bool)})
  vectors = model.catalogue_embeddings()
  index, seconds = servable.index_from_codes(model, vectors, nprobe=4,
                                             max_k=50)
  with pytest.warns(RuntimeWarning, match="never enabled"):
    path = servable.export_poeem(model, str(tmp_path / "export"), world, L,
                                 index=index, item_vectors=vectors,
                                 index_build_seconds=seconds)
  card = json.loads((tmp_path / "export" / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert any("never enabled" in w for w in card["warnings"])
  assert path.endswith("1")


def test_warm_start_leaves_an_enabled_layer_alone(world):
  model, _ = _train(world, warm_start_steps=20, epochs=1)

  def must_not_run():
    raise AssertionError("the warm start ran again on an enabled layer")

  train = pipeline.training_dataset(world.interactions, batch_size=64,
                                    history_length=L, drop_remainder=True)
  model.fit(train, epochs=1, verbose=0,
            callbacks=[callbacks.WarmStart(1, must_not_run)])


def test_the_index_is_the_codes_remembered_in_training(world):
  model, _ = _train(world, warm_start_steps=20, epochs=2)
  layer = model.index_layer
  stored_coarse, stored_pq = layer.item_codes()
  vectors = model.catalogue_embeddings()
  seen = stored_coarse >= 0
  trained = np.zeros(world.num_items, bool)
  trained[world.interactions.item] = True
  # Every item the training batches quantized after the warm start has a
  # code; items that never appear in training have none.
  assert seen.mean() > 0.5 and not (seen & ~trained).any()
  coarse, pq = servable.catalogue_codes(layer, vectors, "stored")
  fresh_coarse, fresh_pq = servable.catalogue_codes(layer, vectors, "fresh")
  np.testing.assert_array_equal(coarse[seen], stored_coarse[seen])
  np.testing.assert_array_equal(pq[seen], stored_pq[seen])
  np.testing.assert_array_equal(coarse[~seen], fresh_coarse[~seen])
  staleness = servable.code_staleness(layer, vectors)
  assert staleness["codes_never_stored"] == pytest.approx(1 - seen.mean())
  assert staleness["coarse_codes_changed"] == pytest.approx(
      (coarse[seen] != fresh_coarse[seen]).mean())
  # The stored index holds exactly those codes, list by list.
  index, _ = servable.index_from_codes(model, vectors, nprobe=4, max_k=50)
  order = index.list_items.numpy()
  lists = np.repeat(np.arange(index.num_lists),
                    np.diff(index.list_offsets.numpy()))
  np.testing.assert_array_equal(coarse[order], lists)
  np.testing.assert_array_equal(pq[order], index.codes.numpy())
  with pytest.raises(ValueError, match="codes must be one of"):
    servable.catalogue_codes(layer, vectors, "cached")


def _small(num_items, **kwargs):
  return PoeemModel(num_items, embedding_dim=16, output_dim=16,
                    hidden_units=[32], num_centroids=16, num_subspaces=4,
                    num_codewords=8, **kwargs)


def test_a_plain_fit_warm_starts_by_itself_and_stays_healthy(world, recwarn):
  model = _small(world.num_items)        # defaults: warm start, 200 steps
  assert model.warm_start_steps > 0
  model.compile(optimizer=keras.optimizers.Adagrad(0.05))
  train = poeem_tf.training_dataset(world.interactions, batch_size=64,
                                    history_length=L,
                                    num_items=world.num_items,
                                    num_negatives=5)
  batch = next(iter(train))
  assert batch["negative_ids"].shape == (64, 5)
  # 2 epochs of ~18 steps: shorter than the warm start, which then runs
  # when fit ends.
  history = model.fit(train, epochs=2, verbose=0)
  assert float(model.index_layer.enabled.numpy()) == 1.0
  usage = callbacks.utilisation(model.index_layer,
                                model.catalogue_embeddings())
  assert usage["coarse_used"] >= 0.9
  assert not [w for w in recwarn if "Poeem index" in str(w.message)]
  assert "in_batch_hr@10" in history.history
  result = model.evaluate(train, steps=3, return_dict=True, verbose=0)
  assert 0.0 <= result["in_batch_hr@10"] <= 1.0 and "loss" in result


def test_a_cold_start_collapses_the_index_and_fit_warns(world, caplog):
  model = _small(world.num_items, warm_start_steps=0)
  model.compile(optimizer=keras.optimizers.Adagrad(0.01))
  train = poeem_tf.training_dataset(world.interactions, batch_size=64,
                                    history_length=L)
  with caplog.at_level(logging.WARNING), \
      pytest.warns(RuntimeWarning, match="collapsed index"):
    model.fit(train, epochs=1, verbose=0)
  assert any("collapsed index" in r.getMessage() for r in caplog.records)


def test_public_evaluate_has_the_cli_keys_and_clear_errors(world):
  from retrieval_tf import datasets
  split = datasets.held_out_split(world, num_test_users=40, seed=0)
  model = _small(world.num_items, warm_start_steps=10)
  model.compile(optimizer=keras.optimizers.Adagrad(0.05))
  model.fit(poeem_tf.training_dataset(split.train, batch_size=64,
                                      history_length=L,
                                      num_items=world.num_items,
                                      num_negatives=5), epochs=3, verbose=0)
  metrics = poeem_tf.evaluate(model, split, world, history_length=L,
                             nprobe=8)
  for key in ("recall@100", "precision@100", "recall@10", "adc_recall@100",
              "exact_recall@100", "popular_recall@100", "fresh_recall@100",
              "scanned", "coarse_used", "codes_never_stored"):
    assert key in metrics, key
  assert 0.0 < metrics["recall@100"] <= 1.0
  # One list of ~25 items cannot fill a top-100: the padding is warned about.
  with pytest.warns(RuntimeWarning, match="fewer than 100 items"):
    poeem_tf.evaluate(model, split, world, history_length=L, nprobe=1)
  with pytest.raises(ValueError, match="nprobe"):
    poeem_tf.evaluate(model, split, world, history_length=L, nprobe=99)
  with pytest.raises(ValueError, match="num_items"):
    poeem_tf.training_dataset(split.train, batch_size=8, num_negatives=3)
  with pytest.raises(ValueError, match="warm_start_steps"):
    _small(world.num_items, warm_start_steps=-1)
