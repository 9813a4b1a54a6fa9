"""Property tests of the query CLI's request check: any JSON request gives a
one-line QueryError, the servable's own named refusal, or a valid answer
(Hypothesis, derandomized so that CI cannot flake)."""

import json

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from retrieval_tf import query
from retrieval_tf.compat import tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.models.two_tower_servable import (export_two_tower,
                                                    raw_requests)

L = 4
MAX_K = 20
# The servable's own checks (its assertion texts), the only refusals left to
# it once a request has passed `request_tensors`.
SERVABLE_REFUSALS = ("k must be >= 1", f"k must be <= {MAX_K}",
                     "same for every row", "empty batch")


@pytest.fixture(scope="module")
def servable(tmp_path_factory):
  """(dataset, its request rows, serving concrete function, its input specs)
  of a small two-tower export."""
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=7, num_items=150, num_users=40))
  data = world.to_rec_dataset()
  model = TwoTowerModel(data.num_users, data.num_items,
                        {f: len(data.feature_vocabularies[f])
                         for f in data.user_features},
                        embedding_dim=4, output_dim=4, hidden_units=[8])
  items = model.item_embedding({"item_id": np.arange(data.num_items)})
  # Keywords only: the argument order of export_two_tower may change.
  path = export_two_tower(
      model, dataset=data, item_vectors=items.numpy(),
      export_dir=str(tmp_path_factory.mktemp("export")), history_length=L,
      max_k=MAX_K)
  _, fn = query.load_signature(path)
  return data, _Rows(data), fn, fn.structured_input_signature[1]


# Integers at and beyond the int32 / int64 limits (and ones that wrap to 3).
EDGE_INTS = st.sampled_from([2**31 - 1, 2**31, 2**32 + 3, -2**31, -2**31 - 1,
                             2**63 - 1, 2**63, 2**64 + 3, -2**63 - 1])
JSON_SCALARS = (st.none() | st.booleans() | st.text(max_size=4)
                | st.integers(-2**70, 2**70) | EDGE_INTS
                | st.floats(allow_nan=True, allow_infinity=True))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=8)


class _Rows:
  """Every user's request row (`raw_requests`), with a short repr for
  Hypothesis' reports."""

  def __init__(self, data):
    self.request = raw_requests(data, range(data.num_users), L)
    self.num_users = data.num_users

  def __repr__(self):
    return f"_Rows({self.num_users} users)"


@st.composite
def requests(draw, pool):
  """A valid request of 0-3 rows of `pool`, then up to three mutations: an
  input dropped, an unknown one added, one replaced by any JSON value, k
  changed (to any value, or to an integer at the dtype limits), a history
  row shortened, or the whole request replaced."""
  rows = draw(st.lists(st.integers(0, pool.num_users - 1), min_size=0,
                       max_size=3))
  request = {name: [values[r] for r in rows]
             for name, values in pool.request.items()}
  request["k"] = [draw(st.integers(1, MAX_K))] * len(rows)
  for _ in range(draw(st.integers(0, 3))):
    if not isinstance(request, dict):
      break
    name = draw(st.sampled_from(sorted(request) or ["k"]))
    change = draw(st.sampled_from(["drop", "add", "replace", "k", "k_edge",
                                   "ragged", "whole"]))
    if change == "drop":
      request.pop(name, None)
    elif change == "add":
      request[draw(st.text(max_size=6))] = draw(JSON_VALUES)
    elif change == "replace":
      request[name] = draw(JSON_VALUES)
    elif change == "k":
      request["k"] = draw(
          st.lists(st.integers(-3, MAX_K + 3) | EDGE_INTS,
                   min_size=len(rows), max_size=len(rows))
          | st.lists(JSON_SCALARS, max_size=3) | JSON_SCALARS)
    elif change == "k_edge":
      request["k"] = [draw(EDGE_INTS)] * len(rows)
    elif change == "ragged" and isinstance(request.get("history"), list) \
        and request["history"] and isinstance(request["history"][0], list):
      request["history"][0] = request["history"][0][:-1]
    elif change == "whole":
      request = draw(JSON_VALUES)
  # What the CLI receives went through JSON.
  return json.loads(json.dumps(request))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.data())
def test_requests_get_a_clear_error_or_a_valid_answer(servable, drawn):
  data, pool, fn, specs = servable
  request = drawn.draw(requests(pool))
  try:
    tensors = query.request_tensors(request, specs)
  except query.QueryError as e:
    message = str(e)
    assert message and "\n" not in message, message
    assert ("input" in message or "request" in message), message
    event("QueryError")
    return
  assert set(tensors) == set(specs)
  for name, spec in specs.items():
    assert tensors[name].dtype == spec.dtype
    assert spec.shape.is_compatible_with(tensors[name].shape)
    values = tensors[name].numpy()
    if spec.dtype == tf.string:
      values = np.char.decode(values.astype(bytes), "utf-8")
    assert values.tolist() == request[name], name  # nothing wrapped
  try:
    out = {n: t.numpy() for n, t in fn(**tensors).items()}
  except tf.errors.InvalidArgumentError as e:
    summary = query._error_summary(  # pylint: disable=protected-access
        e.message)
    assert any(r in summary for r in SERVABLE_REFUSALS), summary
    event("servable refusal")
    return
  rows, k = len(request["k"]), request["k"][0]
  assert out["item_ids"].shape == (rows, k) == out["scores"].shape
  assert all(x.decode() in data.items for x in out["item_ids"].ravel())
  assert np.isfinite(out["scores"]).all()
  event("answer")
