"""LightGBM baseline on the ranker's features, for the same variants.

Inputs come from the same Encoder as the TorchRec model (same train-split vocabularies, same dense features):
ids and context as categorical features (the encoded rows; 0 is out-of-vocabulary), the dense counters, and per
variant: the SAIL vector reduced to `pca_components` principal components (fitted on the train rows) plus
user_hist_sim (emb), the semantic-ID prefix levels as categoricals (sid). The recent-items bag has no
tree-friendly form and is left out (its length is a dense feature). One binary model per task, early-stopped on
the valid split; test scores are written in the same `scores.npz` layout as the TorchRec runs.

Residual variants (`base_dir`), as in recsys.train: boosting starts from the base run's raw scores (its
`logits.npz`, `init_score`), so the variant's trees learn what the base model misses; when no round lowers the
valid AUC above the base model's (logloss where the valid labels are one class), the variant keeps the base
model's scores (zero rounds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.io import write_npz_atomic
from core.metrics import auc, logloss
from recsys.data import Encoded, load_encoded_splits
from recsys.features import TASKS, Variant, feature_spec
from recsys.train import LOGITS_FILE, attach_base_logits, sigmoid

CATEGORICAL = ("user_id", "item_id", "author_id", "category", "surface", "hour", "position")


@dataclass(frozen=True)
class LgbmConfig:
    samples_dir: Path
    out_dir: Path
    variant: Variant = "control"
    sid_levels: int = 3
    pca_components: int = 4  # SAIL vector -> this many principal components
    num_leaves: int = 63
    learning_rate: float = 0.05
    num_rounds: int = 400  # upper bound; early stopping on valid
    early_stopping: int = 30
    threads: int = 1
    seed: int = 0
    max_train_rows: int | None = None
    base_dir: Path | None = None  # residual on this run's logits.npz (see the module docstring)
    save_logits: bool = False  # writes logits.npz (raw scores on every split): a base run's


def _matrix(enc: Encoded, spec, pca: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, list[str], list[str]]:
    cats = list(CATEGORICAL) + [f"sid_l{i}" for i in range(spec.sid_levels)]
    cols = [enc.single[c].astype(np.float64) for c in cats]
    names = list(cats) + list(spec.dense_features)
    cols += [enc.dense[:, j].astype(np.float64) for j in range(enc.dense.shape[1])]
    if pca is not None and enc.content is not None:
        mean, comps = pca
        z = (enc.content - mean) @ comps.T
        has = np.any(enc.content != 0, axis=1)
        z[~has] = np.nan  # missing vector: a missing value, not the mean
        cols += [z[:, k] for k in range(z.shape[1])]
        names += [f"sail_pc{k}" for k in range(z.shape[1])]
    return np.stack(cols, axis=1), names, cats


def _fit_pca(content: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = content[np.any(content != 0, axis=1)]
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k]


def _base_logits(base_dir: Path, splits) -> dict[str, np.ndarray]:
    """The base run's raw scores per split, checked to be of this run's rows (see recsys.train)."""
    attach_base_logits(splits, base_dir)
    return {s: getattr(splits, s).offset.astype(np.float64) for s in ("train", "valid", "test")}


def train_lgbm(cfg: LgbmConfig) -> Path:
    """Trains the click and finish models of one variant; returns the test scores path."""
    import lightgbm as lgb

    spec = feature_spec(cfg.variant, cfg.sid_levels)
    splits = load_encoded_splits(cfg.samples_dir, spec, cfg.max_train_rows)
    train, valid, test = splits.train, splits.valid, splits.test
    pca = _fit_pca(train.content, cfg.pca_components) if spec.use_embedding else None
    x_tr, names, cats = _matrix(train, spec, pca)
    x_va, _, _ = _matrix(valid, spec, pca)
    x_te, _, _ = _matrix(test, spec, pca)
    params = {
        "objective": "binary",
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "num_threads": cfg.threads,
        "seed": cfg.seed,
        "deterministic": True,
        "verbose": -1,
        "cat_smooth": 10.0,
        "min_data_per_group": 50,
    }
    base = _base_logits(cfg.base_dir, splits) if cfg.base_dir is not None else None
    splits_out = ("train", "valid", "test") if cfg.save_logits else ("valid", "test")  # train logits: a base's only
    logits: dict[str, list[np.ndarray]] = {s: [] for s in splits_out}
    out: dict[str, np.ndarray] = {}
    info = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, "features": names}
    t0 = time.perf_counter()
    for j, task in enumerate(TASKS):
        # a label column of the (N, T) array is a strided view: LightGBM would warn and copy it anyway
        y_tr, y_va = np.ascontiguousarray(train.labels[:, j]), np.ascontiguousarray(valid.labels[:, j])
        init = {s: None if base is None else base[s][:, j] for s in ("train", "valid", "test")}
        dtrain = lgb.Dataset(
            x_tr, y_tr, feature_name=names, categorical_feature=cats, free_raw_data=False, init_score=init["train"]
        )
        dvalid = lgb.Dataset(x_va, y_va, reference=dtrain, init_score=init["valid"])
        two_classes = bool(0 < y_va.sum() < len(y_va))
        by_auc = base is not None and two_classes  # a residual is chosen as TorchRec's epochs are
        booster = lgb.train(
            {**params, "metric": "auc"} if by_auc else params,
            dtrain,
            num_boost_round=cfg.num_rounds,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )
        rounds = booster.best_iteration
        if base is not None:  # no round beats the base model on valid (AUC; logloss for one class): keep its scores
            best = booster.best_score["valid_0"]
            if by_auc:
                rounds = rounds if best["auc"] > auc(y_va, init["valid"]) else 0
            else:
                rounds = rounds if best["binary_logloss"] < logloss(y_va, sigmoid(init["valid"])) else 0
        info[f"{task}_best_iteration"] = rounds
        x_of = {"train": x_tr, "valid": x_va, "test": x_te}
        for s in logits:
            own = booster.predict(x_of[s], num_iteration=rounds, raw_score=True) if rounds else np.zeros(len(x_of[s]))
            logits[s].append(own + (0.0 if init[s] is None else init[s]))
        if two_classes:  # the chosen model's valid AUC (what a knob is picked on)
            info[f"{task}_valid_auc"] = auc(y_va, logits["valid"][-1])
        out[f"test_{task}"] = sigmoid(logits["test"][-1])
        out[f"test_label_{task}"] = test.labels[:, j]
    info["seconds"] = time.perf_counter() - t0
    out.update({"test_user": test.user_ids, "test_item": test.item_ids, "test_cold": test.cold, "test_new": test.new})
    path = cfg.out_dir / "scores.npz"
    write_npz_atomic(path, out)
    if cfg.save_logits:
        split = {"train": train, "valid": valid, "test": test}
        arrays = {s: np.stack(v, axis=1).astype(np.float32) for s, v in logits.items()}
        write_npz_atomic(cfg.out_dir / LOGITS_FILE, {**arrays, **{f"{s}_labels": e.labels for s, e in split.items()}})
    (cfg.out_dir / "train.json").write_text(json.dumps(info, indent=2, default=str))
    return path
