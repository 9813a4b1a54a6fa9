"""DPSR's servable with an IVF-PQ index: with every list probed and every
item re-ranked it answers as the exact servable does; with few lists probed
its answers stay valid; it passes the checker; bad index options (export
arguments and `python -m dpsr_tf.train` flags) fail with a message."""

import functools
import json
import os

import numpy as np
import pytest

from conftest import run_module
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.index import default_list_scan_from
from retrieval_tf.serving import check as check_lib
from retrieval_tf.serving.fanout import InProcessShard
from retrieval_tf.text import Tokenizer, padded_ids

from dpsr_tf import data as data_lib
from dpsr_tf.model import DPSRModel, all_item_embeddings
from dpsr_tf.servable import export_dpsr

LISTS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tf.random.set_seed(0)
  task = data_lib.load_task(
      "synthetic", synthetic_config=synthetic.SyntheticConfig.scaled(
          300, num_users=100, seed=0))
  tok = Tokenizer(num_buckets=4096)
  titles = padded_ids(tok, task.item_text)
  model = DPSRModel(task.num_items, titles.shape[1], task.item_feature_sizes,
                    tokenizer=tok.get_config(), num_heads=2, token_dim=16,
                    output_dim=16, hidden_units=(32,), num_negatives=31)
  model.set_item_tables(titles, task.item_columns)
  model.compile(optimizer=keras.optimizers.Adagrad(0.1))
  ds = tf.data.Dataset.from_tensor_slices(
      {"query": task.train["query"].astype(str),
       "item_id": task.train["item_id"]}
  ).shuffle(4096, seed=0).repeat().batch(32, drop_remainder=True)
  ds = ds.map(lambda r: {"item_id": r["item_id"],
                         "query_tokens": tok(r["query"])})
  model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)
  vectors = all_item_embeddings(model)
  ids = [str(i) for i in task.item_ids]
  root = tmp_path_factory.mktemp("dpsr_index")
  export = functools.partial(export_dpsr, model, item_ids=ids,
                             item_vectors=vectors, max_k=100)
  paths = {
      "exact": export(str(root / "exact"))[0],
      # Every list probed, every item re-scored exactly: an exact search.
      "full": export(str(root / "full"), index="ivfpq", num_lists=LISTS,
                     num_subspaces=4, nprobe=LISTS, rerank=len(ids))[0],
      # k up to every item, so that a request can ask for more than the
      # probed lists hold whatever the (CPU-nondeterministic) training
      # made of the lists' sizes.
      "one_list": export(str(root / "one"), index="ivfpq", num_lists=LISTS,
                         num_subspaces=4, nprobe=1, rerank=0,
                         max_k=len(ids))[0]}
  return dict(task=task, model=model, vectors=vectors, ids=ids,
              paths=paths, export=export, root=root)


def _request(task, k, rows=np.arange(24)):
  return {"query": [str(q) for q in task.test["query"][rows]],
          "k": [k] * len(rows)}


@pytest.mark.parametrize("k", [1, 20, 100])
def test_full_probe_and_rerank_equals_the_exact_servable(setup, k):
  request = _request(setup["task"], k)
  exact = InProcessShard(setup["paths"]["exact"])(request)
  ivfpq = InProcessShard(setup["paths"]["full"])(request)
  np.testing.assert_array_equal(ivfpq["item_ids"], exact["item_ids"])
  np.testing.assert_allclose(ivfpq["scores"], exact["scores"], rtol=1e-5,
                             atol=1e-6)
  assert np.isfinite(exact["scores"]).all()


@pytest.mark.parametrize("scan_dtype", ["float32", "bfloat16"])
def test_ivf_flat_probing_every_list_equals_the_exact_servable(setup,
                                                               scan_dtype):
  # DPSR's export builds every kind build_index knows (it once served
  # brute force when asked for ivf_flat).
  path = setup["export"](str(setup["root"] / f"flat_{scan_dtype}"),
                         index="ivf_flat", num_lists=LISTS, nprobe=LISTS,
                         scan_dtype=scan_dtype)[0]
  with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
    card = json.load(f)["index"]
  assert (card["type"], card["scan_dtype"]) == ("IVFFlatIndex", scan_dtype)
  request = _request(setup["task"], 20)
  exact = InProcessShard(setup["paths"]["exact"])(request)
  flat = InProcessShard(path)(request)
  np.testing.assert_array_equal(flat["item_ids"], exact["item_ids"])
  np.testing.assert_allclose(flat["scores"], exact["scores"], rtol=1e-4,
                             atol=1e-5)
  assert check_lib.check(path)["checks"] == ["ops", "load", "cli", "rest"]


def test_one_probed_list_gives_valid_unique_ids(setup):
  task, ids = setup["task"], set(setup["ids"])
  one = InProcessShard(setup["paths"]["one_list"])
  answer = one(_request(task, 10))
  # 2 heads x 1 list of ~300 / 8 items: at least 10 candidates a row.
  assert answer["item_ids"].shape == (24, 10)
  for row, scores in zip(answer["item_ids"], answer["scores"]):
    row = [i.decode() for i in row]
    assert set(row) <= ids and len(set(row)) == len(row)
    assert np.isfinite(scores).all() and (np.diff(scores) <= 1e-6).all()
  # The exact scores of what it found: <= the exact servable's k-th best.
  exact = InProcessShard(setup["paths"]["exact"])(_request(task, 10))
  assert (answer["scores"][:, 0] <= exact["scores"][:, 0] + 1e-5).all()
  # Asking for every item: 2 of the 8 lists hold fewer, the rest is
  # padding.
  answer = one(_request(task, len(ids)))
  found = answer["item_ids"] != b""
  assert found[:, 0].all() and not found.all()
  assert (found == np.isfinite(answer["scores"])).all()
  for row, mask in zip(answer["item_ids"], found):
    kept = [i.decode() for i in row[mask]]
    assert mask[:len(kept)].all()  # padding only at the tail
    assert set(kept) <= ids and len(set(kept)) == len(kept)


def test_model_card_records_the_index(setup):
  def card(path):
    with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
      return json.load(f)["index"]
  exact, full = card(setup["paths"]["exact"]), card(setup["paths"]["full"])
  assert exact["type"] == "BruteForceIndex"
  assert full["type"] == "IVFPQIndex"
  assert (full["num_lists"], full["nprobe"], full["num_subspaces"],
          full["rerank"]) == (LISTS, LISTS, 4, len(setup["ids"]))
  # The scan switch is the index's default for its size (one rule for
  # every caller, no per-servable override).
  assert full["list_scan_from"] == default_list_scan_from(
      full["num_items"], LISTS)


def test_ivfpq_export_passes_the_checker(setup):
  report = check_lib.check(setup["paths"]["one_list"])
  assert report["checks"] == ["ops", "load", "cli", "rest"]


def test_sharded_ivfpq_export(setup):
  # rerank above a shard's 150 items re-scores all of them.
  paths = setup["export"](str(setup["root"] / "sharded"), num_shards=2,
                          index="ivfpq", num_lists=4, nprobe=4,
                          rerank=1000)
  assert len(paths) == 2
  answer = InProcessShard(paths[1])(_request(setup["task"], 5))
  exact = InProcessShard(setup["paths"]["exact"])(_request(setup["task"], 5))
  # Shard 1 holds the second half of the items; its best is found exactly.
  second = set(setup["ids"][150:])
  for row, best in zip(answer["item_ids"], exact["item_ids"]):
    assert {i.decode() for i in row} <= second
    if best[0].decode() in second:
      assert row[0] == best[0]


@pytest.mark.parametrize("options, message", [
    ({"index": "hnsw"}, "index must be one of"),
    ({"nprobe": 4}, "only apply to index=ivfpq"),
    ({"index": "ivfpq", "num_subspaces": 5}, "must divide"),
    ({"index": "ivfpq", "num_lists": 4, "nprobe": 8}, "nprobe=8 must be <="),
    ({"index": "ivfpq", "num_lists": 0}, "num_lists must be >= 1"),
    ({"index": "ivfpq", "rerank": -1}, "rerank must be >= 0"),
    ({"index": "ivfpq", "scan_dtype": "bfloat16"},
     "scan_dtype=bfloat16 only applies to index=ivf_flat"),
    ({"index": "ivfpq", "num_lists": 200, "num_shards": 2},
     "num_lists=200 exceeds the 150 items of the smallest of 2 shard"),
])
def test_export_rejects_bad_index_options(setup, options, message):
  with pytest.raises(ValueError, match=message):
    setup["export"](str(setup["root"] / "bad"), **options)
  assert not (setup["root"] / "bad").exists()


@pytest.mark.parametrize("flags, message", [
    (["--nprobe=4"], "--nprobe only apply to --index=ivfpq"),
    (["--index=ivfpq"], "needs --export_dir"),
    (["--index=ivfpq", "--export_dir={tmp}/e", "--num_subspaces=5"],
     "--num_subspaces=5 must divide the embedding size 64"),
    (["--index=ivfpq", "--export_dir={tmp}/e", "--num_lists=4",
      "--nprobe=8"], "--nprobe=8 must be <= --num_lists=4"),
    (["--index=ivfpq", "--export_dir={tmp}/e", "--rerank=-1"],
     "--rerank must be >= 0"),
    (["--scan_dtype=bfloat16"],
     "--scan_dtype=bfloat16 only applies to --index=ivf_flat"),
    (["--index=annoy"], "index"),
])
def test_train_flag_errors(tmp_path, flags, message):
  proc = run_module("dpsr_tf.train", "--dataset=synthetic",
                    f"--output_dir={tmp_path}/o",
                    *[f.format(tmp=tmp_path) for f in flags])
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
