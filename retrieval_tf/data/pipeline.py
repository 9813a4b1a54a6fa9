"""`tf.data` pipelines of feature dicts for `model.fit` and for evaluation.

Feature names (what every tower reads):

  * `user_id`, `item_id`: int32 `[B]`.
  * `history`, `history_mask`: int32 / bool `[B, L]`, the user's previous
    items, most recent LAST, padded on the left with -1 (see
    `retrieval_tf.data.history`).
  * `user_<field>`, `item_<field>`: side features gathered by user / item id
    from `{field: array [vocabulary size, ...]}` (int -> int32, float ->
    float32; multi-valued fields `[B, G]` padded with -1 as stored).
  * `timestamp` (int64), `rating` (float32), `query` (string): the log's
    optional columns, when present.
  * `item_log_q`: float32 `[B]`, log of the positive's frequency in the
    training stream (the in-batch logQ correction).
  * `negative_ids`: int32 `[B, n]` sampled negatives.

Speed: the columns stay whole tensors; per epoch the row indices are permuted
in one op (a seeded `stateless_shuffle`) and cut into batches, then a single
parallel `map` gathers every column and builds the history windows per batch,
so no tf.data stage runs per example.

Reproducibility: the same `seed` gives the same batches (each epoch, and each
new iteration of a non-repeating dataset, gets a new permutation from a seeded
`Dataset.random` stream, so the sequence of epochs is reproducible too).

Distribution: `distributed_dataset_fn` returns `InputContext -> Dataset` for
`strategy.distribute_datasets_from_function` and for
`keras.utils.experimental.DatasetCreator` (ParameterServerStrategy): input
pipeline `i` of `k` reads rows `i, i + k, i + 2k, ...` in per-replica batches.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex, history_window
from retrieval_tf.data.samplers import (NegativeSampler, in_batch_log_q,
                                        item_frequencies)
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, check_index_range

PAD_ID = -1
OPTIONAL_COLUMNS = ("timestamp", "rating", "query")

Features = Mapping[str, Any]
DatasetFn = Callable[[Optional[tf.distribute.InputContext]], tf.data.Dataset]


def training_dataset(
    interactions: Interactions, *, batch_size: int,
    history_length: Optional[int] = None,
    user_features: Optional[Features] = None,
    item_features: Optional[Features] = None,
    shuffle: bool = True, seed: Optional[int] = 0, repeat: bool = False,
    negatives: Optional[Tuple[NegativeSampler, int]] = None,
    with_log_q: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    drop_remainder: bool = False,
    num_users: Optional[int] = None,
    num_items: Optional[int] = None) -> tf.data.Dataset:
  """Batches of training feature dicts, one example per interaction.

      split = retrieval_tf.datasets.leave_one_out(dataset)
      train = training_dataset(split.dataset.interactions, batch_size=256,
                               history_length=20, with_log_q=True,
                               user_features={"gender": genders})
      model.fit(train, epochs=3)
      # batch: {"user_id" [256], "item_id" [256], "history" [256, 20],
      #         "history_mask" [256, 20], "user_gender" [256],
      #         "item_log_q" [256], "timestamp" [256]}

  Args:
    interactions: the training log (one example per row).
    batch_size: the GLOBAL batch size; with `input_context` each pipeline
      yields per-replica batches of `batch_size / num_replicas_in_sync`.
    history_length: add `history` / `history_mask` windows of this length
      (the user's events before the example's, in time order); None: none.
    user_features, item_features: `{field: array}` with one row per user /
      item, gathered into `user_<field>` / `item_<field>`.
    shuffle: permute the rows anew each epoch (seeded).
    seed: the seed of the permutations and of the negative samples; None
      draws fresh randomness (not reproducible), e.g. to decorrelate
      ParameterServerStrategy workers, which all get the same InputContext
      (one pipeline) and would otherwise read the same batches.
    repeat: repeat forever (each epoch reshuffled); else one epoch.
    negatives: `(sampler, n)` adds `negative_ids [B, n]` from `sampler`.
    with_log_q: add `item_log_q` (the in-batch logQ correction).
    input_context: shard rows for this input pipeline (see module).
    drop_remainder: drop each epoch's last partial batch (static batch size).
    num_users, num_items: vocabulary sizes; default to the features' first
      dimension, else to the largest id + 1.

  Returns:
    A `tf.data.Dataset` of feature dicts (names and dtypes in the module
    docstring), ready for `model.fit`.

  Raises:
    DataError: empty log, ids outside the vocabularies, feature arrays whose
      first dimension is not the vocabulary size, or fewer rows than a batch
      with `drop_remainder`.
    ValueError: batch_size <= 0, history_length <= 0, a bad `negatives`.
  """
  return distributed_dataset_fn(
      interactions, batch_size=batch_size, history_length=history_length,
      user_features=user_features, item_features=item_features,
      shuffle=shuffle, seed=seed, repeat=repeat, negatives=negatives,
      with_log_q=with_log_q, drop_remainder=drop_remainder,
      num_users=num_users, num_items=num_items)(input_context)


def distributed_dataset_fn(
    interactions: Interactions, *, batch_size: int,
    history_length: Optional[int] = None,
    user_features: Optional[Features] = None,
    item_features: Optional[Features] = None,
    shuffle: bool = True, seed: Optional[int] = 0, repeat: bool = False,
    negatives: Optional[Tuple[NegativeSampler, int]] = None,
    with_log_q: bool = False, drop_remainder: bool = False,
    num_users: Optional[int] = None,
    num_items: Optional[int] = None) -> DatasetFn:
  """`training_dataset` as a function of the `InputContext` (or None).

  Validates and indexes the log once; the returned function builds each input
  pipeline's dataset, for `strategy.distribute_datasets_from_function(fn)` or
  `keras.utils.experimental.DatasetCreator(fn)`. Arguments as in
  `training_dataset`; `batch_size` is global.
  """
  source = "training_dataset"
  _check_batch_size(batch_size, source)
  if len(interactions) == 0:
    raise DataError(f"{source}: the interaction log is empty")
  user_features = dict(user_features or {})
  item_features = dict(item_features or {})
  num_users = _vocabulary_size(interactions.user, user_features, num_users,
                               "user", source)
  num_items = _vocabulary_size(interactions.item, item_features, num_items,
                               "item", source)
  columns = {"user_id": interactions.user, "item_id": interactions.item}
  for name in OPTIONAL_COLUMNS:
    if getattr(interactions, name) is not None:
      columns[name] = getattr(interactions, name)
  history_items = None
  if history_length is not None:
    _check_history_length(history_length, source)
    index = HistoryIndex.from_interactions(interactions, num_users)
    columns["history_start"] = index.event_starts
    columns["history_end"] = index.event_ends
    history_items = index.items
  tables = {**_tables(user_features, "user"), **_tables(item_features, "item")}
  probabilities = (item_frequencies(interactions, num_items) if with_log_q
                   else None)
  if negatives is not None:
    _check_negatives(negatives, num_items, source)

  def dataset_fn(input_context: Optional[tf.distribute.InputContext] = None
                ) -> tf.data.Dataset:
    pipelines, pipeline_id, per_replica = 1, 0, batch_size
    if input_context is not None:
      pipelines = input_context.num_input_pipelines
      pipeline_id = input_context.input_pipeline_id
      per_replica = input_context.get_per_replica_batch_size(batch_size)
    shard = {k: v[pipeline_id::pipelines] for k, v in columns.items()}
    rows = len(shard["user_id"])
    if rows == 0 or (drop_remainder and rows < per_replica):
      raise DataError(
          f"{source}: input pipeline {pipeline_id} of {pipelines} has "
          f"{rows} rows, fewer than one batch of {per_replica}")
    return _feature_dataset(
        shard, tables, batch_size=per_replica, history_items=history_items,
        history_length=history_length, shuffle=shuffle, seed=seed,
        repeat=repeat, drop_remainder=drop_remainder,
        probabilities=probabilities, negatives=negatives,
        pipeline_id=pipeline_id)

  return dataset_fn


def user_eval_dataset(
    users, history: Union[HistoryIndex, Mapping[int, Any], None],
    history_length: Optional[int], user_features: Optional[Features] = None,
    batch_size: int = 1024) -> tf.data.Dataset:
  """Batches of user feature dicts, in the order of `users`, for computing
  user embeddings at evaluation.

  Args:
    users: int user ids `[U]`.
    history: a `HistoryIndex` or `{user: chronological item sequence}`
      (`Interactions.sequences()`); may be None without `history_length`.
    history_length: `history` holds each user's LAST `history_length` items
      (all the user's indexed events); None: no history features.
    user_features: `{field: [num_users, ...]}` gathered into `user_<field>`.
    batch_size: rows per batch (the last one may be smaller).
  """
  source = "user_eval_dataset"
  _check_batch_size(batch_size, source)
  users = np.asarray(users, dtype=np.int32)
  if users.ndim != 1 or users.size == 0:
    raise DataError(f"{source}: users must be a non-empty 1-D array, got "
                    f"shape {users.shape}")
  user_features = dict(user_features or {})
  if user_features:
    _vocabulary_size(users, user_features, None, "user", source)
  elif users.min() < 0:
    raise DataError(f"{source}: negative user id {int(users.min())}")
  columns = {"user_id": users}
  history_items = None
  if history_length is not None:
    _check_history_length(history_length, source)
    if history is None:
      raise ValueError(f"{source}: history_length={history_length} needs a "
                       "history (HistoryIndex or sequences)")
    if not isinstance(history, HistoryIndex):
      history = HistoryIndex.from_sequences(history)
    columns["history_start"], columns["history_end"] = (
        history.user_history(users))
    history_items = history.items
  return _feature_dataset(columns, _tables(user_features, "user"),
                          batch_size=batch_size, history_items=history_items,
                          history_length=history_length)


def item_dataset(num_items: int, item_features: Optional[Features] = None,
                 batch_size: int = 1024) -> tf.data.Dataset:
  """Batches of `{item_id, item_<field>...}` over all items `0..n-1` in
  order, for computing every item embedding."""
  source = "item_dataset"
  _check_batch_size(batch_size, source)
  if num_items < 1:
    raise DataError(f"{source}: num_items must be >= 1, got {num_items}")
  item_features = dict(item_features or {})
  ids = np.arange(num_items, dtype=np.int32)
  _vocabulary_size(ids, item_features, num_items, "item", source)
  return _feature_dataset({"item_id": ids}, _tables(item_features, "item"),
                          batch_size=batch_size)


def _feature_dataset(columns: Dict[str, np.ndarray],
                     tables: Dict[str, Tuple[str, np.ndarray]], *,
                     batch_size: int,
                     history_items: Optional[np.ndarray] = None,
                     history_length: Optional[int] = None,
                     shuffle: bool = False, seed: Optional[int] = 0,
                     repeat: bool = False, drop_remainder: bool = False,
                     probabilities: Optional[np.ndarray] = None,
                     negatives: Optional[Tuple[NegativeSampler, int]] = None,
                     pipeline_id: int = 0) -> tf.data.Dataset:
  """Row-index batches -> one parallel map gathering every feature.

  `columns` are per-row arrays (`history_start` / `history_end` become the
  history window); `tables` map an output name to `(id column, array)`.
  They are converted to tensors here, not inside the map function: eagerly,
  the map function then captures them by reference, so creating an iterator
  does not copy them into a function graph (inside a `tf.function`, e.g. a
  ParameterServerStrategy worker's `dataset_fn`, they are graph constants).
  """
  columns = {k: tf.convert_to_tensor(v) for k, v in columns.items()}
  tables = {k: (c, tf.convert_to_tensor(v)) for k, (c, v) in tables.items()}
  if history_items is not None:
    history_items = tf.convert_to_tensor(history_items)
  if probabilities is not None:
    probabilities = tf.convert_to_tensor(probabilities)

  def features(key: tf.Tensor, rows: tf.Tensor) -> Dict[str, tf.Tensor]:
    out = {name: tf.gather(values, rows) for name, values in columns.items()
           if not name.startswith("history_")}
    if history_items is not None:
      out["history"], out["history_mask"] = history_window(
          history_items, tf.gather(columns["history_start"], rows),
          tf.gather(columns["history_end"], rows), history_length, PAD_ID)
    for name, (id_column, table) in tables.items():
      out[name] = tf.gather(table, out[id_column])
    if probabilities is not None:
      out["item_log_q"] = in_batch_log_q(out["item_id"], probabilities)
    if negatives is not None:
      sampler, count = negatives
      out["negative_ids"] = sampler.sample(
          tf.stack([tf.size(rows), count]),
          tf.random.experimental.stateless_fold_in(key, pipeline_id))
    return out

  num_rows = int(next(iter(columns.values())).shape[0])
  return (_row_batches(num_rows, batch_size,
                       shuffle=shuffle, seed=seed, repeat=repeat,
                       drop_remainder=drop_remainder)
          .map(features, num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def _row_batches(num_rows: int, batch_size: int, *, shuffle: bool,
                 seed: Optional[int], repeat: bool,
                 drop_remainder: bool) -> tf.data.Dataset:
  """`(key, rows)` elements: int64 row indices `[batch]` of each batch, every
  row once per epoch, and a distinct int64 `[2]` RNG key per batch
  `(epoch seed, batch number)`."""
  full = num_rows // batch_size
  epoch_seeds = tf.data.Dataset.random(seed=seed,
                                       rerandomize_each_iteration=True)
  if not repeat:
    epoch_seeds = epoch_seeds.take(1)

  def epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
    rows = tf.range(num_rows, dtype=tf.int64)
    if shuffle:
      rows = tf.random.experimental.stateless_shuffle(
          rows, tf.stack([epoch_seed, tf.constant(-1, tf.int64)]))
    keys = tf.stack([tf.fill([full + 1], epoch_seed),
                     tf.range(full + 1, dtype=tf.int64)], axis=1)
    batches = tf.data.Dataset.from_tensor_slices(
        (keys[:full], tf.reshape(rows[:full * batch_size], [full, batch_size])))
    if drop_remainder or full * batch_size == num_rows:
      return batches
    return batches.concatenate(tf.data.Dataset.from_tensors(
        (keys[full], rows[full * batch_size:])))

  return epoch_seeds.flat_map(epoch)


def _check_batch_size(batch_size: int, source: str) -> None:
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"{source}: batch_size must be a positive int, got "
                     f"{batch_size!r}")


def _check_history_length(history_length: int, source: str) -> None:
  if (not isinstance(history_length, (int, np.integer))
      or history_length <= 0):
    raise ValueError(f"{source}: history_length must be a positive int or "
                     f"None, got {history_length!r}")


def _check_negatives(negatives, num_items: int, source: str) -> None:
  try:
    sampler, count = negatives
  except (TypeError, ValueError):
    raise ValueError(f"{source}: negatives must be (sampler, count), got "
                     f"{negatives!r}") from None
  if not isinstance(count, (int, np.integer)) or count <= 0:
    raise ValueError(f"{source}: the number of negatives must be a positive "
                     f"int, got {count!r}")
  if sampler.num_items != num_items:
    raise ValueError(
        f"{source}: the negative sampler draws from {sampler.num_items} "
        f"items but the item vocabulary has {num_items} (pass num_items=)")


def _vocabulary_size(ids: np.ndarray, features: Dict[str, Any],
                     size: Optional[int], what: str, source: str) -> int:
  """The vocabulary size (given, else the features' first dimension, else
  max id + 1), checked against every feature array and every id."""
  rows = {name: np.shape(values)[0] if np.ndim(values) else 0
          for name, values in features.items()}
  if size is None:
    size = next(iter(rows.values())) if rows else int(ids.max()) + 1
  for name, n in rows.items():
    if n != size:
      raise DataError(
          f"{source}: {what} feature {name!r} has {n} rows but the {what} "
          f"vocabulary has {size} {what}s")
  check_index_range(ids, size, what, source)
  return size


def _tables(features: Dict[str, Any], what: str
           ) -> Dict[str, Tuple[str, np.ndarray]]:
  """`{what_field: (what_id, array)}` with ints as int32, floats float32."""
  out = {}
  for name, values in features.items():
    values = np.asarray(values)
    if values.dtype.kind in "biu":
      values = values.astype(np.int32)
    elif values.dtype.kind == "f":
      values = values.astype(np.float32)
    out[f"{what}_{name}"] = (f"{what}_id", values)
  return out
