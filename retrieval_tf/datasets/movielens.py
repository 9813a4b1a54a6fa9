"""MovieLens-1M (GroupLens) and the NCF leave-one-out split of it.

`load_ml1m(data_dir)`: `ratings.dat` (`UserID::MovieID::Rating::Timestamp`),
`users.dat` (`UserID::Gender::Age::Occupation::Zip`), `movies.dat`
(`MovieID::Title::Genres`, latin-1).

`load_ncf_ml1m(data_dir, ml1m_dir=None)`: the split of NCF (He et al.,
WWW'17) used by PDN's Table 2: `ml-1m.train.rating` / `ml-1m.test.rating`
(`user\\titem\\trating\\ttimestamp`, 0-based ids) and `ml-1m.test.negative`
(`(user,item)\\tneg1\\t...\\tneg99`). NCF re-indexed the items, so side
features are recovered from the original ML-1M files when `ml1m_dir` is
given: NCF user u is ML-1M user u + 1, and each NCF item is mapped to the
MovieID that its (user, timestamp, rating) rows share in `ratings.dat`.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed, require_files
from retrieval_tf.datasets.reading import read_lines
from retrieval_tf.datasets.types import (Interactions, RecDataset, Vocabulary,
                                         pad_ragged)

ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")
NCF_FILES = ("ml-1m.train.rating", "ml-1m.test.rating", "ml-1m.test.negative")
_INT32_MAX = 2**31 - 1
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _int_table(path: str, sep: str, columns: int, what: str,
               stats: Dict[str, Dict[str, int]]) -> np.ndarray:
  """A file of `columns` integer fields per line -> int64 `[n, columns]`;
  its rows read and skipped go to `stats`."""
  lines = read_lines(path, stats)
  rows = np.empty((len(lines), columns), np.int64)
  count = 0
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    fields = line.split(sep)
    if len(fields) != columns:
      raise malformed(path, number, f"expected {columns} fields ({what}), "
                      f"found {len(fields)}: {line[:80]!r}")
    try:
      rows[count] = [int(x) for x in fields]
    except (ValueError, OverflowError):
      raise malformed(path, number, f"non-integer or out-of-int64-range "
                      f"field in {line[:80]!r} ({what})") from None
    count += 1
  rows = rows[:count]
  if (rows < 0).any():
    line = int(np.argwhere((rows < 0).any(axis=1))[0, 0]) + 1
    raise malformed(path, line, "negative id, rating or timestamp")
  return rows


def _records(path: str, layout: str, stats: Dict[str, Dict[str, int]],
             encoding: str = "utf-8"):
  """The `::`-separated fields of each non-blank line; `layout` names them
  (e.g. "MovieID::Title::Genres") for the error message."""
  width = layout.count("::") + 1
  for number, line in enumerate(read_lines(path, stats, encoding), 1):
    if not line.strip():
      continue
    fields = line.split("::")
    if len(fields) != width:
      raise malformed(path, number, f"expected {layout}, found "
                      f"{line[:80]!r}")
    yield fields


def _read_users(path: str, stats: Dict[str, Dict[str, int]]):
  ids, gender, age, occupation = [], [], [], []
  for fields in _records(path, "UserID::Gender::Age::Occupation::Zip",
                         stats):
    ids.append(fields[0])
    gender.append(fields[1])
    age.append(fields[2])
    occupation.append(fields[3])
  users = Vocabulary(ids, name="user")  # duplicate UserID -> DataError
  features, vocabularies = {}, {}
  for name, values in (("gender", gender), ("age", age),
                       ("occupation", occupation)):
    vocab = Vocabulary.from_values(values, name=name)
    features[name] = vocab.lookup(values)
    vocabularies[name] = vocab
  return users, features, vocabularies


def _read_movies(path: str, stats: Dict[str, Dict[str, int]]):
  ids, titles, genres, years = [], [], [], []
  for fields in _records(path, "MovieID::Title::Genres", stats,
                         encoding="latin-1"):
    ids.append(fields[0])
    titles.append(fields[1])
    genres.append(fields[2].split("|") if fields[2] else [])
    year = _YEAR.search(fields[1])
    years.append(year.group(1) if year else "unknown")
  items = Vocabulary(ids, name="movie")  # duplicate MovieID -> DataError
  genre_vocab = Vocabulary.from_values(
      (g for row in genres for g in row), name="genres")
  year_vocab = Vocabulary.from_values(years, name="year")
  features = {"genres": pad_ragged([genre_vocab.lookup(r) for r in genres]),
              "year": year_vocab.lookup(years)}
  return (items, np.asarray(titles, dtype=object), features,
          {"genres": genre_vocab, "year": year_vocab})


def load_ml1m(data_dir: str) -> RecDataset:
  """MovieLens-1M with user profile and movie title / year / genres."""
  require_files(data_dir, ML1M_FILES, "ml-1m")
  stats = {}
  users, user_features, vocabs = _read_users(
      os.path.join(data_dir, "users.dat"), stats)
  items, titles, item_features, item_vocabs = _read_movies(
      os.path.join(data_dir, "movies.dat"), stats)
  vocabs.update(item_vocabs)
  path = os.path.join(data_dir, "ratings.dat")
  ratings = _int_table(path, "::", 4, "UserID::MovieID::Rating::Timestamp",
                       stats)
  user_index = _dense_index(users, path, "user")
  item_index = _dense_index(items, path, "movie")
  u = _map(user_index, ratings[:, 0], path, "UserID")
  i = _map(item_index, ratings[:, 1], path, "MovieID")
  if ((ratings[:, 2] < 1) | (ratings[:, 2] > 5)).any():
    line = int(np.argmax((ratings[:, 2] < 1) | (ratings[:, 2] > 5))) + 1
    raise malformed(path, line, "rating outside 1..5")
  log = Interactions(u, i, timestamp=ratings[:, 3], rating=ratings[:, 2])
  return RecDataset("ml-1m", log, users, items, user_features, item_features,
                    vocabs, item_titles=titles, load_stats=stats)


def _dense_index(vocab: Vocabulary, path: str, what: str) -> np.ndarray:
  """Original integer id -> index array (-1 = unknown)."""
  try:
    ids = vocab.ids.astype(np.int64)
  except ValueError:
    raise DataError(f"{path}: {what} ids must be integers") from None
  index = np.full(ids.max() + 1, -1, np.int64)
  index[ids] = np.arange(len(ids))
  return index


def _map(index: np.ndarray, values: np.ndarray, path: str, what: str
         ) -> np.ndarray:
  known = values < len(index)
  out = np.full(len(values), -1, np.int64)
  out[known] = index[values[known]]
  if (out < 0).any():
    line = int(np.argmax(out < 0)) + 1
    raise malformed(path, line, f"unknown {what} {int(values[line - 1])}")
  return out


def _read_negatives(path: str, stats: Dict[str, Dict[str, int]]
                    ) -> Tuple[np.ndarray, np.ndarray]:
  pairs, negatives = [], []
  for number, line in enumerate(read_lines(path, stats), 1):
    if not line.strip():
      continue
    head, *rest = line.rstrip("\t").split("\t")
    match = re.fullmatch(r"\((\d+),(\d+)\)", head)
    if not match:
      raise malformed(path, number, f"expected '(user,item)' first, found "
                      f"{head[:40]!r}")
    try:
      negatives.append([int(x) for x in rest])
    except ValueError:
      raise malformed(path, number, "non-integer negative item") from None
    if not all(0 <= x <= _INT32_MAX for x in negatives[-1]):
      raise malformed(path, number, "negative item ids must be in "
                      f"0..{_INT32_MAX}")
    if negatives and len(negatives[-1]) != len(negatives[0]):
      raise malformed(path, number, f"{len(negatives[-1])} negatives, "
                      f"expected {len(negatives[0])} as on line 1")
    pair = (int(match.group(1)), int(match.group(2)))
    if max(pair) > _INT32_MAX:
      raise malformed(path, number, f"user and item ids must be in "
                      f"0..{_INT32_MAX}")
    pairs.append(pair)
  return np.asarray(pairs, np.int64), np.asarray(negatives, np.int64)


def load_ncf_ml1m(data_dir: str, ml1m_dir: Optional[str] = None
                  ) -> RecDataset:
  """The NCF leave-one-out split with its 99 negatives per test user."""
  require_files(data_dir, NCF_FILES, "ncf-ml-1m")
  train_path, test_path, neg_path = (os.path.join(data_dir, n)
                                     for n in NCF_FILES)
  stats = {}
  train = _int_table(train_path, "\t", 4, "user, item, rating, timestamp",
                     stats)
  test = _int_table(test_path, "\t", 4, "user, item, rating, timestamp",
                    stats)
  pairs, negatives = _read_negatives(neg_path, stats)
  if len(pairs) != len(test):
    raise DataError(f"{neg_path}: {len(pairs)} lines but {test_path} has "
                    f"{len(test)} test rows")
  mismatch = np.flatnonzero((pairs != test[:, :2]).any(axis=1))
  if len(mismatch):
    line = int(mismatch[0]) + 1
    raise malformed(neg_path, line, f"pair {tuple(pairs[line - 1].tolist())} "
                    f"does not match line {line} of {test_path} "
                    f"{tuple(test[line - 1, :2].tolist())}")
  num_users = int(train[:, 0].max()) + 1
  num_items = int(max(train[:, 1].max(), test[:, 1].max(),
                      negatives.max())) + 1
  unknown = np.flatnonzero(test[:, 0] >= num_users)
  if len(unknown):
    raise malformed(test_path, int(unknown[0]) + 1,
                    f"user {int(test[unknown[0], 0])} never appears in "
                    f"{train_path}")
  users = Vocabulary(range(num_users), name="user")
  items = Vocabulary(range(num_items), name="item")
  dataset = RecDataset(
      "ncf-ml-1m",
      Interactions(train[:, 0], train[:, 1], timestamp=train[:, 3],
                   rating=train[:, 2]),
      users, items,
      test=Interactions(test[:, 0], test[:, 1], timestamp=test[:, 3],
                        rating=test[:, 2]),
      test_negatives=negatives.astype(np.int32), load_stats=stats)
  if ml1m_dir is not None:
    _attach_ml1m_features(dataset, np.concatenate([train, test]), ml1m_dir)
  return dataset


def _attach_ml1m_features(dataset: RecDataset, ncf_rows: np.ndarray,
                          ml1m_dir: str) -> None:
  """Recovers NCF item -> MovieID and attaches ML-1M side features."""
  ml = load_ml1m(ml1m_dir)
  movie_of = recover_item_mapping(ncf_rows, ml)
  dataset.user_features = {
      k: v[:dataset.num_users] for k, v in ml.user_features.items()}
  dataset.item_features = {k: v[movie_of] for k, v in
                           ml.item_features.items()}
  dataset.feature_vocabularies = dict(ml.feature_vocabularies)
  dataset.item_titles = ml.item_titles[movie_of]
  dataset.load_stats.update(ml.load_stats)


def recover_item_mapping(ncf_rows: np.ndarray, ml: RecDataset) -> np.ndarray:
  """NCF item -> ML-1M movie index, by majority vote of the ratings.dat rows
  sharing (user, timestamp, rating) with each NCF row; a mapping that is not
  unambiguous for >= 99% of the items, or not injective, is a DataError."""
  log = ml.interactions
  key = lambda u, t, r: (u.astype(np.int64) * 2**32 + t) * 8 + r
  ml_keys = key(log.user.astype(np.int64), log.timestamp,
                log.rating.astype(np.int64))
  order = np.argsort(ml_keys, kind="stable")
  ml_keys = ml_keys[order]
  ncf_keys = key(ncf_rows[:, 0], ncf_rows[:, 3], ncf_rows[:, 2])
  lo = np.searchsorted(ml_keys, ncf_keys, "left")
  hi = np.searchsorted(ml_keys, ncf_keys, "right")
  # Each NCF row votes for every movie its (user, time, rating) could be;
  # the true movie is among the candidates of all of its item's rows.
  counts = hi - lo
  rows = np.repeat(np.arange(len(ncf_rows)), counts)
  offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                counts)
  movies = log.item[order[lo[rows] + offsets]]
  items = ncf_rows[rows, 1]
  num_items = int(ncf_rows[:, 1].max()) + 1
  votes = np.zeros((num_items, ml.num_items), np.int32)
  np.add.at(votes, (items, movies), 1)
  movie_of = _assign_one_to_one(votes)
  share = (movie_of >= 0).mean()
  if share < 0.99:
    raise DataError(f"ncf-ml-1m: only {share:.1%} of NCF items could be "
                    "matched to ML-1M movies; is the ml-1m folder the "
                    "original MovieLens-1M?")
  if (movie_of < 0).any():
    raise DataError(f"ncf-ml-1m: {int((movie_of < 0).sum())} NCF items have "
                    "no ML-1M movie; side features cannot be attached")
  return movie_of


def _assign_one_to_one(votes: np.ndarray) -> np.ndarray:
  """Greedy matching of items to movies by descending vote count (each
  movie used once); -1 where an item has no free candidate."""
  items, movies = np.nonzero(votes)
  order = np.argsort(-votes[items, movies], kind="stable")
  movie_of = np.full(votes.shape[0], -1, np.int64)
  taken = np.zeros(votes.shape[1], bool)
  for item, movie in zip(items[order], movies[order]):
    if movie_of[item] < 0 and not taken[movie]:
      movie_of[item] = movie
      taken[movie] = True
  return movie_of
