"""DPSR data: the 3-file compressed input equals the joined table, missing
feature keys are named, human supervision files, browsing history."""

import dataclasses

import numpy as np
import pytest

from retrieval_tf.compat import tf
from retrieval_tf.datasets import synthetic
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Vocabulary

from dpsr_tf import compressed
from dpsr_tf import data as data_lib


@pytest.fixture(scope="module")
def task():
  return data_lib.load_task(
      "synthetic", synthetic_config=synthetic.SyntheticConfig.scaled(
          300, num_users=300, seed=1), history_length=4)


def _collect(ds):
  out = {}
  for batch in ds:
    for k, v in batch.items():
      out.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def test_three_files_equal_the_joined_table(task, tmp_path):
  users, items, interactions = compressed.synthetic_tables(task)
  compressed.write_compressed(str(tmp_path), users, items, interactions)
  compressed.write_joined(str(tmp_path / "joined.tsv"), users, items,
                          interactions)
  three = _collect(compressed.compressed_dataset(str(tmp_path), 256))
  joined = _collect(compressed.joined_dataset(str(tmp_path / "joined.tsv"),
                                              256))
  assert sorted(three) == sorted(joined) == sorted(
      compressed.column_names(users, items))
  for key in three:
    np.testing.assert_array_equal(three[key], joined[key], err_msg=key)
  # And both equal the arrays they were written from.
  np.testing.assert_array_equal(three["item_brand"],
                                items["brand"][task.world.to_search_dataset()
                                               .interactions.item])
  assert len(three["query"]) == len(interactions["query"])
  # The three files are smaller than the joined table.
  size = sum((tmp_path / n).stat().st_size for n in (
      compressed.USERS, compressed.ITEMS, compressed.INTERACTIONS))
  assert size < (tmp_path / "joined.tsv").stat().st_size


def test_missing_feature_key_is_named(task, tmp_path):
  users, items, interactions = compressed.synthetic_tables(task)
  interactions = {k: v.copy() for k, v in interactions.items()}
  interactions["user_id"][3] = "u-ghost"
  interactions["item_id"][5] = "i-ghost"
  compressed.write_compressed(str(tmp_path), users, items, interactions)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"users.tsv has no row for user_id(.|\n)*u-ghost"):
    _collect(compressed.compressed_dataset(str(tmp_path), 64))
  interactions["user_id"][3] = "u0"
  compressed.write_compressed(str(tmp_path), users, items, interactions)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"items.tsv has no row for item_id(.|\n)*i-ghost"):
    _collect(compressed.compressed_dataset(str(tmp_path), 64))


def test_feature_file_errors(tmp_path):
  (tmp_path / compressed.USERS).write_text("user_id\tage\nu1\tx\n")
  (tmp_path / compressed.ITEMS).write_text("item_id\nb\n")
  (tmp_path / compressed.INTERACTIONS).write_text("query\tuser_id\titem_id\n")
  with pytest.raises(DataError, match="integers"):
    compressed.compressed_dataset(str(tmp_path))
  (tmp_path / compressed.USERS).write_text("user_id\tage\nu1\t1\t2\n")
  with pytest.raises(DataError, match="line 2"):
    compressed.compressed_dataset(str(tmp_path))
  (tmp_path / compressed.USERS).write_text("user_id\tage\tage\nu1\t1\t2\n")
  with pytest.raises(DataError, match="column 'age' appears twice"):
    compressed.compressed_dataset(str(tmp_path))
  (tmp_path / compressed.USERS).write_bytes(b"user_id\tage\nu\xff\t1\n")
  with pytest.raises(DataError, match=r"users.tsv:2: byte 0xff"):
    compressed.compressed_dataset(str(tmp_path))
  with pytest.raises(DataError, match="tab"):
    compressed.write_compressed(str(tmp_path), {"user_id": ["a\tb"]},
                                {"item_id": ["x"]},
                                {"query": ["q"], "user_id": ["a"],
                                 "item_id": ["x"]})


def test_supervision_file(task, tmp_path):
  items = Vocabulary(task.item_ids, "item")
  path = tmp_path / "sup.tsv"
  path.write_text("# query\titem\tlabel\n"
                  "red mouse\t3\t1\n\n"
                  "red mouse\t4\t0\n"
                  "Red  Mouse\t5\t0\n")
  pairs = data_lib.load_supervision(str(path), items)
  assert list(pairs["label"]) == [True, False, False]
  train = data_lib.add_supervision(task, pairs)
  n = len(task.train["item_id"])
  assert len(train["item_id"]) == n + 1 and train["item_id"][-1] == 3
  assert (train["history"][-1] == -1).all() and train["user_age"][-1] == -1
  last = train["hard_negatives"][-1]
  assert sorted(last[last >= 0]) == [4, 5]  # normalised query matches
  other = train["hard_negatives"][:n][task.train["query"] != "red mouse"]
  assert (other == -1).all()


def test_title_positives_add_one_example_per_titled_item(task):
  titled = dataclasses.replace(task, item_titles=np.asarray(
      [" Red  Mouse "] + [""] + list(task.item_titles[2:]), object))
  train = data_lib.add_title_positives(titled, titled.train)
  n = len(task.train["item_id"])
  added = {k: v[n:] for k, v in train.items()}
  assert list(added["item_id"]) == [0] + list(range(2, task.num_items))
  assert added["query"][0] == "Red Mouse"  # whitespace collapsed
  assert list(added["query"][1:]) == list(task.item_titles[2:])
  assert (added["history"] == -1).all() and (added["user_age"] == -1).all()
  for key, value in task.train.items():  # the clicks are kept as they were
    assert (train[key][:n] == value).all(), key
  with pytest.raises(ValueError, match="no item titles"):
    data_lib.add_title_positives(
        dataclasses.replace(task, item_titles=None), task.train)


def test_supervision_errors_have_line_numbers(task, tmp_path):
  items = Vocabulary(task.item_ids, "item")
  path = tmp_path / "sup.tsv"
  path.write_text("red mouse\t3\t1\nblue mouse\tno-such\t1\n"
                  "x\t4\t0\ny\talso-missing\t0\n")
  with pytest.raises(DataError, match=r"2 unknown item id\(s\) \(line 2: "
                     r"'no-such', line 4: 'also-missing'\)"):
    data_lib.load_supervision(str(path), items)
  path.write_text("red mouse\t3\t1\nbroken line\n\tq\t1\nz\t3\tyes\n")
  with pytest.raises(DataError, match=r"malformed line\(s\) 2, 3, 4"):
    data_lib.load_supervision(str(path), items)
  with pytest.raises(DataError, match="does not exist"):
    data_lib.load_supervision(str(tmp_path / "none.tsv"), items)
  path.write_bytes(b"red mouse\t3\t1\nbl\xffe\t4\t0\n")
  with pytest.raises(DataError, match=r"sup.tsv:2: byte 0xff .* not valid "
                     "utf-8"):
    data_lib.load_supervision(str(path), items)
  path.write_bytes(b"\xef\xbb\xbfred mouse\t3\t1\r\n")  # BOM, CRLF
  assert list(data_lib.load_supervision(str(path), items)["query"]) == [
      "red mouse"]


def test_browsing_history_is_the_last_events_before(task):
  world = task.world
  users = np.array([0, 0, 5, 7])
  times = np.array([0, world.event_time.max() + 1, world.event_time.max() +
                    1, world.event_time[world.event_user == 7][2]])
  got = data_lib.browsing_history(world, users, times, 4)
  for row, (u, t) in enumerate(zip(users, times)):
    mine = np.flatnonzero((world.event_user == u) & (world.event_time < t))
    mine = mine[np.argsort(world.event_time[mine], kind="stable")][-4:]
    want = np.full(4, -1)
    if len(mine):
      want[-len(mine):] = world.event_item[mine]
    np.testing.assert_array_equal(got[row], want)
