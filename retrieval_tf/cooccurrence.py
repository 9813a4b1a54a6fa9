"""Item co-occurrence counts from training interactions (item-based CF
statistics, and PDN's co-occurrence field c_ji, Sec. 4.2).

`cooccurrence_counts(interactions, num_items, window=None)` counts, for every
ordered item pair (j, i), j != i, the users whose training log holds both:

* `window=None`: user-level co-occurrence, every pair of the user's distinct
  items (the binary user-item matrix R gives C = RᵀR, diagonal removed);
* `window=w`: only pairs at most `w` events apart in the user's chronological
  log (a sliding session window); a pair counts once per user.

Everything is NumPy / `scipy.sparse` (one shift per window offset, no Python
loop over users or items). The resulting `CooccurrenceTable` remembers the
item vocabulary it was built on (`fingerprint`), and `check_vocabulary`
refuses a table built on another vocabulary with a clear `DataError`.

For TensorFlow lookups a table exports sorted int64 pair keys `j * N + i` and
their counts (`pair_arrays`), searched with `tf.searchsorted`, which scales
to catalogues where a dense N x N table would not fit.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp

from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import (Interactions, Vocabulary,
                                         check_index_range)


def vocabulary_fingerprint(vocabulary: Vocabulary) -> str:
  """A short hash of a vocabulary's ids in index order."""
  digest = hashlib.sha256()
  digest.update(str(len(vocabulary)).encode())
  for value in vocabulary.ids:
    digest.update(b"\0" + str(value).encode("utf-8"))
  return digest.hexdigest()[:16]


class CooccurrenceTable:
  """Symmetric item co-occurrence counts.

  Attributes:
    counts: `scipy.sparse.csr_matrix [N, N]` int32, zero diagonal.
    item_counts: int64 `[N]`, users per item (the diagonal of RᵀR).
    window: the window it was counted with (None: user level).
    fingerprint: `vocabulary_fingerprint` of the item vocabulary, or None.
  """

  def __init__(self, counts: sp.csr_matrix, item_counts: np.ndarray,
               window: Optional[int], fingerprint: Optional[str]):
    self.counts = counts
    self.item_counts = item_counts
    self.window = window
    self.fingerprint = fingerprint

  @property
  def num_items(self) -> int:
    return self.counts.shape[0]

  @property
  def nnz(self) -> int:
    return int(self.counts.nnz)

  def check_vocabulary(self, vocabulary: Vocabulary,
                       what: str = "the model") -> None:
    """`DataError` unless the table was built on `vocabulary`."""
    if len(vocabulary) != self.num_items:
      raise DataError(
          f"co-occurrence table has {self.num_items} items but {what} has an "
          f"item vocabulary of {len(vocabulary)}; rebuild the table from "
          "this dataset's training interactions")
    if (self.fingerprint is not None and
        self.fingerprint != vocabulary_fingerprint(vocabulary)):
      raise DataError(
          f"co-occurrence table was built on a different item vocabulary "
          f"than {what} (same size {self.num_items}, other ids or order); "
          "rebuild it from this dataset's training interactions")

  def lookup(self, j, i) -> np.ndarray:
    """Counts c_ji of index arrays `j`, `i` (same shape), int32."""
    j = np.asarray(j, np.int64)
    i = np.asarray(i, np.int64)
    return np.asarray(self.counts[j.ravel(), i.ravel()],
                      np.int32).reshape(j.shape)

  def cosine(self) -> sp.csr_matrix:
    """c_ji / sqrt(n_j n_i) (item-based CF similarity), float32 CSR."""
    norms = np.sqrt(self.item_counts.astype(np.float64))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    coo = self.counts.tocoo()
    values = coo.data * inv[coo.row] * inv[coo.col]
    return sp.csr_matrix((values.astype(np.float32), (coo.row, coo.col)),
                         shape=self.counts.shape)

  def pair_arrays(self) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted int64 keys `j * N + i` and their int32 counts (non-zeros)."""
    coo = self.counts.tocoo()
    keys = coo.row.astype(np.int64) * self.num_items + coo.col
    order = np.argsort(keys, kind="stable")
    return keys[order], coo.data[order].astype(np.int32)

  def top_neighbors(self, k: int, by: str = "count"
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Each item's `k` strongest co-occurring items.

    Args:
      k: neighbours per item.
      by: "count" (raw co-occurrence) or "cosine".

    Returns:
      `(ids int32 [N, k], values float32 [N, k])`, strongest first, padded
      with -1 / 0 where an item has fewer than `k` co-occurring items.
    """
    if k < 1:
      raise ValueError(f"top_neighbors: k must be >= 1, got {k}")
    if by not in ("count", "cosine"):
      raise ValueError(f"top_neighbors: by must be 'count' or 'cosine', got "
                       f"{by!r}")
    matrix = self.counts if by == "count" else self.cosine()
    coo = matrix.tocoo()
    # Rows ascending, values descending (ties: lower item id first).
    order = np.lexsort((coo.col, -coo.data.astype(np.float64), coo.row))
    rows, cols = coo.row[order], coo.col[order]
    values = coo.data[order].astype(np.float32)
    starts = np.searchsorted(rows, np.arange(self.num_items))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    ids = np.full((self.num_items, k), -1, np.int32)
    out = np.zeros((self.num_items, k), np.float32)
    ids[rows[keep], rank[keep]] = cols[keep]
    out[rows[keep], rank[keep]] = values[keep]
    return ids, out


def cooccurrence_counts(interactions: Interactions, num_items: int,
                        window: Optional[int] = None,
                        vocabulary: Optional[Vocabulary] = None
                        ) -> CooccurrenceTable:
  """Counts item co-occurrences in a training log (see the module).

  Args:
    interactions: the TRAINING log (never the test events).
    num_items: the item vocabulary size N.
    window: None for user-level co-occurrence, else the largest distance
      (in events of one user's chronological log) of a counted pair, >= 1.
    vocabulary: the item vocabulary, whose fingerprint the table keeps.

  Raises:
    DataError: an empty log, item ids outside `[0, num_items)`, or a
      vocabulary whose size is not `num_items`.
    ValueError: `window < 1`.
  """
  if len(interactions) == 0:
    raise DataError("cooccurrence_counts: the interaction log is empty")
  if window is not None and window < 1:
    raise ValueError(f"cooccurrence_counts: window must be >= 1 or None, "
                     f"got {window}")
  check_index_range(interactions.item, num_items, "item",
                    "cooccurrence_counts")
  if vocabulary is not None and len(vocabulary) != num_items:
    raise DataError(f"cooccurrence_counts: the vocabulary has "
                    f"{len(vocabulary)} items, num_items is {num_items}")
  users = interactions.user.astype(np.int64)
  num_users = int(users.max()) + 1
  binary = sp.csr_matrix(
      (np.ones(len(users), np.int32), (users, interactions.item)),
      shape=(num_users, num_items))
  binary.data[:] = 1
  item_counts = np.asarray(binary.sum(axis=0)).ravel().astype(np.int64)
  if window is None:
    counts = (binary.T @ binary).tocsr()
  else:
    log = interactions.sorted()
    u, it = log.user.astype(np.int64), log.item.astype(np.int64)
    owners, rows, cols = [], [], []
    for offset in range(1, min(window, len(u) - 1) + 1):
      same = u[offset:] == u[:-offset]
      a, b = it[:-offset][same], it[offset:][same]
      owners += [u[:-offset][same]] * 2
      rows += [a, b]
      cols += [b, a]
    empty = [np.zeros(0, np.int64)]
    owners, rows, cols = (np.concatenate(x or empty)
                          for x in (owners, rows, cols))
    # One count per (user, j, i): drop repeated triples.
    pairs = rows * num_items + cols
    order = np.lexsort((pairs, owners))
    owners, pairs = owners[order], pairs[order]
    first = np.ones(len(pairs), bool)
    first[1:] = (owners[1:] != owners[:-1]) | (pairs[1:] != pairs[:-1])
    pairs = pairs[first]
    counts = sp.csr_matrix(
        (np.ones(len(pairs), np.int32),
         (pairs // num_items, pairs % num_items)),
        shape=(num_items, num_items))
  counts.setdiag(0)
  counts.eliminate_zeros()
  counts = counts.astype(np.int32).tocsr()
  counts.sort_indices()
  return CooccurrenceTable(
      counts, item_counts, window,
      vocabulary_fingerprint(vocabulary) if vocabulary is not None else None)
