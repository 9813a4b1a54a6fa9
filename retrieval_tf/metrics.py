"""Vectorised ranking metrics. Every function returns the mean over rows
(queries/users) unless `per_user=True`.

Two input shapes:
* the rank of one target among candidates (NCF protocol): `ranks` int `[n]`,
  0-based, from `target_rank`;
* top-k lists against ground-truth sets: `topk` int `[n, K]` of item indices
  (-1 = padding) and `truth` int `[n, T]` padded with -1 (`pad_truth` turns a
  list of arrays into that). Rows with empty truth are excluded.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np


def target_rank(scores: np.ndarray, target_column: int = 0,
                valid: Optional[np.ndarray] = None) -> np.ndarray:
  """0-based rank of the target among each row's candidates.

  rank = #{c != target, valid_c : s_c >= s_target}. Ties count against the
  target (pessimistic), so a constant scorer gets the worst rank, not a lucky
  one. `valid [n, C]` (default all) drops candidates from the count.
  """
  scores = np.asarray(scores, dtype=np.float64)
  target = scores[:, target_column:target_column + 1]
  above = scores >= target
  above[:, target_column] = False
  if valid is not None:
    above &= np.asarray(valid, dtype=bool)
  return above.sum(axis=1).astype(np.int64)


def hit_rate_at_k(ranks: np.ndarray, k: int, per_user: bool = False):
  """HR@k = mean 1[rank < k]."""
  hits = (np.asarray(ranks) < k).astype(np.float64)
  return hits if per_user else float(hits.mean())


def ndcg_at_k(ranks: np.ndarray, k: int, per_user: bool = False):
  """NDCG@k of one relevant item = 1[rank < k] / log2(rank + 2)."""
  ranks = np.asarray(ranks)
  gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
  return gains if per_user else float(gains.mean())


def mrr(ranks: np.ndarray, per_user: bool = False):
  """MRR = mean 1 / (rank + 1)."""
  rr = 1.0 / (np.asarray(ranks, dtype=np.float64) + 1.0)
  return rr if per_user else float(rr.mean())


def pad_truth(rows: Iterable[Sequence[int]]) -> np.ndarray:
  """A list of item-id arrays -> int64 `[n, T]` padded with -1."""
  rows = [np.asarray(r, dtype=np.int64).ravel() for r in rows]
  width = max((len(r) for r in rows), default=0)
  out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def _hits(topk: np.ndarray, truth: np.ndarray, k: int):
  """`hits [n, k]` bool (topk[:, j] in truth row), `|truth|`, valid rows."""
  topk = np.asarray(topk)[:, :k]
  truth = np.asarray(truth)
  if truth.ndim == 1:
    truth = truth[:, None]
  if len(topk) != len(truth):
    raise ValueError(f"topk has {len(topk)} rows but truth has {len(truth)}")
  size = (truth >= 0).sum(axis=1)
  hits = ((topk[:, :, None] == truth[:, None, :]) &
          (truth[:, None, :] >= 0) & (topk[:, :, None] >= 0)).any(axis=2)
  return hits, size, size > 0


def _mean(values: np.ndarray, valid: np.ndarray, per_user: bool):
  if per_user:
    return np.where(valid, values, np.nan)
  return float(values[valid].mean()) if valid.any() else float("nan")


def precision_at_k(topk, truth, k: int, per_user: bool = False):
  """P@k = |top-k ∩ truth| / k."""
  hits, _, valid = _hits(topk, truth, k)
  return _mean(hits.sum(axis=1) / k, valid, per_user)


def recall_at_k(topk, truth, k: int, per_user: bool = False):
  """R@k = |top-k ∩ truth| / |truth|."""
  hits, size, valid = _hits(topk, truth, k)
  return _mean(hits.sum(axis=1) / np.maximum(size, 1), valid, per_user)


def f_measure_at_k(topk, truth, k: int, per_user: bool = False):
  """F@k = 2 P R / (P + R) per user (0 when P + R = 0), then averaged."""
  hits, size, valid = _hits(topk, truth, k)
  p = hits.sum(axis=1) / k
  r = hits.sum(axis=1) / np.maximum(size, 1)
  f = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
  return _mean(f, valid, per_user)


def hits_at_k(topk, truth, k: int, per_user: bool = False):
  """HR@k for sets = 1[|top-k ∩ truth| > 0]."""
  hits, _, valid = _hits(topk, truth, k)
  return _mean(hits.any(axis=1).astype(np.float64), valid, per_user)


def ndcg_at_k_sets(topk, truth, k: int, per_user: bool = False):
  """Binary-relevance NDCG@k: DCG = Σ_j hit_j / log2(j + 2), normalised by
  the ideal DCG of min(|truth|, k) hits."""
  hits, size, valid = _hits(topk, truth, k)
  discounts = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
  dcg = (hits * discounts).sum(axis=1)
  ideal = np.cumsum(discounts)[np.clip(np.minimum(size, hits.shape[1]) - 1,
                                       0, None)]
  return _mean(np.divide(dcg, ideal, out=np.zeros_like(dcg),
                         where=size > 0), valid, per_user)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC by Mann-Whitney U: P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    raise ValueError("auc needs both positive and negative labels")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(len(scores), dtype=np.float64)
  # Average 1-based ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True,
                               return_counts=True)
  average = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(average, counts)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def grouped_auc(groups: np.ndarray, labels: np.ndarray,
                scores: np.ndarray) -> float:
  """Mean AUC over the groups (e.g. queries) that have both classes."""
  groups = np.asarray(groups)
  labels = np.asarray(labels).astype(bool)
  values = []
  for g in np.unique(groups):
    rows = groups == g
    if labels[rows].any() and not labels[rows].all():
      values.append(auc(labels[rows], np.asarray(scores)[rows]))
  if not values:
    raise ValueError("no group has both positive and negative labels")
  return float(np.mean(values))


def top_k_among_random(positive_scores: np.ndarray, random_scores: np.ndarray,
                       k: int) -> float:
  """DPSR's Top-k: P(the positive ranks in the top k among m random items),
  ties against the positive."""
  positive = np.asarray(positive_scores, dtype=np.float64)[:, None]
  above = (np.asarray(random_scores) >= positive).sum(axis=1)
  return float((above < k).mean())


def p_good(is_relevant: np.ndarray, topk: Optional[np.ndarray] = None
           ) -> float:
  """P_good = share of retrieved items judged relevant (MGDSPR): mean over
  rows of (#relevant retrieved / #retrieved); padding (topk = -1) is not
  retrieved."""
  is_relevant = np.asarray(is_relevant, dtype=bool)
  retrieved = (np.ones_like(is_relevant) if topk is None
               else np.asarray(topk) >= 0)
  count = retrieved.sum(axis=1)
  share = np.divide((is_relevant & retrieved).sum(axis=1), count,
                    out=np.zeros(len(count)), where=count > 0)
  return float(share[count > 0].mean()) if (count > 0).any() else float("nan")


def relevance_matrix(topk: np.ndarray, queries: np.ndarray,
                     judged_query: np.ndarray, judged_item: np.ndarray,
                     grade: np.ndarray, threshold: float) -> np.ndarray:
  """`is_relevant [n, K]` from judgments: (query, item) has grade >=
  threshold. Unjudged pairs count as not relevant."""
  num_items = int(max(np.max(topk, initial=0), np.max(judged_item,
                                                      initial=0))) + 1
  good = np.asarray(grade) >= threshold
  keys = (np.asarray(judged_query, np.int64)[good] * num_items +
          np.asarray(judged_item, np.int64)[good])
  asked = np.asarray(queries, np.int64)[:, None] * num_items + topk
  return np.isin(asked, keys) & (topk >= 0)


def ranking_report(ranks: Optional[np.ndarray] = None,
                   topk: Optional[np.ndarray] = None,
                   truth: Optional[np.ndarray] = None,
                   ks: Sequence[int] = (10, 50)) -> Dict[str, float]:
  """Flat metrics: from `ranks` -> `hr@k`, `ndcg@k`, `mrr`; from `topk` and
  `truth` -> `recall@k`, `precision@k`, `f@k`, `hr@k`, `ndcg@k`."""
  out: Dict[str, float] = {}
  if ranks is not None:
    for k in ks:
      out[f"hr@{k}"] = hit_rate_at_k(ranks, k)
      out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = mrr(ranks)
  if topk is not None:
    for k in ks:
      out[f"recall@{k}"] = recall_at_k(topk, truth, k)
      out[f"precision@{k}"] = precision_at_k(topk, truth, k)
      out[f"f@{k}"] = f_measure_at_k(topk, truth, k)
      out[f"hr@{k}"] = hits_at_k(topk, truth, k)
      out[f"ndcg@{k}"] = ndcg_at_k_sets(topk, truth, k)
  return out
