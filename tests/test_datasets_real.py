"""Loaders on the real datasets in ../shared/data (counts from its README)."""

import numpy as np

from conftest import dataset_dir
from retrieval_tf.datasets import (amazon, bestbuy, crowdflower, movielens,
                                   registry)


def test_ml1m(data_root):
  d = movielens.load_ml1m(str(dataset_dir(data_root, "ml-1m")))
  assert (len(d.interactions), d.num_users, d.num_items) == (1_000_209, 6040,
                                                             3883)
  toy_story = d.items.index("1")
  assert d.item_titles[toy_story] == "Toy Story (1995)"
  genres = d.feature_vocabularies["genres"].decode(
      d.item_features["genres"][toy_story][d.item_features["genres"][
          toy_story] >= 0])
  assert set(genres) == {"Animation", "Children's", "Comedy"}
  assert d.feature_vocabularies["year"].decode(
      [d.item_features["year"][toy_story]])[0] == "1995"
  assert set(d.feature_vocabularies["gender"].ids) == {"F", "M"}
  assert d.interactions.rating.min() == 1 and d.interactions.rating.max() == 5


def test_ncf_split_with_recovered_side_features(data_root):
  d = registry.load_rec_dataset(
      "ncf-ml-1m", str(dataset_dir(data_root, "ncf-ml-1m")))
  assert len(d.interactions) == 994_169 and len(d.test) == 6040
  assert d.test_negatives.shape == (6040, 99) and d.num_items == 3706
  # A quirk of the NCF file, kept as is: 156 rows list the target among
  # their own 99 negatives (evaluate_sampled does not count those).
  assert (d.test_negatives == d.test.item[:, None]).any(axis=1).sum() == 156
  # Recovered titles: NCF rows agree with ratings.dat on (user, movie, time).
  ml = movielens.load_ml1m(str(dataset_dir(data_root, "ml-1m")))
  title_to_movie = {t: i for i, t in enumerate(ml.item_titles)}
  movie_of = np.array([title_to_movie[t] for t in d.item_titles])
  ml_keys = set(zip(ml.interactions.user.tolist(),
                    ml.interactions.item.tolist(),
                    ml.interactions.timestamp.tolist()))
  ncf = d.interactions
  sample = np.random.default_rng(0).choice(len(ncf), 5000, replace=False)
  agree = np.mean([(int(ncf.user[r]), int(movie_of[ncf.item[r]]),
                    int(ncf.timestamp[r])) in ml_keys for r in sample])
  assert agree > 0.999
  assert set(d.user_features) == {"gender", "age", "occupation"}
  assert d.item_features["genres"].shape[0] == 3706


def test_amazon_beauty_and_toys(data_root):
  beauty = amazon.load_amazon(str(dataset_dir(data_root, "amazon-beauty")))
  assert beauty.name == "amazon-beauty"
  assert (beauty.num_users, beauty.num_items,
          len(beauty.interactions)) == (22_363, 12_101, 198_502)
  assert beauty.item_features["attributes"].shape[0] == 12_101
  toys = amazon.load_amazon(str(dataset_dir(data_root, "amazon-toys")))
  assert len(toys.interactions) == 167_597 and toys.num_users == 19_412
  # Event order is the timestamp: each user's events count 0, 1, 2, ...
  first = beauty.interactions.timestamp[beauty.interactions.user == 0]
  np.testing.assert_array_equal(first, np.arange(len(first)))


def test_crowdflower(data_root):
  d = crowdflower.load_crowdflower(
      str(dataset_dir(data_root, "crowdflower-search")))
  assert len(d.judgments) == 10_158 and d.num_queries == 261
  assert set(np.unique(d.judgments.grade)) == {1, 2, 3, 4}
  raw = d.item_text["description_raw"]
  multiline = [i for i, t in enumerate(raw) if "\n" in t]
  assert multiline, "multi-line quoted descriptions must survive parsing"
  cleaned = d.item_text["description"]
  assert not any("<" in t and ">" in t for t in cleaned if "<td" in t)
  assert all("<table" not in t and "&amp;" not in t for t in cleaned)


def test_bestbuy(data_root):
  d = bestbuy.load_bestbuy(str(dataset_dir(data_root, "bestbuy-products")))
  assert d.num_items == 3291 and d.num_queries == 2120
  assert len(d.feature_vocabularies["brand"]) >= 250
  g = d.judgments
  assert g.grade.min() >= 1 and g.grade.max() == 3
  assert np.bincount(g.query).max() <= bestbuy.MAX_JUDGED
  # A judged grade-3 product sits under the query's lvl2 facet.
  row = int(np.flatnonzero(g.grade == 3)[0])
  q, i = g.query[row], g.item[row]
  assert (d.item_features["category_lvl2"][i] ==
          d.query_features["category_lvl2"][q])
