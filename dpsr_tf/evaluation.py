"""Table 2's offline metrics (Sec. 6.2.1) for any scorer: the DPSR model,
DSSM or BM25.

`evaluate(model, task)` computes all of them at once (the CLI's
metrics.json keys). A *scorer* is `score(rows, items) -> float [n, C]`:
`rows` a dict of per-row arrays (`query` strings, and user features when the model reads
them), `items` int `[n, C]` the candidates of each row. A *retriever* is
`retrieve(rows, k) -> int [n, k]` over the whole catalogue.

* `top1`, `top10`, `mrr`: the held-out positive ranked among
  `num_random` (1,024) uniform random items (ties count against it);
* `auc`: ROC AUC of the scores of the test queries' labelled pairs;
* synthetic world: `p_good@100` (share of the top 100 with ground-truth
  grade >= 2) and `recall@100` (share of the query's grade >= 2 items in
  the top 100), computed with `SyntheticWorld.relevance`;
* synthetic world: `polysemous_top1`, `polysemous_top10`,
  `polysemous_mrr` (`num_polysemous_rows`): the same Top-k restricted to
  the test rows whose query is a bare polysemous word ("apple"); absent
  when the query-disjoint split put no such word on the test side;
* `head_win_share_<i>` (models with several heads): the share of test
  positives whose best head is head i (collapse shows as one share at 1).
* `token_table_top1`, `token_table_top10`, `token_table_mrr`,
  `token_table_auc` (a diagnostic, not the paper's): the same Top-k and
  AUC scored by the trained shared n-gram table alone (`TokenTableScorer`,
  the cosine of the mean n-gram embeddings of query and title, no towers),
  to see how much of the table's lexical match the towers keep.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import numpy as np

from retrieval_tf import metrics as metrics_lib
from retrieval_tf.compat import tf

from dpsr_tf.model import DPSRModel, all_item_embeddings

Scorer = Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray]
Retriever = Callable[[Mapping[str, np.ndarray], int], np.ndarray]


def _rows(rows: Mapping[str, np.ndarray], take) -> Dict[str, np.ndarray]:
  return {k: v[take] for k, v in rows.items()}


def top_k_metrics(score: Scorer, test: Mapping[str, np.ndarray],
                  num_items: int, num_random: int = 1024, seed: int = 0,
                  max_rows: int = 20000, batch_size: int = 256
                  ) -> Dict[str, float]:
  """Top-1, Top-10 and MRR of the positives among random items."""
  rng = np.random.default_rng(seed)
  n = len(test["item_id"])
  take = np.sort(rng.choice(n, min(n, max_rows), replace=False))
  rows = _rows(test, take)
  random_items = rng.integers(0, num_items, (len(take), num_random))
  positive, random_scores = [], []
  for s in range(0, len(take), batch_size):
    part = _rows(rows, slice(s, s + batch_size))
    items = np.concatenate([part["item_id"][:, None],
                            random_items[s:s + batch_size]], axis=1)
    scores = score(part, items)
    positive.append(scores[:, 0])
    random_scores.append(scores[:, 1:])
  positive = np.concatenate(positive)
  random_scores = np.concatenate(random_scores)
  ranks = (random_scores >= positive[:, None]).sum(axis=1)
  return {"top1": metrics_lib.top_k_among_random(positive, random_scores, 1),
          "top10": metrics_lib.top_k_among_random(positive, random_scores,
                                                  10),
          "mrr": float(np.mean(1.0 / (ranks + 1))),
          "num_top_k_rows": int(len(take))}


def polysemous_top_k_metrics(score: Scorer, test: Mapping[str, np.ndarray],
                             words, num_items: int, num_random: int = 1024,
                             seed: int = 0) -> Dict[str, float]:
  """`top_k_metrics` on the test rows whose query is one of `words`, keys
  prefixed `polysemous_`; empty when there are none."""
  take = np.flatnonzero(np.isin(np.asarray(test["query"], object),
                                list(words)))
  if not len(take):
    return {}
  out = top_k_metrics(score, _rows(test, take), num_items, num_random, seed)
  return {"polysemous_top1": out["top1"], "polysemous_top10": out["top10"],
          "polysemous_mrr": out["mrr"],
          "num_polysemous_rows": out["num_top_k_rows"]}


def auc_metric(score: Scorer, judged: Mapping[str, np.ndarray],
               batch_size: int = 1024) -> Dict[str, float]:
  """AUC of the labelled pairs (`query`, `item`, `label`)."""
  scores = np.concatenate([
      score(_rows(judged, slice(s, s + batch_size)),
            judged["item_id"][s:s + batch_size, None])[:, 0]
      for s in range(0, len(judged["item_id"]), batch_size)])
  return {"auc": metrics_lib.auc(judged["label"], scores),
          "num_auc_pairs": int(len(scores))}


def relevance_metrics(retrieve: Retriever, test: Mapping[str, np.ndarray],
                      world, k: int = 100, max_rows: int = 2000,
                      seed: int = 0, batch_size: int = 256
                      ) -> Dict[str, float]:
  """P_good@k and recall@k against the synthetic world's relevance (grade
  >= 2), over test rows (one per distinct (query, user) at most
  `max_rows`)."""
  rng = np.random.default_rng(seed)
  n = len(test["item_id"])
  take = np.sort(rng.choice(n, min(n, max_rows), replace=False))
  rows = _rows(test, take)
  good_share, recall = [], []
  items = np.arange(world.num_items)
  for s in range(0, len(take), batch_size):
    part = _rows(rows, slice(s, s + batch_size))
    top = retrieve(part, k)
    queries = part["query_id"][:, None]
    grades = world.relevance(queries, items[None, :])  # [b, N]
    relevant = grades >= 2
    hit = np.take_along_axis(relevant, top, axis=1)
    good_share.append(hit.mean(axis=1))
    count = relevant.sum(axis=1)
    recall.append(np.where(count > 0, hit.sum(axis=1) / np.maximum(count, 1),
                           np.nan))
  recall = np.concatenate(recall)
  return {f"p_good@{k}": float(np.mean(np.concatenate(good_share))),
          f"recall@{k}": float(np.nanmean(recall))}


class ModelScorer:
  """Scorer and retriever of a trained `DPSRModel`: G (Eq. 1) for the
  Top-k and AUC, max over heads (the servable's score) for retrieval."""

  def __init__(self, model, item_vectors: np.ndarray):
    self.model = model
    self.vectors = tf.constant(item_vectors)
    self._heads = tf.function(
        lambda f: model.query_heads(f, training=False),
        reduce_retracing=True)

  def heads(self, rows: Mapping[str, np.ndarray]) -> tf.Tensor:
    n = len(rows["query"])
    features = {"query": tf.constant(np.asarray(rows["query"]).astype(str))}
    for name in self.model.user_feature_sizes:
      key = f"user_{name}"
      features[key] = tf.constant(rows[key] if key in rows else
                                  np.full(n, -1, np.int32))
    if self.model.personalization == "history":
      features["history"] = tf.constant(
          rows["history"] if "history" in rows else
          np.full((n, 1), -1, np.int32))
    return self._heads(features)

  def __call__(self, rows, items) -> np.ndarray:
    heads = self.heads(rows)
    vectors = tf.gather(self.vectors, tf.constant(items, tf.int32))
    return self.model.similarity(heads, vectors).numpy()

  def retrieve(self, rows, k: int) -> np.ndarray:
    heads = self.heads(rows)
    scores = tf.reduce_max(tf.einsum("bmd,nd->bnm", heads, self.vectors), -1)
    return tf.math.top_k(scores, k).indices.numpy()

  def head_retrieve(self, rows, k: int) -> np.ndarray:
    """Each head's own top-k `[n, m, k]` (Figure 6)."""
    heads = self.heads(rows)
    scores = tf.einsum("bmd,nd->bmn", heads, self.vectors)
    return tf.math.top_k(scores, k).indices.numpy()


class TokenTableScorer:
  """Scorer of the shared n-gram table alone: the cosine of the masked
  mean token embeddings of the query text and of the item's title tokens,
  bypassing both towers (and every non-text feature)."""

  def __init__(self, model):
    self.model = model
    self.items = tf.math.l2_normalize(
        model.item_tower.tokens(model.item_title), axis=-1)

  def __call__(self, rows, items) -> np.ndarray:
    tokens = self.model.tokenizer(
        tf.constant(np.asarray(rows["query"]).astype(str)))
    query = tf.math.l2_normalize(
        self.model.query_tokens(tokens.to_tensor(default_value=-1)),
        axis=-1)
    vectors = tf.gather(self.items, tf.constant(items, tf.int32))
    return tf.einsum("bd,bcd->bc", query, vectors).numpy()


def token_table_metrics(model, task, num_random: int = 1024, seed: int = 0
                        ) -> Dict[str, float]:
  """Top-k and AUC of `TokenTableScorer`, keys prefixed `token_table_`."""
  scorer = TokenTableScorer(model)
  out = top_k_metrics(scorer, task.test, task.num_items, num_random, seed)
  out.update(auc_metric(scorer, task.judged))
  return {f"token_table_{k}": v for k, v in out.items()
          if k in ("top1", "top10", "mrr", "auc")}


def popularity_metric(retrieve: Retriever, test: Mapping[str, np.ndarray],
                      popularity: np.ndarray, k: int = 100,
                      max_rows: int = 2000, seed: int = 0
                      ) -> Dict[str, float]:
  """Figure 7: the mean popularity percentile (0 = least, 1 = most popular
  item) of the top-k retrieved for test rows."""
  rng = np.random.default_rng(seed)
  n = len(test["item_id"])
  take = np.sort(rng.choice(n, min(n, max_rows), replace=False))
  percentile = np.argsort(np.argsort(popularity, kind="stable"),
                          kind="stable") / max(1, len(popularity) - 1)
  top = np.concatenate([retrieve(_rows(test, take[s:s + 256]), k)
                        for s in range(0, len(take), 256)])
  return {f"popularity@{k}": float(percentile[top].mean())}


def head_usage(scorer: "ModelScorer", test: Mapping[str, np.ndarray],
               max_rows: int = 20000, batch_size: int = 256
               ) -> Dict[str, float]:
  """Which head serves the positives: `head_win_share_<i>`, the share of
  the test rows (at most `max_rows`, the first) whose positive item has its
  largest inner product with head i. A share of 1.0 means the other heads
  never win, i.e. the heads collapsed into one."""
  n = min(len(test["item_id"]), max_rows)
  wins = []
  for s in range(0, n, batch_size):
    part = _rows(test, slice(s, min(s + batch_size, n)))
    heads = scorer.heads(part)
    items = tf.gather(scorer.vectors, tf.constant(part["item_id"], tf.int32))
    wins.append(tf.argmax(tf.einsum("bmd,bd->bm", heads, items),
                          axis=1).numpy())
  wins = np.concatenate(wins)
  shares = np.bincount(wins, minlength=scorer.model.num_heads) / len(wins)
  return {f"head_win_share_{i}": float(v) for i, v in enumerate(shares)}


def polysemy_metrics(scorer: "ModelScorer", world, k: int = 100
                     ) -> Dict[str, float]:
  """Figure 6: for each polysemous word of the synthetic world (a query
  that names products of several root categories), the share of the top-k
  in each meaning, and per head the share of its own top-k in the head's
  dominant meaning (head purity). Flat keys `polysemy_<word>_<root>@k`,
  `polysemy_<word>_head<i>_<root>@k` (the share of head i's own top-k),
  `polysemy_min_share@k` (mean over words of the least-served meaning),
  `polysemy_recall@k` (mean over words of the share of the word's
  grade >= 2 items, all meanings, in its top-k) and
  `polysemy_head_purity@k` and `polysemy_meanings_covered@k` (mean over
  words of the share of the word's meanings that hold more than half of
  some head's top-k: 1.0 when, as in the paper's Figure 6b, each meaning
  has a head of its own; one head can cover at most one meaning)."""
  words = world.polysemous_words()
  queries = {q: i for i, q in enumerate(world.query_strings)}
  item_root = world.item_root
  items = np.arange(world.num_items)
  out, least, purity, recall, covered = {}, [], [], [], []
  for word, roots in sorted(words.items()):
    if word not in queries:
      continue
    rows = {"query": np.asarray([word], object)}
    top = scorer.retrieve(rows, k)[0]
    root_ids = [int(np.flatnonzero(world.root_names == r)[0]) for r in roots]
    shares = [float(np.mean(item_root[top] == r)) for r in root_ids]
    for root, share in zip(roots, shares):
      out[f"polysemy_{word}_{root}@{k}"] = share
    least.append(min(shares))
    relevant = world.relevance(queries[word], items) >= 2
    if relevant.any():
      recall.append(float(relevant[top].sum() / relevant.sum()))
    owned = set()
    for head, head_top in enumerate(scorer.head_retrieve(rows, k)[0]):
      head_shares = [float(np.mean(item_root[head_top] == r))
                     for r in root_ids]
      for root, share in zip(roots, head_shares):
        out[f"polysemy_{word}_head{head}_{root}@{k}"] = share
      purity.append(max(head_shares))
      owned.update(i for i, share in enumerate(head_shares) if share > 0.5)
    covered.append(len(owned) / len(root_ids))
  if least:
    out[f"polysemy_min_share@{k}"] = float(np.mean(least))
    out[f"polysemy_head_purity@{k}"] = float(np.mean(purity))
    out[f"polysemy_meanings_covered@{k}"] = float(np.mean(covered))
  if recall:
    out[f"polysemy_recall@{k}"] = float(np.mean(recall))
  return out


def evaluate(model, task, num_random_items: int = 1024, seed: int = 0,
             item_vectors: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Table 2's metrics (Sec. 6.2.1) of a trained model on a `SearchTask`.

  Args:
    model: a `DPSRModel`, or any scorer with a `retrieve` method
      (`ModelScorer`, `dpsr_tf.bm25.BM25Scorer`).
    task: the `dpsr_tf.data.SearchTask` (its `test` rows, `judged` pairs
      and, on the synthetic world, `world`).
    num_random_items: random items each positive is ranked among (the
      paper's 1,024).
    seed: the random items' and the row samples' seed.
    item_vectors: S(s) of every item `[N, d]` when already computed (a
      `DPSRModel` only); computed by `all_item_embeddings` otherwise.

  Returns:
    Flat metrics, the keys of the CLI's metrics.json: `top1`, `top10`,
    `mrr`, `num_top_k_rows`, `auc`, `num_auc_pairs`; for a `DPSRModel`
    `token_table_{top1,top10,mrr,auc}` and, with several heads,
    `head_win_share_<i>`; on the synthetic world `polysemous_*`,
    `p_good@100`, `recall@100`, `popularity@100` and the Figure 6
    `polysemy_*` keys (a `DPSRModel` only).

  Raises:
    ValueError: num_random_items < 1, or a model of another catalogue size.

      metrics = evaluate(model, task)        # {"top10": 0.71, "auc": ...}
  """
  if num_random_items < 1:
    raise ValueError(f"num_random_items must be >= 1, got "
                     f"{num_random_items}")
  if isinstance(model, DPSRModel):
    if model.num_items != task.num_items:
      raise ValueError(f"the model has {model.num_items} items, the task "
                       f"{task.num_items}")
    scorer = ModelScorer(model, all_item_embeddings(model)
                         if item_vectors is None else item_vectors)
  else:
    scorer = model
  out = top_k_metrics(scorer, task.test, task.num_items, num_random_items,
                      seed=seed)
  out.update(auc_metric(scorer, task.judged))
  if isinstance(scorer, ModelScorer):
    out.update(token_table_metrics(scorer.model, task, num_random_items,
                                   seed=seed))
    if scorer.model.num_heads > 1:
      out.update(head_usage(scorer, task.test))
  if task.world is not None:
    out.update(polysemous_top_k_metrics(
        scorer, task.test, task.world.polysemous_words(), task.num_items,
        num_random_items, seed=seed))
    out.update(relevance_metrics(scorer.retrieve, task.test, task.world,
                                 seed=seed))
    out.update(popularity_metric(scorer.retrieve, task.test,
                                 task.item_popularity, seed=seed))
    if isinstance(scorer, ModelScorer):
      out.update(polysemy_metrics(scorer, task.world))
  return out
