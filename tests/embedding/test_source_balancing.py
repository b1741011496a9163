"""Multi-source balancing: Sinkhorn marginals, OT similarity, source weights, single-source batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from embedding.balancing import (
    StochasticSpecialisationSampler,
    kmeans_centroids,
    ot_similarity,
    sinkhorn,
    source_weights,
)


def cluster_cloud(centre: np.ndarray, n: int, seed: int, spread: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centre + spread * rng.normal(size=(n, centre.size))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sinkhorn_marginals_match():
    rng = np.random.default_rng(0)
    cost = rng.random((5, 7)) * 2
    a = rng.random(5)
    a /= a.sum()
    b = rng.random(7)
    b /= b.sum()
    plan = sinkhorn(cost, a, b, eps=0.05)
    assert plan.min() >= 0
    np.testing.assert_allclose(plan.sum(axis=1), a, atol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=0), b, atol=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        sinkhorn(cost, a * 2, b)


def test_sinkhorn_moves_mass_along_cheap_diagonal():
    cost = 1 - np.eye(3)
    plan = sinkhorn(cost, np.full(3, 1 / 3), np.full(3, 1 / 3), eps=0.01)
    np.testing.assert_allclose(plan, np.eye(3) / 3, atol=1e-6)


def test_ot_similarity_of_a_set_with_itself_beats_a_shifted_set():
    base = cluster_cloud(np.array([1.0, 0, 0, 0]), 200, seed=1)
    same = kmeans_centroids(base, 6, seed=0)
    shifted = kmeans_centroids(cluster_cloud(np.array([0.6, 0.8, 0, 0]), 200, seed=2), 6, seed=0)
    assert ot_similarity(same, same) > ot_similarity(same, shifted) + 0.1
    assert ot_similarity(same, same) > 0.9


def test_kmeans_centroids_are_seeded_and_normalised():
    x = cluster_cloud(np.array([1.0, 1.0, 0, 0]), 100, seed=3)
    c1, c2 = kmeans_centroids(x, 4, seed=5), kmeans_centroids(x, 4, seed=5)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    assert kmeans_centroids(x[:3], 8).shape == (3, 4)  # fewer points than k: the points themselves


def test_source_closest_to_the_benchmark_gets_the_largest_weight():
    e = np.eye(4)
    bench = {"b1": cluster_cloud(e[0], 150, seed=10), "b2": cluster_cloud(e[0] + 0.3 * e[1], 150, seed=11)}
    sources = {
        "near": cluster_cloud(e[0], 150, seed=12),
        "middle": cluster_cloud(e[0] + e[1], 150, seed=13),
        "far": cluster_cloud(e[2], 150, seed=14),
    }
    w = source_weights(sources, bench, temperature=0.1, k=4)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["near"] > w["middle"] > w["far"]


def test_sampler_batches_are_single_source_with_frequencies_matching_weights():
    sizes = {"a": 50, "b": 30, "c": 20}
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    sampler = StochasticSpecialisationSampler(sizes, weights, batch_size=8, num_batches=4000, seed=0)
    counts: Counter = Counter()
    for source, idx in sampler:
        counts[source] += 1
        assert idx.shape == (8,) and len(set(idx.tolist())) == 8  # no repeats within a batch
        assert idx.min() >= 0 and idx.max() < sizes[source]  # indices of that one source
    for s, w in weights.items():
        assert counts[s] / 4000 == pytest.approx(w, abs=0.03)
    assert [s for s, _ in sampler][:20] == [s for s, _ in sampler][:20]  # seeded
    with pytest.raises(ValueError, match="fewer rows"):
        StochasticSpecialisationSampler({"a": 3}, {"a": 1.0}, batch_size=8, num_batches=1)
