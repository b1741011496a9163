"""The pipeline driver: config loading, every stage end to end on `smoke`, skipping, resume after a kill, the CLI."""

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs import pipeline
from jobs.cli import main
from jobs.pipeline import Stage, load_config, run_pipeline

MOVIELENS = Path(os.environ.get("SAIL_MOVIELENS_DIR") or pipeline.default_movielens_dir())
needs_movielens = pytest.mark.skipif(
    not (MOVIELENS / "ratings.csv").exists(),
    reason=f"MovieLens latest-small not found at {MOVIELENS} (set SAIL_MOVIELENS_DIR to run these tests)",
)
POSTERS = pipeline.default_movielens_posters()  # the shipped movielens config reads them (`movielens_posters: default`)
needs_posters = pytest.mark.skipif(
    not POSTERS.is_dir(), reason=f"MovieLens posters not found at {POSTERS} (set SAIL_MOVIELENS_POSTERS)"
)
STAGE_NAMES = [s.name for s in pipeline.STAGES]


# ------------------------------------------------------------------------------------------------ configs


def test_shipped_configs_load():
    for name in pipeline.SHIPPED_CONFIGS:
        cfg = load_config(name)
        assert cfg.name == name
    assert load_config("smoke", run_dir="/tmp/x").run_dir == "/tmp/x"
    assert load_config("demo").data.size == "small" and load_config("movielens").ab.enabled is False
    # the pretrained start is what demo, movielens and large ship; the random tiny model is for smoke and tests
    assert {n: load_config(n).embedding.model for n in pipeline.SHIPPED_CONFIGS} == {
        "demo": "minilm", "movielens": "minilm", "large": "minilm", "smoke": "tiny"
    }  # fmt: skip


@pytest.mark.parametrize(
    "text, match",
    [
        ("name: x\nbogus: {}\n", r"unknown section\(s\) \['bogus'\]"),
        ("name: x\ndata: {sise: tiny}\n", r"\[data\]: unknown setting\(s\) \['sise'\]"),
        (
            "name: x\ndata: {source: csv}\n",
            r"source must be one of \['generated', 'logs', 'movielens', 'contracts'\], got 'csv'",
        ),
        ("name: x\ndata: {quality_in_content: 1.5}\n", r"\[data\]: quality_in_content must be in \[0, 1\], got 1.5"),
        ("name: x\nmining: {engine: hive}\n", r"\[mining\]: engine must be 'spark' or 'polars'"),
        ("name: x\nembedding: {steps: [1, 2]}\n", r"\[embedding\]: steps must be a list of 4 integers, got \[1, 2\]"),
        ("name: x\nembedding: {word_queries: -1}\n", r"\[embedding\]: word_queries must be >= 0"),
        ("name: x\nembedding: {content_similarity: bm25}\n", r"\[embedding\]: content_similarity must be one of"),
        ("name: x\nembedding: {precision: fp16}\n", r"\[embedding\]: precision must be one of .*'fp16'"),
        ("name: x\nembedding: {device: gpu0}\n", r"\[embedding\]: device 'gpu0' is not one of"),
        ("name: x\nranker: {variants: [control, turbo]}\n", r"\[ranker\]: variants must be .* \['turbo'\]"),
        ("name: x\nranker: {variants: [control]}\n", r"\[ab\]: arm\(s\) \['both'\] must be torchrec ranker variants"),
        ("name: x\nranker: {trainers: [lgbm]}\n", r"\[ab\]: arm\(s\)"),
        ("name: x\nranker: {sail_dims: -1}\n", r"\[ranker\]: sail_dims must be >= 0"),
        ("name: x\nranker: {item_id_dropout: 1.0}\n", r"\[ranker\]: item_id_dropout must be in \[0, 1\)"),
        ("name: x\nranker: {sid_levels: 4}\n", r"\[ranker\]: sid_levels 4 exceeds the 3 levels \[features\]"),
        ("name: x\nranker: {interaction: fm}\n", r"\[ranker\]: interaction must be one of .*'dcn_dot'\), got 'fm'"),
    ],
)
def test_bad_configs_are_refused_with_the_file_named(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_config(str(f))
    assert str(f) in str(info.value)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_run_asking_for_cuda_where_there_is_none_fails_before_any_stage(tmp_path):
    import dataclasses

    from jobs.pipeline import run_pipeline

    cfg = load_config("smoke", run_dir=str(tmp_path / "run"))
    cfg = dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, device="cuda"))
    with pytest.raises(ValueError, match=r"\[embedding\] of run 'smoke': device 'cuda' asked for, but .* no CUDA"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()


def test_unknown_config_name():
    with pytest.raises(FileNotFoundError, match="neither a shipped config"):
        load_config("nonexistent-config")


# ------------------------------------------------------------------------------------------------ smoke, end to end


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, spark):
    """`sail run --config smoke` once for the module (every stage, ~1-2 min); its stdout and run directory."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", "--config", "smoke", "--run-dir", str(run_dir)]) == 0
    return run_dir, out.getvalue()


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "report" / "summary.json").read_text())


def test_smoke_config_runs_every_stage_end_to_end(smoke_run):
    run_dir, out = smoke_run
    assert f"report: {run_dir / 'report' / 'report.html'}" in out
    assert "LT7 lift, ranker both vs ranker control:" in out
    from offline_eval.report import fmt_headline

    for h in _summary(run_dir)["headline"]:  # printed as the report prints them, e.g. "+3.66% [+2.12%, +5.11%]"
        value, interval = fmt_headline(h)
        assert f"{h['name']}: {value}" + (f" {interval}" if interval != "n/a" else "") + "\n" in out
    for name in STAGE_NAMES:
        meta = json.loads((run_dir / name / "stage.json").read_text())
        assert (run_dir / name / "_SUCCESS").exists() and meta["skipped"] is None, name
        assert meta["peak_rss_mb"] > 100, name  # at least the interpreter with its imports
        assert (run_dir / "logs" / f"{name}.log").exists()
    assert set(json.loads((run_dir / "timings.json").read_text())) == set(STAGE_NAMES)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["name"] == "smoke" and run["versions"]["torch"].startswith("2.")

    s = _summary(run_dir)
    assert s["data"]["dataset"] == "generated" and s["data"]["size"] == "tiny"
    assert s["data_source"]["label"] == "generated world (simulated users and impressions)"
    mining = s["data"]["mining"]
    assert mining["train_i2i_pairs"]["swing"] > 0 and mining["heldout_i2i_pairs"]["covisit"] > 0
    assert mining["cutoff"] == s["retrieval"]["split_ts"]  # one source of pairs: the table reads the mine stage's
    assert "SAIL + CRE" in s["retrieval"]["table"] and "Swing" in s["retrieval"]["table"]
    assert "i2i_content" in s["retrieval"]["table"]["SAIL + CRE"]  # the world's truth found via the manifest
    assert set(s["ranker"]["models"]) == {"torchrec/control", "torchrec/both", "lgbm/control", "lgbm/both"}
    assert [a["name"] for a in s["ab"]["arms"]] == ["ranker control", "ranker both"]
    names = [h["name"] for h in s["headline"]]
    assert "LT7 lift, ranker both vs ranker control" in names
    assert "click AUC difference, torchrec both - control (all items)" in names
    assert "click AUC gain on cold items - gain on the others, torchrec both vs control" in names
    assert set(s["ranker"]["slice_gains"]["torchrec/both-control"]) == {"cold", "new"}
    assert s["reference"] == {"paper_lt7_lift_pct": 0.158, "paper_auc_gain_pct": 0.08}
    assert set(s["run"]["timings"]) >= set(STAGE_NAMES) - {"report"}


def test_the_stages_hand_each_other_one_model_version(smoke_run):
    """embed -> export -> ranking samples all carry the version of the model the run trained."""

    from core import contracts as K
    from core.io import read_table
    from export.export_features import read_current

    run_dir, _ = smoke_run
    version = json.loads((run_dir / "embed" / "stage.json").read_text())["metrics"]["model_version"]
    assert version.startswith("sail-")
    assert read_current(run_dir / "export" / "feature_repo")["version"] == version
    samples = json.loads((run_dir / "ranking_samples" / "stage.json").read_text())["metrics"]
    assert samples["feature_version"] == version and samples["embedding_dim"] > 0
    feats = read_table(run_dir / "embed" / "item_features", K.ITEM_FEATURES)
    items = read_table(run_dir / "validate" / "items", K.ITEMS).sort_by("item_id")
    feats = feats.sort_by("item_id")
    assert feats["item_id"].equals(items["item_id"])
    # valid from the later of the item's upload and the cutoff of the model that computed it
    cutoff = pipeline.run_cutoff(run_dir)
    want = [max(c, cutoff) for c in items["created_ts"].to_pylist()]
    assert feats["event_timestamp"].to_pylist() == want
    assert min(items["created_ts"].to_pylist()) < cutoff < max(items["created_ts"].to_pylist())  # both kinds occur
    report = json.loads((run_dir / "embed" / "embed_report.json").read_text())
    assert report["items_written"] == items.num_rows and report["failures"] == {}  # media were found


def test_no_ranker_sample_sees_a_feature_computed_from_its_own_time_or_later(smoke_run):
    """The embedding trains on pairs mined before the cutoff; the ranker's samples (train, valid and test) all come
    from the cutoff on, and each joined feature row is valid at its impression (a model from before the cutoff)."""
    import datetime as dt

    import pyarrow.compute as pc

    from core import contracts as K
    from core.io import read_table
    from recsys.features import RANKING_SAMPLES_EXT

    run_dir, _ = smoke_run
    cutoff = pipeline.run_cutoff(run_dir)
    mining = json.loads((run_dir / "mine" / "mining.json").read_text())
    # the training pairs end the day before the cutoff; the held-out ground truth starts on it
    assert dt.date.fromisoformat(mining["periods"]["train"]["date_to"]) < cutoff.date()
    assert dt.date.fromisoformat(mining["periods"]["heldout"]["date_from"]) == cutoff.date()
    samples = read_table(run_dir / "ranking_samples" / "ranking_samples_ext", RANKING_SAMPLES_EXT)
    assert set(samples["split"].unique().to_pylist()) == {"train", "valid", "test"}
    assert pc.min(samples["ts"]).as_py() >= cutoff  # no sample from the embedding's training period
    meta = json.loads((run_dir / "ranking_samples" / "stage.json").read_text())["metrics"]
    assert meta["train_start"] == cutoff.date().isoformat()
    feats = read_table(run_dir / "embed" / "item_features", K.ITEM_FEATURES)
    valid_from = dict(zip(feats["item_id"].to_pylist(), feats["event_timestamp"].to_pylist(), strict=True))
    with_feature = samples.filter(pc.is_valid(samples["sail_embedding"]))
    assert with_feature.num_rows > 0.9 * samples.num_rows
    for item, ts in zip(with_feature["item_id"].to_pylist(), with_feature["ts"].to_pylist(), strict=True):
        assert cutoff <= valid_from[item] <= ts


def test_the_samples_features_are_what_feast_returns_for_the_same_rows(smoke_run):
    """The Spark point-in-time join of the ranking samples against Feast's own get_historical_features on the
    repository the export stage wrote: the same rows, the same vectors (the configured Matryoshka prefix,
    re-normalised), the same semantic IDs, nulls where Feast has no row yet."""
    import pandas as pd
    import pyarrow.compute as pc

    from core.io import read_table
    from export.export_features import get_historical_item_features
    from recsys.features import RANKING_SAMPLES_EXT

    run_dir, _ = smoke_run
    samples = read_table(run_dir / "ranking_samples" / "ranking_samples_ext", RANKING_SAMPLES_EXT)
    rows = samples.take(np.random.default_rng(0).choice(samples.num_rows, 300, replace=False))
    entity = pd.DataFrame({"item_id": rows["item_id"].to_pylist(), "event_timestamp": rows["ts"].to_pylist()})
    feast = get_historical_item_features(run_dir / "export" / "feature_repo", entity)
    assert len(feast) == rows.num_rows
    dims = pipeline.load_config("smoke").ranker.sail_dims
    levels = sorted(c for c in feast.columns if c.startswith("sid_"))
    both = 0
    pairs = zip(rows["sail_embedding"].to_pylist(), rows["semantic_ids"].to_pylist(), strict=True)
    for i, (vec, sids) in enumerate(pairs):
        want = feast["embedding"].iloc[i]
        assert (vec is None) == (want is None), i
        if vec is None:
            continue
        head = np.asarray(want, dtype=np.float64)[: dims or None]
        np.testing.assert_allclose(vec, head / np.linalg.norm(head), atol=1e-6)
        assert sids == [int(feast[c].iloc[i]) for c in levels]
        both += 1
    assert both > 0.9 * rows.num_rows
    assert pc.all(pc.equal(rows["item_id"], pa.array(feast["item_id"]))).as_py()


def test_the_time_layout_is_checked_before_any_stage(tmp_path):
    # smoke's 14 days: holding out 3 days cannot cover the ranker's 2 + 3 valid / test days and a training day
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ndata: {size: tiny}\nembedding: {holdout_frac: 0.2}\nranker: {valid_days: 2, test_days: 3}\n")
    want = r"\[embedding\] / \[ranker\]: the embedding holds out the last 3 of the log's 14 days"
    with pytest.raises(ValueError, match=want):
        load_config(str(f))


def test_rerun_skips_everything_and_a_changed_setting_reruns_only_its_dependants(smoke_run):
    run_dir, _ = smoke_run
    cfg = load_config("smoke", run_dir=str(run_dir))
    again = run_pipeline(cfg, echo=lambda s: None)
    assert [v["status"] for v in again.stages.values()] == ["skipped"] * len(STAGE_NAMES)
    assert again.stages["train_embedding"]["seconds"] > 0  # what the stage took when it ran, not 0
    changed = replace(cfg, retrieval=replace(cfg.retrieval, n_boot=40))
    third = run_pipeline(changed, echo=lambda s: None)
    ran = [k for k, v in third.stages.items() if v["status"] == "ran"]
    assert ran == ["eval_retrieval", "report"]


def test_every_ranking_samples_knob_is_in_that_stage_s_hash():
    stage = next(s for s in pipeline.STAGES if s.name == "ranking_samples")
    cfg = load_config("smoke")
    for knob, value in (("recent_len", 3), ("valid_days", 1), ("test_days", 2), ("sail_dims", 16)):
        changed = replace(cfg, ranker=replace(cfg.ranker, **{knob: value}))
        assert stage.settings(changed) != stage.settings(cfg), knob


def test_a_failed_stage_leaves_no_output_and_the_rerun_resumes_there(tmp_path, monkeypatch):
    cfg = load_config("smoke", run_dir=str(tmp_path / "run"))
    real = pipeline.STAGES[:3]  # data, validate, mine

    def boom(ctx):
        (ctx.out / "partial.txt").write_text("half")
        raise RuntimeError("killed during validation")

    monkeypatch.setattr(pipeline, "STAGES", (real[0], Stage("validate", real[1].settings, boom, ("data",)), real[2]))
    with pytest.raises(
        pipeline.StageFailed, match="stage validate failed: RuntimeError: killed during validation"
    ) as info:
        run_pipeline(cfg, echo=lambda s: None)
    run_dir = Path(cfg.run_dir)
    assert isinstance(info.value.__cause__, RuntimeError) and info.value.log_path == run_dir / "logs" / "validate.log"
    assert (run_dir / "data" / "_SUCCESS").exists()
    assert not (run_dir / "validate").exists()
    log_text = (run_dir / "logs" / "validate.log").read_text()
    assert "killed during validation" in log_text and "Traceback" in log_text

    monkeypatch.setattr(pipeline, "STAGES", real)
    res = run_pipeline(cfg, echo=lambda s: None)
    assert [v["status"] for v in res.stages.values()] == ["skipped", "ran", "ran"]
    # the stage log keeps the failed attempt's traceback, and the rerun's attempt starts on a dated line after it
    attempts = (run_dir / "logs" / "validate.log").read_text().split("==== validate: attempt started ")
    assert len(attempts) == 3 and "Traceback" in attempts[1] and "Traceback" not in attempts[2]


def test_a_stage_that_does_not_apply_is_recorded_with_its_reason(tmp_path, monkeypatch):
    cfg = load_config("smoke", run_dir=str(tmp_path / "run"))
    cfg = replace(cfg, retrieval=replace(cfg.retrieval, enabled=False))
    by_name = {s.name: s for s in pipeline.STAGES}
    monkeypatch.setattr(pipeline, "STAGES", (replace(by_name["eval_retrieval"], deps=()),))
    lines: list[str] = []
    res = run_pipeline(cfg, echo=lines.append)
    assert res.stages["eval_retrieval"]["status"] == "not applicable"
    assert "not applicable ([retrieval] enabled is false)" in lines[-1]
    again = run_pipeline(cfg, echo=lines.append)
    assert again.stages["eval_retrieval"]["status"] == "not applicable"


def test_a_failed_stage_ends_sail_run_with_one_error_line_and_exit_1(tmp_path, monkeypatch, capsys):
    real = pipeline.STAGES[:2]

    def boom(ctx):
        raise KeyError("no such column")

    monkeypatch.setattr(pipeline, "STAGES", (real[0], Stage("validate", real[1].settings, boom, ("data",))))
    assert main(["run", "--config", "smoke", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    log = tmp_path / "run" / "logs" / "validate.log"
    assert f"sail: error: stage validate failed: KeyError: 'no such column' (traceback in {log})" in err
    assert "Traceback" not in err  # the logged traceback is the only copy (the stage log holds it)
    assert "Traceback" in log.read_text()


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["validate", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "sail: error: table not found" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 0


# ------------------------------------------------------------------------------------------------ slow


def _untimed(obj):
    """`obj` without its "seconds" entries, at any depth."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k != "seconds"}
    return [_untimed(v) for v in obj] if isinstance(obj, list) else obj


def _comparable(summary: dict) -> dict:
    """What two runs of one config must agree on (timings, dates and the machine differ)."""
    return {
        "headline": summary["headline"],
        "ranker": summary["ranker"]["models"],
        "ab": summary["ab"]["lifts"],
        "retrieval": summary["retrieval"]["table"],
        "data": _untimed({k: v for k, v in summary["data"].items() if k != "generated"}),
    }


@pytest.mark.slow
def test_killed_during_embedding_training_the_rerun_ends_with_the_unbroken_summary(smoke_run, tmp_path):
    from core.faults import EMBEDDING_FAULT_ENV

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--config", "smoke", "--run-dir", str(run_dir)]
    env = {**os.environ, EMBEDDING_FAULT_ENV: "12"}  # checkpoints every 5 steps: resumes from step 10
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "train_embedding").exists()
    ckpts = list((run_dir / "work").glob("train_embedding-*/train/checkpoints/*"))
    assert ckpts, "the killed run left no checkpoint to resume from"

    env.pop(EMBEDDING_FAULT_ENV)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "data: up to date, skipped" in resumed.stdout
    log = (run_dir / "logs" / "train_embedding.log").read_text()
    assert "resum" in log.lower()
    assert _comparable(_summary(run_dir)) == _comparable(_summary(smoke_run[0]))


@pytest.mark.slow
@needs_movielens
@needs_posters
def test_movielens_config_produces_its_report_from_the_real_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAIL_MOVIELENS_DIR", str(MOVIELENS))
    assert main(["run", "--config", "movielens", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "100836 interactions" in out
    assert "ab: not run ([ab] enabled is false)" in out
    assert "finish AUC difference, torchrec both - control (all items)" in out  # click AUC: one class
    assert "SAIL + CRE q2i" not in out  # MovieLens has no search log
    s = _summary(tmp_path / "run")
    assert s["data"]["rows"]["interactions"] == 100_836
    assert s["ab"] is None and s["ranker"] is not None and s["retrieval"] is not None
    assert s["data_source"]["label"] == "real logs: movielens (logged impressions)"
    assert "simulated world" not in (tmp_path / "run" / "report" / "summary.md").read_text()


def test_ranker_benchmarks_rebuild_samples_and_rerun_the_ranker_on_a_finished_run(smoke_run, tmp_path):
    from benchmarks import ranker_sail_dims, ranker_variants

    run_dir, _ = smoke_run
    out = tmp_path / "dims.json"
    work = str(tmp_path / "w")
    assert (
        ranker_sail_dims.main(
            ["--run", str(run_dir), "--config", "smoke", "--dims", "8", "0", "--work", work, "--out", str(out)]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert set(got["sizes"]) == {"8", "0"} and str(got["best_on_valid"]) in got["sizes"]
    assert got["sizes"]["8"]["embedding_dim"] == 8 and got["sizes"]["0"]["embedding_dim"] > 8
    for row in got["sizes"].values():
        for trainer in ("torchrec", "lgbm"):
            v = row[trainer]["valid"]
            assert row[trainer]["emb_minus_control"] == pytest.approx(v["emb"] - v["control"])
    joint = tmp_path / "joint.json"
    args = ["--run", str(run_dir), "--config", "smoke", "--work", str(tmp_path / "v"), "--out", str(joint)]
    assert ranker_variants.main([*args, "--set", "residual=false"]) == 0
    result = json.loads(joint.read_text())
    assert result["changed"] == ["residual=false"] and result["ranker"]["residual"] is False
    assert "residual=false" in joint.with_suffix(".md").read_text().splitlines()[0]
