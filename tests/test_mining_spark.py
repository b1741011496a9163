"""Spark pair mining against hand-worked cases (the arithmetic is in the comments).

The cases are plain Python data shared with `test_mining_polars.py` (which runs the same cases on polars).
Expected values are worked out by hand, never from the code under test.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import Row
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from core import contracts as K
from core.io import SchemaError
from mining import mining_spark as M
from mining.mining_config import CovisitConfig, MiningConfig, PositiveConfig, Q2IConfig, Seq2ItemConfig, SwingConfig

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("interpreted_stages")]


T0 = datetime(2025, 3, 3, tzinfo=UTC)
D1, D2 = T0.date(), (T0 + timedelta(days=1)).date()  # the date range stamped on i2i rows in these tests

# ------------------------------------------------------------------------------------------------------------
# Shared hand cases (used by the polars tests too)
# ------------------------------------------------------------------------------------------------------------


def imp(user, item, minute, positive=True, **over):
    """One INTERACTIONS row at T0 + minute. positive: liked (score 2 >= threshold 2); else a click alone (1 < 2)."""
    row = {
        "event_id": f"e{user}-{item}-{minute}",
        "request_id": "r",
        "user_id": user,
        "item_id": item,
        "ts": T0 + timedelta(minutes=minute),
        "surface": "feed",
        "position": 0,
        "propensity": 0.5,
        "clicked": True,
        "watch_ms": 1000,
        "finished": False,
        "liked": positive,
        "shared": False,
    }
    row.update(over)
    return row


# Co-visitation (window 3, session gap 30 min, max gap 60 min, no decay).
#   user 1 (6 positives; IUF = 1/ln 7 = 0.5138983423697507):
#     session 0: 10@0 20@5 30@10 10@20      (the click-only row 40@3 is not positive, so not an event)
#       10@0 -> 20, 30 (10@20 is the same item: skipped); 20@5 -> 30, 10; 30@10 -> 10
#       distinct pairs this session: {10,20} {10,30} {20,30}, each once (max per session) with weight 1/ln 7
#     session 1 (90 min gap): 20@100 30@101 -> {20,30} with 1/ln 7
#   user 2: one positive (10@0); the click-only 50@1 is not positive -> no pair
#   user 3 (4 positives; IUF = 1/ln 5 = 0.6213349345596119), one session 10@0 20@25 30@50 40@75:
#     10 -> 20 (25 min), 30 (50 min), 40 (75 min > 60 min: excluded); 20 -> 30, 40; 30 -> 40
#     pairs {10,20} {10,30} {20,30} {20,40} {30,40}, each 1/ln 5
#   totals (symmetric):
#     {10,20}: 1/ln7 + 1/ln5 = 1.1352332769293625, support 2 sessions
#     {10,30}: 1/ln7 + 1/ln5 = 1.1352332769293625, support 2
#     {20,30}: 2/ln7 + 1/ln5 = 1.6491316192991134, support 3
#     {20,40}: 1/ln5 = 0.6213349345596119, support 1
#     {30,40}: 1/ln5 = 0.6213349345596119, support 1
COVISIT_ROWS = [
    imp(1, 10, 0),
    imp(1, 40, 3, positive=False),
    imp(1, 20, 5),
    imp(1, 30, 10),
    imp(1, 10, 20),
    imp(1, 20, 100),
    imp(1, 30, 101),
    imp(2, 10, 0),
    imp(2, 50, 1, positive=False),
    imp(3, 10, 0),
    imp(3, 20, 25),
    imp(3, 30, 50),
    imp(3, 40, 75),
]
COVISIT_CFG = CovisitConfig(session_gap_s=1800, window=3, max_gap_s=3600, decay_tau_s=None, top_k=2)
_A = 1 / math.log(7) + 1 / math.log(5)
_B = 2 / math.log(7) + 1 / math.log(5)
_C = 1 / math.log(5)
# top_k = 2 per anchor; ranking score desc, then item_id asc:
#   anchor 10: 20 (1.135), 30 (1.135)            anchor 20: 30 (1.649), 10 (1.135); 40 (0.621) cut
#   anchor 30: 20 (1.649), 10 (1.135); 40 cut   anchor 40: 20 (0.621), 30 (0.621)
COVISIT_EXPECTED = [
    (10, 20, _A, 2),
    (10, 30, _A, 2),
    (20, 30, _B, 3),
    (20, 10, _A, 2),
    (30, 20, _B, 3),
    (30, 10, _A, 2),
    (40, 20, _C, 1),
    (40, 30, _C, 1),
]
# with top_k = 1 the ties break by item_id asc: anchor 10 -> 20 (not 30), anchor 40 -> 20 (not 30)
COVISIT_TOP1 = [(10, 20), (20, 30), (30, 20), (40, 20)]

# Decay (tau = 600 s): user 7 (3 positives, IUF = 1/ln 4): 60@0 70@10 60@15, one session, window 3.
#   60@0 -> 70 (dt 600 s: weight e^-1 / ln 4); 70@10 -> 60@15 (dt 300 s: e^-0.5 / ln 4). Same pair {60,70}:
#   max per session = e^-0.5 / ln 4 = 0.6065306597 / 1.3862943611 = 0.4375193874572638, support 1.
DECAY_ROWS = [imp(7, 60, 0), imp(7, 70, 10), imp(7, 60, 15)]
DECAY_CFG = CovisitConfig(window=3, decay_tau_s=600.0)
DECAY_EXPECTED = [(60, 70, math.exp(-0.5) / math.log(4), 1), (70, 60, math.exp(-0.5) / math.log(4), 1)]

# Swing (alpha = 1, no caps binding). Positive edges: u1 {1,2,3}, u2 {1,2}, u3 {1,2,3}, u4 {3}.
#   w_u = 1/sqrt(|I_u| + 1): w1 = 1/2, w2 = 1/sqrt 3, w3 = 1/2, w4 = 1/sqrt 2
#   |I_u & I_v|: (1,2) = 2, (1,3) = 3, (2,3) = 2, (1,4) = (3,4) = 1, (2,4) = 0
#   (1,2): U_1 & U_2 = {u1,u2,u3}: w1 w2/(1+2) + w1 w3/(1+3) + w2 w3/(1+2)
#          = 1/(6 sqrt 3) + 1/16 + 1/(6 sqrt 3) = 1/16 + 1/(3 sqrt 3) = 0.25495008972987526, support 3
#   (1,3): U_1 & U_3 = {u1,u3}: w1 w3/(1+3) = 1/16 = 0.0625, support 2   (u4 has item 3 only: in no pair)
#   (2,3): U_2 & U_3 = {u1,u3}: 1/16, support 2
SWING_ROWS = [
    imp(1, 1, 0),
    imp(1, 2, 1),
    imp(1, 3, 2),
    imp(2, 1, 0),
    imp(2, 2, 1),
    imp(3, 1, 0),
    imp(3, 2, 1),
    imp(3, 3, 2),
    imp(4, 3, 0),
]
SWING_CFG = SwingConfig(alpha=1.0, max_items_per_user=100, max_users_per_item=100, top_k=20)
_S12 = 1 / 16 + 1 / (3 * math.sqrt(3))
SWING_EXPECTED = [
    (1, 2, _S12, 3),
    (1, 3, 0.0625, 2),
    (2, 1, _S12, 3),
    (2, 3, 0.0625, 2),
    (3, 1, 0.0625, 2),
    (3, 2, 0.0625, 2),
]

# Swing caps (max_items_per_user = 2, max_users_per_item = 2, seed 0).
#   users 1..5 each on item 1; sample_hash(u, 1, 0) = (u * 2654435761 + 1 * 40503) mod 2^31:
#     u1 506992616, u2 1013944729, u3 1520896842, u4 2027848955, u5 387317420 -> keep u5 and u1
#   user 9: 11@0, 12@1, 13@2, 11@3 -> latest ts per item: 11@3, 13@2, 12@1 -> keep the 2 most recent: 11, 13
CAPS_ROWS = [imp(u, 1, 0) for u in range(1, 6)] + [imp(9, 11, 0), imp(9, 12, 1), imp(9, 13, 2), imp(9, 11, 3)]
CAPS_CFG = SwingConfig(max_items_per_user=2, max_users_per_item=2, seed=0)
CAPS_EXPECTED = [(1, 1), (5, 1), (9, 11), (9, 13)]  # (user_id, item_id)


def search(query, item, clicked, user=1, minute=0, **over):
    row = {
        "event_id": f"s{user}-{item}-{minute}-{query}",
        "search_id": f"q{minute}",
        "user_id": user,
        "ts": T0 + timedelta(minutes=minute),
        "query": query,
        "item_id": item,
        "position": 0,
        "clicked": clicked,
    }
    row.update(over)
    return row


# Query normalisation: NFKC, lowercase, runs of punctuation / symbols / spaces / controls -> " ", trim.
QUERY_CASES = [
    ("  Cats!!  ", "cats"),
    ("CATS", "cats"),
    ("\uff23\uff41\uff54\uff53", "cats"),  # fullwidth letters -> ASCII (NFKC)
    ("cats\u3000&  dogs", "cats dogs"),  # ideographic space and '&'
    ("Rock'n'Roll", "rock n roll"),
    ("\ufb01sh", "fish"),  # the 'fi' ligature -> 'fi' (NFKC)
    ("Caf\u00e9\u2014D\u00e9j\u00e0  vu", "caf\u00e9 d\u00e9j\u00e0 vu"),  # em dash; accents stay
    ("x\u00b2", "x2"),  # superscript two -> 2 (NFKC)
    ("tab\tnew\nline", "tab new line"),
    ("?!", ""),
]

# q2i (min_clicks 2): "cats" variants on item 100: clicked, clicked, not clicked, clicked -> clicks 3,
# impressions 4, score 0.75; "cats" on item 200: 1 click < 2 -> dropped; "dogs" on 300: 2/2 = 1.0.
# Rejected: "?!" (empty after normalisation), a null query, a null user_id.
Q2I_ROWS = [
    search("Cats!", 100, True, minute=1),
    search("cats", 100, True, minute=2),
    search("CATS", 100, False, minute=3),
    search("\uff23\uff41\uff54\uff53", 100, True, minute=4),
    search("cats", 200, True, minute=5),
    search("cats", 200, False, minute=6),
    search("dogs", 300, True, minute=7),
    search("dogs ", 300, True, minute=8),
    search("?!", 300, True, minute=9),
    search(None, 300, True, minute=10),
    search("dogs", 300, True, minute=11, user_id=None),
]
Q2I_EXPECTED = [("cats", 100, 3, 4, 0.75), ("dogs", 300, 2, 2, 1.0)]
Q2I_REJECTED = {"empty_query": 1, "null_value": 1, "null_id": 1}

# seq2item (L = 2, min_history 1, split at T0 + 1 day). User 1 positives, in minutes from T0:
#   item 1 @600, items 2 and 3 @660 (same ts), item 4 @720, item 5 @1980 (day 2), item 6 @2040 (day 2);
#   the click-only row (99 @690) is not positive.
#   target 1 @600:  no earlier positive -> dropped (min_history 1)
#   target 2 @660:  strictly earlier: [1]           -> train
#   target 3 @660:  [1] (item 2 has the same ts, so it is not "before") -> train
#   target 4 @720:  earlier 1, 2, 3 -> last 2 = [2, 3] -> train
#   target 5 @1980: earlier 1, 2, 3, 4 -> [3, 4] -> eval (ts >= split)
#   target 6 @2040: [4, 5] -> eval (an eval history may hold eval-period items)
#   Every train sample's target and history are before the split (660, 720 < 1440): no leakage.
SEQ_ROWS = [
    imp(1, 1, 600),
    imp(1, 2, 660),
    imp(1, 3, 660),
    imp(1, 99, 690, positive=False),
    imp(1, 4, 720),
    imp(1, 5, 1980),
    imp(1, 6, 2040),
]
SPLIT_TS = T0 + timedelta(days=1)
SEQ_CFG = Seq2ItemConfig(history_len=2, min_history=1, max_samples_per_user=10)
_m = lambda minute: T0 + timedelta(minutes=minute)  # noqa: E731
SEQ_EXPECTED = [
    (1, [1], 2, _m(660), "train"),
    (1, [1], 3, _m(660), "train"),
    (1, [2, 3], 4, _m(720), "train"),
    (1, [3, 4], 5, _m(1980), "eval"),
    (1, [4, 5], 6, _m(2040), "eval"),
]
# max_samples_per_user = 1: the most recent target per user and split -> train: item 4, eval: item 6
SEQ_CAP1_EXPECTED = [(1, [2, 3], 4, _m(720), "train"), (1, [4, 5], 6, _m(2040), "eval")]

# Malformed interactions: one row per reason, plus one good positive row.
BAD_ROWS = [
    imp(1, 10, 0),
    imp(None, 10, 1),
    imp(1, None, 2),
    imp(1, 10, 3, ts=None),
    imp(1, 10, 4, watch_ms=-5),
    imp(1, 10, 5, clicked=None),
]
BAD_EXPECTED = {"null_id": 2, "null_ts": 1, "negative_watch_ms": 1, "null_value": 1}

# ------------------------------------------------------------------------------------------------------------
# Spark helpers
# ------------------------------------------------------------------------------------------------------------


def nullable(schema: K.TableSchema) -> T.StructType:
    """The contract's Spark schema with every field nullable (so malformed rows can be built)."""
    return T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.to_spark().fields])


def sdf(spark, rows, schema=K.INTERACTIONS):
    return spark.createDataFrame([tuple(r[c] for c in schema.names) for r in rows], nullable(schema))


def positives(spark, rows):
    return (
        sdf(spark, rows)
        .transform(M.flag_interaction_rejects)
        .transform(M.drop_rejected)
        .transform(M.select_positive_events, PositiveConfig())
    )


def i2i_rows(expected, miner):
    return [Row(a, i, float(s), n, miner, D1, D2) for a, i, s, n in expected]


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------


def test_covisit_hand_case(spark):
    pos = positives(spark, COVISIT_ROWS)
    pairs = pos.transform(M.mine_covisit, COVISIT_CFG).cache()
    got = pairs.transform(M.top_k_pairs, COVISIT_CFG.top_k, "covisit", D1, D2)
    assertDataFrameEqual(got, i2i_rows(COVISIT_EXPECTED, "covisit"), rtol=1e-12)
    top1 = pairs.transform(M.top_k_pairs, 1, "covisit", D1, D2).select("anchor_item_id", "item_id")
    assertDataFrameEqual(top1, [Row(a, i) for a, i in COVISIT_TOP1])


def test_covisit_time_decay_takes_max_per_session(spark):
    got = positives(spark, DECAY_ROWS).transform(M.mine_covisit, DECAY_CFG)
    assertDataFrameEqual(got, [Row(a, i, s, n) for a, i, s, n in DECAY_EXPECTED], rtol=1e-12)


def test_swing_hand_case(spark):
    got = (
        positives(spark, SWING_ROWS)
        .transform(M.mine_swing, SWING_CFG)
        .transform(M.top_k_pairs, SWING_CFG.top_k, "swing", D1, D2)
    )
    assertDataFrameEqual(got, i2i_rows(SWING_EXPECTED, "swing"), rtol=1e-12)


def test_swing_shared_items_against_every_user_pair(spark):
    """Each user pair u < v sharing two or more capped items, with exactly those items, against a loop over every
    user pair (random edges: many pairs share one item, users with a single item, an item with a single user)."""
    rng = np.random.default_rng(5)
    edges = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 40, 300), rng.zipf(1.5, 300) % 30, strict=True)})
    edges.append((99, 999))  # a user (and an item) alone
    items_of: dict[int, set[int]] = {}
    for u, i in edges:
        items_of.setdefault(u, set()).add(i)
    want = {
        (u, v): (sorted(items_of[u] & items_of[v]), len(items_of[u]))
        for u in items_of
        for v in items_of
        if u < v and len(items_of[u] & items_of[v]) >= 2
    }
    got = spark.createDataFrame(edges, "user_id long, item_id long").transform(M.swing_shared_items).collect()
    assert 10 < len(want) < len(items_of) * (len(items_of) - 1) // 2  # some pairs share >= 2 items, not all
    assert {(r.u, r.v): (sorted(r["items"]), r.n_u) for r in got} == want
    assert len(got) == len(want)  # one row per pair


def test_swing_caps_keep_recent_items_and_hash_sampled_users(spark):
    got = positives(spark, CAPS_ROWS).transform(M.cap_user_items, CAPS_CFG)
    assertDataFrameEqual(got, [Row(u, i) for u, i in CAPS_EXPECTED])


def test_query_normalisation(spark):
    df = spark.createDataFrame([(q,) for q, _ in QUERY_CASES], "q string")
    got = df.select("q", M.normalize_query(df["q"]).alias("n"))
    assertDataFrameEqual(got, [Row(q, n) for q, n in QUERY_CASES])


def test_q2i_counts_min_support_and_rejections(spark):
    flagged = sdf(spark, Q2I_ROWS, K.SEARCHES).transform(M.flag_search_rejects).cache()
    rejected = {r[0]: r[1] for r in flagged.groupBy(M.REJECT).count().collect() if r[0] is not None}
    assert rejected == Q2I_REJECTED
    got = flagged.transform(M.drop_rejected).transform(M.mine_q2i, Q2IConfig(min_clicks=2))
    assertDataFrameEqual(got, [Row(*r) for r in Q2I_EXPECTED])


def test_seq2item_history_and_time_split(spark):
    pos = positives(spark, SEQ_ROWS).cache()
    got = pos.transform(M.build_seq2item, SEQ_CFG, SPLIT_TS)
    assertDataFrameEqual(got, spark.createDataFrame(SEQ_EXPECTED, nullable(K.SEQ2ITEM)))
    capped = pos.transform(M.build_seq2item, Seq2ItemConfig(history_len=2, max_samples_per_user=1), SPLIT_TS)
    assertDataFrameEqual(capped, spark.createDataFrame(SEQ_CAP1_EXPECTED, nullable(K.SEQ2ITEM)))


def test_interaction_rejections_are_counted(spark):
    flagged = sdf(spark, BAD_ROWS).transform(M.flag_interaction_rejects)
    got = {r[0]: r[1] for r in flagged.groupBy(M.REJECT).count().collect()}
    assert got == {None: 1, **BAD_EXPECTED}


# ------------------------------------------------------------------------------------------------------------
# The entry point and the I/O module
# ------------------------------------------------------------------------------------------------------------


def write_raw(rows, schema: K.TableSchema, path):
    """Writes rows as a parquet table dir WITHOUT the contract's null checks (to build malformed inputs)."""
    path.mkdir(parents=True)
    arrow = pa.schema([f.with_nullable(True) for f in schema.to_arrow()])
    cols = {c: [r[c] for r in rows] for c in schema.names}
    pq.write_table(pa.table(cols, schema=arrow), path / "part-00000.parquet")
    (path / "_SUCCESS").touch()


def make_dataset(tmp_path, interactions, searches):
    data = tmp_path / "data"
    write_raw(interactions, K.INTERACTIONS, data / "interactions")
    write_raw(searches, K.SEARCHES, data / "searches")
    return data


def test_run_spark_writes_tables_atomically_with_counts(spark, tmp_path):
    from core.io import read_table
    from mining.mine_pairs import run

    # Given: the co-visitation rows plus malformed rows, and the q2i searches
    data = make_dataset(tmp_path, COVISIT_ROWS + BAD_ROWS[1:], Q2I_ROWS)
    cfg = MiningConfig(data_dir=str(data), out_dir=str(tmp_path / "out"), engine="spark", covisit=COVISIT_CFG)
    # When
    res = run(cfg, spark=spark)
    # Then: every table is complete, conforms to its contract, and the counts are in mining.json
    for name, schema in (("i2i_pairs", K.I2I_PAIRS), ("q2i_pairs", K.Q2I_PAIRS), ("seq2item", K.SEQ2ITEM)):
        assert (res.paths[name] / "_SUCCESS").exists()
        read_table(res.paths[name], schema)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp dirs left
    c = res.counts
    assert c["input_rows"] == {"interactions": len(COVISIT_ROWS) + 5, "searches": len(Q2I_ROWS)}
    assert c["rejected"] == {"interactions": BAD_EXPECTED, "searches": Q2I_REJECTED}
    assert c["pairs"]["i2i"]["covisit"] == len(COVISIT_EXPECTED)
    assert c["pairs"]["q2i"] == len(Q2I_EXPECTED)
    assert c["date_from"] == c["date_to"] == "2025-03-03"
    i2i = read_table(res.paths["i2i_pairs"], K.I2I_PAIRS).to_pylist()
    cov = sorted((r["anchor_item_id"], r["item_id"], r["support"]) for r in i2i if r["miner"] == "covisit")
    assert cov == sorted((a, i, n) for a, i, _, n in COVISIT_EXPECTED)


def test_missing_column_is_a_clear_error(spark, tmp_path):
    from core.spark_io import read_contract_table

    path = tmp_path / "interactions"
    path.mkdir()
    pq.write_table(pa.table({"user_id": [1], "item_id": [2]}), path / "part-0.parquet")
    (path / "_SUCCESS").touch()
    with pytest.raises(SchemaError, match=r"interactions.*missing column\(s\) \['event_id'"):
        read_contract_table(spark, path, K.INTERACTIONS)


def test_wrong_type_names_the_column(spark, tmp_path):
    from core.spark_io import read_contract_table

    path = tmp_path / "searches"
    rows = [search("cats", 1, True)]
    cols = {c: [r[c] for r in rows] for c in K.SEARCHES.names}
    cols["item_id"] = ["not-an-id"]
    path.mkdir()
    pq.write_table(pa.table(cols), path / "part-0.parquet")
    (path / "_SUCCESS").touch()
    with pytest.raises(SchemaError, match=r"column 'item_id'.*string.*bigint"):
        read_contract_table(spark, path, K.SEARCHES)


def test_write_contract_table_replaces_atomically(spark, tmp_path):
    from core.io import read_table
    from core.spark_io import write_contract_table

    out = tmp_path / "q2i_pairs"
    df = spark.createDataFrame(
        [("cats", 1, 2, 4, 0.5, "extra")],
        "query string, item_id long, clicks long, impressions long, score double, junk string",
    )
    write_contract_table(df, K.Q2I_PAIRS, out)
    write_contract_table(df.withColumn("clicks", df["clicks"] + 1), K.Q2I_PAIRS, out)  # a re-run replaces it
    got = read_table(out, K.Q2I_PAIRS)
    assert got.column_names == K.Q2I_PAIRS.names and got.column("clicks").to_pylist() == [3]
    assert (out / "_SUCCESS").exists() and [p.name for p in tmp_path.iterdir()] == ["q2i_pairs"]
