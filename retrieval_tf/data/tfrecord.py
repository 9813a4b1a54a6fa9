"""TFRecord files of `tf.train.Example`s, for logs that do not fit in memory.

`write_tfrecords` streams examples (one dict per example, or chunks of
parallel arrays) round-robin into `num_shards` files, never holding more than
one chunk. `read_tfrecords` reads them back as batches parsed with one
vectorised `tf.io.parse_example` per batch, sharding FILES across input
pipelines when given a `tf.distribute.InputContext`.

Value types: integers and bools are stored as int64, floats as float32,
`str` / `bytes` as bytes (read back as `tf.string`). A feature is a scalar, a
fixed-length vector, or a variable-length vector (read back ragged).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional
from typing import Sequence, Union

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets.errors import DataError

Example = Mapping[str, Any]
FeatureSpec = Dict[str, Union[tf.io.FixedLenFeature, tf.io.RaggedFeature]]

_SUFFIXES = {None: ".tfrecord", "GZIP": ".tfrecord.gz",
             "ZLIB": ".tfrecord.zlib"}


def write_tfrecords(examples: Union[Iterable[Example], Example],
                    path_prefix: str, num_shards: int = 1,
                    compression: Optional[str] = "GZIP",
                    chunked: bool = False) -> List[str]:
  """Streams examples into `num_shards` TFRecord files (round-robin).

  Args:
    examples: an iterable of example dicts `{name: scalar | 1-D sequence |
      str | bytes}`; with `chunked=True` an iterable of chunks, each a dict of
      parallel columns (one row per example: a 1-D array of scalars, a 2-D
      array of fixed-length rows, or a list / object array of variable-length
      rows). A single dict is taken as one chunk.
    path_prefix: files are `{path_prefix}-{i:05d}-of-{num_shards:05d}` plus
      `.tfrecord` (`.gz` / `.zlib` when compressed); folders are created.
    num_shards: number of files (>= 1).
    compression: "GZIP", "ZLIB" or None.
    chunked: whether the items of `examples` are chunks of columns.

  Returns:
    The shard file names, in shard order.
  """
  if compression not in _SUFFIXES:
    raise ValueError(f"write_tfrecords: compression must be one of "
                     f"{sorted(_SUFFIXES, key=str)}, got {compression!r}")
  if num_shards < 1:
    raise ValueError(f"write_tfrecords: num_shards must be >= 1, got "
                     f"{num_shards}")
  if isinstance(examples, Mapping):
    examples, chunked = [examples], True
  if chunked:
    examples = (row for chunk in examples for row in _rows(chunk))
  folder = os.path.dirname(path_prefix)
  if folder:
    os.makedirs(folder, exist_ok=True)
  paths = [f"{path_prefix}-{i:05d}-of-{num_shards:05d}"
           f"{_SUFFIXES[compression]}" for i in range(num_shards)]
  options = tf.io.TFRecordOptions(compression_type=compression or "")
  kinds: Dict[str, str] = {}
  with contextlib.ExitStack() as stack:
    writers = [stack.enter_context(tf.io.TFRecordWriter(p, options))
               for p in paths]
    for i, example in enumerate(examples):
      writers[i % num_shards].write(
          _example(example, kinds).SerializeToString())
  return paths


def read_tfrecords(file_pattern: Union[str, Sequence[str]],
                   feature_spec: FeatureSpec, batch_size: int, *,
                   shuffle: bool = False, seed: int = 0,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   compression: Optional[str] = "GZIP",
                   repeat: bool = False, drop_remainder: bool = False,
                   shuffle_buffer: int = 10_000) -> tf.data.Dataset:
  """Batches of parsed examples from TFRecord files.

  Args:
    file_pattern: a glob (or a list of globs / file names).
    feature_spec: `{name: tf.io.FixedLenFeature | RaggedFeature | ...}`,
      e.g. from `feature_spec_from_arrays`.
    batch_size: the global batch size (per-replica with `input_context`).
    shuffle: shuffle the files and, through a `shuffle_buffer`-example
      buffer, the examples (seeded; reshuffled each epoch).
    seed: the shuffling seed.
    input_context: read only this input pipeline's share of the files
      (needs at least `num_input_pipelines` files).
    compression: "GZIP", "ZLIB" or None, as written.
    repeat: repeat forever.
    drop_remainder: drop the last partial batch.
    shuffle_buffer: examples in the shuffle buffer.

  Returns:
    A `tf.data.Dataset` of dicts of batched tensors (ragged for
    `RaggedFeature`s).
  """
  if compression not in _SUFFIXES:
    raise ValueError(f"read_tfrecords: compression must be one of "
                     f"{sorted(_SUFFIXES, key=str)}, got {compression!r}")
  if batch_size <= 0:
    raise ValueError(f"read_tfrecords: batch_size must be > 0, got "
                     f"{batch_size}")
  patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise DataError(f"read_tfrecords: no file matches {file_pattern!r}")
  if input_context is not None:
    if len(files) < input_context.num_input_pipelines:
      raise DataError(
          f"read_tfrecords: {len(files)} files cannot be shared by "
          f"{input_context.num_input_pipelines} input pipelines; write at "
          "least one shard per pipeline")
    files = files[input_context.input_pipeline_id::
                  input_context.num_input_pipelines]
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed)
  ds = ds.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type=compression or ""),
      cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed)
  if repeat:
    ds = ds.repeat()
  return (ds.batch(batch_size, drop_remainder=drop_remainder)
          .map(lambda records: tf.io.parse_example(records, feature_spec),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def feature_spec_from_arrays(arrays: Mapping[str, Any]) -> FeatureSpec:
  """The parsing spec of columns shaped as `write_tfrecords` chunks.

  A 1-D array gives a scalar `FixedLenFeature([])`, a 2-D array a
  `FixedLenFeature([k])`, a list / object array of sequences a ragged
  `RaggedFeature` (a list whose rows all have one length is 2-D, fixed:
  pass an object array to keep it ragged); dtypes are int64, float32 or
  string.
  """
  spec: FeatureSpec = {}
  for name, column in arrays.items():
    rows = _column(column)
    if rows.dtype == object and rows.size and not isinstance(
        rows.flat[0], (str, bytes)):
      # Empty rows (float64 to NumPy) say nothing of the type; ints if all.
      values = [np.asarray(r).ravel() for r in rows if np.size(r)]
      kind = _kind(name, np.concatenate(values)) if values else "int"
      spec[name] = tf.io.RaggedFeature(_KIND_DTYPES[kind],
                                       row_splits_dtype=tf.int64)
    else:
      spec[name] = tf.io.FixedLenFeature(list(rows.shape[1:]),
                                         _KIND_DTYPES[_kind(name, rows)])
  return spec


_KIND_DTYPES = {"int": tf.int64, "float": tf.float32, "bytes": tf.string}


def _column(column: Any) -> np.ndarray:
  """A chunk column as an array whose first axis is the examples (an object
  array when its rows differ in length)."""
  if isinstance(column, np.ndarray):
    return column
  try:
    return np.asarray(column)
  except ValueError:  # rows of different lengths
    rows = np.empty(len(column), dtype=object)
    rows[:] = [np.asarray(r) for r in column]
    return rows


def _rows(chunk: Example) -> Iterator[Dict[str, Any]]:
  """The examples of a dict-of-columns chunk."""
  columns = {name: _column(c) for name, c in chunk.items()}
  lengths = {name: len(c) for name, c in columns.items()}
  if len(set(lengths.values())) > 1:
    raise DataError(f"write_tfrecords: chunk columns differ in length: "
                    f"{lengths}")
  for i in range(next(iter(lengths.values()), 0)):
    yield {name: c[i] for name, c in columns.items()}


def _kind(name: str, values: np.ndarray) -> str:
  """"int", "float" or "bytes" of an array's values."""
  if values.dtype.kind in "biu":
    return "int"
  if values.dtype.kind == "f":
    return "float"
  if values.dtype.kind in "SU" or (values.dtype == object and all(
      isinstance(v, (str, bytes)) for v in values.flat)):
    return "bytes"
  raise DataError(f"write_tfrecords: feature {name!r} has unsupported "
                  f"values of dtype {values.dtype}")


def _example(example: Example, kinds: Dict[str, str]) -> tf.train.Example:
  """One `tf.train.Example`; `kinds` keeps each feature's type consistent."""
  features = {}
  for name, value in example.items():
    values = np.asarray(value).ravel()
    if not values.size:  # an empty variable-length row: no type to check
      features[name] = tf.train.Feature()
      continue
    kind = _kind(name, values)
    if kinds.setdefault(name, kind) != kind:
      raise DataError(f"write_tfrecords: feature {name!r} changed type from "
                      f"{kinds[name]} to {kind}")
    if kind == "int":
      feature = tf.train.Feature(int64_list=tf.train.Int64List(
          value=values.astype(np.int64)))
    elif kind == "float":
      feature = tf.train.Feature(float_list=tf.train.FloatList(
          value=values.astype(np.float32)))
    else:
      feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[
          v if isinstance(v, bytes) else str(v).encode("utf-8")
          for v in values.tolist()]))
    features[name] = feature
  return tf.train.Example(features=tf.train.Features(feature=features))
