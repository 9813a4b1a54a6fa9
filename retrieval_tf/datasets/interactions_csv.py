"""A generic interactions file for users' own data: CSV or TSV with a header,
`user,item[,timestamp][,query][,rating]` (column names configurable).
"""

from __future__ import annotations

import csv
import os
from typing import Optional

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed
from retrieval_tf.datasets.types import Interactions, RecDataset, Vocabulary


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
  else sniffed from the header (tab, comma, semicolon). Ids are strings,
  remapped to contiguous indices in order of first appearance.
  """
  if not os.path.isfile(path):
    raise DataError(f"csv: file {path!r} not found; expected a CSV/TSV with "
                    f"a header naming {user_col!r} and {item_col!r}")
  with open(path, newline="", encoding="utf-8") as f:
    header = f.readline()
    if not header.strip():
      raise DataError(f"{path}: the file is empty")
    if delimiter is None:
      delimiter = "\t" if path.endswith(".tsv") else max(
          "\t,;", key=header.count)
    f.seek(0)
    reader = csv.DictReader(f, delimiter=delimiter)
    fields = reader.fieldnames or []
    for column in (user_col, item_col) + ((rating_col,) if rating_col else
                                          ()):
      if column not in fields:
        raise malformed(path, 1, f"no column {column!r} in the header "
                        f"({', '.join(fields)})")
    has_time = timestamp_col in fields
    has_query = query_col in fields
    users, items, times, queries, ratings = [], [], [], [], []
    for row in reader:
      line = reader.line_num
      if None in row or any(row[c] is None for c in fields):
        raise malformed(path, line, f"expected {len(fields)} fields")
      if not row[user_col] or not row[item_col]:
        raise malformed(path, line, "empty user or item id")
      users.append(row[user_col])
      items.append(row[item_col])
      try:
        if has_time:
          times.append(int(float(row[timestamp_col])))
        if rating_col:
          ratings.append(float(row[rating_col]))
      except ValueError:
        raise malformed(path, line, "timestamp and rating must be "
                        "numbers") from None
      if has_query:
        queries.append(row[query_col])
  if not users:
    raise DataError(f"{path}: no rows after the header")
  if times and min(times) < 0:
    raise malformed(path, None, "negative timestamp")
  user_vocab = Vocabulary.from_values(users, name="user", sort=False)
  item_vocab = Vocabulary.from_values(items, name="item", sort=False)
  log = Interactions(
      user_vocab.lookup(users), item_vocab.lookup(items),
      timestamp=np.asarray(times) if has_time else None,
      rating=np.asarray(ratings) if rating_col else None,
      query=np.asarray(queries, dtype=object) if has_query else None)
  return RecDataset(name or os.path.splitext(os.path.basename(path))[0],
                    log, user_vocab, item_vocab)
