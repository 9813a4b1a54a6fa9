"""The one in-graph text tokenizer (DPSR Sec. 5.1.1), shared by every
package that reads raw query or title text.

DPSR's lesson is that tokenization must be *one* piece of code run unchanged
by data preprocessing, model training and online serving. The paper wraps a
C++ tokenizer as a custom TensorFlow op; here it is written once in stock
TensorFlow string ops, so the same function runs inside `tf.data.Dataset.map`,
inside a Keras model and inside an exported SavedModel that stock TF Serving
loads.

Pipeline (`tokenize`):

1. Normalisation (`normalize`): invalid UTF-8 bytes -> U+FFFD
   (`unicode_transcode`); full-width forms U+FF01..U+FF5E -> ASCII and the
   ideographic space U+3000 -> " " (the width folding part of Unicode NFKC;
   full NFKC needs ICU composition tables that no stock op exposes);
   Unicode-aware lower case (`strings.lower(encoding="utf-8")`); every run of
   punctuation, symbols and control characters (`\\pP \\pS \\pC`) -> one
   space; cut to `max_chars` characters.
2. Tokens: words split on whitespace (the first `max_words`), unigrams
   ("u:word"), bigrams ("b:w1 w2") and character trigrams of "#word#"
   ("c:#wo"), so that typos and unseen words still share tokens (Sec. 6.1.3).
3. Ids: `StringToHashBucketFast` into `num_buckets` (hashed mode), or a
   vocabulary table with `num_oov_buckets` hashed out-of-vocabulary buckets
   after the `len(vocabulary)` known tokens (vocabulary mode).

The result is a `tf.RaggedTensor` int64 `[batch, None]` (unigrams, then
bigrams, then trigrams of each row). An empty, whitespace-only or
punctuation-only text has no tokens (an empty row); a very long text is cut;
non-Latin text works (words are whitespace-delimited, trigrams are of
Unicode characters).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from retrieval_tf.compat import keras, tf

DEFAULT_NUM_BUCKETS = 1 << 17
KINDS = ("unigram", "bigram", "trigram")
_PREFIX = {"unigram": "u:", "bigram": "b:", "trigram": "c:"}


def normalize(texts, max_chars: int = 256) -> tf.Tensor:
  """Normalised text (see the module docstring, step 1); string `[...]`."""
  texts = tf.convert_to_tensor(texts, tf.string)
  texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8",
                                       errors="replace",
                                       replacement_char=0xFFFD)
  # Cut early so that a 10,000-character query costs what 4 x max_chars do.
  texts = tf.strings.substr(texts, 0, 4 * max_chars, unit="UTF8_CHAR")
  points = tf.strings.unicode_decode(texts, "UTF-8")
  points = tf.ragged.map_flat_values(_fold_width, points)
  texts = tf.strings.unicode_encode(points, "UTF-8")
  texts = tf.strings.lower(texts, encoding="utf-8")
  texts = tf.strings.regex_replace(texts, r"[\pP\pS\pC]+", " ")
  texts = tf.strings.regex_replace(texts, r"\s+", " ")
  texts = tf.strings.strip(texts)
  return tf.strings.substr(texts, 0, max_chars, unit="UTF8_CHAR")


def _fold_width(points: tf.Tensor) -> tf.Tensor:
  full = (points >= 0xFF01) & (points <= 0xFF5E)
  points = tf.where(full, points - 0xFEE0, points)
  return tf.where(points == 0x3000, tf.constant(32, points.dtype), points)


def token_strings(texts, max_chars: int = 256, max_words: int = 32,
                  kinds: Sequence[str] = KINDS) -> tf.RaggedTensor:
  """The prefixed token strings of each text, ragged `[batch, None]`.

  `texts` is a string vector `[batch]`.
  """
  unknown = set(kinds) - set(KINDS)
  if unknown or not kinds:
    raise ValueError(f"token kinds must be a non-empty subset of {KINDS}, "
                     f"got {list(kinds)}")
  texts = normalize(texts, max_chars)
  words = tf.strings.split(texts)[:, :max_words]
  parts = []
  if "unigram" in kinds:
    parts.append(tf.strings.join([_PREFIX["unigram"], words]))
  if "bigram" in kinds:
    bigrams = tf.strings.ngrams(words, 2, separator=" ")
    parts.append(tf.strings.join([_PREFIX["bigram"], bigrams]))
  if "trigram" in kinds:
    chars = tf.strings.unicode_split(tf.strings.join(["#", words, "#"]),
                                     "UTF-8")
    trigrams = tf.strings.ngrams(chars, 3, separator="").merge_dims(1, 2)
    parts.append(tf.strings.join([_PREFIX["trigram"], trigrams]))
  return tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]


@keras.utils.register_keras_serializable(package="retrieval_tf")
class Tokenizer(keras.layers.Layer):
  """Raw text `[batch]` -> ragged int64 token ids `[batch, None]`.

  The same layer object (or one rebuilt from its `get_config`) is called by
  the `tf.data` pipeline, the model and the servable.

  Args:
    num_buckets: hashed mode: ids are in `[0, num_buckets)`.
    vocabulary: vocabulary mode: the known token strings (as
      `token_strings` writes them, e.g. "u:apple"); token `vocabulary[i]`
      gets id `i`, others one of `num_oov_buckets` hashed ids after them.
    num_oov_buckets: vocabulary mode only.
    max_chars, max_words: cuts applied to every text.
    kinds: which of "unigram", "bigram", "trigram" to emit.
  """

  def __init__(self, num_buckets: int = DEFAULT_NUM_BUCKETS,
               vocabulary: Optional[Sequence[str]] = None,
               num_oov_buckets: int = 1024, max_chars: int = 256,
               max_words: int = 32, kinds: Sequence[str] = KINDS, **kwargs):
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    if max_chars < 1 or max_words < 1:
      raise ValueError("max_chars and max_words must be >= 1")
    self.kinds = tuple(kinds)
    token_strings(tf.constant([""]), 1, 1, self.kinds)  # validates kinds
    self.max_chars, self.max_words = int(max_chars), int(max_words)
    self.vocabulary = None if vocabulary is None else [str(v) for v in
                                                       vocabulary]
    self._hash_buckets = int(num_buckets)
    if self.vocabulary is None:
      if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
      self.num_buckets = int(num_buckets)
      self.num_oov_buckets = 0
      self._table = None
    else:
      if not self.vocabulary or len(set(self.vocabulary)) != len(
          self.vocabulary):
        raise ValueError("vocabulary must be non-empty without duplicates")
      if num_oov_buckets < 1:
        raise ValueError("num_oov_buckets must be >= 1")
      self.num_oov_buckets = int(num_oov_buckets)
      self.num_buckets = len(self.vocabulary) + self.num_oov_buckets
      self._table = tf.lookup.StaticVocabularyTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(self.vocabulary),
              tf.range(len(self.vocabulary), dtype=tf.int64)),
          num_oov_buckets=self.num_oov_buckets)

  @property
  def vocabulary_size(self) -> int:
    """How many distinct ids the tokenizer emits (the embedding rows)."""
    return self.num_buckets

  def call(self, texts):
    texts = tf.convert_to_tensor(texts, tf.string)
    tokens = token_strings(texts, self.max_chars, self.max_words, self.kinds)
    if self._table is None:
      return tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast,
                                       tokens, self.num_buckets)
    return tf.ragged.map_flat_values(self._table.lookup, tokens)

  def get_config(self):
    config = super().get_config()
    config.update({"num_buckets": self._hash_buckets,
                   "vocabulary": self.vocabulary,
                   "num_oov_buckets": self.num_oov_buckets or 1024,
                   "max_chars": self.max_chars, "max_words": self.max_words,
                   "kinds": list(self.kinds)})
    return config


def build_vocabulary(texts: Iterable[str], min_count: int = 1,
                     max_size: Optional[int] = None, max_chars: int = 256,
                     max_words: int = 32, kinds: Sequence[str] = KINDS,
                     batch_size: int = 4096) -> list:
  """The token strings of a corpus (by the same `token_strings` ops), most
  frequent first (ties by string), with at least `min_count` occurrences."""
  texts = np.asarray(list(texts), dtype=object)
  counts = {}
  for start in range(0, len(texts), batch_size):
    chunk = tf.constant(texts[start:start + batch_size].astype(str))
    flat = token_strings(chunk, max_chars, max_words, kinds).flat_values
    values, _, count = tf.unique_with_counts(flat)
    for v, c in zip(values.numpy(), count.numpy()):
      counts[v] = counts.get(v, 0) + int(c)
  ranked = sorted(((c, v) for v, c in counts.items() if c >= min_count),
                  key=lambda cv: (-cv[0], cv[1]))
  if max_size is not None:
    ranked = ranked[:max_size]
  return [v.decode("utf-8") for _, v in ranked]


def padded_ids(tokenizer: Tokenizer, texts, max_tokens: Optional[int] = None,
               batch_size: int = 8192) -> np.ndarray:
  """Token ids of many texts as int64 `[n, T]` padded with -1 (the item
  title tables the towers gather from), computed by `tokenizer` itself."""
  texts = np.asarray(list(texts), dtype=object).astype(str)
  call = tf.function(lambda t: tokenizer(t).to_tensor(default_value=-1))
  rows = [call(tf.constant(texts[s:s + batch_size])).numpy()
          for s in range(0, len(texts), batch_size)]
  width = max([r.shape[1] for r in rows] + [1])
  if max_tokens is not None:
    width = min(width, max_tokens)
  out = np.full((len(texts), width), -1, np.int64)
  start = 0
  for r in rows:
    w = min(width, r.shape[1])
    out[start:start + len(r), :w] = r[:, :w]
    start += len(r)
  return out
