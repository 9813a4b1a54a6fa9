"""TFRecord round trips: fixed / variable-length ints, floats, strings,
several shards, compression, streaming input, sharding files per pipeline."""

import numpy as np
import pytest

from retrieval_tf.compat import tf
from retrieval_tf.data import (feature_spec_from_arrays, read_tfrecords,
                               write_tfrecords)
from retrieval_tf.datasets.errors import DataError

N = 37


def _columns(n=N, offset=0, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "id": np.arange(offset, offset + n),
      "genres": rng.integers(-1, 9, (n, 3)),
      "history": [rng.integers(0, 100, rng.integers(0, 5)).tolist()
                  for _ in range(n)],
      "score": rng.random(n).astype(np.float32),
      "title": np.array([f"title {i} é" for i in range(offset, offset + n)],
                        dtype=object),
  }


def _read_all(dataset):
  """`{id: {feature: python value}}` of every example read."""
  out = {}
  for batch in dataset:
    history = batch["history"].to_list()
    for i, key in enumerate(batch["id"].numpy().tolist()):
      assert key not in out, key
      out[key] = {"genres": batch["genres"][i].numpy().tolist(),
                  "history": history[i],
                  "score": float(batch["score"][i]),
                  "title": batch["title"][i].numpy().decode("utf-8")}
  return out


def _check(read, columns):
  assert sorted(read) == columns["id"].tolist()
  for i, key in enumerate(columns["id"].tolist()):
    got = read[key]
    assert got["genres"] == columns["genres"][i].tolist()
    assert got["history"] == columns["history"][i]
    assert got["score"] == pytest.approx(float(columns["score"][i]))
    assert got["title"] == columns["title"][i]


@pytest.mark.parametrize("compression", ["GZIP", None, "ZLIB"])
def test_round_trip_of_chunks(tmp_path, compression):
  columns = _columns()
  spec = feature_spec_from_arrays(columns)
  assert isinstance(spec["history"], tf.io.RaggedFeature)
  assert spec["genres"].shape == [3] and spec["id"].shape == []
  assert spec["title"].dtype == tf.string
  files = write_tfrecords(columns, str(tmp_path / "out" / "log"),
                          num_shards=3, compression=compression)
  assert len(files) == 3 and all(tf.io.gfile.exists(f) for f in files)
  assert files[0].endswith({"GZIP": ".tfrecord.gz", None: ".tfrecord",
                            "ZLIB": ".tfrecord.zlib"}[compression])
  ds = read_tfrecords(str(tmp_path / "out" / "log-*"), spec, batch_size=8,
                      compression=compression)
  _check(_read_all(ds), columns)


def test_streams_example_dicts_and_chunk_iterables(tmp_path):
  chunks = [_columns(10, 0, seed=1), _columns(15, 10, seed=2)]
  consumed = []

  def generate():
    for chunk in chunks:
      consumed.append(len(chunk["id"]))
      yield chunk

  spec = feature_spec_from_arrays(chunks[0])
  files = write_tfrecords(generate(), str(tmp_path / "chunks"),
                          num_shards=2, chunked=True)
  assert consumed == [10, 15]
  expected = {k: (np.concatenate([c[k] for c in chunks])
                  if k != "history" else chunks[0][k] + chunks[1][k])
              for k in chunks[0]}
  _check(_read_all(read_tfrecords(files, spec, batch_size=4)), expected)

  examples = ({k: v[i] for k, v in chunks[0].items()} for i in range(10))
  files = write_tfrecords(examples, str(tmp_path / "dicts"), num_shards=1,
                          compression=None)
  ds = read_tfrecords(files[0], spec, batch_size=64, compression=None)
  _check(_read_all(ds), chunks[0])


def test_shuffle_and_input_context_shard_files(tmp_path):
  columns = _columns()
  spec = feature_spec_from_arrays(columns)
  write_tfrecords(columns, str(tmp_path / "log"), num_shards=4)
  pattern = str(tmp_path / "log-*")

  def ids(ds):
    return np.concatenate([b["id"].numpy() for b in ds])

  a = ids(read_tfrecords(pattern, spec, 8, shuffle=True, seed=5))
  b = ids(read_tfrecords(pattern, spec, 8, shuffle=True, seed=5))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.sort(a), np.arange(N))
  shards = []
  for i in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=i,
                                         num_replicas_in_sync=2)
    ds = read_tfrecords(pattern, spec, 8, input_context=context)
    assert max(int(x["id"].shape[0]) for x in ds) == 4
    shards.append(ids(ds))
  assert not set(shards[0]) & set(shards[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(shards)),
                                np.arange(N))
  repeated = read_tfrecords(pattern, spec, 8, repeat=True,
                            drop_remainder=True)
  assert repeated.element_spec["genres"].shape == (8, 3)
  assert len(ids(repeated.take(10))) == 80


def test_errors(tmp_path):
  with pytest.raises(ValueError, match="compression"):
    write_tfrecords({"a": [1]}, str(tmp_path / "x"), compression="LZ4")
  with pytest.raises(DataError, match="differ in length"):
    write_tfrecords({"a": [1, 2], "b": [1]}, str(tmp_path / "x"))
  with pytest.raises(DataError, match="changed type"):
    write_tfrecords([{"a": 1}, {"a": "text"}], str(tmp_path / "x"))
  with pytest.raises(DataError, match="no file matches"):
    read_tfrecords(str(tmp_path / "missing-*"), {}, 4)
  write_tfrecords({"a": [1, 2]}, str(tmp_path / "one"))
  context = tf.distribute.InputContext(num_input_pipelines=2,
                                       input_pipeline_id=0)
  with pytest.raises(DataError, match="1 files cannot be shared by 2"):
    read_tfrecords(str(tmp_path / "one-*"),
                   feature_spec_from_arrays({"a": [1, 2]}), 4,
                   input_context=context)
