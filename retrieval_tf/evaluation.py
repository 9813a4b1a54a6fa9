"""Evaluation protocols on top of `retrieval_tf.metrics`.

* `evaluate_sampled`: the NCF protocol: the target ranked among sampled
  negatives (target in column 0), HR@k / NDCG@k / MRR.
* `top_k_items` / `evaluate_full_ranking`: exact top-k over the full corpus
  by inner product, with each user's training items excluded.
* `HeldOutProtocol`: the held-out-user protocol of Deep Retrieval (Sec. 4.1):
  the input half of each test user's history in, the second half as truth,
  input items excluded, precision / recall / F@k averaged per user.

Exclusions and histories are `scipy.sparse.csr_matrix` of shape
`[num_rows, num_items]` (`exclusion_from_interactions`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from retrieval_tf import metrics
from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex
from retrieval_tf.data.pipeline import user_eval_dataset
from retrieval_tf.datasets.splits import HeldOutUsers
from retrieval_tf.datasets.types import Interactions

# Bound on query rows x items scored at once (about 256 MiB of float32).
_SCORES_PER_CHUNK = 1 << 26


def exclusion_from_interactions(interactions: Interactions, users: np.ndarray,
                                num_items: Optional[int] = None
                                ) -> sp.csr_matrix:
  """Row r = the items user `users[r]` interacted with (binary CSR)."""
  users = np.asarray(users, dtype=np.int64)
  num_items = int(num_items if num_items is not None else
                  (interactions.item.max() + 1 if len(interactions) else 0))
  num_users = int(max(users.max(initial=-1), interactions.user.max(
      initial=-1)) + 1)
  seen = sp.csr_matrix(
      (np.ones(len(interactions), np.float32),
       (interactions.user, interactions.item)),
      shape=(num_users, num_items))
  seen.data[:] = 1.0  # duplicates summed -> binary
  return seen[users]


def evaluate_sampled(score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     rows: np.ndarray, targets: np.ndarray,
                     negatives: np.ndarray, ks: Sequence[int] = (10,),
                     batch_size: int = 4096) -> Dict[str, float]:
  """NCF protocol: `score_fn(rows [b], candidates [b, 1 + m]) -> scores`;
  the target is candidate 0; ties count against it.

  A "negative" equal to the row's target is not counted (the NCF ML-1M file
  has 156 such rows; NCF's own evaluation collapses candidates by item id).
  """
  candidates = np.concatenate([np.asarray(targets)[:, None],
                               np.asarray(negatives)], axis=1)
  valid = candidates != candidates[:, :1]
  ranks = []
  for start in range(0, len(rows), batch_size):
    stop = start + batch_size
    scores = np.asarray(score_fn(rows[start:stop], candidates[start:stop]))
    if not np.isfinite(scores).all():
      raise FloatingPointError("the model produced non-finite scores")
    ranks.append(metrics.target_rank(scores, valid=valid[start:stop]))
  return metrics.ranking_report(ranks=np.concatenate(ranks), ks=ks)


def top_k_items(queries: np.ndarray, items: np.ndarray, k: int,
                exclude: Optional[sp.csr_matrix] = None) -> np.ndarray:
  """Exact top-k item indices by inner product, `[n, k]`, best first.

  Chunked over query rows so memory stays bounded; items in `exclude[r]`
  never appear in row r (their scores are -inf before `tf.math.top_k`).
  """
  queries = np.asarray(queries, np.float32)
  items_t = tf.constant(np.asarray(items, np.float32))
  num_items = items_t.shape[0]
  k = min(k, num_items)
  chunk = max(1, _SCORES_PER_CHUNK // max(num_items, 1))
  out = []
  for start in range(0, len(queries), chunk):
    scores = tf.matmul(queries[start:start + chunk], items_t,
                       transpose_b=True)
    if exclude is not None:
      mask = exclude[start:start + chunk].toarray() > 0
      scores = tf.where(mask, tf.constant(-np.inf, tf.float32), scores)
    out.append(tf.math.top_k(scores, k=k).indices.numpy())
  return (np.concatenate(out) if out else np.zeros((0, k), np.int32))


def evaluate_full_ranking(user_vectors: np.ndarray, item_vectors: np.ndarray,
                          truth: np.ndarray,
                          exclude: Optional[sp.csr_matrix] = None,
                          ks: Sequence[int] = (10, 50)) -> Dict[str, float]:
  """recall/precision/F/HR/NDCG@k of the exact top-k against `truth`."""
  top = top_k_items(user_vectors, item_vectors, max(ks), exclude)
  return metrics.ranking_report(topk=top, truth=truth, ks=ks)


@dataclasses.dataclass
class HeldOutProtocol:
  """The answer key of held-out users (Deep Retrieval, Sec. 4.1).

  Attributes:
    users: int32 sorted test users (one row each, in this order).
    inputs: the first half of their histories (what a model reads).
    truth: int64 `[n, T]`, the second half's items, -1 padded.
    exclude: CSR `[n, num_items]`, the input items (never recommended).
    banned: int64 `[n, E]`, the same items -1 padded (for in-graph
      exclusion lists).
  """

  users: np.ndarray
  inputs: Interactions
  truth: np.ndarray
  exclude: sp.csr_matrix
  banned: np.ndarray

  @classmethod
  def from_held_out(cls, test: HeldOutUsers, num_items: int
                    ) -> "HeldOutProtocol":
    exclude = exclusion_from_interactions(test.inputs, test.users, num_items)
    return cls(
        users=test.users, inputs=test.inputs,
        truth=metrics.pad_truth(np.split(
            test.truth.item, np.searchsorted(test.truth.user,
                                             test.users[1:]))),
        exclude=exclude,
        banned=metrics.pad_truth(np.split(exclude.indices,
                                          exclude.indptr[1:-1])))

  def user_dataset(self, num_users: int, history_length: int,
                   user_features: Optional[Mapping[str, np.ndarray]] = None,
                   batch_size: int = 1024) -> tf.data.Dataset:
    """The test users' feature batches (`user_id`, the last
    `history_length` input items as `history` / `history_mask`, profile
    fields), in the order of `users`."""
    return user_eval_dataset(
        self.users, HistoryIndex.from_interactions(self.inputs, num_users),
        history_length, user_features, batch_size=batch_size)

  def report(self, topk: np.ndarray, ks: Sequence[int],
             prefix: str = "") -> Dict[str, float]:
    """`{prefix}precision@k`, `recall@k`, `f@k` of `topk [n, >= max(ks)]`
    (rows in the order of `users`), averaged per user."""
    report = metrics.ranking_report(topk=topk, truth=self.truth, ks=ks)
    return {f"{prefix}{key}": value for key, value in report.items()
            if key.startswith(("recall", "precision", "f@"))}
