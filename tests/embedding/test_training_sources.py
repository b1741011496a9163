"""Training sources: stage I pseudo-queries (from the catalogue) and collaborative item-ID vectors (from logs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from embedding.data import ItemStore, word_query_source


def _store(rows: list[dict]) -> ItemStore:
    n = len(rows)
    return ItemStore(np.arange(100, 100 + n), rows, [None] * n, [None] * n, [None] * n)


def test_word_queries_come_from_their_item_and_prefer_rare_words():
    rows = [{"title": f"the Zeba{i} babo{i % 3}", "tags": [f"kibra{i}", "viral"]} for i in range(30)]
    rows.append({"title": None, "tags": []})  # no words: no query, and no error
    src = word_query_source(_store(rows), per_item=20, seed=1)
    assert src.name == "word_queries" and src.stage == "I" and src.query_kind == "text"
    assert len(src) == 30 * 20 and set(src.targets.tolist()) == set(range(30))
    used = Counter()
    for q, t in zip(src.queries, src.targets.tolist(), strict=True):
        words = q.split()
        assert 1 <= len(words) <= 3 and len(set(words)) == len(words)
        assert set(words) <= {"the", f"zeba{t}", f"babo{t % 3}", f"kibra{t}", "viral"}, (q, t)
        used.update(words)
    # "the" and "viral" are in every item (idf ~0): rarely drawn; the item's own words are
    assert used["the"] + used["viral"] < 0.05 * sum(used.values())
    assert sum(used[f"zeba{i}"] for i in range(30)) > sum(used[f"babo{i}"] for i in range(3))


def test_word_queries_are_seeded():
    rows = [{"title": f"a{i} b{i} c{i % 4}", "tags": None} for i in range(10)]
    a = word_query_source(_store(rows), per_item=3, seed=5)
    b = word_query_source(_store(rows), per_item=3, seed=5)
    c = word_query_source(_store(rows), per_item=3, seed=6)
    assert a.queries == b.queries and a.queries != c.queries


def test_training_reads_the_mine_stage_pairs_and_names_what_is_missing(tiny_world_and_work, tmp_path):
    import json
    import shutil

    import pytest

    from embedding.data import load_pairs

    world, _, pairs = tiny_world_and_work
    # Given the mine stage's period layout, training reads its cutoff and positive definition from mining.json
    prepared = load_pairs(world, pairs)
    meta = json.loads((pairs / "mining.json").read_text())
    assert prepared.split_ts.isoformat() == meta["cutoff"]
    assert prepared.table("train", "i2i_pairs") == pairs / "train" / "i2i_pairs"
    before, after = prepared.interactions(before=True), prepared.interactions(before=False)
    assert before.num_rows and after.num_rows
    assert max(before["ts"].to_pylist()) < prepared.split_ts <= min(after["ts"].to_pylist())
    # When a table is missing, the error names it and how to make it (nothing is mined behind the user's back)
    broken = tmp_path / "pairs"
    shutil.copytree(pairs, broken)
    shutil.rmtree(broken / "heldout" / "i2i_pairs")
    with pytest.raises(FileNotFoundError, match=r"heldout/i2i_pairs.*sail mine-pairs"):
        load_pairs(world, broken)


def test_word_queries_join_stage_one_unless_switched_off(tiny_world_and_work):
    import dataclasses

    from embedding.config import ModelConfig
    from embedding.retrieval_eval import _scaled
    from embedding.trainer import TrainConfig, load_training_data

    world, work, pairs = tiny_world_and_work
    on = TrainConfig()
    off = _scaled(on, 0.5, data={"word_queries_per_item": 0}, audio=False)
    assert off.data == dataclasses.replace(on.data, word_queries_per_item=0) and not off.audio
    assert off.steps_i == max(1, round(on.steps_i * 0.5))
    with_words = load_training_data(on, world, pairs, work, ModelConfig.tiny())
    without = load_training_data(off, world, pairs, work, ModelConfig.tiny())
    assert "word_queries" in with_words.stages["I"]
    assert len(with_words.sources["word_queries"]) == on.data.word_queries_per_item * len(
        [r for r in with_words.store.text_rows if (r.get("title") or r.get("tags"))]
    )
    assert "word_queries" not in without.sources and "word_queries" not in without.stages["I"]


def test_word_queries_knob_reaches_the_trainer_from_cli_and_config(tmp_path):
    import argparse

    from embedding.cli import _add_train_args, train_config_from_args
    from jobs.pipeline import embedding_train_config, load_config

    p = argparse.ArgumentParser()
    _add_train_args(p)
    args = p.parse_args(["--data", "d", "--pairs", "m", "--out", "o", "--word-queries", "0"])
    assert train_config_from_args(args).data.word_queries_per_item == 0
    args = p.parse_args(["--data", "d", "--pairs", "m", "--out", "o"])
    assert train_config_from_args(args).data.word_queries_per_item == 4
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nembedding: {word_queries: 2, holdout_frac: 0.6}\n")
    cfg = load_config(str(f))
    assert embedding_train_config(cfg).data.word_queries_per_item == 2 and cfg.embedding.holdout_frac == 0.6


def test_negative_word_queries_are_refused():
    import pytest

    from embedding.data import DataConfig

    with pytest.raises(ValueError, match="word_queries_per_item must be >= 0, got -1"):
        DataConfig(word_queries_per_item=-1)


def _write_interactions(path, events: list[tuple[int, int, bool]]) -> None:
    """INTERACTIONS rows (user, item, liked), one a minute; liked is positive (score 2), a click alone is not."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_mining_spark import imp, write_raw

    from core import contracts as K

    write_raw([imp(u, i, n, positive=liked) for n, (u, i, liked) in enumerate(events)], K.INTERACTIONS, path)


def test_positive_matrix_counts_positive_events_by_hand(tmp_path):
    from embedding.data import positive_matrix

    # user 7: item 30 liked twice, item 10 once, item 20 clicked only (not positive); user 5: item 20 liked;
    # user 9: clicks only (no positive: no row); item 40 is never positive (no column)
    _write_interactions(
        tmp_path / "i",
        [(7, 30, True), (7, 30, True), (7, 10, True), (7, 20, False), (5, 20, True), (9, 40, False)],
    )
    users, items, m = positive_matrix(tmp_path / "i")
    assert users.tolist() == [5, 7] and items.tolist() == [10, 20, 30]
    np.testing.assert_allclose(m.toarray(), np.log1p([[0, 1, 0], [1, 0, 2]]))
    # events are one a minute from 2025-03-03 (T0): before minute 2, only user 7's two likes of item 30 count
    import datetime as dt

    from mining.mining_config import PositiveConfig

    users, items, m = positive_matrix(tmp_path / "i", before=dt.datetime(2025, 3, 3, 0, 2, tzinfo=dt.UTC))
    assert users.tolist() == [7] and items.tolist() == [30]
    np.testing.assert_allclose(m.toarray(), np.log1p([[2]]))
    # and the positive definition is the configured one: a threshold of 1 makes a click alone positive
    _, items, _ = positive_matrix(tmp_path / "i", PositiveConfig(threshold=1.0))
    assert items.tolist() == [10, 20, 30, 40]


def test_item_id_table_is_the_svd_item_factors(tmp_path):
    import datetime as dt

    from embedding.data import PreparedData, fit_item_id_table, positive_matrix

    rng = np.random.default_rng(0)
    users, items_drawn = rng.integers(0, 30, 400), rng.integers(100, 112, 400)
    events = [(int(u), int(i), True) for u, i in zip(users, items_drawn, strict=True)]
    _write_interactions(tmp_path / "interactions", events)
    _, items, m = positive_matrix(tmp_path / "interactions")
    prepared = PreparedData(tmp_path, tmp_path / "pairs", dt.datetime(2100, 1, 1, tzinfo=dt.UTC), None)
    table = fit_item_id_table(prepared, dim=4, seed=0)
    assert table.item_ids.tolist() == items.tolist() and table.vectors.shape == (12, 4)
    np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=1), 1.0, rtol=1e-5)
    # V * sqrt(S) of the top 4 singular triplets, row-normalised: its Gram is sign-free, so compare Grams
    _, s, vt = np.linalg.svd(m.toarray(), full_matrices=False)
    v = vt[:4].T * np.sqrt(s[:4])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(table.vectors @ table.vectors.T, v @ v.T, atol=1e-4)


def _mine(world, out, engine: str, top_k: int = 50, spark=None):
    from core.timeline import embedding_cutoff
    from mining.mine_pairs import log_time_range, run_periods
    from mining.mining_config import CovisitConfig, MiningConfig, Q2IConfig, SwingConfig

    cfg = MiningConfig(
        data_dir=str(world),
        out_dir=str(out),
        engine=engine,
        covisit=CovisitConfig(top_k=top_k),
        swing=SwingConfig(top_k=top_k),
        q2i=Q2IConfig(min_clicks=1),
    )
    run_periods(cfg, embedding_cutoff(*log_time_range(world), 0.5), spark=spark)
    return out


def test_a_changed_top_k_changes_the_training_pairs(tiny_world_and_work, tmp_path):
    from embedding.config import ModelConfig
    from embedding.trainer import TrainConfig, load_training_data

    world, work, pairs = tiny_world_and_work  # mined with top_k 50
    few = _mine(world, tmp_path / "top3", "polars", top_k=3)
    wide = load_training_data(TrainConfig(), world, pairs, work, ModelConfig.tiny())
    narrow = load_training_data(TrainConfig(), world, few, work, ModelConfig.tiny())
    for src in ("covisit_i2i", "swing_i2i"):
        per_anchor = np.bincount(narrow.sources[src].queries)
        assert per_anchor.max() <= 3 and len(narrow.sources[src]) < len(wide.sources[src]), src
    assert len(narrow.sources["seq2item"]) == len(wide.sources["seq2item"])  # top_k is an i2i knob only


@pytest.mark.spark
def test_spark_and_polars_pairs_train_the_identical_model(tiny_world_and_work, tmp_path, spark):
    import dataclasses

    from safetensors.torch import load_file

    from embedding.trainer import TrainConfig, train

    world, work, _ = tiny_world_and_work
    # Given the tiny world's pairs mined by each engine at the same cutoff
    by_engine = {e: _mine(world, tmp_path / e, e, spark=spark if e == "spark" else None) for e in ("spark", "polars")}
    cfg = TrainConfig(steps_i=3, steps_ii=2, steps_iii=2, steps_cre=4, batch_size=8, warmup_steps=1,
                      refresh_every=2, balance_sample=16, progress=False)  # fmt: skip
    # When the same trainer runs on each
    models = {
        e: train(dataclasses.replace(cfg), world, tmp_path / f"model_{e}", p, work_dir=work).model_path
        for e, p in by_engine.items()
    }
    # Then every weight is identical: one source of pairs, whichever engine mined it
    a, b = load_file(str(models["spark"])), load_file(str(models["polars"]))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _brute_force_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


@pytest.mark.parametrize("by", ["tfidf", "minilm"])
def test_content_neighbours_are_the_brute_force_top_k_of_their_vectors(by):
    from embedding.data import content_neighbours, content_vectors

    rows = [
        {"title": "a quiet harbour at dawn", "tags": ["sea", "boats"]},
        {"title": "fishing boats in the harbour", "tags": ["sea"]},
        {"title": "a chess endgame explained", "tags": ["chess"]},
        {"title": "the best chess openings", "tags": ["chess", "strategy"]},
        {"title": "baking sourdough bread", "tags": ["food"]},
        {"title": "bread and pastry at home", "tags": ["food", "baking"]},
    ]
    store = _store(rows)
    x = content_vectors(store, by)
    dense = x.toarray() if hasattr(x, "toarray") else x
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    # chunked top-k (chunks of 4 rows, so one chunk ends mid-catalogue) = the brute-force top-k
    idx, sim = content_neighbours(store, 2, chunk=4, by=by)
    want_idx, want_sim = _brute_force_neighbours(dense, 2)
    np.testing.assert_allclose(sim, want_sim, rtol=1e-5, atol=1e-6)
    assert (idx == want_idx).all() or np.allclose(np.take_along_axis(dense @ dense.T, idx, 1), want_sim, atol=1e-6)
    # every item's nearest neighbour is its pair (same subject), by words and by meaning alike
    assert idx[:, 0].tolist() == [1, 0, 3, 2, 5, 4]
    with pytest.raises(ValueError, match="content_similarity must be one of"):
        from embedding.data import DataConfig

        DataConfig(content_similarity="bm25")
