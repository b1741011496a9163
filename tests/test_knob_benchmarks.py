"""The knob-picking and dose-response benchmarks: how a named variant becomes a training config, and which finished
runs the dose-response benchmark accepts in place of running them again."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from benchmarks import collab_in_content, embedding_validation
from embedding.trainer import TrainConfig


def test_a_variant_changes_only_what_it_names(tmp_path):
    base = TrainConfig(model="minilm", steps_i=200, steps_ii=50, steps_iii=50, steps_cre=400)
    shipped = embedding_validation.variant_config(base, embedding_validation.VARIANTS["shipped"], tmp_path)
    assert shipped == base
    picked = embedding_validation.variant_config(base, embedding_validation.VARIANTS["content_minilm_cre_x2"], tmp_path)
    assert picked == dataclasses.replace(
        base, steps_cre=800, data=dataclasses.replace(base.data, content_similarity="minilm")
    )
    only_i = embedding_validation.variant_config(base, embedding_validation.VARIANTS["stage_i_only"], tmp_path)
    assert (only_i.steps_i, only_i.steps_ii, only_i.steps_iii, only_i.steps_cre) == (200, 0, 0, 400)
    frozen = embedding_validation.variant_config(base, embedding_validation.VARIANTS["frozen_text"], tmp_path / "f")
    written = json.loads((tmp_path / "f" / "model.json").read_text())
    assert frozen.model == str(tmp_path / "f" / "model.json") and written["text"]["train_top_layers"] == 0


def test_a_reused_run_must_be_the_same_config_and_have_reached_the_ranker(tmp_path):
    from jobs.pipeline import load_config

    cfg = load_config("demo", run_dir=str(tmp_path))
    recorded = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    (tmp_path / "run.json").write_text(json.dumps({"config": recorded}))
    with pytest.raises(SystemExit, match="no ranker/results.json"):
        collab_in_content._check_reused(tmp_path, cfg)
    (tmp_path / "ranker").mkdir()
    (tmp_path / "ranker" / "results.json").write_text("{}")
    collab_in_content._check_reused(tmp_path, cfg)  # the same config: accepted
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, collab_in_content=0.0))
    with pytest.raises(SystemExit, match=r"its \[data\] differs"):
        collab_in_content._check_reused(tmp_path, other)
    grid = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, trainers=("torchrec",)))
    collab_in_content._check_reused(tmp_path, grid)  # the ranker grid may differ


def test_the_dose_table_names_the_values_not_measured_yet():
    cell = {"recall": 0.2, "low": 0.19, "high": 0.21}
    diff = {"diff": 0.01, "low": 0.0, "high": 0.02}
    row = {
        "collab_in_content": 0.0,
        "retrieval": {c: dict.fromkeys(collab_in_content.TASKS, cell) for c in ("SAIL stages I-III", "SAIL + CRE")},
        "cre_minus_content_stages": dict.fromkeys(collab_in_content.TASKS, diff),
        "without_audio": {"full_minus_without_audio": {"i2i_coengagement": diff}},
        "ceiling": {"topics + visible collab": cell, "topics + whole collab": cell},
        "ranker_cold_slice_gain": None,
        "ranker_click_auc_gain_all": None,
        "code": {"commit": "b" * 40, "dirty": False},
    }
    md = collab_in_content.markdown({"config": "demo", "values_requested": [0.0, 0.25, 0.5], "values": [row]})
    assert "| 0 | 20.0 / 20.0 |" in md and "Not measured yet: 0.25, 0.5" in md
    assert "Runs made at commit bbbbbbb: 0." in md
    assert "Not measured yet" not in collab_in_content.markdown({"config": "demo", "values": [row]})


def test_a_sweep_spanning_invocations_keeps_the_rows_of_the_same_code_only(tmp_path, capsys):
    old_run = tmp_path / "rho_0"
    old_run.mkdir()
    (old_run / "run.json").write_text(json.dumps({"code": {"commit": "a" * 40, "hash": "old"}}))
    previous = {
        "config": "demo",
        "values_requested": [0.0, 0.25, 0.5],
        "values": [
            {"collab_in_content": 0.0, "run_dir": str(old_run)},  # written before rows recorded their code
            {"collab_in_content": 0.25, "run_dir": "gone", "code": {"commit": "b" * 40, "hash": "new"}},
            {"collab_in_content": 0.5, "run_dir": "gone", "code": {"commit": "b" * 40, "hash": "new"}},
        ],
    }
    kept, requested = collab_in_content.kept_rows(previous, [0.5], "new")
    assert [r["collab_in_content"] for r in kept] == [0.25]  # 0.5 is measured again; 0 was other code
    assert requested == [0.0, 0.25, 0.5]
    assert "collab_in_content 0: dropped" in capsys.readouterr().out
    kept, _ = collab_in_content.kept_rows(previous, [], "old")
    assert [r["collab_in_content"] for r in kept] == [0.0]  # its code read from the run's run.json
    assert collab_in_content.kept_rows(None, [0.5], "new") == ([], [])


def test_neighbour_share_against_a_hand_worked_case():
    from benchmarks.signal_neighbours import chance_share, neighbour_share

    # two tight pairs far apart; labels a, a, b, c: rows 0 and 1 find each other (same label), 2 and 3 do not
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = np.array(["a", "a", "b", "c"])
    share, chance = neighbour_share(x, labels, k=1), chance_share(labels)
    assert share == 0.5  # 2 of the 4 rows' nearest neighbour carries their label
    assert chance == 2 / 12  # 2 ordered same-label pairs of 4 x 3


def test_compare_pairs_two_runs_over_the_same_queries_and_refuses_different_ones(tmp_path):
    clusters = np.array([1, 1, 2, 3])
    a = {"clusters/seq2item": clusters, "shipped/SAIL + CRE/seq2item": np.array([1.0, 0.0, 1.0, 1.0])}
    b = {"clusters/seq2item": clusters, "shipped/SAIL + CRE/seq2item": np.array([0.0, 0.0, 1.0, 0.0])}
    embedding_validation.save_per_query(tmp_path / "a.queries.npz", a)
    embedding_validation.save_per_query(tmp_path / "b.queries.npz", b)
    got = embedding_validation.compare(f"{tmp_path}/a.queries.npz:shipped", f"{tmp_path}/b.queries.npz:shipped", 200)
    assert got["seq2item"]["diff"] == pytest.approx(0.5) and got["seq2item"]["queries"] == 4  # (1 + 0 + 0 + 1) / 4
    assert got["seq2item"]["low"] <= 0.5 <= got["seq2item"]["high"]
    other = {**b, "clusters/seq2item": np.array([1, 2, 2, 3])}
    embedding_validation.save_per_query(tmp_path / "c.queries.npz", other)
    with pytest.raises(ValueError, match="different seq2item queries"):
        embedding_validation.compare(f"{tmp_path}/a.queries.npz:shipped", f"{tmp_path}/c.queries.npz:shipped")
    with pytest.raises(ValueError, match="no variant 'cre_x2'"):
        embedding_validation.compare(f"{tmp_path}/a.queries.npz:cre_x2", f"{tmp_path}/b.queries.npz:shipped")
