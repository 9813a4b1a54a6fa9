"""Property tests: any bytes in a CSV or sequence file give valid data or a
DataError naming the file, never another exception (Hypothesis,
derandomized so that CI cannot flake)."""

import math
import os
import tempfile
import warnings

import numpy as np
from hypothesis import event, given, settings, strategies as st

from retrieval_tf.datasets import amazon, crowdflower, interactions_csv
from retrieval_tf.datasets.errors import DataError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)

# Cells that are bad numbers, CSV syntax or unusual text.
BAD_CELLS = st.sampled_from([
    "0", "-1", "12.5", "1e30", "inf", "-inf", "nan", "NaN", "9" * 25, "",
    " ", "x", '"', '""', '"a,b"', "a\nb", "\u2028", "3\x00", "\t"])
# Cells that are fine, by column.
GOOD_CELLS = {
    "user": ["u1", "u2", "é"], "item": ["i1", "i2", "3"],
    "timestamp": ["0", "5", "17.5", "1700000000"], "rating": ["1", "4.5"],
    "query": ["red", "a b"], "id": ["1", "2"], "product_title": ["T", "é"],
    "product_description": ["", "<b>x</b> &amp;"],
    "median_relevance": ["1", "4"], "relevance_variance": ["0", "0.5"]}
ANY_COLUMN = st.sampled_from(sorted(GOOD_CELLS) + ["other", ""])
RARELY = st.sampled_from([False, False, False, True])
BAD_CELL = st.sampled_from([False] * 15 + [True])


@st.composite
def damaged(draw, text):
  """`text` encoded, then maybe with a byte-order mark, a non-UTF-8 byte or
  a cut at a random byte."""
  data = text.encode("utf-8")
  if draw(RARELY):
    data = b"\xef\xbb\xbf" + data
  if data and draw(RARELY):
    at = draw(st.integers(0, len(data) - 1))
    data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80"])) + \
        data[at:]
  if data and draw(RARELY):
    data = data[:draw(st.integers(0, len(data)))]
  return data


@st.composite
def csv_files(draw, required, optional, delimiters=(",", "\t", ";")):
  """A header of the `required` and some `optional` columns in any order
  (rarely: any columns, repeats possible) and rows of good or bad cells, some
  with a wrong field count or blank, then `damaged`."""
  if draw(RARELY):
    header = draw(st.lists(ANY_COLUMN, min_size=1, max_size=6))
  else:
    header = draw(st.permutations(list(required) + draw(
        st.lists(st.sampled_from(optional), unique=True))))
  delimiter = draw(st.sampled_from(delimiters))
  lines = [delimiter.join(header)]
  for _ in range(draw(st.integers(0, 6)) if draw(RARELY) else
                 draw(st.integers(1, 6))):
    if draw(RARELY):
      width = draw(st.sampled_from([0, len(header) - 1, len(header) + 1]))
      columns = ["other"] * width
    else:
      columns = header
    lines.append(delimiter.join(
        draw(BAD_CELLS) if draw(BAD_CELL) or c not in GOOD_CELLS else
        draw(st.sampled_from(GOOD_CELLS[c])) for c in columns))
  ending = draw(st.sampled_from(["\n", "\r\n"]))
  return draw(damaged(ending.join(lines) + ending))


def _load(path, data, load):
  """Writes `data` to `path` and loads it; returns (dataset or None,
  whether a truncated-line warning was raised)."""
  with open(path, "wb") as f:
    f.write(data)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      dataset = load(path)
    except DataError as e:
      assert str(e).startswith(path) and "\n" not in str(e), str(e)
      event("DataError")
      return None, None
  event("loaded")
  cut = any("last line has no newline" in str(w.message) for w in caught)
  return dataset, cut


def _check_rec_log(dataset):
  """The log's indices are in the vocabularies and its columns valid."""
  log = dataset.interactions
  assert len(log) > 0
  assert 0 <= log.user.min() and log.user.max() < dataset.num_users
  assert 0 <= log.item.min() and log.item.max() < dataset.num_items
  if log.timestamp is not None:
    assert log.timestamp.dtype == np.int64 and (log.timestamp >= 0).all()
  if log.rating is not None:
    assert np.isfinite(log.rating).all()


@FUZZ
@given(st.one_of(*[csv_files(["user", "item"],
                            ["timestamp", "query", "rating", "other"])] * 2,
                 st.binary(max_size=300)),
       st.booleans())
def test_interactions_csv_loads_or_raises_data_error(data, with_rating):
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "log.csv")
    dataset, cut = _load(path, data, lambda p: (
        interactions_csv.load_interactions_csv(
            p, rating_col="rating" if with_rating else None)))
  if dataset is not None:
    _check_rec_log(dataset)
    assert dataset.load_stats[path]["rows_read"] == len(dataset.interactions)
    assert cut == (not data.endswith((b"\n", b"\r")))


@FUZZ
@given(st.one_of(
    *[csv_files(crowdflower.COLUMNS, ["other"], delimiters=(",",))] * 2,
    st.binary(max_size=300)))
def test_crowdflower_loads_or_raises_data_error(data):
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, crowdflower.FILE)
    dataset, cut = _load(path, data,
                         lambda p: crowdflower.load_crowdflower(folder))
  if dataset is not None:
    judgments = dataset.judgments
    assert len(judgments) == dataset.load_stats[path]["rows_read"] > 0
    assert set(judgments.grade.tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert all(math.isfinite(v) and v >= 0 for v in judgments.variance)
    assert judgments.query.max() < dataset.num_queries
    assert judgments.item.max() < dataset.num_items
    assert cut == (not data.endswith((b"\n", b"\r")))


TOKENS = st.sampled_from(["1", "2", "3", "10", "a", "é", "9" * 30, "-1",
                          "0x1"])
SPACES = st.sampled_from([" ", "  ", "\t", " \u3000 "])


@st.composite
def sequence_files(draw):
  """`user item ...` lines (some blank, some with no item, users repeated),
  then `damaged`."""
  lines = []
  for user in range(draw(st.integers(0, 6))):
    if draw(RARELY):  # blank, a user without items, or a repeated user
      tokens = draw(st.lists(TOKENS, min_size=0, max_size=2))
    else:
      tokens = [f"u{user}"] + draw(st.lists(TOKENS, min_size=1, max_size=5))
    lines.append(draw(SPACES).join(tokens))
  ending = draw(st.sampled_from(["\n", "\r\n"]))
  return draw(damaged(ending.join(lines) + ending))


@FUZZ
@given(st.one_of(sequence_files(), sequence_files(), st.binary(max_size=300)))
def test_sequences_load_or_raise_data_error(data):
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "Beauty.txt")
    dataset, cut = _load(path, data, amazon.load_sequences)
  if dataset is not None:
    _check_rec_log(dataset)
    assert dataset.load_stats[path]["rows_read"] == dataset.num_users
    assert cut == (not data.endswith((b"\n", b"\r")))
