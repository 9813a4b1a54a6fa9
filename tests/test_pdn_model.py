"""PDNModel, the I2I index and the servable on the small synthetic world:
shapes, training, leaving the user's own pair out of c_ji, serialization,
ablations, and export -> check -> servable equals in-memory retrieval with
no Bias Net (and no SimNet or training tables) inside."""

import dataclasses

import numpy as np
import pytest

from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.data.samplers import UniformSampler
from retrieval_tf.datasets import registry
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Vocabulary
from retrieval_tf.export import latest_version_dir
from retrieval_tf.serving import check as check_lib

from pdn_tf.i2i_index import build_i2i_index
from pdn_tf.model import PDNModel, build_pdn_model
from pdn_tf.retrieval import PDNRetriever, retrieve_users
from pdn_tf import servable as servable_lib

HISTORY = 10


@pytest.fixture(scope="module")
def world():
  dataset = registry.leave_one_out(registry.load_rec_dataset("synthetic"),
                                   seed=0).dataset
  cooc = cooccurrence_counts(dataset.interactions, dataset.num_items,
                             vocabulary=dataset.items)
  return dataset, cooc


def _batches(dataset, negatives=3, batch_size=256):
  return pipeline.training_dataset(
      dataset.interactions, batch_size=batch_size, history_length=HISTORY,
      user_features=dataset.user_features, num_users=dataset.num_users,
      num_items=dataset.num_items, repeat=True, drop_remainder=True,
      negatives=(UniformSampler(dataset.num_items), negatives))


@pytest.fixture(scope="module")
def trained(world):
  dataset, cooc = world
  keras.utils.set_random_seed(0)
  model = build_pdn_model(dataset, cooc, embedding_dim=8,
                          trigger_units=[16], similarity_units=[16],
                          direct_dim=8, num_negatives=3)
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  history = model.fit(_batches(dataset), steps_per_epoch=40, epochs=1,
                      verbose=0)
  return model, history.history["loss"]


def test_shapes_and_finite_training(world, trained):
  dataset, _ = world
  model, losses = trained
  assert np.isfinite(losses).all()
  batch = next(iter(_batches(dataset, negatives=3, batch_size=16)))
  candidates = model.training_candidates(batch)
  out = model.score(batch, candidates, training=True)
  assert out["relevance"].shape == (16, 4)
  assert out["trigger"].shape == (16, HISTORY)
  assert out["similarity"].shape == out["paths"].shape == (16, 4, HISTORY)
  assert out["direct"].shape == (16, 4)
  assert np.all(out["relevance"].numpy() >= 0)
  # the Bias Net joins only in training (Eq. 12 vs serving)
  served = model.score(batch, candidates, training=False)["relevance"]
  assert np.all(out["relevance"].numpy() > served.numpy())


def test_own_pair_is_left_out_of_the_cooccurrence_field(world, trained):
  dataset, cooc = world
  model, _ = trained
  log = dataset.interactions.sorted()
  user = int(log.user[0])
  items = log.item[log.user == user][:2]
  full = int(cooc.lookup(items[:1], items[1:])[0])
  assert full >= 1
  assert bool(model.pairs.seen(tf.constant([user]),
                               tf.constant([[items[1]]]))[0, 0])
  # what the model feeds SimNet: the count without this user's own pair
  counts = model.pairs.cooccurrence(items[0], items[1]).numpy()
  assert counts == full


def test_config_round_trip_restores_the_model(world, trained, tmp_path):
  dataset, _ = world
  model, _ = trained
  batch = next(iter(_batches(dataset, batch_size=8)))
  path = str(tmp_path / "weights")
  model.save_weights(path)
  restored = PDNModel.from_config(model.get_config())
  restored(batch)
  restored.load_weights(path)
  np.testing.assert_allclose(restored(batch).numpy(), model(batch).numpy(),
                             rtol=1e-5)


def test_ablations_drop_their_nets(world):
  dataset, cooc = world
  model = build_pdn_model(dataset, cooc, embedding_dim=4, trigger_units=[4],
                          similarity_units=[4], use_direct=False,
                          use_bias=False)
  batch = next(iter(_batches(dataset, batch_size=8)))
  out = model.score(batch, model.training_candidates(batch), training=True)
  assert out["direct"] is None
  names = [layer.name for layer in model.layers]
  assert "trigger_net" in names and "similarity_net" in names
  for absent in ("direct_net", "direct_user_field", "direct_item_field",
                 "bias_net", "bias_field"):
    assert absent not in names


def test_direct_item_tower_without_the_item_id(world):
  """--nodirect_item_id: q_i depends on the item's features only, so items
  with identical features get identical Direct Net vectors."""
  dataset, cooc = world
  model = build_pdn_model(dataset, cooc, embedding_dim=4, trigger_units=[4],
                          similarity_units=[4], direct_item_id=False)
  assert "id" not in model.direct_item_field.sizes
  assert "id" in model.item_field.sizes  # SimNet / TrigNet keep it
  columns = [dataset.item_features[k].reshape(dataset.num_items, -1)
             for k in sorted(model.direct_item_field.sizes)]
  rows = np.concatenate(columns, axis=1)
  _, group, counts = np.unique(rows, axis=0, return_inverse=True,
                               return_counts=True)
  twins = np.flatnonzero(group.ravel() == np.flatnonzero(counts > 1)[0])
  assert len(twins) >= 2
  vectors = model.direct_item_vector(tf.constant(twins)).numpy()
  np.testing.assert_allclose(vectors[0], vectors[1], rtol=1e-6)
  others = model.direct_item_vector(tf.range(20)).numpy()
  assert np.ptp(others, axis=0).max() > 0  # features still matter
  restored = PDNModel.from_config(model.get_config())
  assert "id" not in restored.direct_item_field.sizes
  featureless = dataclasses.replace(dataset, item_features={})
  with pytest.raises(DataError, match="none besides the id"):
    build_pdn_model(featureless, cooc, direct_item_id=False)


def test_bad_tables_fail_clearly(world):
  dataset, cooc = world
  other = Vocabulary([f"x{i}" for i in range(dataset.num_items)], "item")
  foreign = cooccurrence_counts(dataset.interactions, dataset.num_items,
                                vocabulary=other)
  with pytest.raises(DataError, match="different item vocabulary"):
    build_pdn_model(dataset, foreign)
  windowed = cooccurrence_counts(dataset.interactions, dataset.num_items,
                                 window=3)
  with pytest.raises(DataError, match="window=None"):
    build_pdn_model(dataset, windowed)
  model = build_pdn_model(dataset, cooc, embedding_dim=4, trigger_units=[4],
                          similarity_units=[4])
  bad = dataset.interactions.take(np.arange(10))
  bad.item[0] = dataset.num_items + 5
  with pytest.raises(DataError, match="outside the vocabulary"):
    model.set_tables(dataset.item_features, cooc, bad)


@pytest.fixture(scope="module")
def exported(world, trained, tmp_path_factory):
  dataset, cooc = world
  model, _ = trained
  index = build_i2i_index(model, cooc, k=20, num_cooccurring=40,
                          num_neighbors=20)
  retriever = PDNRetriever(model, index, HISTORY, num_triggers=5,
                           pool_size=100)
  path = servable_lib.export_pdn(
      retriever, str(tmp_path_factory.mktemp("pdn_export")), dataset)
  return index, retriever, path


def test_i2i_index_is_sorted_simnet_topk(world, trained, exported):
  dataset, _ = world
  model, _ = trained
  index, _, _ = exported
  assert index.items.shape == (dataset.num_items, 20)
  finite = np.isfinite(index.scores)
  assert np.all(np.diff(np.where(finite, index.scores, -1e30), axis=1) <= 0)
  assert np.all((index.items >= 0) == finite)
  rows = np.arange(dataset.num_items)[:, None]
  assert not np.any(index.items == rows)
  # each kept score is SimNet's s_ji with the full co-occurrence count
  j = np.repeat(np.arange(5), 3)
  i = index.items[:5, :3].reshape(-1)
  counts = model.pairs.cooccurrence(j, i)
  s = model.pair_similarity(j, i, counts, model.pairs.popularity(j),
                            model.pairs.popularity(i)).numpy()
  np.testing.assert_allclose(s, index.scores[:5, :3].reshape(-1), rtol=1e-4,
                             atol=1e-5)


def test_export_check_and_servable_equals_in_memory(world, exported):
  dataset, _ = world
  _, retriever, path = exported
  report = check_lib.check(path)
  assert report["checks"] == ["ops", "load", "cli", "rest"]
  users = np.arange(6)
  request = servable_lib.raw_requests(dataset, users, HISTORY,
                                      with_rating=False)
  # cold start: an unknown user with an unknown / empty history
  request["user_id"][4] = "no-such-user"
  request["history"][4] = ["no-such-item"] + [""] * (
      len(request["history"][4]) - 1)
  request["history"][5] = [""] * len(request["history"][5])
  loaded = tf.saved_model.load(latest_version_dir(path))
  inputs = {k: tf.constant(v) for k, v in request.items()}
  served = loaded.signatures["serving_default"](
      **inputs, k=tf.fill([len(users)], 30))
  # the same request through the in-memory retriever (index level)
  to_index = lambda vocab, values: np.array(
      [[vocab.index(v) if v in vocab else -1 for v in row] for row in values])
  features = {
      "user_id": to_index(dataset.users, [request["user_id"]])[0],
      "history": to_index(dataset.items, request["history"])}
  for field in dataset.user_features:
    features[f"user_{field}"] = to_index(
        dataset.feature_vocabularies[field], [request[f"user_{field}"]])[0]
  memory = retriever.retrieve(
      {k: tf.constant(v, tf.int32) for k, v in features.items()}, 30)
  want = dataset.items.decode(memory["ids"].numpy())
  np.testing.assert_array_equal(served["item_ids"].numpy().astype(str), want)
  np.testing.assert_allclose(served["scores"].numpy(),
                             memory["scores"].numpy(), rtol=1e-5)
  # history items are never returned; the empty-history user gets results
  for row, history in zip(want, request["history"]):
    assert not set(row) & set(history)
    assert all(row)
  # the servable answers the same as the evaluation path (full histories)
  top = retrieve_users(retriever, dataset, users[:4], 30)
  assert top.shape == (4, 30)


def test_servable_holds_no_bias_net_simnet_or_training_tables(exported):
  _, _, path = exported
  names = [name for name, _ in tf.train.list_variables(
      latest_version_dir(path) + "/variables/variables")]
  joined = " ".join(names)
  assert "trigger_net" in joined and "index_items" in joined
  for absent in ("bias_net", "bias_field", "similarity_net", "pair_keys",
                 "event_keys", "cooccurrence_field"):
    assert absent not in joined, absent


def test_servable_rejects_bad_requests(world, exported):
  dataset, _, = world
  _, _, path = exported
  loaded = tf.saved_model.load(latest_version_dir(path))
  request = servable_lib.raw_requests(dataset, [0, 1], HISTORY,
                                      with_rating=False)
  inputs = {k: tf.constant(v) for k, v in request.items()}
  serve = loaded.signatures["serving_default"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="k must be <="):
    serve(**inputs, k=tf.constant([101, 101]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="same for every"):
    serve(**inputs, k=tf.constant([5, 6]))
