"""Residual variants: a variant trained on control's logits starts as exactly control (epoch 0 / zero rounds), is
chosen against it on the valid days, and is served as base + correction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.metrics import auc
from recsys.evaluate import load_scores
from recsys.lgbm import LgbmConfig, train_lgbm
from recsys.model import RankerConfig
from recsys.synthetic import write_synthetic_samples
from recsys.train import LOGITS_FILE, TrainConfig, sigmoid, train_ranker

SMALL = RankerConfig(
    embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16,), tower_hidden=8
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("residual") / "samples"
    write_synthetic_samples(path, n_rows=3000, n_users=80, n_items=100, days=8, seed=5)
    return path


def _cfg(samples: Path, out: Path, **kw) -> TrainConfig:
    base = {"ranker": SMALL, "batch_size": 128, "eval_batch_size": 4096}
    return TrainConfig(samples_dir=samples, out_dir=out, **{**base, **kw})


@pytest.fixture(scope="module")
def control(samples, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("control") / "control"
    train_ranker(_cfg(samples, out, variant="control", epochs=2, save_logits=True))
    return out


def test_control_writes_its_logits_on_every_split(control):
    logits = np.load(control / LOGITS_FILE)
    assert {"train", "valid", "test"} <= set(logits.files)
    test = load_scores(control / "scores.npz")
    # the written test probabilities are the sigmoid of the logits
    np.testing.assert_allclose(sigmoid(logits["test"][:, 0]), test["click"], rtol=1e-6)
    assert logits["train"].shape[1] == 2 and len(logits["train"]) > len(logits["test"])


def test_epoch_zero_is_control_and_a_worse_variant_keeps_control_s_scores(samples, control, tmp_path, monkeypatch):
    # Given validation that falls after epoch 0 (every trained epoch scores worse than the base model)
    import recsys.train as train_mod

    real = train_mod.validation_score
    calls = iter(range(100))
    monkeypatch.setattr(
        train_mod,
        "validation_score",
        lambda p, y: {**real(p, y), "score": 1.0 if next(calls) == 0 else -1.0},
    )
    # When a residual placebo trains on control's logits
    out = tmp_path / "placebo"
    train_ranker(_cfg(samples, out, variant="placebo", epochs=3, patience=1, base_dir=control))
    info = json.loads((out / "train.json").read_text())
    # Then it scored epoch 0, stopped after one worse epoch, and chose epoch 0: exactly control's test scores
    assert info["selected_epoch"] == 0 and info["epochs_trained"] == 1
    assert (out / info["base_dir"]).resolve() == control.resolve()  # relative: a copied run tree still serves
    mine, theirs = load_scores(out / "scores.npz"), load_scores(control / "scores.npz")
    np.testing.assert_allclose(mine["click"], theirs["click"], rtol=1e-6)
    np.testing.assert_allclose(mine["finish"], theirs["finish"], rtol=1e-6)
    assert (out / "checkpoints" / "selected").read_text() == "step-00000000"


def test_epoch_zero_scores_control_s_valid_logits(samples, control, tmp_path):
    out = tmp_path / "both"
    train_ranker(_cfg(samples, out, variant="both", epochs=1, base_dir=control))
    history = json.loads((out / "train.json").read_text())["validation"]
    valid = load_scores(control / "scores.npz", split="valid")
    assert history["0"]["click_auc"] == pytest.approx(auc(valid["label_click"], valid["click"]), abs=1e-9)
    assert history["0"]["step"] == 0 and "1" in history


def test_a_base_of_other_samples_is_refused(control, tmp_path):
    other = tmp_path / "other"
    write_synthetic_samples(other, n_rows=2000, n_users=50, n_items=60, days=8, seed=9)
    with pytest.raises(ValueError, match="logits are|labels differ"):
        train_ranker(_cfg(other, tmp_path / "v", variant="emb", epochs=1, base_dir=control))
    with pytest.raises(FileNotFoundError, match="save_logits"):
        train_ranker(_cfg(other, tmp_path / "w", variant="emb", epochs=1, base_dir=tmp_path / "nothing"))


def test_lgbm_residual_adds_its_trees_to_control_s_logits(samples, tmp_path):
    lg = {"samples_dir": samples, "num_rounds": 20, "early_stopping": 5}
    train_lgbm(LgbmConfig(out_dir=tmp_path / "control", variant="control", save_logits=True, **lg))
    base = np.load(tmp_path / "control" / LOGITS_FILE)
    train_lgbm(LgbmConfig(out_dir=tmp_path / "emb", variant="emb", base_dir=tmp_path / "control", **lg))
    info = json.loads((tmp_path / "emb" / "train.json").read_text())
    got = load_scores(tmp_path / "emb" / "scores.npz")
    for j, task in enumerate(("click", "finish")):
        if info[f"{task}_best_iteration"] == 0:  # no round beat control on valid: control's own scores
            np.testing.assert_allclose(got[task], sigmoid(base["test"][:, j]), rtol=1e-6)
        else:  # the residual's trees moved the scores, starting from control's
            assert not np.allclose(got[task], sigmoid(base["test"][:, j]))


def test_lgbm_residual_without_a_better_round_keeps_control(samples, tmp_path, monkeypatch):
    import recsys.lgbm as lgbm_mod

    lg = {"samples_dir": samples, "num_rounds": 10, "early_stopping": 5}
    train_lgbm(LgbmConfig(out_dir=tmp_path / "control", variant="control", save_logits=True, **lg))
    monkeypatch.setattr(lgbm_mod, "auc", lambda y, p: 2.0)  # no AUC can beat the base model's
    train_lgbm(LgbmConfig(out_dir=tmp_path / "placebo", variant="placebo", base_dir=tmp_path / "control", **lg))
    info = json.loads((tmp_path / "placebo" / "train.json").read_text())
    assert info["click_best_iteration"] == 0 and info["finish_best_iteration"] == 0
    a, b = load_scores(tmp_path / "placebo" / "scores.npz"), load_scores(tmp_path / "control" / "scores.npz")
    np.testing.assert_allclose(a["click"], b["click"], rtol=1e-6)


def test_served_residual_variant_is_base_plus_correction(samples, control, tmp_path):
    from offline_eval.serve import load_trained_ranker, score_encoded, score_table
    from recsys.data import load_samples, split_of

    out = tmp_path / "both"
    train_ranker(_cfg(samples, out, variant="both", epochs=2, patience=2, base_dir=control))
    ranker = load_trained_ranker(out)
    assert ranker.base is not None and ranker.base.variant_dir.resolve() == control.resolve()
    test = split_of(load_samples(samples), "test")
    logits = score_table(ranker, test)
    own = score_encoded(ranker, ranker.encoder.encode(test))
    base = score_encoded(ranker.base, ranker.base.encoder.encode(test))
    np.testing.assert_allclose(logits, own + base, rtol=1e-6)
    # and serving reproduces the test scores training wrote
    np.testing.assert_allclose(sigmoid(logits[:, 0]), load_scores(out / "scores.npz")["click"], rtol=1e-4, atol=1e-6)


def test_evals_per_epoch_scores_parts_of_an_epoch(samples, tmp_path):
    out = tmp_path / "quarters"
    train_ranker(_cfg(samples, out, variant="control", epochs=1, evals_per_epoch=4, patience=4))
    info = json.loads((out / "train.json").read_text())
    steps = [v["step"] for v in info["validation"].values()]
    assert len(steps) == 4 and steps == [steps[0] * k for k in (1, 2, 3, 4)]
    assert info["epochs_trained"] == 1.0 and info["selected_epoch"] in (0.25, 0.5, 0.75, 1.0)


def test_control_s_cold_logits_are_its_logits_for_unknown_items(samples, control):
    import pyarrow as pa

    from offline_eval.serve import load_trained_ranker, score_encoded
    from recsys.data import load_samples, split_of

    cold = np.load(control / LOGITS_FILE)["train_cold"]
    train = split_of(load_samples(samples), "train")
    unknown = train.set_column(
        train.schema.get_field_index("item_id"), "item_id", pa.array(np.full(train.num_rows, 10**9), pa.int64())
    )
    ranker = load_trained_ranker(control)
    np.testing.assert_allclose(score_encoded(ranker, ranker.encoder.encode(unknown)), cold, rtol=1e-5, atol=1e-6)
    assert not np.allclose(cold, np.load(control / LOGITS_FILE)["train"])  # the item ids mattered


def test_a_dropped_item_id_takes_the_base_s_cold_logits(samples, control):
    from recsys.data import load_encoded_splits, make_batch
    from recsys.features import feature_spec
    from recsys.train import attach_base_logits

    spec = feature_spec("both")
    splits = load_encoded_splits(samples, spec)
    attach_base_logits(splits, control)
    base = np.load(control / LOGITS_FILE)
    idx = np.arange(8)
    drop = np.array([True, False] * 4)
    batch = make_batch(splits.train, idx, spec, drop)
    want = np.where(drop[:, None], base["train_cold"][idx], base["train"][idx])
    np.testing.assert_allclose(batch.offset.numpy(), want)
    np.testing.assert_allclose(make_batch(splits.train, idx, spec).offset.numpy(), base["train"][idx])
