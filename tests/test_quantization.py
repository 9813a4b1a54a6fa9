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


@pytest.mark.parametrize("by_angle", [False, True])
@pytest.mark.parametrize("chunk_scores", [None, 1])
def test_encode_equals_numpy(chunk_scores, by_angle, monkeypatch):
  if chunk_scores:  # the smallest chunks: 256 rows each
    monkeypatch.setattr(quantization, "_CHUNK_SCORES", chunk_scores)
  rng = np.random.default_rng(4)
  vectors = rng.normal(size=(700, 8)).astype(np.float32)
  centroids = rng.normal(size=(5, 8)).astype(np.float32)
  codebooks = rng.normal(size=(4, 6, 2)).astype(np.float32)
  if by_angle:  # lists by the largest <x, u_j>, residuals to centroids
    directions = quantization.unit_rows(rng.normal(size=(5, 8)))
    lists, codes, errors = quantization.encode(vectors, centroids, codebooks,
                                               directions)
    want_lists = (vectors @ directions.T).argmax(1)
  else:
    lists, codes, errors = quantization.encode(vectors, centroids, codebooks)
    want_lists = ((vectors[:, None] - centroids) ** 2).sum(-1).argmin(1)
  residuals = (vectors - centroids[want_lists]).reshape(700, 4, 2)
  parts = ((residuals[:, :, None] - codebooks[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(lists, want_lists)
  np.testing.assert_array_equal(codes, parts.argmin(-1))
  np.testing.assert_allclose(errors, parts.min(-1).sum(-1), atol=1e-4)
  assert codes.shape == (700, 4) and codes.dtype == np.int32
  with pytest.raises(ValueError, match="do not split into 3 sub-spaces"):
    quantization.encode(vectors, centroids, codebooks[:3])


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


def test_train_ivfpq_lists_by_angle_with_scaled_centroids():
  """assign_by="angle": every item is in the list of largest <x, u_j>, and
  each centroid is u_j times the mean projection of its members (here the
  training sample is every item); "l2" keeps the nearest centroid."""
  rng = np.random.default_rng(5)
  items = (rng.normal(size=(2000, 8)) *
           rng.uniform(0.5, 3.0, size=(2000, 1))).astype(np.float32)
  book = quantization.train_ivfpq(items, num_lists=12, num_subspaces=4,
                                  num_codewords=8, seed=2,
                                  max_points_per_centroid=1000)
  assert book.training_points == (2000, 2000)
  norms = np.linalg.norm(book.centroids, axis=1)
  directions = book.centroids / norms[:, None]
  np.testing.assert_array_equal(book.assignments,
                                (items @ directions.T).argmax(1))
  for j in range(12):
    members = items[book.assignments == j]
    assert norms[j] == pytest.approx((members @ directions[j]).mean(),
                                     rel=1e-4)
  error = ((items - quantization.reconstruct(book)) ** 2).sum(1).mean()
  assert book.distortion == pytest.approx(error, rel=1e-3)
  l2 = quantization.train_ivfpq(items, num_lists=12, num_subspaces=4,
                                num_codewords=8, seed=2, assign_by="l2")
  nearest = ((items[:, None] - l2.centroids) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(l2.assignments, nearest)
  with pytest.raises(ValueError, match="assign_by must be one of"):
    quantization.train_ivfpq(items, 12, 4, 8, assign_by="cosine")


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


def _separated_clusters(seed=1, n=2000, k=8, dim=5):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 10
  return (centres[rng.integers(0, k, n)] +
          rng.normal(size=(n, dim)) * 0.1).astype(np.float32)


def test_kmeans_stops_early_once_converged_at_the_quality_of_all_iterations():
  points = _separated_clusters()
  early = quantization.kmeans_fit(points, 8, iterations=50, seed=3,
                                  tolerance=1e-4)
  full = quantization.kmeans_fit(points, 8, iterations=50, seed=3,
                                 tolerance=0.0)
  assert early.iterations < 10
  assert len(early.history) == early.iterations
  # The objective never gets worse and is what assign() measures.
  assert np.all(np.diff(full.history) <= 1e-3 * full.history[0])
  _, distances = quantization.assign(points, full.centroids)
  assert early.objective == pytest.approx(full.objective, rel=1e-3)
  assert full.history[-1] == pytest.approx(distances.sum(), rel=1e-3)
  # A non-zero tolerance trades a little objective for iterations.
  loose = quantization.kmeans_fit(points, 8, iterations=50, seed=3,
                                  tolerance=0.5)
  assert loose.iterations <= early.iterations


def test_kmeans_random_seeding_and_chunks(monkeypatch):
  # k > 256 is seeded by k random points under init="auto" (k-means++ is a
  # serial loop over k); the same seed gives the same centroids.
  points = np.random.default_rng(5).normal(size=(3000, 2)).astype(np.float32)
  first = quantization.kmeans(points, 300, iterations=5, seed=7)
  np.testing.assert_array_equal(
      first, quantization.kmeans(points, 300, iterations=5, seed=7))
  np.testing.assert_array_equal(
      first, quantization.kmeans(points, 300, iterations=5, seed=7,
                                 init="random"))
  assert not np.array_equal(
      first, quantization.kmeans(points, 300, iterations=5, seed=8))
  assert not np.array_equal(
      first, quantization.kmeans(points, 300, iterations=5, seed=7,
                                 init="kmeans++"))
  # A Lloyd iteration over many small chunks sums to the one-chunk result.
  grouped = np.random.default_rng(6).normal(size=(3, 1000, 4)).astype(
      np.float32)
  whole = quantization.kmeans_fit(grouped, 16, iterations=4, seed=0,
                                  tolerance=0.0)
  monkeypatch.setattr(quantization, "_CHUNK_SCORES", 16)   # 256-point chunks
  chunked = quantization.kmeans_fit(grouped, 16, iterations=4, seed=0,
                                    tolerance=0.0)
  np.testing.assert_allclose(chunked.centroids, whole.centroids, atol=1e-5)
  np.testing.assert_allclose(chunked.objective, whole.objective, rtol=1e-5)


def test_train_ivfpq_trains_on_a_subsample_and_reports_its_iterations():
  rng = np.random.default_rng(8)
  items = rng.normal(size=(4000, 8)).astype(np.float32)
  book = quantization.train_ivfpq(items, num_lists=10, num_subspaces=2,
                                  num_codewords=16, iterations=30,
                                  max_points_per_centroid=40, seed=1)
  assert book.training_points == (400, 640)
  assert all(1 <= i <= 30 for i in book.iterations)
  assert book.codes.shape == (4000, 2)   # every item is still encoded
  np.testing.assert_array_equal(
      book.codes, quantization.train_ivfpq(
          items, 10, 2, 16, iterations=30, max_points_per_centroid=40,
          seed=1).codes)
  assert quantization.train_ivfpq(
      items, 10, 2, 16, iterations=30, seed=1).training_points == (640, 1024)
  everything = quantization.train_ivfpq(items, 10, 2, 16, iterations=30,
                                        max_points_per_centroid=1000, seed=1)
  assert everything.training_points == (4000, 4000)
  # 40 points a centroid encode within 15 % of all 400 a centroid.
  assert book.distortion < 1.15 * everything.distortion


def test_kmeans_option_errors():
  points = np.zeros((10, 2), np.float32)
  with pytest.raises(ValueError, match="tolerance must be >= 0"):
    quantization.kmeans(points, 2, tolerance=-1.0)
  with pytest.raises(ValueError, match="tolerance must be >= 0"):
    quantization.kmeans(points, 2, tolerance=float("nan"))
  with pytest.raises(ValueError, match="iterations must be >= 1"):
    quantization.kmeans(points, 2, iterations=0)
  with pytest.raises(ValueError, match="init must be one of"):
    quantization.kmeans(points, 2, init="forgy")
  with pytest.raises(ValueError, match="max_points_per_centroid"):
    quantization.train_ivfpq(np.random.rand(30, 4), 2, 2, num_codewords=4,
                             max_points_per_centroid=0)
