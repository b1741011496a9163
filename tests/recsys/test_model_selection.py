"""TorchRec model selection on the valid split: the epoch's score, the choice, early stopping, and that the test
scores, the exported checkpoint pointer and the results table all come from the chosen epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.metrics import auc
from recsys.distributed import selected_checkpoint
from recsys.evaluate import evaluate_runs, load_scores, markdown_table
from recsys.model import RankerConfig
from recsys.synthetic import write_synthetic_samples
from recsys.train import TrainConfig, select_epoch, train_ranker, validation_score

SMALL = RankerConfig(
    embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16,), tower_hidden=8
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("selection") / "samples"
    write_synthetic_samples(path, n_rows=3000, n_users=80, n_items=100, days=8, seed=5)
    return path


def _cfg(samples: Path, out: Path, **kw) -> TrainConfig:
    base = {"ranker": SMALL, "batch_size": 128, "eval_batch_size": 4096, "variant": "both"}
    return TrainConfig(samples_dir=samples, out_dir=out, **{**base, **kw})


def test_validation_score_is_the_mean_task_auc_and_logloss_where_auc_is_undefined():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.2], [0.1, 0.2], [0.4, 0.2], [0.6, 0.2]])
    got = validation_score(probs, labels)
    assert got["click_auc"] == pytest.approx(auc(labels[:, 0], probs[:, 0])) == pytest.approx(0.75)
    assert got["finish_logloss"] == pytest.approx(-np.log(0.8))  # every finish label is 0
    assert got["score"] == pytest.approx((0.75 + np.log(0.8)) / 2)


def test_select_epoch_takes_the_best_and_the_earliest_on_a_tie():
    assert select_epoch({1: {"score": 0.6}, 2: {"score": 0.7}, 3: {"score": 0.65}}) == 2
    assert select_epoch({1: {"score": 0.7}, 2: {"score": 0.7}}) == 1


def test_every_epoch_is_scored_and_the_test_scores_are_the_chosen_epoch_s(samples, tmp_path):
    res = train_ranker(_cfg(samples, tmp_path / "run", epochs=3, patience=3))
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    history = {int(e): v for e, v in info["validation"].items()}
    assert sorted(history) == [1, 2, 3] and info["epochs_trained"] == 3
    assert info["selected_epoch"] == select_epoch(history)
    # the valid scores written beside the test scores are the chosen model's: they reproduce its recorded score
    valid = load_scores(res.scores_path, split="valid")
    labels = np.stack([valid["label_click"], valid["label_finish"]], 1)
    got = validation_score(np.stack([valid["click"], valid["finish"]], 1), labels)
    assert got["score"] == pytest.approx(history[info["selected_epoch"]]["score"], abs=1e-6)


def test_an_earlier_better_epoch_stops_training_and_makes_the_scores(samples, tmp_path, monkeypatch):
    # Given validation that gets worse after the first epoch (the score is made to fall epoch by epoch)
    import recsys.train as train_mod

    calls = iter(range(100))
    real = train_mod.validation_score
    monkeypatch.setattr(train_mod, "validation_score", lambda p, y: {**real(p, y), "score": -float(next(calls))})
    # When training may run 4 epochs with patience 1
    res = train_ranker(_cfg(samples, tmp_path / "run", epochs=4, patience=1))
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    # Then it stops after epoch 2, keeps epoch 1, and its test scores equal a run of exactly one epoch
    assert info["epochs_trained"] == 2 and info["selected_epoch"] == 1
    n_batches = info["selected_step"]
    assert res.steps == 2 * n_batches
    assert selected_checkpoint(tmp_path / "run" / "checkpoints").name == f"step-{n_batches:08d}"
    monkeypatch.setattr(train_mod, "validation_score", real)
    one = train_ranker(_cfg(samples, tmp_path / "one", epochs=1))
    a, b = load_scores(res.scores_path), load_scores(one.scores_path)
    np.testing.assert_allclose(a["click"], b["click"], rtol=1e-5, atol=1e-6)
    # and the results table says which epoch was used
    results = evaluate_runs({"torchrec/both": res.scores_path}, n_boot=20)
    assert results["selection"]["torchrec/both"] == {"selected_epoch": 1, "epochs_trained": 2}
    assert "| torchrec | both | epoch 1 of 2 |" in markdown_table(results)


def test_a_resumed_run_keeps_the_epochs_it_had_scored(samples, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = train_ranker(_cfg(samples, out, epochs=2, patience=2))
    # a rerun with a larger budget continues from the last checkpoint and scores only the new epoch
    import recsys.train as train_mod

    seen = []
    real = train_mod.validation_score
    monkeypatch.setattr(train_mod, "validation_score", lambda p, y: seen.append(1) or real(p, y))
    again = train_ranker(_cfg(samples, out, epochs=3, patience=2))
    info = json.loads((out / "train.json").read_text())
    assert again.resumed_from == first.steps and len(seen) == 1
    assert sorted(info["validation"]) == ["1", "2", "3"]


def test_seeds_train_one_model_each_and_are_evaluated_on_their_mean(samples, tmp_path):
    from recsys.cli import average_scores, run_variants

    res = run_variants(
        samples,
        tmp_path / "out",
        ["control"],
        ["torchrec"],
        {"ranker": SMALL, "epochs": 1, "batch_size": 128, "seed": 3},
        {},
        n_boot=20,
        seeds=2,
    )
    base = tmp_path / "out" / "torchrec" / "control"
    assert res.runs["torchrec/control"] == base / "ensemble" / "scores.npz"
    a, b = load_scores(base / "scores.npz"), load_scores(base / "seed-1" / "scores.npz")
    assert not np.allclose(a["click"], b["click"])  # two seeds, two models
    mean = load_scores(res.runs["torchrec/control"])
    np.testing.assert_allclose(mean["click"], (a["click"] + b["click"]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(mean["label_click"], a["label_click"])
    seeds = [
        m["seed"] for m in json.loads(Path(res.results_json).read_text())["selection"]["torchrec/control"]["members"]
    ]
    assert seeds == [3, 4]
    assert "mean of seed 3: epoch 1 of 1, seed 4: epoch 1 of 1" in Path(res.results_md).read_text()
    # members that do not score the same rows are refused, naming the file
    other = dict(np.load(base / "seed-1" / "scores.npz"))
    other["test_user"] = other["test_user"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **other)
    with pytest.raises(ValueError, match=r"bad\.npz: array 'test_user' differs"):
        average_scores([base / "scores.npz", tmp_path / "bad.npz"], tmp_path / "ens")
