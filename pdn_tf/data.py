"""PDN's training data: one example per training interaction (Sec. 4.6).

`training_dataset(dataset, ...)` turns a `RecDataset`'s training log into the
`tf.data` batches `PDNModel.fit` takes, with the shared feature names of
`retrieval_tf.data.pipeline`: `user_id`, `user_<field>`, `item_id` (the
positive), `history` / `history_mask` (the user's earlier interactions,
newest last), `negative_ids` (uniform negatives, the distribution the
evaluation's negatives come from), `timestamp` (and `rating` when the log
has ratings).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from retrieval_tf import data as pipeline
from retrieval_tf.compat import tf
from retrieval_tf.data.samplers import UniformSampler
from retrieval_tf.datasets.types import RecDataset


def user_features(dataset: RecDataset) -> Dict[str, np.ndarray]:
  """The dataset's categorical user profile `{field: [num_users]}` (the
  fields with a vocabulary: what the user field z_u reads)."""
  return {k: v for k, v in dataset.user_features.items()
          if k in dataset.feature_vocabularies}


def training_dataset_fn(dataset: RecDataset, *, batch_size: int,
                        history_length: int = 20, num_negatives: int = 4,
                        shuffle: bool = True, seed: Optional[int] = 0,
                        repeat: bool = False, drop_remainder: bool = False):
  """`training_dataset` as a function of the `tf.distribute.InputContext`
  (or None), for the shared runner; arguments as in `training_dataset`."""
  if num_negatives < 1:
    raise ValueError(f"num_negatives must be >= 1 (Eq. 13 needs sampled "
                     f"negatives), got {num_negatives}")
  return pipeline.distributed_dataset_fn(
      dataset.interactions, batch_size=batch_size,
      history_length=history_length, user_features=user_features(dataset),
      num_users=dataset.num_users, num_items=dataset.num_items,
      shuffle=shuffle, seed=seed, repeat=repeat,
      drop_remainder=drop_remainder,
      negatives=(UniformSampler(dataset.num_items), num_negatives))


def training_dataset(dataset: RecDataset, *, batch_size: int,
                     history_length: int = 20, num_negatives: int = 4,
                     shuffle: bool = True, seed: Optional[int] = 0,
                     repeat: bool = False,
                     drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches of PDN training features from `dataset.interactions`.

      split = retrieval_tf.datasets.registry.leave_one_out(dataset)
      train = pdn_tf.training_dataset(split.dataset, batch_size=256,
                                      history_length=20, num_negatives=4)
      model.fit(train, epochs=2)
      # batch: {"user_id" [256], "item_id" [256], "history" [256, 20],
      #         "history_mask" [256, 20], "negative_ids" [256, 4],
      #         "user_<field>" [256], "timestamp" [256], ...}

  Args:
    dataset: a `RecDataset` whose `interactions` are the training log (the
      `dataset` of a leave-one-out split); its categorical user features
      become `user_<field>`.
    batch_size: examples per batch (>= 1).
    history_length: the TrigNet window L (the user's last L earlier
      interactions).
    num_negatives: uniform negatives per positive (the model's
      `num_negatives`, >= 1).
    shuffle, seed, repeat, drop_remainder: as in
      `retrieval_tf.data.pipeline.training_dataset`.

  Returns:
    A `tf.data.Dataset` of feature dicts (see above).

  Raises:
    ValueError / DataError: a bad size or an empty or out-of-range log.
  """
  return training_dataset_fn(
      dataset, batch_size=batch_size, history_length=history_length,
      num_negatives=num_negatives, shuffle=shuffle, seed=seed, repeat=repeat,
      drop_remainder=drop_remainder)(None)
