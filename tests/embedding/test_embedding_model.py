"""The omni-modal model: shapes and norms, bidirectional attention, padding invariance, missing modalities,
frozen-text cache, safetensors checkpoints, and the packaged MiniLM text tower."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedding.checkpoint import load_model, save_model
from embedding.config import ModelConfig, TextTowerConfig, packaged_minilm_dir
from embedding.model import build_backbone, build_model
from embedding.preprocess import ItemInputs, Preprocessor, build_tokenizer, collate_items, log_mel_chunks
from embedding.towers import build_text_tower

CFG = ModelConfig.tiny()


def items(seed: int = 0) -> list[ItemInputs]:
    """Four items: all modalities, text + long audio, text only, images only."""
    g = torch.Generator().manual_seed(seed)
    pre = CFG.preprocess
    mel, frames = log_mel_chunks(np.sin(np.arange(8000 * 4) * 0.3), 8000, pre)
    mel_long, frames_long = log_mel_chunks(np.sin(np.arange(8000 * 15) * 0.1), 8000, pre)
    return [
        ItemInputs("title: red car tags: cars", torch.randn(3, 3, 64, 64, generator=g), mel, frames),
        ItemInputs("title: a long song about trees asr: la la la", None, mel_long, frames_long),
        ItemInputs("title: only text here"),
        ItemInputs("", torch.randn(1, 3, 64, 64, generator=g)),
    ]


def batch_of(its: list[ItemInputs], cfg: ModelConfig = CFG):
    return collate_items(its, build_tokenizer(cfg.text), cfg.preprocess)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CFG).eval()


def test_forward_shapes_norms_and_matryoshka_prefixes(model):
    with torch.no_grad():
        out = model(batch_of(items()), task="item")
    assert sorted(out.matryoshka) == [32, 64, 128]
    for d, z in out.matryoshka.items():
        assert z.shape == (4, d)
        assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
        assert torch.allclose(z, F.normalize(out.embedding[:, :d], dim=1), atol=1e-6)
    assert out.fused.shape == out.visual.shape == out.text.shape == (4, 128)
    assert out.visual.norm(dim=1).round().tolist() == [1.0, 0.0, 0.0, 1.0]  # zero rows without images
    assert out.text.norm(dim=1).round().tolist() == [1.0, 1.0, 1.0, 0.0]
    # gate: sigmoid(0 . x + 2) = 0.8808 at init with images; forced to 1 without
    assert torch.allclose(out.gate, torch.tensor([0.8808, 1.0, 1.0, 0.8808]), atol=1e-4)
    # audio-only embedding: the audio token the fuser reads, normalised; zero rows without audio
    assert out.audio.shape == (4, model.backbone.hidden_size) and out.has_audio.tolist() == [True, True, False, False]
    assert out.audio.norm(dim=1).round().tolist() == [1.0, 1.0, 0.0, 0.0]
    batch = batch_of(items())
    with torch.no_grad():
        enc = model.audio_encoder(batch.audio, batch.audio_chunk_mask, batch.audio_frames)
    torch.testing.assert_close(out.audio[:2], F.normalize(model.audio_proj(enc), dim=1)[:2], rtol=0, atol=1e-5)


def test_backbone_is_bidirectional_and_4d_mask_is_needed():
    torch.manual_seed(0)
    backbone = build_backbone(CFG.backbone).eval()
    x = torch.randn(1, 6, CFG.backbone.hidden_size)
    y = x.clone()
    y[0, -1] += 1.0  # change only the LAST token
    valid = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        first_x, first_y = backbone(x, valid)[0, 0], backbone(y, valid)[0, 0]
        assert (first_x - first_y).abs().max() > 1e-3  # the first token sees the last one
        # control: the same Qwen2 with its default (2D, causal) mask does not
        causal = backbone.llm(inputs_embeds=torch.cat([x, y]), attention_mask=torch.ones(2, 6, dtype=torch.long))
        assert torch.allclose(causal.last_hidden_state[0, 0], causal.last_hidden_state[1, 0], atol=1e-6)


def test_padding_and_batch_mates_do_not_change_an_embedding(model):
    its = items()
    with torch.no_grad():
        together = model(batch_of(its), task="i2i").embedding
        for i, it in enumerate(its):
            alone = model(batch_of([it]), task="i2i").embedding
            assert torch.allclose(alone[0], together[i], atol=1e-5), i


def test_task_instruction_changes_the_embedding_and_unknown_task_raises(model):
    b = batch_of(items())
    with torch.no_grad():
        a, q = model(b, "item").embedding, model(b, "query").embedding
    assert (a - q).abs().max() > 1e-4
    with pytest.raises(KeyError, match="unknown task"):
        model(b, "no-such-task")


def test_item_without_any_modality_raises_clearly(model):
    with pytest.raises(ValueError, match=r"batch positions \[1\] have no modality"):
        model(batch_of([ItemInputs("title: x"), ItemInputs("")]), "item")


def test_gradients_reach_towers_backbone_and_gate(model):
    model.train()
    out = model(batch_of(items()), "item")
    (out.embedding.sum() + out.text.sum() + out.visual.sum()).backward()
    for name in ["text_tower", "vision_encoder", "resampler", "audio_encoder", "backbone", "instruction", "gate"]:
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    model.zero_grad()
    model.eval()


def test_frozen_text_tower_caches_and_gets_no_gradient():
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, text=dataclasses.replace(CFG.text, freeze=True, cache_size=8))
    m = build_model(cfg).train()
    b = batch_of(items(), cfg)
    first = m.text_tower(b.input_ids, b.attention_mask, b.texts)
    again = m.text_tower(b.input_ids, b.attention_mask, b.texts)
    assert m.text_tower.cache_hits == 4
    assert torch.allclose(first, again, atol=1e-2)  # fp16 cache
    m(b, "item").embedding.sum().backward()
    assert all(p.grad is None for p in m.text_tower.parameters())
    assert m.text_proj.weight.grad is not None


def test_safetensors_checkpoint_round_trip(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors")
    b = batch_of(items())
    restored = load_model(path).eval()  # config from the checkpoint's metadata
    with torch.no_grad():
        assert torch.equal(model(b, "item").embedding, restored(b, "item").embedding)
    (tmp_path / "other.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; it must not load
        load_model(tmp_path / "other.safetensors")


def test_packaged_minilm_separates_paraphrases_from_unrelated():
    cfg = TextTowerConfig(load_dir=str(packaged_minilm_dir()), freeze=True)
    tower, tok = build_text_tower(cfg).eval(), build_tokenizer(cfg)
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    ids, mask = tok(texts, 64)
    with torch.no_grad():
        states = tower(ids, mask)
    emb = F.normalize((states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True), dim=1)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_preprocessor_output_runs_through_the_model(model, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "c.png")
    pre = Preprocessor(CFG.preprocess, tmp_path)
    row = dict(
        title="green", ocr_text=None, asr_text=None, tags=["x"], cover_path="c.png", frame_paths=[], audio_path=None
    )
    with torch.no_grad():
        out = model(batch_of([pre(row), pre.query("green things")]), "q2i")
    assert out.has_vision.tolist() == [True, False]
