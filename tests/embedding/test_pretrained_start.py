"""The pretrained start (`ModelConfig.minilm`): before any step the model embeds like the packaged MiniLM sentence
encoder; its top text layer trains on cached lower states exactly as the whole encoder would compute them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedding.config import ModelConfig, packaged_minilm_dir
from embedding.model import build_model, init_text_residual
from embedding.preprocess import ItemInputs, build_tokenizer, collate_items
from embedding.towers import masked_mean

TEXTS = [
    "title: Toy Story (1995) tags: Adventure, Animation, Children",
    "title: Heat (1995) tags: Action, Crime, Thriller",
    "title: Alien (1979) tags: Horror, Sci-Fi",
    "title: Notting Hill (1999) tags: Comedy, Romance",
    "title: The Matrix (1999) tags: Action, Sci-Fi, cyberpunk",
    "title: Amelie (2001) tags: Comedy, Romance, paris",
]


def minilm_sentence_vectors(texts: list[str]) -> np.ndarray:
    """The reference: all-MiniLM-L6-v2 as its own model card computes it (mean-pooled, L2-normalised)."""
    from transformers import AutoModel, AutoTokenizer

    d = str(packaged_minilm_dir())
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = AutoModel.from_pretrained(d, local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    v = ((h * m).sum(1) / m.sum(1)).numpy()
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def start():
    torch.manual_seed(0)
    cfg = ModelConfig.minilm()
    model = build_model(cfg).eval()
    tok = build_tokenizer(cfg.text)
    ids, mask = tok(TEXTS, cfg.preprocess.max_text_tokens)
    with torch.no_grad():
        sentence = masked_mean(model.text_tower(ids, mask, TEXTS), mask.bool(), 1)
    init_text_residual(model, sentence)
    return cfg, model, tok


def test_untrained_model_embeds_items_and_queries_like_minilm(start):
    cfg, model, tok = start
    ref = minilm_sentence_vectors(TEXTS)
    for task in ("item", "query"):
        batch = collate_items([ItemInputs(text=t) for t in TEXTS], tok, cfg.preprocess)
        with torch.no_grad():
            out = model(batch, task)
        e = out.embedding.numpy()
        # the same cosines as MiniLM (a rotation: D = 384 = MiniLM's width); only fp16 caching rounds them
        np.testing.assert_allclose(e @ e.T, ref @ ref.T, atol=5e-4)
        # and the Matryoshka prefixes are the best low-rank views: 64 dims keep most of the similarity structure
        small = out.matryoshka[64].numpy()
        assert np.corrcoef((small @ small.T).ravel(), (ref @ ref.T).ravel())[0, 1] > 0.99


def test_residual_projection_is_the_principal_axes_with_fixed_signs(start):
    _, model, _ = start
    w = model.text_residual.weight.detach().double()  # (D, Dt) = (384, 384)
    np.testing.assert_allclose((w @ w.T).numpy(), np.eye(w.shape[0]), atol=1e-5)  # orthonormal rows
    assert (w.gather(1, w.abs().argmax(1, keepdim=True)) > 0).all()  # sign convention
    d, dt = 4, 6  # fewer axes than dims: the top singular vectors, largest first
    tiny = dataclasses.replace(ModelConfig.tiny(), text_residual=True, matryoshka_dims=(2, d))
    m = build_model(tiny)
    x = (
        torch.randn(50, dt)
        @ torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5]))
        @ torch.linalg.qr(torch.randn(dt, dt))[0]
    )
    m.text_residual = torch.nn.Linear(dt, d, bias=False)
    init_text_residual(m, x)
    xn = x / x.norm(dim=1, keepdim=True)
    _, _, vt = torch.linalg.svd(xn.double())
    got = m.text_residual.weight.detach().double().numpy()
    np.testing.assert_allclose(np.abs(got), np.abs(vt[:d].numpy()), atol=1e-5)
    few = x[:3]  # fewer items than dims: still d orthonormal axes, the top ones the rows span
    init_text_residual(m, few)
    w = m.text_residual.weight.detach().double()
    np.testing.assert_allclose((w @ w.T).numpy(), np.eye(d), atol=1e-5)


def test_top_layer_on_cached_states_equals_the_whole_encoder(start):
    cfg, model, tok = start
    tower = model.text_tower
    assert cfg.text.train_top_layers == 1 and len(tower.top_layers) == 1
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.5." in n for n in trainable)  # only the last of MiniLM's 6 layers trains
    ids, mask = tok(TEXTS[:3], cfg.preprocess.max_text_tokens)
    with torch.no_grad():
        cached = tower(ids, mask, TEXTS[:3])  # lower states from the cache (fp16), top layer fresh
        full = tower.encoder(input_ids=ids, attention_mask=mask).last_hidden_state * mask.unsqueeze(-1)
    np.testing.assert_allclose(cached.numpy(), full.numpy(), atol=2e-2)
    # the lower states run only the frozen layers, and equal the whole encoder's hidden states at that depth
    ran = []
    hook = tower.top_layers[0].register_forward_hook(lambda *a: ran.append(1))
    with torch.no_grad():
        lower = tower._encode(ids, mask)
        every = tower.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    hook.remove()
    assert len(ran) == 1 and len(tower.encoder.encoder.layer) == 6  # the top layer ran once: for `every` only
    torch.testing.assert_close(lower, every[tower.cached_depth], rtol=0, atol=1e-6)
    # gradients reach the top layer through the cached path
    tower.train()
    out = tower(ids, mask, TEXTS[:3])
    out.sum().backward()
    assert tower.top_layers[0].output.dense.weight.grad is not None
    assert tower.encoder.encoder.layer[0].output.dense.weight.grad is None


def test_keep_start_holds_items_near_their_pretrained_embedding(tiny_world_and_work, tmp_path):
    from embedding.trainer import TrainConfig, Trainer, load_training_data, resolve_model_config

    world, work, pairs = tiny_world_and_work
    base = TrainConfig(model="minilm", steps_i=12, steps_ii=0, steps_iii=0, steps_cre=0, batch_size=8,
                       warmup_steps=1, lr=3e-3, field_drop_prob=0.0, balancing=False, progress=False)  # fmt: skip
    mc = resolve_model_config(base.model, base)
    data = load_training_data(base, world, pairs, work, mc)

    def drift(weight: float) -> tuple[float, float]:
        cfg = dataclasses.replace(base, keep_start_weight=weight)
        tr = Trainer(cfg, data, tmp_path / f"k{weight}", mc)
        # Given the untrained model, every item sits at its start vector: the keep term is zero
        gen = torch.Generator().manual_seed(0)
        batch = tr.make_batch("content_i2i", np.arange(8), gen)
        tr.model.eval()
        with torch.no_grad():
            at_start = tr.train_module.keep_start(tr.model(batch.target, "item"), batch.start_vectors)
        # When training on content pairs, the mean cosine of each item to its start measures the drift
        tr.run(resume=False)
        vecs = tr.embed_rows(np.arange(len(data.store)))
        return float(at_start), float(np.mean(np.sum(vecs * tr.start_vectors, axis=1)))

    zero, free = drift(1e-9)
    held_zero, held = drift(20.0)
    assert abs(zero) < 1e-3 and abs(held_zero) < 1e-2
    # Then the pull keeps items closer to where the pretrained encoder put them
    assert held > free + 0.01 and held > 0.9
