"""The synthetic e-commerce world: determinism, structure and conversions."""

import dataclasses
import hashlib
import time

import numpy as np
import pytest

from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.types import (Interactions, RecDataset,
                                         SearchDataset, check_index_range)

CONFIG = synthetic.SyntheticConfig(seed=0)


@pytest.fixture(scope="module")
def world():
  return synthetic.generate(CONFIG)


def _digests(world):
  """name -> sha256 of every array (object arrays by their strings)."""
  out = {}
  for field in dataclasses.fields(world):
    value = getattr(world, field.name)
    if isinstance(value, np.ndarray):
      h = hashlib.sha256(f"{value.dtype}{value.shape}".encode())
      h.update("\x00".join(map(str, value.ravel())).encode()
               if value.dtype == object else value.tobytes())
      out[field.name] = h.hexdigest()
  return out


def test_same_seed_same_bytes(world):
  again = synthetic.generate(synthetic.SyntheticConfig(seed=0))
  assert _digests(again) == _digests(world)
  assert len(_digests(world)) > 60


def test_different_seed_differs(world):
  other = _digests(synthetic.generate(synthetic.SyntheticConfig(seed=1)))
  mine = _digests(world)
  for name in ("item_leaf", "item_popularity", "item_latent", "user_interests",
               "event_item", "event_time", "query_strings", "click_item",
               "judged_item"):
    assert other[name] != mine[name], name


def test_parts_use_independent_streams(world):
  fewer = _digests(synthetic.generate(
      dataclasses.replace(CONFIG, num_queries=500)))
  mine = _digests(world)
  for name in mine:
    if name.startswith(("item_", "user_", "event_", "session_", "brand_",
                        "leaf_", "words")):
      assert fewer[name] == mine[name], name
  assert fewer["query_strings"] != mine["query_strings"]


def test_shapes_and_ranges(world):
  c = CONFIG
  n, u = c.num_items, c.num_users
  assert world.num_items == n and world.num_users == u
  assert len(world.leaf_names) == c.num_leaves == 128
  assert len(set(world.leaf_names)) == c.num_leaves
  assert np.array_equal(np.unique(world.item_leaf), np.arange(c.num_leaves))
  assert world.item_brand.max() < c.num_brands
  # Brands and shops belong to the item's root category.
  assert np.array_equal(world.brand_root[world.item_brand], world.item_root)
  assert np.array_equal(world.shop_root[world.item_shop], world.item_root)
  assert world.item_latent.shape == (n, c.latent_dim)
  assert world.item_latent.dtype == np.float32
  assert (world.item_price > 0).all()
  assert np.isclose(world.item_popularity.sum(), 1.0)
  assert world.item_tokens.shape == (n, 5)
  assert (world.item_tokens[:, :2] >= 0).all()  # brand and noun
  assert world.item_tokens.max() < world.num_title_words
  # Items of a higher price tier cost more within a leaf on average.
  log_price = np.log(world.item_price)
  leaf_mean = (np.bincount(world.item_leaf, log_price)
               / np.bincount(world.item_leaf))
  residual = log_price - leaf_mean[world.item_leaf]
  assert residual[world.item_tier == 2].mean() > residual[
      world.item_tier == 0].mean() + 0.5
  # Users: 1..max interests, weights summing to 1, favourite leaf inside.
  k = (world.user_interests >= 0).sum(axis=1)
  assert k.min() >= 1 and k.max() <= c.max_interests_per_user
  assert np.allclose(world.user_interest_weights.sum(axis=1), 1.0, atol=1e-5)
  valid = world.user_interests >= 0
  assert np.array_equal(
      world.leaf_interest[world.user_favourite_leaf[valid]],
      world.user_interests[valid])
  assert set(np.unique(world.user_gender)) == {0, 1}
  assert world.user_power.max() == 2 and world.user_age.max() == 4


def test_events_follow_interests_and_price(world):
  in_interest = (world.user_interests[world.event_user] == world.leaf_interest[
      world.item_leaf[world.event_item]][:, None]).any(axis=1)
  assert in_interest.mean() > 0.8
  # Popular-but-irrelevant events exist too.
  assert in_interest.mean() < 0.99
  tier_match = world.item_tier[world.event_item] == world.user_power[
      world.event_user]
  assert tier_match.mean() > 0.45  # well above the 1/3 of chance
  # Sessions are coherent: consecutive events often share the leaf.
  same = world.event_session[1:] == world.event_session[:-1]
  leaf = world.item_leaf[world.event_item]
  assert (leaf[1:] == leaf[:-1])[same].mean() > 0.3
  assert 0.05 < world.event_purchase.mean() < 0.2


def test_events_time_ordered_sessions(world):
  c = CONFIG
  user, t, session = world.event_user, world.event_time, world.event_session
  assert (np.diff(user) >= 0).all()
  same_user = user[1:] == user[:-1]
  assert (np.diff(t)[same_user] > 0).all()
  # Sessions are contiguous runs, each of one user.
  assert (np.diff(session) >= 0).all() and (np.diff(session) <= 1).all()
  assert np.array_equal(world.session_user[session], user)
  assert np.bincount(user, minlength=c.num_users).min() >= 2
  assert np.array_equal(world.event_hour, (t - c.start_time) // 3600 % 24)
  assert t.min() >= c.start_time
  assert world.event_position.min() >= 0
  assert world.event_position.max() < c.results_per_search


def test_zipf_popularity_is_skewed(world):
  pop = np.sort(world.item_popularity)[::-1]
  assert pop[:len(pop) // 100].sum() > 0.2  # top 1% of items
  counts = np.sort(np.bincount(world.event_item,
                               minlength=world.num_items))[::-1]
  assert counts[:len(counts) // 100].sum() > 5 * len(counts) // 100 * (
      counts.mean())


def test_polysemous_words_span_two_roots(world):
  words = world.polysemous_words()
  assert {"apple", "mouse", "bass", "jaguar"} <= set(words)
  queries = list(world.query_strings)
  for word, roots in words.items():
    assert len(roots) >= 2
    word_id = list(world.words).index(word)
    in_title = (world.item_tokens == word_id).any(axis=1)
    assert len(np.unique(world.item_root[in_title])) >= 2, word
    # The bare word is a query with an intent per meaning, and its exact
    # matches lie in both roots.
    q = queries.index(word)
    exact = world.judged_item[(world.judged_query == q)
                              & (world.judged_grade == 3)]
    assert len(np.unique(world.item_root[exact])) >= 2, word
  apple = world.to_search_dataset().query_features["num_intents"][
      queries.index("apple")]
  assert apple >= 2


def test_polysemous_search_rate_sends_meanings_to_the_bare_word(world):
  busy = synthetic.generate(
      dataclasses.replace(CONFIG, polysemous_search_rate=1.0))
  words = world.polysemous_words()
  bare = [list(world.query_strings).index(w) for w in words]
  before = np.isin(world.search_query, bare).sum()
  after = np.isin(busy.search_query, bare).sum()
  assert after > 2 * before > 0
  # The string is ambiguous, the intent stays one meaning of the word.
  for word, roots in words.items():
    searches = busy.search_query == list(busy.query_strings).index(word)
    seeds = busy.intent_item[busy.search_intent[searches]]
    assert set(busy.root_names[busy.item_root[seeds]]) <= set(roots), word
  # Only the searches change: catalogue, users, events and queries do not.
  mine, theirs = _digests(world), _digests(busy)
  for name in mine:
    if name.startswith(("item_", "user_", "event_", "query_", "intent_")):
      assert theirs[name] == mine[name], name
  assert theirs["search_query"] != mine["search_query"]


def test_recent_brand_click_boost_adds_clicks_on_browsed_brands(world):
  fond = synthetic.generate(
      dataclasses.replace(CONFIG, recent_brand_click_boost=3.0))
  # Only the clicks change: same searches, and every click of the default
  # world is still there (the same draws, a larger attraction).
  mine, theirs = _digests(world), _digests(fond)
  for name in mine:
    if not name.startswith("click_"):
      assert theirs[name] == mine[name], name
  before = set(zip(world.click_search, world.click_position))
  after = set(zip(fond.click_search, fond.click_position))
  assert before < after
  # Every added click is on a brand among the user's newest browsing events
  # before the search (the boost reads the last RECENT_BRAND_EVENTS up to
  # the event the search follows; twice that many cover it).
  keys = np.asarray(sorted(after - before))
  added = np.flatnonzero(np.isin(
      fond.click_search.astype(np.int64) * 1000 + fond.click_position,
      keys[:, 0] * 1000 + keys[:, 1]))
  assert len(added) > 0.05 * len(world.click_item)
  window = 2 * synthetic.RECENT_BRAND_EVENTS
  for c in added:
    s = fond.click_search[c]
    events = np.flatnonzero((fond.event_user == fond.search_user[s])
                            & (fond.event_time < fond.search_time[s]))[-window:]
    browsed = fond.item_brand[fond.event_item[events]]
    assert fond.item_brand[fond.click_item[c]] in browsed


def test_queries_have_typos_and_synonyms(world):
  typo = world.query_has_typo
  synonym = world.query_has_synonym
  assert 0.02 < typo.mean() < 0.5
  assert 0.02 < synonym.mean() < 0.5
  # A typo is a small edit of a clean word.
  for variant in np.unique(world.query_tokens[world.query_tokens
                                              >= world.num_title_words]):
    clean = world.words[world.typo_of[variant]]
    misspelt = world.words[variant]
    assert misspelt != clean and abs(len(misspelt) - len(clean)) <= 1
    assert misspelt not in set(world.words[:world.num_title_words])
  # Synonyms never appear in titles: a vocabulary gap for lexical matching.
  synonyms = world.leaf_synonyms[world.leaf_synonyms >= 0]
  assert not np.isin(world.item_tokens, synonyms).any()
  assert len(set(world.query_strings)) == world.num_queries
  assert world.num_queries <= CONFIG.num_queries


def test_relevance_is_graded_and_follows_intents(world):
  grades = np.bincount(world.judged_grade, minlength=4)
  assert (grades > 0).all() and grades.shape == (4,)
  # Seed items are exact matches of their own query.
  assert (world.relevance(world.intent_query, world.intent_item) == 3).all()
  # For single-intent leaf queries: 3 => same leaf and every mentioned field,
  # 0 => another mid category.
  intents = world.to_search_dataset().query_features
  single = intents["num_intents"] == 1
  q, item, g = world.judged_query, world.judged_item, world.judged_grade
  leaf = intents["intent_leaf_category"][q]
  sel = single[q] & (leaf >= 0)
  exact = sel & (g == 3)
  assert (world.item_leaf[item[exact]] == leaf[exact]).all()
  brand = intents["intent_brand"][q]
  with_brand = exact & (brand >= 0)
  assert (world.item_brand[item[with_brand]] == brand[with_brand]).all()
  colour = intents["intent_colour"][q]
  with_colour = exact & (colour >= 0)
  assert (world.item_colour[item[with_colour]] + 1
          == colour[with_colour]).all()
  irrelevant = sel & (g == 0)
  assert (world.item_mid[item[irrelevant]]
          != world.leaf_mid[leaf[irrelevant]]).all()
  # Judgments are bounded per query and unique pairs.
  per_query = np.bincount(q, minlength=world.num_queries)
  assert per_query.min() >= 1
  key = q.astype(np.int64) * world.num_items + item
  assert len(np.unique(key)) == len(key)
  # relevance() broadcasts.
  assert world.relevance(0, np.arange(5)).shape == (5,)


def test_clicks_are_position_and_popularity_biased(world):
  c = CONFIG
  shown = np.bincount(world.click_position, minlength=c.results_per_search)
  assert (np.diff(shown[:5]) < 0).all()
  assert shown[0] > 3 * shown[-1]
  # Noisy clicks: some clicked items are irrelevant to the user's intent.
  assert 0.02 < (world.click_grade == 0).mean() < 0.3
  assert (world.click_grade == 3).mean() > 0.5
  assert np.array_equal(
      world.click_grade,
      synthetic._grade(world, *(  # pylint: disable=protected-access
          f[world.search_intent[world.click_search]]
          for f in (world.intent_leaf, world.intent_brand,
                    world.intent_colour, world.intent_size)),
                       world.click_item))
  # A search follows one of the user's events.
  assert (world.click_time > world.search_time[world.click_search]).all()
  first_event = np.full(world.num_users, np.iinfo(np.int64).max)
  np.minimum.at(first_event, world.event_user, world.event_time)
  assert (world.search_time > first_event[world.search_user]).all()


def test_rec_dataset(world):
  data = world.to_rec_dataset()
  assert isinstance(data, RecDataset) and data.name == "synthetic"
  assert data.num_items == CONFIG.num_items
  assert data.num_users == CONFIG.num_users
  inter = data.interactions
  assert isinstance(inter, Interactions) and inter.timestamp is not None
  assert len(inter) == len(world.event_user)
  for features in (data.user_features, data.item_features):
    for name, values in features.items():
      assert values.dtype == np.int32, name
      vocab = data.feature_vocabularies[name]
      check_index_range(values[values >= 0], len(vocab), name, "synthetic")
  assert set(data.user_features) == {"gender", "age", "power"}
  assert data.item_features["title"].shape == (CONFIG.num_items, 5)
  titles = data.item_titles
  assert titles.shape == (CONFIG.num_items,)
  words = data.feature_vocabularies["title"].decode(
      data.item_features["title"][0][data.item_features["title"][0] >= 0])
  assert titles[0] == " ".join(words)
  assert titles[0].split()[0] == data.feature_vocabularies["brand"].ids[
      data.item_features["brand"][0]]
  leaf_name = data.feature_vocabularies["leaf_category"].ids[
      data.item_features["leaf_category"][0]]
  assert titles[0].split()[-1] == leaf_name.split("/")[-1]


def test_search_dataset(world):
  data = world.to_search_dataset()
  assert isinstance(data, SearchDataset) and data.name == "synthetic"
  assert data.num_queries == world.num_queries
  assert data.queries.index("apple") == list(world.query_strings).index(
      "apple")
  j = data.judgments
  assert set(np.unique(j.grade)) == {0.0, 1.0, 2.0, 3.0}
  check_index_range(j.query, data.num_queries, "query", "synthetic")
  check_index_range(j.item, data.num_items, "item", "synthetic")
  inter = data.interactions
  assert len(inter) == len(world.click_item) and inter.query is not None
  assert all(q in data.queries for q in inter.query[:50])
  assert len(data.users) == CONFIG.num_users
  for name, values in data.query_features.items():
    assert values.shape == (data.num_queries,) and values.dtype == np.int32
  assert data.item_text["category"][0].count(" > ") == 2


def test_config_validation():
  bad = [dict(num_items=0), dict(num_items=100),  # < 128 leaves
         dict(num_brands=3), dict(noise_rate=1.5),
         dict(session_focus=0.95, noise_rate=0.1), dict(seed=-1),
         dict(num_interests=500), dict(mean_session_length=0.5),
         dict(zipf_exponent=float("nan")), dict(num_users=2.5),
         dict(polysemous_search_rate=1.5),
         dict(recent_brand_click_boost=-1.0),
         dict(recent_brand_click_boost=float("inf"))]
  for kwargs in bad:
    with pytest.raises(ValueError):
      synthetic.SyntheticConfig(**kwargs)


def test_scaled_config_and_generation():
  big = synthetic.SyntheticConfig.scaled(1_000_000)
  assert big.num_users == 10_000 and big.num_leaves >= 3000
  assert big.num_brands == 5000 and big.num_queries == 20_000
  config = synthetic.SyntheticConfig.scaled(50_000, num_users=2000, seed=3)
  start = time.perf_counter()
  world = synthetic.generate(config)
  assert time.perf_counter() - start < 15
  assert world.num_items == 50_000 and world.num_users == 2000
  assert np.array_equal(np.unique(world.item_leaf),
                        np.arange(config.num_leaves))
  assert world.num_queries == config.num_queries
  # Judgments stay bounded per query whatever the catalogue size.
  per_query = np.bincount(world.judged_query, minlength=world.num_queries)
  intents = world.to_search_dataset().query_features["num_intents"]
  rows = np.bincount(world.intent_query, minlength=world.num_queries)
  bound = (intents * (config.judged_per_query + config.judged_related)
           + config.judged_random + rows)
  assert (per_query <= bound).all()
  assert per_query.max() < 100


def test_tiny_and_large_trees():
  tiny = synthetic.generate(synthetic.SyntheticConfig(
      num_roots=1, mids_per_root=1, leaves_per_mid=1, num_items=3,
      num_users=4, num_brands=1, num_shops=1, num_queries=5))
  assert tiny.num_items == 3 and tiny.polysemous_words() == {}
  wide = synthetic.generate(synthetic.SyntheticConfig(
      num_roots=10, mids_per_root=5, leaves_per_mid=6, num_items=600,
      num_users=20, num_brands=30, num_shops=30))
  assert len(wide.root_names) == 10 and len(set(wide.leaf_names)) == 300
  assert len(set(wide.words)) == len(wide.words)
