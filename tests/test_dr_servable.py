"""Deep Retrieval's servable: export -> `retrieval_tf.serving.check` ->
the loaded servable answers exactly like the in-memory model; defined
answers for empty histories and short candidate lists; bad requests."""

import numpy as np
import pytest

from retrieval_tf import data as pipeline
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import registry
from retrieval_tf.models.two_tower_servable import raw_requests
from retrieval_tf.serving import check as check_lib
from dr_tf import em
from dr_tf.layers import NO_SCORE
from dr_tf.model import DeepRetrievalModel
from dr_tf.servable import export_dr

HISTORY = 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  keras.utils.set_random_seed(0)
  dataset = registry.load_rec_dataset("synthetic")
  log = dataset.interactions
  model = DeepRetrievalModel(
      dataset.num_items, num_nodes=8, depth=3, num_paths=2, beam_size=12,
      score_paths=8, embedding_dim=16, gru_units=16, user_dim=16,
      rerank_dim=16, hidden_units=(32,), num_sampled=50)
  counts = np.bincount(log.item, minlength=dataset.num_items)
  model.set_item_counts(counts)
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  data = pipeline.training_dataset(log, batch_size=256,
                                   history_length=HISTORY, repeat=True,
                                   drop_remainder=True)
  callback = em.EMCallback(counts, alpha=0.01, verbose=False)
  model.fit(data, epochs=2, steps_per_epoch=15, callbacks=[callback],
            verbose=0)
  assert len(callback.history) == 3     # the start + two M-steps
  export = tmp_path_factory.mktemp("dr") / "export"
  path = export_dr(model, str(export), dataset, HISTORY, max_k=100)
  return dataset, model, str(export), path


def test_export_passes_the_servable_check(trained):
  _, _, export, _ = trained
  report = check_lib.check(export)
  assert report["checks"] == ["ops", "load", "cli", "rest"]


def _in_memory(model, dataset, request, k):
  index = {str(v): i for i, v in enumerate(dataset.items.ids)}
  ids = np.array([[index.get(x, -1) for x in row] for row in
                  request["history"]], np.int32)[:, -HISTORY:]
  items, scores, count = model.retrieve(tf.constant(ids), ids >= 0,
                                        exclude=tf.constant(ids), k=k)
  names = np.array([str(v) for v in dataset.items.ids] + [""])
  return names[items.numpy()], scores.numpy(), count.numpy()


def test_servable_equals_the_in_memory_model(trained):
  dataset, model, _, path = trained
  serve = tf.saved_model.load(path).signatures["serving_default"]
  request = raw_requests(dataset, list(range(0, 60, 3)), HISTORY,
                         with_user_id=False, with_profile=False)
  request["history"][0] = [""] * len(request["history"][0])   # empty
  request["history"][1][-1] = "no-such-item"                  # unknown id
  k = 25
  out = serve(history=tf.constant(request["history"]),
              k=tf.fill([len(request["history"])], k))
  ids, scores, count = _in_memory(model, dataset, request, k)
  got = out["item_ids"].numpy().astype(str)
  np.testing.assert_array_equal(got, ids)
  np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(out["num_candidates"].numpy(), count)
  assert np.isfinite(out["scores"].numpy()).all()
  # The request's own history never comes back.
  for row, history in zip(got, request["history"]):
    assert not set(row) & (set(history) - {""})


def test_empty_history_has_a_defined_answer(trained):
  dataset, model, _, path = trained
  serve = tf.saved_model.load(path).signatures["serving_default"]
  out = serve(history=tf.constant([["", ""], ["", "unknown"]]),
              k=tf.constant([10, 10]))
  ids = out["item_ids"].numpy()
  assert (ids[0] == ids[1]).all() and (ids[0] != b"").all()
  assert np.isfinite(out["scores"].numpy()).all()
  popular = set(np.argsort(-np.bincount(dataset.interactions.item))[:200])
  index = {str(v).encode(): i for i, v in enumerate(dataset.items.ids)}
  assert any(index[x] in popular for x in ids[0])


def test_short_candidate_lists_are_padded():
  model = DeepRetrievalModel(30, num_nodes=3, depth=2, num_paths=1,
                             beam_size=1, score_paths=0, num_sampled=5,
                             embedding_dim=8, gru_units=8, user_dim=8,
                             rerank_dim=8, hidden_units=(8,))
  items, scores, count = model.retrieve(tf.constant([[1, 2, 3]]), k=20)
  n = int(count.numpy()[0])
  assert n < 20
  assert (items.numpy()[0, n:] == -1).all()
  assert (scores.numpy()[0, n:] == NO_SCORE).all()
  assert (items.numpy()[0, :n] >= 0).all()


@pytest.mark.parametrize("k, message", [
    ([0, 0], "k must be >= 1"),
    ([101, 101], "k must be <= 100"),
    ([5, 6], "k must be the same for every row"),
])
def test_bad_requests_fail_with_a_message(trained, k, message):
  _, _, _, path = trained
  serve = tf.saved_model.load(path).signatures["serving_default"]
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    serve(history=tf.constant([["1"], ["2"]]), k=tf.constant(k))
