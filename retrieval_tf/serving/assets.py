"""What every servable does with its vocabularies and requests: id
vocabularies written as asset files, looked up in the graph, a check that
a request has rows before any op indexes into it, and the per-request k
(the one k rule of every servable: docs/serving.md, "k")."""

from __future__ import annotations

import os
from typing import Dict, NamedTuple, Sequence

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
  """The request's tensors, usable only after the checks that `request[key]`
  has rows and that every input has as many (so an empty batch or a field
  with the wrong number of rows fails naming it, not inside a later op)."""
  batch = tf.shape(request[key])[0]
  checks = [tf.debugging.assert_positive(
      batch, message="empty batch: the request has no rows")]
  checks += [tf.debugging.assert_equal(
      tf.shape(value)[0], batch,
      message=f"{name} must have one row per request row, as {key} has")
             for name, value in sorted(request.items()) if name != key]
  with tf.control_dependencies(checks):
    return {name: tf.identity(value) for name, value in request.items()}


class KRange(NamedTuple):
  """The k a servable answers: 1..`max_k`, and why `max_k` is what it is
  (`reason`, for messages and the model card); `num_items`: the items the
  servable can ever return."""
  max_k: int
  num_items: int
  reason: str


def k_range(max_k: int, num_items: int,
            holder: str = "the catalogue") -> KRange:
  """The servable's k range, fixed at export: `max_k` (the largest k asked
  for) capped at `num_items`, the items `holder` can ever return (e.g.
  "the catalogue", "this shard", "the candidate pool").

  Raises:
    ValueError: `max_k` or `num_items` below 1.
  """
  max_k, num_items = int(max_k), int(num_items)
  if max_k < 1:
    raise ValueError(f"max_k must be >= 1, got {max_k}")
  if num_items < 1:
    raise ValueError(f"{holder} holds no items")
  holds = f"{holder} holds {num_items} items"
  if num_items <= max_k:
    return KRange(num_items, num_items, holds)
  return KRange(max_k, num_items,
                f"max_k was set to {max_k} at export ({holds})")


def k_card(limit: KRange) -> Dict[str, object]:
  """The model card entries of the k rule (docs/serving.md, "k")."""
  return {"max_k": limit.max_k, "max_k_reason": limit.reason,
          "num_items": limit.num_items,
          "padding": {"item_id": "", "score": "-inf"}}


def request_k(k: tf.Tensor, batch: tf.Tensor, limit: KRange) -> tf.Tensor:
  """The one k of a request: `k [batch]` must hold one value per row, the
  same in every row, in 1..`limit.max_k`; returns that scalar, computed only
  after the checks pass. A bad k is an `InvalidArgumentError` naming k, the
  range and why, e.g. "k=61 is outside 1..60: k must be <= 60 because the
  catalogue holds 60 items"."""
  checks = [tf.debugging.assert_equal(
      tf.size(k), batch, message="k must have one value per row")]
  with tf.control_dependencies(checks):
    k0 = tf.identity(k[0])
  outside = tf.strings.join(["k=", tf.strings.as_string(k0),
                             f" is outside 1..{limit.max_k}: "])
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          k, tf.fill(tf.shape(k), k0),
          message="k must be the same for every row of a request"),
      tf.debugging.Assert(k0 >= 1, [outside + "k must be >= 1"]),
      tf.debugging.Assert(k0 <= limit.max_k, [
          outside + f"k must be <= {limit.max_k} because {limit.reason}"])]):
    return tf.identity(k0)
