"""The report's charts do not exaggerate small differences: bars start at zero, metric points carry their interval
on an axis whose label states its span, differences sit around a visible zero line. Checked on the matplotlib
figures (`draw_*`) built from the recorded ranker and retrieval results and small hand-written A/B sections."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from offline_eval import report_plots as plots

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
RANKER = json.loads((RESULTS / "ranker_small_standin.json").read_text())
RETRIEVAL = json.loads((RESULTS / "retrieval_small.json").read_text())
VARIANTS = ["control", "emb", "sid", "both"]
COMPARISONS = ["emb-control", "sid-control", "both-control"]
TASKS = ["click", "finish"]

# Every lift above zero (the case where bars alone would put 0 on the axis' edge), one arm below.
AB = {
    "control": "control",
    "arms": [{"name": n, "users": 200, "metrics": {}} for n in ("control", "oracle", "random")],
    "lifts": {
        "oracle": {
            "lt7": {"value": 0.031, "low": 0.012, "high": 0.049},
            "dau_share": {"value": 0.020, "low": 0.004, "high": 0.037},
        },
        "random": {
            "lt7": {"value": 0.006, "low": 0.001, "high": 0.011},
            "dau_share": {"value": 0.002, "low": 0.0005, "high": 0.004},
        },
    },
    "daily": [
        {"arm": arm, "day": d, "active_users": 120 + 3 * k + d, "impressions": 0, "clicks": 0, "satisfaction": 0.0}
        for k, arm in enumerate(("control", "oracle", "random"))
        for d in range(7)
    ],
}


def _value_limits(ax: Axes, orientation: str = "vertical") -> tuple[float, float]:
    lo, hi = ax.get_ylim() if orientation == "vertical" else ax.get_xlim()
    return min(lo, hi), max(lo, hi)


def _bars(ax: Axes) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _point_errorbars(ax: Axes) -> list[ErrorbarContainer]:
    """Error bars drawn with their own markers (points), not those hanging off bars (drawn with fmt='none')."""
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.lines[0] is not None]


def _intervals(containers: list[ErrorbarContainer], axis: str = "y") -> list[tuple[float, float, float]]:
    """(position, low, high) of every drawn error segment; position is x for vertical intervals, y otherwise."""
    out = []
    for c in containers:
        for coll in c.lines[2]:
            for seg in coll.get_segments():
                seg = np.asarray(seg, dtype=float)
                if seg.shape != (2, 2) or not np.isfinite(seg).all():  # a missing cell draws no segment
                    continue
                if axis == "y" and seg[0, 0] == seg[1, 0]:
                    out.append((seg[0, 0], min(seg[:, 1]), max(seg[:, 1])))
                elif axis == "x" and seg[0, 1] == seg[1, 1]:
                    out.append((seg[0, 1], min(seg[:, 0]), max(seg[:, 0])))
    return out


def _expected_intervals(cells: list[dict | None], scale: float = 1.0) -> list[tuple[float, float]]:
    finite = [c for c in cells if c and all(isinstance(c.get(k), float) for k in ("value", "low", "high"))]
    return sorted((c["low"] * scale, c["high"] * scale) for c in finite)


def _assert_same_intervals(drawn: list[tuple[float, float, float]], expected: list[tuple[float, float]]) -> None:
    got = sorted((lo, hi) for _, lo, hi in drawn)
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.array(got).reshape(-1, 2), np.array(expected).reshape(-1, 2), rtol=1e-12)


def _assert_every_point_has_its_interval(ax: Axes, cells: list[dict | None]) -> None:
    drawn = _intervals(_point_errorbars(ax))
    _assert_same_intervals(drawn, _expected_intervals(cells))
    # each plotted point sits on its own error bar
    for c in _point_errorbars(ax):
        xs, ys = c.lines[0].get_data()
        for x, y in zip(xs, ys, strict=True):
            if math.isfinite(y):
                assert any(px == pytest.approx(x) and lo <= y <= hi for px, lo, hi in drawn), (x, y)


def _assert_axis_states_its_span(ax: Axes) -> None:
    lo, hi = _value_limits(ax)
    label = ax.get_ylabel()
    m = re.search(r"axis (-?[\d.]+) to (-?[\d.]+)", label)
    assert m, f"the value axis label says nothing about its span: {label!r}"
    assert (float(m[1]), float(m[2])) == pytest.approx((lo, hi), abs=1e-9)
    assert ("not from 0" in label) == (not lo <= 0.0 <= hi)


def _assert_zero_line(ax: Axes, axis: str = "y") -> None:
    lo, hi = _value_limits(ax, "vertical" if axis == "y" else "horizontal")
    assert lo < 0.0 < hi, "0 must lie inside the axis, not on its edge"
    zero = [
        ln
        for ln in ax.get_lines()
        if ln.get_visible()
        and ln.get_linewidth() > 0
        and ln.get_alpha() in (None, 1.0)
        and np.allclose(ln.get_ydata() if axis == "y" else ln.get_xdata(), 0.0)
        and np.allclose(ln.get_xdata() if axis == "y" else ln.get_ydata(), [0.0, 1.0])  # across the whole plot
    ]
    assert zero, "no zero line across the plot"


def _assert_bars_start_at_zero(fig: Figure) -> None:
    for ax in fig.axes:
        for bars in _bars(ax):
            lo, hi = _value_limits(ax, bars.orientation)
            assert lo <= 0.0 <= hi, f"{ax.get_title()!r}: the bars' value axis spans {lo} to {hi}"


# ---------------------------------------------------------------------------------------------------- charts


def test_recall_bars_start_at_zero_and_carry_their_intervals():
    fig = plots.draw_recall(RETRIEVAL)
    _assert_bars_start_at_zero(fig)
    (ax,) = fig.axes
    assert _bars(ax) and _value_limits(ax)[0] == 0.0
    cells = [RETRIEVAL["table"][m].get(t) for m in RETRIEVAL["table"] for t in RETRIEVAL["table"][m]]
    drawn = _intervals([c for c in ax.containers if isinstance(c, ErrorbarContainer)])
    expected = sorted(
        (100 * c["low"], 100 * c["high"]) for c in cells if c and isinstance(c.get("low"), float) and c["recall"] > 0
    )
    _assert_same_intervals([d for d in drawn if d[2] > 0], expected)


@pytest.mark.parametrize("trainer", ["torchrec", "lgbm"])
def test_ranker_metrics_are_points_with_intervals_on_an_axis_that_states_its_span(trainer):
    fig = plots.draw_ranker_auc(RANKER["models"], trainer, VARIANTS, TASKS)
    _assert_bars_start_at_zero(fig)
    assert [ax.get_title() for ax in fig.axes] == [f"{trainer}: AUC", f"{trainer}: GAUC (impression-weighted)"]
    for ax, metric in zip(fig.axes, ("auc", "gauc_impressions"), strict=True):
        assert not _bars(ax), "AUCs differ in the second decimal: a bar's length from 0 would say nothing"
        _assert_axis_states_its_span(ax)
        cells = [RANKER["models"][f"{trainer}/{v}"]["all"][t][metric] for v in VARIANTS for t in TASKS]
        _assert_every_point_has_its_interval(ax, cells)
        lo, hi = _value_limits(ax)
        assert lo <= min(c["low"] for c in cells) and max(c["high"] for c in cells) <= hi  # nothing clipped


@pytest.mark.parametrize("trainer", ["torchrec", "lgbm"])
def test_cold_start_slices_are_points_with_intervals_on_an_axis_that_states_its_span(trainer):
    fig = plots.draw_cold_start(RANKER["models"], trainer, VARIANTS, TASKS)
    _assert_bars_start_at_zero(fig)
    for ax, task in zip(fig.axes, TASKS, strict=True):
        assert not _bars(ax)
        _assert_axis_states_its_span(ax)
        models = RANKER["models"]
        cells = [
            models[f"{trainer}/{v}"].get(s, {}).get(task, {}).get("auc") for v in VARIANTS for s in plots.SLICE_LABEL
        ]
        assert any(cells)
        _assert_every_point_has_its_interval(ax, cells)


@pytest.mark.parametrize("trainer", ["torchrec", "lgbm"])
def test_ranker_differences_sit_around_a_visible_zero_line(trainer):
    fig = plots.draw_ranker_differences(RANKER["differences"], trainer, COMPARISONS, TASKS)
    for ax, metric in zip(fig.axes, ("auc", "gauc_impressions"), strict=True):
        assert not _bars(ax)
        _assert_zero_line(ax)
        _assert_axis_states_its_span(ax)
        cells = [RANKER["differences"][f"{trainer}/{c}"]["all"][t][metric] for c in COMPARISONS for t in TASKS]
        _assert_every_point_has_its_interval(ax, cells)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["+emb vs control", "+sid vs control", "+both vs control"]


def test_ab_lifts_are_bars_from_zero_around_a_zero_line_inside_the_axis():
    fig = plots.draw_ab_lifts(AB)
    _assert_bars_start_at_zero(fig)
    (ax,) = fig.axes
    assert [b.orientation for b in _bars(ax)] == ["horizontal", "horizontal"]
    _assert_zero_line(ax, axis="x")  # every lift is positive here: 0 must still be inside, not the axis' edge
    drawn = _intervals([c for c in ax.containers if isinstance(c, ErrorbarContainer)], axis="x")
    cells = [c for arm in AB["lifts"].values() for c in arm.values()]
    _assert_same_intervals(drawn, _expected_intervals(cells, scale=100.0))


def test_ab_daily_axes_start_at_zero():
    fig = plots.draw_ab_daily(AB)
    for ax in fig.axes:
        lo, hi = _value_limits(ax)
        assert lo == 0.0 and hi > 0.0


def test_describe_span_says_when_the_axis_leaves_out_zero():
    assert plots.describe_span(0.708, 0.751) == "axis 0.708 to 0.751, not from 0"
    assert plots.describe_span(-0.005, 0.023) == "axis -0.005 to 0.023"
    assert plots.describe_span(0.0, 35.0) == "axis 0 to 35"


def test_the_png_functions_draw_the_same_figures():
    png = plots.plot_ranker_differences(RANKER["differences"], "torchrec", COMPARISONS, TASKS)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
