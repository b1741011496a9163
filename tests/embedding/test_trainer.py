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


STAGE_III = dataclasses.replace(
    FAST, steps_i=1, steps_ii=1, steps_iii=6, steps_cre=1, refresh_every=3, checkpoint_every=4, balancing=False
)


def test_a_stage_iii_refresh_mines_the_rows_drawn_before_the_next_one_as_a_full_refresh_would(world, tmp_path):
    from embedding.balancing import StochasticSpecialisationSampler
    from embedding.config import ModelConfig
    from embedding.negatives import f1_optimal_threshold, mine_hard_negatives, positive_and_negative_scores
    from embedding.trainer import Trainer, load_training_data

    data_dir, work, pairs = world
    data = load_training_data(STAGE_III, data_dir, pairs, work, ModelConfig.tiny())
    trainer = Trainer(STAGE_III, data, tmp_path / "t", ModelConfig.tiny())
    names = trainer._stage_sources("III")
    assert set(trainer.miner.sources) <= set(names) and trainer.miner.sources
    sizes = {s: len(data.sources[s]) for s in names}
    sampler = StochasticSpecialisationSampler(sizes, dict.fromkeys(names, 1.0), STAGE_III.batch_size, 6, seed=9)
    # Given the rows the stage's sampler draws in steps [3, 6) (a refresh at stage step 3 serves them)
    drawn = trainer.refresh_rows(sampler, 3, 6)
    batches = list(sampler)[3:6]
    for s in trainer.miner.sources:
        want = [r for name, rows in batches if name == s for r in rows.tolist()]
        assert drawn[s].tolist() == sorted(set(want))
    assert sum(len(v) for v in drawn.values()) > 0
    # When the miner refreshes only those rows, then they get the negatives the full refresh (every query, the
    # whole catalogue embedded with the current model) gives them
    trainer.miner.refresh(3, trainer.mining_sources(), drawn)
    catalogue = trainer.embed_rows(np.arange(len(data.store)))
    for k, s in enumerate(trainer.miner.sources):
        src = data.sources[s]
        # (an item query is its catalogue item's embedding: the refresh takes it from the catalogue it embedded)
        every_row = np.arange(len(src))
        queries = catalogue[src.queries] if src.query_kind == "item" else trainer.embed_queries(src, every_row)
        positives = src.positives_by_query()
        if src.query_kind == "item":
            positives = [p | {int(q)} for p, q in zip(positives, src.queries.tolist(), strict=True)]
        pos, neg = positive_and_negative_scores(queries, catalogue, positives, 8, STAGE_III.seed + k)
        threshold = f1_optimal_threshold(pos, neg)[0]
        full = mine_hard_negatives(queries, catalogue, positives, threshold, 2, 0, STAGE_III.hn_range_max)
        got = trainer.miner.negatives_for(s, drawn[s])
        assert trainer.miner.thresholds[s] == threshold
        assert got.indices.tolist() == full.indices[drawn[s]].tolist()
        np.testing.assert_allclose(got.scores, full.scores[drawn[s]], rtol=0, atol=1e-5)


def test_stage_iii_with_a_catalogue_pool_trains_on_pool_negatives_of_the_drawn_rows(world, tmp_path, monkeypatch):
    from embedding import negatives

    data_dir, work, pairs = world
    real_refresh, real_for = negatives.HardNegativeMiner.refresh, negatives.HardNegativeMiner.negatives_for
    refreshes, calls = [], []

    def refresh(self, step, source_fn, rows=None):
        real_refresh(self, step, source_fn, rows)
        pool = self.pool(self.refreshes - 1, source_fn(self.sources[0]).num_items)
        refreshes.append((pool, rows, {s: source_fn(s).positives for s in self.sources}))

    def negatives_for(self, source, query_indices):
        got = real_for(self, source, query_indices)
        calls.append((source, np.asarray(query_indices), got, refreshes[-1]))
        return got

    monkeypatch.setattr(negatives.HardNegativeMiner, "refresh", refresh)
    monkeypatch.setattr(negatives.HardNegativeMiner, "negatives_for", negatives_for)
    # Given stage III of 6 steps with a refresh every 3, each searching a pool of 40 catalogue items
    cfg = dataclasses.replace(STAGE_III, hn_catalogue_pool=40, checkpoint_every=100)
    assert train(cfg, data_dir, tmp_path / "p", pairs, work_dir=work).completed
    # Then the two refreshes searched two different pools
    assert len(refreshes) == 2
    pools = [r[0] for r in refreshes]
    assert all(p is not None and len(p) == 40 for p in pools) and pools[0].tolist() != pools[1].tolist()
    # and each of the 6 training steps (the calls after them are stage III's end-of-stage probes) asked for rows
    # its refresh mined, and got negatives from its pool, never a positive of the row
    assert len(calls) >= 6
    n_real = 0
    for source, rows, got, (pool, mined_rows, positives) in calls[:6]:
        assert set(rows.tolist()) <= set(mined_rows[source].tolist())
        for row, idx in zip(rows.tolist(), got.indices, strict=True):
            real = idx[idx >= 0].tolist()
            n_real += len(real)
            assert set(real) <= set(pool.tolist()) and not set(real) & positives[source][row]
    assert n_real > 0


def test_resume_mid_stage_iii_with_a_catalogue_pool_matches_an_unbroken_run(world, tmp_path):
    data_dir, work, pairs = world
    # Given an unbroken run whose stage III (stage steps 0-5) refreshes at stage steps 0 and 3, each over a new pool
    cfg = dataclasses.replace(STAGE_III, hn_catalogue_pool=40)
    full = train(cfg, data_dir, tmp_path / "a", pairs, work_dir=work)
    # When a run is killed after global step 5 (last checkpoint at step 4: stage III step 1 done, between the
    # refreshes) and resumed: it trains stage step 2 on the checkpoint's negatives, then refreshes at step 3
    killed = train(dataclasses.replace(cfg, stop_after=5), data_dir, tmp_path / "b", pairs, work_dir=work)
    assert killed.checkpoint_dir.name == "step-0000004"
    resumed = train(cfg, data_dir, tmp_path / "b", pairs, work_dir=work)
    # Then every step's loss and the final weights are identical
    la = [json.loads(x)["loss"] for x in full.metrics_path.read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in resumed.metrics_path.read_text().splitlines()]
    assert len(la) == len(lb) == 9
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
    ma, mb = load_embedding_model(full.model_path).model, load_embedding_model(resumed.model_path).model
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_the_audio_micl_term_trains_the_audio_token_from_item_pairs(world, tmp_path):
    from embedding.trainer import Trainer, load_training_data, resolve_model_config

    data_dir, work, pairs = world
    mc = resolve_model_config(FAST.model, FAST)
    data = load_training_data(FAST, data_dir, pairs, work, mc)

    def micl_and_audio_grad(weight: float) -> tuple[float, float]:
        cfg = dataclasses.replace(FAST, micl_audio_weight=weight, field_drop_prob=0.0)
        tr = Trainer(cfg, data, tmp_path / f"a{weight}", mc)
        batch = tr.make_batch("content_i2i", np.arange(8), torch.Generator().manual_seed(0))
        assert int(batch.query.has_audio.sum()) >= 2 and int(batch.target.has_audio.sum()) >= 2
        tr.model.zero_grad()
        loss, (_, parts) = tr.train_module(batch)
        tr.train_module.micl(tr.model(batch.query, "item"), tr.model(batch.target, "item")).backward()
        grad = sum(float(p.grad.abs().sum()) for p in tr.model.audio_encoder.parameters() if p.grad is not None)
        return parts["micl"], grad

    torch.manual_seed(0)
    micl_off, grad_off = micl_and_audio_grad(0.0)
    torch.manual_seed(0)
    micl_on, grad_on = micl_and_audio_grad(1.0)
    # Without the term the modality-only losses never touch the audio encoder; with it they do, and add a loss
    assert grad_off == 0.0 and grad_on > 0.0
    assert micl_on > micl_off
