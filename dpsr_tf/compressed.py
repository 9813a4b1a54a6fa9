"""Compressed input (DPSR Sec. 5.1.2): training examples assembled by
`tf.data` from three files instead of one denormalised table.

* `users.tsv`: `user_id<TAB>feature...` (one row per user),
* `items.tsv`: `item_id<TAB>feature...` (one row per item),
* `interactions.tsv`: `query<TAB>user_id<TAB>item_id` (one row per event).

The two feature files are loaded into memory as lookup tables (id -> row,
`tf.lookup.StaticHashTable`, and one constant column per feature); the
interaction file is streamed and each batch gets its user and item features
appended by lookups. `write_joined` writes the equivalent denormalised
table (every event repeats its user's and item's features) and
`joined_dataset` reads it, so the two can be compared for size, speed and
content.

Every file has a header line. Columns named in `STRING_COLUMNS` are text,
all others int32. An interaction whose user or item id is missing from its
feature file fails the pipeline with `InvalidArgumentError` naming the file
and the missing ids.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets import reading
from retrieval_tf.datasets.errors import DataError

USERS, ITEMS, INTERACTIONS = "users.tsv", "items.tsv", "interactions.tsv"
JOINED = "joined.tsv"
STRING_COLUMNS = frozenset({"query", "user_id", "item_id", "title"})


def _check_text(name: str, values) -> None:
  for v in values:
    if "\t" in str(v) or "\n" in str(v):
      raise DataError(f"column {name}: value {str(v)[:40]!r} holds a tab or "
                      "a line break")


def _write(path: str, columns: Mapping[str, np.ndarray]) -> None:
  names = list(columns)
  for name in names:
    if name in STRING_COLUMNS:
      _check_text(name, columns[name])
  with open(path, "w", encoding="utf-8") as f:
    f.write("\t".join(names) + "\n")
    for row in zip(*(columns[n] for n in names)):
      f.write("\t".join(str(v) for v in row) + "\n")


def write_compressed(folder: str, users: Mapping[str, np.ndarray],
                     items: Mapping[str, np.ndarray],
                     interactions: Mapping[str, np.ndarray]) -> None:
  """Writes the three files; `users` starts with `user_id`, `items` with
  `item_id`, `interactions` is `query`, `user_id`, `item_id`."""
  if list(users)[0] != "user_id" or list(items)[0] != "item_id":
    raise ValueError("users must start with user_id and items with item_id")
  if list(interactions) != ["query", "user_id", "item_id"]:
    raise ValueError("interactions must be query, user_id, item_id")
  os.makedirs(folder, exist_ok=True)
  _write(os.path.join(folder, USERS), users)
  _write(os.path.join(folder, ITEMS), items)
  _write(os.path.join(folder, INTERACTIONS), interactions)


def write_joined(path: str, users: Mapping[str, np.ndarray],
                 items: Mapping[str, np.ndarray],
                 interactions: Mapping[str, np.ndarray]) -> None:
  """The denormalised table: interactions + `user_<f>` + `item_<f>`."""
  user_row = {u: i for i, u in enumerate(users["user_id"])}
  item_row = {t: i for i, t in enumerate(items["item_id"])}
  urows = np.asarray([user_row[u] for u in interactions["user_id"]])
  irows = np.asarray([item_row[t] for t in interactions["item_id"]])
  columns = dict(interactions)
  columns.update({f"user_{k}": np.asarray(v)[urows]
                  for k, v in users.items() if k != "user_id"})
  columns.update({f"item_{k}": np.asarray(v)[irows]
                  for k, v in items.items() if k != "item_id"})
  _write(path, columns)


def _read_table(path: str) -> Tuple[list, Dict[str, np.ndarray]]:
  if not os.path.isfile(path):
    raise DataError(f"feature file {path!r} does not exist")
  reader = csv.reader(io.StringIO(reading.read_text(path), newline=""),
                      delimiter="\t", quoting=csv.QUOTE_NONE)
  header = next(reader, None)
  if not header:
    raise DataError(f"{path}: the file is empty")
  reading.check_header(path, header)
  rows = list(reader)
  for n, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise DataError(f"{path}, line {n}: {len(row)} fields, the header has "
                      f"{len(header)}")
  columns = {}
  for j, name in enumerate(header):
    values = [r[j] for r in rows]
    if name in STRING_COLUMNS:
      columns[name] = np.asarray(values, object)
    else:
      try:
        columns[name] = np.asarray(values, np.int64).astype(np.int32)
      except ValueError:
        raise DataError(f"{path}: column {name!r} must hold integers") \
            from None
  return header, columns


class _FeatureTable:
  """One feature file in memory: id -> row, and the columns as constants."""

  def __init__(self, path: str, key: str, prefix: str):
    header, columns = _read_table(path)
    if header[0] != key:
      raise DataError(f"{path}: the first column must be {key!r}, got "
                      f"{header[0]!r}")
    ids = columns.pop(key).astype(str)
    if len(set(ids)) != len(ids):
      raise DataError(f"{path}: duplicate {key}")
    self.path, self.key = path, key
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids), tf.range(len(ids), dtype=tf.int64)),
        default_value=-1)
    self.columns = {f"{prefix}{k}": tf.constant(
        v.astype(str) if v.dtype == object else v)
                    for k, v in columns.items()}

  def lookup(self, ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    rows = self.table.lookup(ids)
    missing = tf.boolean_mask(ids, rows < 0)
    check = tf.debugging.Assert(
        tf.equal(tf.size(missing), 0),
        [f"{os.path.basename(self.path)} has no row for {self.key}(s):",
         missing[:5]], summarize=5)
    with tf.control_dependencies([check]):
      rows = tf.identity(rows)
    return {k: tf.gather(v, rows) for k, v in self.columns.items()}


def _split_lines(lines: tf.Tensor, width: int) -> tf.Tensor:
  fields = tf.strings.split(lines, "\t").to_tensor(shape=[None, width])
  return fields


def compressed_dataset(folder: str, batch_size: int = 1024
                       ) -> tf.data.Dataset:
  """Batches of `query`, `user_id`, `item_id`, `user_<f>`, `item_<f>`
  assembled from the three files (see the module docstring)."""
  users = _FeatureTable(os.path.join(folder, USERS), "user_id", "user_")
  items = _FeatureTable(os.path.join(folder, ITEMS), "item_id", "item_")
  path = os.path.join(folder, INTERACTIONS)
  if not os.path.isfile(path):
    raise DataError(f"interaction file {path!r} does not exist")

  def assemble(lines):
    fields = _split_lines(lines, 3)
    batch = {"query": fields[:, 0], "user_id": fields[:, 1],
             "item_id": fields[:, 2]}
    batch.update(users.lookup(batch["user_id"]))
    batch.update(items.lookup(batch["item_id"]))
    return batch

  return (tf.data.TextLineDataset(path).skip(1).batch(batch_size)
          .map(assemble, num_parallel_calls=tf.data.AUTOTUNE))


def joined_dataset(path: str, batch_size: int = 1024) -> tf.data.Dataset:
  """The same batches read from the denormalised table."""
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")

  def parse(lines):
    fields = _split_lines(lines, len(header))
    return {name: fields[:, j] if name in STRING_COLUMNS or name.endswith(
        "_title") else tf.strings.to_number(fields[:, j], tf.int32)
            for j, name in enumerate(header)}

  return (tf.data.TextLineDataset(path).skip(1).batch(batch_size)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE))


def synthetic_tables(task) -> Tuple[Dict[str, np.ndarray],
                                    Dict[str, np.ndarray],
                                    Dict[str, np.ndarray]]:
  """users, items and interactions of a synthetic `SearchTask`'s training
  clicks, in the column layout `write_compressed` expects."""
  world = task.world
  users = {"user_id": np.asarray([f"u{u}" for u in range(world.num_users)],
                                 object),
           "gender": world.user_gender.astype(np.int32),
           "age": world.user_age.astype(np.int32),
           "power": world.user_power.astype(np.int32)}
  items: Dict[str, np.ndarray] = {
      "item_id": np.asarray([f"i{i}" for i in range(task.num_items)],
                            object),
      "title": task.item_text}
  items.update(task.item_columns)
  clicks = world.to_search_dataset().interactions
  interactions = {"query": clicks.query.astype(object),
                  "user_id": users["user_id"][clicks.user],
                  "item_id": items["item_id"][clicks.item]}
  return users, items, interactions


def column_names(users: Sequence[str], items: Sequence[str]) -> list:
  """The keys of a batch from either dataset."""
  return (["query", "user_id", "item_id"] +
          [f"user_{c}" for c in users if c != "user_id"] +
          [f"item_{c}" for c in items if c != "item_id"])
