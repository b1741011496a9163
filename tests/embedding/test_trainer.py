"""Staged trainer on the tiny world: every stage runs and its loss falls; a killed run resumes to the same end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from embedding.checkpoint import load_embedding_model
from embedding.model import ConcatFusionModel
from embedding.trainer import TrainConfig, stage_loss_summary, train


@pytest.fixture(scope="module")
def world(tiny_world_and_work):
    return tiny_world_and_work


FAST = TrainConfig(
    steps_i=3,
    steps_ii=2,
    steps_iii=2,
    steps_cre=3,
    batch_size=8,
    warmup_steps=1,
    refresh_every=2,
    checkpoint_every=3,
    balance_sample=16,
    progress=False,
)


def test_each_stage_runs_and_its_loss_falls(world, tmp_path):
    data_dir, work, pairs = world
    # Given uniform source weights (each stage's probe objective is then the plain mean over its sources), a seeded
    # run (sources are sorted, every step reseeded: the run is deterministic) and a moderate learning rate
    cfg = dataclasses.replace(
        FAST,
        steps_i=12,
        steps_ii=10,
        steps_iii=8,
        steps_cre=10,
        lr=5e-4,
        refresh_every=3,
        checkpoint_every=100,
        balancing=False,
        probe_batches=4,
        seed=2,
    )
    # When training every stage
    res = train(cfg, data_dir, tmp_path / "run", pairs, work_dir=work)
    # Then every stage ran and logged its steps
    assert res.completed and res.steps_done == 40
    recs = [json.loads(line) for line in res.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 41))
    assert [r["stage"] for r in recs] == ["I"] * 12 + ["II"] * 10 + ["III"] * 8 + ["CRE"] * 10
    assert {"step", "stage", "source", "loss", "temperature", "lr", "pairs_per_s"} <= set(recs[0])
    assert all(np.isfinite(r["loss"]) for r in recs)
    # and the stage objective on fixed batches (one per source) fell during every stage
    assert set(res.probes) == {"I", "II", "III", "CRE"}
    for stage, p in res.probes.items():
        assert p["end"]["loss"] < p["start"]["loss"], (stage, p)
    assert set(stage_loss_summary(res.metrics_path)) == {"I", "II", "III", "CRE"}
    assert res.content_model_path is not None and res.content_model_path.exists()
    assert "content_clean_hn" in json.loads((tmp_path / "run" / "train.json").read_text())["data_summary"]["sources"]


def test_resume_after_kill_matches_an_unbroken_run(world, tmp_path):
    data_dir, work, pairs = world
    # Given an unbroken run of 10 steps (stage III mines hard negatives, CRE uses every collaborative source)
    full = train(FAST, data_dir, tmp_path / "a", pairs, work_dir=work)
    # When a second run is killed after step 7 (last checkpoint at step 6) and then resumed to the end
    killed = train(dataclasses.replace(FAST, stop_after=7), data_dir, tmp_path / "b", pairs, work_dir=work)
    assert not killed.completed and killed.steps_done == 7
    assert killed.checkpoint_dir.name == "step-0000006"
    resumed = train(FAST, data_dir, tmp_path / "b", pairs, work_dir=work)
    # Then the losses of every step and the final weights are identical
    assert resumed.completed and resumed.steps_done == full.steps_done == 10
    la = [json.loads(x)["loss"] for x in full.metrics_path.read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in resumed.metrics_path.read_text().splitlines()]
    assert len(la) == len(lb) == 10
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
    ma, mb = load_embedding_model(full.model_path).model, load_embedding_model(resumed.model_path).model
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_checkpoints_are_safetensors_and_json_only(world, tmp_path):
    data_dir, work, pairs = world
    res = train(dataclasses.replace(FAST, steps_iii=0, steps_cre=0), data_dir, tmp_path / "c", pairs, work_dir=work)
    files = sorted(p.name for p in res.checkpoint_dir.iterdir())
    assert files == ["_SUCCESS", "state.json", "state.safetensors"]
    from safetensors.torch import load_file

    state = load_file(str(res.checkpoint_dir / "state.safetensors"))
    assert any(k.startswith("opt.") for k in state) and "rng.torch" in state


def test_concat_variant_without_audio_trains_and_infers(world, tmp_path):
    data_dir, work, pairs = world
    cfg = dataclasses.replace(FAST, fuser=False, audio=False, steps_iii=0, steps_cre=2)
    res = train(cfg, data_dir, tmp_path / "d", pairs, work_dir=work)
    loaded = load_embedding_model(res.model_path)
    assert isinstance(loaded.model, ConcatFusionModel) and loaded.use_audio is False
    from core import contracts as K
    from core.io import read_table
    from embedding.infer import ItemEncoder

    items = read_table(data_dir / "items", K.ITEMS).slice(0, 5)
    enc = ItemEncoder.from_checkpoint(res.model_path, data_dir / "media")
    vecs = enc.embed_items(items)
    assert set(vecs) == {32, 64, 128}
    for d, v in vecs.items():
        assert v.shape == (5, d)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    q = enc.embed_queries(["hello world"])
    assert q[128].shape == (1, 128)


def test_inference_is_batch_invariant(world, tmp_path):
    data_dir, work, pairs = world
    res = train(
        dataclasses.replace(FAST, steps_ii=0, steps_iii=0, steps_cre=0), data_dir, tmp_path / "e", pairs, work_dir=work
    )
    from core import contracts as K
    from core.io import read_table
    from embedding.infer import ItemEncoder

    items = read_table(data_dir / "items", K.ITEMS).slice(0, 12)
    a = ItemEncoder.from_checkpoint(res.model_path, data_dir / "media", batch_size=12).embed_items(items)
    b = ItemEncoder.from_checkpoint(res.model_path, data_dir / "media", batch_size=5).embed_items(items)
    for d in a:
        np.testing.assert_allclose(a[d], b[d], atol=1e-5)
