"""The two-tower servable: export -> check -> same answers as in memory."""

import json
import subprocess
import sys

import numpy as np
import pytest

from retrieval_tf import evaluation
from retrieval_tf.compat import tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.index import build_index
from retrieval_tf.models.two_tower_servable import (export_two_tower,
                                                    raw_requests)
from retrieval_tf.serving import check

L = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=3, num_items=300, num_users=120))
  data = world.to_rec_dataset()
  model = TwoTowerModel(data.num_users, data.num_items,
                        {f: len(data.feature_vocabularies[f])
                         for f in data.user_features},
                        embedding_dim=8, output_dim=8, hidden_units=[16])
  items = model.item_embedding({"item_id": np.arange(data.num_items)})
  path = export_two_tower(model, str(tmp_path_factory.mktemp("export")),
                          data, items.numpy(), history_length=L, max_k=50)
  return data, model, items.numpy(), path


def _request(data, users, histories):
  request = {"user_id": [data.users.ids[u] for u in users],
             "history": [[data.items.ids[i] for i in h] for h in histories]}
  for f in data.user_features:
    vocab = data.feature_vocabularies[f]
    request[f"user_{f}"] = [vocab.ids[data.user_features[f][u]]
                            for u in users]
  return request


def _serve(path, request, k):
  fn = tf.saved_model.load(path).signatures["serving_default"]
  out = fn(**{n: tf.constant(v) for n, v in request.items()},
           k=tf.constant(k, tf.int32))
  return out["item_ids"].numpy(), out["scores"].numpy()


def test_servable_passes_the_checker(exported):
  report = check.check(exported[3])
  assert report["checks"] == ["ops", "load", "cli", "rest"]
  check.check(exported[3], signature="query_embedding")


def test_servable_equals_in_memory_top_k(exported):
  data, model, items, path = exported
  users = [0, 5, 7]
  histories = [[1, 2, 3, 4, 5], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
  ids, scores = _serve(path, _request(data, users, histories), [10] * 3)
  features = {"user_id": np.array(users), "history": np.array(histories),
              "history_mask": np.ones((3, L), bool)}
  for f in data.user_features:
    features[f"user_{f}"] = data.user_features[f][users]
  vectors = model.user_embedding(features).numpy()
  expected = evaluation.top_k_items(vectors, items, 10)
  expected_scores = np.take_along_axis(vectors @ items.T, expected, 1)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
  # Ids must agree wherever the order is not a float32 near-tie.
  gaps = np.diff(expected_scores, axis=1)
  clear = np.ones_like(expected, bool)
  clear[:, :-1] &= np.abs(gaps) > 1e-5
  clear[:, 1:] &= np.abs(gaps) > 1e-5
  got = np.array([[x.decode() for x in row] for row in ids])
  want = data.items.decode(expected)
  np.testing.assert_array_equal(got[clear], want[clear])
  assert clear.mean() > 0.5


def test_unknown_ids_take_the_oov_path(exported):
  data, _, _, path = exported
  request = {"user_id": ["no-such-user"], "history": [["nope", "", ""]]}
  for f in data.user_features:
    request[f"user_{f}"] = ["??"]
  ids, scores = _serve(path, request, [5])
  assert ids.shape == (1, 5) and np.isfinite(scores).all()
  assert all(x.decode() in data.items for x in ids[0])


@pytest.mark.parametrize("k, message", [
    ([0], "k must be >= 1"), ([51], "k must be <= 50"),
    ([5, 6], "same for every row")])
def test_bad_k_is_a_clear_error(exported, k, message):
  data, _, _, path = exported
  rows = len(k)
  request = _request(data, [0] * rows, [[1, 2, 3, 4, 5]] * rows)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    _serve(path, request, k)


def test_empty_batch_and_wrong_dtype_are_clear_errors(exported):
  data, _, _, path = exported
  request = {n: np.zeros((0,) if n != "history" else (0, 3), object)
             for n in _request(data, [0], [[1]])}
  request = {n: v.astype(str) for n, v in request.items()}
  with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
    _serve(path, request, np.zeros(0, np.int32))
  good = _request(data, [0], [[1, 2]])
  fn = tf.saved_model.load(path).signatures["serving_default"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="expected to be a int32 tensor"):
    fn(**{n: tf.constant(v) for n, v in good.items()},
       k=tf.constant([1.5]))


def test_a_field_with_the_wrong_number_of_rows_is_named(exported):
  data, _, _, path = exported
  request = _request(data, [0, 1], [[1, 2], [3, 4]])
  field = f"user_{next(iter(data.user_features))}"
  request[field] = request[field][:1]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"{field} must have one row per request row"):
    _serve(path, request, [5, 5])


def test_query_cli_prints_titles(exported):
  data, _, _, path = exported
  request = _request(data, [0], [[1, 2, 3]])
  request["k"] = [3]
  import json  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, "-m", "retrieval_tf.query", path,
                         "--json", json.dumps(request)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip().startswith("1.")]
  assert lines and any(t in lines[0] for t in data.item_titles)
  bad = subprocess.run([sys.executable, "-m", "retrieval_tf.query", path,
                        "--json", json.dumps(dict(request, k=[0]))],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert "k=0 is outside 1..50: k must be >= 1" in bad.stderr


def test_ivfpq_servable_passes_the_checker_and_matches_its_index(
    exported, tmp_path):
  data, model, items, _ = exported
  index = build_index(items, "ivfpq", max_k=50, num_lists=8, rerank=0)
  path = export_two_tower(model, str(tmp_path / "ivfpq"), data, items,
                          history_length=L, max_k=50, index=index)
  check.check(path)
  card = json.loads((tmp_path / "ivfpq" / "1" / "assets.extra" /
                     "model_card.json").read_text())
  assert card["index"]["type"] == "IVFPQIndex"
  assert card["index"]["num_lists"] == 8 and card["index"]["bytes"] > 0
  request = raw_requests(data, [0, 5, 7], L)
  ids, scores = _serve(path, request, [10] * 3)
  loaded = tf.saved_model.load(path).signatures["query_embedding"]
  vectors = loaded(**{n: tf.constant(v) for n, v in request.items()})
  want_scores, want = index(vectors["query_embedding"], 10)
  np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-5,
                             atol=1e-6)
  got = np.array([[x.decode() for x in row] for row in ids])
  np.testing.assert_array_equal(got, data.items.decode(want.numpy()))


def test_raw_requests_are_what_a_client_sends(exported):
  data = exported[0]
  request = raw_requests(data, [0, 3], history_length=4)
  assert request["user_id"] == [str(data.users.ids[0]),
                                str(data.users.ids[3])]
  assert all(len(row) == len(request["history"][0])
             for row in request["history"])
  assert max(len(row) for row in request["history"]) <= 4
  assert set(request) == {"user_id", "history"} | {
      f"user_{f}" for f in data.user_features}
