"""Relevance control after the ANN (Sec. 4, "relevance control module").

The paper filters the EBR results by boolean matching of the query's
structured intents (brand, category, ...) against the items' fields, so
that only items that match what the query explicitly asks for go on to
ranking. Here:

1. `intent_vocabulary(fields)` builds, from the catalogue, the terms that
   name a field value: each value's name (its last path segment for
   category paths such as "electronics/computers/mouse") normalized by the
   shared `retrieval_tf.text.normalize`, as the shared tokenizer's unigram
   ("u:mouse") or bigram ("b:hello kitty") token; names of more than two
   words are not recognisable and are skipped. One term may have several
   meanings ("apple": a brand and a fruit leaf; "mouse": two leaves).
2. In the graph, the query's unigram and bigram tokens
   (`retrieval_tf.text.token_strings`) are looked up; every recognised term
   is one intent.
3. An item survives when it matches EVERY recognised term, a term being
   matched when ANY of its meanings (field == value) holds.
4. When no candidate of a row survives, the row falls back to the
   unfiltered list and says so (`fallback`); a row with no recognised term
   is never filtered; `enabled` switches the control per row.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from retrieval_tf import text
from retrieval_tf.compat import tf

KINDS = ("unigram", "bigram")


def value_term(name: str) -> str:
  """The token string naming a field value, or "" when it has none."""
  name = str(name).replace(">", "/").split("/")[-1]
  words = text.normalize(tf.constant([name])).numpy()[0].decode().split()
  if len(words) == 1:
    return "u:" + words[0]
  if len(words) == 2:
    return "b:" + " ".join(words)
  return ""


def intent_vocabulary(fields: Mapping[str, Sequence[str]],
                      skip: Sequence[str] = ("", "none")
                      ) -> Tuple[List[str], np.ndarray]:
  """Terms and their meanings from the catalogue's field vocabularies.

  Args:
    fields: `{field: names of its values, in index order}`; the order of
      `fields` is the column order of the item field table.
    skip: value names that are no intent (e.g. "none").

  Returns:
    `(terms [T], meanings int32 [T, M, 2])`: meaning m of term t is
    (field column, value index), padded with -1.

  Raises:
    ValueError: no value has a recognisable name.

      terms, meanings = intent_vocabulary({"brand": ["apple", "zentek"]})
      terms                                 # ["u:apple", "u:zentek"]
  """
  meanings: Dict[str, list] = {}
  for column, (field, names) in enumerate(fields.items()):
    del field
    for value, name in enumerate(names):
      if str(name).strip().lower() in skip:
        continue
      term = value_term(name)
      if term:
        meanings.setdefault(term, []).append((column, value))
  if not meanings:
    raise ValueError("no field value has a recognisable name")
  terms = sorted(meanings)
  width = max(len(m) for m in meanings.values())
  table = np.full((len(terms), width, 2), -1, np.int32)
  for t, term in enumerate(terms):
    table[t, :len(meanings[term])] = meanings[term]
  return terms, table


class RelevanceControl(tf.Module):
  """The post-ANN filter (see the module docstring).

  Args:
    terms, meanings: from `intent_vocabulary`.
    item_fields: int32 `[num_items, F]`, the items' value of each field
      (column order of `intent_vocabulary`'s `fields`), -1 = unknown.
    max_words: query words considered (the shared tokenizer's cut).

  `__call__(queries [B], candidates [B, K], enabled [B]) -> (keep [B, K],
  fallback [B], num_intents [B])`.

      control = RelevanceControl(*intent_vocabulary(fields), item_fields)
      keep, fallback, intents = control(tf.constant(["apple mouse"]),
                                        tf.constant([[3, 7, 9]]),
                                        tf.constant([True]))
  """

  def __init__(self, terms: Sequence[str], meanings: np.ndarray,
               item_fields: np.ndarray, max_words: int = 32):
    super().__init__()
    meanings = np.asarray(meanings, np.int32)
    item_fields = np.asarray(item_fields, np.int32)
    if meanings.ndim != 3 or meanings.shape[0] != len(terms):
      raise ValueError("meanings must be [len(terms), M, 2]")
    if item_fields.ndim != 2 or (meanings[..., 0].max() >= item_fields.shape[1]):
      raise ValueError("item_fields must be [num_items, F] with a column "
                       "for every field the meanings name")
    self.max_words = int(max_words)
    self.terms = list(terms)
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.terms), tf.range(len(self.terms),
                                              dtype=tf.int32)),
        default_value=-1)
    self.meanings = tf.Variable(meanings, trainable=False, name="meanings")
    self.item_fields = tf.Variable(item_fields, trainable=False,
                                   name="item_fields")

  def intents(self, queries) -> tf.Tensor:
    """Recognised term ids `[B, W]` (-1: not a term)."""
    tokens = text.token_strings(queries, max_words=self.max_words,
                                kinds=KINDS)
    return tf.ragged.map_flat_values(self.table.lookup, tokens).to_tensor(-1)

  def __call__(self, queries, candidates, enabled):
    """Which candidates survive.

    Args:
      queries: string `[B]`; candidates: int `[B, K]` item indices (-1:
        none); enabled: bool `[B]`.

    Returns:
      `(keep [B, K] bool, fallback [B] bool, num_intents [B] int32)`.
    """
    candidates = tf.cast(candidates, tf.int32)
    valid = candidates >= 0
    terms = self.intents(queries)  # [B, W]
    recognised = terms >= 0
    meaning = tf.gather(self.meanings, tf.maximum(terms, 0))  # [B, W, M, 2]
    field, value = meaning[..., 0], meaning[..., 1]
    fields = tf.gather(self.item_fields, tf.maximum(candidates, 0))
    fields = tf.transpose(fields, [0, 2, 1])  # [B, F, K]
    item_value = tf.gather(fields, tf.maximum(field, 0), batch_dims=1)
    match = (item_value == value[..., tf.newaxis]) & (
        field >= 0)[..., tf.newaxis]  # [B, W, M, K]
    term_match = tf.reduce_any(match, axis=2)  # [B, W, K]
    term_match = term_match | ~recognised[..., tf.newaxis]
    keep = tf.reduce_all(term_match, axis=1) & valid
    enabled = tf.cast(enabled, tf.bool) & tf.reduce_any(recognised, axis=1)
    empty = ~tf.reduce_any(keep, axis=1)
    fallback = enabled & empty & tf.reduce_any(valid, axis=1)
    keep = tf.where((enabled & ~fallback)[:, tf.newaxis], keep, valid)
    num_intents = tf.reduce_sum(tf.cast(recognised, tf.int32), axis=1)
    return keep, fallback, num_intents


def compact(keep, column, fill):
  """`column [B, K]` with the kept entries of each row moved to the front
  (rank order kept) and `fill` after them."""
  order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
  kept = tf.gather(keep, order, batch_dims=1)
  column = tf.gather(column, order, batch_dims=1)
  return tf.where(kept, column, tf.fill(tf.shape(column), fill))
