"""MGDSPR's offline metrics on a `data.MGDSPRData` test split.

Flat metric keys of `evaluate`, on `data.test` (one row per search):

* `recall@k`: share of a test search's clicked items in the exact top-k of
  all items (brute force over the item tower; the servable's index);
* `p_good@k`: share of the top-k judged relevant (synthetic: grade >= 2 of
  `SyntheticWorld.relevance`; CrowdFlower / Best Buy: the judgments, an
  unjudged pair counts as not relevant);
* relevance control on the top-`--rc_k` (`rc_*`): `rc_removal_rate`
  (share of retrieved items removed), `rc_removal_rate_with_intent` (rows
  with a recognised intent only), `rc_fallback_rate`, `rc_p_good`,
  `rc_recall`, `relevant@K` / `rc_relevant@K` (relevant items per query
  before / after control, the paper's Num_rank analogue);
* `unrelated_recall@k`, `unrelated_p_good@k` (synthetic): the searches
  whose user's real-time and short-term behaviour share no mid category
  with the query (the slice where the zero vector should help; a few
  percent of the searches);
* `swapped_recall@k`, `swapped_p_good@k` (synthetic): every test search
  (`swapped_searches` of them) re-scored with the user context (history
  queries, R, S, L) of another test user none of whose events shares a mid
  category with the query (`data.unrelated_donors`): the zero vector's
  slice built at the size of the test set; recall still counts the
  searching user's own clicks.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from retrieval_tf import metrics as metrics_lib
from retrieval_tf.compat import tf
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.evaluation import top_k_items

from mgdspr_tf import data as data_lib
from mgdspr_tf.model import MGDSPRModel
from mgdspr_tf.relevance import RelevanceControl, intent_vocabulary


def user_encoder(model: MGDSPRModel, batch_size: int = 512):
  """examples -> user vectors `[n, d]`, in batches, through the model's one
  traced `user_vector` (`MGDSPRModel.traced`)."""
  fn = model.traced("user_vector")

  def encode(examples: data_lib.Examples) -> np.ndarray:
    features = examples.features(with_item=False)
    return np.concatenate([
        fn({k: tf.constant(v[s:s + batch_size]) for k, v in
            features.items()}).numpy()
        for s in range(0, len(examples), batch_size)])

  return encode


def control_for(data: data_lib.MGDSPRData):
  """The relevance control of `data`'s catalogue, or None."""
  if not data.intent_fields or data.item_fields is None:
    return None
  try:
    terms, meanings = intent_vocabulary(data.intent_fields)
  except ValueError:
    return None
  return RelevanceControl(terms, meanings, data.item_fields)


def _grades(data: data_lib.MGDSPRData, rows: data_lib.Examples,
            top: np.ndarray):
  """Graded relevance of `top` to each row's query, or None."""
  if data.relevance is None or (rows.query_index < 0).any():
    return None
  return data.relevance(rows.query_index[:, None], top)


def _retrieval_metrics(out: Dict[str, float], prefix: str, top, truth,
                       grades, ks, good_grade: float) -> None:
  """`{prefix}recall@k` and, with grades, `{prefix}p_good@k` into `out`."""
  for k in ks:
    out[f"{prefix}recall@{k}"] = metrics_lib.recall_at_k(top, truth, k)
    if grades is not None:
      out[f"{prefix}p_good@{k}"] = metrics_lib.p_good(grades[:, :k] >=
                                                      good_grade)


def evaluate(model: MGDSPRModel, data: data_lib.MGDSPRData,
             ks: Sequence[int] = (10, 100), rc_k: int = 100
             ) -> Dict[str, float]:
  """MGDSPR's offline metrics (Sec. 5.1: Recall@K and P_good) on
  `data.test`, the flat keys that `python -m mgdspr_tf.train` writes to
  metrics.json.

  Args:
    model: a trained `MGDSPRModel` whose catalogue is `data`'s.
    data: an `MGDSPRData` (`from_synthetic`, `from_search_dataset`,
      `from_rec_dataset`); its `test` rows are grouped by search.
    ks: cut-offs of `recall@k` and `p_good@k`.
    rc_k: the depth relevance control filters (`rc_*` keys).

  Returns:
    `{"recall@10": ..., "p_good@10": ..., "rc_p_good": ..., ...}`: the keys
    of the module docstring (`p_good@k` where `data` has relevance,
    `unrelated_*` / `swapped_*` on the synthetic world, `rc_*` where the
    catalogue has intent fields), plus `num_test_searches` and
    `num_train_examples`.

  Raises:
    DataError: the test split is empty. ValueError: a k or `rc_k` < 1, or
    a model of another catalogue size.

      metrics = evaluate(model, data, ks=[10, 50])
      metrics["recall@50"], metrics["p_good@10"]
  """
  ks = [int(k) for k in ks]
  if not ks or min(ks) < 1 or rc_k < 1:
    raise ValueError(f"ks must be non-empty and every k and rc_k >= 1, got "
                     f"ks={ks}, rc_k={rc_k}")
  if model.num_items != data.num_items:
    raise ValueError(f"the model has {model.num_items} items, {data.name} "
                     f"{data.num_items}: evaluate the model on the data it "
                     f"was built for")
  test = data.test
  if not len(test):
    raise DataError(f"{data.name}: the test split is empty")
  searches, first, inverse = np.unique(test.search, return_index=True,
                                       return_inverse=True)
  rows = test.take(first)
  truth = metrics_lib.pad_truth(
      [np.unique(test.item_id[inverse == i]) for i in range(len(searches))])
  encode = user_encoder(model)
  items = model.all_item_vectors()
  depth = min(max(max(ks), rc_k), data.num_items)
  top = top_k_items(encode(rows), items, depth)
  out: Dict[str, float] = {"num_test_searches": int(len(searches)),
                           "num_train_examples": int(len(data.train))}
  grades = _grades(data, rows, top)
  _retrieval_metrics(out, "", top, truth, grades, ks, data.good_grade)
  if data.unrelated is not None:
    slice_rows = data.unrelated[first]
    out["unrelated_searches"] = int(slice_rows.sum())
    if slice_rows.any():
      _retrieval_metrics(out, "unrelated_", top[slice_rows],
                         truth[slice_rows],
                         None if grades is None else grades[slice_rows], ks,
                         data.good_grade)
  if data.donor is not None:
    donor = data.donor[first]
    swapped = donor >= 0
    out["swapped_searches"] = int(swapped.sum())
    if swapped.any():
      grafted = rows.take(swapped).with_user_context_of(
          test.take(donor[swapped]))
      top_swapped = top_k_items(encode(grafted), items, depth)
      _retrieval_metrics(out, "swapped_", top_swapped, truth[swapped],
                         _grades(data, grafted, top_swapped), ks,
                         data.good_grade)
  control = control_for(data)
  if control is not None:
    k = min(rc_k, data.num_items)
    keep, fallback, intents = (t.numpy() for t in control(
        tf.constant(rows.query.astype(str)), tf.constant(top[:, :k]),
        tf.ones(len(rows), tf.bool)))
    kept = np.where(keep, top[:, :k], -1)
    with_intent = intents > 0
    out["rc_k"] = k
    out["rc_removal_rate"] = float(1.0 - keep.mean())
    out["rc_intent_rate"] = float(with_intent.mean())
    if with_intent.any():
      out["rc_removal_rate_with_intent"] = float(
          1.0 - keep[with_intent].mean())
    out["rc_fallback_rate"] = float(fallback.mean())
    out["rc_recall"] = metrics_lib.recall_at_k(kept, truth, k)
    if k not in ks:  # the uncontrolled figures at the control's depth
      _retrieval_metrics(out, "", top, truth, grades, [k], data.good_grade)
    if grades is not None:
      good = grades[:, :k] >= data.good_grade
      out["rc_p_good"] = metrics_lib.p_good(good & keep, kept)
      out[f"relevant@{k}"] = float(good.sum(axis=1).mean())
      out[f"rc_relevant@{k}"] = float((good & keep).sum(axis=1).mean())
  return out
