"""Confidence intervals and significance tests for offline metrics.

Definitions (pinned)
- ``cluster_bootstrap``: the unit of resampling is a cluster (a user), not a row, because one user's impressions
  are correlated. One resample draws the C clusters' multiplicities (m_1 .. m_C) ~ Multinomial(C, 1/C each),
  exactly C clusters with replacement, and repeats every row of cluster c m_c times; the metric is computed on
  the resampled rows. The interval is the percentile interval: the alpha/2 and 1 - alpha/2 quantiles (numpy's
  linear interpolation) of the resampled metric; the estimate is the metric on the original rows.
  Resamples on which the metric raises ValueError (e.g. AUC with a single class drawn) are dropped and
  counted in ``n_failed``; if none succeeds a ValueError is raised. A cluster drawn twice keeps one id, so a
  GAUC grouped by the same ids merges its two copies into one group of twice the weight: the same value.
  Fast paths, equal draw for draw to materialising the rows: ``auc`` itself (data {"labels", "scores"}) is
  computed from row multiplicities over one sort (O(n) per resample); ``gauc_bootstrap`` / ``paired_gauc_diff``
  compute per-group AUCs once and reweight them by their cluster's multiplicity (O(groups) per resample;
  every group must lie inside one cluster, e.g. groups = clusters = users).
- ``paired_bootstrap_diff``: the difference d = metric(labels, scores_b) - metric(labels, scores_a) on the same
  impressions, both models evaluated on the same resamples. Interval as above. Two-sided p-value: if d > 0,
  p = 2 * share of resampled differences <= 0; if d < 0, p = 2 * share >= 0; if d == 0, p = 1; then capped at
  1 and floored at 1 / (number of resamples used).
- ``delong_test``: DeLong, DeLong & Clarke-Pearson (1988) test of AUC_b - AUC_a for two models scored on the
  same impressions, with the fast midrank algorithm of Sun & Xu (2014): structural components
  V10_i = (share of negatives below positive i, ties 1/2), V01_j = (share of positives above negative j, ties
  1/2); Var(AUC_b - AUC_a) = c' (S10 / P + S01 / N) c with c = (-1, 1) and S10, S01 the 2x2 sample
  covariances (ddof 1) of the components; z = (AUC_b - AUC_a) / sqrt(Var); p = 2 (1 - Phi(|z|)).
  Impressions are assumed independent (no clustering); z = 0 and p = 1 when the variance is 0.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from core.metrics import (
    GAUCWeighting,
    _binary_labels,
    _float_array,
    _sorted_blocks,
    auc,
    average_ranks,
    normalized_entropy,
    per_group_auc,
)

MetricFn = Callable[..., float]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval."""

    estimate: float  # the metric on the original data
    low: float  # alpha / 2 quantile of the resampled metric
    high: float  # 1 - alpha / 2 quantile
    level: float  # nominal coverage, 1 - alpha
    n_boot: int  # resamples used
    n_failed: int = 0  # resamples dropped because the metric raised ValueError


@dataclass(frozen=True)
class PairedDiff:
    """metric(b) - metric(a) on the same impressions, with its interval and two-sided bootstrap p-value."""

    metric_a: float
    metric_b: float
    diff: Interval  # of metric_b - metric_a
    p_value: float


@dataclass(frozen=True)
class DeLongResult:
    """DeLong test of AUC_b - AUC_a on the same impressions."""

    auc_a: float
    auc_b: float
    z: float  # (auc_b - auc_a) / standard error; > 0 when b ranks better
    p_value: float  # two-sided


def _cluster_codes(clusters: np.ndarray | Sequence, n: int) -> tuple[np.ndarray, int]:
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise ValueError(f"clusters must have shape ({n},) like the data, got {c.shape}")
    _, code = np.unique(c, return_inverse=True)
    return code, int(code.max()) + 1


class _PresortedAUC:
    """AUC of one resample from its rows' multiplicities, with the sort done once (the fast path for `auc`).

    Equal to auc() on the materialised rows: positives score the negatives below them in full and the tied
    ones by 1/2, with every row counted as often as its cluster was drawn.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray, code: np.ndarray) -> None:
        y = _binary_labels(labels)
        s = _float_array(scores, y.shape[0], "scores")
        order, self.starts, _ = _sorted_blocks(s)
        self.y_sorted = y[order]
        self.code_sorted = code[order]
        self.tied = self.starts.shape[0] < y.shape[0]  # without ties every block is one row: no per-block sums

    def __call__(self, multiplicity: np.ndarray) -> float:
        w = multiplicity[self.code_sorted].astype(np.float64)  # rows' multiplicities, in score order
        pos = w * self.y_sorted
        if self.tied:
            pos = np.add.reduceat(pos, self.starts)  # per tie block
            w = np.add.reduceat(w, self.starts)
        neg = w - pos
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            raise ValueError("AUC is undefined: only one class present in the resample")
        neg_below = np.cumsum(neg) - neg
        return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_pos * n_neg))


class _ClusterNE:
    """Normalised entropy of one resample from per-cluster sums (the fast path for `normalized_entropy`).

    NE = (sum of row log losses / rows) / H(positives / rows) is a ratio of sums, so a resample's NE follows from
    each cluster's row count, positives and summed log loss weighted by how often the cluster was drawn: equal to
    normalized_entropy() on the materialised rows up to summation order.
    """

    def __init__(self, labels: np.ndarray, probs: np.ndarray, code: np.ndarray, n_clusters: int) -> None:
        y = _binary_labels(labels)
        p = np.clip(_float_array(probs, y.shape[0], "probs"), 1e-15, 1.0 - 1e-15)
        row_loss = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
        self.rows = np.bincount(code, minlength=n_clusters).astype(np.float64)
        self.pos = np.bincount(code, weights=y, minlength=n_clusters)
        self.loss = np.bincount(code, weights=row_loss, minlength=n_clusters)

    def __call__(self, multiplicity: np.ndarray) -> float:
        m = multiplicity.astype(np.float64)
        rows = m @ self.rows
        b = (m @ self.pos) / rows
        if b <= 0.0 or b >= 1.0:
            raise ValueError(f"normalized entropy is undefined: the base rate is {b:g} (a single class)")
        return float((m @ self.loss) / rows / -(b * np.log(b) + (1.0 - b) * np.log1p(-b)))


def _draw_multiplicity(rng: np.random.Generator, n_clusters: int) -> np.ndarray:
    """How often each cluster is drawn when drawing n_clusters clusters with replacement."""
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters))


def _resample_indices(mult: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Row indices of one cluster resample: each row repeated by its cluster's multiplicity."""
    return np.repeat(np.arange(code.shape[0]), mult[code])


def _percentile_interval(estimate: float, stats: np.ndarray, alpha: float, n_failed: int) -> Interval:
    if stats.size == 0:
        raise ValueError(f"every bootstrap resample failed ({n_failed}); the metric is undefined on resamples")
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(estimate), float(low), float(high), 1.0 - alpha, int(stats.size), n_failed)


def _check_args(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _is_plain_auc(metric_fn: MetricFn, arrays: Mapping[str, np.ndarray]) -> bool:
    return metric_fn is auc and set(arrays) == {"labels", "scores"}


def _fast_metric(metric_fn: MetricFn, labels: np.ndarray, scores: np.ndarray, code: np.ndarray, n_clusters: int):
    """A resample-by-multiplicity evaluator for `auc` and `normalized_entropy` (None for other metrics)."""
    if metric_fn is auc:
        return _PresortedAUC(labels, scores, code)
    if metric_fn is normalized_entropy:
        return _ClusterNE(labels, scores, code, n_clusters)
    return None


def cluster_bootstrap(
    metric_fn: MetricFn,
    data: Mapping[str, np.ndarray],
    clusters: np.ndarray | Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Percentile interval of metric_fn(**data), resampling clusters (users) with replacement.

    metric_fn is called with the arrays of `data` as keyword arguments and must return a float (or an object
    with __float__, such as GroupedAUC); e.g. cluster_bootstrap(auc, {"labels": y, "scores": s}, user_ids).
    """
    _check_args(n_boot, alpha)
    arrays = {name: np.asarray(v) for name, v in data.items()}
    lengths = {a.shape[0] for a in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"data arrays differ in length: { {k: a.shape[0] for k, a in arrays.items()} }")
    code, n_clusters = _cluster_codes(clusters, lengths.pop())
    estimate = float(metric_fn(**arrays))
    rng = np.random.default_rng(seed)
    fast = None
    if _is_plain_auc(metric_fn, arrays):
        fast = _PresortedAUC(arrays["labels"], arrays["scores"], code)
    elif metric_fn is normalized_entropy and set(arrays) == {"labels", "probs"}:
        fast = _ClusterNE(arrays["labels"], arrays["probs"], code, n_clusters)

    def draw(mult: np.ndarray) -> float:
        if fast is not None:
            return fast(mult)
        idx = _resample_indices(mult, code)
        return float(metric_fn(**{name: a[idx] for name, a in arrays.items()}))

    stats = _draws(n_boot, rng, n_clusters, draw, threads=FAST_PATH_THREADS if fast is not None else 1)
    return _percentile_interval(estimate, stats, alpha, n_boot - stats.size)


def paired_bootstrap_diff(
    metric_fn: MetricFn,
    labels: np.ndarray | Sequence[float],
    scores_a: np.ndarray | Sequence[float],
    scores_b: np.ndarray | Sequence[float],
    clusters: np.ndarray | Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    extra: Mapping[str, np.ndarray] | None = None,
) -> PairedDiff:
    """metric(b) - metric(a) on the same impressions, with a cluster-bootstrap interval and two-sided p-value.

    metric_fn(labels, scores, **extra) -> float; `extra` arrays (e.g. {"groups": user_ids} for GAUC) are
    resampled along with the rows.
    """
    _check_args(n_boot, alpha)
    y = np.asarray(labels)
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    n = y.shape[0]
    if a.shape != (n,) or b.shape != (n,):
        raise ValueError(f"scores_a {a.shape} and scores_b {b.shape} must have shape ({n},) like labels")
    ex = {k: np.asarray(v) for k, v in (extra or {}).items()}
    for k, v in ex.items():
        if v.shape[0] != n:
            raise ValueError(f"extra array {k!r} has {v.shape[0]} rows, labels have {n}")
    code, n_clusters = _cluster_codes(clusters, n)
    metric_a = float(metric_fn(y, a, **ex))
    metric_b = float(metric_fn(y, b, **ex))
    rng = np.random.default_rng(seed)
    fast = None
    if not ex and metric_fn in (auc, normalized_entropy):
        fast = (_fast_metric(metric_fn, y, a, code, n_clusters), _fast_metric(metric_fn, y, b, code, n_clusters))

    def draw(mult: np.ndarray) -> float:
        if fast is not None:
            return fast[1](mult) - fast[0](mult)
        idx = _resample_indices(mult, code)
        y_r, ex_r = y[idx], {k: v[idx] for k, v in ex.items()}
        return float(metric_fn(y_r, b[idx], **ex_r)) - float(metric_fn(y_r, a[idx], **ex_r))

    diffs = _draws(n_boot, rng, n_clusters, draw, threads=FAST_PATH_THREADS if fast is not None else 1)
    return _paired_result(metric_a, metric_b, diffs, alpha, n_boot - diffs.size)


FAST_PATH_THREADS = min(4, os.cpu_count() or 1)
"""Threads that evaluate the resamples of the numpy fast paths (AUC, NE, slice gains: O(rows) each, GIL released)."""


def _draws(
    n_boot: int,
    rng: np.random.Generator,
    n_clusters: int,
    draw: Callable[[np.ndarray], float],
    threads: int = 1,
) -> np.ndarray:
    """draw(multiplicity) for `n_boot` cluster resamples, leaving out the draws that raised ValueError (a resample
    on which the metric is undefined, e.g. one class only); the caller reports n_boot - len as failed.

    The multiplicities are drawn from `rng` in order, a chunk at a time; with threads > 1 each chunk's draws are
    evaluated in parallel threads. The values, and their order, are the same for any number of threads.
    """

    def one(mult: np.ndarray) -> float | None:
        try:
            return draw(mult)
        except ValueError:
            return None

    values: list[float | None] = []
    chunk = 4 * max(1, threads)  # multiplicities held at once: chunk x n_clusters
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        for start in range(0, n_boot, chunk):
            mults = [_draw_multiplicity(rng, n_clusters) for _ in range(min(chunk, n_boot - start))]
            values.extend(pool.map(one, mults) if pool is not None else map(one, mults))
    return np.asarray([v for v in values if v is not None], dtype=np.float64)


def _paired_result(metric_a: float, metric_b: float, diffs: np.ndarray, alpha: float, n_failed: int) -> PairedDiff:
    """Interval of the resampled differences and the two-sided p-value (see the module docstring)."""
    estimate = metric_b - metric_a
    interval = _percentile_interval(estimate, diffs, alpha, n_failed)
    if estimate > 0:
        p = 2.0 * float(np.mean(diffs <= 0.0))
    elif estimate < 0:
        p = 2.0 * float(np.mean(diffs >= 0.0))
    else:
        p = 1.0
    p = min(1.0, max(p, 1.0 / diffs.size))
    return PairedDiff(metric_a=metric_a, metric_b=metric_b, diff=interval, p_value=p)


def slice_gain_difference(
    labels: np.ndarray | Sequence[float],
    scores_a: np.ndarray | Sequence[float],
    scores_b: np.ndarray | Sequence[float],
    in_slice: np.ndarray | Sequence[bool],
    clusters: np.ndarray | Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedDiff:
    """Is b's AUC gain over a larger inside a slice (e.g. cold-start items) than outside it?

    Returns PairedDiff with metric_a = the gain outside the slice, metric_b = the gain inside it, and the interval
    and two-sided p-value of gain_inside - gain_outside. Each resample draws clusters (users) once and evaluates
    all four AUCs on it, so the two gains keep their correlation.
    """
    _check_args(n_boot, alpha)
    y = np.asarray(labels)
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    m = np.asarray(in_slice, dtype=bool)
    n = y.shape[0]
    for name, arr in (("scores_a", a), ("scores_b", b), ("in_slice", m)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, labels have ({n},)")
    code, n_clusters = _cluster_codes(clusters, n)
    parts, gains = {}, {}
    for where, rows in (("in", m), ("out", ~m)):
        try:
            gains[where] = auc(y[rows], b[rows]) - auc(y[rows], a[rows])
        except ValueError as exc:
            raise ValueError(f"the gain {where}side the slice is undefined: {exc}") from None
        parts[where] = (_PresortedAUC(y[rows], a[rows], code[rows]), _PresortedAUC(y[rows], b[rows], code[rows]))

    def gain(where: str, mult: np.ndarray) -> float:
        fa, fb = parts[where]
        return fb(mult) - fa(mult)

    rng = np.random.default_rng(seed)

    def draw(mult: np.ndarray) -> float:
        return gain("in", mult) - gain("out", mult)

    diffs = _draws(n_boot, rng, n_clusters, draw, threads=FAST_PATH_THREADS)
    return _paired_result(gains["out"], gains["in"], diffs, alpha, n_boot - diffs.size)


# ------------------------------------------------------------------------------- GAUC: resampling groups' AUC


def _groups_in_clusters(
    labels: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence,
    clusters: np.ndarray | Sequence | None,
    weighting: GAUCWeighting,
    scores: list[np.ndarray | Sequence[float]],
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, int]:
    """Per-group AUC of each score vector, the weights and the cluster of the usable groups.

    Every group must lie inside one cluster (clusters default to the groups themselves).
    """
    if weighting not in ("impressions", "positives"):
        raise ValueError(f"weighting must be 'impressions' or 'positives', got {weighting!r}")
    per_group = [per_group_auc(labels, s, groups) for s in scores]
    _, values, n_imp, n_pos = per_group[0]
    used = ~np.isnan(values)
    if not used.any():
        raise ValueError(f"GAUC is undefined: none of the {values.shape[0]} groups has both classes")
    n = np.asarray(labels).shape[0]
    _, g_code = np.unique(np.asarray(groups), return_inverse=True)
    c_code, n_clusters = _cluster_codes(groups if clusters is None else clusters, n)
    cluster_of_group = np.full(values.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(cluster_of_group, g_code, c_code)
    if np.any(cluster_of_group[g_code] != c_code):
        raise ValueError("every group must lie inside one cluster (a group's rows span several clusters)")
    weights = (n_imp if weighting == "impressions" else n_pos)[used]
    return [pg[1][used] for pg in per_group], weights, cluster_of_group[used], n_clusters


def _weighted_mean_of_drawn(values: np.ndarray, weights: np.ndarray, drawn: np.ndarray) -> float:
    w = weights * drawn
    total = w.sum()
    if total == 0:
        raise ValueError("GAUC is undefined: no group with both classes in the resample")
    return float(np.sum(w * values) / total)


def gauc_bootstrap(
    labels: np.ndarray | Sequence[float],
    scores: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence,
    weighting: GAUCWeighting = "impressions",
    clusters: np.ndarray | Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Cluster-bootstrap interval of GAUC in O(groups) per resample (per-group AUCs computed once).

    Equal to cluster_bootstrap(partial(gauc, weighting=...), {labels, scores, groups}, clusters) draw for draw:
    a cluster drawn m times contributes each of its groups' AUC with m times its weight.
    """
    _check_args(n_boot, alpha)
    (values,), weights, cluster_of_group, n_clusters = _groups_in_clusters(
        labels, groups, clusters, weighting, [scores]
    )
    estimate = _weighted_mean_of_drawn(values, weights, np.ones_like(weights))
    rng = np.random.default_rng(seed)
    stats = _draws(
        n_boot, rng, n_clusters, lambda mult: _weighted_mean_of_drawn(values, weights, mult[cluster_of_group])
    )
    return _percentile_interval(estimate, stats, alpha, n_boot - stats.size)


def paired_gauc_diff(
    labels: np.ndarray | Sequence[float],
    scores_a: np.ndarray | Sequence[float],
    scores_b: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence,
    weighting: GAUCWeighting = "impressions",
    clusters: np.ndarray | Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedDiff:
    """GAUC(b) - GAUC(a) with the paired cluster bootstrap, in O(groups) per resample."""
    _check_args(n_boot, alpha)
    (values_a, values_b), weights, cluster_of_group, n_clusters = _groups_in_clusters(
        labels, groups, clusters, weighting, [scores_a, scores_b]
    )
    ones = np.ones_like(weights)
    metric_a = _weighted_mean_of_drawn(values_a, weights, ones)
    metric_b = _weighted_mean_of_drawn(values_b, weights, ones)
    rng = np.random.default_rng(seed)

    def draw(mult: np.ndarray) -> float:
        drawn = mult[cluster_of_group]
        return _weighted_mean_of_drawn(values_b, weights, drawn) - _weighted_mean_of_drawn(values_a, weights, drawn)

    diffs = _draws(n_boot, rng, n_clusters, draw)
    return _paired_result(metric_a, metric_b, diffs, alpha, n_boot - diffs.size)


def delong_components(
    labels: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float]
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and its DeLong structural components (V10 over positives, V01 over negatives) by midranks."""
    y = _binary_labels(labels)
    s = _float_array(scores, y.shape[0], "scores")
    pos = y == 1.0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("DeLong test is undefined: only one class present")
    r_all = average_ranks(s)
    r_pos = average_ranks(s[pos])
    r_neg = average_ranks(s[~pos])
    v10 = (r_all[pos] - r_pos) / n_neg  # negatives below each positive (ties 1/2), as a share
    v01 = 1.0 - (r_all[~pos] - r_neg) / n_pos  # positives above each negative (ties 1/2), as a share
    return float(v10.mean()), v10, v01


def delong_test(
    labels: np.ndarray | Sequence[float], scores_a: np.ndarray | Sequence[float], scores_b: np.ndarray | Sequence[float]
) -> DeLongResult:
    """DeLong test for AUC_b - AUC_a of two correlated models on the same impressions."""
    auc_a, v10_a, v01_a = delong_components(labels, scores_a)
    auc_b, v10_b, v01_b = delong_components(labels, scores_b)
    d10, d01 = v10_b - v10_a, v01_b - v01_a
    if min(d10.size, d01.size) < 2:
        raise ValueError("DeLong test needs at least two positives and two negatives")
    var = float(np.var(d10, ddof=1) / d10.size + np.var(d01, ddof=1) / d01.size)
    diff = auc_b - auc_a
    if not var > 0.0:
        return DeLongResult(auc_a, auc_b, 0.0, 1.0)
    z = diff / math.sqrt(var)
    return DeLongResult(auc_a, auc_b, float(z), math.erfc(abs(z) / math.sqrt(2.0)))


__all__ = [
    "DeLongResult",
    "Interval",
    "PairedDiff",
    "cluster_bootstrap",
    "delong_components",
    "delong_test",
    "gauc_bootstrap",
    "paired_bootstrap_diff",
    "paired_gauc_diff",
    "slice_gain_difference",
]


# ------------------------------------------------------------------------------------------------------------
# Ratio-of-sums means and two-sample lifts (A/B arms hold different users)
# ------------------------------------------------------------------------------------------------------------


def _resampled_ratio(num: np.ndarray, den: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """sum(m * num) / sum(m * den) for n_boot multinomial user multiplicities m (drawn in chunks)."""
    n = len(num)
    out = np.empty(n_boot)
    for lo in range(0, n_boot, 100):
        hi = min(lo + 100, n_boot)
        m = rng.multinomial(n, np.full(n, 1.0 / n), size=hi - lo).astype(np.float64)
        out[lo:hi] = (m * num).sum(axis=1) / np.maximum((m * den).sum(axis=1), 1e-300)
    return out


def _as_ratio_parts(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1-D arrays of one length, got {num.shape} and {den.shape}")
    if len(num) == 0:
        raise ValueError("no users to average over")
    if den.sum() <= 0:
        raise ValueError("the denominators sum to zero")
    return num, den


def mean_interval(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """Ratio-of-sums mean sum(num) / sum(den) over users (one entry per user), with a user bootstrap interval.

    E.g. LT7: num = a user's summed LT7 over their eligible days, den = their number of eligible days.
    """
    _check_args(n_boot, alpha)
    num, den = _as_ratio_parts(num, den)
    stats = _resampled_ratio(num, den, n_boot, np.random.default_rng(seed))
    return _percentile_interval(float(num.sum() / den.sum()), stats, alpha, 0)


def two_sample_lift(
    control: tuple[np.ndarray, np.ndarray],
    treatment: tuple[np.ndarray, np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Relative lift mean_t / mean_c - 1 of two ratio-of-sums means over disjoint user sets (A/B arms).

    Users are resampled with replacement within each arm independently (a stratified two-sample bootstrap);
    the interval is the percentile interval of the resampled lifts.
    """
    _check_args(n_boot, alpha)
    nc, dc = _as_ratio_parts(*control)
    nt, dt = _as_ratio_parts(*treatment)
    rng = np.random.default_rng(seed)
    mc = _resampled_ratio(nc, dc, n_boot, rng)
    mt = _resampled_ratio(nt, dt, n_boot, rng)
    base = nc.sum() / dc.sum()
    if base == 0:
        raise ValueError("the control mean is zero: a relative lift is undefined")
    ok = mc != 0
    estimate = (nt.sum() / dt.sum()) / base - 1.0
    return _percentile_interval(float(estimate), mt[ok] / mc[ok] - 1.0, alpha, int((~ok).sum()))
