"""Training one ranker variant: single process or torchrun, through DistributedModelParallel, with resume.

`train_ranker(cfg)` fits the encoder on the train split, builds the variant's model with its tables on "meta",
shards it (table-wise, fused row-wise Adagrad for the tables, Adam for the dense arches), trains for at most
`epochs` passes over the train split in a seeded order, checkpoints every `ckpt_every` steps and at every epoch's
end, and scores the valid and test splits. A rerun with the same output directory resumes from the latest
checkpoint: the data order is a function of (seed, epoch), so a resumed run takes the same steps as an
uninterrupted one.

Model selection uses the valid split only: after every epoch (or every 1 / `evals_per_epoch` of one: an epoch is
then evals_per_epoch equal parts, the few batches left over dropped) the model scores the valid split, and the
point with the best validation AUC (mean over the tasks; logloss where a task's AUC is undefined) is the model whose
test scores are written, whose item table is exported and which `checkpoints/selected` points at (what
`offline_eval.serve` loads). Training stops early once `patience` validation points in a row have not improved on
the best one.
The validation history and the selected epoch are recorded in `train.json`.

Residual variants (`base_dir`): the model's logits are added to a trained base model's (control's, read from its
`logits.npz`, which a run with `save_logits` writes for every split), and its task towers' last layers start at
zero, so before any step the variant is exactly its base model. That state is epoch 0, a candidate like every
other epoch: a variant whose features do not improve the valid days keeps its base model's scores rather than
being worse on them. The variant's own features, ids included, learn what the base model's logits miss.

Every rank takes a contiguous 1 / world slice of each global batch (batch_size is global): with the loss a mean
over the local rows, DDP's gradient averaging and TorchRec's gradient division in the embedding all-to-all give
the gradient of the global batch, so 1 and N processes train the same model up to floating-point order.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from core.faults import RANKER_FAULT_ENV, kill_after_step
from core.io import write_json_atomic, write_npz_atomic
from core.metrics import auc, logloss
from recsys.data import Encoded, load_encoded_splits, make_batch
from recsys.distributed import (
    DistEnv,
    dense_parameters,
    export_table,
    init_distributed,
    init_tables,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    shard_model,
    shutdown,
)
from recsys.features import TASKS, Variant, feature_spec
from recsys.model import ITEM_TABLE, RankerConfig, RankerTrain, build_ranker, zero_output

FAULT_ENV = RANKER_FAULT_ENV  # test hook: SIGKILL this process right after that global step


@dataclass(frozen=True)
class TrainConfig:
    samples_dir: Path  # RANKING_SAMPLES_EXT table directory
    out_dir: Path  # this variant's outputs (checkpoints/, encoder.json, scores, metrics, item table)
    variant: Variant = "control"
    ranker: RankerConfig = field(default_factory=RankerConfig)
    epochs: int = 2  # at most this many passes over the train split (the best epoch on valid is kept)
    patience: int = 1  # stop once this many validation points in a row have not beaten the best one
    evals_per_epoch: int = 1  # validation points (and checkpoints) per epoch
    batch_size: int = 2048  # global batch (split evenly across ranks)
    sparse_lr: float = 0.05  # fused row-wise Adagrad of the tables
    dense_lr: float = 2e-3  # Adam of the dense arches
    sid_levels: int = 3  # SID levels the sid variants use
    seed: int = 0
    threads: int = 1  # torch intra-op threads per process (a shared 2-core machine collapses with more)
    ckpt_every: int = 0  # checkpoint every N global steps (0: only at the end)
    max_train_rows: int | None = None  # keep the first N train rows (tests, smoke runs); None: all
    eval_batch_size: int = 8192
    item_id_dropout: float = 0.0  # share of train rows whose target item_id is replaced by the OOV row
    sail_dropout: float = 0.0  # share of train rows whose SAIL vector (zeros) and SIDs (OOV rows) are hidden
    export_item_table: bool = True  # writes item_table.safetensors for the embedding model's ID2item stage
    base_dir: Path | None = None  # residual on this trained run's logits.npz (see the module docstring)
    save_logits: bool = False  # writes logits.npz: the selected model's logits on every split (a base model's)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    resumed_from: int  # step of the checkpoint resumed from (0: fresh start)
    losses: list[float]  # training loss per step of this process' run (rank 0)
    seconds: float
    examples_per_s: float
    scores_path: Path | None  # test scores (rank 0)
    world_size: int


def _check_world(cfg: TrainConfig, env: DistEnv) -> int:
    for key in ("item_id_dropout", "sail_dropout"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {getattr(cfg, key)}")
    if cfg.epochs < 1 or cfg.patience < 1 or cfg.evals_per_epoch < 1:
        raise ValueError(
            f"epochs, patience and evals_per_epoch must be >= 1, got {cfg.epochs}, {cfg.patience} and "
            f"{cfg.evals_per_epoch}"
        )
    if cfg.batch_size % env.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {env.world_size}")
    return cfg.batch_size // env.world_size


@torch.no_grad()
def score(
    dmp: torch.nn.Module, enc: Encoded, spec, env: DistEnv, batch_size: int, unknown_items: bool = False
) -> np.ndarray:
    """(N, T) logits of every row (a residual variant's include its base's); each rank scores a contiguous slice
    and the slices are all-gathered. unknown_items: every target item id is the OOV row (as a cold item's)."""
    n = len(enc)
    per_rank = math.ceil(n / env.world_size)
    lo = env.rank * per_rank
    local = np.minimum(np.arange(lo, lo + per_rank), max(n - 1, 0))  # padded with the last row
    out = torch.empty(per_rank, enc.labels.shape[1])
    dmp.eval()
    for s in range(0, per_rank, batch_size):
        idx = local[s : s + batch_size]
        drop = np.ones(idx.shape[0], dtype=bool) if unknown_items else None
        _, (_, logits, _) = dmp(make_batch(enc, idx, spec, drop).to(env.device))
        out[s : s + idx.shape[0]] = logits.float().cpu()
    dmp.train()
    if env.world_size > 1:
        parts = [torch.empty_like(out) for _ in range(env.world_size)]
        dist.all_gather(parts, out)
        out = torch.cat(parts)
    return out[:n].numpy()


def _fault(step: int) -> None:
    kill_after_step(FAULT_ENV, step)


def validation_score(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The model-selection score of one epoch on the valid split: the mean over tasks of the AUC (higher is
    better); a task whose valid labels are one class contributes minus its logloss instead."""
    per_task = {}
    for j, task in enumerate(TASKS):
        y, p = labels[:, j], probs[:, j]
        if 0 < y.sum() < len(y):
            per_task[f"{task}_auc"] = auc(y, p)
        else:
            per_task[f"{task}_logloss"] = logloss(y, p)
    vals = [v if k.endswith("_auc") else -v for k, v in per_task.items()]
    return {"score": float(np.mean(vals)) if vals else 0.0, **per_task}


def select_epoch(history: dict[int, dict[str, float]]) -> int:
    """The epoch with the highest validation score (the earliest on a tie)."""
    return max(sorted(history), key=lambda e: history[e]["score"])


def _stopped_early(history: dict[int, dict[str, float]], patience: int) -> bool:
    return bool(history) and max(history) - select_epoch(history) >= patience


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))


def _score_epoch(dmp: torch.nn.Module, valid: Encoded, spec, env: DistEnv, batch_size: int, step: int) -> dict:
    return {"step": step, **validation_score(sigmoid(score(dmp, valid, spec, env, batch_size)), valid.labels)}


LOGITS_FILE = "logits.npz"
"""A run's logits on every split ("train", "valid", "test": (N, T) float32), the base of residual variants, and
"train_cold": its train-split logits with every item id unknown (the base of the rows a variant's item-id dropout
drops)."""


def attach_base_logits(splits, base_dir: Path) -> None:
    """Sets each split's `offset` to the base run's logits, after checking they are of the same rows."""
    path = Path(base_dir) / LOGITS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a residual variant needs its base run's logits (save_logits)")
    base = np.load(path)
    for name in ("train", "valid", "test"):
        enc: Encoded = getattr(splits, name)
        logits = base[name]
        if logits.shape != enc.labels.shape:
            raise ValueError(f"{path}: {name} logits are {logits.shape}, the {name} split has {enc.labels.shape}")
        if not np.array_equal(base[f"{name}_labels"], enc.labels):
            raise ValueError(f"{path}: the {name} labels differ from this run's: not the same samples")
        enc.offset = logits.astype(np.float32)
    if "train_cold" in base.files:
        splits.train.offset_cold = base["train_cold"].astype(np.float32)


def _epochs(point: int, per_epoch: int) -> int | float:
    """Validation point -> epochs trained (an int when points are whole epochs)."""
    return point if per_epoch == 1 else round(point / per_epoch, 4)


def _epoch_checkpoint(ckpt_root: Path, step: int) -> Path:
    return ckpt_root / f"step-{step:08d}"


def train_ranker(cfg: TrainConfig) -> TrainResult:
    """Trains (or resumes) one variant and writes its test scores; see the module docstring."""
    torch.set_num_threads(cfg.threads)
    env = init_distributed()
    try:
        return _train(cfg, env)
    finally:
        shutdown(env)


def _train(cfg: TrainConfig, env: DistEnv) -> TrainResult:
    local_batch = _check_world(cfg, env)
    spec = feature_spec(cfg.variant, cfg.sid_levels)
    splits = load_encoded_splits(cfg.samples_dir, spec, cfg.max_train_rows)
    if cfg.base_dir is not None:
        attach_base_logits(splits, cfg.base_dir)
    encoder, train = splits.encoder, splits.train
    evals = {"valid": splits.valid, "test": splits.test}

    torch.manual_seed(cfg.seed)  # dense arches: the same init on every rank (DDP broadcasts rank 0's anyway)
    model = build_ranker(
        cfg.ranker, spec, encoder.table_rows(), len(spec.dense_features), encoder.content_dim, device="meta"
    )
    if cfg.base_dir is not None:
        zero_output(model)
    dmp = shard_model(RankerTrain(model, cfg.ranker.task_weights), env, cfg.sparse_lr)
    init_tables(dmp, cfg.seed)
    dense_opt = torch.optim.Adam(dense_parameters(dmp), lr=cfg.dense_lr)

    ckpt_root = cfg.out_dir / "checkpoints"
    step, resumed_from = 0, 0
    found = latest_checkpoint(ckpt_root)
    if found is not None:
        meta = load_checkpoint(found, dmp, dense_opt, env)
        if meta.get("variant") != cfg.variant:
            raise ValueError(f"checkpoint {found} is of variant {meta.get('variant')!r}, not {cfg.variant!r}")
        step = resumed_from = int(meta["step"])
    if env.rank == 0:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        encoder.save(cfg.out_dir / "encoder.json")

    if len(splits.valid) == 0:
        raise ValueError(f"{cfg.samples_dir}: the valid split has no rows; the epoch is chosen on it")
    per_eval = len(train) // cfg.batch_size // cfg.evals_per_epoch  # steps between validation points
    if per_eval == 0:
        raise ValueError(
            f"the train split has {len(train)} rows, fewer than {cfg.evals_per_epoch} batch(es) of {cfg.batch_size} "
            f"(evals_per_epoch {cfg.evals_per_epoch})"
        )
    n_batches = per_eval * cfg.evals_per_epoch
    total = cfg.epochs * n_batches
    meta = {"variant": cfg.variant, "seed": cfg.seed, "batch_size": cfg.batch_size}
    history_path = ckpt_root / "validation.json"  # point -> validation score, kept beside the checkpoints
    history = {int(k): v for k, v in json.loads(history_path.read_text()).items()} if history_path.exists() else {}
    history = {e: v for e, v in history.items() if e * per_eval <= step}  # only points this state has passed
    if step and step % per_eval == 0 and step // per_eval not in history:  # killed before scoring that point
        history[step // per_eval] = _score_epoch(dmp, splits.valid, spec, env, cfg.eval_batch_size, step)
    if cfg.base_dir is not None and 0 not in history:  # epoch 0: the base model itself (the output is zero)
        if step == 0:
            save_checkpoint(ckpt_root, 0, dmp, dense_opt, env, meta)
        history[0] = {"step": 0, **validation_score(sigmoid(splits.valid.offset), splits.valid.labels)}
    losses: list[float] = []
    t0 = time.perf_counter()
    trained = 0
    while step < total and not _stopped_early(history, cfg.patience):
        epoch, b = divmod(step, n_batches)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
        rows = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        mine = slice(env.rank * local_batch, (env.rank + 1) * local_batch)
        by_row = np.argsort(rows[mine], kind="stable")
        drop = None
        if cfg.item_id_dropout > 0:  # drawn per global batch: the same rows drop at any world size and on resume
            drop = np.random.default_rng([cfg.seed, 1, step]).random(len(rows))[mine][by_row] < cfg.item_id_dropout
        drop_sail = None
        if cfg.sail_dropout > 0:  # its own stream, drawn per global batch like the item-id dropout's
            draw = np.random.default_rng([cfg.seed, 2, step]).random(len(rows))
            drop_sail = draw[mine][by_row] < cfg.sail_dropout
        batch = make_batch(train, rows[mine][by_row], spec, drop, drop_sail)
        loss, _ = dmp(batch.to(env.device))
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()
        step += 1
        trained += cfg.batch_size
        losses.append(float(loss.detach()))
        if step % per_eval == 0:  # a validation point: checkpoint, then score the valid split
            save_checkpoint(ckpt_root, step, dmp, dense_opt, env, meta)
            history[step // per_eval] = _score_epoch(dmp, splits.valid, spec, env, cfg.eval_batch_size, step)
            if env.rank == 0:
                write_json_atomic(history_path, history)
        elif cfg.ckpt_every and step % cfg.ckpt_every == 0:
            save_checkpoint(ckpt_root, step, dmp, dense_opt, env, meta)
        _fault(step)
    seconds = time.perf_counter() - t0
    if not history:
        raise RuntimeError(f"{cfg.out_dir}: training ended without a scored epoch (resumed from step {step})")
    best = select_epoch(history)
    if history[best]["step"] != step:  # an earlier epoch was better on valid: its weights make the scores
        load_checkpoint(_epoch_checkpoint(ckpt_root, history[best]["step"]), dmp, dense_opt, env)
    if env.rank == 0:
        pointer = ckpt_root / ".selected.tmp"
        pointer.write_text(_epoch_checkpoint(ckpt_root, history[best]["step"]).name)
        pointer.replace(ckpt_root / "selected")

    logits = {s: score(dmp, e, spec, env, cfg.eval_batch_size) for s, e in evals.items()}
    if cfg.save_logits:
        logits["train"] = score(dmp, train, spec, env, cfg.eval_batch_size)
        logits["train_cold"] = score(dmp, train, spec, env, cfg.eval_batch_size, unknown_items=True)
    scores = {s: sigmoid(logits[s]) for s in evals}
    if cfg.export_item_table:
        export_table(dmp, ITEM_TABLE, encoder.vocabs["item_id"], cfg.out_dir / "item_table.safetensors", env)
    scores_path = None
    if env.rank == 0:
        scores_path = cfg.out_dir / "scores.npz"
        arrays = {}
        for s, e in evals.items():
            arrays.update(
                {
                    f"{s}_click": scores[s][:, 0],
                    f"{s}_finish": scores[s][:, 1],
                    f"{s}_label_click": e.labels[:, 0],
                    f"{s}_label_finish": e.labels[:, 1],
                    f"{s}_user": e.user_ids,
                    f"{s}_item": e.item_ids,
                    f"{s}_cold": e.cold,
                    f"{s}_new": e.new,
                }
            )
        write_npz_atomic(scores_path, arrays)
        if cfg.save_logits:
            split = {"train": train, **evals}
            write_npz_atomic(
                cfg.out_dir / LOGITS_FILE,
                {**logits, **{f"{s}_labels": e.labels for s, e in split.items()}},
            )
        info = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "steps": step,
            "resumed_from": resumed_from,
            "epochs_trained": _epochs(max(history), cfg.evals_per_epoch),
            "selected_epoch": _epochs(best, cfg.evals_per_epoch),
            "base_dir": None if cfg.base_dir is None else os.path.relpath(cfg.base_dir, cfg.out_dir),
            "selected_step": history[best]["step"],
            "validation": {str(e): v for e, v in sorted(history.items())},
            "world_size": env.world_size,
            "train_rows": len(train),
            "seconds": seconds,
            "examples_per_s": trained / seconds if seconds > 0 else None,
            "final_loss": losses[-1] if losses else None,
        }
        (cfg.out_dir / "train.json").write_text(json.dumps(info, indent=2, default=str))
    dist.barrier()
    return TrainResult(
        out_dir=cfg.out_dir,
        steps=step,
        resumed_from=resumed_from,
        losses=losses,
        seconds=seconds,
        examples_per_s=trained / seconds if seconds > 0 else 0.0,
        scores_path=scores_path,
        world_size=env.world_size,
    )
