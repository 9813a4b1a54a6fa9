"""CrowdFlower e-commerce search relevance (Kaggle 2015).

`train.csv`: `id,query,product_title,product_description,median_relevance,
relevance_variance`; fields are quoted and may span lines, descriptions hold
HTML. Products are the distinct (title, description) pairs, queries the
distinct query strings, and every row is one graded judgment (median of
human grades, 1 = irrelevant .. 4 = perfect).
"""

from __future__ import annotations

import html
import math
import os
import re

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed, require_files
from retrieval_tf.datasets.reading import (check_header, csv_rows, read_text,
                                           record_rows)
from retrieval_tf.datasets.types import Judgments, SearchDataset, Vocabulary

FILE = "train.csv"
COLUMNS = ("id", "query", "product_title", "product_description",
           "median_relevance", "relevance_variance")
_TAG = re.compile(r"<[^>]*>")
_CSS_RULE = re.compile(r"[.#]?[\w\-, .#:]*\{[^{}]*:[^{}]*\}")
_SPACE = re.compile(r"\s+")


def clean_html(text: str) -> str:
  """Strips tags and stray CSS rules, unescapes entities, collapses
  whitespace."""
  text = _CSS_RULE.sub(" ", _TAG.sub(" ", text))
  return _SPACE.sub(" ", html.unescape(text)).strip()


def load_crowdflower(data_dir: str) -> SearchDataset:
  """Loads `train.csv` of the CrowdFlower competition (UTF-8, a byte-order
  mark accepted; blank records skipped)."""
  require_files(data_dir, [FILE], "crowdflower")
  path = os.path.join(data_dir, FILE)
  records = csv_rows(path, read_text(path))
  header = next(records, (1, []))[1]
  if not header:
    raise malformed(path, 1, "the file is empty or starts with a blank line; "
                    f"expected the header {','.join(COLUMNS)}")
  check_header(path, header)
  missing = [c for c in COLUMNS if c not in header]
  if missing:
    raise malformed(path, 1, f"missing column(s) {', '.join(missing)}; "
                    f"found {header}")
  position = {c: i for i, c in enumerate(header)}
  rows, skipped = [], 0
  for line, fields in records:
    if not fields:
      skipped += 1
      continue
    if len(fields) != len(header):
      raise malformed(path, line, f"expected {len(header)} fields, found "
                      f"{len(fields)}")
    row = {c: fields[position[c]] for c in COLUMNS}
    try:
      grade = int(row["median_relevance"])
      variance = float(row["relevance_variance"])
    except ValueError:
      raise malformed(path, line, "median_relevance must be an integer and "
                      "relevance_variance a number") from None
    if not 1 <= grade <= 4:
      raise malformed(path, line, f"median_relevance {grade} is outside 1..4")
    if not 0 <= variance < math.inf:
      raise malformed(path, line, f"relevance_variance "
                      f"{row['relevance_variance']!r} is not a finite number "
                      ">= 0")
    if not row["query"].strip():
      raise malformed(path, line, "empty query")
    rows.append((row["query"], row["product_title"],
                 row["product_description"], grade, variance))
  if not rows:
    raise DataError(f"{path}: no rows after the header")
  queries = Vocabulary.from_values((r[0] for r in rows), name="query",
                                   sort=False)
  products = list(dict.fromkeys((r[1], r[2]) for r in rows))
  product_index = {p: i for i, p in enumerate(products)}
  items = Vocabulary(range(len(products)), name="product")
  raw = np.asarray([p[1] for p in products], dtype=object)
  dataset = SearchDataset(
      "crowdflower", queries, items,
      item_titles=np.asarray([p[0] for p in products], dtype=object),
      item_text={"description": np.asarray([clean_html(d) for d in raw],
                                           dtype=object),
                 "description_raw": raw},
      judgments=Judgments(queries.lookup(r[0] for r in rows),
                          [product_index[(r[1], r[2])] for r in rows],
                          [r[3] for r in rows],
                          variance=[r[4] for r in rows]))
  record_rows(dataset.load_stats, path, len(rows), skipped)
  return dataset
