"""LT7 / LT14 against hand-worked activity calendars and a brute-force count."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from offline_eval.lifetime import compute_lt, summarise_lt

D0 = date(2026, 1, 1)


def _act(rows):
    return pl.DataFrame(
        [(u, D0 + timedelta(days=k)) for u, k in rows],
        schema={"user_id": pl.Int64, "activity_date": pl.Date},
        orient="row",
    )


def test_hand_worked_lt7():
    # user 1 active on days 0,1,2,6,7 ; user 2 active on day 0 only ; data ends on day 8 (via user 1's day 7
    # and an explicit last_day). Eligible t0: day <= 8 - 6 = 2.
    act = _act([(1, 0), (1, 1), (1, 2), (1, 6), (1, 7), (2, 0)])
    lt = compute_lt(act, 7, last_day=D0 + timedelta(days=8)).sort("user_id", "activity_date")
    # user 1: t0=0 -> {0,1,2,6} = 4 ; t0=1 -> {1,2,6,7} = 4 ; t0=2 -> {2,6,7} = 3 ; user 2: t0=0 -> 1
    assert lt.rows() == [
        (1, D0, 4),
        (1, D0 + timedelta(days=1), 4),
        (1, D0 + timedelta(days=2), 3),
        (2, D0, 1),
    ]


def test_windows_not_fully_observed_are_left_out():
    act = _act([(1, 0), (1, 5)])
    lt = compute_lt(act, 7)  # last day = day 5: no t0 has a full 7-day window
    assert lt.height == 0


def test_duplicates_are_ignored_and_bounds_hold():
    act = _act([(1, 0), (1, 0), (1, 1)])
    lt = compute_lt(act, 1, last_day=D0 + timedelta(days=1))
    assert lt["lt"].to_list() == [1, 1]


def test_against_brute_force():
    rng = np.random.default_rng(0)
    rows = [(u, k) for u in range(30) for k in range(40) if rng.random() < 0.4]
    act = _act(rows)
    last = D0 + timedelta(days=39)
    lt = compute_lt(act, 14, last_day=last)
    active = {(u, k) for u, k in rows}
    expected = {
        (u, D0 + timedelta(days=k)): sum((u, j) in active for j in range(k, k + 14)) for u, k in active if k + 13 <= 39
    }
    got = {(u, d): v for u, d, v in lt.rows()}
    assert got == expected
    assert min(got.values()) >= 1 and max(got.values()) <= 14


def test_summary_and_errors():
    act = _act([(1, k) for k in range(14)] + [(2, 0)])
    s = summarise_lt(act)
    assert s["lt14_mean"] == pytest.approx((14 + 1) / 2)  # user 1 day 0: 14 ; user 2 day 0: 1
    assert s["dau_mean"] == pytest.approx(15 / 14)
    with pytest.raises(ValueError, match="window must be >= 1"):
        compute_lt(act, 0)
