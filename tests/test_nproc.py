"""`embedding.nproc` / `ranker.nproc`: the training stages as torchrun ranks (core.torchrun) against one process.

Fast: the launcher keeps every socket on 127.0.0.1 and names a failed rank; the commands the stages build parse back
into the settings the one-process stages train with. Slow: on the smoke config, each stage with nproc 1 and 2 on the
same inputs writes the same files, and the two trainings agree within the bounds below (docs/CLUSTER.md).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core.torchrun import TorchrunFailed, run_torchrun
from jobs import pipeline
from jobs.pipeline import StageContext, load_config

_RANK_SCRIPT = """
import os, sys
import torch.distributed as dist

from core.machine import listening_sockets

dist.init_process_group("gloo")
dist.barrier()
if dist.get_rank() == 0:  # every listening socket of the launcher and of its ranks
    launcher = os.getppid()
    pids = [launcher] + [
        int(p) for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read().split(")")[-1].split()[1]
        == str(launcher)
    ]
    for table, addr in listening_sockets(pids):
        print("LISTEN", table, addr, flush=True)
    print("THREADS", os.environ["OMP_NUM_THREADS"], flush=True)
dist.barrier()
if dist.get_rank() == 1:
    raise ValueError("rank 1 fails on purpose")
"""

LOOPBACK = {"tcp": {"0100007F"}, "tcp6": {"0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}}
"""127.0.0.1 as /proc/net/tcp writes it; ::ffff:127.0.0.1 and ::1 as /proc/net/tcp6 does."""


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")
def test_the_launcher_listens_on_loopback_only_and_names_a_failed_rank(tmp_path, monkeypatch):
    # Given a rank program that lists the launch's listening sockets (rank 0) and then fails on rank 1
    (tmp_path / "rank_program.py").write_text(_RANK_SCRIPT)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    lines: list[str] = []
    # When it runs as two ranks
    with pytest.raises(TorchrunFailed) as info:
        run_torchrun("rank_program", [], 2, threads=1, log_dir=tmp_path / "logs", on_line=lines.append)
    # Then the error names rank 1, its exit code, its last line and its log folder
    err = info.value
    assert err.rank == 1 and err.exit_code != 0
    assert str(err).startswith("torchrun rank 1 of 2 failed (exit code 1): ValueError: rank 1 fails on purpose")
    folder = Path(str(err).split("its output: ")[1].split(")")[0])
    assert folder.parent.parent.parent == tmp_path / "logs" and "rank 1 fails" in (folder / "stderr.log").read_text()
    # And every socket the launch listened on (the store, both ranks' gloo) is on the loopback interface
    listening = [ln.split()[1:] for ln in lines if ln.startswith("[rank0]:LISTEN")]
    assert len(listening) >= 3, lines
    assert all(addr in LOOPBACK[table] for table, addr in listening), listening
    assert "[rank0]:THREADS 1" in lines


def test_the_launcher_refuses_rendezvous_options_it_sets_itself(capsys):
    from core.torchrun import main

    assert main(["--nproc-per-node", "2", "--master-addr", "0.0.0.0", "-m", "x"]) == 2
    assert "--master-addr" in capsys.readouterr().err


@pytest.mark.parametrize("config", pipeline.SHIPPED_CONFIGS)
def test_the_ranker_command_parses_back_into_the_stage_settings(config, tmp_path):
    from recsys.cli import parse_train_ranker, train_ranker_argv
    from recsys.lgbm import LgbmConfig
    from recsys.train import TrainConfig

    cfg = load_config(config, run_dir=str(tmp_path))
    cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, nproc=2, threads=5))
    a = pipeline.ranker_variants_args(cfg, tmp_path / "samples", tmp_path / "out", "a note, with: punctuation")
    assert a.train_kwargs["threads"] == 2  # 5 threads // 2 processes
    b = parse_train_ranker(train_ranker_argv(a))
    where = {"samples_dir": a.samples, "out_dir": a.out}
    assert TrainConfig(**where, **b.train_kwargs) == TrainConfig(**where, **a.train_kwargs)
    assert LgbmConfig(**where, **b.lgbm_kwargs) == LgbmConfig(**where, **a.lgbm_kwargs)
    same = ("samples", "out", "variants", "n_boot", "note", "seeds")
    assert {k: getattr(b, k) for k in same} == {k: getattr(a, k) for k in same}
    assert set(b.trainers) == set(a.trainers)


@pytest.mark.parametrize("config", pipeline.SHIPPED_CONFIGS)
def test_the_embedding_command_trains_the_stage_settings(config, tmp_path):
    from embedding.distributed import parse_args

    tcfg = pipeline.embedding_train_config(load_config(config, run_dir=str(tmp_path)))
    tcfg = dataclasses.replace(tcfg, balancing=False, progress=False)  # flags without a value keep the file's
    (tmp_path / "train_config.json").write_text(json.dumps(tcfg.to_dict()))
    paths = ["--data", "d", "--pairs", "p", "--out", "o"]
    assert parse_args(["--train-config", str(tmp_path / "train_config.json"), *paths])[0] == tcfg
    assert parse_args(["--train-config", str(tmp_path / "train_config.json"), *paths, "--lr", "0.5"])[0].lr == 0.5


@pytest.mark.parametrize(
    "section, changes, match",
    [
        ("ranker", {"nproc": 3, "batch_size": 512}, r"\[ranker\]: batch_size 512 must be divisible by nproc 3"),
        ("embedding", {"nproc": 16, "batch_size": 8}, r"\[embedding\]: batch_size 8 is smaller than nproc 16"),
    ],
)
def test_a_batch_that_does_not_split_over_the_processes_is_refused_at_load(tmp_path, section, changes, match):
    import yaml

    raw = yaml.safe_load((Path(pipeline.__file__).parent / "configs" / "smoke.yaml").read_text())
    raw[section].update(changes)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=match):
        load_config(str(tmp_path / "c.yaml"))


# ------------------------------------------------------------------------------------------------ 1 vs 2 processes


def _stage(cfg, run_dir: Path, name: str, nproc: int, tmp_path: Path):
    """Runs stage `name` of `cfg` with `nproc` processes into tmp_path/<nproc>/; returns (metrics, out folder)."""
    section = "embedding" if name == "train_embedding" else "ranker"
    cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), nproc=nproc)})
    out, work = tmp_path / f"out{nproc}", tmp_path / f"work{nproc}"
    out.mkdir()
    work.mkdir()
    fn = {"train_embedding": pipeline._stage_train_embedding, "ranker": pipeline._stage_ranker}[name]
    return fn(StageContext(cfg, run_dir, out, work, echo=lambda s: None)), out


def _files(folder: Path) -> set[str]:
    """Every file below `folder`, relative; a checkpoint's rank files beyond rank 0 are left out (one per rank)."""
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not (p.name.startswith("rank") and not p.name.startswith("rank0."))
    }


EMBEDDING_MIN_UPDATE_COSINE = 0.5
"""The 1- and 2-process trainings' weight updates (trained - initial weights, all of them as one vector): cosine at
least this (observed 0.71 on the smoke schedule; their norms within 20%, observed 0.99x). The two are not the same
training: each rank's InfoNCE sees its 4 pairs of a batch of 8 as in-batch negatives, and its own dropout draws."""

EMBEDDING_RECALL_TOLERANCE = 0.03
"""|held-out recall, 1 process - 2 processes| of every retrieval task (the retrieval table's rows, 60-300 queries) at
most this (observed at most 0.0074; the one-process model trained with seed 1 instead of 0 differs by up to 0.039)."""


def _weights(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    w = load_file(str(path))
    return np.concatenate([w[k].ravel().astype(np.float64) for k in sorted(w) if w[k].dtype.kind == "f"])


def _recalls(tcfg, world: Path, pairs: Path, cache: Path, models: list[Path]) -> list[dict[str, float]]:
    """Every model's held-out recall per task of the retrieval table (embedding.retrieval_eval), the same queries."""
    from embedding.data import load_pairs
    from embedding.retrieval_eval import EvalConfig, build_benchmarks, model_method, score_method
    from embedding.trainer import load_training_data, resolve_model_config

    data = load_training_data(tcfg, world, pairs, cache, resolve_model_config(tcfg.model, tcfg))
    benchmarks = build_benchmarks(
        load_pairs(world, pairs), data.store, EvalConfig(train=tcfg, max_queries=200), tcfg.data.history_len
    )
    scores = [score_method(model_method(m, data.store), benchmarks, n_boot=10, seed=0) for m in models]
    return [{task: v["recall"] for task, v in s.items()} for s in scores]


@pytest.mark.slow
def test_embedding_training_with_two_processes_matches_one(tiny_world_and_work, tmp_path):
    from embedding.trainer import read_metrics, train

    # Given the smoke config and the tiny world's data and pairs (mined at the smoke config's cutoff)
    world, _, pairs = tiny_world_and_work
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "validate").symlink_to(world)
    (run_dir / "mine").symlink_to(pairs)
    cfg = load_config("smoke", run_dir=str(run_dir))
    # When the stage trains with one process and with two
    m1, out1 = _stage(cfg, run_dir, "train_embedding", 1, tmp_path)
    m2, out2 = _stage(cfg, run_dir, "train_embedding", 2, tmp_path)
    # Then it writes the same files, steps and metrics
    assert _files(out1) == _files(out2) == set(pipeline.EMBEDDING_FILES)
    assert m1["steps"] == m2["steps"] == sum(cfg.embedding.steps)
    assert len(read_metrics(out2 / "metrics.jsonl")) == m2["steps"]
    assert set(m1["stage_losses"]) == set(m2["stage_losses"]) == {"I", "II", "III", "CRE"}
    # And both moved the initial weights the same way, to about the same distance
    tcfg = pipeline.embedding_train_config(cfg)
    zero = dataclasses.replace(tcfg, steps_i=0, steps_ii=0, steps_iii=0, steps_cre=0, progress=False)
    init = train(zero, world, tmp_path / "init", pairs, work_dir=tmp_path / "work1" / "cache").model_path
    d1, d2 = (_weights(out / "model.safetensors") - _weights(init) for out in (out1, out2))
    update_cos = float(d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2))
    norm_ratio = float(np.linalg.norm(d2) / np.linalg.norm(d1))
    # And their held-out retrieval is the same within the tolerance
    r1, r2 = _recalls(
        tcfg, world, pairs, tmp_path / "work1" / "cache", [out1 / "model.safetensors", out2 / "model.safetensors"]
    )
    gaps = {task: abs(r1[task] - r2[task]) for task in r1}
    print(
        f"embedding 1 vs 2 processes: update cosine {update_cos:.3f}, norm ratio {norm_ratio:.3f}, recall gaps {gaps}"
    )
    assert update_cos >= EMBEDDING_MIN_UPDATE_COSINE and 0.8 <= norm_ratio <= 1.25
    assert len(gaps) == 5 and max(gaps.values()) <= EMBEDDING_RECALL_TOLERANCE, (r1, r2)


RANKER_AUC_TOLERANCE = 1e-3
"""|AUC, 1 process - 2 processes| of every TorchRec model, valid (per seed) and test (the seed ensemble), at most
this (observed at most 1.2e-6): the two train the same model up to the order of floating-point sums (recsys.train).
LightGBM trains in rank 0 exactly as in one process: the same AUC."""


@pytest.mark.slow
def test_ranker_training_with_two_processes_matches_one(tmp_path):
    from recsys.synthetic import write_synthetic_samples

    # Given the smoke config's ranker on synthetic ranking samples (the stage's input layout)
    run_dir = tmp_path / "run"
    samples = run_dir / "ranking_samples" / "ranking_samples_ext"
    write_synthetic_samples(samples, n_rows=6000, n_users=150, n_items=160, days=8, valid_days=2, test_days=3, seed=5)
    meta = {"feature_version": "synthetic", "embedding_dim": 16, "test_start": "day 6"}
    (run_dir / "ranking_samples" / "stage.json").write_text(json.dumps({"metrics": meta}))
    cfg = load_config("smoke", run_dir=str(run_dir))
    # When the stage trains with one process and with two
    m1, out1 = _stage(cfg, run_dir, "ranker", 1, tmp_path)
    m2, out2 = _stage(cfg, run_dir, "ranker", 2, tmp_path)
    # Then it writes the same files (a checkpoint has one file per rank) and the same runs
    assert m1["runs"] == m2["runs"] == ["lgbm/both", "lgbm/control", "torchrec/both", "torchrec/control"]
    assert _files(out1) == _files(out2)
    assert (out2 / "torchrec" / "both" / "checkpoints" / "selected").exists()
    r1, r2 = (json.loads((o / "results.json").read_text()) for o in (out1, out2))
    diffs = {}
    for run in m1["runs"]:
        for task in ("click", "finish"):
            a1, a2 = (r["models"][run]["all"][task]["auc"]["value"] for r in (r1, r2))
            diffs[f"test {run} {task}"] = abs(a1 - a2)
    for v in ("control", "both"):
        for seed_dir in ("", "seed-1"):
            h1, h2 = (json.loads((o / "torchrec" / v / seed_dir / "train.json").read_text()) for o in (out1, out2))
            assert h2["world_size"] == 2 and h1["world_size"] == 1
            for task in ("click", "finish"):
                a1, a2 = (h["validation"]["1"][f"{task}_auc"] for h in (h1, h2))
                diffs[f"valid torchrec/{v} {seed_dir or 'seed-0'} {task}"] = abs(a1 - a2)
    print("ranker |AUC difference|, 1 vs 2 processes:", json.dumps(diffs, indent=1))
    assert max(v for k, v in diffs.items() if "torchrec" in k) <= RANKER_AUC_TOLERANCE, diffs
    assert max(v for k, v in diffs.items() if "lgbm" in k) == 0.0, diffs  # LightGBM: the same, in rank 0
    # And the A/B simulator's loader merges the 2-rank checkpoint into the same model
    from offline_eval.serve import load_trained_ranker

    w1, w2 = (load_trained_ranker(o / "torchrec" / "both").model.state_dict() for o in (out1, out2))
    assert set(w1) == set(w2)
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1 if w1[k].is_floating_point())
    print(f"ranker torchrec/both: largest weight difference {worst:.2e}")
    assert worst < 1e-3, worst


def test_nproc_is_in_the_training_stages_hashed_settings():
    cfg = load_config("smoke")
    stages = {s.name: s for s in pipeline.STAGES}
    for stage, section in (("train_embedding", "embedding"), ("ranker", "ranker")):
        two = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), nproc=2)})
        assert stages[stage].settings(cfg) != stages[stage].settings(two)
