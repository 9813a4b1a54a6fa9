"""Non-neural floors: most popular and item-based collaborative filtering.

Both take histories as a binary `scipy.sparse.csr_matrix [n, num_items]`
(`retrieval_tf.evaluation.exclusion_from_interactions`), score given
candidates or return the top-k, and never build a dense items x items matrix.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

from retrieval_tf.datasets.types import Interactions

# Users scored at once by ItemCF.top_k (dense [chunk, num_items] scores).
_ROWS_PER_CHUNK = 1024


class MostPopular:
  """score(u, i) = number of training interactions of i."""

  def fit(self, interactions: Interactions, num_items: int) -> "MostPopular":
    self.counts = np.bincount(interactions.item, minlength=num_items
                              ).astype(np.float32)
    return self

  def score(self, histories: sp.csr_matrix, candidates: np.ndarray
            ) -> np.ndarray:
    del histories
    return self.counts[candidates]

  def top_k(self, histories: sp.csr_matrix, k: int,
            exclude_history: bool = True) -> np.ndarray:
    return _top_k(lambda rows: np.broadcast_to(
        self.counts, (rows.stop - rows.start, len(self.counts))),
                  histories, k, exclude_history)


class ItemCF:
  """Item-based CF with cosine similarity (Sarwar et al., WWW'01).

  With the binary user-item matrix R, sim(j, i) = (RᵀR)_ji / sqrt(n_j n_i),
  zero on the diagonal; score(u, i) = Σ_{j ∈ history(u)} sim(j, i).

  Args:
    num_neighbors: keep only each item's top-N most similar items (None: all).
  """

  def __init__(self, num_neighbors: Optional[int] = None):
    self.num_neighbors = num_neighbors

  def fit(self, interactions: Interactions, num_items: int) -> "ItemCF":
    users = interactions.user
    r = sp.csr_matrix((np.ones(len(users), np.float32),
                       (users, interactions.item)),
                      shape=(int(users.max()) + 1, num_items))
    r.data[:] = 1.0
    co = (r.T @ r).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    norms = np.sqrt(np.asarray(r.sum(axis=0)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    sim = sp.diags(inv) @ co @ sp.diags(inv)
    if self.num_neighbors is not None:
      sim = _keep_top_per_row(sim.tocsr(), self.num_neighbors)
    self.similarity = sim.tocsr().astype(np.float32)
    return self

  def score(self, histories: sp.csr_matrix, candidates: np.ndarray
            ) -> np.ndarray:
    """`[n, c]` scores of each row's candidates."""
    out = np.empty(candidates.shape, np.float32)
    for start in range(0, histories.shape[0], _ROWS_PER_CHUNK):
      rows = slice(start, start + _ROWS_PER_CHUNK)
      dense = (histories[rows] @ self.similarity).toarray()
      out[rows] = np.take_along_axis(dense, candidates[rows], axis=1)
    return out

  def top_k(self, histories: sp.csr_matrix, k: int,
            exclude_history: bool = True) -> np.ndarray:
    return _top_k(lambda rows: (histories[rows] @ self.similarity).toarray(),
                  histories, k, exclude_history)

  def similar_items(self, item: int, k: int) -> np.ndarray:
    """The k items most similar to `item` (item-to-item retrieval)."""
    row = self.similarity[item].toarray().ravel()
    row[item] = -np.inf
    return np.argsort(-row, kind="stable")[:k]


def _top_k(scores_of, histories: sp.csr_matrix, k: int,
           exclude_history: bool) -> np.ndarray:
  out = []
  for start in range(0, histories.shape[0], _ROWS_PER_CHUNK):
    rows = slice(start, min(start + _ROWS_PER_CHUNK, histories.shape[0]))
    scores = np.array(scores_of(rows), dtype=np.float32)
    if exclude_history:
      scores[histories[rows].toarray() > 0] = -np.inf
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1,
                       kind="stable")
    out.append(np.take_along_axis(top, order, axis=1))
  return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def _keep_top_per_row(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
  rows, cols, vals = [], [], []
  for i in range(matrix.shape[0]):
    start, stop = matrix.indptr[i], matrix.indptr[i + 1]
    if stop - start > n:
      keep = np.argpartition(-matrix.data[start:stop], n - 1)[:n] + start
    else:
      keep = np.arange(start, stop)
    rows.append(np.full(len(keep), i))
    cols.append(matrix.indices[keep])
    vals.append(matrix.data[keep])
  return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                               np.concatenate(cols))),
                       shape=matrix.shape)
