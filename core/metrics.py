"""Offline ranking and retrieval metrics with pinned definitions (vectorised numpy, float64).

Notation: y_i in {0, 1} is the label of impression i, s_i its score, p_i its predicted probability;
P and N are the numbers of positives and negatives; g is a group (a user).

Ranking
- ``auc``: ROC AUC = P(s+ > s-) + 1/2 P(s+ = s-) over all (positive, negative) pairs, i.e. the Mann-Whitney
  statistic (sum of the positives' average ranks - P (P + 1) / 2) / (P N), ties getting the average of the
  ranks they span. Raises ValueError when only one class is present.
- ``gauc``: sum_g w_g AUC_g / sum_g w_g over the groups that have both classes; groups with a single label are
  skipped (and counted). Weighting "impressions": w_g = number of impressions of g; "positives": w_g = number
  of positives of g. Raises ValueError when no group has both classes.
- ``logloss``: mean over impressions of -(y ln p + (1 - y) ln(1 - p)), p clipped to [eps, 1 - eps]; natural log.
- ``normalized_entropy``: NE = logloss / H(b), where b = mean(y) is the base rate of the same impressions and
  H(b) = -(b ln b + (1 - b) ln(1 - b)) is the logloss of always predicting b (He et al. 2014, "Practical
  Lessons from Predicting Clicks on Ads at Facebook"). NE < 1 beats the base rate; a constant prediction b
  gives NE = 1. Raises ValueError when b is 0 or 1.
- ``calibration``: buckets over p, bucket i holding edges[i] <= p < edges[i + 1] (the last one also holds
  p = edges[-1]). "uniform": edges = linspace(0, 1, n_buckets + 1); "quantile": edges = the empirical
  quantiles of p at linspace(0, 1, n_buckets + 1) (linear interpolation), so buckets hold about equal counts;
  with heavy ties some quantile buckets are empty. Empty buckets are left out of the table. Per bucket: mean p,
  observed rate mean(y) and count. The overall calibration ratio is sum(p) / sum(y) (1 is calibrated, > 1
  over-predicts; NaN when there is no positive). ECE = sum_b count_b |mean p_b - rate_b| / n.

Retrieval (per query q: a ranked list of ids and a set R_q of relevant ids, |R_q| >= 1)
- The top-k of a query is the first k positions of its list (a shorter list is not padded). An id repeated
  within them counts once, at its first position: later copies gain nothing but still take their slots.
- ``recall_at_k``: mean over queries of |top-k ∩ R_q| / |R_q|. With one relevant item per query (the SAIL
  paper's Recall@K: a hit when the ground-truth target is in the top K) this is the hit rate; with |R_q| > k it
  is at most k / |R_q| (not normalised by min(|R_q|, k)).
- ``hit_rate_at_k``: mean over queries of 1[|top-k ∩ R_q| >= 1].
- ``ndcg_at_k``: mean over queries of DCG / IDCG with binary gains and log2 discount:
  DCG = sum_{j=1..k} rel_j / log2(j + 1) (rel_j = 1 for the first occurrence of a relevant id at position j),
  IDCG = sum_{j=1..min(|R_q|, k)} 1 / log2(j + 1).
Queries with an empty relevant set raise ValueError (filter them before calling). Padding ids (e.g. faiss's
-1) are ordinary ids here: they never match unless -1 is listed as relevant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

GAUCWeighting = Literal["impressions", "positives"]
CalibrationStrategy = Literal["quantile", "uniform"]


# ----------------------------------------------------------------------------------------------- validation


def _binary_labels(labels: np.ndarray | Sequence[float]) -> np.ndarray:
    """Labels as a 1-D float64 array of 0/1; raises ValueError otherwise."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels are empty")
    y = y.astype(np.float64)
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("labels must be 0/1 (or bool)")
    return y


def _float_array(values: np.ndarray | Sequence[float], n: int, name: str) -> np.ndarray:
    """A 1-D finite float64 array of length n; raises ValueError otherwise."""
    x = np.asarray(values, dtype=np.float64)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like labels, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _probabilities(probs: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    p = _float_array(probs, n, "probs")
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("probs must lie in [0, 1]")
    return p


# ------------------------------------------------------------------------------------------------------ AUC


def _tie_blocks(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask, True where a new block of equal values starts in an already sorted array."""
    new = np.empty(sorted_keys.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    return new


def _sorted_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order of x, start of every tie block in sorted order and each block's average 1-based rank."""
    order = np.argsort(x)  # unstable is fine: tied values get the same average rank
    starts = np.flatnonzero(_tie_blocks(x[order]))
    ends = np.append(starts[1:], x.shape[0])  # exclusive
    return order, starts, (starts + ends + 1) / 2.0  # mean of ranks start + 1 .. end


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, ties getting the mean of the ranks they span (scipy's rankdata 'average')."""
    x = np.asarray(x)
    order, starts, block_rank = _sorted_blocks(x)
    sizes = np.diff(np.append(starts, x.shape[0]))
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(block_rank, sizes)
    return ranks


def auc(labels: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float]) -> float:
    """ROC AUC with ties counted as 1/2 (Mann-Whitney U / (P N) with average ranks)."""
    y = _binary_labels(labels)
    s = _float_array(scores, y.shape[0], "scores")
    n_pos = float(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive" if n_neg == 0 else "negative"
        raise ValueError(f"AUC is undefined: only one class present (all {y.shape[0]} labels are {only})")
    order, starts, block_rank = _sorted_blocks(s)
    rank_sum = float(np.sum(block_rank * np.add.reduceat(y[order], starts)))  # sum of the positives' average ranks
    return (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True)
class GroupedAUC:
    """Group-averaged AUC and how many groups entered it."""

    value: float  # weighted mean of per-group AUC over the groups used
    groups_used: int  # groups with both classes
    groups_skipped: int  # groups with a single label (AUC undefined)
    weighting: GAUCWeighting  # "impressions" or "positives"

    def __float__(self) -> float:
        return self.value


def per_group_auc(
    labels: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float], groups: np.ndarray | Sequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group, in one sort (no Python loop over groups).

    Returns (group_ids, auc, n_impressions, n_positives), one entry per distinct group in sorted order;
    auc is NaN for groups with a single label.
    """
    y = _binary_labels(labels)
    n = y.shape[0]
    s = _float_array(scores, n, "scores")
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) like labels, got {g.shape}")
    group_ids, code = np.unique(g, return_inverse=True)
    s_order, s_starts, _ = _sorted_blocks(s)
    dense = np.empty(n, dtype=np.int64)  # dense rank of each score
    dense[s_order] = np.repeat(np.arange(s_starts.shape[0]), np.diff(np.append(s_starts, n)))
    order = np.argsort(code.astype(np.int64) * s_starts.shape[0] + dense)  # by group, then score
    code_s, s_s, y_s = code[order], s[order], y[order]
    new_group = _tie_blocks(code_s)
    new_block = new_group | _tie_blocks(s_s)  # a tie block never crosses a group boundary
    block_starts = np.flatnonzero(new_block)
    block_ends = np.append(block_starts[1:], n)
    group_start = np.flatnonzero(new_group)
    block_group = code_s[block_starts]
    # average within-group rank of each block: mean of (start + 1 .. end) minus the group's start offset
    block_rank = (block_starts + block_ends + 1) / 2.0 - group_start[block_group]
    block_pos = np.add.reduceat(y_s, block_starts)
    n_groups = group_ids.shape[0]
    rank_sum = np.bincount(block_group, weights=block_rank * block_pos, minlength=n_groups)
    n_imp = np.bincount(code, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(code, weights=y, minlength=n_groups)
    n_neg = n_imp - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    values[(n_pos == 0) | (n_neg == 0)] = np.nan
    return group_ids, values, n_imp, n_pos


def gauc(
    labels: np.ndarray | Sequence[float],
    scores: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence,
    weighting: GAUCWeighting = "impressions",
) -> GroupedAUC:
    """Group AUC: per-group AUC averaged with weights = impressions or positives; single-label groups skipped."""
    if weighting not in ("impressions", "positives"):
        raise ValueError(f"weighting must be 'impressions' or 'positives', got {weighting!r}")
    _, values, n_imp, n_pos = per_group_auc(labels, scores, groups)
    used = ~np.isnan(values)
    n_used = int(used.sum())
    if n_used == 0:
        raise ValueError(f"GAUC is undefined: none of the {values.shape[0]} groups has both classes")
    w = (n_imp if weighting == "impressions" else n_pos)[used]
    value = float(np.sum(w * values[used]) / w.sum())
    return GroupedAUC(
        value=value, groups_used=n_used, groups_skipped=int(values.shape[0] - n_used), weighting=weighting
    )


def gauc_report(
    labels: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float], groups: np.ndarray | Sequence
) -> dict[str, GroupedAUC]:
    """GAUC under both weightings, keyed by weighting name."""
    return {w: gauc(labels, scores, groups, w) for w in ("impressions", "positives")}


# ---------------------------------------------------------------------------------------- logloss, NE, calib


def logloss(labels: np.ndarray | Sequence[float], probs: np.ndarray | Sequence[float], eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to [eps, 1 - eps]."""
    y = _binary_labels(labels)
    p = np.clip(_probabilities(probs, y.shape[0]), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def base_rate_entropy(labels: np.ndarray | Sequence[float]) -> float:
    """H(b) = -(b ln b + (1 - b) ln(1 - b)) for the base rate b = mean(labels); ValueError if b is 0 or 1."""
    y = _binary_labels(labels)
    b = float(y.mean())
    if b in (0.0, 1.0):
        raise ValueError(f"normalized entropy is undefined: the base rate is {b:g} (a single class)")
    return -(b * np.log(b) + (1.0 - b) * np.log1p(-b))


def normalized_entropy(
    labels: np.ndarray | Sequence[float], probs: np.ndarray | Sequence[float], eps: float = 1e-15
) -> float:
    """Facebook NE: logloss / entropy of the base rate of the same labels (1 = as good as predicting the rate)."""
    return logloss(labels, probs, eps) / base_rate_entropy(labels)


@dataclass(frozen=True, eq=False)
class CalibrationTable:
    """Reliability table over probability buckets (non-empty buckets only) and overall calibration."""

    bucket: np.ndarray  # int64 bucket index in 0 .. n_buckets - 1 (gaps where a bucket is empty)
    lower: np.ndarray  # bucket's lower edge (inclusive)
    upper: np.ndarray  # bucket's upper edge (exclusive, inclusive for the last bucket)
    mean_predicted: np.ndarray  # mean p in the bucket
    observed_rate: np.ndarray  # mean y in the bucket
    count: np.ndarray  # int64 impressions in the bucket
    ratio: float  # sum(p) / sum(y); NaN when sum(y) == 0
    ece: float  # count-weighted mean |mean_predicted - observed_rate|
    strategy: CalibrationStrategy

    def to_rows(self) -> list[dict[str, float | int]]:
        """One dict per bucket, for JSON reports."""
        return [
            {
                "bucket": int(b),
                "lower": float(lo),
                "upper": float(hi),
                "mean_predicted": float(mp),
                "observed_rate": float(r),
                "count": int(c),
            }
            for b, lo, hi, mp, r, c in zip(
                self.bucket, self.lower, self.upper, self.mean_predicted, self.observed_rate, self.count, strict=True
            )
        ]


def calibration(
    labels: np.ndarray | Sequence[float],
    probs: np.ndarray | Sequence[float],
    n_buckets: int = 10,
    strategy: CalibrationStrategy = "quantile",
) -> CalibrationTable:
    """Bucketed reliability table plus the overall ratio sum(p) / sum(y) (see the module docstring)."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    y = _binary_labels(labels)
    p = _probabilities(probs, y.shape[0])
    cuts = np.linspace(0.0, 1.0, n_buckets + 1)
    if strategy == "uniform":
        edges = cuts
    elif strategy == "quantile":
        edges = np.quantile(p, cuts)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    bucket_of = np.searchsorted(edges[1:-1], p, side="right")  # edges[i] <= p < edges[i + 1]
    count = np.bincount(bucket_of, minlength=n_buckets)
    sum_p = np.bincount(bucket_of, weights=p, minlength=n_buckets)
    sum_y = np.bincount(bucket_of, weights=y, minlength=n_buckets)
    keep = np.flatnonzero(count)
    c = count[keep].astype(np.float64)
    mean_p, rate = sum_p[keep] / c, sum_y[keep] / c
    total_y = float(y.sum())
    return CalibrationTable(
        bucket=keep.astype(np.int64),
        lower=edges[keep],
        upper=edges[keep + 1],
        mean_predicted=mean_p,
        observed_rate=rate,
        count=count[keep].astype(np.int64),
        ratio=float(p.sum() / total_y) if total_y > 0 else float("nan"),
        ece=float(np.sum(c * np.abs(mean_p - rate)) / y.shape[0]),
        strategy=strategy,
    )


# ------------------------------------------------------------------------------------------------ retrieval


def retrieval_hits(
    retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix of the top-k: hits[q, j] = position j of query q holds the first occurrence of a relevant id.

    retrieved: a 2-D array (queries x ranked ids) or a list of ranked id lists (ragged allowed).
    relevant: one iterable of relevant ids per query (duplicates ignored; must be non-empty).
    Returns (hits (Q, k) bool, n_relevant (Q,) int64).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_q = len(relevant)
    if len(retrieved) != n_q:
        raise ValueError(f"retrieved has {len(retrieved)} queries but relevant has {n_q}")
    if n_q == 0:
        raise ValueError("no queries")
    rel_sets = [set(r) for r in relevant]
    n_rel = np.fromiter((len(r) for r in rel_sets), dtype=np.int64, count=n_q)
    if np.any(n_rel == 0):
        bad = np.flatnonzero(n_rel == 0)
        raise ValueError(f"{bad.size} queries have no relevant item (first: query {int(bad[0])}); filter them out")
    rel_flat = np.asarray([x for r in rel_sets for x in r])

    if isinstance(retrieved, np.ndarray) and retrieved.ndim == 2:
        top = retrieved[:, :k]
        valid = np.ones(top.shape, dtype=bool)
    else:
        rows = [list(r)[:k] for r in retrieved]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=n_q)
        flat = np.asarray([x for r in rows for x in r])
        valid = np.arange(k) < lengths[:, None]
        top = np.empty((n_q, k), dtype=flat.dtype if flat.size else rel_flat.dtype)
        top[valid] = flat
        top[~valid] = rel_flat[0]  # padding: any value, masked out by `valid`
    if top.shape[1] < k:  # a 2-D array narrower than k: pad with masked slots
        pad = np.full((n_q, k - top.shape[1]), rel_flat[0], dtype=np.result_type(top, rel_flat))
        top = np.concatenate([top.astype(pad.dtype), pad], axis=1)
        valid = np.concatenate([valid, np.zeros(pad.shape, dtype=bool)], axis=1)

    # first occurrence within each row (padding sits after every real entry, so it never hides one)
    order = np.argsort(top, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(top, order, axis=1)
    first_sorted = np.ones(top.shape, dtype=bool)
    first_sorted[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)

    # membership of (query, id) pairs, via one shared integer code per id
    _, codes = np.unique(np.concatenate([top.ravel(), rel_flat]), return_inverse=True)
    n_codes = int(codes.max()) + 1
    top_keys = np.arange(n_q, dtype=np.int64)[:, None] * n_codes + codes[: top.size].reshape(top.shape)
    rel_keys = np.repeat(np.arange(n_q, dtype=np.int64), n_rel) * n_codes + codes[top.size :]
    hits = np.isin(top_keys, rel_keys) & first & valid
    return hits, n_rel


def recall_at_k_per_query(
    retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int
) -> np.ndarray:
    """|top-k ∩ relevant| / |relevant| for every query."""
    hits, n_rel = retrieval_hits(retrieved, relevant, k)
    return hits.sum(axis=1) / n_rel


def recall_at_k(retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int) -> float:
    """Mean over queries of |top-k ∩ relevant| / |relevant|."""
    return float(recall_at_k_per_query(retrieved, relevant, k).mean())


def hit_rate_at_k(retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int) -> float:
    """Share of queries with at least one relevant id in the top-k."""
    hits, _ = retrieval_hits(retrieved, relevant, k)
    return float(hits.any(axis=1).mean())


def ndcg_at_k_per_query(retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int) -> np.ndarray:
    """Binary-gain, log2-discount NDCG@k of every query, ideal DCG from min(|relevant|, k) hits."""
    hits, n_rel = retrieval_hits(retrieved, relevant, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    return np.sum(hits * discount, axis=1) / ideal


def ndcg_at_k(retrieved: np.ndarray | Sequence[Sequence], relevant: Sequence[Iterable], k: int) -> float:
    """Mean over queries of NDCG@k (binary gains, log2 discount)."""
    return float(ndcg_at_k_per_query(retrieved, relevant, k).mean())
