"""Evaluation protocols on top of `retrieval_tf.metrics`.

* `evaluate_sampled`: the NCF protocol: the target ranked among sampled
  negatives (target in column 0), HR@k / NDCG@k / MRR.
* `top_k_items` / `evaluate_full_ranking`: exact top-k over the full corpus
  by inner product, with each user's training items excluded.
* `HeldOutProtocol`: the held-out-user protocol of Deep Retrieval (Sec. 4.1):
  the input half of each test user's history in, the second half as truth,
  input items excluded, precision / recall / F@k averaged per user.
* `evaluate_two_tower` (`retrieval_tf.evaluate`): a two-tower model on either
  protocol, with the keys of `python -m retrieval_tf.train`'s metrics.json;
  `leave_one_out_metrics` is the leave-one-out report of any scorer.

Exclusions and histories are `scipy.sparse.csr_matrix` of shape
`[num_rows, num_items]` (`exclusion_from_interactions`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from retrieval_tf import metrics
from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex
from retrieval_tf.data.pipeline import item_dataset, user_eval_dataset
from retrieval_tf.datasets.registry import LeaveOneOut
from retrieval_tf.datasets.splits import DRSplit, HeldOutUsers
from retrieval_tf.datasets.types import Interactions, RecDataset

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


def leave_one_out_metrics(score_fn: Callable[[np.ndarray, np.ndarray],
                                             np.ndarray],
                          top: np.ndarray, split: LeaveOneOut,
                          sampled_ks: Sequence[int] = (10,),
                          full_ks: Sequence[int] = (10, 50)
                          ) -> Dict[str, float]:
  """The leave-one-out report of any scorer: `hr@k`, `ndcg@k`, `mrr` of the
  target among its sampled negatives (`score_fn` as in `evaluate_sampled`,
  rows = test rows), and `recall@k`, `full_ndcg@k` of `top [n, >= max k]`
  (full-corpus top items, training items excluded). One target per user:
  precision, F and HR over the full corpus restate recall, so they are left
  out."""
  report = evaluate_sampled(score_fn, np.arange(len(split.test)),
                            split.test.item, split.negatives, ks=sampled_ks)
  full = metrics.ranking_report(topk=top, truth=split.test.item[:, None],
                                ks=full_ks)
  report.update({key if key.startswith("recall") else f"full_{key}": value
                 for key, value in full.items()
                 if key.startswith(("recall", "ndcg"))})
  return report


def embed(tower: Callable, batches: tf.data.Dataset) -> np.ndarray:
  """`tower(features, training=False)` over every batch, concatenated."""
  call = tf.function(lambda features: tower(features, training=False))
  return np.concatenate([call(batch).numpy() for batch in batches], axis=0)


def item_tower_vectors(model, dataset: RecDataset,
                       batch_size: int = 4096) -> np.ndarray:
  """`[num_items, d]`: a two-tower's item tower over every item of
  `dataset` (the item fields the model embeds), in item-index order."""
  return embed(model.item_embedding, item_dataset(
      dataset.num_items, _fields(model.item_features, dataset, "item"),
      batch_size=batch_size))


def two_tower_leave_one_out(model, split: LeaveOneOut,
                            history_length: Optional[int],
                            sampled_ks: Sequence[int] = (10,),
                            full_ks: Sequence[int] = (10, 50),
                            batch_size: int = 4096
                            ) -> Tuple[Dict[str, float], np.ndarray,
                                       np.ndarray]:
  """`leave_one_out_metrics` of a two-tower, with the test users' and all
  items' vectors: `(metrics, user_vectors [n, d], item_vectors [N, d])`."""
  train = split.dataset.interactions
  users = split.test.user
  user_vectors = embed(model.user_embedding, user_eval_dataset(
      users, HistoryIndex.from_interactions(train, split.dataset.num_users),
      history_length, _fields(model.user_features, split.dataset, "user"),
      batch_size=batch_size))
  item_vectors = item_tower_vectors(model, split.dataset, batch_size)
  top = top_k_items(user_vectors, item_vectors, max(full_ks),
                    exclusion_from_interactions(train, users,
                                                split.dataset.num_items))
  score = lambda rows, items: np.einsum(
      "nd,ncd->nc", user_vectors[rows], item_vectors[items])
  return (leave_one_out_metrics(score, top, split, sampled_ks, full_ks),
          user_vectors, item_vectors)


def two_tower_held_out(model, dataset: RecDataset, split: DRSplit,
                       history_length: Optional[int],
                       ks: Sequence[int] = (10, 50), batch_size: int = 4096
                       ) -> Tuple[Dict[str, float], np.ndarray, np.ndarray]:
  """The held-out-user report (`precision@k`, `recall@k`, `f@k`) of a
  two-tower, with the test users' and all items' vectors."""
  protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
  user_vectors = embed(model.user_embedding, protocol.user_dataset(
      dataset.num_users, history_length,
      _fields(model.user_features, dataset, "user"), batch_size=batch_size))
  item_vectors = item_tower_vectors(model, dataset, batch_size)
  top = top_k_items(user_vectors, item_vectors, max(ks), protocol.exclude)
  return protocol.report(top, ks), user_vectors, item_vectors


def evaluate_two_tower(model, data, dataset: Optional[RecDataset] = None, *,
                       history_length: Optional[int] = None,
                       sampled_ks: Sequence[int] = (10,),
                       full_ks: Sequence[int] = (10, 50),
                       batch_size: int = 4096) -> Dict[str, float]:
  """Retrieval metrics of a trained two-tower, keyed as the training CLI's
  metrics.json.

      split = retrieval_tf.datasets.leave_one_out(dataset)
      ...train on split.dataset.interactions...
      retrieval_tf.evaluate(model, split, history_length=20)
      # {"hr@10": .., "ndcg@10": .., "mrr": .., "recall@10": ..,
      #  "recall@50": .., "full_ndcg@10": .., "full_ndcg@50": ..}

  Args:
    model: a `TwoTowerModel` (anything with `user_embedding`,
      `item_embedding`, `user_features`, `item_features`).
    data: a `LeaveOneOut` (`datasets.leave_one_out`): `hr@k`, `ndcg@k`,
      `mrr` among the sampled negatives (k in `sampled_ks`), `recall@k`,
      `full_ndcg@k` over the full corpus (k in `full_ks`), training items
      excluded; or a `DRSplit` (`datasets.held_out_split`, needs `dataset`):
      `precision@k`, `recall@k`, `f@k` (k in `full_ks`) of the held-out
      users' second halves, their first halves as input and excluded.
    dataset: the `RecDataset` a `DRSplit` was made from.
    history_length: the history window the model was trained with;
      required when the model pools a history.
    sampled_ks, full_ks: the cut-offs.
    batch_size: users / items embedded at once.

  Returns:
    `{metric name: value}`.

  Raises:
    ValueError: another `data` type, a `DRSplit` without `dataset`, or no
      `history_length` for a model that reads a history.
  """
  if history_length is None and getattr(model, "use_history", False):
    raise ValueError("evaluate needs history_length: the history window the "
                     "model was trained with")
  if not getattr(model, "use_history", True):
    history_length = None
  if isinstance(data, LeaveOneOut):
    return two_tower_leave_one_out(model, data, history_length, sampled_ks,
                                   full_ks, batch_size)[0]
  if isinstance(data, DRSplit):
    if dataset is None:
      raise ValueError("evaluate on a DRSplit needs dataset= (the RecDataset "
                       "it was made from)")
    return two_tower_held_out(model, dataset, data, history_length, full_ks,
                              batch_size)[0]
  raise ValueError(f"data must be a LeaveOneOut (datasets.leave_one_out) or a "
                   f"DRSplit (datasets.held_out_split), got "
                   f"{type(data).__name__}")


def _fields(names, dataset: RecDataset, side: str
           ) -> Dict[str, np.ndarray]:
  """The `side` ("user" / "item") field arrays a model embeds."""
  features = getattr(dataset, f"{side}_features")
  return {name: features[name] for name in names}
