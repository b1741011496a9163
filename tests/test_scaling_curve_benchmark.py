"""The scaling-curve benchmark: the per-size configs, the growth ratios against hand-worked numbers, and (slow) a
one-size run of the smoke config end to end."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from benchmarks import scaling_curve


def _row(size: str, interactions: int, items: int, rows: int, seconds: dict[str, float]) -> dict:
    stages = {s: {"seconds": seconds.get(s, 1.0), "peak_rss_mb": 100} for s in scaling_curve.DRIVERS}
    drivers = {"interactions": interactions, "items": items, "ranker_train_rows": rows, "steps": 245}
    return {"size": size, "drivers": drivers, "stages": stages}


def test_growth_divides_the_time_ratio_by_the_drivers_size_ratio():
    a = _row("s", 1_000, 100, 500, {"mine": 10.0, "embed": 4.0, "train_embedding": 30.0})
    b = _row("m", 3_000, 400, 1_000, {"mine": 45.0, "embed": 12.0, "train_embedding": 60.0})
    g = {r["stage"]: r for r in scaling_curve.growth([a, b])}
    # mine: 4.5x the time for 3x the rows = 1.5 > 1.3: flagged
    assert (g["mine"]["size_ratio"], g["mine"]["time_ratio"], g["mine"]["quotient"]) == (3.0, 4.5, 1.5)
    assert g["mine"]["above_target"]
    # embed: 3x the time for 4x the items = 0.75
    assert g["embed"]["quotient"] == 0.75 and not g["embed"]["above_target"]
    # a fixed schedule has nothing to grow with: never flagged, whatever its time does
    assert g["train_embedding"]["size_ratio"] == 1.0 and not g["train_embedding"]["above_target"]
    assert {(r["from"], r["to"]) for r in g.values()} == {("s", "m")}
    assert scaling_curve.twin_ratios([a, b]) == {"s": 10.0, "m": 45.0}


def test_each_size_runs_the_base_config_with_only_the_world_model_and_rankers_changed(tmp_path):
    from jobs.pipeline import load_config

    base = load_config("large")
    cfg = scaling_curve.scaling_config("medium", tmp_path)
    assert cfg.data.size == "medium" and cfg.run_dir == str(tmp_path / "medium")
    assert cfg.mining == base.mining and cfg.features == base.features and cfg.data.seed == base.data.seed
    assert cfg.embedding.model == "tiny" and cfg.embedding.holdout_frac == base.embedding.holdout_frac
    assert not cfg.retrieval.enabled and not cfg.ab.enabled
    assert cfg.ranker.variants == ("control", "both") and cfg.ranker.trainers == base.ranker.trainers


@pytest.mark.slow
def test_one_size_of_the_smoke_config_end_to_end(tmp_path):
    out = tmp_path / "scaling.json"
    assert scaling_curve.main(["--sizes", "tiny", "--base", "smoke", "--runs", str(tmp_path / "runs"),
                               "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    (row,) = res["sizes"]
    assert set(row["stages"]) == set(scaling_curve.DRIVERS)
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in row["stages"].values())
    assert row["drivers"]["interactions"] > 0 and res["growth"] == []
    # the twin mines what the stage mined (smoke's stage is polars too: the same pairs; scores to summation order)
    run_dir = Path(row["run_dir"])
    for table, key in (("i2i_pairs", ["anchor_item_id", "item_id", "miner"]), ("q2i_pairs", ["query", "item_id"])):
        stage = pl.read_parquet(run_dir / "mine" / "train" / table / "*.parquet").sort(key)
        twin = pl.read_parquet(run_dir / "mine_polars_twin" / "train" / table / "*.parquet").sort(key)
        assert stage.height > 0
        assert_frame_equal(twin, stage, check_exact=False, rel_tol=1e-9)
    assert "| mine (polars twin) | interactions |" in out.with_suffix(".md").read_text()


def test_a_stage_a_size_did_not_finish_is_left_out_of_the_ratios_and_shown():
    a = _row("m", 3_000, 400, 1_000, {"ranker": 100.0})
    b = _row("l", 14_000, 1_000, 4_000, {})
    b["stages"]["ranker"] = {"seconds": None, "peak_rss_mb": None, "status": "not finished"}
    stages = {g["stage"] for g in scaling_curve.growth([a, b])}
    assert "ranker" not in stages and "mine" in stages
    md = scaling_curve.markdown(
        {"machine": {"code": {"commit": "abc1234"}}, "base_config": "large", "mine_engine": "spark", "sizes": [a, b],
         "growth": scaling_curve.growth([a, b]), "mine_over_polars_twin": scaling_curve.twin_ratios([a, b])}
    )  # fmt: skip
    assert "| ranker | ranker_train_rows | 100.0 | 100 | not finished | — |" in md
