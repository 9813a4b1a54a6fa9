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
                          data.test.item_id[:, None])
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
  np.testing.assert_array_equal(capped.test.item_id, full.test.item_id[rows])
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


def test_unrelated_donors_fit_the_rule():
  user = np.array([0, 0, 1, 2, 3, 4])
  intent_mid = np.array([5, 5, 6, -1, 5, 7])
  # Behaviour mid categories per row, -2 = padding.
  mids = np.array([[5, -2], [6, -2], [7, 5], [8, 8], [-2, -2], [6, 7]])
  donor = data_lib.unrelated_donors(user, intent_mid, mids, seed=1,
                                    tries=200)
  np.testing.assert_array_equal(
      donor, data_lib.unrelated_donors(user, intent_mid, mids, seed=1,
                                       tries=200))
  assert donor[3] == -1  # no category intent: no donor
  for row, d in enumerate(donor):
    if d < 0:
      continue
    assert user[d] != user[row]
    assert (mids[d] >= 0).any()  # the donor has behaviour
    assert intent_mid[row] not in mids[d]
  # Rows 0 and 1 (mid 5) can only take rows 3 or 5; row 4 (mid 5) can also
  # take row 1 (another user, mid 6); row 5 (mid 7) only rows 0, 1 or 3.
  assert set(donor[[0, 1]]) <= {3, 5}
  assert donor[4] in (1, 3, 5)
  assert donor[5] in (0, 1, 3)
  with pytest.raises(ValueError, match="3 users, 2 intents"):
    data_lib.unrelated_donors(user[:3], intent_mid[:2], mids[:3])


def test_synthetic_swapped_slice():
  world = synthetic.generate(synthetic.SyntheticConfig(
      num_items=200, num_users=60, num_brands=20, num_shops=20,
      num_queries=100, seed=3))
  data = data_lib.from_synthetic(world, lengths=(4, 6, 8))
  test = data.test
  assert data.donor.shape == (len(test),)
  found = data.donor >= 0
  assert found.mean() > 0.8  # the slice covers most of the test set
  donors = test.take(data.donor[found])
  windows = np.concatenate([donors.real_time, donors.short_term,
                            donors.long_term], axis=1)
  intent = world.to_search_dataset().query_features[
      "intent_mid_category"][test.query_index[found]]
  donor_mids = np.where(windows >= 0,
                        world.item_mid[np.maximum(windows, 0)], -2)
  assert not (donor_mids == intent[:, None]).any()
  assert (world.search_user[donors.search] !=
          world.search_user[test.search[found]]).all()
  grafted = test.take(found).with_user_context_of(donors)
  np.testing.assert_array_equal(grafted.query, test.query[found])
  np.testing.assert_array_equal(grafted.item_id, test.item_id[found])
  np.testing.assert_array_equal(grafted.long_term, donors.long_term)
  np.testing.assert_array_equal(grafted.history_query,
                                donors.history_query)
  with pytest.raises(ValueError, match="context rows"):
    test.with_user_context_of(donors)

