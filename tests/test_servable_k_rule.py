"""One rule for k in every servable (docs/serving.md, "k"): `max_k` is fixed
at export (the requested max_k, capped at what the servable can ever
return) and written to the model card; a k outside 1..max_k is refused with
an `InvalidArgumentError` naming k, the range and why; a k inside it gives
exactly k columns, short rows padded with item id "" and score -inf.

Each servable is exported once, untrained and tiny (this checks shapes and
refusals, not quality)."""

import json
import os

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.datasets import synthetic
from retrieval_tf.export import MODEL_CARD
from retrieval_tf.index import build_index
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.models.two_tower_servable import (export_two_tower,
                                                    raw_requests)
from retrieval_tf.serving.fanout import FanoutClient, InProcessShard
from retrieval_tf.text import Tokenizer, padded_ids

from dpsr_tf import data as data_lib
from dpsr_tf.model import DPSRModel
from dpsr_tf.servable import export_dpsr
from dr_tf.model import DeepRetrievalModel
from dr_tf.servable import export_dr
from mgdspr_tf.model import MGDSPRModel
from mgdspr_tf.servable import export_mgdspr
from pdn_tf import servable as pdn_servable
from pdn_tf.i2i_index import build_i2i_index
from pdn_tf.model import build_pdn_model
from pdn_tf.retrieval import PDNRetriever
from poeem_tf.model import PoeemModel
from poeem_tf.servable import export_poeem

L = 4
ROWS = 3


@pytest.fixture(scope="module")
def world():
  """A tiny synthetic shop: 60 items, 40 users."""
  return synthetic.generate(_config(60, 40)).to_rec_dataset()


def _config(num_items, num_users):
  return synthetic.SyntheticConfig(
      seed=1, num_items=num_items, num_users=num_users, num_roots=2,
      mids_per_root=2, leaves_per_mid=2, num_brands=5, num_shops=5)


def _card(path):
  with open(os.path.join(path, MODEL_CARD), encoding="utf-8") as f:
    return json.load(f)


def _served(path, request, max_k, reason, padded):
  """What the tests need of one export: its request rows (without k), the
  expected max_k and its reason, and whether rows at k = max_k are
  padded."""
  return dict(path=path, request=request, max_k=max_k, reason=reason,
              padded=padded,
              fn=tf.saved_model.load(path).signatures["serving_default"])


@pytest.fixture(scope="module")
def two_tower(world, tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = TwoTowerModel(world.num_users, world.num_items,
                        {f: len(world.feature_vocabularies[f])
                         for f in world.user_features},
                        embedding_dim=4, output_dim=4, hidden_units=[8])
  vectors = model.item_embedding(
      {"item_id": np.arange(world.num_items)}).numpy()
  # One of 6 lists probed: a top-60 cannot be filled, rows are padded.
  index = build_index(vectors, "ivfpq", max_k=1000, num_lists=6,
                      num_subspaces=2, nprobe=1, rerank=0)
  path = export_two_tower(model, str(tmp_path_factory.mktemp("tt")), world,
                          vectors, history_length=L, max_k=1000, index=index)
  return _served(path, raw_requests(world, range(ROWS), L), 60,
                 "the catalogue holds 60 items", padded=True)


@pytest.fixture(scope="module")
def poeem(world, tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = PoeemModel(world.num_items, embedding_dim=4, output_dim=4,
                     hidden_units=[8], num_centroids=4, num_subspaces=2,
                     num_codewords=4, warm_start_steps=0)
  model.user_embedding({"history": np.zeros((1, L), np.int32),
                        "history_mask": np.ones((1, L), bool)})
  path = export_poeem(model, str(tmp_path_factory.mktemp("poeem")), world, L,
                      nprobe=1, max_k=25, codes="fresh")
  request = raw_requests(world, range(ROWS), L, with_user_id=False,
                         with_profile=False)
  # One of 4 lists probed: fewer than 25 items for some rows.
  return _served(path, request, 25, "max_k was set to 25 at export (the "
                 "catalogue holds 60 items)", padded=True)


@pytest.fixture(scope="module")
def dr(world, tmp_path_factory):
  keras.utils.set_random_seed(0)
  # One beam over 3 x 3 paths reaches a few of the 60 items: padded rows.
  model = DeepRetrievalModel(world.num_items, num_nodes=3, depth=2,
                             num_paths=1, beam_size=1, score_paths=0,
                             num_sampled=5, embedding_dim=4, gru_units=4,
                             user_dim=4, rerank_dim=4, hidden_units=(4,))
  model.set_item_counts(np.bincount(world.interactions.item,
                                    minlength=world.num_items))
  path = export_dr(model, str(tmp_path_factory.mktemp("dr")), world, L,
                   max_k=1000)
  request = raw_requests(world, range(ROWS), L, with_user_id=False,
                         with_profile=False)
  return _served(path, request, 60, "the catalogue holds 60 items",
                 padded=True)


@pytest.fixture(scope="module")
def pdn(world, tmp_path_factory):
  keras.utils.set_random_seed(0)
  cooc = cooccurrence_counts(world.interactions, world.num_items,
                             vocabulary=world.items)
  model = build_pdn_model(world, cooc, embedding_dim=4, trigger_units=[4],
                          similarity_units=[4], direct_dim=4)
  index = build_i2i_index(model, cooc, k=5, num_cooccurring=10,
                          num_neighbors=5)
  # The pool holds 40 items; a request's history items are never answered,
  # so a top-40 of a user with history is padded.
  retriever = PDNRetriever(model, index, L, num_triggers=2, pool_size=40)
  path = pdn_servable.export_pdn(retriever,
                                 str(tmp_path_factory.mktemp("pdn")), world)
  request = pdn_servable.raw_requests(world, range(ROWS), L,
                                      with_rating=retriever.use_rating)
  return _served(path, request, 40,
                 "the candidate pool (pool_size) holds 40 items", padded=True)


def _dpsr_model():
  task = data_lib.load_task("synthetic", synthetic_config=_config(50, 30))
  tok = Tokenizer(num_buckets=256)
  titles = padded_ids(tok, task.item_text)
  keras.utils.set_random_seed(0)
  model = DPSRModel(task.num_items, titles.shape[1], task.item_feature_sizes,
                    tokenizer=tok.get_config(), num_heads=2, token_dim=4,
                    output_dim=4, hidden_units=(4,), num_negatives=3)
  model.set_item_tables(titles, task.item_columns)
  return task, model


@pytest.fixture(scope="module")
def dpsr_exports(tmp_path_factory):
  task, model = _dpsr_model()
  root = tmp_path_factory.mktemp("dpsr")
  one = export_dpsr(model, str(root / "one"), max_k=1000)[0]
  # Two shards of 25 items, one of 4 IVF lists probed: short rows.
  shards = export_dpsr(model, str(root / "shards"), num_shards=2, max_k=1000,
                       index="ivfpq", num_lists=4, num_subspaces=2, nprobe=1,
                       rerank=0)
  request = {"query": [str(q) for q in task.test["query"][:ROWS]]}
  return task, one, shards, request


@pytest.fixture(scope="module")
def dpsr(dpsr_exports):
  task, one, _, request = dpsr_exports
  assert task.num_items == 50
  return _served(one, request, 50, "the catalogue holds 50 items",
                 padded=False)


@pytest.fixture(scope="module")
def dpsr_shard(dpsr_exports):
  task, _, shards, request = dpsr_exports
  return _served(shards[1], request, 25, "this shard holds 25 items",
                 padded=True)


@pytest.fixture(scope="module")
def mgdspr(tmp_path_factory):
  n = 30
  fields = {"brand": ["apple", "zentek", "kitty"],
            "leaf": ["home/lamp", "computers/mouse", "cats/mouse"]}
  item_fields = np.stack([np.arange(n) % 3, (np.arange(n) // 3) % 3], 1)
  keras.utils.set_random_seed(0)
  model = MGDSPRModel(n, {"brand": 3}, title_length=4, dim=4,
                      num_buckets=64, num_heads=1, max_real=2, max_short=2,
                      max_long=2, num_hard=1)
  model.set_catalogue({"brand": item_fields[:, 0]},
                      [f"{fields['brand'][i % 3]} "
                       f"{fields['leaf'][(i // 3) % 3]}" for i in range(n)])
  path = export_mgdspr(model, str(tmp_path_factory.mktemp("mgdspr")),
                       [f"sku{i}" for i in range(n)], fields, item_fields,
                       max_k=1000)
  # "apple" and "mouse" keep a third of the catalogue or less: padded.
  request = {"query": ["apple", "mouse lamp", "zzz"],
             "history_query": ["", "", ""],
             "real_time": [["sku1"], [""], [""]],
             "short_term": [[""], ["sku2"], [""]],
             "long_term": [[""], [""], ["nope"]],
             "relevance_control": [1, 1, 1]}
  return _served(path, request, n, "the catalogue holds 30 items",
                 padded=True)


SERVABLES = ["two_tower", "poeem", "dr", "pdn", "dpsr", "dpsr_shard",
             "mgdspr"]


def _ask(served, k):
  request = dict(served["request"], k=k if isinstance(k, list)
                 else [k] * ROWS)
  specs = served["fn"].structured_input_signature[1]
  out = served["fn"](**{name: tf.constant(value, spec.dtype)
                        for name, (value, spec) in
                        ((n, (request[n], specs[n])) for n in specs)})
  return out["item_ids"].numpy().astype(str), out["scores"].numpy()


@pytest.mark.parametrize("name", SERVABLES)
def test_max_k_is_in_the_model_card_and_answers_max_k_columns(name, request):
  served = request.getfixturevalue(name)
  max_k = served["max_k"]
  card = _card(served["path"])
  assert (card["max_k"], card["max_k_reason"]) == (max_k, served["reason"])
  ids, scores = _ask(served, max_k)
  assert ids.shape == scores.shape == (ROWS, max_k)
  # Padding: item id "" exactly where the score is -inf, only at the tail.
  padding = ids == ""
  np.testing.assert_array_equal(padding, scores == -np.inf)
  assert not np.isnan(scores).any()
  assert (np.diff(padding.astype(int), axis=1) >= 0).all()
  assert padding.any() == served["padded"], padding.sum(1)
  ids, scores = _ask(served, 1)
  assert ids.shape == scores.shape == (ROWS, 1)


@pytest.mark.parametrize("name", SERVABLES)
@pytest.mark.parametrize("k", [None, 0, -3], ids=["max_k+1", "0", "-3"])
def test_k_outside_the_range_is_refused_naming_it(name, k, request):
  served = request.getfixturevalue(name)
  max_k = served["max_k"]
  k = max_k + 1 if k is None else k
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    _ask(served, k)
  rule = (f"k must be <= {max_k} because {served['reason']}" if k > max_k
          else "k must be >= 1")
  assert f"k={k} is outside 1..{max_k}: {rule}" in error.value.message


@pytest.mark.parametrize("name", SERVABLES)
def test_k_differing_between_rows_is_refused(name, request):
  served = request.getfixturevalue(name)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="k must be the same for every row"):
    _ask(served, [1, 2, 1])


def test_fanout_asks_each_shard_for_at_most_its_max_k(dpsr_exports):
  task, _, shards, request = dpsr_exports
  client = FanoutClient([InProcessShard(p) for p in shards])
  try:
    assert client.max_k == task.num_items
    merged = client(dict(request, k=[task.num_items] * ROWS))
    assert merged["item_ids"].shape == (ROWS, task.num_items)
    np.testing.assert_array_equal(merged["item_ids"] == "",
                                  merged["scores"] == -np.inf)
    with pytest.raises(ValueError, match=f"k={task.num_items + 1} is "
                       f"outside 1..{task.num_items}"):
      client(dict(request, k=[task.num_items + 1] * ROWS))
  finally:
    client.close()
