"""The run report's figures: matplotlib (Agg canvas, no pyplot state), each returned as PNG bytes.

Every function takes the plain JSON sections of the run summary (see docs/REPORT.md) and draws one figure;
error bars are the sections' bootstrap intervals [low, high] around the point estimate.
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


def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: dict[str, Sequence[dict[str, Any] | None]],
    key: str = "value",
    scale: float = 1.0,
) -> None:
    """One cluster of bars per group, one bar per series, each with its interval as an error bar."""
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for k, (name, cells) in enumerate(series.items()):
        values = [_finite(c.get(key)) * scale if c else math.nan for c in cells]
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(x + offset, values, width, label=name, yerr=_yerr(cells, key, scale), capsize=3)
    ax.set_xticks(x, groups, rotation=20 if max((len(g) for g in groups), default=0) > 12 else 0, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _zoom_to_bars(ax: Axes, lows: Sequence[float], highs: Sequence[float], pad: float = 0.15) -> None:
    """Start the y axis near the smallest interval (AUCs differ in the second decimal)."""
    lo = [v for v in lows if math.isfinite(v)]
    hi = [v for v in highs if math.isfinite(v)]
    if lo and hi:
        span = max(max(hi) - min(lo), 1e-3)
        ax.set_ylim(max(min(lo) - pad * span * 3, 0.0), max(hi) + pad * span)


def plot_recall(retrieval: dict[str, Any]) -> bytes:
    """Recall@K x 100 per task (clusters) and method (bars) with the bootstrap intervals."""
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
    return _png(fig)


def plot_ranker_auc(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> bytes:
    """AUC and impression-weighted GAUC on all test items, per variant (clusters) and task (bars)."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    labels = [variant_label(v) for v in variants]
    for k, metric in enumerate(("auc", "gauc_impressions")):
        ax = fig.add_subplot(1, 2, k + 1)
        cells = {t: [models[f"{trainer}/{v}"].get("all", {}).get(t, {}).get(metric) for v in variants] for t in tasks}
        _grouped_bars(ax, labels, cells)
        flat = [c for cs in cells.values() for c in cs if c]
        _zoom_to_bars(ax, [_finite(c["low"]) for c in flat], [_finite(c["high"]) for c in flat])
        ax.set_title(f"{trainer}: {METRIC_LABEL[metric]}")
        ax.legend(fontsize=8)
    return _png(fig)


def plot_cold_start(models: dict[str, Any], trainer: str, variants: Sequence[str], tasks: Sequence[str]) -> bytes:
    """AUC on all / cold / new test items, per variant (clusters) and slice (bars), one panel per task."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    labels = [variant_label(v) for v in variants]
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        cells = {
            SLICE_LABEL[s]: [models[f"{trainer}/{v}"].get(s, {}).get(task, {}).get("auc") for v in variants]
            for s in SLICE_LABEL
        }
        _grouped_bars(ax, labels, cells)
        flat = [c for cs in cells.values() for c in cs if c]
        _zoom_to_bars(ax, [_finite(c["low"]) for c in flat], [_finite(c["high"]) for c in flat])
        ax.set_title(f"{trainer}: {task} AUC by item slice")
        ax.legend(fontsize=8)
    return _png(fig)


def plot_calibration(tables: dict[str, dict[str, Any]], trainer: str, tasks: Sequence[str]) -> bytes:
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
    return _png(fig)


def plot_ab_lifts(ab: dict[str, Any]) -> bytes:
    """Relative lift vs control in percent per metric (rows) and treatment arm (bars), with the intervals."""
    lifts = ab["lifts"]
    arms = list(lifts)
    metrics = list(dict.fromkeys(m for a in arms for m in lifts[a]))
    fig = Figure(figsize=(11, 1.0 + 0.35 * len(metrics) * max(len(arms), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(metrics))
    height = 0.8 / max(len(arms), 1)
    for k, arm in enumerate(arms):
        cells = [lifts[arm].get(m) for m in metrics]
        values = [_finite(c["value"]) * 100 if c else math.nan for c in cells]
        offset = (k - (len(arms) - 1) / 2) * height
        ax.barh(y + offset, values, height, xerr=_yerr(cells, scale=100.0), capsize=3, label=arm)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [METRIC_LABEL.get(m, m) for m in metrics])
    ax.invert_yaxis()
    ax.set_xlabel(f"lift vs {ab.get('control') or 'control'} in % (95% interval)")
    ax.set_title("Offline A/B simulation: relative lift per metric")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_ab_daily(ab: dict[str, Any]) -> bytes:
    """Per experiment day and arm: DAU share (active / assigned users) and cumulative active days per user."""
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
        ax.set_xlabel("experiment day")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)
