"""Versioned atomic export and the servable checker (good and ScaNN)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from retrieval_tf import export
from retrieval_tf.compat import tf


class _TinyServable(tf.Module):
  """Exact top-k over 6 items, ids from an asset vocabulary."""

  def __init__(self, vocab_path):
    super().__init__()
    self.items = tf.Variable(np.eye(6, 4, dtype=np.float32) +
                             np.arange(6, dtype=np.float32)[:, None] * 0.01,
                             trainable=False)
    self.vocab = tf.saved_model.Asset(vocab_path)
    self.ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            self.vocab, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32),
                                tf.TensorSpec([None], tf.int32)])
  def serve(self, query, k):
    scores, indices = tf.math.top_k(
        tf.matmul(query, self.items, transpose_b=True), k=k[0])
    return {"item_ids": self.ids.lookup(tf.cast(indices, tf.int64)),
            "scores": scores}


def _export(tmp_path, base):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(f"item-{i}" for i in range(6)) + "\n")
  module = _TinyServable(str(vocab))
  card = {"model": "tiny", "example_requests": {"serving_default": {
      "query": [[1, 0, 0, 0], [0, 0, 1, 0]], "k": [2, 2]}}}
  return export.export_servable(str(base), module,
                                {"serving_default": module.serve}, card)


def test_versions_are_numbered_and_never_overwritten(tmp_path):
  base = tmp_path / "export"
  first = _export(tmp_path, base)
  second = _export(tmp_path, base)
  assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
  assert export.versions(str(base)) == [1, 2]
  card = json.loads((base / "2" / export.MODEL_CARD).read_text())
  assert card["model"] == "tiny" and card["libraries"]["tensorflow"]
  assert export.latest_version_dir(str(base)) == second


def test_failed_export_leaves_no_version(tmp_path):
  base = tmp_path / "export"
  module = tf.Module()
  with pytest.raises(ValueError, match="serving_default"):
    export.export_servable(str(base), module, {})

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def broken(x):
    return {"y": tf.numpy_function(np.sin, [x], tf.float32)}

  module.broken = broken
  with pytest.raises(Exception):
    export.export_servable(str(base), module, {"serving_default": broken},
                           {"bad": object()})
  assert export.versions(str(base)) == []
  assert os.listdir(base) == []


def test_checker_passes_a_stock_tf_servable(tmp_path):
  base = tmp_path / "export"
  path = _export(tmp_path, base)
  # The command line prints the report of `check.check` (which every
  # exporter's test calls): all four checks passed.
  proc = subprocess.run([sys.executable, "-m", "retrieval_tf.serving.check",
                         str(base)], capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert lines[0] == f"SERVABLE: {path} (serving_default)"
  assert "all stock TensorFlow" in lines[1]
  assert lines[2].startswith("  load: fresh TensorFlow-only process")
  assert lines[3] == "  cli: saved_model_cli run answered"
  assert lines[4] == ("  rest: instances, inputs bodies -> PredictRequest "
                      "match the direct call")


def test_checker_rejects_a_tfrs_scann_export_naming_the_op(tmp_path):
  pytest.importorskip("scann")
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  items = tf.constant(rng.normal(size=(500, 8)).astype(np.float32))
  scann = tfrs.layers.factorized_top_k.ScaNN(k=5, num_leaves=10,
                                             num_leaves_to_search=5)
  scann.index(items, tf.constant([str(i) for i in range(500)]))
  scann(tf.constant(rng.normal(size=(1, 8)).astype(np.float32)))

  class Wrapper(tf.Module):

    def __init__(self):
      super().__init__()
      self.index = scann

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def serve(self, query):
      scores, ids = self.index(query)
      return {"scores": scores, "item_ids": ids}

  wrapper = Wrapper()
  base = tmp_path / "scann"
  export.export_servable(str(base), wrapper,
                         {"serving_default": wrapper.serve})
  # The command line reports the `CheckFailed` of `check.check`.
  proc = subprocess.run([sys.executable, "-m", "retrieval_tf.serving.check",
                         str(base)], capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 1
  assert "NOT SERVABLE" in proc.stdout and "Scann" in proc.stdout
