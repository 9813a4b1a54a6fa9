"""Poeem's training data (Sec. 3.1): one example per training event, the
user's earlier events as the behaviour history.

Built on the shared pipeline (`retrieval_tf.data`), with its feature names:
`history` int32 `[B, L]` (previous items, most recent last, -1 padded on
the left), `history_mask` bool `[B, L]`, `item_id` int32 `[B]` (the
positive), `user_id` int32 `[B]` (not read: the user tower reads the
history, so held-out users work), `negative_ids` int32 `[B, n]` (uniform
random negatives of the hinge loss) and `item_log_q` float32 `[B]` (the
softmax loss' logQ correction).
"""

from __future__ import annotations

from typing import Optional

from retrieval_tf import data as pipeline
from retrieval_tf.compat import tf
from retrieval_tf.data.samplers import UniformSampler
from retrieval_tf.datasets.types import Interactions


def dataset_fn(interactions: Interactions, *, batch_size: int,
               history_length: int = 50, num_items: Optional[int] = None,
               num_users: Optional[int] = None, num_negatives: int = 0,
               with_log_q: bool = False, shuffle: bool = True,
               seed: Optional[int] = 0, repeat: bool = False,
               drop_remainder: bool = True) -> pipeline.DatasetFn:
  """`training_dataset` as a function of the `tf.distribute.InputContext`
  (for the distributed runner); arguments as in `training_dataset`."""
  if num_negatives < 0:
    raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
  if num_negatives and num_items is None:
    raise ValueError("num_negatives > 0 samples item ids: give num_items "
                     "(the model's catalogue size)")
  return pipeline.distributed_dataset_fn(
      interactions, batch_size=batch_size, history_length=history_length,
      num_users=num_users, num_items=num_items, shuffle=shuffle, seed=seed,
      repeat=repeat, drop_remainder=drop_remainder,
      negatives=((UniformSampler(num_items), num_negatives)
                 if num_negatives else None),
      with_log_q=with_log_q)


def training_dataset(interactions: Interactions, *, batch_size: int,
                     history_length: int = 50,
                     num_items: Optional[int] = None,
                     num_users: Optional[int] = None, num_negatives: int = 0,
                     with_log_q: bool = False, shuffle: bool = True,
                     seed: Optional[int] = 0, repeat: bool = False,
                     drop_remainder: bool = True) -> tf.data.Dataset:
  """Batches of Poeem training examples for `PoeemModel.fit`.

  Args:
    interactions: the training log (`Interactions`), one example per row.
    batch_size: examples per batch.
    history_length: L, the behaviour-history window.
    num_items: the model's catalogue size (needed by `num_negatives`;
      default: the largest item id + 1).
    num_users: user vocabulary size (default: the largest id + 1).
    num_negatives: uniform random negatives per example for the hinge loss
      (0: the hinge uses the batch's other items).
    with_log_q: add `item_log_q` (the softmax loss' logQ correction).
    shuffle, seed: a seeded new permutation each epoch.
    repeat: repeat forever (then give `fit` a `steps_per_epoch`).
    drop_remainder: drop each epoch's last partial batch.

  Returns:
    A `tf.data.Dataset` of `{"user_id", "item_id", "history",
    "history_mask"[, "negative_ids"][, "item_log_q"], ...}` dicts.

  Raises:
    DataError: an empty log or ids outside the vocabularies.
    ValueError: batch_size or history_length < 1, num_negatives < 0, or
      num_negatives without num_items.

  Example:

      train = poeem_tf.training_dataset(split.train, batch_size=256,
                                        history_length=20,
                                        num_items=dataset.num_items,
                                        num_negatives=20)
      model.fit(train, epochs=3)
  """
  return dataset_fn(
      interactions, batch_size=batch_size, history_length=history_length,
      num_items=num_items, num_users=num_users, num_negatives=num_negatives,
      with_log_q=with_log_q, shuffle=shuffle, seed=seed, repeat=repeat,
      drop_remainder=drop_remainder)(None)
