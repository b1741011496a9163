"""The pipeline driver: config loading, stage skipping and resume, the CLI."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from jobs import pipeline
from jobs.cli import main
from jobs.pipeline import Stage, load_config, run_pipeline

MOVIELENS = Path(os.environ.get("SAIL_MOVIELENS_DIR") or pipeline.default_movielens_dir())
needs_movielens = pytest.mark.skipif(
    not (MOVIELENS / "ratings.csv").exists(),
    reason=f"MovieLens latest-small not found at {MOVIELENS} (set SAIL_MOVIELENS_DIR to run these tests)",
)


def test_shipped_configs_load():
    for name in pipeline.SHIPPED_CONFIGS:
        cfg = load_config(name)
        assert cfg.name == name
    assert load_config("smoke", run_dir="/tmp/x").run_dir == "/tmp/x"


@pytest.mark.parametrize(
    "text, match",
    [
        ("name: x\nbogus: {}\n", r"unknown section\(s\) \['bogus'\]"),
        ("name: x\ndata: {sise: tiny}\n", r"\[data\]: unknown setting\(s\) \['sise'\]"),
        ("name: x\ndata: {source: csv}\n", "source must be 'generated' or 'movielens'"),
    ],
)
def test_bad_configs_are_refused_with_the_file_named(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(str(f))


def test_unknown_config_name():
    with pytest.raises(FileNotFoundError, match="neither a shipped config"):
        load_config("nonexistent-config")


def _ml_cfg(tmp_path):
    cfg = load_config("movielens", run_dir=str(tmp_path / "run"))
    return replace(cfg, data=replace(cfg.data, movielens_dir=str(MOVIELENS)))


@needs_movielens
def test_rerun_skips_finished_stages_and_a_changed_setting_reruns_downstream(tmp_path):
    cfg = _ml_cfg(tmp_path)
    first = run_pipeline(cfg, echo=lambda s: None)
    assert [v["status"] for v in first.stages.values()] == ["ran"] * 4
    second = run_pipeline(cfg, echo=lambda s: None)
    assert [v["status"] for v in second.stages.values()] == ["skipped"] * 4
    changed = replace(cfg, validation=replace(cfg.validation, clock_skew_s=600))
    third = run_pipeline(changed, echo=lambda s: None)
    assert [v["status"] for v in third.stages.values()] == ["skipped", "ran", "ran", "ran"]


@needs_movielens
def test_a_failed_stage_leaves_no_output_and_the_rerun_resumes_there(tmp_path, monkeypatch):
    cfg = _ml_cfg(tmp_path)
    real = pipeline.STAGES

    def boom(cfg, run_dir, out):
        (out / "partial.txt").write_text("half")
        raise RuntimeError("killed during validation")

    monkeypatch.setattr(pipeline, "STAGES", (real[0], Stage("validate", real[1].settings, boom), *real[2:]))
    with pytest.raises(RuntimeError, match="killed during validation"):
        run_pipeline(cfg, echo=lambda s: None)
    run_dir = Path(cfg.run_dir)
    assert (run_dir / "data" / "_SUCCESS").exists()
    assert not (run_dir / "validate").exists()
    assert "killed during validation" in (run_dir / "logs" / "validate.log").read_text()

    monkeypatch.setattr(pipeline, "STAGES", real)
    res = run_pipeline(cfg, echo=lambda s: None)
    assert [v["status"] for v in res.stages.values()] == ["skipped", "ran", "ran", "ran"]


@needs_movielens
def test_cli_run_on_movielens_prints_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAIL_MOVIELENS_DIR", str(MOVIELENS))
    assert main(["run", "--config", "movielens", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "run" / "report" / "report.html"
    assert f"report: {report}" in out
    assert "100836 interactions" in out
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary["rows"]["interactions"] == 100_836
    assert 1 <= summary["lifetime"]["lt7_mean"] <= 7
    assert "<h2>Lifetime proxies" in report.read_text()


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["validate", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "sail: error: table not found" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 0


def test_smoke_config_runs_end_to_end(tmp_path, capsys):
    """The `smoke` config (tiny generated world) through every stage, from the CLI."""
    assert main(["run", "--config", "smoke", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'run' / 'report' / 'report.html'}" in out
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())

    def mining_count(miner):
        import polars as pl

        from jobs import contracts as K
        from jobs.io import read_table

        pairs = pl.from_arrow(read_table(tmp_path / "run" / "mine" / "i2i_pairs", K.I2I_PAIRS))
        return pairs.filter(pl.col("miner") == miner).height

    assert summary["dataset"] == "generated" and summary["size"] == "tiny"
    assert summary["rejected"]["interactions"] == {}  # the generated world is clean
    assert summary["cold_start_items"] > 0
    assert summary["mining"]["i2i_pairs"]["swing"] == mining_count("swing")
    assert "<h2>Mined pairs</h2>" in (tmp_path / "run" / "report" / "report.html").read_text()
    assert 1 <= summary["lifetime"]["lt7_mean"] <= 7
    mining = json.loads((tmp_path / "run" / "mine" / "mining.json").read_text())
    assert mining["engine"] == "polars"
    assert mining["pairs"]["i2i"]["covisit"] > 0 and mining["pairs"]["i2i"]["swing"] > 0
    assert mining["pairs"]["seq2item"]["eval"] > 0
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert set(timings) == {"data", "validate", "mine", "report"}


def test_mining_section_is_checked(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nmining: {engine: hive}\n")
    with pytest.raises(ValueError, match=r"\[mining\]: engine must be 'spark' or 'polars'"):
        load_config(str(f))
