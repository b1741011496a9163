"""Dynamic hard-negative mining with an F1-optimal false-negative threshold (per data source).

Notation: Q queries, M catalogue targets, D embedding dim, N negatives per query, K candidates searched, P pool size.

Per source, with the current model: score known positive pairs and random non-positive pairs, pick the threshold
that maximises F1 at separating them (`f1_optimal_threshold`); then, for every query, search the catalogue
(faiss exact inner product), drop its positives and every candidate scoring >= threshold (likely unlabelled
positives, i.e. false negatives), skip the `range_min` hardest survivors, and keep `num_negatives` of the rest
(`sampling_strategy` "top": the hardest, in order; "random": a seeded sample). `HardNegativeMiner` repeats this
every `refresh_every` trainer steps.

A refresh's cost is the embedding of what it searches and scores. Two things bound it (`HardNegativeMiner.refresh`):

- rows: the trainer passes the rows its seeded sampler draws before the next refresh; only those are searched and
  keep negatives (the others come back as padding). With the whole catalogue this is exact: the threshold is still
  fitted on every row, so a drawn row gets exactly the negatives of a refresh over all rows.
- `catalogue_pool` P > 0 (P < M): each refresh searches a seeded uniform sample of P catalogue items instead of the
  whole catalogue (a new sample each refresh), and fits the threshold on the drawn rows only (their positives against
  random pool items). The refresh then embeds O(P + rows drawn + their positives) items instead of O(M + Q). The
  trade: negatives are the hardest within the pool, not within the catalogue (with P = M / 5 a query's k-th hardest
  pool item is roughly its 5k-th hardest catalogue item), and the threshold comes from fewer pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    rng: np.random.Generator | Sequence[np.random.Generator],
) -> MinedNegatives:
    """Keep `num_negatives` per query: the hardest ("top") or a random subset kept in score order ("random").
    `rng`: one generator for every query in turn, or one per query."""
    q = len(eligible)
    indices = np.full((q, num_negatives), -1, dtype=np.int64)
    scores = np.full((q, num_negatives), np.nan, dtype=np.float32)
    for i, (idx, sc) in enumerate(eligible):
        if sampling_strategy == "top":
            pick = np.arange(min(num_negatives, idx.size))
        elif sampling_strategy == "random":
            g = rng if isinstance(rng, np.random.Generator) else rng[i]
            pick = np.sort(g.choice(idx.size, size=min(num_negatives, idx.size), replace=False))
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
    query_emb: np.ndarray,
    target_emb: np.ndarray,
    positives: list[set[int]],
    negatives_per_query: int,
    seed: int,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every known positive pair and of `negatives_per_query` random non-positive targets per query.

    Positives index rows of `target_emb`; the random targets are drawn uniformly from the rows `candidates`
    (default: every row)."""
    rng = np.random.default_rng(seed)
    pos, neg = [], []
    m = target_emb.shape[0] if candidates is None else len(candidates)
    for q, pos_set in enumerate(positives):
        for j in pos_set:
            pos.append(float(query_emb[q] @ target_emb[j]))
        drawn = rng.integers(0, m, size=negatives_per_query)
        if candidates is not None:
            drawn = candidates[drawn]
        neg.extend(float(query_emb[q] @ target_emb[j]) for j in drawn if int(j) not in pos_set)
    return np.asarray(pos), np.asarray(neg)


@dataclass
class MiningSource:
    """One source as the miner sees it: every row's positives and the current model's embeddings on demand."""

    positives: list[set[int]]  # per query row, catalogue indices of its positives (the query item itself for i2i)
    num_items: int  # M, the catalogue size
    embed_queries: Callable[[np.ndarray], np.ndarray]  # query rows -> (n, D) L2-normalised
    embed_items: Callable[[np.ndarray], np.ndarray]  # catalogue indices -> (n, D) L2-normalised


@dataclass
class SourceEmbeddings:
    """Already computed embeddings of one source's queries and of the whole catalogue (small catalogues, tests)."""

    query_emb: np.ndarray  # (Q, D) L2-normalised
    target_emb: np.ndarray  # (M, D) L2-normalised
    positives: list[set[int]]  # per query, catalogue indices of its positives

    def mining_source(self) -> MiningSource:
        return MiningSource(
            self.positives, len(self.target_emb), lambda rows: self.query_emb[rows], lambda idx: self.target_emb[idx]
        )


_POOL_SALT = 0x504F4F4C  # keeps the pool's random stream apart from the threshold's and the sampling's


@dataclass
class HardNegativeMiner:
    """Per-source F1 thresholds and mined negatives, refreshed every `refresh_every` steps by the trainer.

    `negatives[source]` holds one row per query row of the source (-1 / NaN for rows the last refresh did not mine),
    so `negatives_for` takes the source's own row indices and checkpoints keep the same shape as the source."""

    sources: tuple[str, ...]  # data sources mined
    refresh_every: int = 500  # trainer steps between refreshes (the first call always refreshes)
    num_negatives: int = 4  # N per query
    range_min: int = 0  # hardest eligible candidates skipped
    range_max: int = 100  # candidates searched per query
    sampling_strategy: Literal["top", "random"] = "top"
    negatives_per_query: int = 8  # random negatives per query for the F1 threshold
    catalogue_pool: int = 0  # 0 (or >= M): search the whole catalogue; P: a seeded sample of P items per refresh
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)  # source -> F1-optimal threshold
    f1: dict[str, float] = field(default_factory=dict)  # source -> F1 at that threshold
    negatives: dict[str, MinedNegatives] = field(default_factory=dict)  # source -> current negatives
    last_refresh: int | None = None  # step of the last refresh
    refreshes: int = 0

    def due(self, step: int) -> bool:
        return self.last_refresh is None or step - self.last_refresh >= self.refresh_every

    def pool(self, refresh: int, num_items: int) -> np.ndarray | None:
        """The sorted catalogue indices refresh number `refresh` searches: a uniform sample of `catalogue_pool` items
        seeded by (seed, refresh); None when it searches the whole catalogue."""
        if self.catalogue_pool <= 0 or self.catalogue_pool >= num_items:
            return None
        rng = np.random.default_rng([self.seed, refresh, _POOL_SALT])
        return np.sort(rng.choice(num_items, size=self.catalogue_pool, replace=False)).astype(np.int64)

    def refresh(
        self,
        step: int,
        source_fn: Callable[[str], MiningSource | SourceEmbeddings],
        rows: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Re-embed every source with the current model, re-fit its threshold, re-mine its negatives.

        `rows[source]`: the query rows to mine (those drawn before the next refresh); default every row. A source
        with no rows keeps no negatives and its previous threshold, and is not embedded."""
        pool = None
        for k, source in enumerate(self.sources):
            src = source_fn(source)
            if isinstance(src, SourceEmbeddings):
                src = src.mining_source()
            if k == 0:
                pool = self.pool(self.refreshes, src.num_items)
            n_rows = len(src.positives)
            mine = np.arange(n_rows) if rows is None else np.unique(np.asarray(rows[source], dtype=np.int64))
            out = MinedNegatives(
                np.full((n_rows, self.num_negatives), -1, dtype=np.int64),
                np.full((n_rows, self.num_negatives), np.nan, dtype=np.float32),
            )
            self.negatives[source] = out
            if mine.size == 0:
                continue
            seed = self.seed + 1000 * self.refreshes + k
            if pool is None:  # the whole catalogue: the threshold of every row, as a full refresh fits it
                fit = np.arange(n_rows)
                items = np.arange(src.num_items)
            else:  # the pool: the drawn rows' positives against random pool items
                fit = mine
                pos_items = [j for r in fit for j in src.positives[int(r)]]
                items = np.union1d(pool, np.asarray(pos_items, dtype=np.int64))
            item_emb = src.embed_items(items)  # (len(items), D), row i = catalogue item items[i]
            query_emb = src.embed_queries(fit)  # (len(fit), D)
            if pool is None:
                fit_pos, cand = src.positives, None
            else:  # positives as rows of item_emb
                local = {int(j): i for i, j in enumerate(items.tolist())}
                fit_pos = [{local[j] for j in src.positives[int(r)]} for r in fit]
                cand = np.searchsorted(items, pool)
            pos, neg = positive_and_negative_scores(query_emb, item_emb, fit_pos, self.negatives_per_query, seed, cand)
            threshold, f1 = f1_optimal_threshold(pos, neg)
            self.thresholds[source], self.f1[source] = threshold, f1
            at = np.searchsorted(fit, mine)  # mine is a subset of fit
            searched = item_emb if cand is None else item_emb[cand]
            scores, idx = search_candidates(query_emb[at], searched, self.range_max)
            idx = np.where(idx >= 0, (items if cand is None else pool)[np.maximum(idx, 0)], -1)
            eligible = filter_candidates(scores, idx, [src.positives[int(r)] for r in mine], threshold, self.range_min)
            # one generator per row: a row's sample does not depend on which other rows are mined
            rngs = [np.random.default_rng([seed, int(r)]) for r in mine] if self.sampling_strategy == "random" else []
            mined = sample_negatives(eligible, self.num_negatives, self.sampling_strategy, rngs)
            out.indices[mine], out.scores[mine] = mined.indices, mined.scores
        self.last_refresh = step
        self.refreshes += 1

    def maybe_refresh(
        self,
        step: int,
        source_fn: Callable[[str], MiningSource | SourceEmbeddings],
        rows: dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]] | None = None,
    ) -> bool:
        """Refresh when due (first call, then every `refresh_every` steps); True when it refreshed. `rows` as for
        `refresh`, or a function computing them (called only when due)."""
        if not self.due(step):
            return False
        self.refresh(step, source_fn, rows() if callable(rows) else rows)
        return True

    def negatives_for(self, source: str, query_indices: np.ndarray) -> MinedNegatives:
        """The mined negatives of some query rows of `source` (padding for rows the last refresh did not mine)."""
        mined = self.negatives[source]
        return MinedNegatives(mined.indices[query_indices], mined.scores[query_indices])
