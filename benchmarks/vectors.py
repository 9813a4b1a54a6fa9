"""Synthetic vectors shared by the index benchmarks."""

import numpy as np


def clustered_vectors(num_items: int, num_queries: int, dim: int = 64,
                      centres: int = 2000, seed: int = 0):
  """Items and queries from one Gaussian mixture (spreads 0.3 to 0.8)."""
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((centres, dim)).astype(np.float32)
  spread = rng.uniform(0.3, 0.8, centres).astype(np.float32)

  def draw(n):
    labels = rng.integers(0, centres, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    return means[labels] + spread[labels, None] * noise

  return draw(num_items), draw(num_queries)
