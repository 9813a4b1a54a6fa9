"""Synthetic vectors shared by the index benchmarks.

Both sets are Gaussian mixtures with standard-normal centres, so two centres
lie about sqrt(2 d) apart. Rows are drawn in blocks of `_BLOCK` (the same
random stream as one draw), so 10M x 64 needs no float64 copy of the whole
set.
"""

import numpy as np

_BLOCK = 1 << 18


def _mixture(rng, means, spread, n):
  """`n` float32 rows: a uniformly chosen centre plus its spread times
  standard-normal noise."""
  labels = rng.integers(0, len(means), n)
  out = np.empty((n, means.shape[1]), np.float32)
  for start in range(0, n, _BLOCK):
    rows = labels[start:start + _BLOCK]
    noise = rng.standard_normal((len(rows), means.shape[1])).astype(
        np.float32)
    out[start:start + len(rows)] = means[rows] + spread[rows, None] * noise
  return out


def clustered_vectors(num_items: int, num_queries: int, dim: int = 64,
                      centres: int = 2000, seed: int = 0):
  """Items and queries from one Gaussian mixture of well separated clusters:
  per-dimension spreads 0.3 to 0.8 (a row lies 0.3 sqrt(d) to 0.8 sqrt(d)
  from its centre, against about 1.4 sqrt(d) between centres)."""
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((centres, dim)).astype(np.float32)
  spread = rng.uniform(0.3, 0.8, centres).astype(np.float32)
  return (_mixture(rng, means, spread, num_items),
          _mixture(rng, means, spread, num_queries))


def overlapping_vectors(num_items: int, num_queries: int, dim: int = 64,
                        seed: int = 0, centres: int = 1000,
                        spread: float = 1.0):
  """Items and queries from a Gaussian mixture whose clusters overlap.

  Each row is a standard-normal centre plus `spread` times standard-normal
  noise; with the default spread 1.0 a row lies about sqrt(d) from its
  centre and two centres lie about sqrt(2 d) apart, so the within-cluster
  spread is comparable to the distance between centres and a query's true
  neighbours come from many clusters (harder for inverted files than
  `clustered_vectors`).

  Args:
    num_items, num_queries: rows of the two float32 `[n, dim]` arrays.
    dim: the dimension d.
    seed: the random seed (same seed, same vectors).
    centres: the number of mixture components.
    spread: the per-dimension standard deviation around a centre.

  Returns:
    `(items [num_items, dim], queries [num_queries, dim])`.
  """
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((centres, dim)).astype(np.float32)
  spreads = np.full(centres, spread, np.float32)
  return (_mixture(rng, means, spreads, num_items),
          _mixture(rng, means, spreads, num_queries))
