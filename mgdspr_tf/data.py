"""Training and test examples for MGDSPR: (query, user behaviour) -> item.

Behaviour windows (Sec. 3.2.2), from a user's events strictly before the
search, oldest first, consecutive and disjoint:

* real-time R: the last `max_real` events of the last `spans[0]` seconds;
* short-term S: the last `max_short` events of the `spans[1]` seconds before
  the search that precede R (the paper: 10 days excluding R);
* long-term L: the last `max_long` events of the `spans[2]` seconds that
  precede S (the paper: a month excluding R and S).

Longer windows are truncated to their most recent events (the documented
rule; the servable applies the same one). Logs without timestamps use the
event order as time and spans in events.

Sources:

* `synthetic`: the world's search clicks with its browsing log; history
  queries are the user's last `history_queries` queries; a temporal split
  (the last `test_fraction` of searches are test). Relevance from the world;
  two zero-vector slices of the test set (`MGDSPRData.unrelated` and
  `MGDSPRData.donor`, see `unrelated_donors`).
* `crowdflower`, `bestbuy`: (query, item) pairs judged relevant, split by
  query (`splits.query_disjoint_split`); no users, so no behaviour.
* `amazon-beauty` (any S3Rec file): leave-one-out over item sequences with
  an empty query, for the behaviour encoders.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets import splits
from retrieval_tf.datasets.errors import DataError

DAY = 86_400
PAPER_SPANS = (DAY, 10 * DAY, 30 * DAY)
ORDER_SPANS = (5, 20, 10**9)  # event counts, for logs without time
# Attributes used as side information and long-term sequences, if present.
ATTRIBUTES = ("leaf_category", "brand", "shop")


@dataclasses.dataclass
class Examples:
  """Parallel arrays, one row per (search, clicked item).

  `features()` gives the model's feature dict (the names of
  `MGDSPRModel`): `query`, `history_query`, `real_time`, `short_term`,
  `long_term` and `item_id`.
  """

  query: np.ndarray  # object [n]
  history_query: np.ndarray  # object [n]
  real_time: np.ndarray  # int32 [n, max_real], -1 padded
  short_term: np.ndarray
  long_term: np.ndarray
  item_id: np.ndarray  # int32 [n]: the clicked item
  query_index: np.ndarray  # int32 [n], -1 when the source has none
  search: np.ndarray  # int64 [n]: rows of one search share the id

  def __len__(self):
    return len(self.item_id)

  def take(self, rows) -> "Examples":
    return Examples(**{f.name: getattr(self, f.name)[rows]
                       for f in dataclasses.fields(self)})

  def first_searches(self, count: Optional[int]) -> "Examples":
    """The rows of the first `count` distinct searches (in order of first
    appearance), every row of each: a cap on test searches that never
    cuts one search's clicked items short. None: all rows."""
    if count is None:
      return self
    _, first = np.unique(self.search, return_index=True)
    if len(first) <= count:
      return self
    kept = self.search[np.sort(first)[:count]]
    return self.take(np.isin(self.search, kept))

  def with_user_context_of(self, other: "Examples") -> "Examples":
    """These rows (queries, clicked items, searches) with the user context
    of `other`'s rows (history queries and R, S, L windows), row by row."""
    if len(other) != len(self):
      raise ValueError(f"{len(other)} context rows for {len(self)} rows")
    return dataclasses.replace(
        self, history_query=other.history_query, real_time=other.real_time,
        short_term=other.short_term, long_term=other.long_term)

  def features(self, with_item: bool = True) -> Dict[str, np.ndarray]:
    """`{name: array}` of the model's features; `item_id` (the clicked
    item) only `with_item`."""
    out = {"query": self.query.astype(str).astype(object),
           "history_query": self.history_query.astype(str).astype(object),
           "real_time": self.real_time, "short_term": self.short_term,
           "long_term": self.long_term}
    if with_item:
      out["item_id"] = self.item_id
    return out


@dataclasses.dataclass
class MGDSPRData:
  """What training, evaluation and export need from a dataset (built by
  `from_synthetic`, `from_search_dataset` or `from_rec_dataset`):
  `train` / `test` `Examples`, the catalogue for
  `MGDSPRModel.set_catalogue` (`attributes`, `titles`) and for
  `export_mgdspr` (`item_ids`, `intent_fields`, `item_fields`), and what
  `evaluate` grades with (`relevance`, `good_grade`, `unrelated`,
  `donor`)."""

  name: str
  train: Examples
  test: Examples
  num_items: int
  item_ids: np.ndarray  # object [N], original ids
  titles: np.ndarray  # object [N]
  attributes: Dict[str, np.ndarray]  # int32 [N] each
  attribute_sizes: Dict[str, int]
  # Relevance control: {field: value names}, item field table [N, F].
  intent_fields: Dict[str, Sequence[str]]
  item_fields: Optional[np.ndarray]
  # relevance(query_index [n], items [n, K]) -> graded relevance, or None.
  relevance: Optional[object] = None
  good_grade: float = 2.0
  # bool [len(test)]: the test user's real-time and short-term behaviour
  # shares no mid category with the query (the zero-vector slice).
  unrelated: Optional[np.ndarray] = None
  # int [len(test)]: a test row of another user whose R, S and L share no
  # mid category with this row's query, -1 where none (the swapped slice:
  # `unrelated_donors`).
  donor: Optional[np.ndarray] = None


def with_intent_fields(data: MGDSPRData, names: Sequence[str]
                       ) -> MGDSPRData:
  """`data` whose relevance control recognises only the item fields `names`
  in queries (e.g. brands but not categories); empty: `data` unchanged.
  Raises DataError naming the catalogue's fields for an unknown name."""
  if not names:
    return data
  known = list(data.intent_fields)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise DataError(f"{data.name}: no item field {', '.join(unknown)} for "
                    f"relevance control; its fields are "
                    f"{', '.join(known) or 'none'}")
  columns = [known.index(n) for n in names]
  return dataclasses.replace(
      data, intent_fields={n: data.intent_fields[n] for n in names},
      item_fields=data.item_fields[:, columns])


def behaviour_windows(event_user, event_item, event_time, target_user,
                      target_time, lengths=(50, 100, 100),
                      spans=PAPER_SPANS) -> Tuple[np.ndarray, ...]:
  """R, S, L windows (see the module docstring) of every target, int32
  `[n, length]` each, oldest first, -1 padded. Events need not be sorted."""
  order = np.lexsort((event_time, event_user))
  users = np.asarray(event_user, np.int64)[order]
  times = np.asarray(event_time, np.int64)[order]
  items = np.asarray(event_item, np.int32)[order]
  shift = int(max(times.max(initial=0), np.max(target_time, initial=0))) + \
      2 * max(spans) + 2
  keys = users * shift + (times + max(spans))
  tu = np.asarray(target_user, np.int64)
  tt = np.asarray(target_time, np.int64) + max(spans)
  end = np.searchsorted(keys, tu * shift + tt, side="left")
  out = []
  for length, span in zip(lengths, spans):
    begin = np.searchsorted(keys, tu * shift + np.maximum(tt - span, 0),
                            side="left")
    start = np.maximum(begin, end - length)
    idx = start[:, None] + np.arange(length)[None, :]
    valid = idx < end[:, None]
    out.append(np.where(valid, items[np.minimum(idx, len(items) - 1)],
                        -1).astype(np.int32))
    end = start
  return tuple(out)


def _history_queries(search_user, search_time, search_query_text, users,
                     times, count: int) -> np.ndarray:
  """The user's last `count` queries strictly before each time, joined."""
  order = np.lexsort((search_time, search_user))
  su = np.asarray(search_user, np.int64)[order]
  st = np.asarray(search_time, np.int64)[order]
  text = np.asarray(search_query_text, object)[order]
  shift = int(max(st.max(initial=0), np.max(times, initial=0))) + 1
  keys = su * shift + st
  end = np.searchsorted(keys, np.asarray(users, np.int64) * shift +
                        np.asarray(times, np.int64), side="left")
  begin = np.searchsorted(keys, np.asarray(users, np.int64) * shift)
  return np.asarray([" ".join(text[max(b, e - count):e])
                     for b, e in zip(begin, end)], object)


def from_synthetic(world, lengths=(50, 100, 100), history_queries: int = 5,
                   test_fraction: float = 0.1,
                   max_test: Optional[int] = None) -> MGDSPRData:
  """Search clicks of a `SyntheticWorld` with each user's behaviour.

  Args:
    world: `retrieval_tf.datasets.synthetic.generate(config)`.
    lengths: maxima of the real-time, short-term and long-term windows
      (the model's `max_real`, `max_short`, `max_long`).
    history_queries: the user's earlier queries kept (`history_query`).
    test_fraction: the last share of searches in time that is test.
    max_test: test searches kept at most (None: all).

  Returns:
    `MGDSPRData` with `train` / `test` `Examples`, the catalogue
    (`attributes`, `titles`, `item_ids`), relevance control's
    `intent_fields` / `item_fields`, ground-truth `relevance` and the
    zero-vector slices (`unrelated`, `donor`; see the module docstring).

  Raises:
    DataError: a world with fewer than 10 search clicks.

      data = from_synthetic(synthetic.generate(
          synthetic.SyntheticConfig.scaled(500)), lengths=(8, 16, 16))
      data.train.features()["item_id"]      # int32 [n]
  """
  if len(world.click_item) < 10:
    raise DataError("synthetic world has fewer than 10 search clicks")
  search = np.asarray(world.click_search, np.int64)
  user = world.search_user[search]
  time = world.search_time[search]
  query_index = world.search_query[search].astype(np.int32)
  windows = behaviour_windows(world.event_user, world.event_item,
                              world.event_time, user, time, lengths)
  query_text = world.query_strings[world.search_query]
  history = _history_queries(world.search_user, world.search_time,
                             query_text, user, time, history_queries)
  examples = Examples(world.query_strings[query_index], history, *windows,
                      world.click_item.astype(np.int32), query_index, search)
  cut = np.quantile(world.search_time, 1.0 - test_fraction)
  test_rows = time >= cut
  test = examples.take(test_rows)
  test = test.first_searches(max_test)
  dataset = world.to_search_dataset()
  vocabs = dataset.feature_vocabularies
  attributes = {n: dataset.item_features[n].astype(np.int32)
                for n in ATTRIBUTES}
  intent_fields = {"leaf_category": list(vocabs["leaf_category"].ids),
                   "brand": list(vocabs["brand"].ids),
                   "colour": list(vocabs["colour"].ids),
                   "size": list(vocabs["size"].ids)}
  item_fields = np.stack([dataset.item_features[n] for n in intent_fields],
                         axis=1).astype(np.int32)
  # The zero-vector slices: no R/S event in a mid category of the query
  # (`unrelated`); another user's R, S, L with none (`donor`).
  intent_mid = dataset.query_features["intent_mid_category"][test.query_index]
  windows = np.concatenate([test.real_time, test.short_term, test.long_term],
                           axis=1)
  mids = np.where(windows >= 0, world.item_mid[np.maximum(windows, 0)], -2)
  recent = test.real_time.shape[1] + test.short_term.shape[1]
  unrelated = (intent_mid >= 0) & ~(mids[:, :recent] ==
                                    intent_mid[:, None]).any(axis=1)
  donor = unrelated_donors(world.search_user[test.search], intent_mid, mids,
                           seed=world.config.seed)
  return MGDSPRData(
      name="synthetic", train=examples.take(~test_rows), test=test,
      num_items=world.num_items,
      item_ids=np.arange(world.num_items).astype(str).astype(object),
      titles=world.item_titles(), attributes=attributes,
      attribute_sizes={n: len(vocabs[n]) for n in ATTRIBUTES},
      intent_fields=intent_fields, item_fields=item_fields,
      relevance=world.relevance, good_grade=2.0, unrelated=unrelated,
      donor=donor)


def unrelated_donors(user, intent_mid, behaviour_mid, seed: int = 0,
                     tries: int = 32) -> np.ndarray:
  """For each row, another row whose user context cannot inform this row's
  query: a row of another user, with at least one behaviour event, none of
  whose events' mid categories (`behaviour_mid` `[n, L]`, negative =
  padding) is this row's `intent_mid`. Rows whose `intent_mid` is negative
  (no category intent) get none. Candidates are drawn uniformly, the first
  that fits within `tries` draws is kept; -1 where none fits. Deterministic
  in `seed`. Returns int64 `[n]`.

  Grafting the donor's context onto the row (`Examples.with_user_context_of`)
  builds the counterfactual slice on which the zero vector should matter
  (Sec. 3.2.2: the query attends to "nothing" when no behaviour is
  relevant), at the size of the whole test set instead of the few searches
  whose own history happens to be unrelated.
  """
  user = np.asarray(user)
  intent_mid = np.asarray(intent_mid)
  behaviour_mid = np.asarray(behaviour_mid)
  n = len(user)
  if len(intent_mid) != n or len(behaviour_mid) != n:
    raise ValueError(f"{n} users, {len(intent_mid)} intents and "
                     f"{len(behaviour_mid)} behaviour rows")
  donor = np.full(n, -1, np.int64)
  if n < 2:
    return donor
  has_events = (behaviour_mid >= 0).any(axis=1)
  rng = np.random.default_rng(seed)
  for _ in range(tries):
    todo = np.flatnonzero((donor < 0) & (intent_mid >= 0))
    if not len(todo):
      break
    candidate = rng.integers(0, n, len(todo))
    fits = (has_events[candidate] & (user[candidate] != user[todo]) &
            ~(behaviour_mid[candidate] == intent_mid[todo, None]).any(axis=1))
    donor[todo[fits]] = candidate[fits]
  return donor


def _empty_windows(n: int, lengths) -> Tuple[np.ndarray, ...]:
  return tuple(np.full((n, length), -1, np.int32) for length in lengths)


def from_search_dataset(dataset, lengths=(50, 100, 100),
                        min_grade: Optional[float] = None,
                        test_fraction: float = 0.2, seed: int = 0,
                        max_test: Optional[int] = None) -> MGDSPRData:
  """(query, item) pairs judged at least `min_grade` (default: the top
  grade minus one) of a `SearchDataset` without users (CrowdFlower, Best
  Buy); query-disjoint split; P_good from the same judgments. Returns an
  `MGDSPRData` whose behaviour windows are empty (no users) and whose
  attributes and intent fields are the dataset's categorical item fields;
  raises DataError without judgments.

      data = from_search_dataset(load_crowdflower(data_dir), seed=0)
  """
  judgments = dataset.judgments
  if judgments is None or not len(judgments):
    raise DataError(f"{dataset.name}: no relevance judgments to train on")
  top = float(judgments.grade.max())
  min_grade = top - 1 if min_grade is None else min_grade
  good = judgments.grade >= min_grade
  queries = dataset.queries.ids[judgments.query[good]]
  n = int(good.sum())
  examples = Examples(queries, np.full(n, "", object),
                      *_empty_windows(n, lengths),
                      judgments.item[good].astype(np.int32),
                      judgments.query[good].astype(np.int32),
                      judgments.query[good].astype(np.int64))
  train_mask, test_mask = splits.query_disjoint_split(queries, test_fraction,
                                                      seed)
  test = examples.take(test_mask)
  test = test.first_searches(max_test)
  num_items = dataset.num_items
  grade_keys = (judgments.query.astype(np.int64) * num_items +
                judgments.item)
  order = np.argsort(grade_keys)
  sorted_keys, sorted_grades = grade_keys[order], judgments.grade[order]

  def relevance(query, items):
    keys = np.asarray(query, np.int64) * num_items + items  # broadcast
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where((sorted_keys[pos] == keys) & (items >= 0),
                    sorted_grades[pos], 0.0)

  vocabs = dataset.feature_vocabularies
  fields = [n for n in sorted(vocabs)
            if n in dataset.item_features and
            np.asarray(dataset.item_features[n]).ndim == 1]
  attributes = {n: np.asarray(dataset.item_features[n], np.int32)
                for n in fields}
  return MGDSPRData(
      name=dataset.name, train=examples.take(train_mask), test=test,
      num_items=num_items, item_ids=dataset.items.ids,
      titles=dataset.item_titles, attributes=attributes,
      attribute_sizes={n: len(vocabs[n]) for n in fields},
      intent_fields={n: list(vocabs[n].ids) for n in fields},
      item_fields=(np.stack([attributes[n] for n in fields], 1)
                   if fields else None),
      relevance=relevance, good_grade=min_grade)


def from_rec_dataset(dataset, lengths=(50, 100, 100),
                     max_test: Optional[int] = None) -> MGDSPRData:
  """Leave-one-out over a `RecDataset`'s sequences (Amazon Beauty), with an
  empty query: each event is a target, its earlier events the behaviour
  (windows by event order, `ORDER_SPANS`); a user's last event is test.
  Returns an `MGDSPRData` without attributes, intents or relevance (recall
  only); raises DataError with fewer than 2 interactions.

      data = from_rec_dataset(registry.load_rec_dataset("amazon-beauty",
                                                        data_dir))
  """
  log = dataset.interactions.sorted()
  n = len(log)
  if n < 2:
    raise DataError(f"{dataset.name}: too few interactions")
  rank = np.arange(n) - np.searchsorted(log.user, log.user, side="left")
  windows = behaviour_windows(log.user, log.item, rank, log.user, rank,
                              lengths, ORDER_SPANS)
  last = np.append(log.user[1:] != log.user[:-1], True)
  examples = Examples(np.full(n, "", object), np.full(n, "", object),
                      *windows, log.item, np.full(n, -1, np.int32),
                      np.arange(n, dtype=np.int64))
  has_history = windows[0][:, 0] >= 0
  test = examples.take(last & has_history)
  test = test.first_searches(max_test)
  titles = (dataset.item_titles if dataset.item_titles is not None
            else np.full(dataset.num_items, "", object))
  return MGDSPRData(
      name=dataset.name, train=examples.take(~last), test=test,
      num_items=dataset.num_items, item_ids=dataset.items.ids,
      titles=titles, attributes={}, attribute_sizes={}, intent_fields={},
      item_fields=None)


def training_dataset(examples: Examples, batch_size: int, seed: int = 0,
                     shuffle: bool = True, repeat: bool = True,
                     drop_remainder: bool = True,
                     num_items: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (query, behaviour) -> clicked item for `MGDSPRModel.fit`.

  Args:
    examples: `Examples` (`MGDSPRData.train` of `from_synthetic`,
      `from_search_dataset` or `from_rec_dataset`).
    batch_size: rows per batch; the other rows of a batch are each row's
      negatives and the pool of its mixed hard negatives (Sec. 3.4).
    seed: shuffle seed. shuffle: shuffle the rows. repeat: repeat forever
      (then give `fit` a `steps_per_epoch`).
    drop_remainder: drop the last partial batch.
    num_items: the model's catalogue size (`model.num_items`); when given,
      every item id (clicked and behaviour) must lie below it.

  Returns:
    A `tf.data.Dataset` of dicts, batched `[B, ...]`: `query` and
    `history_query` strings `[B]`; `real_time`, `short_term`, `long_term`
    int32 item indices `[B, T]` (oldest first, -1 padded); `item_id` int32
    `[B]`.

  Raises:
    ValueError: `batch_size` < 1 (or above the number of rows with
      `drop_remainder`), no rows, or an item id outside `num_items`.

      data = from_synthetic(world)
      ds = training_dataset(data.train, batch_size=256,
                            num_items=data.num_items)
      model.fit(ds, epochs=3, steps_per_epoch=len(data.train) // 256)
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not len(examples):
    raise ValueError("examples has no rows")
  if drop_remainder and len(examples) < batch_size:
    raise ValueError(f"batch_size={batch_size} exceeds the {len(examples)} "
                     f"rows; every batch would be dropped (lower batch_size "
                     f"or pass drop_remainder=False)")
  features = examples.features()
  if num_items is not None:
    for name, ids in features.items():
      if name in ("query", "history_query"):
        continue
      if np.size(ids) and (ids.max() >= num_items or ids.min() < -1):
        raise ValueError(f"{name} holds item ids outside [0, {num_items}) "
                         f"(-1 is padding): pass examples built for this "
                         f"catalogue or the right num_items")
  data = tf.data.Dataset.from_tensor_slices(features)
  if shuffle:
    data = data.shuffle(min(len(examples), 100_000), seed=seed,
                        reshuffle_each_iteration=True)
  if repeat:
    data = data.repeat()
  return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
