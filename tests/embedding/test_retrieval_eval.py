"""Retrieval evaluation: recall and search helpers against hand-computed cases; the whole table on the tiny world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedding.retrieval_eval import (
    MINILM,
    SAIL,
    SAIL_CONTENT,
    Benchmark,
    EvalConfig,
    PairsMethod,
    check_targets,
    paired_differences,
    per_query_recall,
    run_retrieval_eval,
    search_excluding,
)
from embedding.trainer import TrainConfig


def test_search_excludes_the_query_item():
    vecs = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.8, 0.2]], dtype=np.float32)
    got = search_excluding(vecs, vecs[[0]], 2, [{0}])
    assert got == [[1, 3]]


def test_recall_and_capped_recall_by_hand():
    b = Benchmark("t", 2, [{1, 2}, {5}], np.array([0, 1]))
    np.testing.assert_allclose(per_query_recall([[1, 3], [4, 6]], b), [0.5, 0.0])
    capped = Benchmark("t", 2, [{1, 2, 3, 4}], np.array([0]), capped=True)
    np.testing.assert_allclose(per_query_recall([[1, 2]], capped), [1.0])  # 2 hits / min(4, 2)


def test_paired_difference_is_the_mean_per_query_gap_with_a_cluster_interval():
    # Given two methods on the same 6 queries in 3 clusters, B always 0.1 below A, except one query
    bench = {"t": Benchmark("t", 2, [{1}] * 6, np.array([0, 0, 1, 1, 2, 2]))}
    a = np.array([0.5, 0.5, 0.4, 0.4, 0.3, 0.3])
    per_query = {"A": {"t": a}, "B": {"t": a - np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.4])}}
    # When differencing A - B
    d = paired_differences(per_query, bench, [("A", "B"), ("A", "missing")], n_boot=200, seed=0)
    # Then the estimate is the mean gap (0.9 / 6), its interval lies between the cluster means' extremes, and a
    # missing column is left out
    assert set(d) == {"A - B"}
    cell = d["A - B"]["t"]
    assert cell["diff"] == pytest.approx(0.15) and cell["queries"] == 6
    assert 0.1 - 1e-9 <= cell["low"] <= cell["diff"] <= cell["high"] <= 0.25 + 1e-9


def test_targets_read_paired_intervals_and_judge_cold_start_against_content_columns():
    def cell(low, high):
        return {"diff": (low + high) / 2, "low": low, "high": high, "queries": 10}

    table = {c: {} for c in ("ItemCF (covisit)", MINILM, SAIL_CONTENT, SAIL)}
    paired = {
        f"{SAIL} - {SAIL_CONTENT}": {
            "i2i_coengagement": cell(0.01, 0.03),
            "cold_start_i2i": cell(0.002, 0.02),
            "seq2item": cell(-0.01, 0.02),
        },
        f"{SAIL} - {MINILM}": {
            "i2i_coengagement": cell(0.01, 0.03),
            "cold_start_i2i": cell(0.001, 0.03),
            "seq2item": cell(0.01, 0.04),
        },
        f"{SAIL} - ItemCF (covisit)": {"cold_start_i2i": cell(0.2, 0.3)},  # a structural 0: never a target
        f"{SAIL_CONTENT} - {MINILM}": {"i2i_coengagement": cell(-0.02, 0.0), "q2i": cell(-0.03, -0.01)},
    }
    t = check_targets(table, paired)
    assert t["cre_over_content_stages"] == {
        "met": False,
        "per_task": {"i2i_coengagement": True, "cold_start_i2i": True, "seq2item": False},
    }
    assert t["cre_over_minilm"]["met"]
    # stages I-III may tie MiniLM (interval reaching 0) but not fall below it
    assert t["content_stages_keep_minilm"] == {"met": False, "per_task": {"i2i_coengagement": True, "q2i": False}}
    assert t["cold_start_over_content"] == {"met": True, "per_column": {MINILM: True, SAIL_CONTENT: True}}


def _tiny_eval_config(**changes) -> EvalConfig:
    train = TrainConfig(
        steps_i=2,
        steps_ii=1,
        steps_iii=1,
        steps_cre=2,
        batch_size=8,
        warmup_steps=1,
        refresh_every=1,
        balance_sample=16,
        progress=False,
    )
    return EvalConfig(train=train, n_boot=50, max_queries=200, content_anchors=100, ablation_scale=0.5, **changes)


def test_quick_table_without_ablations(tiny_world_and_work, tmp_path):
    world, work, pairs = tiny_world_and_work
    res = run_retrieval_eval(
        _tiny_eval_config(ablations=False, minilm=False), world, pairs, tmp_path / "eval", work_dir=work
    )
    payload = json.loads(res.json_path.read_text())
    assert payload["columns"] == [
        "ItemCF (covisit)",
        "Swing",
        "Content two-tower (CLIP-style)",
        "SAIL stages I-III",
        "SAIL + CRE",
    ]
    assert payload["ablations"] == {}
    assert set(payload["targets"]) == {"cre_over_content_stages", "cold_start_over_content"}
    assert set(payload["paired"]) == {f"SAIL + CRE - {c}" for c in payload["columns"][:-1]}
    assert payload["split_ts"] == json.loads((pairs / "mining.json").read_text())["cutoff"]
    b = payload["log"]["benchmarks"]
    assert set(b) == {"i2i_coengagement", "i2i_content", "q2i", "cold_start_i2i", "seq2item"}
    assert all(n > 0 for n in b.values())


@pytest.mark.slow
def test_end_to_end_table_on_the_tiny_world(tiny_world_and_work, tmp_path):
    world, work, pairs = tiny_world_and_work
    cfg = _tiny_eval_config()
    res = run_retrieval_eval(cfg, world, pairs, tmp_path / "eval", work_dir=work)
    payload = json.loads(res.json_path.read_text())
    cols = [
        "ItemCF (covisit)",
        "Swing",
        "MiniLM (pretrained, text)",
        "Content two-tower (CLIP-style)",
        "SAIL stages I-III",
        "SAIL + CRE",
    ]
    assert payload["columns"] == cols
    assert set(payload["ablations"]) == {
        "SAIL + CRE (reference)",
        "w/o hard negatives",
        "w/o balancing",
        "w/o LLM fuser (concat)",
        "w/o audio",
        "w/o word queries",
    }
    for col in cols:
        for task in ("i2i_coengagement", "i2i_content", "q2i", "cold_start_i2i", "seq2item"):
            v = payload["table"][col][task]
            assert 0 <= v["low"] <= v["recall"] <= v["high"] <= 1, (col, task, v)
    # ItemCF cannot score anchors without training pairs
    assert payload["table"]["ItemCF (covisit)"]["cold_start_i2i"]["recall"] == 0.0
    md = res.markdown_path.read_text()
    assert "q2i R@50" in md and "[" in md and "w/o audio" in md


def test_pairs_method_ranks_mined_neighbours():
    import pyarrow as pa

    from embedding.data import ItemStore

    store = ItemStore(np.array([10, 11, 12]), [{}] * 3, [None] * 3, [None] * 3, [None] * 3)
    i2i = pa.table(
        {"anchor_item_id": [10, 10, 11], "item_id": [11, 12, 12], "score": [1.0, 2.0, 5.0], "miner": ["covisit"] * 3}
    )
    q2i = pa.table({"query": ["a"], "item_id": [12], "clicks": [3]})
    m = PairsMethod(i2i, q2i, store, "covisit")
    assert m.retrieve(Benchmark("x", 5, [{1}], np.array([0]), anchors=np.array([0]))) == [[2, 1]]
    assert m.retrieve(Benchmark("x", 5, [{2}, {2}], np.array([0, 1]), texts=["a", "b"])) == [[2], []]
    hist = Benchmark("x", 5, [{2}], np.array([0]), histories=[np.array([0, 1])])
    assert m.retrieve(hist) == [[2]]  # 2 + 5 for item 12; history items excluded
