"""A generic interactions file for users' own data: CSV or TSV with a header,
`user,item[,timestamp][,query][,rating]` (column names configurable).
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed
from retrieval_tf.datasets.reading import (check_header, csv_rows, read_text,
                                           record_rows)
from retrieval_tf.datasets.types import Interactions, RecDataset, Vocabulary

_INT64_MAX = 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_interactions_csv(path: str, user_col: str = "user",
                          item_col: str = "item",
                          timestamp_col: Optional[str] = "timestamp",
                          query_col: Optional[str] = "query",
                          rating_col: Optional[str] = None,
                          delimiter: Optional[str] = None,
                          name: Optional[str] = None) -> RecDataset:
  """Loads an interactions file.

  `timestamp_col` and `query_col` are read when the header has them;
  `rating_col`, when given, must exist. The delimiter is a tab for `.tsv`,
  else sniffed from the header (tab, comma, semicolon). The file is UTF-8
  (a byte-order mark is accepted); blank lines are skipped. Ids are strings,
  remapped to contiguous indices in order of first appearance. Timestamps
  are integers in `0..2^63-1` (a fractional part is dropped); ratings are
  finite numbers.
  """
  if not os.path.isfile(path):
    raise DataError(f"csv: file {path!r} not found; expected a CSV/TSV with "
                    f"a header naming {user_col!r} and {item_col!r}")
  text = read_text(path)
  header = text.split("\n", 1)[0]
  if not header.strip():
    raise DataError(f"{path}: the file is empty")
  if delimiter is None:
    delimiter = "\t" if path.endswith(".tsv") else max(
        "\t,;", key=header.count)
  rows = csv_rows(path, text, delimiter)
  fields = next(rows)[1]
  check_header(path, fields)
  for column in (user_col, item_col) + ((rating_col,) if rating_col else
                                        ()):
    if column not in fields:
      raise malformed(path, 1, f"no column {column!r} in the header "
                      f"(columns {fields})")
  position = {c: i for i, c in enumerate(fields)}
  has_time = timestamp_col in position
  has_query = query_col in position
  users, items, times, queries, ratings = [], [], [], [], []
  skipped = 0
  for line, row in rows:
    if not row:
      skipped += 1
      continue
    if len(row) != len(fields):
      raise malformed(path, line, f"expected {len(fields)} fields, found "
                      f"{len(row)}")
    user, item = row[position[user_col]], row[position[item_col]]
    if not user or not item:
      raise malformed(path, line, "empty user or item id")
    users.append(user)
    items.append(item)
    if has_time:
      times.append(_timestamp(row[position[timestamp_col]], path, line))
    if rating_col:
      ratings.append(_rating(row[position[rating_col]], path, line))
    if has_query:
      queries.append(row[position[query_col]])
  if not users:
    raise DataError(f"{path}: no rows after the header")
  user_vocab = Vocabulary.from_values(users, name="user", sort=False)
  item_vocab = Vocabulary.from_values(items, name="item", sort=False)
  log = Interactions(
      user_vocab.lookup(users), item_vocab.lookup(items),
      timestamp=np.asarray(times, np.int64) if has_time else None,
      rating=np.asarray(ratings) if rating_col else None,
      query=np.asarray(queries, dtype=object) if has_query else None)
  dataset = RecDataset(name or os.path.splitext(os.path.basename(path))[0],
                       log, user_vocab, item_vocab)
  record_rows(dataset.load_stats, path, len(users), skipped)
  return dataset


def _timestamp(value: str, path: str, line: int) -> int:
  """A timestamp field -> int in `0..2^63-1`; `DataError` otherwise."""
  try:
    seconds = int(value)
  except ValueError:
    try:
      number = float(value)
    except ValueError:
      raise malformed(path, line, f"timestamp {value!r} is not a number; "
                      "expected integer seconds (or event order)") from None
    if not math.isfinite(number):
      raise malformed(path, line, f"timestamp {value!r} is not a finite "
                      "number; expected integer seconds (or event order)")
    seconds = int(number)
  if seconds < 0:
    raise malformed(path, line, f"negative timestamp {value!r}; expected "
                    "seconds since the epoch (or event order) >= 0")
  if seconds > _INT64_MAX:
    raise malformed(path, line, f"timestamp {value!r} is beyond int64 "
                    "seconds (2^63 - 1); expected seconds since the epoch")
  return seconds


def _rating(value: str, path: str, line: int) -> float:
  """A rating field -> a finite float; `DataError` otherwise."""
  try:
    rating = float(value)
  except ValueError:
    raise malformed(path, line, f"rating {value!r} is not a number"
                    ) from None
  if not math.isfinite(rating) or abs(rating) > _FLOAT32_MAX:
    raise malformed(path, line, f"rating {value!r} is not a finite float32 "
                    "number")
  return rating
