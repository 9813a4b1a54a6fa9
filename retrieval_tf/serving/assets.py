"""What every servable does with its vocabularies and requests: id
vocabularies written as asset files, looked up in the graph, and a check
that a request has rows before any op indexes into it."""

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
