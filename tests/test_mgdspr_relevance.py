"""Relevance control equals a plain filter on a small catalogue; intents,
fallback and the per-request switch; behaviour windows."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from mgdspr_tf import data as data_lib
from mgdspr_tf.relevance import (RelevanceControl, compact, intent_vocabulary,
                                 value_term)

# A catalogue with a polysemous word ("apple": brand and fruit leaf; "mouse":
# two leaves) and a two-word brand.
FIELDS = {
    "leaf": ["electronics/computers/mouse", "pets/cats/mouse", "food/apple",
             "home/lamp"],
    "brand": ["apple", "Hello Kitty", "zentek", "a b c d"],
    "colour": ["none", "red", "blue"],
}
ITEMS = np.array([  # leaf, brand, colour
    [0, 0, 1], [0, 2, 2], [1, 1, 1], [1, 2, 0], [2, 2, 1], [2, 1, 0],
    [3, 0, 2], [3, 1, 1], [0, 0, 0], [2, 0, 2]], np.int32)


def plain_filter(query, candidates):
  """The rule written out: keep an item when every recognised query term
  has a meaning (field == value) the item satisfies."""
  words = query.lower().split()
  grams = words + [" ".join(p) for p in zip(words, words[1:])]
  meanings = []
  for gram in grams:
    m = [(c, v) for c, names in enumerate(FIELDS.values())
         for v, name in enumerate(names)
         if name.lower() != "none" and
         name.lower().replace(">", "/").split("/")[-1] == gram]
    if m:
      meanings.append(m)
  keep = [c >= 0 and all(any(ITEMS[c, f] == v for f, v in m)
                         for m in meanings) for c in candidates]
  return np.array(keep), len(meanings)


def _control():
  terms, meanings = intent_vocabulary(FIELDS)
  return RelevanceControl(terms, meanings, ITEMS)


def test_vocabulary_from_the_catalogue():
  terms, meanings = intent_vocabulary(FIELDS)
  assert "u:mouse" in terms and "b:hello kitty" in terms
  assert "u:none" not in terms  # skipped value
  assert not any(t.startswith("b:a b") for t in terms)  # > 2 words
  apple = meanings[terms.index("u:apple")]
  assert {tuple(m) for m in apple if m[0] >= 0} == {(0, 2), (1, 0)}
  assert value_term("Electronics > Computers > Mouse") == "u:mouse"


QUERIES = ["red mouse", "apple", "Hello Kitty lamp", "blue apple mouse",
           "something else", "", "zentek", "red red", "mouse blue"]


def test_relevance_control_equals_a_plain_filter():
  control = _control()
  rng = np.random.default_rng(0)
  candidates = rng.integers(-1, len(ITEMS), (len(QUERIES), 7)).astype(
      np.int32)
  keep, fallback, intents = (t.numpy() for t in control(
      tf.constant(QUERIES), candidates, tf.ones(len(QUERIES), tf.bool)))
  for row, query in enumerate(QUERIES):
    expected, count = plain_filter(query, candidates[row])
    assert intents[row] == count, query
    if count and not expected.any() and (candidates[row] >= 0).any():
      assert fallback[row], query  # would empty the list: unfiltered
      np.testing.assert_array_equal(keep[row], candidates[row] >= 0)
    else:
      assert not fallback[row], query
      np.testing.assert_array_equal(keep[row], expected, err_msg=query)


def test_switch_off_per_request_and_compaction():
  control = _control()
  candidates = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], np.int32)
  keep, fallback, _ = (t.numpy() for t in control(
      tf.constant(["red mouse", "red mouse"]), candidates,
      tf.constant([True, False])))
  assert keep[0].tolist() == [True, False, True, False]
  assert keep[1].all() and not fallback.any()
  ids = compact(tf.constant(keep), tf.constant(candidates), -1).numpy()
  assert ids[0].tolist() == [0, 2, -1, -1]


def test_intent_matching_no_item_falls_back():
  control = _control()
  # "lamp" and "mouse" together: no item is both.
  keep, fallback, intents = (t.numpy() for t in control(
      tf.constant(["lamp mouse"]), np.array([[0, 6, -1]], np.int32),
      tf.constant([True])))
  assert fallback[0] and intents[0] == 2
  assert keep[0].tolist() == [True, True, False]


def test_bad_vocabulary_input():
  with pytest.raises(ValueError):
    intent_vocabulary({"brand": ["none", ""]})
  terms, meanings = intent_vocabulary(FIELDS)
  with pytest.raises(ValueError):
    RelevanceControl(terms, meanings, ITEMS[:, :1])


def _reference_windows(users, items, times, tu, tt, lengths, spans):
  out = [np.full((len(tu), n), -1) for n in lengths]
  for r, (u, t) in enumerate(zip(tu, tt)):
    rows = sorted((times[i], i) for i in range(len(users))
                  if users[i] == u and times[i] < t)
    idx = [i for _, i in rows]
    end = len(idx)
    for w, (n, span) in enumerate(zip(lengths, spans)):
      begin = sum(1 for j in idx if times[j] < t - span)
      start = max(begin, end - n)
      got = [items[j] for j in idx[start:end]]
      out[w][r, :len(got)] = got
      end = start
  return out


def test_behaviour_windows_equal_a_loop():
  rng = np.random.default_rng(1)
  n = 300
  users = rng.integers(0, 5, n)
  times = rng.integers(0, 100, n)
  items = rng.integers(0, 50, n)
  tu = rng.integers(0, 6, 40)
  tt = rng.integers(0, 120, 40)
  lengths, spans = (3, 4, 5), (10, 30, 60)
  got = data_lib.behaviour_windows(users, items, times, tu, tt, lengths,
                                   spans)
  expected = _reference_windows(users, items, times, tu, tt, lengths, spans)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, e)
