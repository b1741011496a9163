"""A trained ranker as an A/B arm: serving rows match the samples job's rows, the batched scoring path matches the
training run's test scores, a tiny-world A/B runs end to end with the scorer's counters kept exact, and missing
inputs fail with errors that name them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from safetensors.torch import save_file

from core.contracts import INTERACTIONS, ITEM_FEATURES, ITEMS
from core.io import read_table, write_table
from offline_eval.ab_sim import (
    ABConfig,
    ABSimulator,
    Arm,
    LoggedPolicyScorer,
    RandomScorer,
    ScoringContext,
    assign_arms,
    run_ab,
)
from offline_eval.serve import (
    DAY_US,
    ClickLog,
    ItemFeatureStore,
    RankerScorer,
    ServingBatch,
    combine_heads,
    feature_table,
    load_ranker_arm,
    load_trained_ranker,
    merge_checkpoint,
    score_encoded,
)
from recsys.data import load_samples, split_of
from recsys.model import RankerConfig
from recsys.samples import SamplesConfig
from recsys.samples import run as build_samples
from recsys.standin import write_standin_features
from recsys.train import TrainConfig, train_ranker
from sources.world import WorldConfig

pytestmark = pytest.mark.spark

TINY = WorldConfig.for_size("tiny", seed=7)  # the world of the tiny_world_and_work fixture
SMALL = RankerConfig(
    embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16,), tower_hidden=8
)
RECENT_LEN = 10  # the samples job's default


@dataclass(frozen=True)
class Built:
    world: Path
    features: Path
    samples: Path
    variants: dict[str, Path]


@pytest.fixture(scope="module")
def built(tiny_world_and_work, spark, interpreted_stages, tmp_path_factory) -> Built:
    """The tiny world's stand-in features, its ranking samples (Spark) and two tiny trained variants."""
    world, _, _ = tiny_world_and_work
    base = tmp_path_factory.mktemp("serve")
    features = base / "item_features"
    write_standin_features(world, features, dim=8, levels=2, codebook_size=8)
    res = build_samples(SamplesConfig(data_dir=world, out_dir=base / "samples", item_features_dir=features), spark)
    variants = {}
    for v in ("control", "both"):
        cfg = TrainConfig(
            samples_dir=res.ext_path,
            out_dir=base / v,
            variant=v,
            ranker=SMALL,
            epochs=2,
            batch_size=256,
            sid_levels=2,
            eval_batch_size=4096,
            export_item_table=False,
        )
        variants[v] = train_ranker(cfg).out_dir
    return Built(world, features, res.ext_path, variants)


def _interactions(world: Path) -> pl.DataFrame:
    return pl.read_parquet(world / "interactions" / "*.parquet").with_columns(
        ts_us=pl.col("ts").dt.epoch("us"), clicked=pl.col("clicked").cast(pl.Int64)
    )


# ------------------------------------------------------------------------------------------ small pieces


def test_recent_clicks_match_a_per_query_scan():
    # Given clicks of two users (user 1 has one at ts 9, the same ts as a query) and a non-click
    rows = {
        "event_id": ["a", "b", "c", "d", "e", "f"],
        "user_id": [1, 1, 1, 2, 1, 1],
        "item_id": [10, 11, 12, 20, 13, 99],
        "ts": [5, 1, 9, 3, 7, 2],
        "clicked": [True, True, True, True, True, False],
    }
    log = ClickLog.from_table(pa.table(rows), Path("memory"))
    users, before = np.array([1, 1, 1, 2, 3, 1]), np.array([9, 100, 1, 4, 50, 6])
    # When the recent clicks of each query are looked up
    got = log.recent_clicks(users, before, 3)
    # Then each row holds the user's clicks strictly before the query (hand-computed), the last 3, oldest first
    assert got.tolist() == [
        [11, 10, 13],  # user 1 before ts 9: the click at ts 9 is not before it
        [10, 13, 12],
        [-1, -1, -1],
        [-1, -1, 20],
        [-1, -1, -1],  # a user without clicks
        [-1, 11, 10],  # the non-click at ts 2 is not history
    ]


def test_feature_store_joins_the_row_valid_at_ts(tmp_path):
    # Given item 1 with rows stamped at 10 and 20 (20 written twice: the later write wins) and item 2 stamped at 30
    t = pa.table(
        {
            "item_id": [1, 1, 1, 2],
            "embedding": pa.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], pa.list_(pa.float32())),
            "semantic_ids": pa.array([[1, 1], [2, 2], [3, 3], [4, 4]], pa.list_(pa.int32())),
            "model_version": ["v"] * 4,
            "event_timestamp": pa.array([10, 20, 20, 30]).cast(pa.timestamp("us", tz="UTC")),
            "created": pa.array([1, 1, 2, 1]).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    write_table(t, ITEM_FEATURES, tmp_path / "f")
    store = ItemFeatureStore.load(tmp_path / "f")
    rows = store.rows_at(np.array([1, 1, 1, 2, 2, 3]), np.array([9, 15, 25, 29, 30, 99]))
    assert rows[0] == -1 and rows[3] == -1 and rows[5] == -1  # before the first stamp; an item with no row
    assert store.vectors[rows[1]].tolist() == [1.0, 0.0]
    assert store.semantic_ids[int(rows[2])].as_py() == [3, 3]  # the row written last of the two stamped at 20
    assert store.vectors[rows[4]].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"no row for 1 item\(s\), e.g. \[3\]"):
        store.require(np.array([1, 2, 3]))


def test_feature_store_serves_the_prefix_the_samples_carried(tmp_path, spark):
    from recsys.samples import matryoshka_prefix

    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(4, 6)).astype(np.float32)
    vecs[3, :3] = 0.0  # a zero prefix stays zero
    t = pa.table(
        {
            "item_id": [1, 2, 3, 4],
            "embedding": pa.array(vecs.tolist(), pa.list_(pa.float32())),
            "semantic_ids": pa.array([[1], [2], [3], [4]], pa.list_(pa.int32())),
            "model_version": ["v"] * 4,
            "event_timestamp": pa.array([10] * 4).cast(pa.timestamp("us", tz="UTC")),
            "created": pa.array([1] * 4).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    write_table(t, ITEM_FEATURES, tmp_path / "f")
    store = ItemFeatureStore.load(tmp_path / "f", prefix=3)
    assert store.dim == 3 and len(store.embedding[0].as_py()) == 3
    # the same vectors as the samples job's Spark expression on the same rows
    df = spark.createDataFrame([(i + 1, v.tolist()) for i, v in enumerate(vecs)], "item_id long, e array<float>")
    want = {r["item_id"]: r["p"] for r in df.select("item_id", matryoshka_prefix("e", 3).alias("p")).collect()}
    for row, item in enumerate(store.item_ids.tolist()):
        np.testing.assert_allclose(store.vectors[row], want[item], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(store.embedding[row].as_py(), want[item], rtol=1e-6, atol=1e-7)
    assert ItemFeatureStore.load(tmp_path / "f", prefix=6).dim == 6 and ItemFeatureStore.load(tmp_path / "f").dim == 6


def test_merge_checkpoint_places_shards_of_every_rank(tmp_path):
    # Given a two-rank checkpoint: dense tensors on both ranks, one table whole on rank 1, one split by rows
    a, b = torch.arange(12.0).reshape(6, 2), torch.arange(8.0).reshape(2, 4)
    dense = torch.ones(3)
    p = "model/model."
    save_file(
        {p + "over.w": dense, p + "emb.t_b.weight::shard::0,0": b[:1].contiguous(), "dense_opt/0/step": torch.ones(1)},
        str(tmp_path / "rank0.safetensors"),
    )
    save_file(
        {
            p + "over.w": dense,
            p + "emb.t_a.weight::shard::0,0": a,
            p + "emb.t_b.weight::shard::1,0": b[1:].contiguous(),
        },
        str(tmp_path / "rank1.safetensors"),
    )
    merged = merge_checkpoint(tmp_path, world_size=2)
    assert set(merged) == {"over.w", "emb.t_a.weight", "emb.t_b.weight"}
    assert torch.equal(merged["emb.t_a.weight"], a) and torch.equal(merged["emb.t_b.weight"], b)
    with pytest.raises(FileNotFoundError, match="rank2.safetensors"):
        merge_checkpoint(tmp_path, world_size=3)


def test_heads_combine_as_documented():
    logits = np.array([[1.0, 3.0], [-2.0, 0.0]])  # (N, T): click, finish
    assert combine_heads(logits, "click").tolist() == [1.0, -2.0]
    assert combine_heads(logits, "finish").tolist() == [3.0, 0.0]
    assert combine_heads(logits, "blend", finish_weight=0.25).tolist() == [1.5, -1.5]
    with pytest.raises(ValueError, match="unknown head"):
        combine_heads(logits, "watch")


# ------------------------------------------------------------------------------------------------- parity


def test_scoring_path_reproduces_the_training_runs_test_scores(built):
    test = split_of(load_samples(built.samples), "test")
    for variant, vdir in built.variants.items():
        ranker = load_trained_ranker(vdir)
        probs = torch.sigmoid(torch.from_numpy(score_encoded(ranker, ranker.encoder.encode(test), 777))).numpy()
        with np.load(vdir / "scores.npz") as z:
            np.testing.assert_allclose(probs[:, 0], z["test_click"], atol=1e-6, err_msg=variant)
            np.testing.assert_allclose(probs[:, 1], z["test_finish"], atol=1e-6, err_msg=variant)


def _serving_batch_for_samples(built: Built, rows: pa.Table) -> ServingBatch:
    """The serving batch (one request per impression) of sample rows, from the state of the log at their time:
    counters over the days before each row's day, recent clicks before its request's first impression."""
    log = ClickLog.load(built.world)
    items = read_table(built.world / "items", ITEMS)
    item_ids = items.column("item_id").to_numpy()
    inter = _interactions(built.world)
    request_ts = inter.select("event_id", request_ts=pl.col("ts_us").min().over("request_id"))
    ev = pl.from_arrow(rows.select(["event_id"])).join(request_ts, on="event_id", how="left")
    user = rows.column("user_id").to_numpy()
    item = rows.column("item_id").to_numpy()
    ts = pc.cast(rows.column("ts"), pa.int64()).to_numpy()
    day_start = ts // DAY_US * DAY_US
    counters = {k: np.zeros(len(ts), np.int64) for k in ("ii", "ic", "ui", "uc")}
    for d in np.unique(day_start):  # the state of each day: counts of the log before its midnight
        at = day_start == d
        ii, ic = log.counters("item", item_ids, int(d))
        users = np.unique(user[at])
        ui, uc = log.counters("user", users, int(d))
        idx = np.searchsorted(item_ids, item[at])
        counters["ii"][at], counters["ic"][at] = ii[idx], ic[idx]
        uidx = np.searchsorted(users, user[at])
        counters["ui"][at], counters["uc"][at] = ui[uidx], uc[uidx]
    pos = np.searchsorted(item_ids, item)
    return ServingBatch(
        user_id=user,
        ts_us=ts,
        recent=log.recent_clicks(user, ev["request_ts"].to_numpy(), RECENT_LEN),
        user_imps=counters["ui"],
        user_clicks=counters["uc"],
        item_id=item[:, None],
        author_id=items.column("author_id").to_numpy()[pos][:, None],
        category=np.array(items.column("category").to_pylist(), dtype=object)[pos][:, None],
        created_us=pc.cast(items.column("created_ts"), pa.int64()).to_numpy()[pos][:, None],
        item_imps=counters["ii"][:, None],
        item_clicks=counters["ic"][:, None],
    )


def test_serving_rows_match_the_samples_rows_built_by_spark(built):
    # Given the impressions of three days of the samples table (Spark) and the log's state at their time
    samples = load_samples(built.samples)
    days = sorted(set(samples.column("date").to_pylist()))
    rows = samples.filter(pc.is_in(samples.column("date"), pa.array([days[1], days[7], days[-1]])))
    batch = _serving_batch_for_samples(built, rows)
    store = ItemFeatureStore.load(built.features)
    # When the scorer's feature assembly builds their rows
    got = feature_table(batch, store, position=0, surface="feed")
    # Then every feature the model reads equals the samples job's, position aside (the scorer's is a constant)
    assert got.num_rows == rows.num_rows > 3000
    exact = [
        "user_id",
        "item_id",
        "author_id",
        "category",
        "hour",
        "surface",
        "user_recent_items",
        "item_created_ts",
        "item_imps_before",
        "item_clicks_before",
        "user_imps_before",
        "user_clicks_before",
        "sail_embedding",
        "semantic_ids",
        "sail_model_version",
    ]
    for name in exact:
        assert got.column(name).to_pylist() == rows.column(name).to_pylist(), name
    assert sum(len(r) > 0 for r in got.column("user_recent_items").to_pylist()) > 1000  # histories were compared
    np.testing.assert_allclose(got.column("item_age_hours").to_numpy(), rows.column("item_age_hours").to_numpy())
    sim_got, sim_exp = got.column("user_hist_sim"), rows.column("user_hist_sim")
    assert sim_got.is_null().to_pylist() == sim_exp.is_null().to_pylist()
    np.testing.assert_allclose(
        pc.fill_null(sim_got, 0.0).to_numpy(), pc.fill_null(sim_exp, 0.0).to_numpy(), rtol=1e-5, atol=1e-6
    )
    # And with the samples' positions, the model gives the same logits for both rows
    got = got.set_column(got.schema.get_field_index("position"), "position", rows.column("position"))
    for vdir in built.variants.values():
        ranker = load_trained_ranker(vdir)
        mine = score_encoded(ranker, ranker.encoder.encode(got))
        theirs = score_encoded(ranker, ranker.encoder.encode(rows))
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- A/B runs


def _warm_sim(arms: list[Arm]) -> ABSimulator:
    sim = ABSimulator(TINY, arms, salt="serve-test")
    sim.warm_start()
    return sim


def test_first_experiment_day_counts_the_log_like_the_samples_job(built):
    # Given a scorer and the simulator at the end of the warm start
    scorer = RankerScorer(built.variants["both"], built.features, log_dir=built.world)
    sim = _warm_sim([Arm("a", RandomScorer()), Arm("b", scorer)])
    users = np.arange(0, len(sim.pop), 7)
    cand = np.tile(np.arange(20), (len(users), 1))
    cand[:, 17:] = -1
    # When it scores a batch on the first experiment day
    out = scorer.score(ScoringContext(TINY.days, users, cand, sim))
    # Then its counters are the log's counts (polars, over every logged day) and its history the last 10 clicks
    assert out.shape == cand.shape and np.isfinite(out).all() and (out[:, 17:] == 0).all()
    inter = _interactions(built.world)
    per_item = inter.group_by("item_id").agg(n=pl.len(), c=pl.col("clicked").sum())
    imps = np.zeros(len(sim.cat), np.int64)
    clicks = np.zeros(len(sim.cat), np.int64)
    imps[per_item["item_id"].to_numpy() - 1] = per_item["n"].to_numpy()
    clicks[per_item["item_id"].to_numpy() - 1] = per_item["c"].to_numpy()
    st = scorer.state
    np.testing.assert_array_equal(st.item_imps, imps)
    np.testing.assert_array_equal(st.item_clicks, clicks)
    last = inter.filter(pl.col("clicked") == 1).sort("ts_us").group_by("user_id").agg(pl.col("item_id").tail(10))
    for u, hist in zip(last["user_id"].to_list(), last["item_id"].to_list(), strict=True):
        assert [i for i in st.log_recent[u - 1] if i >= 0] == hist
    batch = scorer.batch(ScoringContext(TINY.days, users, cand, sim))
    assert (batch.ts_us % DAY_US == 12 * 3_600_000_000).all()  # the documented serving hour


def test_tiny_ab_with_a_ranker_arm_runs_end_to_end_and_keeps_counters_exact(built):
    # Given control = the logged policy and treatment = the +both ranker (log: the samples table of train.json)
    days = 7
    arm = load_ranker_arm(built.variants["both"], built.features, "ranker")
    # When a 7-day experiment runs
    res = run_ab(TINY, [Arm("control", LoggedPolicyScorer()), arm], ABConfig(days=days, n_boot=50))
    # Then every metric has a lift with an interval around its estimate
    lifts = res.lifts["ranker"]
    assert set(lifts) == {"lt7", "dau_share", "clicks_per_active_day", "watch_s_per_active_day", "satisfaction"}
    for name, iv in lifts.items():
        assert np.isfinite(iv.estimate) and iv.low <= iv.estimate <= iv.high, name
    assert res.daily.height == 2 * days and [a.name for a in res.arms] == ["control", "ranker"]
    # And the scorer's counters are the log's plus every experiment day but the last (it is never asked after it)
    inter = _interactions(built.world)
    seen = res.daily.filter(pl.col("day") < days - 1)
    st = arm.scorer.state
    assert st.day == TINY.days + days - 1
    assert st.item_imps.sum() == inter.height + seen["impressions"].sum()
    assert st.item_clicks.sum() == st.user_clicks.sum() == inter["clicked"].sum() + seen["clicks"].sum()
    sim_users = assign_arms(np.arange(1, TINY.n_users + 1), [0.5, 0.5], ABConfig().salt) == 1
    log_user_imps = np.bincount(inter["user_id"].to_numpy() - 1, minlength=sim_users.size)
    ranker_seen = seen.filter(pl.col("arm") == "ranker")["impressions"].sum()
    assert st.user_imps[sim_users].sum() == log_user_imps[sim_users].sum() + ranker_seen


# ----------------------------------------------------------------------------------------------- bad inputs


def test_a_variant_without_checkpoint_or_encoder_is_refused(built, tmp_path):
    v = tmp_path / "v"
    shutil.copytree(built.variants["both"], v)
    shutil.rmtree(v / "checkpoints")
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        RankerScorer(v, built.features)
    shutil.copytree(built.variants["both"] / "checkpoints", v / "checkpoints")
    (v / "encoder.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no encoder.json"):
        load_trained_ranker(v)
    with pytest.raises(FileNotFoundError, match="directory not found"):
        load_trained_ranker(tmp_path / "nothing")


def test_item_features_missing_an_item_are_refused_at_the_first_request(built, tmp_path):
    full = read_table(built.features, ITEM_FEATURES)
    write_table(full.filter(pc.not_equal(full.column("item_id"), 17)), ITEM_FEATURES, tmp_path / "f")
    scorer = RankerScorer(built.variants["both"], tmp_path / "f", log_dir=built.world)
    sim = ABSimulator(TINY, [Arm("a", RandomScorer()), Arm("b", scorer)], salt="x")
    ctx = ScoringContext(TINY.days, np.array([0]), np.array([[0, 1, 2]]), sim)
    with pytest.raises(ValueError, match=r"no row for 1 item\(s\), e.g. \[17\]"):
        scorer.score(ctx)


def test_a_log_of_another_world_is_refused(built, tmp_path):
    # Given a log that lacks the last logged day
    inter = read_table(built.world / "interactions", INTERACTIONS)
    last_day = pc.max(pc.cast(inter.column("ts"), pa.int64())).as_py() // DAY_US
    keep = pc.less(pc.cast(inter.column("ts"), pa.int64()), last_day * DAY_US)
    write_table(inter.filter(keep), INTERACTIONS, tmp_path / "w" / "interactions")
    scorer = RankerScorer(built.variants["control"], built.features, log_dir=tmp_path / "w")
    sim = _warm_sim([Arm("a", RandomScorer()), Arm("b", scorer)])
    with pytest.raises(ValueError, match="not the log this world's warm start replays"):
        scorer.score(ScoringContext(TINY.days, np.array([0]), np.array([[0, 1, 2]]), sim))


def test_a_saved_config_from_before_the_interaction_setting_loads_as_dcnv2():
    from offline_eval.serve import _ranker_config

    old = _ranker_config({"embedding_dim": 8, "dense_layers": [16], "over_layers": [16, 8]})
    assert old.interaction == "dcn" and old.dense_layers == (16,)
    assert _ranker_config({"embedding_dim": 8, "interaction": "dcn_dot"}).interaction == "dcn_dot"
