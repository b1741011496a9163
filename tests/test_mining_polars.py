"""The polars twin against the same hand-worked cases as the Spark tests (see `test_mining_spark.py`)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from test_mining_spark import (
    BAD_EXPECTED,
    BAD_ROWS,
    CAPS_CFG,
    CAPS_EXPECTED,
    CAPS_ROWS,
    COVISIT_CFG,
    COVISIT_EXPECTED,
    COVISIT_ROWS,
    COVISIT_TOP1,
    D1,
    D2,
    DECAY_CFG,
    DECAY_EXPECTED,
    DECAY_ROWS,
    Q2I_EXPECTED,
    Q2I_REJECTED,
    Q2I_ROWS,
    QUERY_CASES,
    SEQ_CAP1_EXPECTED,
    SEQ_CFG,
    SEQ_EXPECTED,
    SEQ_ROWS,
    SPLIT_TS,
    SWING_CFG,
    SWING_EXPECTED,
    SWING_ROWS,
    make_dataset,
)

from core import contracts as K
from core.io import SchemaError
from mining import mining_polars as M
from mining.mining_config import MiningConfig, PositiveConfig, Q2IConfig, Seq2ItemConfig


def lf(rows, schema=K.INTERACTIONS) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema=schema.to_polars())


def positives(rows) -> pl.LazyFrame:
    return (
        lf(rows).pipe(M.flag_interaction_rejects).pipe(M.drop_rejected).pipe(M.select_positive_events, PositiveConfig())
    )


def sort_all(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def assert_rows(got: pl.LazyFrame | pl.DataFrame, expected: list[tuple], schema: dict, rtol: float = 1e-12) -> None:
    got = got.collect() if isinstance(got, pl.LazyFrame) else got
    exp = pl.DataFrame(expected, schema=schema, orient="row")
    assert_frame_equal(sort_all(got.select(exp.columns)), sort_all(exp), check_exact=False, rel_tol=rtol)


PAIR = {"anchor_item_id": pl.Int64, "item_id": pl.Int64, "score": pl.Float64, "support": pl.Int64}


def i2i_rows(expected, miner):
    return [(a, i, s, n, miner, D1, D2) for a, i, s, n in expected]


def test_covisit_hand_case():
    pairs = positives(COVISIT_ROWS).pipe(M.mine_covisit, COVISIT_CFG).collect().lazy()
    got = pairs.pipe(M.top_k_pairs, COVISIT_CFG.top_k, "covisit", D1, D2)
    assert_rows(got, i2i_rows(COVISIT_EXPECTED, "covisit"), K.I2I_PAIRS.to_polars())
    top1 = pairs.pipe(M.top_k_pairs, 1, "covisit", D1, D2).select("anchor_item_id", "item_id")
    assert_rows(top1, COVISIT_TOP1, {"anchor_item_id": pl.Int64, "item_id": pl.Int64})


def test_covisit_time_decay_takes_max_per_session():
    assert_rows(positives(DECAY_ROWS).pipe(M.mine_covisit, DECAY_CFG), DECAY_EXPECTED, PAIR)


def test_swing_hand_case():
    got = positives(SWING_ROWS).pipe(M.mine_swing, SWING_CFG).pipe(M.top_k_pairs, SWING_CFG.top_k, "swing", D1, D2)
    assert_rows(got, i2i_rows(SWING_EXPECTED, "swing"), K.I2I_PAIRS.to_polars())


def test_swing_caps_keep_recent_items_and_hash_sampled_users():
    got = positives(CAPS_ROWS).pipe(M.cap_user_items, CAPS_CFG)
    assert_rows(got, CAPS_EXPECTED, {"user_id": pl.Int64, "item_id": pl.Int64})


def test_sample_hash_matches_the_hand_values():
    # (u * 2654435761 + i * 40503 + seed) mod 2^31, worked out in test_mining_spark.CAPS_ROWS' comment
    df = pl.DataFrame({"u": [1, 5, -1], "i": [1, 1, 0]})
    got = df.select(M.sample_hash(pl.col("u"), pl.col("i"), 0)).to_series().to_list()
    # -1 mod 2^31 = 2147483647; 2147483647 * 2654435761 mod 2^31 = (-1 * 2654435761) mod 2^31
    #   = 2^31 - (2654435761 - 2^31) = 2147483648 - 506952113 = 1640531535
    assert got == [506992616, 387317420, 1640531535]


def test_query_normalisation():
    got = pl.Series([q for q, _ in QUERY_CASES]).to_frame("q").select(M.normalize_query(pl.col("q")))
    assert got.to_series().to_list() == [n for _, n in QUERY_CASES]


def test_q2i_counts_min_support_and_rejections():
    flagged = lf(Q2I_ROWS, K.SEARCHES).pipe(M.flag_search_rejects).collect()
    rejected = dict(flagged.filter(pl.col(M.REJECT).is_not_null()).group_by(M.REJECT).len().rows())
    assert rejected == Q2I_REJECTED
    got = flagged.lazy().pipe(M.drop_rejected).pipe(M.mine_q2i, Q2IConfig(min_clicks=2))
    assert_rows(got, Q2I_EXPECTED, K.Q2I_PAIRS.to_polars())


def test_seq2item_history_and_time_split():
    pos = positives(SEQ_ROWS).collect().lazy()
    assert_rows(pos.pipe(M.build_seq2item, SEQ_CFG, SPLIT_TS), SEQ_EXPECTED, K.SEQ2ITEM.to_polars())
    capped = pos.pipe(M.build_seq2item, Seq2ItemConfig(history_len=2, max_samples_per_user=1), SPLIT_TS)
    assert_rows(capped, SEQ_CAP1_EXPECTED, K.SEQ2ITEM.to_polars())


def test_interaction_rejections_are_counted():
    got = dict(lf(BAD_ROWS).pipe(M.flag_interaction_rejects).collect().group_by(M.REJECT).len().rows())
    assert got == {None: 1, **BAD_EXPECTED}


def test_run_polars_writes_tables_with_counts(tmp_path):
    from core.io import read_table
    from mining.mine_pairs import run

    data = make_dataset(tmp_path, COVISIT_ROWS + BAD_ROWS[1:], Q2I_ROWS)
    res = run(MiningConfig(data_dir=str(data), out_dir=str(tmp_path / "out"), engine="polars", covisit=COVISIT_CFG))
    for name, schema in (("i2i_pairs", K.I2I_PAIRS), ("q2i_pairs", K.Q2I_PAIRS), ("seq2item", K.SEQ2ITEM)):
        assert (res.paths[name] / "_SUCCESS").exists()
        read_table(res.paths[name], schema)
    c = res.counts
    assert c["rejected"] == {"interactions": BAD_EXPECTED, "searches": Q2I_REJECTED}
    assert c["pairs"]["i2i"]["covisit"] == len(COVISIT_EXPECTED) and c["pairs"]["q2i"] == len(Q2I_EXPECTED)
    assert (res.out_dir / "mining.json").exists()


def test_missing_column_is_a_clear_error(tmp_path):
    from mining.mine_pairs import scan_contract_table

    path = tmp_path / "searches"
    path.mkdir()
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "query": ["x"]}), path / "part-0.parquet")
    (path / "_SUCCESS").touch()
    with pytest.raises(SchemaError, match=r"part-0.parquet: table 'searches' is missing column\(s\) \['event_id'"):
        scan_contract_table(path, K.SEARCHES)


def test_cli_main_runs_polars(tmp_path, capsys):
    from mining.mine_pairs import main

    data = make_dataset(tmp_path, COVISIT_ROWS, Q2I_ROWS)
    out = tmp_path / "out"
    assert main(["--engine", "polars", "--data", str(data), "--out", str(out), "--split-ts", "2025-03-04"]) == 0
    assert '"split_ts": "2025-03-04T00:00:00+00:00"' in capsys.readouterr().out
    assert (out / "i2i_pairs" / "_SUCCESS").exists()
