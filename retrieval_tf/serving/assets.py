"""What every servable does with its vocabularies and requests: id
vocabularies written as asset files, looked up in the graph, a check that
a request has rows before any op indexes into it, and the per-request k."""

from __future__ import annotations

import os
from typing import Dict, Sequence

from retrieval_tf.compat import tf


def write_vocabulary(folder: str, name: str, values: Sequence[str]) -> str:
  """Writes `values` one per line to `folder/name.txt` (line number = id);
  returns the path. Entries with line breaks are refused."""
  path = os.path.join(folder, f"{name}.txt")
  for value in values:
    if "\n" in value or "\r" in value:
      raise ValueError(f"{name} vocabulary entry {value!r} has a line break")
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(f"{v}\n" for v in values))
  return path


def index_table(asset: tf.saved_model.Asset) -> tf.lookup.StaticHashTable:
  """string (line content) -> int64 line number; unknown -> -1."""
  return tf.lookup.StaticHashTable(
      tf.lookup.TextFileInitializer(
          asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
          tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)


def id_table(asset: tf.saved_model.Asset) -> tf.lookup.StaticHashTable:
  """int64 line number -> string (line content); unknown -> ""."""
  return tf.lookup.StaticHashTable(
      tf.lookup.TextFileInitializer(
          asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
          tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")


def non_empty(request: Dict[str, tf.Tensor],
              key: str = "history") -> Dict[str, tf.Tensor]:
  """The request's tensors, usable only after the check that `request[key]`
  has rows (so an empty batch fails with this message, not inside a later
  op)."""
  batch = tf.shape(request[key])[0]
  with tf.control_dependencies([tf.debugging.assert_positive(
      batch, message="empty batch: the request has no rows")]):
    return {name: tf.identity(value) for name, value in request.items()}


def request_k(k: tf.Tensor, batch: tf.Tensor, max_k: int) -> tf.Tensor:
  """The one k of a request: `k [batch]` must hold one value per row, the
  same in every row, in 1..`max_k`; returns that scalar, computed only after
  the checks pass (a bad k is an `InvalidArgumentError` naming the rule)."""
  checks = [tf.debugging.assert_equal(
      tf.size(k), batch, message="k must have one value per row")]
  with tf.control_dependencies(checks):
    k0 = tf.identity(k[0])
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          k, tf.fill(tf.shape(k), k0),
          message="k must be the same for every row of a request"),
      tf.debugging.assert_greater_equal(k0, 1, message="k must be >= 1"),
      tf.debugging.assert_less_equal(k0, max_k,
                                     message=f"k must be <= {max_k}")]):
    return tf.identity(k0)
