"""Dynamic hard-negative mining with an F1-optimal false-negative threshold (per data source).

Notation: Q queries, M catalogue targets, D embedding dim, N negatives per query, K candidates searched.

Per source, with the current model: score known positive pairs and random non-positive pairs, pick the threshold
that maximises F1 at separating them (`f1_optimal_threshold`); then, for every query, search the catalogue
(faiss exact inner product), drop its positives and every candidate scoring >= threshold (likely unlabelled
positives, i.e. false negatives), skip the `range_min` hardest survivors, and keep `num_negatives` of the rest
(`sampling_strategy` "top": the hardest, in order; "random": a seeded sample). `HardNegativeMiner` repeats this
every `refresh_every` trainer steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np


@dataclass
class MinedNegatives:
    """Hard negatives per query: catalogue indices (Q, N) int64 and their scores (Q, N); -1 / NaN pad rows that
    had fewer than N eligible candidates."""

    indices: np.ndarray
    scores: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(Q, N) bool: real negatives."""
        return self.indices >= 0


def f1_optimal_threshold(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of the rule "score >= threshold means positive" (exact sweep).

    Candidate thresholds are the distinct observed scores; TP(t) = #pos >= t, FP(t) = #neg >= t,
    F1 = 2 TP / (2 TP + FP + FN) with FN = #pos - TP. Ties in F1 go to the highest threshold (fewest candidates
    dropped as false negatives).
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if pos.size == 0:
        raise ValueError("f1_optimal_threshold needs at least one positive score")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)  # predicted positive = the first i + 1 scores
    fp = np.cumsum(1 - labels)
    last_of_value = np.append(scores[1:] != scores[:-1], True)  # a threshold includes all equal scores
    tp, fp, thresholds = tp[last_of_value], fp[last_of_value], scores[last_of_value]
    f1 = 2 * tp / (2 * tp + fp + (pos.size - tp))
    best = int(np.argmax(f1))  # first maximum = highest threshold among ties
    return float(thresholds[best]), float(f1[best])


def search_candidates(query_emb: np.ndarray, target_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (Q, D), (M, D) -> (scores (Q, k'), indices (Q, k')), k' = min(k, M), best first."""
    query = np.ascontiguousarray(query_emb, dtype=np.float32)
    target = np.ascontiguousarray(target_emb, dtype=np.float32)
    index = faiss.IndexFlatIP(target.shape[1])
    index.add(target)
    scores, indices = index.search(query, min(k, target.shape[0]))
    return scores, indices


def filter_candidates(
    scores: np.ndarray, indices: np.ndarray, positives: list[set[int]], threshold: float, range_min: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: drop its positives, faiss padding (-1) and candidates scoring >= threshold, then the
    `range_min` hardest survivors. Returns per query (indices, scores) of the eligible negatives, best first."""
    out = []
    for q in range(indices.shape[0]):
        idx, sc = indices[q], scores[q]
        pos = positives[q]
        keep = (idx >= 0) & (sc < threshold) & np.array([int(i) not in pos for i in idx], dtype=bool)
        out.append((idx[keep][range_min:], sc[keep][range_min:]))
    return out


def sample_negatives(
    eligible: list[tuple[np.ndarray, np.ndarray]],
    num_negatives: int,
    sampling_strategy: Literal["top", "random"],
    rng: np.random.Generator,
) -> MinedNegatives:
    """Keep `num_negatives` per query: the hardest ("top") or a random subset kept in score order ("random")."""
    q = len(eligible)
    indices = np.full((q, num_negatives), -1, dtype=np.int64)
    scores = np.full((q, num_negatives), np.nan, dtype=np.float32)
    for i, (idx, sc) in enumerate(eligible):
        if sampling_strategy == "top":
            pick = np.arange(min(num_negatives, idx.size))
        elif sampling_strategy == "random":
            pick = np.sort(rng.choice(idx.size, size=min(num_negatives, idx.size), replace=False))
        else:
            raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
        indices[i, : pick.size] = idx[pick]
        scores[i, : pick.size] = sc[pick]
    return MinedNegatives(indices=indices, scores=scores)


def mine_hard_negatives(
    query_emb: np.ndarray,
    target_emb: np.ndarray,
    positives: list[set[int]],
    threshold: float,
    num_negatives: int = 4,
    range_min: int = 0,
    range_max: int = 100,
    sampling_strategy: Literal["top", "random"] = "top",
    seed: int = 0,
) -> MinedNegatives:
    """Hard negatives for each query from the catalogue `target_emb`.

    query_emb (Q, D) and target_emb (M, D) should be L2-normalised; positives[q] holds the catalogue indices of
    query q's known positives (include the query item itself for i2i). Only the `range_max` best-scoring
    candidates are considered; candidates scoring >= `threshold` are dropped as likely false negatives.
    """
    if len(positives) != len(query_emb):
        raise ValueError(f"{len(positives)} positive sets for {len(query_emb)} queries")
    scores, indices = search_candidates(query_emb, target_emb, range_max)
    eligible = filter_candidates(scores, indices, positives, threshold, range_min)
    return sample_negatives(eligible, num_negatives, sampling_strategy, np.random.default_rng(seed))


def positive_and_negative_scores(
    query_emb: np.ndarray, target_emb: np.ndarray, positives: list[set[int]], negatives_per_query: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every known positive pair and of `negatives_per_query` random non-positive targets per query."""
    rng = np.random.default_rng(seed)
    pos, neg = [], []
    m = target_emb.shape[0]
    for q, pos_set in enumerate(positives):
        for j in pos_set:
            pos.append(float(query_emb[q] @ target_emb[j]))
        drawn = rng.integers(0, m, size=negatives_per_query)
        neg.extend(float(query_emb[q] @ target_emb[j]) for j in drawn if int(j) not in pos_set)
    return np.asarray(pos), np.asarray(neg)


@dataclass
class SourceEmbeddings:
    """What the trainer's `embed_fn(source)` returns: current embeddings of one source's queries and catalogue."""

    query_emb: np.ndarray  # (Q, D) L2-normalised
    target_emb: np.ndarray  # (M, D) L2-normalised
    positives: list[set[int]]  # per query, catalogue indices of its positives


@dataclass
class HardNegativeMiner:
    """Per-source F1 thresholds and mined negatives, refreshed every `refresh_every` steps by the trainer."""

    sources: tuple[str, ...]  # data sources mined
    refresh_every: int = 500  # trainer steps between refreshes (the first call always refreshes)
    num_negatives: int = 4  # N per query
    range_min: int = 0  # hardest eligible candidates skipped
    range_max: int = 100  # candidates searched per query
    sampling_strategy: Literal["top", "random"] = "top"
    negatives_per_query: int = 8  # random negatives per query for the F1 threshold
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)  # source -> F1-optimal threshold
    f1: dict[str, float] = field(default_factory=dict)  # source -> F1 at that threshold
    negatives: dict[str, MinedNegatives] = field(default_factory=dict)  # source -> current negatives
    last_refresh: int | None = None  # step of the last refresh
    refreshes: int = 0

    def due(self, step: int) -> bool:
        return self.last_refresh is None or step - self.last_refresh >= self.refresh_every

    def refresh(self, step: int, embed_fn: Callable[[str], SourceEmbeddings]) -> None:
        """Re-embed every source with the current model, re-fit its threshold, re-mine its negatives."""
        for k, source in enumerate(self.sources):
            emb = embed_fn(source)
            seed = self.seed + 1000 * self.refreshes + k
            pos, neg = positive_and_negative_scores(
                emb.query_emb, emb.target_emb, emb.positives, self.negatives_per_query, seed
            )
            threshold, f1 = f1_optimal_threshold(pos, neg)
            self.thresholds[source], self.f1[source] = threshold, f1
            self.negatives[source] = mine_hard_negatives(
                emb.query_emb,
                emb.target_emb,
                emb.positives,
                threshold,
                self.num_negatives,
                self.range_min,
                self.range_max,
                self.sampling_strategy,
                seed,
            )
        self.last_refresh = step
        self.refreshes += 1

    def maybe_refresh(self, step: int, embed_fn: Callable[[str], SourceEmbeddings]) -> bool:
        """Refresh when due (first call, then every `refresh_every` steps); True when it refreshed."""
        if not self.due(step):
            return False
        self.refresh(step, embed_fn)
        return True

    def negatives_for(self, source: str, query_indices: np.ndarray) -> MinedNegatives:
        """The mined negatives of some queries of `source` (rows of the last refresh's query order)."""
        mined = self.negatives[source]
        return MinedNegatives(mined.indices[query_indices], mined.scores[query_indices])
