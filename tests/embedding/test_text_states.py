"""Frozen text states on disk (`embedding.text_states`): what a tower reads from them equals what its frozen layers
compute, a tower whose frozen layers differ never reads them, and the trainer writes them once for the catalogue."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from embedding.config import ModelConfig
from embedding.model import build_model
from embedding.preprocess import build_text, build_tokenizer
from embedding.text_states import TextStates, build_text_states, open_text_states, tower_fingerprint

TEXTS = [
    "title: Toy Story (1995) tags: Adventure, Animation, Children",
    "title: Heat (1995) tags: Action, Crime, Thriller",
    "title: Alien (1979) tags: Horror, Sci-Fi",
    "title: Notting Hill (1999) ocr: a much longer text with many more words in it than the others have",
    "title: The Matrix (1999) tags: Action, Sci-Fi, cyberpunk",
]


@pytest.fixture(scope="module")
def minilm():
    cfg = ModelConfig.minilm()
    return cfg, build_tokenizer(cfg.text)


def _tower(cfg):
    torch.manual_seed(0)
    return build_model(cfg).eval().text_tower


def _encode_alone(tower, tok, text: str, max_tokens: int) -> torch.Tensor:
    ids, mask = tok([text], max_tokens)
    with torch.no_grad():
        return tower._encode(ids, mask)[0, : int(mask.sum())]


def test_stored_states_are_the_frozen_layers_output(minilm, tmp_path):
    cfg, tok = minilm
    L = cfg.preprocess.max_text_tokens
    tower = _tower(cfg)
    states = build_text_states(tower, tok, TEXTS + ["", TEXTS[0]], L, tmp_path)
    assert tower.states is states and len(states) == len(TEXTS)  # distinct non-empty texts only
    assert json.loads((states.path / "meta.json").read_text())["texts"] == len(TEXTS)
    for t in TEXTS:
        got = states.get(t)
        assert got.dtype == torch.float16
        np.testing.assert_allclose(got.float().numpy(), _encode_alone(tower, tok, t, L).numpy(), atol=1e-2)
    assert states.get("title: not in the catalogue") is None


def test_a_tower_reading_states_embeds_like_one_encoding(minilm, tmp_path, monkeypatch):
    cfg, tok = minilm
    L = cfg.preprocess.max_text_tokens
    build_text_states(_tower(cfg), tok, TEXTS, L, tmp_path)
    fresh, reading = _tower(cfg), _tower(cfg)
    assert open_text_states(reading, tok, L, tmp_path) is not None
    ids, mask = tok(TEXTS, L)
    with torch.no_grad():
        want = fresh(ids, mask, TEXTS)
        monkeypatch.setattr(reading, "_encode", lambda *a: pytest.fail("a stored text was encoded again"))
        got = reading(ids, mask, TEXTS)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-2)
    assert reading.states.hits == len(TEXTS)
    # a text that is not stored is encoded as before
    monkeypatch.undo()
    other = ["title: Amelie (2001) tags: Comedy, Romance, paris"]
    ids, mask = tok(other, L)
    with torch.no_grad():
        np.testing.assert_allclose(reading(ids, mask, other).numpy(), fresh(ids, mask, other).numpy(), atol=2e-2)


def test_fingerprint_follows_the_frozen_layers_only(minilm, tmp_path):
    cfg, tok = minilm
    L = cfg.preprocess.max_text_tokens
    tower = _tower(cfg)
    base = tower_fingerprint(tower, tok, L)
    with torch.no_grad():
        tower.top_layers[0].output.dense.weight.add_(0.1)  # the trained top layer: the states below it are the same
    assert tower_fingerprint(tower, tok, L) == base
    assert tower_fingerprint(tower, tok, L // 2) != base  # another truncation, other states
    build_text_states(tower, tok, TEXTS, L, tmp_path)
    changed = _tower(cfg)
    with torch.no_grad():
        changed.encoder.encoder.layer[0].output.dense.weight.add_(0.1)
    assert tower_fingerprint(changed, tok, L) != base
    assert open_text_states(changed, tok, L, tmp_path) is None and changed.states is None


def test_a_tower_that_caches_nothing_stores_nothing(tmp_path):
    cfg = ModelConfig.tiny()  # trained end to end: no frozen states
    tower = build_model(cfg).text_tower
    tok = build_tokenizer(cfg.text)
    assert build_text_states(tower, tok, TEXTS, 16, tmp_path) is None
    assert tower_fingerprint(tower, tok, 16) == "" and not list(tmp_path.iterdir())


def test_trainer_stores_the_catalogue_once_and_the_catalogue_pass_reads_it(tiny_world_and_work, tmp_path):
    from embedding.retrieval_eval import model_method
    from embedding.trainer import TrainConfig, Trainer, load_training_data, resolve_model_config

    world, _, pairs = tiny_world_and_work
    work = tmp_path / "work"
    cfg = TrainConfig(model="minilm", steps_i=2, steps_ii=0, steps_iii=0, steps_cre=0, batch_size=8,
                      warmup_steps=1, balancing=False, progress=False)  # fmt: skip
    mc = resolve_model_config(cfg.model, cfg)
    data = load_training_data(cfg, world, pairs, work, mc)
    assert data.store.cache_dir == work
    res = Trainer(cfg, data, tmp_path / "run", mc).run()
    (states_dir,) = work.glob("text-states-*")
    texts = {build_text(r) for r in data.store.text_rows} - {""}
    assert TextStates(states_dir).meta["texts"] == len(texts)
    reading = model_method(res.model_path, data.store)
    alone = model_method(res.model_path, dataclasses.replace(data.store, cache_dir=None))
    np.testing.assert_allclose(reading.item_vecs, alone.item_vecs, atol=2e-3)
    # a second model from the same start finds the directory instead of writing another
    Trainer(cfg, data, tmp_path / "again", mc)
    assert len(list(work.glob("text-states-*"))) == 1


def test_the_minilm_column_reads_states_a_trained_model_stored(minilm, tmp_path):
    from types import SimpleNamespace

    from embedding.retrieval_eval import minilm_method

    cfg, tok = minilm
    rows = [{"title": t.split(" tags: ")[0].removeprefix("title: ")} for t in TEXTS] + [{"title": ""}]
    alone = minilm_method(SimpleNamespace(text_rows=rows, cache_dir=None), batch_size=4)
    assert alone.stored_states == 0
    build_text_states(_tower(cfg), tok, [build_text(r) for r in rows], cfg.preprocess.max_text_tokens, tmp_path)
    reading = minilm_method(SimpleNamespace(text_rows=rows, cache_dir=tmp_path), batch_size=4)
    assert reading.stored_states == len(TEXTS)  # every non-empty text read; the empty one encoded
    np.testing.assert_allclose(reading.item_vecs, alone.item_vecs, atol=2e-3)
    assert np.array_equal(reading.embed_texts(["heat"]), alone.embed_texts(["heat"]))
