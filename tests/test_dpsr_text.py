"""The shared in-graph tokenizer (DPSR Sec. 5.1.1): normalisation, n-grams,
ids, the Keras layer, bad input. (Identity across the data pipeline, the
model and the loaded servable is in test_dpsr_servable.py.)"""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from retrieval_tf.text import (Tokenizer, build_vocabulary, normalize,
                               padded_ids, token_strings)


def _strings(tensor):
  return [[t.decode() for t in row] for row in tensor.to_list()]


def test_normalize_case_punctuation_width_and_bad_bytes():
  got = normalize(tf.constant([
      "  Red,  WIRELESS-Mouse!! ", "ＡＢＣ１２３\u3000ｘ", b"caf\xc3\xa9 \xff ok",
      "ÜBER Straße"])).numpy()
  assert got[0].decode() == "red wireless mouse"
  assert got[1].decode() == "abc123 x"  # NFKC width folding
  # An invalid byte becomes U+FFFD, a symbol, hence a separator.
  assert got[2].decode() == "café ok"
  assert got[3].decode() == "über straße"


def test_token_kinds():
  tokens = _strings(token_strings(tf.constant(["Apple iPhone", ""])))
  assert tokens[0][:3] == ["u:apple", "u:iphone", "b:apple iphone"]
  assert "c:#ap" in tokens[0] and "c:le#" in tokens[0] and "c:one" in tokens[0]
  assert tokens[1] == []
  uni = _strings(token_strings(tf.constant(["a b c"]), kinds=("unigram",)))
  assert uni == [["u:a", "u:b", "u:c"]]
  with pytest.raises(ValueError, match="token kinds"):
    token_strings(tf.constant(["x"]), kinds=("words",))


def test_hashed_ids_are_hash_buckets_and_deterministic():
  tok = Tokenizer(num_buckets=1000)
  texts = tf.constant(["red mouse", "Red  Mouse!", "blue mouse"])
  ids = tok(texts).to_list()
  assert ids[0] == ids[1]  # same after normalisation
  expected = tf.strings.to_hash_bucket_fast(
      token_strings(texts).flat_values, 1000).numpy()
  np.testing.assert_array_equal(np.concatenate(ids), expected)
  assert all(0 <= i < 1000 for row in ids for i in row)
  clone = Tokenizer.from_config(tok.get_config())
  assert clone(texts).to_list() == ids


def test_vocabulary_mode():
  corpus = ["red mouse", "blue mouse", "mouse pad"]
  vocab = build_vocabulary(corpus, min_count=2)
  # Only the tokens of "mouse" occur twice or more.
  assert sorted(vocab) == ["c:#mo", "c:mou", "c:ous", "c:se#", "c:use",
                           "u:mouse"]
  tok = Tokenizer(vocabulary=vocab, num_oov_buckets=7)
  assert tok.vocabulary_size == len(vocab) + 7
  ids = tok(tf.constant(["mouse", "zebra"])).to_list()
  assert ids[0][0] == vocab.index("u:mouse")
  assert all(len(vocab) <= i < len(vocab) + 7 for i in ids[1])  # OOV
  clone = Tokenizer.from_config(tok.get_config())
  assert clone(tf.constant(["mouse", "zebra"])).to_list() == ids
  with pytest.raises(ValueError, match="duplicates"):
    Tokenizer(vocabulary=["u:a", "u:a"])


def test_bad_input_gets_defined_ids():
  tok = Tokenizer(num_buckets=100, max_chars=64, max_words=8)
  texts = ["", "   \t ", "!!!", "x" * 10_000, "苹果 手机 壳", "word " * 3000]
  ids = tok(tf.constant(texts)).to_list()
  assert ids[0] == ids[1] == ids[2] == []
  assert len(ids[3]) == 1 + 64  # cut to max_chars: one 64-char word
  # 3 unigrams, 2 bigrams, trigrams of "#苹果#" (2), "#手机#" (2), "#壳#" (1)
  assert len(ids[4]) == 3 + 2 + 5
  assert len([1 for _ in ids[5]]) == 8 + 7 + 8 * 4  # max_words = 8


def test_padded_ids_and_tf_function():
  tok = Tokenizer(num_buckets=50)
  table = padded_ids(tok, ["a b", "", "c"], max_tokens=3)
  assert table.shape == (3, 3) and (table[1] == -1).all()
  traced = tf.function(lambda t: tok(t).to_tensor(-1))
  np.testing.assert_array_equal(
      traced(tf.constant(["a b", "", "c"])).numpy()[:, :3], table)
  with pytest.raises(ValueError):
    Tokenizer(num_buckets=0)
