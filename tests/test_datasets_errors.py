"""Every loader turns bad input into a clear DataError, never garbage."""

import json
import logging
import warnings

import numpy as np
import pytest

from retrieval_tf.datasets import (amazon, bestbuy, crowdflower,
                                   interactions_csv, movielens, registry)
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Interactions, Vocabulary


def _write(folder, name, text, encoding="utf-8"):
  path = folder / name
  path.write_text(text, encoding=encoding)
  return path


def _ml1m(folder, ratings="1::10::5::100\n2::10::3::200\n",
          users="1::F::1::10::48067\n2::M::56::16::70072\n",
          movies="10::Toy Story (1995)::Animation|Comedy\n"):
  _write(folder, "ratings.dat", ratings)
  _write(folder, "users.dat", users)
  _write(folder, "movies.dat", movies, encoding="latin-1")
  return str(folder)


def test_ml1m_small_file_loads(tmp_path):
  d = movielens.load_ml1m(_ml1m(tmp_path))
  assert (d.num_users, d.num_items, len(d.interactions)) == (2, 1, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"ratings": ""}, "ratings.dat: the file is empty"),
    ({"ratings": "1::10::5::100\n1::10::5\n"},
     "ratings.dat:2: expected 4 fields"),
    ({"ratings": "1::x::5::100\n"}, "ratings.dat:1: non-integer"),
    ({"ratings": "1::10::5::-3\n"}, "ratings.dat:1: negative"),
    ({"ratings": "1::10::9::100\n"}, "ratings.dat:1: rating outside 1..5"),
    ({"ratings": "1::99::5::100\n"}, "ratings.dat:1: unknown MovieID 99"),
    ({"ratings": "7::10::5::100\n"}, "ratings.dat:1: unknown UserID 7"),
    ({"users": "1::F::1::10::1\n1::M::1::10::1\n"}, "duplicate id '1'"),
    ({"movies": "10::A (1990)::Drama\n10::B (1991)::Drama\n"},
     "duplicate id '10'"),
    ({"movies": "10::no genres\n"}, "movies.dat:1: expected MovieID"),
])
def test_ml1m_bad_input(tmp_path, kwargs, message):
  with pytest.raises(DataError, match=message):
    movielens.load_ml1m(_ml1m(tmp_path, **kwargs))


def test_missing_files_are_named(tmp_path):
  with pytest.raises(DataError, match="missing ratings.dat, users.dat"):
    movielens.load_ml1m(str(tmp_path))
  with pytest.raises(DataError, match="ml-1m.train.rating"):
    movielens.load_ncf_ml1m(str(tmp_path))
  with pytest.raises(DataError, match="train.csv"):
    crowdflower.load_crowdflower(str(tmp_path))
  with pytest.raises(DataError, match="ecommerce.json"):
    bestbuy.load_bestbuy(str(tmp_path))
  with pytest.raises(DataError, match="<Name>.txt"):
    amazon.load_amazon(str(tmp_path))
  with pytest.raises(DataError, match="not found"):
    interactions_csv.load_interactions_csv(str(tmp_path / "x.csv"))
  with pytest.raises(DataError, match="not a directory"):
    movielens.load_ml1m(str(tmp_path / "nope"))


def _ncf(folder, negative="(0,1)\t2\t3\n(1,2)\t0\t3\n",
         test="0\t1\t5\t10\n1\t2\t4\t11\n"):
  _write(folder, "ml-1m.train.rating", "0\t0\t5\t1\n1\t3\t4\t2\n")
  _write(folder, "ml-1m.test.rating", test)
  _write(folder, "ml-1m.test.negative", negative)
  return str(folder)


def test_ncf_small_split_loads(tmp_path):
  d = movielens.load_ncf_ml1m(_ncf(tmp_path))
  np.testing.assert_array_equal(d.test_negatives, [[2, 3], [0, 3]])


@pytest.mark.parametrize("kwargs, message", [
    ({"negative": "(0,1)\t2\t3\n(1,9)\t0\t3\n"},
     "test.negative:2: pair \\(1, 9\\) does not match"),
    ({"negative": "0,1\t2\n(1,2)\t0\n"}, "test.negative:1: expected"),
    ({"negative": "(0,1)\t2\t3\n(1,2)\t0\n"}, "1 negatives, expected 2"),
    ({"negative": "(0,1)\t2\t3\n"}, "1 lines but"),
    ({"test": "0\t1\t5\t10\n9\t2\t4\t11\n",
      "negative": "(0,1)\t2\t3\n(9,2)\t0\t3\n"},
     "test.rating:2: user 9 never appears"),
])
def test_ncf_bad_input(tmp_path, kwargs, message):
  with pytest.raises(DataError, match=message):
    movielens.load_ncf_ml1m(_ncf(tmp_path, **kwargs))


def test_amazon_bad_input(tmp_path):
  seq = _write(tmp_path, "Beauty.txt", "1 1 2\n2 3\n")
  d = amazon.load_sequences(str(seq))
  assert (d.num_users, d.num_items) == (2, 3)
  _write(tmp_path, "Beauty.txt", "1 1 2\n2\n")
  with pytest.raises(DataError, match="Beauty.txt:2: a user with no items"):
    amazon.load_amazon(str(tmp_path))
  _write(tmp_path, "Beauty.txt", "1 1\n1 2\n")
  with pytest.raises(DataError, match="Beauty.txt:2: user '1' already has "
                     "line 1; expected one line per user"):
    amazon.load_amazon(str(tmp_path))
  _write(tmp_path, "Beauty.txt", "")
  with pytest.raises(DataError, match="empty"):
    amazon.load_amazon(str(tmp_path))
  _write(tmp_path, "Beauty.txt", "1 1\n")
  _write(tmp_path, "Beauty_item2attributes.json", '{"1": [1, -2]}')
  with pytest.raises(DataError, match="non-negative integers"):
    amazon.load_amazon(str(tmp_path))
  _write(tmp_path, "Beauty_item2attributes.json", '{"1": [1,')
  with pytest.raises(DataError, match="invalid JSON"):
    amazon.load_amazon(str(tmp_path))


CF_HEADER = ("id,query,product_title,product_description,median_relevance,"
             "relevance_variance\n")


def test_crowdflower_bad_input(tmp_path):
  _write(tmp_path, "train.csv", CF_HEADER +
         '1,"q a","T","line one\nline <b>two</b> &amp;",4,0\n')
  d = crowdflower.load_crowdflower(str(tmp_path))
  assert d.item_text["description"][0] == "line one line two &"
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d",7,0\n')
  with pytest.raises(DataError, match="train.csv:2: median_relevance 7"):
    crowdflower.load_crowdflower(str(tmp_path))
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d\n\n",x,0\n')
  with pytest.raises(DataError, match="train.csv:4: median_relevance must"):
    crowdflower.load_crowdflower(str(tmp_path))
  _write(tmp_path, "train.csv", "id,query\n1,q\n")
  with pytest.raises(DataError, match="missing column\\(s\\) product_title"):
    crowdflower.load_crowdflower(str(tmp_path))
  _write(tmp_path, "train.csv", "")
  with pytest.raises(DataError, match="empty"):
    crowdflower.load_crowdflower(str(tmp_path))
  _write(tmp_path, "train.csv", CF_HEADER)
  with pytest.raises(DataError, match="no rows"):
    crowdflower.load_crowdflower(str(tmp_path))


def test_bestbuy_bad_input(tmp_path):
  product = {"name": "P", "brand": "B", "categories": ["A", "B"],
             "price": 1.0, "popularity": 3}
  query = {"query": "p", "popularity": 1, "instant_search": {
      "facets": {"exact_matches": {
          "hierarchicalCategories.lvl0": [{"value": "A", "count": 1}]}}}}
  _write(tmp_path, "ecommerce.json", json.dumps([product]))
  _write(tmp_path, "instant_search_demo_query_suggestions.json",
         json.dumps([query]))
  d = bestbuy.load_bestbuy(str(tmp_path))
  assert list(d.judgments.grade) == [1]
  _write(tmp_path, "ecommerce.json", json.dumps([dict(product, price=-1)]))
  with pytest.raises(DataError, match="price must be a non-negative"):
    bestbuy.load_bestbuy(str(tmp_path))
  _write(tmp_path, "ecommerce.json", "[{")
  with pytest.raises(DataError, match="ecommerce.json:1: invalid JSON"):
    bestbuy.load_bestbuy(str(tmp_path))
  _write(tmp_path, "ecommerce.json", json.dumps([product]))
  _write(tmp_path, "instant_search_demo_query_suggestions.json",
         json.dumps([query, query]))
  with pytest.raises(DataError, match="duplicate id 'p'"):
    bestbuy.load_bestbuy(str(tmp_path))


def test_interactions_csv(tmp_path):
  path = _write(tmp_path, "log.tsv", "uid\tsku\tts\tquery\nu1\ti1\t5\tred\n"
                "u2\ti1\t6\tblue\n")
  d = interactions_csv.load_interactions_csv(str(path), user_col="uid",
                                             item_col="sku",
                                             timestamp_col="ts")
  assert (d.num_users, d.num_items) == (2, 1)
  assert list(d.interactions.query) == ["red", "blue"]
  path = _write(tmp_path, "log.csv", "user,item\nu1,i1\nu2\n")
  with pytest.raises(DataError, match="log.csv:3: expected 2 fields"):
    interactions_csv.load_interactions_csv(str(path))
  path = _write(tmp_path, "log.csv", "user,product\nu1,i1\n")
  with pytest.raises(DataError, match="no column 'item'"):
    interactions_csv.load_interactions_csv(str(path))
  path = _write(tmp_path, "log.csv", "user,item,timestamp\nu1,i1,x\n")
  with pytest.raises(DataError, match="log.csv:2: timestamp 'x' is not a "):
    interactions_csv.load_interactions_csv(str(path))
  path = _write(tmp_path, "log.csv", "user,item\n")
  with pytest.raises(DataError, match="no rows"):
    interactions_csv.load_interactions_csv(str(path))
  path = _write(tmp_path, "log.csv", "user,item\nu1,i1\n")
  with pytest.raises(DataError, match="no column 'stars'"):
    interactions_csv.load_interactions_csv(str(path), rating_col="stars")


def test_registry_and_types_errors():
  with pytest.raises(DataError, match="unknown dataset 'x'"):
    registry.load_rec_dataset("x")
  with pytest.raises(DataError, match="needs a data_dir"):
    registry.load_rec_dataset("ml-1m")
  with pytest.raises(DataError, match="unknown item id 'z'"):
    Vocabulary(["a"], name="item").lookup(["z"])
  with pytest.raises(DataError, match="column rating has 1 rows"):
    Interactions([0, 1], [0, 1], rating=[1.0])


def _write_bytes(folder, name, data):
  path = folder / name
  path.write_bytes(data)
  return path


@pytest.mark.parametrize("name, data, load, message", [
    ("log.csv", b"user,item\nu1,i1\nu\xff2,i2\n",
     lambda p: interactions_csv.load_interactions_csv(str(p)),
     "log.csv:3: byte 0xff at byte column 2 is not valid utf-8"),
    ("train.csv", CF_HEADER.encode() + b'1,"q","T\n\xe9","d",4,0\n',
     lambda p: crowdflower.load_crowdflower(str(p.parent)),
     "train.csv:3: byte 0xe9 at byte column 1 is not valid utf-8"),
    ("Beauty.txt", b"1 1 2\n2 3 \xc3\n",
     lambda p: amazon.load_amazon(str(p.parent)),
     "Beauty.txt:2: byte 0xc3 at byte column 5 is not valid utf-8"),
    ("ratings.dat", b"1::10::5::100\n2::1\x800::3::200\n",
     lambda p: movielens.load_ml1m(str(p.parent)),
     "ratings.dat:2: byte 0x80 at byte column 5"),
])
def test_non_utf8_bytes_name_the_line(tmp_path, name, data, load, message):
  if name == "ratings.dat":
    _ml1m(tmp_path)
  path = _write_bytes(tmp_path, name, data)
  with pytest.raises(DataError, match=message + ".*re-save the file"):
    load(path)


@pytest.mark.parametrize("value, message", [
    ("inf", "timestamp 'inf' is not a finite number"),
    ("nan", "timestamp 'nan' is not a finite number"),
    ("-Infinity", "timestamp '-Infinity' is not a finite number"),
    ("1e30", "timestamp '1e30' is beyond int64 seconds"),
    ("9223372036854775808", "timestamp .9223372036854775808. is beyond"),
    ("-3", "negative timestamp '-3'"),
])
def test_bad_timestamps_are_clear_errors(tmp_path, value, message):
  path = _write(tmp_path, "log.csv", f"user,item,timestamp\nu1,i1,5\n"
                f"u1,i2,{value}\n")
  with pytest.raises(DataError, match=f"log.csv:3: {message}"):
    interactions_csv.load_interactions_csv(str(path))


def test_large_and_fractional_timestamps_load(tmp_path):
  path = _write(tmp_path, "log.csv", "user,item,timestamp\nu1,i1,"
                "9223372036854775807\nu1,i2,1.7e9\nu2,i1,12.9\n")
  d = interactions_csv.load_interactions_csv(str(path))
  assert list(d.interactions.timestamp) == [2**63 - 1, 1700000000, 12]


@pytest.mark.parametrize("value", ["nan", "inf", "1e39", "x"])
def test_bad_ratings_are_clear_errors(tmp_path, value):
  path = _write(tmp_path, "log.csv", f"user,item,stars\nu1,i1,{value}\n")
  with pytest.raises(DataError, match=f"log.csv:2: rating '{value}' is not"):
    interactions_csv.load_interactions_csv(str(path), rating_col="stars")


def test_duplicate_columns_are_refused(tmp_path):
  path = _write(tmp_path, "log.csv", "user,item,timestamp,user\n"
                "u1,i1,5,u2\n")
  with pytest.raises(DataError, match="log.csv:1: column 'user' appears "
                     "twice in the header \\(columns 1 and 4\\)"):
    interactions_csv.load_interactions_csv(str(path))
  _write(tmp_path, "train.csv", CF_HEADER.strip() + ",query\n"
         '1,"q","T","d",4,0,"r"\n')
  with pytest.raises(DataError, match="train.csv:1: column 'query' appears "
                     "twice"):
    crowdflower.load_crowdflower(str(tmp_path))


def test_byte_order_mark_is_accepted(tmp_path):
  path = _write(tmp_path, "log.csv", "user,item\nu1,i1\n",
                encoding="utf-8-sig")
  assert path.read_bytes().startswith(b"\xef\xbb\xbf")
  d = interactions_csv.load_interactions_csv(str(path))
  assert list(d.users.ids) == ["u1"]
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d",4,0\n',
         encoding="utf-8-sig")
  assert crowdflower.load_crowdflower(str(tmp_path)).queries.ids[0] == "q"
  seq = _write(tmp_path, "Beauty.txt", "1 1 2\n", encoding="utf-8-sig")
  assert list(amazon.load_sequences(str(seq)).users.ids) == ["1"]


def test_crowdflower_field_count_and_variance(tmp_path):
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d",4\n')
  with pytest.raises(DataError, match="train.csv:2: expected 6 fields, "
                     "found 5"):
    crowdflower.load_crowdflower(str(tmp_path))
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d",4,nan\n')
  with pytest.raises(DataError, match="train.csv:2: relevance_variance "
                     "'nan' is not a finite number >= 0"):
    crowdflower.load_crowdflower(str(tmp_path))


def test_unreadable_csv_record_is_a_data_error(tmp_path):
  path = _write(tmp_path, "log.csv", "user,item\nu1," + "i" * 200_000 +
                "\n")
  with pytest.raises(DataError, match="log.csv:2: unreadable CSV record"):
    interactions_csv.load_interactions_csv(str(path))


def test_truncated_last_line_warns(tmp_path, caplog):
  seq = _write(tmp_path, "Beauty.txt", "1 1 2\n2 3 4")
  with caplog.at_level(logging.WARNING, "retrieval_tf.datasets"):
    with pytest.warns(UserWarning, match="Beauty.txt:2: the last line has no "
                      "newline, so the file may have been cut mid-line"):
      d = amazon.load_sequences(str(seq))
  assert len(d.interactions) == 4
  assert any("Beauty.txt:2: the last line has no newline" in r.message
             for r in caplog.records if r.levelno == logging.WARNING)
  log = _write(tmp_path, "log.csv", "user,item\nu1,i1")
  with pytest.warns(UserWarning, match="log.csv:2: the last line"):
    interactions_csv.load_interactions_csv(str(log))
  _write(tmp_path, "Beauty.txt", "1 1 2\r\n2 3 4\r\n")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    amazon.load_amazon(str(tmp_path))


def test_loaders_report_rows_read_and_skipped(tmp_path, caplog):
  seq = _write(tmp_path, "Beauty.txt", "1 1 2\n\n2 3\n  \n")
  attributes = _write(tmp_path, "Beauty_item2attributes.json",
                      '{"1": [4], "9": [5]}')
  with caplog.at_level(logging.INFO, "retrieval_tf.datasets"):
    d = amazon.load_amazon(str(tmp_path))
  assert d.load_stats == {
      str(seq): {"rows_read": 2, "rows_skipped": 2},
      str(attributes): {"rows_read": 1, "rows_skipped": 1}}
  assert f"{seq}: 2 rows read, 2 skipped" in caplog.messages
  log = _write(tmp_path, "log.csv", "user,item\nu1,i1\n\nu2,i1\n")
  assert interactions_csv.load_interactions_csv(str(log)).load_stats == {
      str(log): {"rows_read": 2, "rows_skipped": 1}}
  _write(tmp_path, "train.csv", CF_HEADER + '1,"q","T","d",4,0\n\n')
  assert crowdflower.load_crowdflower(str(tmp_path)).load_stats == {
      str(tmp_path / "train.csv"): {"rows_read": 1, "rows_skipped": 1}}
  ml = tmp_path / "ml"
  ml.mkdir()
  d = movielens.load_ml1m(_ml1m(ml, ratings="1::10::5::100\n\n"
                                "2::10::3::200\n"))
  assert d.load_stats == {
      str(ml / "users.dat"): {"rows_read": 2, "rows_skipped": 0},
      str(ml / "movies.dat"): {"rows_read": 1, "rows_skipped": 0},
      str(ml / "ratings.dat"): {"rows_read": 2, "rows_skipped": 1}}
  ncf = tmp_path / "ncf"
  ncf.mkdir()
  d = movielens.load_ncf_ml1m(_ncf(ncf))
  assert sorted(d.load_stats) == sorted(
      str(ncf / n) for n in movielens.NCF_FILES)


def test_out_of_range_integers_in_movielens_files(tmp_path):
  with pytest.raises(DataError, match="ratings.dat:1: non-integer or "
                     "out-of-int64-range field"):
    movielens.load_ml1m(_ml1m(tmp_path, ratings="1::10::5::" + "9" * 30 +
                              "\n"))
  ncf = tmp_path / "ncf"
  ncf.mkdir()
  with pytest.raises(DataError, match="test.negative:2: negative item ids "
                     "must be in 0..2147483647"):
    movielens.load_ncf_ml1m(_ncf(ncf, negative="(0,1)\t2\t3\n(1,2)\t0\t"
                                 + "9" * 12 + "\n"))
