"""The query CLI refuses bad requests and damaged exports with exit code 2
and a message naming the input or path; exports clean up after killed ones.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from retrieval_tf import export, query
from retrieval_tf.compat import tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.models.two_tower_servable import (export_two_tower,
                                                    raw_requests)

L = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(dataset, version folder) of a small two-tower servable with max_k 20."""
  world = synthetic.generate(synthetic.SyntheticConfig(
      seed=5, num_items=150, num_users=40))
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
      max_k=20)
  return data, path


@pytest.fixture(scope="module")
def specs(exported):
  """The serving signature's input specs."""
  _, fn = query.load_signature(exported[1])
  return fn.structured_input_signature[1]


def _good(data, rows=1):
  request = raw_requests(data, list(range(rows)), L)
  request["k"] = [3] * rows
  return request


def _cli(path, request):
  return subprocess.run(
      [sys.executable, "-m", "retrieval_tf.query", path, "--json",
       request if isinstance(request, str) else json.dumps(request)],
      capture_output=True, text=True, timeout=300)


def _error_line(proc):
  """The CLI's own message: the last line of stderr (TF logs come first)."""
  return proc.stderr.strip().splitlines()[-1]


def test_a_good_request_answers(exported):
  data, path = exported
  out = query.query(path, _good(data, rows=2))
  assert out["item_ids"].shape == (2, 3)
  assert all(x.decode() in data.items for x in out["item_ids"].ravel())


def test_out_of_range_k_is_refused_not_wrapped(exported):
  data, path = exported
  proc = _cli(path, dict(_good(data), k=[4294967299]))
  assert proc.returncode == 2, proc.stdout
  assert _error_line(proc) == ("error: input 'k': 4294967299 is outside "
                               "int32 (-2147483648..2147483647)")
  assert "Traceback" not in proc.stderr and not proc.stdout


@pytest.mark.parametrize("k, rule", [
    (21, "k must be <= 20 because max_k was set to 20 at export (the "
         "catalogue holds 150 items)"),
    (0, "k must be >= 1")])
def test_k_outside_max_k_is_one_line_with_exit_2(exported, k, rule):
  data, path = exported
  proc = _cli(path, dict(_good(data), k=[k]))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert _error_line(proc) == ("error: the servable rejected the request: "
                               f"k={k} is outside 1..20: {rule}")
  assert "Traceback" not in proc.stderr and not proc.stdout


@pytest.mark.parametrize("dtype, value, ok", [
    (tf.int32, 2**31 - 1, True), (tf.int32, 2**31, False),
    (tf.int32, -2**31, True), (tf.int32, -2**31 - 1, False),
    (tf.int64, 2**63 - 1, True), (tf.int64, 2**63, False),
    (tf.int64, -2**63 - 1, False)])
def test_integer_ranges_follow_the_signature_dtype(dtype, value, ok):
  specs = {"x": tf.TensorSpec([None], dtype)}
  if ok:
    tensors = query.request_tensors({"x": [value]}, specs)
    assert tensors["x"].dtype == dtype and int(tensors["x"][0]) == value
  else:
    with pytest.raises(query.QueryError,
                       match=f"input 'x': {value} is outside {dtype.name}"):
      query.request_tensors({"x": [value]}, specs)


def test_unknown_inputs_are_refused(exported, specs):
  data = exported[0]
  accepted = ", ".join(sorted(specs))
  with pytest.raises(query.QueryError) as error:
    query.request_tensors(dict(_good(data), kk=[3], zz=1), specs)
  assert str(error.value) == (f"unknown input(s) 'kk', 'zz'; "
                              f"serving_default takes {accepted}")


@pytest.mark.parametrize("change, message", [
    ({"k": 3}, "input 'k' must have shape [batch] (1 level(s) of lists, "
               "e.g. [5]), got the scalar 3"),
    ({"user_id": "u1"}, "input 'user_id' must have shape [batch] (1 level(s) "
                        "of lists, e.g. [\"a\"]), got the scalar \"u1\""),
    ({"history": ["1", "2"]}, "input 'history' must have shape [batch, any] "
                              "(2 level(s) of lists, e.g. [[\"a\"]]), got "
                              "only 1 level(s) of lists"),
    ({"history": {"a": 1}}, "input 'history' must have shape [batch, any] "
                            "(2 level(s) of lists, e.g. [[\"a\"]]), got a "
                            "JSON object"),
    ({"k": [[3]]}, "input 'k' must have shape [batch], got a list where a "
                   "int32 value belongs"),
    ({"k": [3.5]}, "input 'k' holds int32 values; got 3.5"),
    ({"k": [True]}, "input 'k' holds int32 values; got true"),
    ({"k": ["3"]}, "input 'k' holds int32 values; got \"3\""),
    ({"user_id": [7]}, "input 'user_id' holds string values; got 7; quote "
                       "it"),
    ({"k": [3, 3]}, "inputs disagree on the batch size"),
])
def test_bad_shapes_and_types_name_the_input(exported, specs, change,
                                             message):
  request = dict(_good(exported[0]), **change)
  with pytest.raises(query.QueryError) as error:
    query.request_tensors(request, specs)
  assert message in str(error.value)


def test_ragged_missing_and_non_object_requests(exported, specs):
  data = exported[0]
  request = dict(_good(data, rows=2), history=[["1", "2"], ["3"]])
  with pytest.raises(query.QueryError, match="input 'history' is ragged: its "
                     "lists at depth 2 have lengths 1 and 2"):
    query.request_tensors(request, specs)
  request = _good(data)
  del request["k"]
  with pytest.raises(query.QueryError, match="lacks input\\(s\\) k"):
    query.request_tensors(request, specs)
  with pytest.raises(query.QueryError, match="must be a JSON object"):
    query.request_tensors([1, 2], specs)


def test_cli_exit_codes(exported):
  data, path = exported
  proc = _cli(path, dict(_good(data), extra=[1]))
  assert proc.returncode == 2
  assert _error_line(proc) == ("error: unknown input(s) 'extra'; "
                                "serving_default takes history, k, user_age, "
                                "user_gender, user_id, user_power")
  proc = _cli(path, "[[[")
  assert proc.returncode == 2 and "--json is not valid JSON" in proc.stderr


def test_damaged_export_is_named(exported, tmp_path):
  data, path = exported
  copy = tmp_path / "model" / "1"
  shutil.copytree(path, copy)
  variables = copy / "variables" / "variables.data-00000-of-00001"
  variables.write_bytes(variables.read_bytes()[:variables.stat().st_size // 2])
  with pytest.raises(query.QueryError) as error:
    query.load_signature(str(copy.parent))
  assert str(error.value).startswith(f"damaged export: {copy} (")
  assert str(error.value).endswith("); re-export it")
  proc = _cli(str(copy.parent), _good(data))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert _error_line(proc).startswith(f"error: damaged export: {copy} (")
  assert "Traceback" not in proc.stderr
  with pytest.raises(query.QueryError, match="holds no SavedModel version"):
    query.load_signature(str(tmp_path / "nothing"))


class _Tiny(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def serve(self, x):
    return {"y": x + 1.0}


def test_export_removes_what_killed_exports_left(tmp_path):
  base = str(tmp_path)
  # A temporary folder whose process has exited, made the way an export
  # makes it (the process dies before the rename).
  dead = subprocess.run(
      [sys.executable, "-c", "import tempfile; from retrieval_tf import "
       "export; print(tempfile.mkdtemp(prefix=export._temp_prefix(), "
       f"dir={base!r}))"], capture_output=True, text=True, check=True,
      timeout=300).stdout.strip()
  live = os.path.join(base, export._temp_prefix() + "abc")
  elsewhere = os.path.join(base, f".tmp-export-{os.getpid()}@other-host.x1")
  elsewhere_old = os.path.join(base, ".tmp-export-1@other-host.x2")
  legacy = os.path.join(base, ".tmp-export-q8w2k1")
  legacy_old = os.path.join(base, ".tmp-export-z0z0z0")
  for folder in (live, elsewhere, elsewhere_old, legacy, legacy_old):
    os.makedirs(folder)
  day_ago = time.time() - export.STALE_AFTER_S - 60
  for folder in (elsewhere_old, legacy_old):
    os.utime(folder, (day_ago, day_ago))
  open(os.path.join(base, ".tmp-export-file"), "w").close()
  module = _Tiny()
  target = export.export_servable(base, module,
                                  {"serving_default": module.serve})
  assert target == os.path.join(base, "1")
  left = sorted(n for n in os.listdir(base) if n != "1")
  assert left == sorted([".tmp-export-file"] + [
      os.path.basename(f) for f in (live, elsewhere, legacy)])
  assert not os.path.exists(dead)


def test_in_process_numpy_requests_are_accepted(exported, specs):
  data = exported[0]
  request = {n: np.asarray(v) for n, v in _good(data, rows=2).items()}
  request["k"] = (np.int64(3), np.int32(3))
  tensors = query.request_tensors(request, specs)
  assert tensors["k"].dtype == tf.int32 and tensors["k"].shape == (2,)
  assert tensors["history"].shape == (2, len(request["history"][0]))
  with pytest.raises(query.QueryError, match="got the scalar 3"):
    query.request_tensors(dict(request, k=np.int64(3)), specs)
