"""MGDSPR examples from the synthetic world: windows precede the search,
the temporal split, the zero-vector slice, the intent fields."""

import numpy as np

from retrieval_tf.datasets import synthetic
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
