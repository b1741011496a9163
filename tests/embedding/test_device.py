"""Where the embedding model runs and in which precision: device resolution and its errors, bfloat16 autocast in
training and inference (on the CPU here), and, where CUDA exists, the same on the GPU against the CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedding.checkpoint import load_embedding_model
from embedding.config import ModelConfig
from embedding.device import autocast, check_precision, resolve_device
from embedding.infer import ItemEncoder, embed_item_inputs
from embedding.model import build_model
from embedding.preprocess import ItemInputs, build_tokenizer, collate_items, log_mel_chunks
from embedding.trainer import SailTrain, TrainBatch, TrainConfig, read_metrics, train

CFG = ModelConfig.tiny()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def synthetic_items(n: int, seed: int = 0) -> list[ItemInputs]:
    """n items cycling through: all modalities, text + audio, text only, images only."""
    g = torch.Generator().manual_seed(seed)
    pre = CFG.preprocess
    out = []
    for i in range(n):
        mel, frames = log_mel_chunks(np.sin(np.arange(8000 * (2 + i % 3)) * (0.1 + 0.05 * i)), 8000, pre)
        text = f"title: item {i} about {['cars', 'trees', 'songs', 'cats'][i % 4]} tags: t{i % 5}"
        kind = i % 4
        out.append(
            ItemInputs(
                text if kind != 3 else "",
                torch.randn(2, 3, 64, 64, generator=g) if kind in (0, 3) else None,
                mel if kind in (0, 1) else None,
                frames if kind in (0, 1) else None,
            )
        )
    return out


def test_device_and_precision_are_checked():
    # Given names that are not devices or precisions, Then the errors name the value and the choices
    with pytest.raises(ValueError, match=r"bf16.*'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="'banana'"):
        TrainConfig(device="banana")
    with pytest.raises(ValueError, match="'meta'"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="'meta': only 'cpu', 'cuda'"):
        TrainConfig(device="meta")
    with pytest.raises(ValueError, match="precision"):
        check_precision("int8")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_fails_clearly_instead_of_falling_back():
    with pytest.raises(ValueError, match="sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        ItemEncoder(build_model(CFG), CFG, None, device="cuda")


def test_bf16_autocast_inference_is_close_to_fp32_but_not_identical():
    # Given a model and items with every modality mix
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    tok = build_tokenizer(CFG.text)
    its = synthetic_items(8)
    # When embedding them in fp32 and under bf16 autocast
    a = embed_item_inputs(model, its, tok, CFG.preprocess, "item", 4)
    b = embed_item_inputs(model, its, tok, CFG.preprocess, "item", 4, precision="bf16")
    # Then every Matryoshka size comes back float32 and unit-norm, bf16 close to fp32 but really computed in bf16
    for d in a:
        assert b[d].dtype == np.float32 and b[d].shape == a[d].shape
        np.testing.assert_allclose(np.linalg.norm(b[d], axis=1), 1.0, atol=1e-3)
        cos = (a[d] * b[d]).sum(1)
        assert cos.min() > 0.98, cos
    assert not np.array_equal(a[128], b[128])


def test_autocast_context_runs_linear_layers_in_bf16_only_when_asked():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert lin(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert lin(x).dtype == torch.float32


def test_bf16_training_on_the_tiny_world_keeps_fp32_weights_and_resumes(tiny_world_and_work, tmp_path):
    data_dir, work, pairs = tiny_world_and_work
    base = TrainConfig(
        steps_i=2,
        steps_ii=1,
        steps_iii=2,
        steps_cre=2,
        batch_size=8,
        warmup_steps=1,
        refresh_every=2,
        checkpoint_every=2,
        balancing=False,  # keeps the slow CPU bf16 catalogue passes to the one hard-negative mining
        probe_batches=1,
        progress=False,
    )
    bf16 = dataclasses.replace(base, precision="bf16")
    # When the same seeded run trains in fp32 and under bf16 autocast, and a bf16 run is killed and resumed
    a = train(base, data_dir, tmp_path / "fp32", pairs, work_dir=work)
    b = train(bf16, data_dir, tmp_path / "bf16", pairs, work_dir=work)
    killed = train(dataclasses.replace(bf16, stop_after=5), data_dir, tmp_path / "bf16_resumed", pairs, work_dir=work)
    resumed = train(bf16, data_dir, tmp_path / "bf16_resumed", pairs, work_dir=work)
    # Then the bf16 losses are finite, near the fp32 ones but not equal to them (autocast really ran)
    la = [r["loss"] for r in read_metrics(a.metrics_path)]
    lb = [r["loss"] for r in read_metrics(b.metrics_path)]
    assert len(la) == len(lb) == 7 and np.isfinite(lb).all()
    assert la != lb
    np.testing.assert_allclose(lb[0], la[0], rtol=0.05)
    # and the saved model is float32
    saved = load_embedding_model(b.model_path).model
    assert {p.dtype for p in saved.state_dict().values() if p.is_floating_point()} == {torch.float32}
    # and the killed bf16 run resumes to the same losses as the unbroken one
    assert not killed.completed and resumed.completed
    lr = [r["loss"] for r in read_metrics(resumed.metrics_path)]
    np.testing.assert_allclose(lr, lb, rtol=0, atol=1e-6)


def test_resuming_on_another_device_is_allowed_but_not_in_another_precision(tiny_world_and_work, tmp_path):
    data_dir, work, pairs = tiny_world_and_work
    cfg = TrainConfig(steps_i=4, steps_ii=0, steps_iii=0, steps_cre=0, batch_size=8, checkpoint_every=2)
    cfg = dataclasses.replace(cfg, warmup_steps=1, balance_sample=16, progress=False)
    train(dataclasses.replace(cfg, stop_after=2), data_dir, tmp_path / "r", pairs, work_dir=work)
    # the device is free to change between a run and its resumption ('auto' is the CPU here or the GPU there)
    res = train(dataclasses.replace(cfg, device="auto"), data_dir, tmp_path / "r", pairs, work_dir=work)
    assert res.completed and res.steps_done == 4
    with pytest.raises(ValueError, match="precision"):
        train(dataclasses.replace(cfg, precision="bf16", steps_i=6), data_dir, tmp_path / "r", pairs, work_dir=work)


# ------------------------------------------------------------------------------------------------------------
# On a CUDA device (skipped without one)
# ------------------------------------------------------------------------------------------------------------


def _train_step_batch(tok) -> TrainBatch:
    its = synthetic_items(16, seed=1)
    return TrainBatch(
        source="i2i",
        kind="item",
        target=collate_items(its[:8], tok, CFG.preprocess),
        query=collate_items(its[8:], tok, CFG.preprocess),
    )


@pytest.mark.gpu
@cuda
def test_cuda_fp32_embeddings_match_the_cpu():
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    its = synthetic_items(8)
    cpu = ItemEncoder(model, CFG, None).embed_inputs(its)
    gpu = ItemEncoder(model, CFG, None, device="cuda").embed_inputs(its)
    bf16 = ItemEncoder(model, CFG, None, device="cuda", precision="bf16").embed_inputs(its)
    for d in cpu:
        np.testing.assert_allclose(gpu[d], cpu[d], atol=2e-4)
        assert (cpu[d] * bf16[d]).sum(1).min() > 0.98


@pytest.mark.gpu
@cuda
def test_cuda_bf16_train_steps_lower_the_loss_and_keep_fp32_state():
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model(CFG)
    tok = build_tokenizer(CFG.text)
    wrapper = SailTrain(model, ["i2i"], None, TrainConfig()).to(device)
    opt = torch.optim.AdamW(wrapper.parameters(), lr=1e-3)
    batch = _train_step_batch(tok).to(device)
    losses = []
    for _ in range(8):
        with autocast(device, "bf16"):
            loss, _ = wrapper(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in wrapper.parameters())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in wrapper.parameters())
