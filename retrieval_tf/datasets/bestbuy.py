"""The Best Buy product catalogue and its popular search queries.

`ecommerce.json`: products with `name`, `description`, `brand`, `categories`
(a path, root first), `price`, `popularity`.
`instant_search_demo_query_suggestions.json`: queries with `popularity`,
`instant_search.exact_nb_hits` and category facets
(`hierarchicalCategories.lvl0..2`, values like `"A > B > C"`).

Relevance judgments are derived, not human: for each query, candidates are
the products under its top lvl0 facet; a product's grade is the number of
the query's facet levels (lvl0, lvl1, lvl2) that its category path matches
(1..3). At most `MAX_JUDGED` products per query are kept, the highest grades
first, then the most popular.
"""

from __future__ import annotations

import json
import os
from typing import List

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed, require_files
from retrieval_tf.datasets.reading import read_text, record_rows
from retrieval_tf.datasets.types import (Judgments, SearchDataset, Vocabulary,
                                         pad_ragged)

FILES = ("ecommerce.json", "instant_search_demo_query_suggestions.json")
LEVELS = 3
MAX_JUDGED = 300


def _load_json_list(path: str) -> list:
  """The non-empty JSON list in `path` (UTF-8); `DataError` otherwise."""
  try:
    value = json.loads(read_text(path, line_based=False))
  except json.JSONDecodeError as e:
    raise malformed(path, e.lineno, f"invalid JSON: {e.msg}") from None
  except RecursionError:
    raise malformed(path, None, "invalid JSON: nested too deeply") from None
  if not isinstance(value, list) or not value:
    raise malformed(path, None, "expected a non-empty JSON list")
  return value


def _paths(categories: List[str]) -> List[str]:
  """["A", "B", "C"] -> ["A", "A > B", "A > B > C"] (first LEVELS)."""
  return [" > ".join(categories[:d + 1])
          for d in range(min(len(categories), LEVELS))]


def load_bestbuy(data_dir: str) -> SearchDataset:
  """Loads the catalogue, the queries and the derived judgments."""
  require_files(data_dir, FILES, "bestbuy")
  products_path, queries_path = (os.path.join(data_dir, n) for n in FILES)
  products = _load_json_list(products_path)
  for n, p in enumerate(products):
    if not isinstance(p, dict) or not p.get("name"):
      raise malformed(products_path, None, f"product #{n} has no name")
    if not isinstance(p.get("categories", []), list):
      raise malformed(products_path, None,
                      f"product #{n}: categories must be a list")
    price = p.get("price", 0)
    if not isinstance(price, (int, float)) or price < 0:
      raise malformed(products_path, None,
                      f"product #{n}: price must be a non-negative number")
  items = Vocabulary(range(len(products)), name="product")
  paths = [_paths(p.get("categories", [])) for p in products]
  features, vocabs = {}, {}
  brands = [p.get("brand") or "" for p in products]
  vocabs["brand"] = Vocabulary.from_values(brands, name="brand")
  features["brand"] = vocabs["brand"].lookup(brands)
  for level in range(LEVELS):
    name = f"category_lvl{level}"
    values = [row[level] for row in paths if len(row) > level]
    vocabs[name] = Vocabulary.from_values(values, name=name)
    features[name] = np.asarray(
        [vocabs[name].index(row[level]) if len(row) > level else -1
         for row in paths], np.int32)
  names = [p.get("categories", []) for p in products]
  vocabs["categories"] = Vocabulary.from_values(
      (c for row in names for c in row), name="categories")
  features["categories"] = pad_ragged(
      [vocabs["categories"].lookup(row) for row in names])
  features["price"] = np.asarray([p.get("price", 0) for p in products],
                                 np.float32)
  features["popularity"] = np.asarray(
      [p.get("popularity", 0) for p in products], np.float32)

  suggestions = _load_json_list(queries_path)
  texts, popularity, hits = [], [], []
  facets = np.full((len(suggestions), LEVELS), -1, np.int32)
  for n, q in enumerate(suggestions):
    if not isinstance(q, dict) or not str(q.get("query", "")).strip():
      raise malformed(queries_path, None, f"suggestion #{n} has no query")
    texts.append(q["query"])
    popularity.append(q.get("popularity", 0))
    search = q.get("instant_search", {})
    hits.append(search.get("exact_nb_hits", 0))
    exact = search.get("facets", {}).get("exact_matches", {})
    for level in range(LEVELS):
      values = exact.get(f"hierarchicalCategories.lvl{level}") or []
      top = values[0]["value"] if values else None
      if top in vocabs[f"category_lvl{level}"]:
        facets[n, level] = vocabs[f"category_lvl{level}"].index(top)
  queries = Vocabulary(texts, name="query")  # duplicate query -> DataError
  judgments = _derive_judgments(facets, features)
  dataset = SearchDataset(
      "bestbuy", queries, items,
      item_titles=np.asarray([p["name"] for p in products], dtype=object),
      item_text={"description": np.asarray(
          [p.get("description") or "" for p in products], dtype=object)},
      item_features=features, feature_vocabularies=vocabs,
      query_features={
          "popularity": np.asarray(popularity, np.float32),
          "nb_hits": np.asarray(hits, np.int32),
          **{f"category_lvl{d}": facets[:, d] for d in range(LEVELS)}},
      judgments=judgments)
  record_rows(dataset.load_stats, products_path, len(products), 0)
  record_rows(dataset.load_stats, queries_path, len(suggestions), 0)
  return dataset


def _derive_judgments(facets: np.ndarray, features) -> Judgments:
  levels = np.stack([features[f"category_lvl{d}"] for d in range(LEVELS)], 1)
  popularity = features["popularity"]
  query, item, grade = [], [], []
  for q, facet in enumerate(facets):
    if facet[0] < 0:
      continue
    # Grade = facet levels matched, counted from the root while they match.
    match = (levels == facet) & (facet >= 0)
    g = np.cumprod(match, axis=1).sum(axis=1)
    candidates = np.flatnonzero(g > 0)
    order = np.lexsort((-popularity[candidates], -g[candidates]))
    keep = candidates[order[:MAX_JUDGED]]
    query.append(np.full(len(keep), q))
    item.append(keep)
    grade.append(g[keep])
  if not query:
    raise DataError("bestbuy: no query has a category facet in the catalogue")
  return Judgments(np.concatenate(query), np.concatenate(item),
                   np.concatenate(grade))
