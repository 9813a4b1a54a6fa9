"""MGDSPR's offline metrics: the swapped-history slice of `evaluate` and
the user encoder."""

import dataclasses

import numpy as np
import pytest

from retrieval_tf.datasets import synthetic
from mgdspr_tf import data as data_lib
from mgdspr_tf import evaluation
from mgdspr_tf.model import MGDSPRModel


@pytest.mark.parametrize("context_free", [False, True])
def test_evaluate_swapped_slice(context_free):
  world = synthetic.generate(synthetic.SyntheticConfig(
      num_items=200, num_users=60, num_brands=20, num_shops=20,
      num_queries=100, seed=3))
  data = data_lib.from_synthetic(world, lengths=(4, 6, 8))
  model = MGDSPRModel(data.num_items, data.attribute_sizes, title_length=8,
                      dim=8, num_buckets=256, num_heads=2, max_real=4,
                      max_short=6, max_long=8, num_hard=0,
                      mgs=not context_free, behaviour=not context_free)
  model.set_catalogue(data.attributes, data.titles)
  rows = np.arange(len(data.test))
  # Each row its own donor: the swapped slice is the test set itself.
  # Another row's context: equal only for a model that reads no context.
  for donor, equal in ((rows, True), (np.roll(rows, 7), context_free)):
    out = evaluation.evaluate(model, dataclasses.replace(data, donor=donor),
                             ks=[10, 50], rc_k=10)
    assert out["swapped_searches"] == out["num_test_searches"]
    if equal:
      for m in ("recall@10", "recall@50", "p_good@10", "p_good@50"):
        assert out[f"swapped_{m}"] == pytest.approx(out[m])
  if context_free:
    out = evaluation.evaluate(model, data, ks=[10], rc_k=10)
    assert 0 < out["swapped_searches"] <= out["num_test_searches"]
    assert 0.0 <= out["swapped_recall@10"] <= 1.0
  else:
    encode = evaluation.user_encoder(model)
    grafted = data.test.with_user_context_of(data.test.take(np.roll(rows, 7)))
    assert not np.allclose(encode(grafted), encode(data.test))
