"""Every loader turns bad input into a clear DataError, never garbage."""

import json

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
  with pytest.raises(DataError, match="duplicate id '1'"):
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
  with pytest.raises(DataError, match="log.csv:2: timestamp and rating"):
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
