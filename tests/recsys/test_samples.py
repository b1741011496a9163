"""Ranking samples: point-in-time joins (no feature from after an impression), counters, history and splits."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from core.contracts import INTERACTIONS, ITEM_FEATURES, ITEMS
from recsys.features import RANKING_SAMPLES_EXT
from recsys.samples import build_ranking_samples, split_days

pytestmark = pytest.mark.spark

UTC = dt.UTC


def _ts(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def _imp(eid, user, item, ts, clicked, finished=False, request=None, position=0):
    req = request or "r" + eid
    return (eid, req, user, item, ts, "feed", position, 0.1, clicked, 1000, finished, False, False)


@pytest.fixture(scope="module")
def tables(spark):
    items = spark.createDataFrame(
        [
            (1, _ts(1, 0), 100, "a", "t1", None, None, [], 5000, None, [], None),
            (2, _ts(1, 0), 200, "b", "t2", None, None, [], 5000, None, [], None),
            (3, _ts(3, 6), 100, "a", "t3", None, None, [], 5000, None, [], None),
        ],
        ITEMS.to_spark(),
    )
    interactions = spark.createDataFrame(
        [
            _imp("e1", 7, 1, _ts(2, 10), True),  # day 2: user 7 clicks item 1
            _imp("e2", 7, 2, _ts(2, 10), False),  # same ts as the click: the click is not "before" it
            _imp("e3", 7, 2, _ts(3, 9), True, True),  # day 3
            _imp("e4", 7, 1, _ts(3, 12), False),  # after the feature row v2 of item 1 (stamped day 3, 11:00)
            _imp("e5", 8, 3, _ts(4, 8), False),  # item 3's only feature row is stamped day 5: never joined
            _imp("e6", 8, 1, _ts(4, 9), True, request="q"),
            _imp("e7", 8, 2, _ts(4, 9, 1), False, request="q", position=1),  # same slate as e6, a minute later
        ],
        INTERACTIONS.to_spark(),
    )
    made = _ts(6, 0)
    features = spark.createDataFrame(
        [
            (1, [1.0, 0.0], [1, 1], "v", _ts(1, 0), made),
            (1, [0.0, 1.0], [2, 2], "v", _ts(3, 11), made),  # a later row for item 1
            (2, [1.0, 0.0], [3, 3], "v", _ts(1, 0), made),
            (3, [0.6, 0.8], [4, 4], "v", _ts(5, 0), made),  # stamped after every impression of item 3
        ],
        ITEM_FEATURES.to_spark(),
    )
    return interactions, items, features


@pytest.fixture(scope="module")
def samples(tables):
    interactions, items, features = tables
    df = build_ranking_samples(
        interactions,
        items,
        features,
        valid_start=dt.date(2025, 3, 3),
        test_start=dt.date(2025, 3, 4),
        recent_len=2,
        embedding_dim=2,
    )
    assert df.columns == RANKING_SAMPLES_EXT.names  # exactly the extended contract, in order
    return {r["event_id"]: r for r in df.collect()}


def test_feature_row_stamped_after_the_impression_is_never_joined(samples):
    # item 3's only row is stamped day 5; its impression is on day 4
    assert samples["e5"]["sail_embedding"] is None
    assert samples["e5"]["semantic_ids"] is None
    # item 1 has rows stamped day 1 and day 3 11:00: e1 (day 2) gets the first, e4 / e6 (later) the second
    assert samples["e1"]["sail_embedding"] == [1.0, 0.0]
    assert samples["e1"]["semantic_ids"] == [1, 1]
    assert samples["e4"]["sail_embedding"] == [0.0, 1.0]
    assert samples["e6"]["semantic_ids"] == [2, 2]


def test_recent_items_are_strictly_before_ts(samples):
    assert samples["e1"]["user_recent_items"] == []
    assert samples["e2"]["user_recent_items"] == []  # the click at the same ts is not before it
    assert samples["e3"]["user_recent_items"] == [1]
    assert samples["e4"]["user_recent_items"] == [1, 2]
    assert samples["e6"]["user_recent_items"] == []
    assert samples["e7"]["user_recent_items"] == []  # e6's click is on the same slate: unknown at request time


def test_history_similarity_uses_vectors_valid_at_ts(samples):
    # e4: target item 1 at day 3 12:00 -> [0, 1]; history items 1 -> [0, 1] (v2 valid), 2 -> [1, 0]
    assert samples["e4"]["user_hist_sim"] == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    # e3: target item 2 at day 3 09:00 -> [1, 0]; history item 1 -> [1, 0] (v2 not yet valid)
    assert samples["e3"]["user_hist_sim"] == pytest.approx(1.0, rel=1e-5)
    assert samples["e1"]["user_hist_sim"] is None  # no history


def test_counters_count_earlier_days_only(samples):
    # e4 is item 1 on day 3: item 1 had 1 impression, 1 click on day 2; user 7 had 2 impressions, 1 click
    e4 = samples["e4"]
    assert (e4["item_imps_before"], e4["item_clicks_before"]) == (1, 1)
    assert (e4["user_imps_before"], e4["user_clicks_before"]) == (2, 1)
    # e6 is item 1 on day 4: day 2 (1 imp, 1 click) + day 3 (1 imp, 0 clicks)
    assert (samples["e6"]["item_imps_before"], samples["e6"]["item_clicks_before"]) == (2, 1)
    assert (samples["e7"]["item_imps_before"], samples["e7"]["item_clicks_before"]) == (2, 1)  # item 2: e2, e3
    assert (samples["e1"]["item_imps_before"], samples["e1"]["user_clicks_before"]) == (0, 0)


def test_labels_split_and_context(samples):
    assert [samples[e]["split"] for e in ("e1", "e3", "e5")] == ["train", "valid", "test"]
    assert (samples["e3"]["label_click"], samples["e3"]["label_finish"]) == (1, 1)
    assert samples["e5"]["item_age_hours"] == pytest.approx(26.0)
    assert (samples["e4"]["hour"], samples["e4"]["author_id"], samples["e4"]["category"]) == (12, 100, "a")


def test_split_days_holds_out_the_last_days():
    assert split_days(dt.date(2025, 3, 1), dt.date(2025, 3, 14), 2, 3) == (dt.date(2025, 3, 10), dt.date(2025, 3, 12))
    with pytest.raises(ValueError, match="cannot hold out"):
        split_days(dt.date(2025, 3, 1), dt.date(2025, 3, 3), 2, 1)


def test_history_similarity_at_minilm_width_matches_numpy(spark):
    """384-wide vectors (the pretrained start's width): one flat array expression, the cosine numpy gives."""
    from recsys.samples import add_history_similarity

    rng = np.random.default_rng(3)
    dim, t0 = 384, _ts(1, 0)
    vecs = {i: rng.normal(size=dim).astype(np.float32) for i in range(1, 5)}
    intervals = spark.createDataFrame(
        [(i, v.tolist(), t0, _ts(9, 0)) for i, v in vecs.items()],
        "item_id long, embedding array<float>, valid_from timestamp, valid_to timestamp",
    )
    rows = [("a", _ts(2, 0), vecs[1].tolist(), [2, 3]), ("b", _ts(2, 0), vecs[4].tolist(), [4]),
            ("c", _ts(2, 0), None, [1]), ("d", _ts(2, 0), vecs[2].tolist(), [])]  # fmt: skip
    imps = spark.createDataFrame(rows, "event_id string, ts timestamp, sail_embedding array<float>, "
                                 "user_recent_items array<long>")  # fmt: skip
    got = {r["event_id"]: r["user_hist_sim"] for r in add_history_similarity(imps, intervals, dim).collect()}
    h = vecs[2].astype(np.float64) + vecs[3]
    want = float(vecs[1] @ h / (np.linalg.norm(vecs[1]) * np.linalg.norm(h)))
    assert got["a"] == pytest.approx(want, rel=1e-5) and got["b"] == pytest.approx(1.0, rel=1e-5)
    assert got["c"] is None and got["d"] is None  # no target vector; no history


def test_matryoshka_prefix_is_the_renormalised_head(spark):
    from recsys.samples import matryoshka_prefix

    rows = [(1, [3.0, 4.0, 12.0]), (2, [0.0, 0.0, 1.0]), (3, None)]
    df = spark.createDataFrame(rows, "item_id long, embedding array<float>")
    got = {r["item_id"]: r["e"] for r in df.select("item_id", matryoshka_prefix("embedding", 2).alias("e")).collect()}
    assert got[1] == pytest.approx([0.6, 0.8]) and got[2] == [0.0, 0.0] and got[3] is None


def test_lookup_engine_equals_the_spark_join_reference(spark):
    """Random log and feature rows (several rows per item, some stamped mid-log, some items without any): the
    broadcast lookup gives the plain Spark join's rows, vectors and history similarity."""
    rng = np.random.default_rng(11)
    n_items, dim = 30, 5
    items = spark.createDataFrame(
        [(i, _ts(1, 0), 100 + i % 4, "c", f"t{i}", None, None, [], 5000, None, [], None) for i in range(n_items)],
        ITEMS.to_spark(),
    )
    imps = []
    for k in range(600):
        day, hour, minute = int(rng.integers(1, 9)), int(rng.integers(0, 24)), int(rng.integers(0, 60))
        imps.append(_imp(f"e{k}", int(rng.integers(0, 25)), int(rng.integers(0, n_items)), _ts(day, hour, minute),
                         bool(rng.random() < 0.4)))  # fmt: skip
    interactions = spark.createDataFrame(imps, INTERACTIONS.to_spark())
    feats = []
    for i in range(n_items - 5):  # the last five items have no row
        for d in sorted(rng.choice(np.arange(1, 8), size=int(rng.integers(1, 4)), replace=False)):
            feats.append((i, rng.normal(size=dim).astype(np.float32).tolist(), [i, int(d)], "v", _ts(int(d), 12),
                          _ts(9, 0)))  # fmt: skip
    features = spark.createDataFrame(feats, ITEM_FEATURES.to_spark())
    kw = dict(valid_start=dt.date(2025, 3, 6), test_start=dt.date(2025, 3, 7), recent_len=3, embedding_dim=dim,
              train_start=dt.date(2025, 3, 3))  # fmt: skip
    got = {
        engine: {
            r["event_id"]: r
            for r in build_ranking_samples(interactions, items, features, sail_engine=engine, **kw).collect()
        }  # fmt: skip
        for engine in ("lookup", "join")
    }
    assert got["lookup"].keys() == got["join"].keys() and len(got["join"]) > 300
    sims = 0
    for eid, want in got["join"].items():
        row = got["lookup"][eid]
        for col in RANKING_SAMPLES_EXT.names:
            if col == "user_hist_sim" and want[col] is not None:
                assert row[col] == pytest.approx(want[col], rel=1e-5, abs=1e-6)
                sims += 1
            else:
                assert row[col] == want[col], (eid, col)
    assert sims > 100  # the comparison covered rows with a history similarity
    with pytest.raises(ValueError, match="sail_engine"):
        build_ranking_samples(interactions, items, features, sail_engine="hash", **kw)
