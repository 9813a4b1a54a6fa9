"""Train / test splits over `Interactions` and query logs.

* `dr_split`: the Deep Retrieval protocol (Gao et al., CIKM'21, Sec. 4.1):
  disjoint train / validation / test users; each held-out user's
  chronological history is cut in half, the first half is the model's input
  and the second half the ground truth.
* `leave_one_out`: the NCF / PDN protocol: each user's latest event is the
  test target; `leave_one_out_validation` holds each user's latest
  training event out for validation, with its own sampled negatives.
* `temporal_split`: one global time cut.
* `query_disjoint_split`: no (normalised) query string on both sides.
* `sample_negatives`: uniform unseen items per test row (the NCF sampled
  protocol, 99 negatives), on any dataset.
* `save_validation` / `load_validation`: a leave-one-out validation split
  as a `.npz` file, to audit a run.

Validation splits are always carved from the training side (the test rows
never change with them); temporal and query-disjoint validation parts are
`temporal_split` and `query_disjoint_split` applied to the training rows.

"Chronological" means ordered by `timestamp`, with the log's row order
breaking ties; a log without timestamps is taken to be in event order already
(its row order is the time order), as `Interactions.sorted` does.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, check_index_range

# Rows whose user leaves fewer than this share of the catalogue unseen are
# sampled exactly (from the explicit unseen set) instead of by rejection.
_MIN_ACCEPTANCE = 0.2
# Rows handled per rejection round, to bound the memory of the draws.
_CHUNK_ROWS = 4096


@dataclasses.dataclass
class HeldOutUsers:
  """Validation or test users of the DR protocol.

  Attributes:
    users: int32 sorted user indices.
    inputs: the first half of each user's chronological history (the
      behaviour sequence the model reads), sorted by (user, time).
    truth: the second half (the items to retrieve), sorted by (user, time).
  """

  users: np.ndarray
  inputs: Interactions
  truth: Interactions


@dataclasses.dataclass
class DRSplit:
  """The Deep Retrieval split: all events of the training users, and the
  halved histories of the disjoint validation and test users."""

  train: Interactions
  valid: HeldOutUsers
  test: HeldOutUsers


def _require_events(interactions: Interactions, what: str) -> None:
  if not isinstance(interactions, Interactions):
    raise TypeError(f"{what}: expected Interactions, got "
                    f"{type(interactions).__name__}")
  if len(interactions) == 0:
    raise DataError(f"{what}: the interaction log is empty")


def _chronological_ranks(interactions: Interactions
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(order, rank, count): `order` sorts rows by (user, time) (stable);
  `rank[k]` is row `order[k]`'s 0-based position in its user's history and
  `count[k]` that user's number of events."""
  if interactions.timestamp is None:
    order = np.argsort(interactions.user, kind="stable")
  else:
    order = np.lexsort((interactions.timestamp, interactions.user))
  users = interactions.user[order]
  first = np.ones(len(users), dtype=bool)
  first[1:] = users[1:] != users[:-1]
  starts = np.flatnonzero(first)
  sizes = np.diff(np.append(starts, len(users)))
  group = np.cumsum(first) - 1
  rank = np.arange(len(users)) - starts[group]
  return order, rank, sizes[group]


def _held_out(interactions: Interactions, users: np.ndarray) -> HeldOutUsers:
  """Halves the chronological histories of `users`: the first
  `n // 2` events are the input, the remaining `n - n // 2` the truth."""
  sub = interactions.take(np.isin(interactions.user, users))
  order, rank, count = _chronological_ranks(sub)
  ordered = sub.take(order)
  is_input = rank < count // 2
  return HeldOutUsers(users=np.sort(users).astype(np.int32),
                      inputs=ordered.take(is_input),
                      truth=ordered.take(~is_input))


def dr_split(interactions: Interactions, num_valid_users: int,
             num_test_users: int, seed: int, min_history: int = 2) -> DRSplit:
  """The Deep Retrieval held-out-user split.

  Users with at least `min_history` events are eligible; `num_valid_users`
  and `num_test_users` of them are drawn (disjointly, uniformly, from
  `np.random.default_rng(seed)`) as validation and test users; the test
  users are the same whatever `num_valid_users` is. Every other
  user, including those with fewer events, is a training user and keeps all
  its events. A held-out user's chronological history of `n` events is cut
  into the first `n // 2` (input) and the last `n - n // 2` (truth).

  Raises:
    DataError: on an empty log, or fewer eligible users than requested.
    ValueError: on negative user counts or `min_history < 2`.
  """
  _require_events(interactions, "dr_split")
  if num_valid_users < 0 or num_test_users < 0:
    raise ValueError("dr_split: num_valid_users and num_test_users must be "
                     f">= 0, got {num_valid_users} and {num_test_users}")
  if min_history < 2:
    raise ValueError(f"dr_split: min_history must be >= 2 so that both "
                     f"halves are non-empty, got {min_history}")
  users, counts = np.unique(interactions.user, return_counts=True)
  eligible = users[counts >= min_history]
  wanted = num_valid_users + num_test_users
  if wanted > len(eligible):
    raise DataError(
        f"dr_split: {wanted} held-out users requested but only "
        f"{len(eligible)} users have at least {min_history} events")
  picked = np.random.default_rng(seed).permutation(eligible)[:wanted]
  # Test users first: they do not depend on the number of validation users.
  test, valid = picked[:num_test_users], picked[num_test_users:]
  train = interactions.take(~np.isin(interactions.user, picked))
  return DRSplit(train=train, valid=_held_out(interactions, valid),
                 test=_held_out(interactions, test))


def leave_one_out(interactions: Interactions, min_history: int = 2
                 ) -> Tuple[Interactions, Interactions]:
  """The latest event of every user with at least `min_history` events is
  that user's test row; everything else is training.

  Returns:
    `(train, test)`: `train` keeps the log's row order; `test` has one row
    per test user, sorted by user.
  """
  _require_events(interactions, "leave_one_out")
  if min_history < 2:
    raise ValueError(f"leave_one_out: min_history must be >= 2 so that every "
                     f"test user keeps a training event, got {min_history}")
  order, rank, count = _chronological_ranks(interactions)
  is_test = (rank == count - 1) & (count >= min_history)
  test_rows = order[is_test]
  train_mask = np.ones(len(interactions), dtype=bool)
  train_mask[test_rows] = False
  return interactions.take(train_mask), interactions.take(test_rows)


def validation_seed(seed: int) -> int:
  """The seed of a validation split's random draws, derived from the run's
  `seed` so that they differ from the test split's draws."""
  return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def leave_one_out_validation(train: Interactions, test: Interactions,
                             num_items: int, num_negatives: int, seed: int,
                             min_history: int = 2
                            ) -> Tuple[Interactions, Interactions,
                                       np.ndarray]:
  """Each user's latest training event (users with at least `min_history`
  training events) becomes that user's validation row, ranked against
  `num_negatives` sampled items the user never touched, in training,
  validation or `test` (the same sampling as the test negatives, with
  `validation_seed(seed)`).

  Returns:
    `(train, valid, negatives)`: the training events left, one validation
    row per user (sorted by user) and int32 `[len(valid), num_negatives]`.
  """
  rest, valid = leave_one_out(train, min_history=min_history)
  touched = Interactions(np.concatenate([train.user, test.user]),
                         np.concatenate([train.item, test.item]))
  negatives = sample_negatives(valid, num_items, num_negatives,
                               exclude=touched, seed=validation_seed(seed))
  return rest, valid, negatives


def save_validation(path: str, valid: Interactions, negatives: np.ndarray,
                    user_ids: Optional[np.ndarray] = None,
                    item_ids: Optional[np.ndarray] = None) -> None:
  """Writes a leave-one-out validation split to `path` (`.npz`): `user`,
  `item`, `negatives` (indices) and, when given, the original ids of the
  users, items and negatives (`user_id`, `item_id`, `negative_ids`)."""
  arrays = {"user": valid.user, "item": valid.item, "negatives": negatives}
  if user_ids is not None:
    arrays["user_id"] = np.asarray(user_ids)[valid.user].astype(str)
  if item_ids is not None:
    item_ids = np.asarray(item_ids)
    arrays["item_id"] = item_ids[valid.item].astype(str)
    arrays["negative_ids"] = item_ids[negatives].astype(str)
  np.savez(path, **arrays)


def load_validation(path: str) -> Tuple[Interactions, np.ndarray]:
  """`(valid, negatives)` of a `save_validation` file."""
  try:
    with np.load(path) as saved:
      return (Interactions(saved["user"], saved["item"]),
              saved["negatives"].astype(np.int32))
  except (OSError, KeyError, ValueError) as error:
    raise DataError(f"{path}: not a validation split written by "
                    f"save_validation ({error})") from None


def temporal_split(interactions: Interactions,
                   test_fraction: Optional[float] = None,
                   cutoff: Optional[int] = None
                  ) -> Tuple[Interactions, Interactions]:
  """One global time cut: events at or after the cut are test.

  Give exactly one of `cutoff` (a timestamp) or `test_fraction`: then the cut
  is the timestamp of the `ceil(test_fraction * n)`-th latest event, so at
  least that share of the events is test (more when events share the cut's
  timestamp, which all go to test).

  Raises:
    DataError: empty log, no timestamps, or a cut leaving a side empty.
    ValueError: not exactly one of the two arguments, or a fraction outside
      (0, 1).
  """
  _require_events(interactions, "temporal_split")
  if (test_fraction is None) == (cutoff is None):
    raise ValueError("temporal_split: give exactly one of test_fraction and "
                     "cutoff")
  if interactions.timestamp is None:
    raise DataError("temporal_split: the interactions have no timestamps")
  is_test = temporal_mask(interactions.timestamp, test_fraction, cutoff)
  return interactions.take(~is_test), interactions.take(is_test)


def temporal_mask(timestamps: np.ndarray,
                  test_fraction: Optional[float] = None,
                  cutoff: Optional[int] = None) -> np.ndarray:
  """The test rows of `temporal_split`'s cut over `timestamps`, as a bool
  mask (the same rule and errors), for data that is not `Interactions`."""
  if (test_fraction is None) == (cutoff is None):
    raise ValueError("temporal_split: give exactly one of test_fraction and "
                     "cutoff")
  ts = np.asarray(timestamps, dtype=np.int64)
  if len(ts) == 0:
    raise DataError("temporal_split: no rows to split")
  if test_fraction is not None:
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f"temporal_split: test_fraction must be in (0, 1), got "
                       f"{test_fraction}")
    num_test = max(1, int(np.ceil(test_fraction * len(ts))))
    cutoff = int(np.sort(ts)[len(ts) - num_test])
  is_test = ts >= cutoff
  if is_test.all() or not is_test.any():
    raise DataError(
        f"temporal_split: the cut at timestamp {cutoff} leaves the "
        f"{'train' if is_test.all() else 'test'} side empty (timestamps span "
        f"{int(ts.min())}..{int(ts.max())})")
  return is_test


def normalize_query(query: str) -> str:
  """Lower case, surrounding whitespace stripped, inner runs of whitespace
  collapsed to one space: the grouping key of `query_disjoint_split`."""
  return " ".join(str(query).lower().split())


def query_disjoint_split(queries, test_fraction: float, seed: int
                        ) -> Tuple[np.ndarray, np.ndarray]:
  """Splits rows so that no query string is on both sides.

  Rows are grouped by `normalize_query` (so "Red  Mouse" and "red mouse" are
  one query); `round(test_fraction * groups)` groups (at least one, and at
  least one left for training) drawn with `np.random.default_rng(seed)` go to
  test, with all their rows.

  Args:
    queries: per-row raw query strings.

  Returns:
    `(train_mask, test_mask)`: complementary boolean arrays over the rows.

  Raises:
    DataError: no rows, a missing (None) query, or fewer than two distinct
      normalised queries.
    ValueError: `test_fraction` outside (0, 1).
  """
  queries = np.asarray(queries, dtype=object)
  if queries.ndim != 1 or len(queries) == 0:
    raise DataError("query_disjoint_split: expected a non-empty 1-D array of "
                    "query strings")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"query_disjoint_split: test_fraction must be in (0, 1), "
                     f"got {test_fraction}")
  missing = np.flatnonzero(np.equal(queries, None))
  if missing.size:
    raise DataError(f"query_disjoint_split: row {int(missing[0])} has no query")
  raw, raw_index = np.unique(queries.astype(str), return_inverse=True)
  normalised = np.asarray([normalize_query(q) for q in raw], dtype=object)
  groups, group_of_raw = np.unique(normalised, return_inverse=True)
  if len(groups) < 2:
    raise DataError(f"query_disjoint_split: need at least two distinct "
                    f"queries, got {len(groups)}")
  num_test = min(max(1, int(round(test_fraction * len(groups)))),
                 len(groups) - 1)
  test_groups = np.random.default_rng(seed).permutation(len(groups))[:num_test]
  is_test_group = np.zeros(len(groups), dtype=bool)
  is_test_group[test_groups] = True
  test_mask = is_test_group[group_of_raw.ravel()[raw_index.ravel()]]
  return ~test_mask, test_mask


def sample_negatives(test: Interactions, num_items: int, num_negatives: int,
                     exclude: Interactions, seed: int) -> np.ndarray:
  """Uniform negatives per test row, distinct within a row, none of which the
  row's user interacted with in `exclude` or in `test` itself.

  Rejection sampling in batches of rows; a user who leaves less than 20% of
  the catalogue unseen is drawn exactly from the explicit unseen set.
  Deterministic in `seed`.

  Returns:
    int32 `[len(test), num_negatives]`.

  Raises:
    DataError: empty `test`, item indices outside `[0, num_items)`, or a
      user with fewer than `num_negatives` unseen items.
  """
  if not isinstance(test, Interactions) or not isinstance(exclude,
                                                          Interactions):
    raise TypeError("sample_negatives: test and exclude must be Interactions")
  if len(test) == 0:
    raise DataError("sample_negatives: the test log is empty")
  if num_items <= 0 or num_negatives < 0:
    raise ValueError(f"sample_negatives: need num_items > 0 and "
                     f"num_negatives >= 0, got {num_items} and {num_negatives}")
  for log, what in ((test, "test"), (exclude, "exclude")):
    check_index_range(log.item, num_items, "item", f"sample_negatives {what}")
  seen = np.unique(np.concatenate([
      exclude.user.astype(np.int64) * num_items + exclude.item,
      test.user.astype(np.int64) * num_items + test.item]))
  seen_users, seen_counts = np.unique(seen // num_items, return_counts=True)
  pos = np.searchsorted(seen_users, test.user)
  known = (pos < len(seen_users)) & (
      seen_users[np.minimum(pos, len(seen_users) - 1)] == test.user)
  unseen = num_items - np.where(known, seen_counts[np.minimum(
      pos, len(seen_users) - 1)], 0)
  short = np.flatnonzero(unseen < num_negatives)
  if short.size:
    row = int(short[0])
    raise DataError(
        f"sample_negatives: user {int(test.user[row])} has only "
        f"{int(unseen[row])} unseen items of {num_items}, fewer than the "
        f"{num_negatives} negatives requested")
  rng = np.random.default_rng(seed)
  out = np.empty((len(test), num_negatives), dtype=np.int32)
  if num_negatives == 0:
    return out
  dense = unseen < _MIN_ACCEPTANCE * num_items
  sparse_rows = np.flatnonzero(~dense)
  for start in range(0, len(sparse_rows), _CHUNK_ROWS):
    rows = sparse_rows[start:start + _CHUNK_ROWS]
    out[rows] = _reject_sample(test.user[rows], unseen[rows] / num_items,
                               seen, num_items, num_negatives, rng)
  for row in np.flatnonzero(dense):
    user = np.int64(test.user[row])
    lo, hi = np.searchsorted(seen, [user * num_items, (user + 1) * num_items])
    allowed = np.setdiff1d(np.arange(num_items), seen[lo:hi] - user * num_items,
                           assume_unique=True)
    out[row] = rng.choice(allowed, num_negatives, replace=False)
  return out


def _reject_sample(users: np.ndarray, acceptance: np.ndarray, seen: np.ndarray,
                   num_items: int, num_negatives: int,
                   rng: np.random.Generator) -> np.ndarray:
  """`num_negatives` distinct unseen items per user by rejection: each round
  draws enough candidates for the still-unfilled rows to finish with high
  probability, drops seen items and repeats, and keeps the first ones."""
  users = users.astype(np.int64)
  out = np.full((len(users), num_negatives), -1, dtype=np.int64)
  filled = np.zeros(len(users), dtype=np.int64)
  pending = np.arange(len(users))
  while pending.size:
    need = num_negatives - filled[pending]
    width = int(np.ceil(np.max(need / acceptance[pending]) * 1.25)) + 8
    draws = rng.integers(0, num_items, size=(len(pending), width))
    cand = np.concatenate([out[pending], draws], axis=1)
    ok = cand >= 0
    ok &= ~_is_member(users[pending, None] * num_items + cand, seen)
    # Keep the first occurrence of each item per row (stable sort keeps the
    # already accepted values, which come first, as the first occurrences).
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_cand = np.take_along_axis(cand, order, axis=1)
    repeat = np.zeros_like(ok)
    repeat[:, 1:] = sorted_cand[:, 1:] == sorted_cand[:, :-1]
    dup = np.zeros_like(ok)
    np.put_along_axis(dup, order, repeat, axis=1)
    ok &= ~dup
    slot = np.cumsum(ok, axis=1) - 1
    take = ok & (slot < num_negatives)
    r, c = np.nonzero(take)
    fresh = np.zeros((len(pending), num_negatives), dtype=np.int64)
    fresh[r, slot[r, c]] = cand[r, c]
    count = np.minimum(ok.sum(axis=1), num_negatives)
    out[pending] = np.where(np.arange(num_negatives) < count[:, None], fresh,
                            -1)
    filled[pending] = count
    pending = pending[count < num_negatives]
  return out.astype(np.int32)


def _is_member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
  """Elementwise `keys in sorted_set` for a sorted unique int64 array."""
  if sorted_set.size == 0:
    return np.zeros(keys.shape, dtype=bool)
  pos = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
  return sorted_set[pos] == keys
