"""k-means and product quantization, trained in TensorFlow.

The offline trainer behind `IVFPQIndex.from_embeddings` (for users who bring
their own embeddings) and the k-means warm start of learned quantizers
(Poeem, Sec. 2.3.2). Everything is batched: `kmeans` runs G independent
problems at once (G = 1 for a coarse quantizer, G = D sub-spaces for a
product quantizer), so there is no Python loop over sub-spaces or points,
only over chunks of a large point set.

Assignments minimise the squared L2 distance, written as
`argmax_c (<x, c> - |c|^2 / 2)` so that the work is one batched matmul
(`nearest_centroids`, also used in the graph by learned quantizers).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from retrieval_tf.compat import tf

# Points assigned per matmul: bounds memory to chunk x centroids floats.
_CHUNK = 32768


def nearest_centroids(points, centroids):
  """The L2-nearest centroid of every point, in TF ops (usable in a graph).

  `points [..., n, d]` and `centroids [..., k, d]` share their leading
  (group) axes. Returns `(nearest [..., n] int32, best [..., n])` where
  `best = <x, c> - |c|^2 / 2` of the nearest centroid c, so that
  `|x - c|^2 = |x|^2 - 2 best`.
  """
  scores = tf.matmul(points, centroids, transpose_b=True) - 0.5 * \
      tf.reduce_sum(tf.square(centroids), axis=-1)[..., tf.newaxis, :]
  return (tf.argmax(scores, axis=-1, output_type=tf.int32),
          tf.reduce_max(scores, axis=-1))


@tf.function(reduce_retracing=True)
def _assign_chunk(points, centroids):
  """points [G, n, d], centroids [G, k, d] -> (nearest [G, n], sq. dist)."""
  nearest, best = nearest_centroids(points, centroids)
  distances = tf.reduce_sum(tf.square(points), axis=-1) - 2.0 * best
  return nearest, tf.maximum(distances, 0.0)


def assign(points: np.ndarray, centroids: np.ndarray):
  """Nearest centroid of every point, per group.

  Args:
    points: `[G, n, d]` (or `[n, d]` for one group).
    centroids: `[G, k, d]` (or `[k, d]`).

  Returns:
    `(nearest [G, n] int32, squared distances [G, n])`, without the group
    axis when the inputs had none.
  """
  squeeze = np.ndim(points) == 2
  points = np.asarray(points, np.float32)
  centroids = np.asarray(centroids, np.float32)
  if squeeze:
    points, centroids = points[np.newaxis], centroids[np.newaxis]
  if points.shape[0] != centroids.shape[0] or \
      points.shape[2] != centroids.shape[2]:
    raise ValueError(f"points {points.shape} and centroids "
                     f"{centroids.shape} do not match")
  nearest, distances = [], []
  centroids_t = tf.constant(centroids)
  for start in range(0, points.shape[1], _CHUNK):
    n, dist = _assign_chunk(tf.constant(points[:, start:start + _CHUNK]),
                            centroids_t)
    nearest.append(n.numpy())
    distances.append(dist.numpy())
  nearest = np.concatenate(nearest, axis=1)
  distances = np.concatenate(distances, axis=1)
  return (nearest[0], distances[0]) if squeeze else (nearest, distances)


def kmeans(points: np.ndarray, num_centroids: int, iterations: int = 20,
           seed: int = 0) -> np.ndarray:
  """Lloyd's k-means on G groups at once.

  Seeded by k-means++ (on at most 16 k points per group); an emptied
  cluster is re-seeded with a random point of the largest cluster of its
  group, nudged so the two split it (as Faiss does), so every centroid stays
  in use.

  Args:
    points: `[G, n, d]` or `[n, d]`, with `n >= num_centroids`.
    num_centroids: k.
    iterations: Lloyd iterations.
    seed: the random seed (same seed, same centroids).

  Returns:
    Centroids `[G, k, d]` (or `[k, d]` for 2-D input).
  """
  squeeze = np.ndim(points) == 2
  points = np.asarray(points, np.float32)
  if squeeze:
    points = points[np.newaxis]
  if points.ndim != 3:
    raise ValueError(f"points must be [n, d] or [G, n, d], got "
                     f"{points.shape}")
  groups, n, dim = points.shape
  if num_centroids < 1 or n < num_centroids:
    raise ValueError(f"k-means needs 1 <= num_centroids <= number of points,"
                     f" got {num_centroids} centroids for {n} points")
  if not np.isfinite(points).all():
    raise ValueError("k-means points contain NaN or infinite values")
  rng = np.random.default_rng(seed)
  centroids = _kmeans_plus_plus(points, num_centroids, rng)
  for _ in range(iterations):
    nearest, _ = assign(points, centroids)
    segments = nearest + (np.arange(groups) * num_centroids)[:, np.newaxis]
    sums = tf.math.unsorted_segment_sum(
        points.reshape(-1, dim), segments.reshape(-1),
        groups * num_centroids).numpy().reshape(groups, num_centroids, dim)
    counts = np.bincount(segments.reshape(-1),
                         minlength=groups * num_centroids).reshape(
                             groups, num_centroids)
    filled = counts > 0
    centroids = np.where(filled[..., np.newaxis],
                         sums / np.maximum(counts, 1)[..., np.newaxis],
                         centroids)
    for g, empty in zip(*np.nonzero(~filled)):
      largest = int(np.argmax(counts[g]))
      members = np.flatnonzero(nearest[g] == largest)
      noise = 1e-3 * rng.standard_normal(dim).astype(np.float32)
      centroids[g, empty] = points[g, rng.choice(members)] + noise
      counts[g, largest] = max(counts[g, largest] // 2, 1)
  return centroids[0] if squeeze else centroids


def _kmeans_plus_plus(points: np.ndarray, k: int,
                      rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (Arthur & Vassilvitskii, 2007) of every group at once,
  drawn from a pool of at most 16 k points."""
  groups, n, _ = points.shape
  pool = points[:, rng.choice(n, min(n, 16 * k), replace=False)]
  rows = np.arange(groups)
  chosen = pool[rows, rng.integers(pool.shape[1], size=groups)]
  centroids = [chosen]
  closest = ((pool - chosen[:, np.newaxis]) ** 2).sum(-1)
  for _ in range(1, k):
    cumulative = np.cumsum(closest, axis=1)
    targets = rng.random(groups) * cumulative[:, -1]
    picks = np.minimum((cumulative < targets[:, np.newaxis]).sum(1),
                       pool.shape[1] - 1)
    chosen = pool[rows, picks]
    centroids.append(chosen)
    closest = np.minimum(closest,
                         ((pool - chosen[:, np.newaxis]) ** 2).sum(-1))
  return np.stack(centroids, axis=1)


@dataclasses.dataclass
class IVFPQCodebook:
  """What an IVF-PQ index is built from.

  Attributes:
    centroids: coarse centroids `[J, d]`.
    codebooks: PQ codewords of the residuals `[D, K, d / D]`.
    assignments: each item's coarse list `[N]` int32.
    codes: each item's PQ codes `[N, D]` (values < K).
    distortion: mean squared error `|x - T(x)|^2` of the encoding.
  """
  centroids: np.ndarray
  codebooks: np.ndarray
  assignments: np.ndarray
  codes: np.ndarray
  distortion: float


def split_subspaces(vectors: np.ndarray, num_subspaces: int) -> np.ndarray:
  """`[n, d]` -> `[D, n, d / D]` (contiguous blocks of dimensions)."""
  n, dim = vectors.shape
  if dim % num_subspaces:
    raise ValueError(f"dimension {dim} is not divisible by "
                     f"num_subspaces={num_subspaces}")
  return vectors.reshape(n, num_subspaces, dim // num_subspaces).transpose(
      1, 0, 2)


def encode(vectors: np.ndarray, centroids: np.ndarray,
           codebooks: np.ndarray):
  """Coarse list, PQ codes and squared error of each vector (Eq. 2, 4 of
  Poeem: T(x) = c_j + PQ(x - c_j))."""
  vectors = np.asarray(vectors, np.float32)
  assignments, _ = assign(vectors, centroids)
  residuals = vectors - centroids[assignments]
  codes, errors = assign(split_subspaces(residuals, codebooks.shape[0]),
                         codebooks)
  return assignments, codes.T.copy(), errors.sum(axis=0)


def train_ivfpq(embeddings: np.ndarray, num_lists: int, num_subspaces: int,
                num_codewords: int = 256, iterations: int = 20,
                max_points_per_centroid: int = 256, seed: int = 0,
                normalize: bool = False) -> IVFPQCodebook:
  """Trains a coarse quantizer and a residual product quantizer, then
  encodes every embedding.

  Each k-means runs on at most `max_points_per_centroid x k` random
  training points (the Faiss default), then all embeddings are encoded.

  Args:
    embeddings: `[N, d]` item vectors.
    num_lists: J coarse centroids (inverted lists).
    num_subspaces: D; must divide d.
    num_codewords: K codewords per sub-space (at most 256: one byte a code).
    iterations: Lloyd iterations of each k-means.
    max_points_per_centroid: training sample cap.
    seed: random seed.
    normalize: L2-normalise the embeddings first (for cosine search).
  """
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2:
    raise ValueError(f"embeddings must be [N, d], got {embeddings.shape}")
  if not 1 <= num_codewords <= 256:
    raise ValueError(f"num_codewords must be in 1..256, got {num_codewords}")
  if num_lists < 1 or num_lists > len(embeddings):
    raise ValueError(f"num_lists must be in 1..{len(embeddings)} (the "
                     f"number of embeddings), got {num_lists}")
  if normalize:
    embeddings = embeddings / np.maximum(
        np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
  rng = np.random.default_rng(seed)

  def sample(k: int) -> np.ndarray:
    cap = max_points_per_centroid * k
    if len(embeddings) <= cap:
      return embeddings
    return embeddings[np.sort(rng.choice(len(embeddings), cap, replace=False))]

  centroids = kmeans(sample(num_lists), num_lists, iterations, seed)
  train = sample(num_codewords)
  train_lists, _ = assign(train, centroids)
  residuals = split_subspaces(train - centroids[train_lists], num_subspaces)
  if residuals.shape[1] < num_codewords:
    raise ValueError(f"{residuals.shape[1]} embeddings cannot train "
                     f"{num_codewords} codewords")
  codebooks = kmeans(residuals, num_codewords, iterations, seed + 1)
  assignments, codes, errors = encode(embeddings, centroids, codebooks)
  return IVFPQCodebook(centroids=centroids, codebooks=codebooks,
                       assignments=assignments, codes=codes,
                       distortion=float(errors.mean()))


def reconstruct(codebook: IVFPQCodebook) -> np.ndarray:
  """T(x) = c_j(x) + concat_m b_m[code_m(x)] of every encoded item."""
  assignments, codes = codebook.assignments, codebook.codes
  parts = [codebook.codebooks[m][codes[:, m]]
           for m in range(codebook.codebooks.shape[0])]
  return codebook.centroids[assignments] + np.concatenate(parts, axis=1)
