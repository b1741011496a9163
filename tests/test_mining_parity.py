"""Spark and polars give the same pairs and scores on the same random log.

Both engines share the formulas, the ordering (the same rank key: score rounded to RANK_DECIMALS desc, then item_id
asc) and the integer sampling hash, so the comparison is exact for ids, supports, histories and top-K membership,
and within 1e-9 relative tolerance for float scores (summation order differs between engines).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from core import contracts as K
from core.io import read_table, write_table
from mining import mining_polars as MP
from mining import mining_spark as MS
from mining.mine_pairs import run
from mining.mining_config import CovisitConfig, MiningConfig, PositiveConfig, Q2IConfig, Seq2ItemConfig, SwingConfig

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("interpreted_stages")]


RTOL = 1e-9
START = datetime(2025, 3, 3, tzinfo=UTC)
SPLIT = datetime(2025, 3, 8, tzinfo=UTC)
QUERIES = [
    "Cats!",
    "cats",
    "CATS ",
    "dog toys",
    "Dog-Toys",
    "\uff24\uff4f\uff47 toys",
    "fish & chips",
    "?",
    "caf\u00e9",
]


def random_log(seed: int = 11, n_users: int = 300, n_items: int = 150) -> tuple[pa.Table, pa.Table]:
    """A few thousand impressions in sessions (Zipf items, heavy-tailed users, 1 s timestamps, so ties occur)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for _ in range(1 + rng.poisson(0.8 * rng.pareto(2.0) + 0.5)):
            t = int(START.timestamp()) + int(rng.integers(0, 7 * 86400))
            for _ in range(1 + rng.poisson(4)):
                t += int(rng.exponential(240))
                rows.append((u, int(min(rng.zipf(1.4), n_items)), int(t)))
    n = len(rows)
    users, items, secs = (np.array(c) for c in zip(*rows, strict=True))
    inter = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "request_id": ["r"] * n,
            "user_id": users.astype(np.int64),
            "item_id": items.astype(np.int64),
            "ts": pa.array(secs * 1_000_000, pa.timestamp("us", tz="UTC")),
            "surface": ["feed"] * n,
            "position": pa.array(np.zeros(n, np.int32)),
            "propensity": np.full(n, 0.5),
            "clicked": rng.random(n) < 0.7,
            "watch_ms": rng.integers(0, 20_000, n),
            "finished": rng.random(n) < 0.25,
            "liked": rng.random(n) < 0.1,
            "shared": rng.random(n) < 0.05,
        },
        schema=K.INTERACTIONS.to_arrow(),
    )
    m = 3000
    searches = pa.table(
        {
            "event_id": [f"s{i}" for i in range(m)],
            "search_id": [f"q{i // 10}" for i in range(m)],
            "user_id": rng.integers(1, n_users + 1, m),
            "ts": pa.array(
                (int(START.timestamp()) + rng.integers(0, 7 * 86400, m)) * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "query": [QUERIES[i] for i in rng.integers(0, len(QUERIES), m)],
            "item_id": rng.integers(1, 40, m),
            "position": pa.array(rng.integers(0, 10, m).astype(np.int32)),
            "clicked": rng.random(m) < 0.3,
        },
        schema=K.SEARCHES.to_arrow(),
    )
    return inter, searches


COV = CovisitConfig(window=5, max_gap_s=3600, session_gap_s=1800, decay_tau_s=900.0, top_k=5)
SW = SwingConfig(alpha=1.0, max_items_per_user=15, max_users_per_item=25, seed=3, top_k=5)  # both caps bind
SEQ = Seq2ItemConfig(history_len=4, min_history=1, max_samples_per_user=6)
D1, D2 = START.date(), SPLIT.date()


def to_polars(sdf) -> pl.DataFrame:
    return pl.from_arrow(sdf.toArrow())


def assert_same(spark_df, polars_lf, keys: list[str]) -> None:
    """Same rows (keys exact), float columns within RTOL."""
    s = to_polars(spark_df)
    p = polars_lf.collect() if isinstance(polars_lf, pl.LazyFrame) else polars_lf
    s = s.select(p.columns).with_columns([pl.col(c).cast(t) for c, t in p.schema.items()])
    assert s.height == p.height > 0
    assert_frame_equal(s.sort(keys), p.sort(keys), check_exact=False, rel_tol=RTOL, abs_tol=0.0)


@pytest.fixture(scope="module")
def engines(spark):
    inter, searches = random_log()
    s_pos = (
        spark.createDataFrame(inter.to_pandas(), K.INTERACTIONS.to_spark())
        .transform(MS.flag_interaction_rejects)
        .transform(MS.drop_rejected)
        .transform(MS.select_positive_events, PositiveConfig())
        .cache()
    )
    p_pos = (
        pl.from_arrow(inter)
        .lazy()
        .pipe(MP.flag_interaction_rejects)
        .pipe(MP.drop_rejected)
        .pipe(MP.select_positive_events, PositiveConfig())
        .collect()
        .lazy()
    )
    s_search = spark.createDataFrame(searches.to_pandas(), K.SEARCHES.to_spark())
    p_search = pl.from_arrow(searches).lazy()
    return s_pos, p_pos, s_search, p_search


def test_positive_events_match(engines):
    s_pos, p_pos, _, _ = engines
    assert_same(s_pos, p_pos, ["user_id", "item_id", "ts"])


@pytest.mark.parametrize("miner", ["covisit", "swing"])
def test_i2i_pairs_and_top_k_match(engines, miner):
    s_pos, p_pos, _, _ = engines
    cfg, s_mine, p_mine = (
        (COV, MS.mine_covisit, MP.mine_covisit) if miner == "covisit" else (SW, MS.mine_swing, MP.mine_swing)
    )
    s_pairs = s_pos.transform(s_mine, cfg).cache()
    p_pairs = p_pos.pipe(p_mine, cfg).collect()
    # every pair, its score (rel 1e-9) and support
    assert_same(s_pairs, p_pairs, ["anchor_item_id", "item_id"])
    # the top-K lists: the same members (ties break by item_id in both), same scores
    s_top = s_pairs.transform(MS.top_k_pairs, cfg.top_k, miner, D1, D2)
    p_top = p_pairs.lazy().pipe(MP.top_k_pairs, cfg.top_k, miner, D1, D2)
    assert_same(s_top, p_top, ["anchor_item_id", "item_id"])
    assert p_pairs.height > 2 * p_top.collect().height  # the cut-off really pruned something


def test_q2i_matches(engines):
    _, _, s_search, p_search = engines
    s = s_search.transform(MS.flag_search_rejects).transform(MS.drop_rejected).transform(MS.mine_q2i, Q2IConfig())
    p = p_search.pipe(MP.flag_search_rejects).pipe(MP.drop_rejected).pipe(MP.mine_q2i, Q2IConfig())
    assert_same(s, p, ["query", "item_id"])


def test_seq2item_matches(engines):
    s_pos, p_pos, _, _ = engines
    s = s_pos.transform(MS.build_seq2item, SEQ, SPLIT)
    p = p_pos.pipe(MP.build_seq2item, SEQ, SPLIT).collect()
    assert set(p["split"].unique()) == {"train", "eval"}
    assert_same(s, p, ["user_id", "target_ts", "target_item_id"])


def test_the_runs_of_both_engines_write_the_same_tables(spark, tmp_path):
    """`mining.mine_pairs.run` end to end: polars and Spark write the same tables and counts."""
    inter, searches = random_log()
    data = tmp_path / "data"
    write_table(inter, K.INTERACTIONS, data / "interactions")
    write_table(searches, K.SEARCHES, data / "searches")
    base = {"data_dir": str(data), "covisit": COV, "swing": SW, "seq2item": SEQ}
    runs = {
        "polars": MiningConfig(out_dir=str(tmp_path / "polars"), engine="polars", **base),
        "spark": MiningConfig(out_dir=str(tmp_path / "spark"), engine="spark", **base),
    }
    results = {name: run(cfg, spark=spark if cfg.engine == "spark" else None) for name, cfg in runs.items()}

    ref = results["polars"]
    assert ref.counts["pairs"]["i2i"]["swing"] > 0 and ref.counts["pairs"]["i2i"]["covisit"] > 0
    for name, res in results.items():
        for key in ("input_rows", "rejected", "positive_events", "pairs", "split_ts"):
            assert res.counts[key] == ref.counts[key], (name, key)
        phases = res.counts["phase_seconds"]
        assert {"positives", "i2i", "q2i", "seq2item"} <= set(phases), name
        assert all(v >= 0 for v in phases.values())
        for table, schema, keys in (
            ("i2i_pairs", K.I2I_PAIRS, ["miner", "anchor_item_id", "item_id"]),
            ("q2i_pairs", K.Q2I_PAIRS, ["query", "item_id"]),
            ("seq2item", K.SEQ2ITEM, ["user_id", "target_ts", "target_item_id"]),
        ):
            got = pl.from_arrow(read_table(res.paths[table], schema)).sort(keys)
            want = pl.from_arrow(read_table(ref.paths[table], schema)).sort(keys)
            assert_frame_equal(got, want, check_exact=False, rel_tol=RTOL, abs_tol=0.0)
    assert "swing_edges" in results["spark"].counts["phase_seconds"]


def test_top_k_rank_key_rounds_float_noise_and_ties_break_by_item(spark):
    """Scores equal to RANK_DECIMALS decimals tie (then item_id asc decides) in both engines; a difference in the
    10th decimal ranks."""
    # 0.1 + 0.2 != 0.3 in floats; by raw score the order would be 6, 4, 5, 3, 2
    scores = {6: 0.3 + 1e-10, 4: 0.3 + 3e-11, 5: 0.1 + 0.2, 3: 0.3, 2: 0.3 - 7e-11}
    order = [6, 3, 4, 5, 2]
    pairs = pl.DataFrame({"anchor_item_id": [1] * 5, "item_id": list(scores), "score": list(scores.values())})
    pairs = pairs.with_columns(pl.lit(1, dtype=pl.Int64).alias("support"))
    s_pairs = spark.createDataFrame(pairs.to_pandas())
    for k in range(1, 6):
        p_top = pairs.lazy().pipe(MP.top_k_pairs, k, "m", D1, D2).collect()
        s_top = to_polars(s_pairs.transform(MS.top_k_pairs, k, "m", D1, D2))
        assert sorted(p_top["item_id"]) == sorted(s_top["item_id"]) == sorted(order[:k]), k
