"""MGDSPR examples from the synthetic world: windows precede the search,
the temporal split, the zero-vector slice, the intent fields."""

import numpy as np
import pytest

from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.errors import DataError
from mgdspr_tf import data as data_lib


def test_synthetic_examples():
  world = synthetic.generate(synthetic.SyntheticConfig(
      num_items=200, num_users=60, num_brands=20, num_shops=20,
      num_queries=100, seed=3))
  data = data_lib.from_synthetic(world, lengths=(4, 6, 8))
  assert len(data.train) + len(data.test) == len(world.click_item)
  assert data.train.real_time.shape[1:] == (4,)
  assert data.test.long_term.shape[1:] == (8,)
  # Test searches come after every training search (temporal split).
  search_time = world.search_time
  assert search_time[data.train.search].max() <= search_time[
      data.test.search].min()
  # Windows are exactly `behaviour_windows` of the click's search time
  # (which `test_mgdspr_relevance.py` checks against a loop).
  ex = data.train
  expected = data_lib.behaviour_windows(
      world.event_user, world.event_item, world.event_time,
      world.search_user[ex.search], world.search_time[ex.search], (4, 6, 8))
  for name, want in zip(("real_time", "short_term", "long_term"), expected):
    np.testing.assert_array_equal(getattr(ex, name), want)
  assert (ex.real_time[:, 0] >= 0).any()
  assert data.unrelated.shape == (len(data.test),)
  assert data.item_fields.shape == (world.num_items, 4)
  grades = data.relevance(data.test.query_index[:, None],
                          data.test.item[:, None])
  assert grades.shape == (len(data.test), 1)
  assert set(data.attribute_sizes) == set(data_lib.ATTRIBUTES)


def test_max_test_caps_searches_not_rows():
  world = synthetic.generate(synthetic.SyntheticConfig(
      num_items=200, num_users=60, num_brands=20, num_shops=20,
      num_queries=100, seed=3))
  full = data_lib.from_synthetic(world, lengths=(4, 6, 8))
  searches, counts = np.unique(full.test.search, return_counts=True)
  assert (counts > 1).any()  # some searches have several clicked items
  cap = len(searches) // 2
  capped = data_lib.from_synthetic(world, lengths=(4, 6, 8), max_test=cap)
  kept = np.unique(capped.test.search)
  assert len(kept) == cap
  # Every kept search keeps all of its rows, in the original order.
  rows = np.isin(full.test.search, kept)
  np.testing.assert_array_equal(capped.test.search, full.test.search[rows])
  np.testing.assert_array_equal(capped.test.item, full.test.item[rows])
  assert capped.unrelated.shape == (len(capped.test),)
  assert full.test.first_searches(None) is full.test
  assert full.test.first_searches(len(searches)) is full.test


def test_relevance_control_fields_can_be_restricted():
  world = synthetic.generate(synthetic.SyntheticConfig(
      num_items=200, num_users=60, num_brands=20, num_shops=20,
      num_queries=100, seed=3))
  data = data_lib.from_synthetic(world, lengths=(4, 6, 8))
  assert data_lib.with_intent_fields(data, []) is data
  brand = data_lib.with_intent_fields(data, ["brand"])
  assert list(brand.intent_fields) == ["brand"]
  column = list(data.intent_fields).index("brand")
  np.testing.assert_array_equal(brand.item_fields[:, 0],
                                data.item_fields[:, column])
  assert brand.intent_fields["brand"] == data.intent_fields["brand"]
  two = data_lib.with_intent_fields(data, ["size", "brand"])
  assert two.item_fields.shape == (world.num_items, 2)
  with pytest.raises(DataError, match="no item field shop_name.*brand"):
    data_lib.with_intent_fields(data, ["shop_name"])
