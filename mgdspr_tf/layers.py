"""MGDSPR's building blocks (Li et al., KDD'21, Sec. 3.2-3.3), as serializable
Keras layers.

The paper's equations for the user tower are published as images; the ones
used here are the English transcription in `../shared/papers/mgdspr.md`
(marked "reconstructed" there where the image was missing).

* `granular_tokens`: the query's granularities (Sec. 3.2.1: char unigrams,
  char bigrams, segmented words), composed from the shared in-graph
  tokenizer `retrieval_tf.text` (its `normalize` and word cut), not a copy.
* `TransformerBlock`: one post-norm Transformer layer with a padding mask.
* `MultiGranularQuery`: the multi-granular semantic unit, Q_mgs (6 x d).
* `QueryAttention`: softmax(Q_mgs R_zero^T) R_zero with the all-zero vector
  prepended (Sec. 3.2.2), masked.
* `RealTimeEncoder`, `ShortTermEncoder`, `LongTermEncoder`: the three
  behaviour sequences (Sec. 3.2.2), each query-attentive.
* `Fusion`: the Transformer layer over [CLS], Q_mgs, H_real, H_short, H_long
  whose [CLS] output is the user tower (Sec. 3.2.3).
* `ItemTower`: e_item + tanh(W_t mean(title words)) (Sec. 3.3).

Every sequence input is padded; a mask (True = a real position) travels with
it and padding never changes an output (`tests/test_mgdspr_layers.py`).
"""

from __future__ import annotations

from typing import Dict

from retrieval_tf import text
from retrieval_tf.compat import keras, tf
from retrieval_tf.layers import masked_mean

GRANULARITIES = ("char", "char_bigram", "word")


def granular_tokens(texts, max_chars: int = 64,
                    max_words: int = 16) -> Dict[str, tf.RaggedTensor]:
  """Token strings of each granularity, ragged `[B, None]` (Sec. 3.2.1).

  `word`: the shared tokenizer's unigrams ("u:word", `text.token_strings`);
  `char`: the characters of those words ("1:c"); `char_bigram`: adjacent
  character pairs inside each word ("2:ab"). The paper's Chinese queries
  have no spaces, so its char n-grams run over the whole string; here words
  are whitespace-delimited and bigrams stay inside a word.
  """
  normalized = text.normalize(texts, max_chars)
  words = tf.strings.split(normalized)[:, :max_words]
  chars = tf.strings.unicode_split(words, "UTF-8")  # [B, W, C]
  bigrams = tf.strings.ngrams(chars, 2, separator="").merge_dims(1, 2)
  return {
      "char": tf.strings.join(["1:", chars.merge_dims(1, 2)]),
      "char_bigram": tf.strings.join(["2:", bigrams]),
      "word": text.token_strings(texts, max_chars, max_words, ("unigram",)),
  }


def _dense(ragged: tf.RaggedTensor):
  """Ragged ids -> (ids `[B, T]` with 0 at padding, mask `[B, T]`)."""
  mask = tf.ones_like(ragged, tf.bool).to_tensor(False)
  return ragged.to_tensor(0), mask


def gather_padded(table, ids):
  """`table[ids]` with zero vectors where ids < 0 (padding), plus the mask."""
  mask = ids >= 0
  vectors = table(tf.maximum(ids, 0))
  return vectors * tf.cast(mask, vectors.dtype)[..., tf.newaxis], mask


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class TransformerBlock(keras.layers.Layer):
  """x + MHA(x) -> LayerNorm -> + FFN -> LayerNorm, keys masked by `mask`.

  `call(x [B, T, d], mask [B, T]) -> [B, T, d]`; padded rows are zeroed, so
  they never leak into a later pooling.
  """

  def __init__(self, dim: int, num_heads: int = 4, ffn: bool = True,
               dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if dim < 1 or num_heads < 1:
      raise ValueError(f"dim and num_heads must be >= 1, got {dim}, "
                       f"{num_heads}")
    self.dim, self.num_heads = int(dim), int(num_heads)
    self.ffn, self.dropout = bool(ffn), float(dropout)
    self.attention = keras.layers.MultiHeadAttention(
        self.num_heads, key_dim=max(1, self.dim // self.num_heads),
        dropout=self.dropout)
    self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
    if self.ffn:
      self.hidden = keras.layers.Dense(2 * self.dim, activation="relu")
      self.out = keras.layers.Dense(self.dim)
      self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)

  def call(self, x, mask, training=None):
    mask = tf.cast(mask, tf.bool)
    pair = mask[:, tf.newaxis, :] & tf.ones_like(mask)[:, :, tf.newaxis]
    y = self.norm1(x + self.attention(x, x, attention_mask=pair,
                                      training=training))
    if self.ffn:
      y = self.norm2(y + self.out(self.hidden(y)))
    return y * tf.cast(mask, y.dtype)[..., tf.newaxis]

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "num_heads": self.num_heads,
                   "ffn": self.ffn, "dropout": self.dropout})
    return config


def attend(queries, keys, mask):
  """softmax(queries keys^T) keys over the unmasked keys; rows whose keys are
  all masked give 0. `queries [B, m, d]`, `keys [B, T, d]`, `mask [B, T]`."""
  logits = tf.matmul(queries, keys, transpose_b=True)  # [B, m, T]
  mask = tf.cast(mask, tf.bool)[:, tf.newaxis, :]
  logits = tf.where(mask, logits, tf.constant(-1e9, logits.dtype))
  weights = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)
  return tf.matmul(weights, keys)


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class QueryAttention(keras.layers.Layer):
  """H = softmax(Q_mgs R_zero^T) R_zero (Sec. 3.2.2, Eqs. for H_real,
  H_short and each H_a of H_long; no 1/sqrt(d) scale, as written).

  R_zero is the sequence with an all-zero vector prepended (always
  unmasked), so a query that matches no behaviour can put its weight on
  "nothing" and H tends to 0. `zero_vector=False` is the ablation; then a
  row with no behaviour at all gives 0.
  """

  def __init__(self, zero_vector: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.zero_vector = bool(zero_vector)

  def call(self, queries, sequence, mask):
    mask = tf.cast(mask, tf.bool)
    if self.zero_vector:
      sequence = tf.pad(sequence, [[0, 0], [1, 0], [0, 0]])
      mask = tf.pad(mask, [[0, 0], [1, 0]], constant_values=True)
    return attend(queries, sequence, mask)

  def get_config(self):
    config = super().get_config()
    config["zero_vector"] = self.zero_vector
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class MultiGranularQuery(keras.layers.Layer):
  """The multi-granular semantic unit (Sec. 3.2.1, reconstructed):

    q_1gram = mean(char unigram embeddings), q_2gram = mean(char bigrams),
    q_seg = mean(word embeddings), q_seg_seq = mean(Trm(word embeddings)),
    q_his_seq = softmax(q_seg q_his^T) q_his (the user's historical query
    words), q_mix = their sum,
    Q_mgs = [q_1gram; q_2gram; q_seg; q_seg_seq; q_his_seq; q_mix] (6 x d).

  `call(query [B] string, history_query [B] string) -> [B, 6, d]`; with
  `mgs=False` (the ablation's base tower) only q_seg, `[B, 1, d]`. Ids are
  hashed into `num_buckets` per granularity; `word_ids(texts)` and
  `word_embedding` are shared with the item tower's titles.
  """

  def __init__(self, dim: int, num_buckets: int = 1 << 15,
               num_heads: int = 4, max_chars: int = 64, max_words: int = 16,
               mgs: bool = True, **kwargs):
    super().__init__(**kwargs)
    if num_buckets < 2:
      raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
    self.dim, self.num_buckets = int(dim), int(num_buckets)
    self.num_heads, self.mgs = int(num_heads), bool(mgs)
    self.max_chars, self.max_words = int(max_chars), int(max_words)
    self.word_tokenizer = text.Tokenizer(
        num_buckets=self.num_buckets, max_chars=self.max_chars,
        max_words=self.max_words, kinds=("unigram",))
    self.word_embedding = keras.layers.Embedding(self.num_buckets, self.dim,
                                                 name="word_embedding")
    if self.mgs:
      self.char_embedding = keras.layers.Embedding(
          self.num_buckets, self.dim, name="char_embedding")
      self.bigram_embedding = keras.layers.Embedding(
          self.num_buckets, self.dim, name="bigram_embedding")
      self.transformer = TransformerBlock(self.dim, self.num_heads)

  @property
  def num_rows(self) -> int:
    return 6 if self.mgs else 1

  def word_ids(self, texts):
    """Word ids `[B, T]` padded with -1 (the shared tokenizer's)."""
    return self.word_tokenizer(texts).to_tensor(-1)

  def _ids(self, tokens):
    return tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast, tokens,
                                     self.num_buckets)

  def call(self, query, history_query=None, training=None):
    words, word_mask = gather_padded(self.word_embedding,
                                     self.word_ids(query))
    q_seg = masked_mean(words, word_mask)
    if not self.mgs:
      return q_seg[:, tf.newaxis, :]
    tokens = granular_tokens(query, self.max_chars, self.max_words)
    ids, mask = _dense(self._ids(tokens["char"]))
    q_1gram = masked_mean(self.char_embedding(ids), mask)
    ids, mask = _dense(self._ids(tokens["char_bigram"]))
    q_2gram = masked_mean(self.bigram_embedding(ids), mask)
    q_seg_seq = masked_mean(self.transformer(words, word_mask,
                                             training=training), word_mask)
    if history_query is None:
      q_his_seq = tf.zeros_like(q_seg)
    else:
      his, his_mask = gather_padded(self.word_embedding,
                                    self.word_ids(history_query))
      q_his_seq = attend(q_seg[:, tf.newaxis, :], his, his_mask)[:, 0]
    parts = [q_1gram, q_2gram, q_seg, q_seg_seq, q_his_seq]
    return tf.stack(parts + [tf.add_n(parts)], axis=1)

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "num_buckets": self.num_buckets,
                   "num_heads": self.num_heads, "max_chars": self.max_chars,
                   "max_words": self.max_words, "mgs": self.mgs})
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class RealTimeEncoder(keras.layers.Layer):
  """Real-time clicks (Sec. 3.2.2): R = x + LSTM2(LSTM1(x)) (2 layers,
  dropout, residual) -> multi-head self-attention -> H_real =
  QueryAttention(Q_mgs, R).

  `call(q_mgs [B, m, d], items [B, T, d], mask [B, T]) -> [B, m, d]`.
  """

  def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.2,
               zero_vector: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.dim, self.num_heads = int(dim), int(num_heads)
    self.dropout, self.zero_vector = float(dropout), bool(zero_vector)
    self.lstm1 = keras.layers.LSTM(self.dim, return_sequences=True,
                                   dropout=self.dropout)
    self.lstm2 = keras.layers.LSTM(self.dim, return_sequences=True,
                                   dropout=self.dropout)
    self.self_attention = TransformerBlock(self.dim, self.num_heads,
                                           ffn=False)
    self.attention = QueryAttention(self.zero_vector)

  def call(self, q_mgs, items, mask, training=None):
    mask = tf.cast(mask, tf.bool)
    hidden = self.lstm2(self.lstm1(items, mask=mask, training=training),
                        mask=mask, training=training)
    hidden = (items + hidden) * tf.cast(mask, items.dtype)[..., tf.newaxis]
    hidden = self.self_attention(hidden, mask, training=training)
    return self.attention(q_mgs, hidden, mask)

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "num_heads": self.num_heads,
                   "dropout": self.dropout, "zero_vector": self.zero_vector})
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class ShortTermEncoder(keras.layers.Layer):
  """Short-term behaviour (Sec. 3.2.2): multi-head self-attention ->
  H_short = QueryAttention(Q_mgs, S). Same call as `RealTimeEncoder`."""

  def __init__(self, dim: int, num_heads: int = 8, zero_vector: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    self.dim, self.num_heads = int(dim), int(num_heads)
    self.zero_vector = bool(zero_vector)
    self.self_attention = TransformerBlock(self.dim, self.num_heads,
                                           ffn=False)
    self.attention = QueryAttention(self.zero_vector)

  def call(self, q_mgs, items, mask, training=None):
    hidden = self.self_attention(items, mask, training=training)
    return self.attention(q_mgs, hidden, mask)

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "num_heads": self.num_heads,
                   "zero_vector": self.zero_vector})
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class LongTermEncoder(keras.layers.Layer):
  """Long-term behaviour (Sec. 3.2.2): one attribute sequence per field
  (item, shop, leaf category, brand: whichever the data has),
  H_long = sum_a softmax(Q_mgs L_a^T) L_a, each L_a with the zero vector.

  The paper mean-pools, per attribute, the embeddings of items clicked,
  bought and collected; our logs have one action type, so L_a is the
  attribute embedding of each long-term event.
  `call(q_mgs [B, m, d], attributes {name: [B, T, d]}, mask [B, T])`.
  """

  def __init__(self, zero_vector: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.zero_vector = bool(zero_vector)
    self.attention = QueryAttention(self.zero_vector)

  def call(self, q_mgs, attributes, mask):
    return tf.add_n([self.attention(q_mgs, attributes[name], mask)
                     for name in sorted(attributes)])

  def get_config(self):
    config = super().get_config()
    config["zero_vector"] = self.zero_vector
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class Fusion(keras.layers.Layer):
  """H_qu = Trm([CLS], Q_mgs, H_real, H_short, H_long)[0] (Sec. 3.2.3).

  `call(parts [B, P, d]) -> [B, d]`: the learned [CLS] vector is
  prepended, one Transformer layer runs over the sequence (every position
  is real) and the [CLS] output is the user tower's vector.
  """

  def __init__(self, dim: int, num_heads: int = 4, **kwargs):
    super().__init__(**kwargs)
    self.dim, self.num_heads = int(dim), int(num_heads)
    self.transformer = TransformerBlock(self.dim, self.num_heads)

  def build(self, input_shape):
    self.cls = self.add_weight(name="cls", shape=(1, 1, self.dim),
                               initializer="random_normal")
    super().build(input_shape)

  def call(self, parts, training=None):
    batch = tf.shape(parts)[0]
    sequence = tf.concat([tf.tile(self.cls, [batch, 1, 1]), parts], axis=1)
    mask = tf.ones(tf.shape(sequence)[:2], tf.bool)
    return self.transformer(sequence, mask, training=training)[:, 0]

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "num_heads": self.num_heads})
    return config


@keras.utils.register_keras_serializable(package="mgdspr_tf")
class ItemTower(keras.layers.Layer):
  """H_item = e_item + tanh(W_t (1/N) sum_i w_i) (Sec. 3.3): the item id
  embedding plus the squashed mean of the title word embeddings.

  `call(item_embedding [B, d], title_words [B, T, d], title_mask [B, T])`.
  """

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.dim = int(dim)
    self.project = keras.layers.Dense(self.dim, use_bias=False,
                                      activation="tanh")

  def call(self, item_embedding, title_words, title_mask):
    return item_embedding + self.project(masked_mean(title_words, title_mask))

  def get_config(self):
    config = super().get_config()
    config["dim"] = self.dim
    return config
