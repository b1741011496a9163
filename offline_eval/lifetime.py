"""Lifetime (LT) proxies from daily activity.

Definition (pinned): for a user active on day t0, LT_w(user, t0) = the number of days in t0 .. t0 + w - 1 on
which the user was active, so 1 <= LT_w <= w. It is defined only when the whole window is observed
(t0 + w - 1 <= the last day of the data); earlier active days qualify, later ones are left out rather than
biased downwards. LT7 and LT14 are w = 7 and w = 14. DAU is the number of distinct active users per day.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl


def compute_lt(activity: pl.DataFrame, window: int, last_day: date | None = None) -> pl.DataFrame:
    """LT_window for every observable (user, active day).

    activity: rows (user_id, activity_date), one per active user-day (duplicates are ignored).
    last_day: the last day of the data (default: the latest activity_date).
    Returns (user_id, activity_date, lt) for each active day t0 with t0 + window - 1 <= last_day.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    days = activity.select("user_id", "activity_date").unique().sort("user_id", "activity_date")
    if days.height == 0:
        return pl.DataFrame(schema={"user_id": pl.Int64, "activity_date": pl.Date, "lt": pl.Int32})
    last_day = last_day or days["activity_date"].max()
    first = days["activity_date"].min()
    d = (days["activity_date"] - first).dt.total_days().to_numpy().astype(np.int64)
    user_rank = days["user_id"].rank("dense").to_numpy().astype(np.int64)
    span = int(d.max()) + window + 1
    key = user_rank * span + d  # strictly increasing: sorted by user, then day, no duplicates
    upper = np.searchsorted(key, key + window - 1, side="right")
    lt = upper - np.arange(len(key))
    out = days.with_columns(lt=pl.Series(lt, dtype=pl.Int32))
    return out.filter(pl.col("activity_date") <= pl.lit(last_day - timedelta(days=window - 1)))


def summarise_lt(activity: pl.DataFrame, last_day: date | None = None) -> dict[str, float]:
    """Means of LT7 and LT14 over observable user-days, and mean DAU."""
    out: dict[str, float] = {}
    for w in (7, 14):
        lt = compute_lt(activity, w, last_day)
        out[f"lt{w}_mean"] = float(lt["lt"].mean()) if lt.height else float("nan")
        out[f"lt{w}_user_days"] = float(lt.height)
    dau = activity.group_by("activity_date").agg(pl.col("user_id").n_unique())
    out["dau_mean"] = float(dau["user_id"].mean()) if dau.height else 0.0
    return out
