"""DPSR building blocks: Eq. 1 limits, Eq. 2 against NumPy, Algorithm 1's
negative mix, the towers, the lexical skip, the head load-balancing term and
the model's training step."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from retrieval_tf.text import Tokenizer, padded_ids

from dpsr_tf.layers import (ItemTower, MixedNegatives, QueryTower,
                            SoftDotProduct, attention_hinge_loss,
                            head_balance_loss)
from dpsr_tf.evaluation import TokenTableScorer
from dpsr_tf.model import DPSRModel, all_item_embeddings


def _heads_items(seed=0, b=5, m=3, c=7, d=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, m, d)).astype(np.float32),
          rng.normal(size=(c, d)).astype(np.float32))


def test_soft_dot_product_limits():
  heads, items = _heads_items()
  inner = np.einsum("bmd,cd->bcm", heads, items)
  small = SoftDotProduct(beta=1e-4)(heads, items).numpy()
  np.testing.assert_allclose(small, inner.max(-1), rtol=1e-4, atol=1e-4)
  large = SoftDotProduct(beta=1e6)(heads, items).numpy()
  np.testing.assert_allclose(large, inner.mean(-1), rtol=1e-4, atol=1e-4)
  # In between: a weighted mean, strictly between mean and max.
  mid = SoftDotProduct(beta=1.0)(heads, items).numpy()
  w = np.exp(inner) / np.exp(inner).sum(-1, keepdims=True)
  np.testing.assert_allclose(mid, (w * inner).sum(-1), rtol=1e-5, atol=1e-5)
  # Per-row items [B, C, d] give the same scores as the shared matrix.
  per_row = SoftDotProduct(beta=1.0)(
      heads, np.broadcast_to(items, (5,) + items.shape)).numpy()
  np.testing.assert_allclose(per_row, mid, rtol=1e-5, atol=1e-6)


def test_soft_dot_product_rejects_bad_beta():
  with pytest.raises(ValueError, match="beta"):
    SoftDotProduct(beta=0.0)


def test_hinge_loss_equals_numpy():
  rng = np.random.default_rng(1)
  pos = rng.normal(size=6).astype(np.float32)
  neg = rng.normal(size=(6, 9)).astype(np.float32)
  mask = rng.random((6, 9)) > 0.3
  delta = 0.1
  expected = np.mean(np.sum(np.maximum(0, delta - pos[:, None] + neg) * mask,
                            axis=1))
  got = attention_hinge_loss(pos, neg, mask, delta).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_allclose(
      attention_hinge_loss(pos, neg, None, delta).numpy(),
      np.mean(np.sum(np.maximum(0, delta - pos[:, None] + neg), axis=1)),
      rtol=1e-6)


def test_head_balance_loss_equals_numpy():
  rng = np.random.default_rng(2)
  inner = rng.uniform(-1, 1, size=(10, 3)).astype(np.float32)
  for temperature in (1.0, 0.1):
    share = np.bincount(inner.argmax(1), minlength=3) / len(inner)
    w = np.exp(inner / temperature)
    w /= w.sum(1, keepdims=True)
    expected = 3 * np.sum(share * w.mean(0))
    got = head_balance_loss(inner, temperature).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="temperature"):
    head_balance_loss(inner, 0.0)


def test_head_balance_loss_is_one_when_balanced_and_lifts_a_dead_head():
  # Two heads winning one positive each with the same margin: the minimum, 1.
  balanced = np.array([[0.9, 0.1], [0.1, 0.9]], np.float32)
  np.testing.assert_allclose(head_balance_loss(balanced).numpy(), 1.0,
                             rtol=1e-6)
  # Head 0 wins every positive: the loss tends to m as the weights saturate,
  # and its gradient raises the dead head's inner products (a descent step
  # moves against the gradient).
  collapsed = tf.constant([[0.8, -0.5], [0.6, -0.7], [0.9, -0.2]])
  np.testing.assert_allclose(head_balance_loss(collapsed, 1e-3).numpy(), 2.0,
                             rtol=1e-5)
  with tf.GradientTape() as tape:
    tape.watch(collapsed)
    loss = head_balance_loss(collapsed)
  grad = tape.gradient(loss, collapsed).numpy()
  assert (grad[:, 1] < 0).all() and (grad[:, 0] > 0).all()


def test_head_balance_needs_several_heads_and_the_hinge_loss():
  with pytest.raises(ValueError, match="head_balance must be >= 0"):
    _toy_model(head_balance=-1.0)
  with pytest.raises(ValueError, match="needs num_heads >= 2"):
    _toy_model(num_heads=1, head_balance=1.0)
  with pytest.raises(ValueError, match="loss='hinge'"):
    _toy_model(num_heads=2, loss="dssm", head_balance=1.0)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_mixed_negatives_share(alpha):
  b, m = 16, 12
  layer = MixedNegatives(num_items=1000, num_negatives=m, alpha=alpha)
  positives = tf.range(100, 100 + b)
  candidates, columns, valid = layer(positives)
  columns = columns.numpy()
  num_random = int(round(alpha * m))
  assert columns.shape == (b, m)
  assert candidates.shape == (b + num_random,)
  is_random = columns >= b
  np.testing.assert_array_equal(is_random.sum(axis=1), num_random)
  batch_part = np.where(is_random, -1, columns)
  for i in range(b):
    row = batch_part[i][batch_part[i] >= 0]
    assert i not in row  # never its own positive
    assert len(set(row)) == len(row) == m - num_random
  # Random negatives are shared by the batch (Sec. 4.4.1).
  assert (columns[:, m - num_random:] == columns[0, m - num_random:]).all()
  # A negative is valid exactly when it is not the row's own positive
  # (distinct positives: batch negatives always are; a random one may hit).
  items = candidates.numpy()[columns]
  np.testing.assert_array_equal(valid.numpy(),
                                items != positives.numpy()[:, None])


def test_mixed_negatives_masks_own_item_and_checks_batch():
  layer = MixedNegatives(num_items=3, num_negatives=3, alpha=0.0)
  _, columns, valid = layer(tf.constant([0, 0, 1, 2]))
  candidates = np.array([0, 0, 1, 2])
  expect = candidates[columns.numpy()] != candidates[:, None]
  np.testing.assert_array_equal(valid.numpy(), expect)
  with pytest.raises(tf.errors.InvalidArgumentError, match="batch"):
    MixedNegatives(10, 8, 0.0)(tf.constant([1, 2, 3]))
  with pytest.raises(ValueError, match="alpha"):
    MixedNegatives(10, 8, 1.5)


def test_towers_shapes_norms_and_config():
  tower = QueryTower(num_heads=3, output_dim=8, hidden_units=(16,))
  out = tower(tf.random.normal([4, 10])).numpy()
  assert out.shape == (4, 3, 8)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  # Heads are different functions of the same input.
  assert not np.allclose(out[:, 0], out[:, 1])
  clone = QueryTower.from_config(tower.get_config())
  assert clone.get_config() == tower.get_config()
  items = ItemTower(50, 6, {"brand": 4}, output_dim=8)
  vec = items({"tokens": tf.constant([[1, 2, -1], [-1, -1, -1]]),
               "brand": tf.constant([3, -1])}).numpy()
  assert vec.shape == (2, 8) and np.isfinite(vec).all()
  np.testing.assert_allclose(np.linalg.norm(vec[0]), 1.0, rtol=1e-5)
  assert ItemTower.from_config(items.get_config()).get_config() == \
      items.get_config()
  assert SoftDotProduct.from_config(SoftDotProduct(0.3).get_config()).beta \
      == 0.3


TITLES = ["apple iphone case", "apple fruit fresh", "bass guitar amp",
          "sea bass fillet", "wireless mouse", "mouse cat toy"] * 3
QUERIES = ["apple", "iphone", "fruit", "guitar", "fish fillet", "mouse"]
ITEMS = [0, 0, 1, 2, 3, 4]


def _toy_model(**kwargs):
  tok = Tokenizer(num_buckets=512)
  titles = padded_ids(tok, TITLES)
  model = DPSRModel(len(TITLES), titles.shape[1], {"brand": 3},
                    tokenizer=tok.get_config(), token_dim=8, output_dim=8,
                    hidden_units=(16,), num_negatives=5, **kwargs)
  model.set_item_tables(titles, {"brand": np.arange(len(TITLES)) % 3})
  model.compile(optimizer=keras.optimizers.Adagrad(0.2))
  return model, tok


def _toy_data(tok, extra=None):
  n = len(QUERIES)
  rows = {"query": np.array(QUERIES * 4),
          "item_id": np.array(ITEMS * 4, np.int32)}
  rows.update(extra or {})
  ds = tf.data.Dataset.from_tensor_slices(rows).repeat().shuffle(
      64, seed=0).batch(n, drop_remainder=True)
  return ds.map(lambda r: dict({k: v for k, v in r.items() if k != "query"},
                               query_tokens=tok(r["query"])))


@pytest.mark.parametrize("kwargs", [
    dict(num_heads=2, alpha=0.5),
    dict(num_heads=1, alpha=1.0, loss="dssm"),
    dict(num_heads=2, lexical_skip=True),
    dict(num_heads=1, lexical_skip=True, lexical_skip_init="identity"),
    dict(num_heads=3, head_balance=0.5),
])
def test_model_trains_and_config_round_trips(kwargs):
  tf.random.set_seed(0)
  model, tok = _toy_model(**kwargs)
  extra = {"hard_negatives": np.tile(np.array([[5, -1]], np.int32), (24, 1))}
  history = model.fit(_toy_data(tok, extra), steps_per_epoch=30, epochs=2,
                      verbose=0).history["loss"]
  assert np.isfinite(history).all() and history[-1] < history[0]
  vectors = all_item_embeddings(model)
  assert vectors.shape == (len(TITLES), 8)
  clone = DPSRModel.from_config(model.get_config())
  assert clone.get_config() == model.get_config()


def test_model_personalisation_needs_profile():
  with pytest.raises(ValueError, match="user profile"):
    _toy_model(personalization="history")
  with pytest.raises(ValueError, match="personalization"):
    _toy_model(personalization="everything", user_feature_sizes={"g": 2})
  model, _ = _toy_model(personalization="history",
                        user_feature_sizes={"gender": 2})
  heads = model.query_heads({"query": tf.constant(["apple", ""]),
                             "user_gender": tf.constant([1, -1]),
                             "history": tf.constant([[0, -1], [-1, -1]])})
  assert heads.shape == (2, 2, 8)
  assert np.isfinite(heads.numpy()).all()


def test_lexical_skip_adds_one_shared_map_of_the_mean_ngram_embedding():
  model, tok = _toy_model(num_heads=2, lexical_skip=True)
  queries = ["apple iphone", "mouse", ""]
  heads = model.query_heads({"query": tf.constant(queries)})
  vectors = model.item_embedding(tf.range(len(TITLES)))
  # Silence both MLPs: what is left is P t on either side, normalised.
  for layer in (model.query_tower.output_layer,
                model.item_tower.mlp.blocks[-1]):
    for weight in layer.weights:
      weight.assign(tf.zeros_like(weight))
  table = model.token_embedding.embeddings.numpy()
  skip = model.skip_projection.kernel.numpy()

  def mean_skip(ids):
    ids = np.asarray(ids)
    valid = ids >= 0
    mean = (table[np.where(valid, ids, 0)] * valid[..., None]).sum(1) / \
        np.maximum(valid.sum(1), 1)[:, None]
    out = mean @ skip
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

  query_ids = tok(tf.constant(queries)).to_tensor(default_value=-1).numpy()
  got = model.query_heads({"query": tf.constant(queries)}).numpy()
  for head in range(2):
    np.testing.assert_allclose(got[:, head], mean_skip(query_ids), atol=1e-5)
  np.testing.assert_allclose(model.item_embedding(tf.range(len(TITLES))),
                             mean_skip(model.item_title.numpy()), atol=1e-5)
  # Before silencing, the MLPs contributed (the skip is added, not alone).
  assert not np.allclose(heads.numpy()[:, 0], got[:, 0], atol=1e-3)
  assert not np.allclose(vectors.numpy(), mean_skip(model.item_title.numpy()),
                         atol=1e-3)
  assert np.isfinite(got).all() and not got[2].any()  # empty query: zeros


def test_identity_lexical_skip_starts_as_the_token_tables_cosine():
  model, _ = _toy_model(num_heads=1, lexical_skip=True,
                        lexical_skip_init="identity")
  queries = ["apple iphone", "mouse", ""]
  model.query_heads({"query": tf.constant(queries)})  # builds both towers
  model.item_embedding(tf.range(len(TITLES)))
  np.testing.assert_array_equal(model.skip_projection.kernel.numpy(),
                                np.eye(8))
  for layer in (model.query_tower.output_layer,
                model.item_tower.mlp.blocks[-1]):
    for weight in layer.weights:
      weight.assign(tf.zeros_like(weight))
  items = np.tile(np.arange(len(TITLES)), (len(queries), 1))
  heads = model.query_heads({"query": tf.constant(queries)}).numpy()[:, 0]
  vectors = model.item_embedding(tf.range(len(TITLES))).numpy()
  np.testing.assert_allclose(
      heads @ vectors.T, TokenTableScorer(model)({"query": queries}, items),
      atol=1e-5)


def test_lexical_skip_init_errors():
  with pytest.raises(ValueError, match="lexical_skip_init must be one of"):
    _toy_model(lexical_skip=True, lexical_skip_init="zeros")
  with pytest.raises(ValueError, match="needs lexical_skip=True"):
    _toy_model(lexical_skip_init="identity")
  with pytest.raises(ValueError, match="token_dim == output_dim"):
    DPSRModel(len(TITLES), 4, {}, token_dim=8, output_dim=4,
              lexical_skip=True, lexical_skip_init="identity")


def test_model_evaluate_reports_in_batch_hit_rate():
  tf.random.set_seed(0)
  model, tok = _toy_model(num_heads=2, in_batch_k=1)
  model.fit(_toy_data(tok), steps_per_epoch=10, epochs=1, verbose=0)
  batch = next(iter(_toy_data(tok)))
  one = tf.data.Dataset.from_tensors(batch)
  got = model.evaluate(one, return_dict=True, verbose=0)
  assert set(got) == {"loss", "in_batch_hr@1"}
  heads = model.query_heads(batch).numpy()
  items = batch["item_id"].numpy()
  vectors = all_item_embeddings(model)[items]
  inner = np.einsum("bmd,cd->bcm", heads, vectors)
  weights = np.exp(inner / model.beta)
  scores = (weights * inner).sum(-1) / weights.sum(-1)  # G, Eq. 1
  beaten = (scores > np.diag(scores)[:, None]) & (items[:, None] !=
                                                   items[None, :])
  assert got["in_batch_hr@1"] == pytest.approx(
      np.mean(beaten.sum(1) < 1), abs=1e-6)
  with pytest.raises(ValueError, match="in_batch_k"):
    _toy_model(in_batch_k=0)


def test_too_small_batches_are_refused_before_training():
  import dpsr_tf  # pylint: disable=g-import-not-at-top
  model, tok = _toy_model(num_heads=2)  # M = 5, alpha 0.5: 3 batch negatives
  examples = {"query": np.array(QUERIES * 4),
              "item_id": np.array(ITEMS * 4, np.int32)}
  with pytest.raises(ValueError, match=r"batch_size=3 is too small.*at "
                     r"least 4 examples; use batch_size >= 4"):
    dpsr_tf.training_dataset(examples, model, batch_size=3)
  before = [w.numpy() for w in model.trainable_weights]
  small = tf.data.Dataset.from_tensor_slices(examples).batch(
      3, drop_remainder=True).map(
          lambda r: {"item_id": r["item_id"],
                     "query_tokens": tok(r["query"])})
  with pytest.raises(ValueError, match="batch_size=3 is too small"):
    model.fit(small, epochs=1, verbose=0)
  for weight, old in zip(model.trainable_weights, before):
    np.testing.assert_array_equal(weight.numpy(), old)
  assert model.min_batch_size == 4
  dpsr_tf.training_dataset(examples, model, batch_size=4)
  dssm, _ = _toy_model(num_heads=1, loss="dssm")  # no batch negatives
  dpsr_tf.training_dataset(dict(examples, hard_negatives=np.full(
      (24, 2), -1, np.int32)), dssm, batch_size=2)


def test_training_dataset_checks_its_examples():
  import dpsr_tf  # pylint: disable=g-import-not-at-top
  model, tok = _toy_model(num_heads=2)
  examples = {"query": np.array(QUERIES * 4),
              "item_id": np.array(ITEMS * 4, np.int32)}
  one_per_item = {"query": np.array([f"word{i}" for i in range(18)]),
                  "item_id": np.arange(18, dtype=np.int32)}
  batch = next(iter(dpsr_tf.training_dataset(one_per_item, model, 6)))
  assert sorted(batch) == ["item_id", "query_tokens"]
  items = batch["item_id"].numpy()
  assert len(set(items)) == 6  # shuffled rows, each with its own query
  assert batch["query_tokens"].to_list() == tok(
      tf.constant([f"word{i}" for i in items])).to_list()
  with pytest.raises(ValueError, match="need 'item_id'"):
    dpsr_tf.training_dataset({"query": examples["query"]}, model, 6)
  with pytest.raises(ValueError, match=r"must lie in \[0, 18\)"):
    dpsr_tf.training_dataset(dict(examples, item_id=np.full(24, 18)),
                             model, 6)
  with pytest.raises(ValueError, match="hard_negatives"):
    dpsr_tf.training_dataset(examples, _toy_model(num_heads=1,
                                                  loss="dssm")[0], 6)
  with pytest.raises(ValueError, match="no batch of 64"):
    dpsr_tf.training_dataset(examples, DPSRModel(len(TITLES), 4, {},
                                                 num_negatives=5), 64)
