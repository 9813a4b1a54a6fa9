"""Datasets by name, as the `--dataset` flag of every CLI names them, and the
two protocols on any of them: leave-one-out (NCF / PDN Table 2) and held-out
users (Deep Retrieval Sec. 4.1, used by DR, Poeem and the baselines).

| name            | loader                                   | needs data_dir |
|-----------------|------------------------------------------|----------------|
| `synthetic`     | `synthetic.generate(...).to_rec_dataset()` | no           |
| `ml-1m`         | `movielens.load_ml1m`                    | yes            |
| `ncf-ml-1m`     | `movielens.load_ncf_ml1m` (side features from a sibling `ml-1m/` folder when present) | yes |
| `amazon-beauty`, `amazon-toys`, `amazon` | `amazon.load_amazon` | yes    |
| `csv`           | `interactions_csv.load_interactions_csv` (`data_dir` is the file) | yes |
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional

import numpy as np

from retrieval_tf.datasets import splits
from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, RecDataset

# name -> whether it needs --data_dir
REC_DATASETS: Dict[str, bool] = {
    "synthetic": False,
    "ml-1m": True,
    "ncf-ml-1m": True,
    "amazon-beauty": True,
    "amazon-toys": True,
    "amazon": True,
    "csv": True,
}


def load_rec_dataset(name: str, data_dir: Optional[str] = None,
                     seed: int = 0,
                     synthetic_config: Optional[
                         synthetic.SyntheticConfig] = None) -> RecDataset:
  """Loads a recommendation dataset by its `--dataset` name."""
  if name not in REC_DATASETS:
    raise DataError(f"unknown dataset {name!r}; choose one of "
                    f"{', '.join(sorted(REC_DATASETS))}")
  if REC_DATASETS[name] and not data_dir:
    raise DataError(f"dataset {name!r} needs a data_dir")
  if name == "synthetic":
    config = synthetic_config or synthetic.SyntheticConfig(seed=seed)
    return synthetic.generate(config).to_rec_dataset()
  # pylint: disable=g-import-not-at-top  (each loader only when asked for)
  if name == "ml-1m":
    from retrieval_tf.datasets import movielens
    return movielens.load_ml1m(data_dir)
  if name == "ncf-ml-1m":
    from retrieval_tf.datasets import movielens
    sibling = os.path.join(os.path.dirname(os.path.abspath(data_dir)),
                           "ml-1m")
    return movielens.load_ncf_ml1m(
        data_dir, ml1m_dir=sibling if os.path.isdir(sibling) else None)
  if name == "csv":
    from retrieval_tf.datasets import interactions_csv
    return interactions_csv.load_interactions_csv(data_dir)
  from retrieval_tf.datasets import amazon
  return amazon.load_amazon(data_dir,
                            name=None if name == "amazon" else name)


@dataclasses.dataclass
class LeaveOneOut:
  """The leave-one-out protocol: the last event of each user is the target,
  ranked against `negatives` (NCF: 99 sampled unseen items) and against the
  full corpus.

  Attributes:
    dataset: the dataset whose `interactions` are the training events only.
    test: one target event per test user.
    negatives: int32 `[len(test), num_negatives]`.
    valid: with validation, each user's latest training event, held out of
      `dataset.interactions` (None without validation).
    valid_negatives: int32 `[len(valid), num_negatives]`, sampled like
      `negatives` from items the user never touched.
    test_history: with validation, every training event, the validation
      events included: the users' histories when the test is scored (see
      `for_test`).
  """

  dataset: RecDataset
  test: Interactions
  negatives: np.ndarray
  valid: Optional[Interactions] = None
  valid_negatives: Optional[np.ndarray] = None
  test_history: Optional[Interactions] = None

  def for_test(self) -> "LeaveOneOut":
    """The split the test is scored on. Without validation, this split.
    With it, the same test rows with the validation events back in the
    users' histories: the model never trained on them, but each test user's
    input is every event before its target, as without validation."""
    if self.test_history is None:
      return self
    return LeaveOneOut(
        dataclasses.replace(self.dataset, interactions=self.test_history),
        self.test, self.negatives)

  def validation(self) -> "LeaveOneOut":
    """The validation rows as a `LeaveOneOut` to evaluate like the test:
    the same training events, `valid` as the targets."""
    if self.valid is None:
      raise ValueError("this split has no validation rows; make it with "
                       "leave_one_out(..., validation=True)")
    return LeaveOneOut(self.dataset, self.valid, self.valid_negatives)

  def save_validation(self, path: str) -> None:
    """Writes the validation rows and negatives (indices and original ids)
    to `path` (`.npz`; `splits.load_validation` reads it back)."""
    self.validation()  # raises without validation rows
    splits.save_validation(path, self.valid, self.valid_negatives,
                           self.dataset.users.ids, self.dataset.items.ids)


def leave_one_out(dataset: RecDataset, num_negatives: int = 99,
                  seed: int = 0, validation: bool = False) -> LeaveOneOut:
  """The dataset's predefined split (NCF) or a fresh leave-one-out one.

  With `validation`, each user's latest training event is held out of the
  training events as the validation target, with `num_negatives` negatives
  sampled (seeded by `seed`) from items the user never touched
  (`splits.leave_one_out_validation`); the test rows and negatives are the
  same as without it, and `for_test()` scores them on the full histories.
  """
  if dataset.test is not None and dataset.test_negatives is not None:
    out = LeaveOneOut(dataset, dataset.test,
                      dataset.test_negatives[:, :num_negatives])
  else:
    train, test = splits.leave_one_out(dataset.interactions)
    negatives = splits.sample_negatives(test, dataset.num_items,
                                        num_negatives,
                                        exclude=dataset.interactions,
                                        seed=seed)
    out = LeaveOneOut(dataclasses.replace(dataset, interactions=train), test,
                      negatives)
  if not validation:
    return out
  train, valid, valid_negatives = splits.leave_one_out_validation(
      out.dataset.interactions, out.test, dataset.num_items, num_negatives,
      seed)
  return LeaveOneOut(dataclasses.replace(out.dataset, interactions=train),
                     out.test, out.negatives, valid, valid_negatives,
                     test_history=out.dataset.interactions)


def held_out_split(dataset: RecDataset, num_test_users: int, seed: int,
                   min_user_events: int = 2,
                   min_rating: float = 0,
                   num_valid_users: int = 0) -> splits.DRSplit:
  """The held-out-user (DR) split of `dataset`'s interactions.

  Events rated below `min_rating` are dropped first (when the dataset has
  ratings and `min_rating` > 0; the DR paper keeps ratings >= 4 on
  MovieLens); then `splits.dr_split` holds out `num_test_users` users with
  at least `min_user_events` events, and `num_valid_users` more from the
  training users as validation users (the test users do not change with
  them).
  """
  log = dataset.interactions
  if min_rating and log.rating is not None:
    log = log.take(log.rating >= min_rating)
  return splits.dr_split(log, num_valid_users, num_test_users, seed=seed,
                         min_history=max(2, min_user_events))
