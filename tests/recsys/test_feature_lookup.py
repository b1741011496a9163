"""The numpy point-in-time lookup of feature rows against a brute-force scan of the intervals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys.feature_lookup import OPEN_END, FeatureRows

T0 = 1_700_000_000_000_000  # microseconds


def _intervals(rng: np.random.Generator, n_items: int, dim: int) -> pa.Table:
    """1-3 rows per item (shuffled), each valid until the item's next row; the last one open."""
    rows = []
    for item in range(n_items):
        starts = np.sort(rng.choice(1000, size=rng.integers(1, 4), replace=False)) + T0
        for k, s in enumerate(starts):
            end = int(starts[k + 1]) if k + 1 < len(starts) else None
            rows.append((item * 3 + 1, rng.normal(size=dim).astype(np.float32), [item, k], f"v{k}", int(s), end))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "item_id": pa.array([r[0] for r in rows], pa.int64()),
            "embedding": pa.array([r[1] for r in rows], pa.list_(pa.float32())),
            "semantic_ids": pa.array([r[2] for r in rows], pa.list_(pa.int32())),
            "model_version": [r[3] for r in rows],
            "valid_from": pa.array([r[4] for r in rows], ts),
            "valid_to": pa.array([r[5] for r in rows], ts),
        }
    )


def _scan(table: pa.Table, item: int, t: int) -> int | None:
    """Position in `table` of the row of `item` valid at t, by reading every row."""
    d = table.to_pydict()
    hits = []
    for i, (it, a, b) in enumerate(zip(d["item_id"], d["valid_from"], d["valid_to"], strict=True)):
        start = int(a.timestamp() * 1e6)
        end = OPEN_END if b is None else int(b.timestamp() * 1e6)
        if it == item and start <= t < end:
            hits.append(i)
    assert len(hits) <= 1
    return hits[0] if hits else None


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(5)
    table = _intervals(rng, n_items=25, dim=6)
    return rng, table, FeatureRows.from_arrow(table)


def test_locate_matches_a_scan_of_the_intervals(world):
    rng, table, rows = world
    items = rng.integers(0, 80, 400)  # many ids with no row at all
    ts = rng.integers(-20, 1020, 400) + T0  # before the first row, inside, after the last
    closed = rows.valid_to != OPEN_END  # and each interval's two ends, exactly
    items = np.concatenate([items, rows.item_id, rows.item_id[closed]])
    ts = np.concatenate([ts, rows.valid_from, rows.valid_to[closed]])
    got = rows.locate(items, ts)
    for item, t, g in zip(items, ts, got, strict=True):
        want = _scan(table, int(item), int(t))
        if want is None:
            assert g == -1
        else:
            assert rows.model_version[g].as_py() == table["model_version"][want].as_py()
            np.testing.assert_array_equal(rows.vectors[g], np.asarray(table["embedding"][want].as_py(), np.float32))


def test_sail_columns_match_numpy_per_row(world):
    rng, table, rows = world
    n = 200
    items = pa.array(rng.integers(0, 80, n), pa.int64())
    ts_us = rng.integers(0, 1000, n) + T0
    recent = pa.array([list(rng.integers(0, 80, rng.integers(0, 5))) for _ in range(n)], pa.list_(pa.int64()))
    ts = pa.array(ts_us, pa.timestamp("us", tz="UTC"))
    emb, sids, version, sim = rows.sail_columns(items, ts, recent)
    for i in range(n):
        t = _scan(table, items[i].as_py(), int(ts_us[i]))
        assert emb[i].as_py() == (None if t is None else table["embedding"][t].as_py())
        assert sids[i].as_py() == (None if t is None else table["semantic_ids"][t].as_py())
        assert version[i].as_py() == (None if t is None else table["model_version"][t].as_py())
        hist = [_scan(table, h, int(ts_us[i])) for h in recent[i].as_py()]
        hist = [np.asarray(table["embedding"][h].as_py(), np.float64) for h in hist if h is not None]
        if t is None or not hist:
            assert sim[i].as_py() is None
            continue
        v, s = np.asarray(table["embedding"][t].as_py(), np.float64), np.sum(hist, axis=0)
        assert sim[i].as_py() == pytest.approx(v @ s / (np.linalg.norm(v) * np.linalg.norm(s)), rel=1e-5)


def test_zero_vectors_and_empty_tables_give_nulls():
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "item_id": pa.array([1, 2], pa.int64()),
            "embedding": pa.array([[0.0, 0.0], [1.0, 0.0]], pa.list_(pa.float32())),
            "semantic_ids": pa.array([[1], [2]], pa.list_(pa.int32())),
            "model_version": ["v", "v"],
            "valid_from": pa.array([T0, T0], ts),
            "valid_to": pa.array([None, None], ts),
        }
    )
    rows = FeatureRows.from_arrow(table)
    at = pa.array([T0 + 5] * 3, ts)
    recent = pa.array([[2], [1], []], pa.list_(pa.int64()))
    sim = rows.sail_columns(pa.array([1, 2, 2], pa.int64()), at, recent)[3]
    assert sim.to_pylist() == [None, None, None]  # zero target; zero history; no history
    empty = FeatureRows.from_arrow(table.slice(0, 0))
    out = empty.sail_columns(pa.array([1], pa.int64()), at.slice(0, 1), recent.slice(0, 1))
    assert [c.to_pylist() for c in out] == [[None]] * 4


def test_bad_intervals_are_refused_with_the_reason():
    ts = pa.timestamp("us", tz="UTC")
    base = {
        "item_id": pa.array([1, 1], pa.int64()),
        "embedding": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32())),
        "semantic_ids": pa.array([[1], [2]], pa.list_(pa.int32())),
        "model_version": ["v", "v"],
        "valid_from": pa.array([T0, T0 + 10], ts),
        "valid_to": pa.array([T0 + 20, None], ts),  # the first row outlives the second's start
    }
    with pytest.raises(ValueError, match="overlap"):
        FeatureRows.from_arrow(pa.table(base))
    uneven = dict(base, valid_to=pa.array([T0 + 10, None], ts))
    uneven["embedding"] = pa.array([[1.0, 0.0], [1.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match=r"lengths \[1, 2\]"):
        FeatureRows.from_arrow(pa.table(uneven))
    with pytest.raises(ValueError, match="valid_to"):
        FeatureRows.from_arrow(pa.table(base).drop(["valid_to"]))
