"""The TF k-means / PQ trainer against NumPy."""

import numpy as np
import pytest

from retrieval_tf import quantization


def test_assign_equals_numpy_argmin():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(3, 500, 4)).astype(np.float32)
  centroids = rng.normal(size=(3, 9, 4)).astype(np.float32)
  nearest, distances = quantization.assign(points, centroids)
  full = ((points[:, :, None, :] - centroids[:, None]) ** 2).sum(-1)
  np.testing.assert_array_equal(nearest, full.argmin(-1))
  np.testing.assert_allclose(distances, full.min(-1), atol=1e-4)
  single, _ = quantization.assign(points[1], centroids[1])
  np.testing.assert_array_equal(single, nearest[1])


def test_kmeans_recovers_separated_clusters_and_is_deterministic():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(8, 5)) * 10
  labels = rng.integers(0, 8, 2000)
  points = centres[labels] + rng.normal(size=(2000, 5)) * 0.1
  found = quantization.kmeans(points, 8, iterations=15, seed=3)
  # Every true centre has a centroid within noise distance.
  gaps = np.linalg.norm(centres[:, None] - found[None], axis=-1).min(1)
  assert gaps.max() < 0.1
  np.testing.assert_array_equal(
      found, quantization.kmeans(points, 8, iterations=15, seed=3))


def test_kmeans_keeps_every_centroid_in_use():
  # Many duplicate points make empty clusters likely; they are re-seeded.
  points = np.repeat(np.eye(4, dtype=np.float32), 50, axis=0)
  points = np.concatenate([points, np.random.default_rng(2).normal(
      size=(40, 4)).astype(np.float32)])
  centroids = quantization.kmeans(points, 12, iterations=10, seed=0)
  nearest, _ = quantization.assign(points, centroids)
  assert len(np.unique(nearest)) == 12


def test_train_ivfpq_encodes_every_item_and_reports_its_distortion():
  rng = np.random.default_rng(3)
  items = rng.normal(size=(3000, 16)).astype(np.float32)
  book = quantization.train_ivfpq(items, num_lists=16, num_subspaces=4,
                                  num_codewords=32, iterations=10)
  assert book.centroids.shape == (16, 16)
  assert book.codebooks.shape == (4, 32, 4)
  assert book.codes.shape == (3000, 4) and book.codes.max() < 32
  error = ((items - quantization.reconstruct(book)) ** 2).sum(1).mean()
  assert book.distortion == pytest.approx(error, rel=1e-3)
  # Quantization explains most of the variance (16 per item here).
  assert error < 0.5 * (items ** 2).sum(1).mean()
  coarse_only = ((items - book.centroids[book.assignments]) ** 2).sum(1)
  assert error < 0.5 * coarse_only.mean()


def test_trainer_errors():
  with pytest.raises(ValueError, match="num_codewords"):
    quantization.train_ivfpq(np.zeros((10, 4)), 2, 2, num_codewords=257)
  with pytest.raises(ValueError, match="num_lists"):
    quantization.train_ivfpq(np.zeros((10, 4)), 11, 2)
  with pytest.raises(ValueError, match="not divisible"):
    quantization.train_ivfpq(np.random.rand(300, 6), 2, 4, num_codewords=4)
  with pytest.raises(ValueError, match="NaN"):
    quantization.kmeans(np.full((10, 2), np.nan), 2)
  with pytest.raises(ValueError, match="num_centroids"):
    quantization.kmeans(np.zeros((3, 2)), 4)


def test_nearest_centroids_in_the_graph_equals_assign():
  rng = np.random.default_rng(4)
  points = rng.normal(size=(2, 40, 3)).astype(np.float32)
  centroids = rng.normal(size=(2, 5, 3)).astype(np.float32)
  nearest, _ = quantization.nearest_centroids(points, centroids)
  np.testing.assert_array_equal(nearest.numpy(),
                                quantization.assign(points, centroids)[0])
  single, _ = quantization.nearest_centroids(points[0], centroids[0])
  np.testing.assert_array_equal(single.numpy(), nearest.numpy()[0])
