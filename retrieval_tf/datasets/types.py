"""Typed containers shared by every loader: vocabularies and interaction logs.

Every loader remaps raw ids to contiguous int32 indices `0..n-1` and keeps the
`Vocabulary` so that an exported servable can map indices back to the original
ids and titles.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from retrieval_tf.datasets.errors import DataError


class Vocabulary:
  """A bijection between original ids (strings) and contiguous indices.

  Args:
    ids: the original ids, in index order; index `i` is `ids[i]`. Duplicates
      are an error.
    name: what the ids are ("user", "item", "genre", ...), used in messages.
  """

  def __init__(self, ids: Iterable, name: str = "id"):
    self.name = name
    self.ids = np.asarray([str(x) for x in ids], dtype=object)
    self._index = {x: i for i, x in enumerate(self.ids)}
    if len(self._index) != len(self.ids):
      seen, dup = set(), None
      for x in self.ids:
        if x in seen:
          dup = x
          break
        seen.add(x)
      raise DataError(f"{name} vocabulary: duplicate id {dup!r}")

  @classmethod
  def from_values(cls, values: Iterable, name: str = "id",
                  sort: bool = True) -> "Vocabulary":
    """The vocabulary of the distinct values, sorted (numerically when all
    values are integers) or in order of first appearance."""
    seen = dict.fromkeys(str(v) for v in values)
    ids = list(seen)
    if sort:
      if all(_is_int(x) for x in ids):
        ids.sort(key=int)
      else:
        ids.sort()
    return cls(ids, name=name)

  def __len__(self) -> int:
    return len(self.ids)

  def __contains__(self, original) -> bool:
    return str(original) in self._index

  def __eq__(self, other) -> bool:
    return (isinstance(other, Vocabulary) and len(self) == len(other)
            and bool(np.all(self.ids == other.ids)))

  def __repr__(self) -> str:
    head = ", ".join(self.ids[:3])
    return f"Vocabulary({self.name}, size={len(self)}, [{head}...])"

  def index(self, original) -> int:
    """The index of one original id; `DataError` when unknown."""
    try:
      return self._index[str(original)]
    except KeyError:
      raise DataError(f"unknown {self.name} id {original!r}") from None

  def lookup(self, originals: Iterable, default: Optional[int] = None
            ) -> np.ndarray:
    """Indices (int32) of original ids; unknown ids raise unless `default`."""
    out = []
    for x in originals:
      i = self._index.get(str(x))
      if i is None:
        if default is None:
          raise DataError(f"unknown {self.name} id {x!r}")
        i = default
      out.append(i)
    return np.asarray(out, dtype=np.int32)

  def decode(self, indices) -> np.ndarray:
    """Original ids (str) of indices."""
    return self.ids[np.asarray(indices, dtype=np.int64)]


def _is_int(s: str) -> bool:
  try:
    int(s)
    return True
  except ValueError:
    return False


@dataclasses.dataclass
class Interactions:
  """A log of user-item events as parallel arrays (one row per event).

  `user` and `item` are contiguous int32 indices into the dataset's user and
  item vocabularies. Optional columns are `None` when the source has none.
  """

  user: np.ndarray
  item: np.ndarray
  timestamp: Optional[np.ndarray] = None  # int64 seconds (or event order)
  rating: Optional[np.ndarray] = None  # float32
  query: Optional[np.ndarray] = None  # object array of raw query strings

  def __post_init__(self):
    self.user = np.asarray(self.user, dtype=np.int32)
    self.item = np.asarray(self.item, dtype=np.int32)
    n = len(self.user)
    if self.item.shape != (n,):
      raise DataError(
          f"interactions: user has {n} rows but item has shape "
          f"{self.item.shape}")
    for name in ("timestamp", "rating", "query"):
      col = getattr(self, name)
      if col is not None:
        col = np.asarray(col)
        if col.shape[0] != n:
          raise DataError(
              f"interactions: column {name} has {col.shape[0]} rows, "
              f"expected {n}")
        setattr(self, name, col)
    if self.timestamp is not None:
      self.timestamp = self.timestamp.astype(np.int64)
    if self.rating is not None:
      self.rating = self.rating.astype(np.float32)

  def __len__(self) -> int:
    return len(self.user)

  def take(self, rows) -> "Interactions":
    """The sub-log of the given row indices or boolean mask."""
    pick = lambda c: None if c is None else c[rows]
    return Interactions(self.user[rows], self.item[rows],
                        pick(self.timestamp), pick(self.rating),
                        pick(self.query))

  def sorted(self) -> "Interactions":
    """Rows ordered by (user, timestamp), stable, so that each user's events
    are contiguous and chronological (file order breaks timestamp ties)."""
    keys = [self.user] if self.timestamp is None else [self.timestamp,
                                                       self.user]
    return self.take(np.lexsort(keys, axis=-1))

  def sequences(self) -> Dict[int, np.ndarray]:
    """Each user's chronological item sequence."""
    s = self.sorted()
    users, starts = np.unique(s.user, return_index=True)
    ends = np.append(starts[1:], len(s))
    return {int(u): s.item[a:b] for u, a, b in zip(users, starts, ends)}


@dataclasses.dataclass
class RecDataset:
  """A recommendation dataset: interactions plus user and item side features.

  Attributes:
    name: the dataset's name ("ml-1m", "ncf-ml-1m", "amazon-beauty", ...).
    interactions: the training (or whole) interaction log.
    users, items: vocabularies of the original ids.
    user_features: name -> int32 array `[num_users]` (one categorical value)
      or `[num_users, L]` (multi-valued, padded with -1). Categorical values
      index into `feature_vocabularies[name]`.
    item_features: the same for items (e.g. "genres" `[num_items, 6]`).
    feature_vocabularies: name -> `Vocabulary` of a categorical feature.
    item_titles: object array `[num_items]` of readable titles, or None.
    test: a predefined test log (NCF leave-one-out), or None.
    test_negatives: int32 `[len(test), n]` sampled negatives per test row.
    load_stats: file path -> `{"rows_read": records, "rows_skipped": blank
      records}` of each file a loader read (empty for generated data).
  """

  name: str
  interactions: Interactions
  users: Vocabulary
  items: Vocabulary
  user_features: Dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  item_features: Dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  feature_vocabularies: Dict[str, Vocabulary] = dataclasses.field(
      default_factory=dict)
  item_titles: Optional[np.ndarray] = None
  test: Optional[Interactions] = None
  test_negatives: Optional[np.ndarray] = None
  load_stats: Dict[str, Dict[str, int]] = dataclasses.field(
      default_factory=dict)

  @property
  def num_users(self) -> int:
    return len(self.users)

  @property
  def num_items(self) -> int:
    return len(self.items)

  def item_popularity(self) -> np.ndarray:
    """Training interaction count per item (int64 `[num_items]`)."""
    return np.bincount(self.interactions.item, minlength=self.num_items)


def check_index_range(values: np.ndarray, size: int, what: str,
                      source: str) -> None:
  """`DataError` when an index array holds values outside `[0, size)`."""
  values = np.asarray(values)
  if values.size and (values.min() < 0 or values.max() >= size):
    bad = values[(values < 0) | (values >= size)][0]
    raise DataError(
        f"{source}: {what} index {int(bad)} is outside the vocabulary of "
        f"{size} {what}s")


def pad_ragged(rows: Sequence[Sequence[int]], width: Optional[int] = None,
               pad: int = -1) -> np.ndarray:
  """Ragged int rows -> int32 `[n, width]` padded with `pad` (truncating)."""
  width = width if width is not None else max((len(r) for r in rows),
                                              default=0)
  out = np.full((len(rows), width), pad, dtype=np.int32)
  for i, r in enumerate(rows):
    r = list(r)[:width]
    out[i, :len(r)] = r
  return out


@dataclasses.dataclass
class Judgments:
  """Graded query-item relevance (human grades or synthetic ground truth).

  `query` and `item` are int32 indices into a `SearchDataset`'s vocabularies;
  `grade` is float32 on the source's scale (CrowdFlower: median 1-4).
  """

  query: np.ndarray
  item: np.ndarray
  grade: np.ndarray
  variance: Optional[np.ndarray] = None

  def __post_init__(self):
    self.query = np.asarray(self.query, dtype=np.int32)
    self.item = np.asarray(self.item, dtype=np.int32)
    self.grade = np.asarray(self.grade, dtype=np.float32)
    n = len(self.query)
    if self.item.shape != (n,) or self.grade.shape != (n,):
      raise DataError("judgments: query, item and grade differ in length")
    if self.variance is not None:
      self.variance = np.asarray(self.variance, dtype=np.float32)

  def __len__(self) -> int:
    return len(self.query)


@dataclasses.dataclass
class SearchDataset:
  """A search dataset: queries, a product catalogue and relevance judgments.

  Attributes:
    name: "crowdflower", "bestbuy", "synthetic", ...
    queries: vocabulary whose ids are the raw query strings.
    items: vocabulary of product ids.
    item_titles: object `[num_items]` product titles.
    item_text: other free-text fields per item (e.g. "description").
    item_features: categorical/numeric item columns, as in `RecDataset`.
    feature_vocabularies: vocabularies of the categorical features.
    query_features: per-query columns (e.g. category facets, popularity).
    judgments: graded query-item relevance, or None.
    interactions: query-carrying user events (clicks), or None.
    users: user vocabulary when `interactions` exist, else None.
    load_stats: file path -> `{"rows_read": records, "rows_skipped": blank
      records}` of each file a loader read (empty for generated data).
  """

  name: str
  queries: Vocabulary
  items: Vocabulary
  item_titles: np.ndarray
  item_text: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  item_features: Dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  feature_vocabularies: Dict[str, Vocabulary] = dataclasses.field(
      default_factory=dict)
  query_features: Dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  judgments: Optional[Judgments] = None
  interactions: Optional[Interactions] = None
  users: Optional[Vocabulary] = None
  load_stats: Dict[str, Dict[str, int]] = dataclasses.field(
      default_factory=dict)

  @property
  def num_queries(self) -> int:
    return len(self.queries)

  @property
  def num_items(self) -> int:
    return len(self.items)
