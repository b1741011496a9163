"""Ranker training: loss falls, resume after a kill reproduces the uninterrupted run, torchrun matches one process,
the item table export, LightGBM and the evaluation table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from core.metrics import auc
from recsys.evaluate import evaluate_runs, load_scores, markdown_table
from recsys.model import RankerConfig
from recsys.synthetic import write_synthetic_samples
from recsys.train import FAULT_ENV, TrainConfig, train_ranker

REPO = Path(__file__).resolve().parents[2]
SMALL = RankerConfig(
    embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16,), tower_hidden=8
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ranker") / "samples"
    write_synthetic_samples(path, n_rows=4000, n_users=100, n_items=120, days=8, seed=3)
    return path


def _cfg(samples: Path, out: Path, **kw) -> TrainConfig:
    base = {"ranker": SMALL, "epochs": 2, "batch_size": 128, "sparse_lr": 0.05, "eval_batch_size": 4096}
    return TrainConfig(samples_dir=samples, out_dir=out, **{**base, **kw})


_SCRIPT = """
import json, sys
from pathlib import Path
from recsys.model import RankerConfig
from recsys.train import TrainConfig, train_ranker
kw = json.loads(sys.argv[1])
kw["ranker"] = RankerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw["ranker"].items()})
train_ranker(TrainConfig(samples_dir=Path(kw.pop("samples_dir")), out_dir=Path(kw.pop("out_dir")), **kw))
"""


def _run_process(tmp: Path, samples: Path, out: Path, extra_env: dict[str, str] | None = None, nproc: int = 1):
    """Trains the +both variant of _cfg in a fresh process (or `nproc` torchrun ranks)."""
    from dataclasses import asdict

    script = tmp / "train_script.py"
    script.write_text(_SCRIPT)
    kw = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in asdict(_cfg(samples, out, variant="both", ckpt_every=10)).items()
    }
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += [] if nproc == 1 else [f"--nproc_per_node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra_env or {})}
    cmd = [*launcher, str(script), json.dumps(kw)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(samples, tmp_path_factory):
    """An uninterrupted single-process run of the +both variant."""
    out = tmp_path_factory.mktemp("ref") / "both"
    res = train_ranker(_cfg(samples, out, variant="both", ckpt_every=10))
    return res


def test_tiny_model_trains_and_its_loss_falls(reference):
    losses = np.array(reference.losses)
    assert reference.steps == len(losses) > 20
    assert losses[-10:].mean() < losses[:5].mean() - 0.05
    assert np.isfinite(losses).all()


def test_test_scores_are_written_and_beat_chance_on_click(reference):
    s = load_scores(reference.scores_path)
    assert set(s) >= {"click", "finish", "label_click", "user", "cold"}
    assert s["cold"].any() and not s["cold"].all()
    assert auc(s["label_click"], s["click"]) > 0.55


def test_item_table_export_has_one_row_per_vocabulary_id_plus_oov(reference):
    t = load_file(str(reference.out_dir / "item_table.safetensors"))
    assert t["weight"].shape == (t["ids"].shape[0], 8)
    assert t["ids"][0] == -1 and np.all(np.diff(t["ids"][1:]) > 0)


def test_resume_after_kill_reproduces_the_uninterrupted_run(samples, reference, tmp_path):
    # Given a run killed (SIGKILL) right after step 25, with checkpoints every 10 steps
    out = tmp_path / "run"
    killed = _run_process(tmp_path, samples, out, {FAULT_ENV: "25"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoints" / "latest").read_text() == "step-00000020"
    # When the same run is started again
    res = train_ranker(_cfg(samples, out, variant="both", ckpt_every=10))
    # Then it resumes from step 20 and ends with the scores of the run that was never interrupted
    assert res.resumed_from == 20 and res.steps == reference.steps
    a, b = load_scores(reference.scores_path), load_scores(res.scores_path)
    np.testing.assert_allclose(b["click"], a["click"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["finish"], a["finish"], rtol=1e-5, atol=1e-6)


def test_rerun_of_a_finished_run_does_not_train_again(samples, reference, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(reference.out_dir, out)
    res = train_ranker(_cfg(samples, out, variant="both", ckpt_every=10))
    assert res.resumed_from == reference.steps and res.losses == []
    np.testing.assert_allclose(load_scores(res.scores_path)["click"], load_scores(reference.scores_path)["click"])


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(samples, reference, tmp_path):
    out = tmp_path / "tr2"
    proc = _run_process(tmp_path, samples, out, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = load_scores(reference.scores_path), load_scores(out / "scores.npz")
    np.testing.assert_array_equal(one["user"], two["user"])
    for task in ("click", "finish"):
        a1 = auc(one[f"label_{task}"], one[task])
        a2 = auc(two[f"label_{task}"], two[task])
        assert abs(a1 - a2) < 0.005, (task, a1, a2)
        np.testing.assert_allclose(two[task], one[task], atol=1e-3)


def test_lgbm_and_evaluation_table(samples, reference, tmp_path):
    from recsys.lgbm import LgbmConfig, train_lgbm

    runs = {"torchrec/both": reference.scores_path}
    for v in ("control", "both"):
        runs[f"lgbm/{v}"] = train_lgbm(LgbmConfig(samples, tmp_path / v, variant=v, num_rounds=30, num_leaves=7))
    res = evaluate_runs(runs, n_boot=30, title="t")
    m = res["models"]["lgbm/both"]["all"]["click"]
    assert m["auc"]["low"] <= m["auc"]["value"] <= m["auc"]["high"]
    d = res["differences"]["lgbm/both-control"]["cold"]["click"]["auc"]
    assert d["value"] == pytest.approx(d["treatment"] - d["control"])
    table = markdown_table(res)
    assert "| all | click | lgbm | both |" in table and "| cold | finish | lgbm | both-control |" in table


def test_item_id_dropout_trains_the_oov_row_that_cold_items_use(samples, reference, tmp_path):
    # Without dropout no train row maps to the OOV row, so it keeps its initial values; with it, it learns
    out = tmp_path / "drop"
    train_ranker(_cfg(samples, out, variant="both", ckpt_every=10, item_id_dropout=0.3))
    ref = load_file(str(reference.out_dir / "item_table.safetensors"))["weight"]
    drop = load_file(str(out / "item_table.safetensors"))["weight"]
    init = load_file(str(_untrained_item_table(samples, tmp_path / "init")))["weight"]
    np.testing.assert_array_equal(ref[0], init[0])
    assert np.abs(drop[0] - init[0]).max() > 1e-3


def _untrained_item_table(samples: Path, out: Path) -> Path:
    """The item table as initialised (same seed): one epoch at zero learning rates."""
    train_ranker(_cfg(samples, out, variant="both", epochs=1, sparse_lr=0.0, dense_lr=0.0))
    return out / "item_table.safetensors"


def test_make_batch_drops_only_the_target_item_id(samples):
    from recsys.data import load_encoded_splits, make_batch
    from recsys.features import feature_spec

    spec = feature_spec("both", 3)
    train = load_encoded_splits(samples, spec).train
    idx = np.arange(8)
    drop = np.array([True, False] * 4)
    kept, dropped = make_batch(train, idx, spec), make_batch(train, idx, spec, drop)
    a, b = kept.sparse.to_dict(), dropped.sparse.to_dict()
    assert (b["item_id"].values().numpy() == np.where(drop, 0, a["item_id"].values().numpy())).all()
    assert a["item_id"].values().numpy()[drop].min() > 0
    for f in spec.sparse_features:
        if f != "item_id":
            assert torch.equal(a[f].values(), b[f].values()) and torch.equal(a[f].lengths(), b[f].lengths())


def test_make_batch_hides_only_the_sail_features_of_the_dropped_rows(samples):
    from recsys.data import load_encoded_splits, make_batch
    from recsys.features import feature_spec

    spec = feature_spec("both", 3)
    train = load_encoded_splits(samples, spec).train
    idx = np.arange(8)
    drop = np.array([False, True] * 4)
    kept, hidden = make_batch(train, idx, spec), make_batch(train, idx, spec, drop_sail=drop)
    a, b = kept.sparse.to_dict(), hidden.sparse.to_dict()
    for f in spec.sparse_features:
        want = np.where(drop, 0, a[f].values().numpy()) if f.startswith("sid_l") else a[f].values().numpy()
        assert (b[f].values().numpy() == want).all(), f
    assert a["sid_l0"].values().numpy()[drop].min() > 0
    assert torch.equal(hidden.content[~torch.from_numpy(drop)], kept.content[~torch.from_numpy(drop)])
    assert (
        hidden.content[torch.from_numpy(drop)].abs().sum() == 0 and kept.content[torch.from_numpy(drop)].abs().sum() > 0
    )
    assert torch.equal(hidden.dense, kept.dense) and torch.equal(hidden.labels, kept.labels)
