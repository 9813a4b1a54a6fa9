"""MGDSPR layers: shapes, masking (padding never changes an output), the
zero vector, serialization."""

import numpy as np
import pytest

from retrieval_tf.compat import keras, tf
from mgdspr_tf import layers

D = 8


def _tokens(texts):
  out = layers.granular_tokens(tf.constant(texts))
  return {k: [[t.decode() for t in row] for row in v.to_list()]
          for k, v in out.items()}


def test_granular_tokens_compose_the_shared_tokenizer():
  tokens = _tokens(["Red  MOUSE!", ""])
  assert tokens["word"][0] == ["u:red", "u:mouse"]
  assert tokens["char"][0] == ["1:" + c for c in "redmouse"]
  assert tokens["char_bigram"][0] == ["2:re", "2:ed", "2:mo", "2:ou",
                                      "2:us", "2:se"]
  assert all(not v[1] for v in tokens.values())  # empty query: no tokens


def _seq(rng, batch, length, valid):
  items = rng.normal(size=(batch, length, D)).astype(np.float32)
  mask = np.arange(length)[None, :] < np.asarray(valid)[:, None]
  return items, mask


def _padded(items, mask, extra, rng):
  """The same sequences with `extra` more positions of garbage padding."""
  junk = rng.normal(size=(items.shape[0], extra, D)).astype(np.float32) * 50
  return (np.concatenate([items, junk], 1),
          np.concatenate([mask, np.zeros((len(mask), extra), bool)], 1))


@pytest.mark.parametrize("encoder", ["real", "short"])
def test_behaviour_encoders_shapes_and_padding(encoder):
  rng = np.random.default_rng(0)
  layer = (layers.RealTimeEncoder(D, num_heads=2, dropout=0.2)
           if encoder == "real" else layers.ShortTermEncoder(D, num_heads=2))
  q = rng.normal(size=(3, 6, D)).astype(np.float32)
  items, mask = _seq(rng, 3, 5, [5, 2, 0])
  out = layer(q, items, mask).numpy()
  assert out.shape == (3, 6, D)
  assert np.isfinite(out).all()
  # Garbage in padded positions and extra padding change nothing.
  items2 = np.where(mask[..., None], items, 1e3)
  items2, mask2 = _padded(items2, mask, 4, rng)
  np.testing.assert_allclose(layer(q, items2, mask2).numpy(), out, atol=1e-5)
  np.testing.assert_allclose(out[2], 0.0, atol=1e-6)  # nothing: zero vector
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_long_term_sums_attention_per_attribute_and_ignores_padding():
  rng = np.random.default_rng(1)
  layer = layers.LongTermEncoder()
  q = rng.normal(size=(2, 6, D)).astype(np.float32)
  a, mask = _seq(rng, 2, 4, [4, 1])
  b, _ = _seq(rng, 2, 4, [4, 1])
  out = layer(q, {"item": a, "brand": b}, mask).numpy()
  single = layers.QueryAttention()
  expected = single(q, a, mask).numpy() + single(q, b, mask).numpy()
  np.testing.assert_allclose(out, expected, atol=1e-6)
  a2, mask2 = _padded(a, mask, 3, rng)
  b2, _ = _padded(b, mask, 3, rng)
  np.testing.assert_allclose(layer(q, {"item": a2, "brand": b2},
                                   mask2).numpy(), out, atol=1e-6)


def test_query_attention_equals_numpy_with_the_zero_vector():
  rng = np.random.default_rng(2)
  q = rng.normal(size=(2, 6, D)).astype(np.float32)
  keys, mask = _seq(rng, 2, 3, [3, 2])
  out = layers.QueryAttention()(q, keys, mask).numpy()
  for b in range(2):
    k = np.concatenate([np.zeros((1, D)), keys[b][mask[b]]])
    logits = q[b] @ k.T
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(out[b], w @ k, rtol=1e-4, atol=1e-5)


def test_zero_vector_lets_attention_output_zero():
  # Behaviour unrelated to the query (negative inner products): with the
  # zero vector the output goes to ~0, without it, it must be a behaviour.
  q = np.ones((1, 6, D), np.float32)
  keys = -np.ones((1, 3, D), np.float32) * np.array(
      [1.0, 2.0, 3.0], np.float32)[None, :, None]
  mask = np.ones((1, 3), bool)
  with_zero = layers.QueryAttention(zero_vector=True)(q, keys, mask).numpy()
  without = layers.QueryAttention(zero_vector=False)(q, keys, mask).numpy()
  assert np.abs(with_zero).max() < 1e-3
  assert np.abs(without).max() > 0.9
  # Nothing at all in the sequence: exactly 0 either way, never NaN.
  empty = np.zeros((1, 3), bool)
  for zero in (True, False):
    out = layers.QueryAttention(zero_vector=zero)(q, keys, empty).numpy()
    assert np.array_equal(out, np.zeros_like(out))


@pytest.mark.parametrize("mgs", [True, False])
def test_multi_granular_query_shapes_and_batch_padding(mgs):
  unit = layers.MultiGranularQuery(D, num_buckets=512, num_heads=2, mgs=mgs)
  queries = tf.constant(["red mouse", "a much longer query with many words",
                         ""])
  history = tf.constant(["mouse pad", "", ""])
  out = unit(queries, history).numpy()
  assert out.shape == (3, 6 if mgs else 1, D)
  assert np.isfinite(out).all()
  # A row's output does not depend on how much its batch pads it.
  alone = unit(queries[:1], history[:1]).numpy()
  np.testing.assert_allclose(out[:1], alone, atol=1e-5)
  if mgs:  # q_mix is the sum of the five granularities
    np.testing.assert_allclose(out[:, 5], out[:, :5].sum(1), atol=1e-5)
    np.testing.assert_allclose(out[2], 0.0)  # empty query, no history
  clone = layers.MultiGranularQuery.from_config(unit.get_config())
  assert clone.num_rows == unit.num_rows


def test_fusion_and_item_tower():
  rng = np.random.default_rng(3)
  fusion = layers.Fusion(D, num_heads=2)
  parts = rng.normal(size=(2, 24, D)).astype(np.float32)
  assert fusion(parts).shape == (2, D)
  tower = layers.ItemTower(D)
  e = rng.normal(size=(2, D)).astype(np.float32)
  words, mask = _seq(rng, 2, 4, [2, 0])
  out = tower(e, words, mask).numpy()
  w = tower.project.kernel.numpy()
  np.testing.assert_allclose(out[0], e[0] + np.tanh(words[0, :2].mean(0) @ w),
                             atol=1e-5)
  np.testing.assert_allclose(out[1], e[1], atol=1e-6)  # no title words
  for layer in (fusion, tower, layers.TransformerBlock(D, 2)):
    assert type(layer).from_config(layer.get_config()).get_config() == \
        layer.get_config()


def test_transformer_block_rejects_bad_sizes():
  with pytest.raises(ValueError):
    layers.TransformerBlock(0)
  with pytest.raises(ValueError):
    layers.MultiGranularQuery(D, num_buckets=1)
  assert keras  # the compat import binds Keras 2
