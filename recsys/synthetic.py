"""Synthetic RANKING_SAMPLES_EXT tables in seconds (no Spark): fixtures for tests, smoke runs and benchmarks.

Users and items have latent vectors; the click probability is sigmoid(<u, v> / sqrt(dim) + item bias); the SAIL
vector of an item is a noisy linear image of its latent and its bias (so it carries signal, also for items created
late); semantic IDs quantise it by the signs of random projections. Items with ids above the warm share appear only
in the last days (cold-start items).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.io import write_table
from recsys.features import RANKING_SAMPLES_EXT


def synthetic_samples(
    n_rows: int = 20_000,
    n_users: int = 300,
    n_items: int = 400,
    days: int = 10,
    latent_dim: int = 8,
    emb_dim: int = 16,
    sid_levels: int = 3,
    recent_len: int = 5,
    valid_days: int = 1,
    test_days: int = 2,
    warm_share: float = 0.8,
    seed: int = 0,
) -> pa.Table:
    """A RANKING_SAMPLES_EXT table with learnable structure (see the module docstring)."""
    rng = np.random.default_rng(seed)
    u_lat = rng.normal(size=(n_users, latent_dim))
    i_lat = rng.normal(size=(n_items, latent_dim))
    bias = rng.normal(scale=1.0, size=n_items)
    proj = rng.normal(size=(latent_dim + 1, emb_dim))
    emb = np.column_stack([i_lat, 2.0 * bias]) @ proj + rng.normal(scale=0.5, size=(n_items, emb_dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    planes = rng.normal(size=(sid_levels, 2, emb_dim))
    codes = np.stack([((emb @ planes[lv].T) > 0).astype(np.int32) @ np.array([1, 2]) for lv in range(sid_levels)], 1)

    n_warm = int(n_items * warm_share)
    first_test = days - test_days
    day = np.sort(rng.integers(0, days, size=n_rows))
    item = np.where(
        (day >= first_test) & (rng.random(n_rows) < 0.3),
        rng.integers(n_warm, n_items, size=n_rows),
        rng.integers(0, n_warm, size=n_rows),
    )
    user = rng.integers(0, n_users, size=n_rows)
    logit = 1.0 * np.einsum("nd,nd->n", u_lat[user], i_lat[item]) / np.sqrt(latent_dim) + bias[item]
    click = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    finish = click & (rng.random(n_rows) < 1 / (1 + np.exp(-(bias[item] * 2))))
    start = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    ts = [
        start + dt.timedelta(days=int(d), seconds=int(s))
        for d, s in zip(day, rng.integers(0, 86_400, n_rows), strict=True)
    ]
    # cold items (never shown before the test days) are uploaded the day before the test window, or (odd ids) on its
    # first day: "new" items
    cold_created = [start + dt.timedelta(days=first_test - 1 + (i % 2)) for i in range(n_items)]
    created = [start - dt.timedelta(days=30) if i < n_warm else cold_created[i] for i in item]
    user_pos = {}
    recent = []
    for u, i, c in zip(user, item, click, strict=True):
        hist = user_pos.setdefault(int(u), [])
        recent.append([int(x) + 1 for x in hist[-recent_len:]])
        if c:
            hist.append(int(i))
    sim = np.array(
        [float(emb[i] @ emb[np.array(r) - 1].mean(0)) if r else np.nan for i, r in zip(item, recent, strict=True)]
    )
    split = np.where(day >= first_test, "test", np.where(day >= first_test - valid_days, "valid", "train"))
    return pa.table(
        {
            "event_id": [f"s{k}" for k in range(n_rows)],
            "user_id": user + 1,
            "item_id": item + 1,
            "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            "author_id": item // 5 + 1,
            "category": [f"c{i % 4}" for i in item],
            "hour": pa.array([t.hour for t in ts], type=pa.int32()),
            "surface": ["feed"] * n_rows,
            "position": pa.array(rng.integers(0, 5, n_rows), type=pa.int32()),
            "item_age_hours": pa.array(
                [(t - c).total_seconds() / 3600 for t, c in zip(ts, created, strict=True)], type=pa.float32()
            ),
            "user_recent_items": pa.array(recent, type=pa.list_(pa.int64())),
            "label_click": pa.array(click.astype(np.int32)),
            "label_finish": pa.array(finish.astype(np.int32)),
            "split": split,
            "date": pa.array([t.date() for t in ts], type=pa.date32()),
            "item_created_ts": pa.array(created, type=pa.timestamp("us", tz="UTC")),
            "item_imps_before": np.zeros(n_rows, np.int64),
            "item_clicks_before": np.zeros(n_rows, np.int64),
            "user_imps_before": np.zeros(n_rows, np.int64),
            "user_clicks_before": np.zeros(n_rows, np.int64),
            "sail_embedding": pa.array(list(emb[item]), type=pa.list_(pa.float32())),
            "semantic_ids": pa.array(list(codes[item]), type=pa.list_(pa.int32())),
            "user_hist_sim": pa.array(np.where(np.isnan(sim), None, sim), type=pa.float32(), from_pandas=True),
            "sail_model_version": ["synthetic"] * n_rows,
        }
    )


def write_synthetic_samples(path: Path, **kwargs) -> int:
    """Writes synthetic_samples(**kwargs) as a RANKING_SAMPLES_EXT table directory; returns the row count."""
    return write_table(synthetic_samples(**kwargs), RANKING_SAMPLES_EXT, path)
