"""Adaptive multi-source data balancing: OT similarity of sources to benchmarks -> sampling weights, and a
stochastic-specialisation sampler (each batch comes from ONE source, drawn by those weights).

Notation: n / m points or centroids, k centroids per set, D embedding dim.

Recipe: embed a sample of every training source and every evaluation benchmark with an early model;
k-means each (`kmeans_centroids`); score each (source, benchmark) pair by entropic optimal transport between the
two centroid sets with cosine cost (`ot_similarity` = 1 - transport cost); average over benchmarks; softmax with a
temperature over sources (`source_weights`).
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans_centroids(emb: np.ndarray, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """(n, D) embeddings -> (min(k, n), D) L2-normalised k-means centroids (spherical faiss.Kmeans, seeded)."""
    x = np.ascontiguousarray(_normalize(np.asarray(emb, dtype=np.float32)))
    k = min(k, x.shape[0])
    if k == x.shape[0]:
        return x.copy()
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return _normalize(km.centroids.copy())


def sinkhorn(
    cost: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float = 0.05, n_iter: int = 2000, tol: float = 1e-10
) -> np.ndarray:
    """Entropic OT plan (n, m) between marginals a (n,) and b (m,) (each summing to 1) for `cost` (n, m).

    Log-domain Sinkhorn iterations (stable for small eps), stopped once the row marginals are within `tol`
    (the column marginals are exact after each update).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.isclose(a.sum(), 1.0) and np.isclose(b.sum(), 1.0)):
        raise ValueError("marginals a and b must each sum to 1")
    log_k = -np.asarray(cost, dtype=np.float64) / eps  # (n, m)
    log_a, log_b = np.log(a), np.log(b)
    f, g = np.zeros_like(a), np.zeros_like(b)
    for it in range(n_iter):
        f = log_a - _logsumexp(log_k + g[None, :], axis=1)
        g = log_b - _logsumexp(log_k + f[:, None], axis=0)
        if it % 10 == 9 and np.abs(np.exp(f[:, None] + log_k + g[None, :]).sum(axis=1) - a).max() < tol:
            break
    return np.exp(f[:, None] + log_k + g[None, :])


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def ot_similarity(centroids_a: np.ndarray, centroids_b: np.ndarray, eps: float = 0.05, n_iter: int = 2000) -> float:
    """1 - OT cost between two centroid sets (uniform weights), cost = 1 - cosine. In [-1, 1]; 1 for identical
    sets of one point."""
    ca, cb = _normalize(np.asarray(centroids_a, np.float64)), _normalize(np.asarray(centroids_b, np.float64))
    cost = 1.0 - ca @ cb.T  # (n, m) in [0, 2]
    a = np.full(ca.shape[0], 1.0 / ca.shape[0])
    b = np.full(cb.shape[0], 1.0 / cb.shape[0])
    plan = sinkhorn(cost, a, b, eps, n_iter)
    return float(1.0 - (plan * cost).sum())


def source_weights(
    source_embs: dict[str, np.ndarray],
    benchmark_embs: dict[str, np.ndarray],
    temperature: float = 0.1,
    k: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Sampling weight per source: softmax over sources of (mean over benchmarks of OT similarity) / temperature."""
    if not source_embs or not benchmark_embs:
        raise ValueError("need at least one source and one benchmark")
    bench = [kmeans_centroids(e, k, seed) for e in benchmark_embs.values()]
    names = list(source_embs)
    sims = np.array(
        [np.mean([ot_similarity(kmeans_centroids(source_embs[s], k, seed), c) for c in bench]) for s in names]
    )
    logits = sims / temperature
    w = np.exp(logits - logits.max())
    w /= w.sum()
    return {s: float(x) for s, x in zip(names, w, strict=True)}


class StochasticSpecialisationSampler:
    """Yields (source, indices) batches: each batch draws ONE source by `weights`, then `batch_size` indices of that
    source without replacement (a per-source shuffled order, reshuffled when used up). Seeded, `num_batches` long.
    """

    def __init__(
        self,
        source_sizes: dict[str, int],
        weights: dict[str, float],
        batch_size: int,
        num_batches: int,
        seed: int = 0,
    ) -> None:
        if set(source_sizes) != set(weights):
            raise ValueError(f"sources differ: sizes {sorted(source_sizes)}, weights {sorted(weights)}")
        small = [s for s, n in source_sizes.items() if n < batch_size and weights[s] > 0]
        if small:
            raise ValueError(f"sources {small} have fewer rows than batch_size {batch_size}")
        self.sources = list(source_sizes)
        self.sizes = source_sizes
        p = np.array([weights[s] for s in self.sources], dtype=np.float64)
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        self.probs = p / p.sum()
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        orders = {s: rng.permutation(n) for s, n in self.sizes.items()}
        cursors = dict.fromkeys(self.sources, 0)
        for _ in range(self.num_batches):
            source = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
            if cursors[source] + self.batch_size > self.sizes[source]:  # drop the short tail, reshuffle
                orders[source], cursors[source] = rng.permutation(self.sizes[source]), 0
            start = cursors[source]
            cursors[source] += self.batch_size
            yield source, orders[source][start : start + self.batch_size]
