"""The run report's figures: matplotlib (Agg canvas, no pyplot state), each returned as PNG bytes.

Every `draw_*` function takes the plain JSON sections of the run summary (see docs/REPORT.md) and draws one
figure; `plot_*` is the same figure as PNG bytes. Error bars are the sections' bootstrap intervals [low, high]
around the point estimate. The axes do not exaggerate small differences:
- bars start at zero (Recall@K, the A/B lifts);
- metrics that differ in the second decimal (AUC, GAUC) are points with their interval on an axis fitted to the
  intervals, whose label states the span it covers ("axis 0.70 to 0.75, not from 0");
- differences (treatment - control) are drawn around a zero line that is always inside the axis.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
SLICE_LABEL = {
    "all": "all items",
    "cold": "cold items (no train impression)",
    "new": "new items (created in the test window)",
}
METRIC_LABEL = {
    "auc": "AUC",
    "gauc_impressions": "GAUC (impression-weighted)",
    "gauc_positives": "GAUC (positive-weighted)",
    "ne": "NE",
    "lt7": "LT7",
    "lt14": "LT14",
    "dau_share": "DAU share",
    "clicks_per_active_day": "clicks / active day",
    "watch_s_per_active_day": "watch s / active day",
    "satisfaction": "satisfaction",
}


def variant_label(variant: str) -> str:
    """'control' stays; a treatment variant reads '+emb', '+sid', '+both'."""
    return variant if variant == "control" else f"+{variant}"


def comparison_label(comparison: str) -> str:
    """'both-control' -> '+both vs control'."""
    variant, sep, base = comparison.rpartition("-")
    return f"{variant_label(variant)} vs {base}" if sep else comparison


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else math.nan


def _yerr(cells: Sequence[dict[str, Any] | None], key: str = "value", scale: float = 1.0) -> np.ndarray:
    """(2, n) distances from the estimate down to `low` and up to `high` (never negative; NaN where absent)."""
    err = np.full((2, len(cells)), math.nan)
    for j, c in enumerate(cells):
        if c is None:
            continue
        v = _finite(c.get(key))
        err[0, j] = max(v - _finite(c.get("low")), 0.0) * scale
        err[1, j] = max(_finite(c.get("high")) - v, 0.0) * scale
    return err


def _set_group_ticks(ax: Axes, groups: Sequence[str]) -> None:
    x = np.arange(len(groups))
    ax.set_xticks(x, groups, rotation=20 if max((len(g) for g in groups), default=0) > 12 else 0, ha="right")


def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: dict[str, Sequence[dict[str, Any] | None]],
    key: str = "value",
    scale: float = 1.0,
) -> None:
    """One cluster of bars per group, one bar per series, each with its interval as an error bar; the value
    axis starts at zero."""
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for k, (name, cells) in enumerate(series.items()):
        values = [_finite(c.get(key)) * scale if c else math.nan for c in cells]
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(x + offset, values, width, label=name, yerr=_yerr(cells, key, scale), capsize=3)
    _set_group_ticks(ax, groups)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 0.0), max(hi, 0.0))
    ax.grid(axis="y", alpha=0.3)


def _grouped_points(
    ax: Axes,
    groups: Sequence[str],
    series: dict[str, Sequence[dict[str, Any] | None]],
    key: str = "value",
    scale: float = 1.0,
) -> list[float]:
    """One cluster per group, one point per series with its interval as an error bar. Returns every plotted
    estimate and interval end (to fit the axis to)."""
    x = np.arange(len(groups))
    step = 0.8 / max(len(series), 1)
    extent: list[float] = []
    for k, (name, cells) in enumerate(series.items()):
        values = [_finite(c.get(key)) * scale if c else math.nan for c in cells]
        offset = (k - (len(series) - 1) / 2) * step
        ax.errorbar(x + offset, values, yerr=_yerr(cells, key, scale), fmt="o", capsize=3, label=name)
        extent += values
        extent += [_finite(c.get(end)) * scale for c in cells if c for end in ("low", "high")]
    _set_group_ticks(ax, groups)
    ax.grid(axis="y", alpha=0.3)
    return extent


def _fit_axis(
    ax: Axes, extent: Sequence[float], axis: str = "y", include_zero: bool = False, pad: float = 0.08
) -> tuple[float, float] | None:
    """Fit the value axis to the finite numbers in `extent` (and to 0 when `include_zero`), padded and rounded
    outwards to a tenth of the span's order of magnitude. Returns the limits, None when nothing is finite."""
    vals = [v for v in extent if math.isfinite(v)] + ([0.0] if include_zero else [])
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1e-3))
    lo, hi = lo - pad * span, hi + pad * span
    step = 10.0 ** (math.floor(math.log10(hi - lo)) - 1)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
    return lo, hi


def describe_span(lo: float, hi: float) -> str:
    """What a value axis covers, in words: 'axis 0.70 to 0.75, not from 0' or 'axis -0.01 to 0.03'."""
    text = f"axis {lo + 0.0:.6g} to {hi + 0.0:.6g}"
    return text if lo <= 0.0 <= hi else f"{text}, not from 0"


def _zero_line(ax: Axes, axis: str = "y") -> None:
    """The reference for differences: a solid black line at 0 across the plot, above the grid."""
    draw = ax.axhline if axis == "y" else ax.axvline
    draw(0.0, color="black", linewidth=1.0, zorder=3, gid="zero-line")


def _shared_legend(fig: Figure) -> None:
    """One legend for panels that share their series, outside the plots so it never hides a point."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=max(len(labels), 1), fontsize=8)


def _metric_points(
    ax: Axes, groups: Sequence[str], series: dict[str, Sequence[dict[str, Any] | None]], label: str
) -> None:
    """Point-and-interval chart of a metric on an axis fitted to the intervals; the label says what it spans."""
    limits = _fit_axis(ax, _grouped_points(ax, groups, series))
    ax.set_ylabel(f"{label}, 95% interval" + (f"\n({describe_span(*limits)})" if limits else ""))


def _difference_points(
    ax: Axes, groups: Sequence[str], series: dict[str, Sequence[dict[str, Any] | None]], label: str
) -> None:
    """Point-and-interval chart of differences around a zero line that the axis always includes."""
    limits = _fit_axis(ax, _grouped_points(ax, groups, series), include_zero=True)
    _zero_line(ax)
    ax.set_ylabel(f"{label}, 95% interval" + (f"\n({describe_span(*limits)})" if limits else ""))


def draw_recall(retrieval: dict[str, Any]) -> Figure:
    """Recall@K x 100 per task (clusters) and method (bars from 0) with the bootstrap intervals."""
    table = retrieval["table"]
    methods = [m for m in retrieval.get("columns") or list(table) if m in table]
    tasks = [t for t in retrieval.get("tasks") or {} if any(t in table[m] for m in methods)]
    tasks += sorted({t for m in methods for t in table[m]} - set(tasks))
    labels = [retrieval.get("tasks", {}).get(t, t) for t in tasks]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, {m: [table[m].get(t) for t in tasks] for m in methods}, key="recall", scale=100.0)
    ax.set_ylabel("Recall x 100 (95% interval)")
    ax.set_title("Retrieval: Recall@K on the held-out period")
    fig.legend(loc="outside right upper", fontsize=8)
    return fig


def draw_ranker_auc(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> Figure:
    """AUC and impression-weighted GAUC on all test items, per variant (clusters) and task (points)."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    labels = [variant_label(v) for v in variants]
    for k, metric in enumerate(("auc", "gauc_impressions")):
        ax = fig.add_subplot(1, 2, k + 1)
        cells = {t: [models[f"{trainer}/{v}"].get("all", {}).get(t, {}).get(metric) for v in variants] for t in tasks}
        _metric_points(ax, labels, cells, METRIC_LABEL[metric])
        ax.set_title(f"{trainer}: {METRIC_LABEL[metric]}")
    _shared_legend(fig)
    return fig


def draw_cold_start(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> Figure:
    """AUC on all / cold / new test items, per variant (clusters) and slice (points), one panel per task."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    labels = [variant_label(v) for v in variants]
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        cells = {
            SLICE_LABEL[s]: [models[f"{trainer}/{v}"].get(s, {}).get(task, {}).get("auc") for v in variants]
            for s in SLICE_LABEL
        }
        _metric_points(ax, labels, cells, "AUC")
        ax.set_title(f"{trainer}: {task} AUC by item slice")
    _shared_legend(fig)
    return fig


def draw_ranker_differences(
    differences: dict[str, Any], trainer: str, comparisons: Sequence[str], tasks: Sequence[str]
) -> Figure:
    """Paired AUC and impression-weighted GAUC differences (treatment - control) on all test items, per
    comparison (clusters, e.g. 'both-control') and task (points), around a zero line."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    labels = [comparison_label(c) for c in comparisons]
    for k, metric in enumerate(("auc", "gauc_impressions")):
        ax = fig.add_subplot(1, 2, k + 1)
        cells = {
            t: [differences[f"{trainer}/{c}"].get("all", {}).get(t, {}).get(metric) for c in comparisons] for t in tasks
        }
        _difference_points(ax, labels, cells, "treatment - control")
        ax.set_title(f"{trainer}: {METRIC_LABEL[metric]} difference")
    _shared_legend(fig)
    return fig


def draw_calibration(tables: dict[str, dict[str, Any]], trainer: str, tasks: Sequence[str]) -> Figure:
    """Mean predicted probability vs observed rate per bucket, one line per variant, one panel per task."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        for variant, per_task in tables.items():
            cal = per_task.get(task)
            if not cal or not cal["buckets"]:
                continue
            p = [b["mean_predicted"] for b in cal["buckets"]]
            y = [b["observed_rate"] for b in cal["buckets"]]
            ax.plot(p, y, marker="o", label=f"{variant_label(variant)} (ECE {_finite(cal.get('ece')):.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability (bucket)")
        ax.set_ylabel("observed rate")
        ax.set_title(f"{trainer}: {task} calibration")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def draw_ab_lifts(ab: dict[str, Any]) -> Figure:
    """Relative lift vs control in percent per metric (rows) and treatment arm (bars from 0), with the
    intervals, around a zero line."""
    lifts = ab["lifts"]
    arms = list(lifts)
    metrics = list(dict.fromkeys(m for a in arms for m in lifts[a]))
    fig = Figure(figsize=(11, 1.0 + 0.35 * len(metrics) * max(len(arms), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(metrics))
    height = 0.8 / max(len(arms), 1)
    extent: list[float] = []
    for k, arm in enumerate(arms):
        cells = [lifts[arm].get(m) for m in metrics]
        values = [_finite(c["value"]) * 100 if c else math.nan for c in cells]
        offset = (k - (len(arms) - 1) / 2) * height
        ax.barh(y + offset, values, height, xerr=_yerr(cells, scale=100.0), capsize=3, label=arm)
        extent += values + [_finite(c.get(end)) * 100 for c in cells if c for end in ("low", "high")]
    _fit_axis(ax, extent, axis="x", include_zero=True)
    _zero_line(ax, axis="x")
    ax.set_yticks(y, [METRIC_LABEL.get(m, m) for m in metrics])
    ax.invert_yaxis()
    ax.set_xlabel(f"lift vs {ab.get('control') or 'control'} in % (95% interval)")
    ax.set_title("Offline A/B simulation: relative lift per metric")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def draw_ab_daily(ab: dict[str, Any]) -> Figure:
    """Per experiment day and arm: DAU share (active / assigned users) and cumulative active days per user,
    both on axes from 0."""
    users = {a["name"]: a["users"] for a in ab["arms"]}
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_dau, ax_lt = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for arm, n in users.items():
        rows = sorted((r for r in ab["daily"] if r["arm"] == arm), key=lambda r: r["day"])
        if not rows or n <= 0:
            continue
        days = np.array([r["day"] for r in rows])
        active = np.array([r["active_users"] for r in rows], dtype=np.float64)
        ax_dau.plot(days, active / n, marker=".", label=arm)
        ax_lt.plot(days, np.cumsum(active) / n, marker=".", label=arm)
    ax_dau.set_title("DAU share by experiment day")
    ax_dau.set_ylabel("active users / assigned users")
    ax_lt.set_title("Cumulative active days per assigned user")
    ax_lt.set_ylabel("active days since the start")
    for ax in (ax_dau, ax_lt):
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("experiment day")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_recall(retrieval: dict[str, Any]) -> bytes:
    return _png(draw_recall(retrieval))


def plot_ranker_auc(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> bytes:
    return _png(draw_ranker_auc(models, trainer, variants, tasks))


def plot_cold_start(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> bytes:
    return _png(draw_cold_start(models, trainer, variants, tasks))


def plot_ranker_differences(
    differences: dict[str, Any], trainer: str, comparisons: Sequence[str], tasks: Sequence[str]
) -> bytes:
    return _png(draw_ranker_differences(differences, trainer, comparisons, tasks))


def plot_calibration(tables: dict[str, dict[str, Any]], trainer: str, tasks: Sequence[str]) -> bytes:
    return _png(draw_calibration(tables, trainer, tasks))


def plot_ab_lifts(ab: dict[str, Any]) -> bytes:
    return _png(draw_ab_lifts(ab))


def plot_ab_daily(ab: dict[str, Any]) -> bytes:
    return _png(draw_ab_daily(ab))
