"""Deep Retrieval's training data (Sec. 4.1): one example per training
event, the user's earlier events as the behaviour sequence.

Built on the shared pipeline (`retrieval_tf.data`), with its feature names:
`history` int32 `[B, L]` (the user's previous items, most recent last, -1
padded on the left), `history_mask` bool `[B, L]`, `item_id` int32 `[B]`
(the positive), `user_id` int32 `[B]` (not read by the model: train, test
and validation users are disjoint).
"""

from __future__ import annotations

from typing import Optional

from retrieval_tf import data as pipeline
from retrieval_tf.compat import tf
from retrieval_tf.datasets.types import Interactions

DEFAULT_HISTORY_LENGTH = 69   # the paper's behaviour-sequence length


def dataset_fn(interactions: Interactions, *, batch_size: int,
               history_length: int = DEFAULT_HISTORY_LENGTH,
               num_users: Optional[int] = None,
               num_items: Optional[int] = None, shuffle: bool = True,
               seed: Optional[int] = 0, repeat: bool = False,
               drop_remainder: bool = False) -> pipeline.DatasetFn:
  """`training_dataset` as a function of the `tf.distribute.InputContext`
  (for the distributed runner); arguments as in `training_dataset`."""
  return pipeline.distributed_dataset_fn(
      interactions, batch_size=batch_size, history_length=history_length,
      num_users=num_users, num_items=num_items, shuffle=shuffle, seed=seed,
      repeat=repeat, drop_remainder=drop_remainder)


def training_dataset(interactions: Interactions, *, batch_size: int,
                     history_length: int = DEFAULT_HISTORY_LENGTH,
                     num_users: Optional[int] = None,
                     num_items: Optional[int] = None, shuffle: bool = True,
                     seed: Optional[int] = 0, repeat: bool = False,
                     drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches of DR training examples for `DeepRetrievalModel.fit`.

  Args:
    interactions: the training log (`Interactions`), one example per row;
      with timestamps, the history is in time order.
    batch_size: examples per batch (the in-batch softmax's negatives are
      the batch's other items).
    history_length: L, the behaviour-sequence length (69 in the paper).
    num_users, num_items: vocabulary sizes (default: the largest id + 1;
      give `num_items` = the model's V).
    shuffle, seed: a seeded new permutation each epoch.
    repeat: repeat forever (then give `fit` a `steps_per_epoch`).
    drop_remainder: drop each epoch's last partial batch.

  Returns:
    A `tf.data.Dataset` of `{"user_id", "item_id", "history",
    "history_mask", ...}` dicts (plus the log's `timestamp` / `rating`).

  Raises:
    DataError: an empty log or ids outside the vocabularies.
    ValueError: batch_size or history_length < 1.

  Example:

      train = dr_tf.training_dataset(split.train, batch_size=256,
                                     history_length=20,
                                     num_items=dataset.num_items)
      model.fit(train, epochs=4)
  """
  return dataset_fn(
      interactions, batch_size=batch_size, history_length=history_length,
      num_users=num_users, num_items=num_items, shuffle=shuffle, seed=seed,
      repeat=repeat, drop_remainder=drop_remainder)(None)
