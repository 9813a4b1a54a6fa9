"""DPSR's one servable and its shards (a DPSR-h model with the lexical
skip): tokenizer identity across the data pipeline, the model and the
loaded servable; servable == in-memory model;
the checker; sharded fan-out == unsharded (in process and over REST); bad
queries and requests; shards of different models refuse to merge."""

import http.server
import json
import threading

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.serving import check as check_lib
from retrieval_tf.serving.fanout import (FanoutClient, InProcessShard,
                                         MergeError, RestShard, merge_answers)
from retrieval_tf.text import Tokenizer, padded_ids

from dpsr_tf import data as data_lib
from dpsr_tf import evaluation
from dpsr_tf.evaluation import ModelScorer
from dpsr_tf.model import DPSRModel, all_item_embeddings
from dpsr_tf.servable import export_dpsr

K = 20
TEXTS = ["red wireless mouse", "Red  WIRELESS-mouse!!", "", "   ", "ＡＰＰＬＥ",
         "x" * 10_000, "苹果 手机", "café \ufffd bass"]


def _train(model, task, steps, seed):
  tok = Tokenizer.from_config(model.tokenizer_config)
  rows = {k: task.train[k] for k in ("item_id", "history", "user_gender",
                                     "user_age", "user_power")}
  rows["query"] = task.train["query"].astype(str)
  ds = tf.data.Dataset.from_tensor_slices(rows).shuffle(
      4096, seed=seed).repeat().batch(32, drop_remainder=True)
  ds = ds.map(lambda r: dict({k: v for k, v in r.items() if k != "query"},
                             query_tokens=tok(r["query"])))
  model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tf.random.set_seed(0)
  task = data_lib.load_task(
      "synthetic", synthetic_config=synthetic.SyntheticConfig.scaled(
          300, num_users=300, seed=0), history_length=5)
  tok = Tokenizer(num_buckets=4096)
  titles = padded_ids(tok, task.item_text)
  model = DPSRModel(task.num_items, titles.shape[1], task.item_feature_sizes,
                    tokenizer=tok.get_config(), num_heads=2, token_dim=16,
                    output_dim=16, hidden_units=(32,), num_negatives=31,
                    personalization="history",
                    user_feature_sizes=task.user_feature_sizes,
                    lexical_skip=True)  # the default model: test_dpsr_index
  model.set_item_tables(titles, task.item_columns)
  model.compile(optimizer=keras.optimizers.Adagrad(0.1))
  _train(model, task, 20, 0)
  vectors = all_item_embeddings(model)
  ids = [str(i) for i in task.item_ids]
  root = tmp_path_factory.mktemp("dpsr")
  full = export_dpsr(model, str(root / "full"), ids, vectors,
                     task.user_vocabularies, max_k=100)[0]
  shards = export_dpsr(model, str(root / "sharded"), ids, vectors,
                       task.user_vocabularies, num_shards=2, max_k=100)
  weights = model.get_weights()
  _train(model, task, 2, 1)  # another model: the weights moved
  other = export_dpsr(model, str(root / "other"), ids,
                      all_item_embeddings(model), task.user_vocabularies,
                      num_shards=2, max_k=100, only_shards=[1])
  model.set_weights(weights)
  return dict(task=task, model=model, vectors=vectors, full=full,
              shards=[InProcessShard(p) for p in shards],
              other=InProcessShard(other[0]), shard_paths=shards, root=root)


@pytest.fixture(scope="module")
def serve(setup):
  return InProcessShard(setup["full"])


def _request(task, rows, k=K):
  test = task.test
  history = test["history"][rows]
  return {
      "query": list(test["query"][rows].astype(str)),
      "user_gender": [task.user_vocabularies["gender"][v]
                      for v in test["user_gender"][rows]],
      "user_age": [task.user_vocabularies["age"][v]
                   for v in test["user_age"][rows]],
      "user_power": [task.user_vocabularies["power"][v]
                     for v in test["user_power"][rows]],
      "history": [[str(task.item_ids[i]) if i >= 0 else "" for i in row]
                  for row in history],
      "k": [k] * len(history)}


def test_tokenizer_identical_in_pipeline_model_and_servable(setup):
  model = setup["model"]
  pipeline_tok = Tokenizer.from_config(model.tokenizer_config)
  ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(3).map(pipeline_tok)
  from_pipeline = [row for batch in ds for row in batch.to_list()]
  from_model = tf.function(model.tokenizer)(tf.constant(TEXTS)).to_list()
  loaded = InProcessShard(setup["full"], "tokenize")
  out = loaded({"query": TEXTS})
  from_servable = [list(row[:n]) for row, n in zip(
      out["token_ids"], out["num_tokens"])]
  assert from_pipeline == from_model == from_servable
  assert from_model[0] == from_model[1] and from_model[2] == []


def test_servable_equals_in_memory_model(setup, serve):
  task, model = setup["task"], setup["model"]
  rows = np.arange(12)
  answer = serve(_request(task, rows))
  scorer = ModelScorer(model, setup["vectors"])
  test_rows = {k: v[rows] for k, v in task.test.items()}
  expected = scorer.retrieve(test_rows, K)
  got = np.vectorize(lambda b: int(b.decode()))(answer["item_ids"])
  np.testing.assert_array_equal(got, task.item_ids[expected].astype(int))
  heads = scorer.heads(test_rows).numpy()
  best = np.einsum("bmd,bkd->bkm", heads,
                   setup["vectors"][expected]).max(-1)
  np.testing.assert_allclose(answer["scores"], best, atol=1e-5)


def test_servable_passes_the_checker(setup):
  report = check_lib.check(setup["full"])
  assert report["checks"] == ["ops", "load", "cli", "rest"]


def test_sharded_in_process_equals_unsharded(setup, serve):
  request = _request(setup["task"], np.arange(16))
  expected = serve(request)
  client = FanoutClient(list(reversed(setup["shards"])))
  merged = client(request)
  np.testing.assert_array_equal(
      merged["item_ids"], np.vectorize(bytes.decode, otypes=[object])(
          expected["item_ids"]))
  np.testing.assert_allclose(merged["scores"], expected["scores"], atol=1e-6)
  client.close()


class _FakeTFServing(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict API in front of in-process shards."""
  shards = {}

  def do_POST(self):  # noqa: N802
    name, verb = self.path.rsplit("/", 1)[-1].split(":")
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    assert verb == "predict" and body["signature_name"] == "serving_default"
    out = self.shards[name](body["inputs"])
    payload = {"outputs": {k: (np.vectorize(bytes.decode, otypes=[object])(
        v) if v.dtype == object else v).tolist() for k, v in out.items()}}
    data = json.dumps(payload).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


def test_sharded_rest_equals_unsharded(setup, serve):
  _FakeTFServing.shards = {f"shard{i}": shard
                           for i, shard in enumerate(setup["shards"])}
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeTFServing)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    base = f"http://127.0.0.1:{server.server_address[1]}/v1/models"
    client = FanoutClient([RestShard(f"{base}/shard{i}") for i in range(2)])
    request = _request(setup["task"], np.arange(5, 13))
    merged = client(request)
    expected = serve(request)
    np.testing.assert_array_equal(
        merged["item_ids"], np.vectorize(bytes.decode, otypes=[object])(
            expected["item_ids"]))
    np.testing.assert_allclose(merged["scores"], expected["scores"],
                               atol=1e-5)
    client.close()
  finally:
    server.shutdown()


def test_shards_of_different_models_refuse_to_merge(setup):
  request = _request(setup["task"], np.arange(3))
  with pytest.raises(MergeError, match="different models"):
    FanoutClient([setup["shards"][0], setup["other"]])(request)
  answers = [shard(request) for shard in setup["shards"]]
  with pytest.raises(MergeError, match="exactly once"):
    merge_answers(answers[:1], K)
  with pytest.raises(MergeError, match="exactly once"):
    merge_answers(answers + [answers[1]], K)


def test_bad_queries_get_defined_answers(setup, serve):
  task = setup["task"]
  request = _request(task, np.zeros(len(TEXTS), int))
  request["query"] = TEXTS
  request["user_gender"][0] = "no-such-gender"
  request["history"][1] = ["unknown-item", ""] + request["history"][1][2:]
  answer = serve(request)
  assert answer["item_ids"].shape == (len(TEXTS), K)
  assert np.isfinite(answer["scores"]).all()
  assert all(x for x in answer["item_ids"].ravel())
  assert (np.diff(answer["scores"], axis=1) <= 1e-6).all()  # sorted


@pytest.mark.parametrize("change, message", [
    (dict(k=[101, 101]), "k must be <="),
    (dict(k=[0, 0]), "k must be >= 1"),
    (dict(k=[5, 6]), "the same for every row"),
])
def test_bad_requests_fail_with_a_message(setup, serve, change, message):
  request = dict(_request(setup["task"], np.arange(2)), **change)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    serve(request)


def test_empty_batch_fails_with_a_message(setup, serve):
  request = {k: [] for k in _request(setup["task"], np.arange(1))}
  request["history"] = np.zeros((0, 1), object)
  with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
    serve(request)


def test_export_rejects_bad_arguments(setup):
  model, vectors = setup["model"], setup["vectors"]
  ids = [str(i) for i in setup["task"].item_ids]
  with pytest.raises(ValueError, match="num_shards"):
    export_dpsr(model, str(setup["root"] / "x"), ids, vectors,
                setup["task"].user_vocabularies, num_shards=0)
  with pytest.raises(ValueError, match="differ"):
    export_dpsr(model, str(setup["root"] / "x"), ids, vectors[:-1],
                setup["task"].user_vocabularies)
  with pytest.raises(ValueError, match="user vocabularies"):
    export_dpsr(model, str(setup["root"] / "x"), ids, vectors, {})


def test_head_usage_counts_each_positives_best_head(setup):
  task, model = setup["task"], setup["model"]
  scorer = ModelScorer(model, setup["vectors"])
  test_rows = {k: v[:40] for k, v in task.test.items()}
  usage = evaluation.head_usage(scorer, test_rows, batch_size=16)
  heads = scorer.heads(test_rows).numpy()
  best = np.einsum("bmd,bd->bm", heads,
                   setup["vectors"][test_rows["item_id"]]).argmax(1)
  assert sorted(usage) == [f"head_win_share_{i}"
                           for i in range(model.num_heads)]
  for i in range(model.num_heads):
    assert usage[f"head_win_share_{i}"] == pytest.approx(np.mean(best == i))
  assert sum(usage.values()) == pytest.approx(1.0)


def test_token_table_scorer_equals_a_numpy_cosine_of_mean_embeddings(setup):
  task, model = setup["task"], setup["model"]
  table = model.token_embedding.embeddings.numpy()

  def mean_unit(ids):
    ids = np.asarray(ids)
    valid = ids >= 0
    total = (table[np.where(valid, ids, 0)] * valid[..., None]).sum(1)
    mean = total / np.maximum(valid.sum(1), 1)[:, None]
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True),
                             1e-12)

  queries = np.asarray(list(task.test["query"][:6]) + [""], object)
  query_ids = model.tokenizer(queries.astype(str)).to_tensor(
      default_value=-1).numpy()
  items = np.arange(7 * 5).reshape(7, 5) % task.num_items
  expected = np.einsum("bd,bcd->bc", mean_unit(query_ids),
                       mean_unit(model.item_title.numpy())[items])
  got = evaluation.TokenTableScorer(model)({"query": queries}, items)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.all(got[-1] == 0)  # an empty query scores 0, not NaN
  out = evaluation.token_table_metrics(model, task, num_random=64)
  assert sorted(out) == ["token_table_auc", "token_table_mrr",
                         "token_table_top1", "token_table_top10"]
  assert 0 <= out["token_table_top1"] <= out["token_table_top10"] <= 1
