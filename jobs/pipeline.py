"""The pipeline driver: `sail run --config <name|file>` runs every stage in order in one run directory.

Stages, in order (each writes `<run_dir>/<stage>/`):

    data -> validate -> mine -> train_embedding -> eval_retrieval -> embed -> export -> ranking_samples
         -> ranker -> ab -> report

Each stage's directory is finished by a `_SUCCESS` marker holding the manifest of its files (`core.io.build_manifest`)
and a `stage.json` holding the stage's key: the hash of its own section, of the project's code (`code_hash`) and of
its upstream stages' keys and manifests, so a changed setting, new code or a rerun upstream stage reruns that stage
and everything after it. A stage whose key matches and whose files still match its manifest is skipped, so a run
stopped at any point resumes where it stopped; a stage whose files changed since (a truncated or emptied table, a
deleted file) reruns, and the console names the file. Paths in `stage.json`, `run.json` and `timings.json` are
relative to the run directory, so a run directory can be moved or copied and resumed there. One `sail run` at a
time holds a run directory (`lock_run_dir`); it first removes the temporary folders a killed run left behind.

A stage writes into a temporary directory that replaces its output only on success; long stages (embedding
training, ranker training) also keep checkpoints in `<run_dir>/work/<stage>-<key>/`, which survives a kill, so the
rerun continues from the last checkpoint instead of from the stage's start. The two training stages train inside this
process, or with `nproc` > 1 in their section as that many torchrun processes on this machine (`core.torchrun`,
every socket on 127.0.0.1), whose output goes to the stage's log and whose files are the same.

Stages that do not apply are recorded as skipped with a reason (e.g. the A/B simulation needs the generated
world's user model, so it does not run on MovieLens; a section with `enabled: false`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from core.io import SUCCESS, atomic_dir, verify_manifest, write_json_atomic
from core.machine import PeakRss
from mining.mining_config import PositiveConfig
from sources.logs import LOGS_RANGES, LogsMapping

log = logging.getLogger("sail")

SHIPPED_CONFIGS = ("demo", "smoke", "movielens", "large")


# ------------------------------------------------------------------------------------------------------------
# Configuration (one section per stage; YAML keys are the field names)
# ------------------------------------------------------------------------------------------------------------


DEFAULT_POSTERS = "default"  # data.movielens_posters: `default_movielens_posters()`


@dataclass(frozen=True)
class DataConfig:
    source: str = "generated"  # "generated" (the simulated world), "logs" (your own files, mapped by [data.logs];
    # docs/DATA.md) or "movielens" (the shipped MovieLens mapping, sources.logs.MOVIELENS)
    size: str = "small"  # generated world size: tiny | small | medium | large
    seed: int = 7  # generated world seed
    movielens_dir: str | None = None  # MovieLens folder (relative to the config file); None: $SAIL_MOVIELENS_DIR
    # or ../shared/data/movielens-latest-small
    movielens_posters: str | None = None  # MovieLens: a folder of `<movieId>.jpg` posters (relative to the config
    # file), each movie's image (a movie without one has none); "default": $SAIL_MOVIELENS_POSTERS or
    # ../shared/data/movielens-posters/posters; None: text only
    session_gap_s: int = 1800  # MovieLens sessionisation gap (seconds)
    positive_rating: float = 4.0  # MovieLens: a rating >= this is engaged; a lower one is shown, not engaged
    contracts_dir: str | None = None  # source contracts: a folder already in the contracts (relative to the config)
    logs: LogsMapping = field(default_factory=LogsMapping)  # source logs: the files and their columns; source
    # movielens: only [data.logs.negatives] applies (sampled negatives per positive)
    quality_in_content: float = 0.0  # generated world: share of the top / bottom third of items by quality whose
    # title says so (WorldConfig.quality_in_content); 0: no title shows quality
    collab_in_content: float = 0.0  # generated world: share of the collaborative latent's variance carried by the
    # items' background sounds (audio) and authors' visual styles (frames); 0: no modality shows it (the negative
    # control); titles and tags never show it (WorldConfig.collab_in_content)
    quality_in_frames: float = 0.0  # generated world: strength of a noisy production-quality cue in covers and
    # frames (WorldConfig.quality_in_frames); 0: none


@dataclass(frozen=True)
class ValidationSection:
    max_rejected_share: float = 0.01  # fail when more than this share of one table's rows is rejected
    clock_skew_s: int = 300  # tolerance (s) for late timestamps and events just before their item's creation
    batch_rows: int = 2_000_000  # rows of an event table judged at once (bounds the stage's memory, not its output)


@dataclass(frozen=True)
class CovisitSection:
    session_gap_s: int = 1800  # a gap longer than this (s) between consecutive positives starts a new session
    window: int = 5  # pair each positive with the next `window` positives of the same session
    max_gap_s: int = 3600  # and only when they are at most this many seconds apart
    decay_tau_s: float | None = None  # time decay exp(-dt / tau) per pair (s); null: no decay


@dataclass(frozen=True)
class SwingSection:
    alpha: float = 1.0  # smoothing in 1 / (alpha + |I_u & I_v|); > 0
    max_items_per_user: int = 50  # each user's most recent N distinct positive items (skew cap)
    max_users_per_item: int = 100  # N users per item (deterministic hash sample)
    seed: int = 0


@dataclass(frozen=True)
class MiningSection:
    engine: str = "spark"  # "spark" (on [spark] master) or "polars" (single machine)
    miners: tuple[str, ...] = ("covisit", "swing")  # i2i miners of the training period
    top_k: int = 50  # training-period i2i pairs kept per anchor (both miners; also what ItemCF / Swing return)
    heldout_top_k: int = 50  # held-out co-visitation pairs per anchor (the retrieval table's ground truth)
    positive: PositiveConfig = field(default_factory=PositiveConfig)  # what counts as a positive engagement
    covisit: CovisitSection = field(default_factory=CovisitSection)
    swing: SwingSection = field(default_factory=SwingSection)
    q2i_min_clicks: int = 1  # a (query, item) pair needs at least this many clicks
    history_len: int = 10  # seq2item: at most this many positives before the target
    max_samples_per_user: int = 50  # seq2item: the most recent N targets per user and split


@dataclass(frozen=True)
class EmbeddingSection:
    """A config without [embedding] trains the real-data recipe picked on MovieLens' validation split (the shipped
    movielens config's section, but for its data-specific holdout): the pretrained start, CRE x2, MiniLM content
    pairs. The library's own `embedding.trainer.TrainConfig` keeps the test-size `tiny` defaults."""

    model: str = "minilm"  # minilm (the pretrained start) | tiny (random, for tests) | cpu_default | a JSON file
    steps: tuple[int, int, int, int] = (200, 50, 50, 800)  # steps of stages I, II, III and CRE
    batch_size: int = 64  # pairs per step
    lr: float = 1e-3
    pretrained_lr_scale: float = 0.1  # the pretrained text layer and the residual projection learn at lr x this
    keep_start_weight: float = 0.0  # pretrained start: weight of the pull back to each item's start embedding
    micl_audio_weight: float = 0.0  # weight of the audio-only contrastive term (the audio token of each side of a
    # pair) inside the modality-specific terms, where the visual-only and text-only terms weigh 1; 0: no audio term
    refresh_every: int = 30  # stage-III steps between hard-negative refreshes
    hn_catalogue_pool: int = 0  # items a hard-negative refresh searches: 0 = the whole catalogue; N > 0 = a seeded
    # sample of N items, new at each refresh (negatives are the hardest within it; bounds a refresh's cost)
    checkpoint_every: int = 50  # steps between checkpoints (a killed run resumes from the last one)
    holdout_frac: float = 0.5  # share of the log's last days held out from embedding training (core.timeline)
    word_queries: int = 4  # stage I pseudo-queries per item (title / tag words -> item); 0: none
    content_similarity: str = "minilm"  # stage I-III content neighbours: "minilm" (the packaged MiniLM's sentence
    # vectors: semantic) or "tfidf" (title words + tags, lexical)
    threads: int = 2  # torch threads (with nproc > 1: threads // nproc per process, at least 1)
    nproc: int = 1  # training processes: 1 trains inside `sail run`; N > 1 launches N torchrun ranks on this machine
    # (gloo on the CPU; one GPU each with device cuda), each on batch_size / N of every batch (see docs/CLUSTER.md)
    device: str = "cpu"  # where the embedding model trains and embeds: cpu | cuda | cuda:N | auto
    precision: str = "fp32"  # fp32 | bf16 (bfloat16 autocast; weights stay fp32)
    seed: int = 0


@dataclass(frozen=True)
class RetrievalSection:
    enabled: bool = True  # the retrieval table (SAIL vs ItemCF / Swing / MiniLM / two-tower) in the report
    minilm: bool = True  # the pretrained MiniLM text-only column
    two_tower: bool = True  # the content-only two-tower (CLIP-style) column (trains a second model)
    two_tower_scale: float = 1.0  # its steps = SAIL's stage I + II steps x this
    max_queries: int = 2000  # per task
    n_boot: int = 500


@dataclass(frozen=True)
class FeaturesSection:
    sid_levels: int = 3  # semantic-ID levels
    codebook_size: int = 256  # codes per level (capped by the number of items)
    batch_size: int = 64  # items per forward when embedding the catalogue


@dataclass(frozen=True)
class RankerSection:
    variants: tuple[str, ...] = ("control", "emb", "sid", "both")
    trainers: tuple[str, ...] = ("torchrec", "lgbm")
    epochs: int = 2  # TorchRec: at most this many epochs; the best one on the valid days is kept
    patience: int = 1  # TorchRec: stop after this many validation points in a row without a better validation AUC
    evals_per_epoch: int = 1  # TorchRec: validation points per epoch (the model is chosen among them)
    seeds: int = 1  # TorchRec: models per variant (seeds seed .. seed + n - 1); their probabilities are averaged
    batch_size: int = 2048
    embedding_dim: int = 16
    sparse_lr: float = 0.05
    dense_lr: float = 2e-3
    threads: int = 1  # torch threads (more collapses on a shared 2-core machine; nproc > 1: threads // nproc each)
    nproc: int = 1  # TorchRec training processes: 1 trains inside `sail run`; N > 1 launches N torchrun ranks on this
    # machine (gloo on the CPU), each on batch_size / N of every batch (batch_size must divide by N)
    lgbm_threads: int = 2  # LightGBM threads (it scales well on an otherwise idle machine)
    item_id_dropout: float = 0.0  # TorchRec: share of train rows whose item id is replaced by the OOV row (residual:
    # a variant's dropped row takes control's logits for an unknown item)
    sid_levels: int = 0  # semantic-ID levels the sid variants use, coarse first (0: every level of [features]);
    # fine levels are nearly one code per item, i.e. a second item id
    sail_dropout: float = 0.0  # TorchRec: share of train rows whose SAIL vector and semantic IDs are hidden (as an
    # item without them has them), so the model cannot lean on per-item features alone
    interaction: str = "dcn_dot"  # TorchRec: "dcn_dot" (DCNv2 + DLRM dots), "dcn" (DCNv2) or "dot" (DLRM dots)
    residual: bool = True  # every variant but control learns a correction to control's logits, starting from
    # exactly control (epoch 0 / zero rounds is a candidate on valid): features that do not help the valid days
    # leave control's scores; false trains every variant from scratch on all its features
    max_train_rows: int | None = None  # None: the whole train split
    recent_len: int = 10  # recent positive items per impression
    sail_dims: int = 64  # the SAIL vector's Matryoshka prefix the ranking samples carry (re-normalised); 0: all of it
    valid_days: int = 3
    test_days: int = 4
    n_boot: int = 500
    seed: int = 0


@dataclass(frozen=True)
class ABSection:
    enabled: bool = True  # generated worlds only (the simulation needs the world's user model)
    control: str = "control"  # a torchrec ranker variant, or "logged" (the logging policy)
    treatment: str = "both"  # a torchrec ranker variant
    days: int = 21  # experiment length (LT14 needs >= 14)
    salt: str = "sail-ab-1"
    n_boot: int = 500
    seed: int = 0


@dataclass(frozen=True)
class SparkSection:
    master: str = "local[*]"  # every Spark stage's master: local, local[N], local[*] or spark://host:port (a
    # standalone cluster, e.g. scripts/spark-cluster.sh). Not in any stage's hash: the outputs are the same on any
    # master, so changing only the master reruns nothing


@dataclass(frozen=True)
class RunConfig:
    name: str
    run_dir: str  # where every stage writes; relative paths are relative to the working directory
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationSection = field(default_factory=ValidationSection)
    mining: MiningSection = field(default_factory=MiningSection)
    embedding: EmbeddingSection = field(default_factory=EmbeddingSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    ranker: RankerSection = field(default_factory=RankerSection)
    ab: ABSection = field(default_factory=ABSection)
    spark: SparkSection = field(default_factory=SparkSection)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "validation": ValidationSection,
    "mining": MiningSection,
    "embedding": EmbeddingSection,
    "retrieval": RetrievalSection,
    "features": FeaturesSection,
    "ranker": RankerSection,
    "ab": ABSection,
    "spark": SparkSection,
}


class _Mismatch(Exception):
    """A YAML value that is not of its setting's annotated type (`_typed` names the setting)."""


# a number PyYAML leaves as a string (YAML 1.1 floats need a dot: `1e-3` is read as the string "1e-3")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _describe(tp: Any) -> str:
    """What a value of the annotated type `tp` looks like in YAML (for error messages)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], _describe(args[0]))}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], _describe(args[0]))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping of settings"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any) -> Any:
    """`value` as the annotated type `tp` (YAML lists -> tuples; an int is a float; a bool is not a number)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _convert(value, a)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"no YAML conversion for the annotation {tp!r}")


def _build(cls: type, section: Any, where: str) -> Any:
    """The dataclass `cls` from a YAML mapping, every value checked against (and converted to) its field's
    annotated type; an error names `where` (file and section) and the setting."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ValueError(f"{where}: must be a mapping of settings, got {section!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(section) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    values = {}
    for k, v in section.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):  # a nested section, e.g. [mining.covisit]
            values[k] = _build(tp, v, f"{where[:-1]}.{k}]")
            continue
        try:
            values[k] = _convert(v, tp)
        except _Mismatch:
            raise ValueError(f"{where}: {k} must be {_describe(tp)}, got {v!r}") from None
    return cls(**values)


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).replace("\n", " ")
        if context:  # e.g. "while parsing a flow sequence", which started at context_mark
            cmark = getattr(e, "context_mark", None)
            what += f" ({context}" + (f" from line {cmark.line + 1})" if cmark is not None else ")")
        raise ValueError(f"{where}: invalid YAML{at}: {what}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_config(name_or_path: str, run_dir: str | None = None) -> RunConfig:
    """A shipped config by name (`demo`, `smoke`, `movielens`, `large`) or a YAML file by path."""
    if name_or_path in SHIPPED_CONFIGS:
        text = resources.files("jobs.configs").joinpath(f"{name_or_path}.yaml").read_text()
        where = f"shipped config {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(f"config {name_or_path!r} is neither a shipped config {SHIPPED_CONFIGS} nor a file")
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read the config ({type(e).__name__}: {e})") from None
    raw = _read_yaml(text, where)
    top = {"name", "run_dir", *SECTIONS}
    unknown = sorted(str(k) for k in set(raw) - top)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; known: {sorted(top)}")
    for key in ("name", "run_dir"):
        if key in raw and not (isinstance(raw[key], str) and raw[key]):
            raise ValueError(f"{where}: {key} must be a non-empty string, got {raw[key]!r}")
    built = {name: _build(cls, raw.get(name), f"{where} [{name}]") for name, cls in SECTIONS.items()}
    cfg = RunConfig(
        name=raw.get("name", Path(name_or_path).stem),
        run_dir=run_dir or raw.get("run_dir") or f"runs/{raw.get('name', 'run')}",
        **built,
    )
    base = None if name_or_path in SHIPPED_CONFIGS else Path(name_or_path).resolve().parent
    from sources.logs import config_path, resolve_root  # paths in [data] are relative to the config file's folder

    if cfg.data.source == "logs":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, logs=resolve_root(cfg.data.logs, base)))
    if cfg.data.source == "contracts":
        if not cfg.data.contracts_dir:
            raise ValueError(f"{where} [data]: source contracts needs contracts_dir (the folder with the tables)")
        folder = str(config_path(cfg.data.contracts_dir, base))
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, contracts_dir=folder))
    if cfg.data.source == "movielens":
        d = cfg.data  # folders relative to the config; None and `default` are resolved when the data stage reads them
        paths = {"movielens_dir": d.movielens_dir} if d.movielens_dir else {}
        if d.movielens_posters and d.movielens_posters != DEFAULT_POSTERS:
            paths["movielens_posters"] = d.movielens_posters
        paths = {k: str(config_path(v, base)) for k, v in paths.items()}
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, **paths))
    check_config(cfg, where)
    return cfg


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run directory, created if needed; a ValueError naming it when it cannot be created or written."""
    path = Path(run_dir).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"run directory {path}: cannot be created or written ({e.strerror or e})") from None
    return path


# The range of every numeric setting, per section ("[mining.covisit]": a nested section); a tuple's range applies
# to each of its values and a null (where the type allows one) is not checked. `check_config` enforces them.
RANGES: dict[str, dict[str, str]] = {
    "data": {
        "seed": ">= 0",
        "session_gap_s": ">= 1",
        "positive_rating": "in (0, 5]",
        "quality_in_content": "in [0, 1]",
        "collab_in_content": "in [0, 1]",
        "quality_in_frames": "in [0, 1]",
    },
    **LOGS_RANGES,
    "validation": {"max_rejected_share": "in [0, 1]", "clock_skew_s": ">= 0", "batch_rows": ">= 1"},
    "mining": {
        "top_k": ">= 1",
        "heldout_top_k": ">= 1",
        "q2i_min_clicks": ">= 1",
        "history_len": ">= 1",
        "max_samples_per_user": ">= 1",
    },
    "mining.positive": {
        "click_weight": ">= 0",
        "finish_weight": ">= 0",
        "like_weight": ">= 0",
        "share_weight": ">= 0",
        "watch_weight": ">= 0",
        "min_watch_ms": ">= 0",
        "threshold": "> 0",
    },
    "mining.covisit": {"session_gap_s": ">= 1", "window": ">= 1", "max_gap_s": ">= 1", "decay_tau_s": "> 0"},
    "mining.swing": {"alpha": "> 0", "max_items_per_user": ">= 1", "max_users_per_item": ">= 1", "seed": ">= 0"},
    "embedding": {
        "steps": ">= 0",
        "batch_size": ">= 1",
        "lr": "> 0",
        "pretrained_lr_scale": ">= 0",
        "keep_start_weight": ">= 0",
        "micl_audio_weight": ">= 0",
        "refresh_every": ">= 1",
        "hn_catalogue_pool": ">= 0",
        "checkpoint_every": ">= 1",
        "holdout_frac": "in (0, 1)",
        "word_queries": ">= 0",
        "threads": ">= 1",
        "nproc": "in [1, 64]",
        "seed": ">= 0",
    },
    "retrieval": {"two_tower_scale": "> 0", "max_queries": ">= 1", "n_boot": ">= 1"},
    "features": {"sid_levels": ">= 1", "codebook_size": ">= 1", "batch_size": ">= 1"},
    "ranker": {
        "epochs": ">= 1",
        "patience": ">= 1",
        "evals_per_epoch": ">= 1",
        "seeds": ">= 1",
        "batch_size": ">= 1",
        "embedding_dim": ">= 1",
        "sparse_lr": "> 0",
        "dense_lr": "> 0",
        "threads": ">= 1",
        "nproc": "in [1, 64]",
        "lgbm_threads": ">= 1",
        "item_id_dropout": "in [0, 1)",
        "sail_dropout": "in [0, 1)",
        "sid_levels": ">= 0",
        "max_train_rows": ">= 1",
        "recent_len": ">= 1",
        "sail_dims": ">= 0",  # 0: the whole vector
        "valid_days": ">= 1",
        "test_days": ">= 1",
        "n_boot": ">= 1",
        "seed": ">= 0",
    },
    "ab": {"days": ">= 1", "n_boot": ">= 1", "seed": ">= 0"},
}


def _in_range(x: float, spec: str) -> bool:
    """`x` within a RANGES spec: '>= a', '> a', or an interval 'in [a, b)' (brackets: inclusive or not)."""
    if spec.startswith(">="):
        return x >= float(spec[2:])
    if spec.startswith(">"):
        return x > float(spec[1:])
    lo_b, body, hi_b = spec[3], spec[4:-1], spec[-1]
    lo, hi = (float(s) for s in body.split(","))
    return (x >= lo if lo_b == "[" else x > lo) and (x <= hi if hi_b == "]" else x < hi)


def _section(cfg: RunConfig, name: str) -> Any:
    obj = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ranges(cfg: RunConfig, where: str) -> None:
    for name, specs in RANGES.items():
        section = _section(cfg, name)
        for key, spec in specs.items():
            value = getattr(section, key)
            if value is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            if not all(_in_range(v, spec) for v in values):
                what = f"each of {key}" if isinstance(value, tuple) else key
                raise ValueError(f"{where} [{name}]: {what} must be {spec}, got {value!r}")


SPARK_MASTER = re.compile(r"local(\[(\*|[1-9]\d*)\])?|spark://[A-Za-z0-9.-]+:[1-9]\d{0,4}")
"""The Spark masters a run may name: a local one or a standalone cluster's URL."""


DATA_SOURCES = ("generated", "logs", "movielens", "contracts")


def _check_one_positive(cfg: RunConfig, where: str) -> None:
    """Real logs carry one positive definition ([data.logs.positives]) as clicked = finished = liked: mining's
    weighted threshold must pass exactly those rows (a positive with any watch time, a non-positive with any)."""
    p = cfg.mining.positive
    top = p.click_weight + p.finish_weight + p.like_weight
    if top < p.threshold or p.watch_weight >= p.threshold:
        raise ValueError(
            f"{where} [mining.positive]: with data.source {cfg.data.source!r} a positive is clicked = finished = "
            f"liked (one definition, [data.logs.positives]); click + finish + like weights ({top:g}) must reach "
            f"threshold {p.threshold:g} and watch_weight ({p.watch_weight:g}) must stay below it"
        )


def check_config(cfg: RunConfig, where: str = "config") -> None:
    """Refuses settings that would only fail later, naming the section and the setting."""
    from embedding.trainer import MODEL_PRESETS, resolve_model_config
    from recsys.features import INTERACTION_ARCHES, VARIANTS
    from sources.world import SIZES

    _check_ranges(cfg, where)
    if cfg.data.source not in DATA_SOURCES:
        raise ValueError(f"{where} [data]: source must be one of {list(DATA_SOURCES)}, got {cfg.data.source!r}")
    if cfg.data.source == "logs":
        from sources.logs import check_columns, check_mapping

        check_mapping(cfg.data.logs)
        check_columns(cfg.data.logs)  # headers only: a wrong column name fails here, before any stage
    if cfg.data.source in ("logs", "movielens"):
        _check_one_positive(cfg, where)
    if cfg.data.source == "generated" and cfg.data.size not in SIZES:
        raise ValueError(f"{where} [data]: size must be one of {list(SIZES)}, got {cfg.data.size!r}")
    if cfg.mining.engine not in ("spark", "polars"):
        raise ValueError(f"{where} [mining]: engine must be 'spark' or 'polars', got {cfg.mining.engine!r}")
    master = cfg.spark.master
    if not SPARK_MASTER.fullmatch(master) or (master.startswith("spark://") and int(master.rsplit(":", 1)[1]) > 65535):
        raise ValueError(
            f"{where} [spark]: master must be local, local[N], local[*] or spark://host:port, got {master!r}"
        )
    try:
        mining_config(cfg, ".", ".")
    except ValueError as e:
        raise ValueError(f"{where} [mining]: {e}") from None
    if not cfg.mining.miners:
        raise ValueError(f"{where} [mining]: miners must name at least one of ['covisit', 'swing']")
    if cfg.embedding.model not in MODEL_PRESETS:
        try:
            resolve_model_config(cfg.embedding.model)
        except ValueError as e:
            raise ValueError(f"{where} [embedding]: {e}") from None
    if cfg.data.source == "generated":  # the log's days are known now: check the time layout before any stage
        from core.timeline import build_timeline, log_span

        world = _world(cfg.data)
        try:
            build_timeline(
                *log_span(world.days, date.fromisoformat(world.start_date)),
                cfg.embedding.holdout_frac,
                cfg.ranker.valid_days,
                cfg.ranker.test_days,
            )
        except ValueError as e:
            raise ValueError(f"{where} [embedding] / [ranker]: {e}") from None
    try:
        embedding_train_config(cfg)
    except ValueError as e:
        raise ValueError(f"{where} [embedding]: {e}") from None
    if cfg.embedding.batch_size < cfg.embedding.nproc:  # every process takes batch_size / nproc of every batch
        raise ValueError(
            f"{where} [embedding]: batch_size {cfg.embedding.batch_size} is smaller than nproc {cfg.embedding.nproc}"
        )
    if cfg.ranker.batch_size % cfg.ranker.nproc:
        raise ValueError(
            f"{where} [ranker]: batch_size {cfg.ranker.batch_size} must be divisible by nproc {cfg.ranker.nproc}"
        )
    if cfg.ranker.sid_levels > cfg.features.sid_levels:
        raise ValueError(
            f"{where} [ranker]: sid_levels {cfg.ranker.sid_levels} exceeds the {cfg.features.sid_levels} levels "
            "[features] quantises into"
        )
    bad = sorted(set(cfg.ranker.variants) - set(VARIANTS))
    if bad or not cfg.ranker.variants:
        raise ValueError(f"{where} [ranker]: variants must be a non-empty subset of {VARIANTS}, got {bad or '[]'}")
    if cfg.ranker.residual and "control" not in cfg.ranker.variants:
        raise ValueError(f"{where} [ranker]: residual: true trains the variants on control's logits; add control")
    if cfg.ranker.interaction not in INTERACTION_ARCHES:
        raise ValueError(
            f"{where} [ranker]: interaction must be one of {INTERACTION_ARCHES}, got {cfg.ranker.interaction!r}"
        )
    bad = sorted(set(cfg.ranker.trainers) - {"torchrec", "lgbm"})
    if bad or not cfg.ranker.trainers:
        raise ValueError(f"{where} [ranker]: trainers must be a non-empty subset of ['lgbm', 'torchrec']")
    if cfg.ab.enabled:
        arms = [a for a in (cfg.ab.control, cfg.ab.treatment) if a != "logged"]
        if cfg.ab.treatment == "logged":
            raise ValueError(f"{where} [ab]: treatment must be a ranker variant, not 'logged'")
        if "placebo" in arms:
            raise ValueError(f"{where} [ab]: the placebo variant is a check of the ranker, not an A/B arm")
        missing = [a for a in arms if a not in cfg.ranker.variants or "torchrec" not in cfg.ranker.trainers]
        if missing:
            raise ValueError(
                f"{where} [ab]: arm(s) {missing} must be torchrec ranker variants trained by this run "
                f"([ranker] variants {list(cfg.ranker.variants)}, trainers {list(cfg.ranker.trainers)})"
            )


# ------------------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------------------


class StageSkipped(Exception):
    """Raised by a stage that does not apply to this run (the reason is recorded and shown)."""


class StageFailed(RuntimeError):
    """A stage raised: names the stage, the error and the log holding its traceback (the cause is chained)."""

    def __init__(self, stage: str, exc: BaseException, log_path: Path) -> None:
        super().__init__(f"stage {stage} failed: {type(exc).__name__}: {exc} (traceback in {log_path})")
        self.stage = stage
        self.log_path = log_path


@dataclass(frozen=True)
class StageContext:
    cfg: RunConfig
    run_dir: Path
    out: Path  # the stage's temporary output directory (it replaces `<run_dir>/<stage>` on success)
    work: Path  # persistent scratch of this stage and config hash (checkpoints; survives a kill)
    echo: Callable[[str], None] = print

    def stage_dir(self, name: str) -> Path:
        """A finished upstream stage's output directory."""
        return self.run_dir / name

    def resolve(self, recorded: str) -> Path:
        """A path a stage recorded in its `stage.json` (relative to the run directory; an absolute one as is)."""
        return self.run_dir / recorded


@dataclass(frozen=True)
class Stage:
    name: str
    settings: Callable[[RunConfig], Any]  # the part of the config this stage depends on (hashed)
    run: Callable[[StageContext], dict[str, Any]]  # -> metrics recorded in stage.json
    deps: tuple[str, ...] = ()  # upstream stages whose outputs it reads (their hashes enter its hash)


def _shared_data() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def default_movielens_dir() -> Path:
    env = os.environ.get("SAIL_MOVIELENS_DIR")
    return Path(env) if env else _shared_data() / "movielens-latest-small"


def default_movielens_posters() -> Path:
    """`data.movielens_posters: default`: $SAIL_MOVIELENS_POSTERS, else the shared posters folder."""
    env = os.environ.get("SAIL_MOVIELENS_POSTERS")
    return Path(env) if env else _shared_data() / "movielens-posters" / "posters"


def _world(d: DataConfig):
    from sources.world import WorldConfig

    return WorldConfig.for_size(
        d.size,
        seed=d.seed,
        quality_in_content=d.quality_in_content,
        collab_in_content=d.collab_in_content,
        quality_in_frames=d.quality_in_frames,
    )


def _stage_data(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    if cfg.data.source == "generated":
        from sources.world import generate_world

        res = generate_world(_world(cfg.data), ctx.out, progress=True)
        return {"counts": res.counts}
    if cfg.data.source == "contracts":
        res = _copy_contracts(Path(cfg.data.contracts_dir or "."), ctx.out, ctx.echo)
        _check_time_layout(cfg, ctx.out)
        return res
    from sources.logs import adapt_logs

    res = adapt_logs(
        logs_mapping(cfg),
        ctx.out,
        holdout_frac=cfg.embedding.holdout_frac,
        max_rejected_share=cfg.validation.max_rejected_share,
        echo=ctx.echo,
    )
    _check_time_layout(cfg, ctx.out)  # before any training: the ranker's windows must fit this log
    m = res.manifest
    return {
        "counts": res.counts,
        "content_cutoff": m["content_cutoff"],
        "impressions": m["impressions"],
        "rejected": m["rejected"],
    }


def _copy_contracts(src: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """A folder already in the contracts (`data.source: contracts`): its five tables copied into the run, its
    manifest's media root made absolute (the run reads the media where they are); without a manifest, one that
    names the folder (real logs, logged impressions)."""
    from core.contracts import LOG_TABLES

    missing = [t for t in LOG_TABLES if not (src / t).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"[data] contracts_dir {src}: no {missing} table folder(s); a contracts folder holds {list(LOG_TABLES)} "
            "as parquet (core/contracts.py), or map your own files with source: logs (docs/DATA.md)"
        )
    for t in LOG_TABLES:
        shutil.copytree(src / t, out / t)
    path = src / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"dataset": "contracts", "name": src.name}
    media = dict(manifest.get("media") or {})
    if media.get("root") and not Path(media["root"]).is_absolute():
        media["root"] = str((src / media["root"]).resolve())
    manifest["media"] = media or {"root": None, "mode": "none"}
    manifest.setdefault("impressions", "simulated" if manifest.get("dataset") == "generated" else "logged")
    manifest["copied_from"] = str(src.resolve())
    write_json_atomic(out / "manifest.json", manifest)
    echo(f"data: the contracts tables of {src} copied")
    return {"copied_from": str(src.resolve())}


def logs_mapping(cfg: RunConfig) -> LogsMapping:
    """The mapping a run's data stage reads: [data.logs] (its root already resolved by `load_config`), or for
    source movielens the shipped MovieLens mapping on `movielens_dir` with [data]'s session gap and positive
    rating, [data.logs]'s negatives and, with `movielens_posters`, each movie's `<movieId>.jpg` there as its image."""
    from sources.logs import MOVIELENS, PositivesMapping

    d = cfg.data
    if d.source == "logs":
        return d.logs
    if d.source != "movielens":
        raise ValueError(f"data.source {d.source!r} is not read through a mapping")
    root = Path(d.movielens_dir) if d.movielens_dir else default_movielens_dir()
    mapping = dataclasses.replace(
        MOVIELENS,
        root=str(root.resolve()),
        session_gap_s=d.session_gap_s,
        positives=PositivesMapping(rating_threshold=d.positive_rating),
        negatives=d.logs.negatives,
    )
    if d.movielens_posters is None:
        return mapping
    default = d.movielens_posters == DEFAULT_POSTERS
    posters = (default_movielens_posters() if default else Path(d.movielens_posters)).resolve()
    if not posters.is_dir():
        hint = " (default: set $SAIL_MOVIELENS_POSTERS, or movielens_posters: null for text only)" if default else ""
        raise FileNotFoundError(f"data.movielens_posters: {posters} is not a folder{hint}")
    items = dataclasses.replace(MOVIELENS.items, image_pattern="{item}.jpg")
    return dataclasses.replace(mapping, items=items, media_root=str(posters))


def _stage_validate(ctx: StageContext) -> dict[str, Any]:
    from sources.validate import ValidationConfig, validate_dataset

    v = ctx.cfg.validation
    res = validate_dataset(
        ctx.stage_dir("data"),
        ctx.out,
        ValidationConfig(max_rejected_share=v.max_rejected_share, clock_skew_s=v.clock_skew_s, batch_rows=v.batch_rows),
    )
    return {
        "rejected": {k: r.rejected for k, r in res.tables.items()},
        "rejected_total": res.rejected_total,
        "repaired": {k: r.repaired for k, r in res.tables.items() if r.repaired},
    }


def mining_config(cfg: RunConfig, data_dir: Path | str, out_dir: Path | str):
    """The `mining.mine_pairs` configuration of a run's [mining] section."""
    from mining.mining_config import CovisitConfig, MiningConfig, Q2IConfig, Seq2ItemConfig, SwingConfig

    m = cfg.mining
    return MiningConfig(
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        engine=m.engine,
        miners=m.miners,
        positive=m.positive,
        covisit=CovisitConfig(**asdict(m.covisit), top_k=m.top_k),
        swing=SwingConfig(**asdict(m.swing), top_k=m.top_k),
        q2i=Q2IConfig(min_clicks=m.q2i_min_clicks),
        seq2item=Seq2ItemConfig(history_len=m.history_len, max_samples_per_user=m.max_samples_per_user),
        master=cfg.spark.master,
    )


def run_cutoff(run_dir: Path) -> datetime:
    """The embedding cutoff the run's mine stage placed (`mine/mining.json`)."""
    return datetime.fromisoformat(json.loads((run_dir / "mine" / "mining.json").read_text())["cutoff"])


def _stage_mine(ctx: StageContext) -> dict[str, Any]:
    """Every pair the embedding stages read, mined once with the configured engine at the embedding cutoff (the
    last `embedding.holdout_frac` of the log's days are held out): the training period's i2i and q2i pairs, the
    held-out period's co-visitation pairs (the retrieval table's ground truth) and seq2item split at the cutoff."""
    from core.timeline import embedding_cutoff
    from mining.mine_pairs import log_time_range, run_periods

    data = ctx.stage_dir("validate")
    first, last = log_time_range(data)
    cutoff = embedding_cutoff(first, last, ctx.cfg.embedding.holdout_frac)
    _check_data_cutoff(data, cutoff)
    res = run_periods(mining_config(ctx.cfg, data, ctx.out), cutoff, heldout_top_k=ctx.cfg.mining.heldout_top_k)
    keep = ("engine", "seconds", "cutoff", "input_rows", "rejected", "periods")
    out = {k: res.counts[k] for k in keep}
    counts = json.loads((data / "manifest.json").read_text()).get("counts", {})
    if counts.get("searches") == 0:  # an optional table the data set does not have: say what it leaves out
        out["notes"] = [
            "no searches in this data set: no q2i pairs (stages II and III train on content and "
            "co-engagement pairs; retrieval has no query rows)"
        ]
        ctx.echo(f"mine: {out['notes'][0]}")
    return out


def _check_data_cutoff(data_dir: Path, cutoff: datetime) -> None:
    """A data set whose content was built from events up to some time (MovieLens' user tags: `content_cutoff` in
    its manifest) must not know anything from the embedding's held-out period."""
    manifest = data_dir / "manifest.json"
    if not manifest.exists():
        return
    content_cutoff = json.loads(manifest.read_text()).get("content_cutoff")
    if content_cutoff and datetime.fromisoformat(content_cutoff) > cutoff:
        raise ValueError(
            f"{manifest}: item content was built from events up to {content_cutoff}, after the embedding cutoff "
            f"{cutoff.isoformat()}; the held-out period would leak into the items (re-run the data stage)"
        )


def embedding_train_config(cfg: RunConfig):
    """The embedding trainer's TrainConfig of a run (also what the retrieval table's baselines derive from)."""
    from embedding.data import DataConfig as EmbDataConfig
    from embedding.trainer import TrainConfig

    e = cfg.embedding
    return TrainConfig(
        model=e.model,
        steps_i=e.steps[0],
        steps_ii=e.steps[1],
        steps_iii=e.steps[2],
        steps_cre=e.steps[3],
        batch_size=e.batch_size,
        lr=e.lr,
        pretrained_lr_scale=e.pretrained_lr_scale,
        keep_start_weight=e.keep_start_weight,
        micl_audio_weight=e.micl_audio_weight,
        refresh_every=e.refresh_every,
        hn_catalogue_pool=e.hn_catalogue_pool,
        checkpoint_every=e.checkpoint_every,
        threads=e.threads,
        device=e.device,
        precision=e.precision,
        seed=e.seed,
        progress=True,
        data=EmbDataConfig(word_queries_per_item=e.word_queries, content_similarity=e.content_similarity, seed=e.seed),
    )


EMBEDDING_FILES = ("model.safetensors", "model_stages_1_3.safetensors", "train.json", "metrics.jsonl")


def _stage_train_embedding(ctx: StageContext) -> dict[str, Any]:
    """Stages I-III and CRE on the pairs the mine stage mined from the training period (before the embedding
    cutoff), so the held-out days stay unseen for the retrieval table and for the ranker; checkpoints live in the
    work directory. With `nproc` > 1 the training runs as that many torchrun ranks (`embedding.distributed`); rank 0
    writes the same files a single process writes."""
    from embedding.trainer import train

    tcfg = embedding_train_config(ctx.cfg)
    out, cache = ctx.work / "train", ctx.work / "cache"
    nproc = ctx.cfg.embedding.nproc
    if nproc == 1:
        res = asdict(train(tcfg, ctx.stage_dir("validate"), out, ctx.stage_dir("mine"), work_dir=cache, resume=True))
    else:
        threads = max(1, tcfg.threads // nproc)
        config = ctx.work / "train_config.json"  # every setting; the ranks' torch threads are `threads`
        write_json_atomic(config, dataclasses.replace(tcfg, threads=threads).to_dict())
        args = ["--train-config", config, "--data", ctx.stage_dir("validate"), "--pairs", ctx.stage_dir("mine")]
        _torchrun(ctx, "embedding.distributed", [*args, "--out", out, "--work", cache], nproc, threads)
        res = json.loads((out / "train.json").read_text())  # rank 0's TrainResult
    if not res["completed"]:
        raise RuntimeError(f"embedding training stopped at step {res['steps_done']}/{res['total_steps']}")
    for name in EMBEDDING_FILES:
        src = out / name
        if src.exists():
            shutil.copy2(src, ctx.out / name)
    return {
        "steps": res["total_steps"],
        "final_loss": res["final_loss"],
        "pairs_per_s": res["pairs_per_s"],
        "train_seconds": res["seconds"],
        "stage_losses": res["stage_losses"],
        "work_dir": str(ctx.work),
    }


def _torchrun(ctx: StageContext, module: str, args: list[Any], nproc: int, threads: int) -> None:
    """Runs `python -m module args` as `nproc` torchrun ranks on this machine (`core.torchrun`, every socket on
    127.0.0.1), `threads` torch threads each; their output goes to the stage's log line by line, each rank's also
    to `<work>/torchrun/`. A failed rank fails the stage, naming the rank and its exit code."""
    from core.torchrun import run_torchrun

    log.info("%s: %d torchrun ranks x %d thread(s)", module, nproc, threads)
    run_torchrun(
        module,
        [str(a) for a in args],
        nproc,
        threads=threads,
        log_dir=ctx.work / "torchrun",
        on_line=lambda line: log.info("%s", line),
    )


def _train_stage_work(ctx: StageContext) -> Path:
    meta = json.loads((ctx.stage_dir("train_embedding") / "stage.json").read_text())
    return ctx.resolve(meta["metrics"]["work_dir"]) / "cache"


def retrieval_eval_config(cfg: RunConfig):
    """The retrieval table's settings in a run of `cfg` (`[retrieval]` and the embedding's training settings; no
    ablations): `sail eval-retrieval --config` starts from these."""
    from embedding.retrieval_eval import EvalConfig

    r = cfg.retrieval
    return EvalConfig(
        train=embedding_train_config(cfg),
        max_queries=r.max_queries,
        n_boot=r.n_boot,
        ablations=False,
        minilm=r.minilm,
        two_tower=r.two_tower,
        baseline_steps_scale=r.two_tower_scale,
    )


def _stage_eval_retrieval(ctx: StageContext) -> dict[str, Any]:
    r = ctx.cfg.retrieval
    if not r.enabled:
        raise StageSkipped("[retrieval] enabled is false")
    from embedding.retrieval_eval import run_retrieval_eval

    res = run_retrieval_eval(
        retrieval_eval_config(ctx.cfg),
        ctx.stage_dir("validate"),
        ctx.stage_dir("mine"),
        ctx.out,
        sail_dir=ctx.stage_dir("train_embedding"),
        work_dir=_train_stage_work(ctx),
    )
    return {"table": res.table, "seconds": res.seconds}


def _stage_embed(ctx: StageContext) -> dict[str, Any]:
    """Embeds the catalogue with the trained model and quantises it into semantic IDs (ITEM_FEATURES).

    Each item's feature row becomes valid at the later of the item's creation and the embedding cutoff: the vector
    is a function of the item's content (which exists from upload) and of a model trained on events before the
    cutoff, which exists only from the cutoff on. So no impression is ever joined with a feature computed from
    behaviour at or after its own time (the ranker trains and tests after the cutoff; see `core.timeline`).
    """
    import pyarrow as pa

    from core import contracts as K
    from core.io import read_table, write_table
    from embedding.batch_infer import BatchEmbedConfig, EmbedderSpec, embed_local
    from embedding.checkpoint import checkpoint_version
    from embedding.data import default_media_root
    from embedding.semantic_ids import BuildSidsConfig, run_build_sids

    f = ctx.cfg.features
    validate = ctx.stage_dir("validate")
    model = ctx.stage_dir("train_embedding") / "model.safetensors"
    version = checkpoint_version(model)  # of the tensors and the model config, not of the file's bytes
    media = default_media_root(validate)
    spec = EmbedderSpec(
        "embedding.infer:sail_embedder",
        {
            "model_path": str(model),
            "media_root": str(media) if media else None,
            "batch_size": f.batch_size,
            "device": ctx.cfg.embedding.device,
            "precision": ctx.cfg.embedding.precision,
            "text_states_dir": str(_train_stage_work(ctx)),  # the trainer's frozen text states of the catalogue
        },
    )
    emb = embed_local(
        BatchEmbedConfig(
            items_dir=str(validate / "items"),
            output_dir=str(ctx.out / "item_embeddings"),
            model_version=version,
            embedder=spec,
            batch_size=256,
            report_path=str(ctx.out / "embed_report.json"),
            master=ctx.cfg.spark.master,  # used when the batch embedding runs on Spark
        )
    )
    sids = run_build_sids(
        BuildSidsConfig(str(ctx.out / "item_embeddings"), str(ctx.out / "sids"), f.sid_levels, f.codebook_size)
    )
    # valid from max(creation, cutoff) (see the docstring)
    cutoff = run_cutoff(ctx.run_dir)
    feats = read_table(sids.features_dir, K.ITEM_FEATURES)
    items = read_table(validate / "items", K.ITEMS).select(["item_id", "created_ts"])
    created = dict(zip(items["item_id"].to_pylist(), items["created_ts"].to_pylist(), strict=True))
    ts = pa.array([max(created[i], cutoff) for i in feats["item_id"].to_pylist()], pa.timestamp("us", tz="UTC"))
    feats = feats.set_column(feats.schema.get_field_index("event_timestamp"), "event_timestamp", ts)
    write_table(feats, K.ITEM_FEATURES, ctx.out / "item_features")
    return {
        "model_version": version,
        "items": emb.report["items_written"],
        "media_failures": emb.report["failures"],
        "items_per_s": emb.report["items_per_s"],
        "sid_collision_share": sids.report["collisions"]["collision_share"],
        "sid_usage": [u["usage"] for u in sids.report["usage"]],
    }


def _stage_export(ctx: StageContext) -> dict[str, Any]:
    """Publishes the run's ITEM_FEATURES as a new version of the run's Feast repository (`export/feature_repo`).

    The repository is written in the stage's temporary folder, which is then renamed: it records only paths
    relative to itself, and `publish_version` checks it (Feast online and point-in-time reads against the parquet
    table, no file naming the temporary folder) on a copy at another path, as it will be read after the rename.
    """
    from export.export_features import publish_version

    res = publish_version(ctx.stage_dir("embed") / "item_features", ctx.out / "feature_repo")
    return {"version": res.version, "feature_view": res.feature_view, "rows": res.rows, "check": res.check}


def _check_time_layout(cfg: RunConfig, data_dir: Path) -> None:
    """Refuses embedding / ranker windows that leave the ranker no training day on this log (a real log's span is
    known once its data stage has read it)."""
    from core.timeline import build_timeline
    from mining.mine_pairs import log_time_range

    r = cfg.ranker
    try:
        build_timeline(*log_time_range(data_dir), cfg.embedding.holdout_frac, r.valid_days, r.test_days)
    except ValueError as e:
        raise ValueError(f"[embedding] / [ranker] of run '{cfg.name}': {e}") from None


def ranking_samples_config(cfg: RunConfig, run_dir: Path, out: Path, sail_dims: int | None = None):
    """The `recsys.samples.SamplesConfig` of a run's ranking_samples stage (from its validated log and exported
    features), writing to `out`; sail_dims overrides [ranker] sail_dims (0: the whole vector)."""
    from recsys.samples import SamplesConfig

    r = cfg.ranker
    meta = json.loads((run_dir / "export" / "stage.json").read_text())["metrics"]
    dims = r.sail_dims if sail_dims is None else sail_dims
    return SamplesConfig(
        data_dir=run_dir / "validate",
        out_dir=out,
        item_features_dir=run_dir / "export" / "feature_repo" / "offline" / meta["feature_view"],
        model_version=meta["version"],
        recent_len=r.recent_len,
        valid_days=r.valid_days,
        test_days=r.test_days,
        train_start=run_cutoff(run_dir).date(),
        embedding_prefix=dims or None,
        master=cfg.spark.master,
    )


def _stage_ranking_samples(ctx: StageContext) -> dict[str, Any]:
    """Point-in-time ranking samples; the ranker's train split starts at the embedding cutoff (`core.timeline`)."""
    from recsys.samples import run

    _check_time_layout(ctx.cfg, ctx.stage_dir("validate"))
    samples_cfg = ranking_samples_config(ctx.cfg, ctx.run_dir, ctx.out)
    res = run(samples_cfg)
    return {
        "rows": res.rows,
        "train_start": str(res.train_start),
        "valid_start": str(res.valid_start),
        "test_start": str(res.test_start),
        "feature_version": res.model_version,
        "embedding_dim": res.embedding_dim,
        "item_features": str(samples_cfg.item_features_dir),
    }


def ranker_train_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """The TorchRec ranker's training settings of a run (`recsys.train.TrainConfig` fields)."""
    from recsys.model import RankerConfig

    r = cfg.ranker
    return {
        "ranker": RankerConfig(embedding_dim=r.embedding_dim, interaction=r.interaction),
        "epochs": r.epochs,
        "patience": r.patience,
        "evals_per_epoch": r.evals_per_epoch,
        "batch_size": r.batch_size,
        "sparse_lr": r.sparse_lr,
        "dense_lr": r.dense_lr,
        "threads": r.threads,
        "max_train_rows": r.max_train_rows,
        "sid_levels": ranker_sid_levels(cfg),
        "seed": r.seed,
        "item_id_dropout": r.item_id_dropout,
        "sail_dropout": r.sail_dropout,
    }


def ranker_sid_levels(cfg: RunConfig) -> int:
    """The semantic-ID levels the ranker's sid variants use: [ranker] sid_levels, or every level of [features]."""
    return cfg.ranker.sid_levels or cfg.features.sid_levels


def ranker_variants_args(cfg: RunConfig, samples: Path, out: Path, note: str = ""):
    """`recsys.cli.run_variants`' arguments (a `recsys.cli.TrainRankerArgs`) of a run's [ranker] section; the
    TorchRec threads are per process (threads // nproc, at least 1)."""
    from recsys.cli import TrainRankerArgs

    r = cfg.ranker
    lgbm_kwargs = {
        "threads": r.lgbm_threads,
        "seed": r.seed,
        "max_train_rows": r.max_train_rows,
        "sid_levels": ranker_sid_levels(cfg),
    }
    return TrainRankerArgs(
        samples=samples,
        out=out,
        variants=tuple(r.variants),
        trainers=tuple(r.trainers),
        train_kwargs={**ranker_train_kwargs(cfg), "threads": max(1, r.threads // r.nproc)},
        lgbm_kwargs=lgbm_kwargs,
        n_boot=r.n_boot,
        note=note,
        seeds=r.seeds,
        table=False,  # under torchrun its lines would reach the console; the stage keeps results.md
        residual=r.residual,
    )


def _stage_ranker(ctx: StageContext) -> dict[str, Any]:
    """Every (trainer, variant) trains and is evaluated the same way; checkpoints live in the work directory. With
    `nproc` > 1 the whole `train-ranker` runs as that many torchrun ranks (every rank trains the TorchRec models; rank
    0 also LightGBM and the evaluation) and writes the same files into the work directory."""
    from recsys.cli import read_runs, run_train_ranker, train_ranker_argv

    r = ctx.cfg.ranker
    samples = ctx.stage_dir("ranking_samples") / "ranking_samples_ext"
    meta = json.loads((ctx.stage_dir("ranking_samples") / "stage.json").read_text())["metrics"]
    note = (
        f"Item features: the run's SAIL model ({meta['feature_version']}, {meta['embedding_dim']} dims), "
        f"test period from {meta['test_start']}."
    )
    a = ranker_variants_args(ctx.cfg, samples, ctx.work, note)
    if r.nproc == 1:
        runs = run_train_ranker(a).runs
    else:
        _torchrun(ctx, "recsys.cli", ["train-ranker", *train_ranker_argv(a)], r.nproc, a.train_kwargs["threads"])
        runs = read_runs(ctx.work)
    shutil.copy2(ctx.work / "results.json", ctx.out / "results.json")
    shutil.copy2(ctx.work / "results.md", ctx.out / "results.md")
    for key, scores in runs.items():  # scores and trained variants (the A/B arms load them from here)
        shutil.copytree(ctx.work / key, ctx.out / key, ignore=shutil.ignore_patterns(".*"))
        if scores.parent.name == "ensemble":  # `<key>/scores.npz` is what was evaluated: the seeds' mean
            (ctx.out / key / "scores.npz").replace(ctx.out / key / "scores-seed0.npz")
            shutil.copy2(scores, ctx.out / key / "scores.npz")
    return {"runs": sorted(runs), "samples": str(samples)}


def _stage_ab(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    if not cfg.ab.enabled:
        raise StageSkipped("[ab] enabled is false")
    if cfg.data.source != "generated":
        raise StageSkipped("the A/B simulation needs the generated world's user model (data.source: generated)")
    from offline_eval.ab_sim import ABConfig, Arm, LoggedPolicyScorer, run_ab
    from offline_eval.report import ab_result_to_dict
    from offline_eval.serve import ServeConfig, load_ranker_arm

    samples_meta = json.loads((ctx.stage_dir("ranking_samples") / "stage.json").read_text())["metrics"]
    features = ctx.resolve(samples_meta["item_features"])

    def arm(name: str) -> Arm:
        if name == "logged":
            return Arm("logged policy", LoggedPolicyScorer())
        # the whole validated log warms the arm's counters (the samples start at the ranker's train window)
        return load_ranker_arm(
            ctx.stage_dir("ranker") / "torchrec" / name,
            features,
            name=f"ranker {name}",
            log_dir=ctx.stage_dir("validate"),
            cfg=ServeConfig(embedding_prefix=cfg.ranker.sail_dims or None),  # the vectors the samples carried
        )

    a = cfg.ab
    res = run_ab(
        _world(cfg.data),
        [arm(a.control), arm(a.treatment)],
        ABConfig(days=a.days, salt=a.salt, n_boot=a.n_boot, seed=a.seed),
        progress=lambda s: log.info(s),
    )
    payload = ab_result_to_dict(res)
    write_json_atomic(ctx.out / "ab.json", payload)
    lifts = payload["lifts"]
    return {"lifts": lifts}


def _stage_report(ctx: StageContext) -> dict[str, Any]:
    from offline_eval.report import write_run_report
    from offline_eval.run_summary import build_run_summary

    summary = build_run_summary(ctx.cfg, ctx.run_dir)
    paths = write_run_report(summary, ctx.out, title=f"SAIL pipeline run '{ctx.cfg.name}'")
    return {"headline": summary["headline"], "report": str(ctx.run_dir / "report" / Path(paths.html).name)}


def _settings(*sections: str, **extra: Any) -> Callable[[RunConfig], Any]:
    return lambda c: {**{s: asdict(getattr(c, s)) for s in sections}, **extra}


def _data_settings(c: RunConfig) -> dict[str, Any]:
    if c.data.source == "generated":
        return {"data": asdict(c.data)}
    if c.data.source == "contracts":  # a changed table (its files' sizes and times) is copied again
        src = Path(c.data.contracts_dir or ".")
        files = sorted(p for p in src.rglob("*") if p.is_file() and "media" not in p.relative_to(src).parts)
        return {"data": asdict(c.data), "files": [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]}
    # real logs: user tags are cut at the embedding cutoff (holdout_frac places it), rows rejected past
    # max_rejected_share fail the stage, and a changed source file (size, time) reads the logs again
    m = logs_mapping(c)
    return {
        "data": asdict(c.data),
        "mapping": asdict(m),
        "files": _source_fingerprint(m),
        "holdout_frac": c.embedding.holdout_frac,
        "max_rejected_share": c.validation.max_rejected_share,
    }


def _source_fingerprint(m: LogsMapping) -> list[tuple[str, int, int]]:
    """(path, size, mtime ns) of every file the mapping reads; [] where a path finds none (the stage says so)."""
    from sources.logs import table_files

    out = []
    for key in ("interactions", "items", "searches", "impressions", "item_tags"):
        t = getattr(m, key)
        if not t.path:
            continue
        try:
            files, _ = table_files(Path(m.root or "."), t.path, t.format, key)
        except (FileNotFoundError, ValueError):
            continue
        # a URI (kept as text) is recorded by name only: its changes are not seen
        out += [
            (f, -1, -1) if isinstance(f, str) else (str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files
        ]
    return out


def _mine_settings(c: RunConfig) -> dict[str, Any]:
    return {"mining": asdict(c.mining), "holdout_frac": c.embedding.holdout_frac}


def _ranker_data_settings(c: RunConfig) -> dict[str, Any]:
    return {k: getattr(c.ranker, k) for k in ("recent_len", "valid_days", "test_days", "sail_dims")}


STAGES: tuple[Stage, ...] = (
    Stage("data", _data_settings, _stage_data),
    Stage("validate", _settings("validation"), _stage_validate, ("data",)),
    Stage("mine", _mine_settings, _stage_mine, ("validate",)),
    Stage("train_embedding", _settings("embedding"), _stage_train_embedding, ("validate", "mine")),
    Stage("eval_retrieval", _settings("retrieval"), _stage_eval_retrieval, ("mine", "train_embedding")),
    Stage("embed", _settings("features"), _stage_embed, ("mine", "train_embedding")),
    Stage("export", _settings(), _stage_export, ("embed",)),
    Stage("ranking_samples", _ranker_data_settings, _stage_ranking_samples, ("mine", "export")),
    Stage("ranker", _settings("ranker"), _stage_ranker, ("ranking_samples",)),
    Stage("ab", _settings("ab"), _stage_ab, ("ranker",)),
    Stage("report", _settings(version=3), _stage_report, ("mine", "eval_retrieval", "ranker", "ab")),
)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# the project's packages (pyproject.toml), bottom layer first
CODE_PACKAGES = ("core", "sources", "mining", "embedding", "export", "recsys", "offline_eval", "jobs")


@functools.cache
def code_hash() -> str:
    """The hash of the project's code: every file of its packages (sources, shipped configs, schemas; not caches).

    Computed from the files' contents, so it is the same in a git checkout (committed or with uncommitted
    changes), an installed copy or an unpacked archive of one version of the code, and changes with any edit. It is
    computed once per process: the code a run executes is the code it imported when it started.
    """
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc" or path.name.startswith("."):
                continue
            h.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _reuse_problem(path: Path, want: str, parts: dict[str, Any]) -> str | None:
    """None when stage directory `path` can be reused for the stage key `want` (the hash of `parts`); otherwise
    why not, naming the file (one that no longer matches the `_SUCCESS` manifest) or what changed."""
    if not path.exists():
        return "no output yet"
    problem = verify_manifest(path)
    if problem:
        return problem
    meta = path / "stage.json"
    try:
        recorded = json.loads(meta.read_text())
    except (OSError, ValueError):
        return f"{meta}: not readable"
    if recorded.get("config_hash") == want:
        return None
    old = recorded.get("key") or {}
    if old.get("code") != parts["code"]:
        return "the code changed"
    changed = sorted(d for d, h in parts["upstream"].items() if (old.get("upstream") or {}).get(d) != h)
    if changed:
        return f"upstream stage(s) {', '.join(changed)} changed"
    return "its settings changed"


def _outputs_key(path: Path, want: str) -> str:
    """What the stages reading `path` hash: its key and its manifest (a rerun of it reruns them)."""
    return _hash({"key": want, "manifest": hashlib.sha256((path / SUCCESS).read_bytes()).hexdigest()})


def _portable(obj: Any, run_dir: Path, tmp: Path, stage: str) -> Any:
    """`obj` (a stage's metrics) with every path inside the run directory made relative to it (the stage's
    temporary directory becomes the stage's name): the run directory can then be moved."""
    if isinstance(obj, dict):
        return {k: _portable(v, run_dir, tmp, stage) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_portable(v, run_dir, tmp, stage) for v in obj]
    if isinstance(obj, str | os.PathLike):
        text = os.fspath(obj)
        for base, as_ in ((tmp, stage), (run_dir, "")):
            prefix = str(base)
            if text == prefix or text.startswith(prefix + os.sep):
                return os.path.normpath(os.path.join(as_, os.path.relpath(text, prefix)))
        return text if isinstance(obj, os.PathLike) else obj
    return obj


class RunDirLocked(RuntimeError):
    """Another `sail run` holds the run directory (its message names the holder)."""


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Holds an advisory lock on the run directory (`flock` on `<run_dir>/.lock`, which records pid, host and start
    time) for the block; raises RunDirLocked naming the holder when another process holds it. The lock goes with
    its process (a killed run leaves none behind); the file stays."""
    path = run_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirLocked(
                f"run directory {run_dir} is in use by another sail run ({_lock_holder(path)}; lock {path})"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(UTC).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


_LEFTOVER = re.compile(r"\..+\.(tmp|old)-[0-9A-Za-z]+")  # core.io's temporary names: .<name>.tmp-<id>, .old-<id>


def _remove_leftovers(run_dir: Path) -> list[str]:
    """Removes the temporary files and folders of killed writers from the run directory's top level and its work
    folders (only while holding the run's lock: no writer is running); returns their paths, relative."""
    found = [p for p in run_dir.iterdir() if _LEFTOVER.fullmatch(p.name)]
    if (run_dir / "work").is_dir():
        for dirpath, dirnames, filenames in os.walk(run_dir / "work"):
            hits = [n for n in (*dirnames, *filenames) if _LEFTOVER.fullmatch(n)]
            found += [Path(dirpath) / n for n in hits]
            dirnames[:] = [d for d in dirnames if d not in hits]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return sorted(str(p.relative_to(run_dir)) for p in found)


@dataclass
class RunResult:
    run_dir: Path
    report_path: Path
    stages: dict[str, dict[str, Any]]  # per stage: status ("ran" | "skipped" | "not applicable"), seconds, metrics


def _file_logger(path: Path) -> logging.Handler:
    """A stage's log file, appended to: each attempt starts with a dated line, so an earlier attempt's failure
    stays readable but is not taken for this one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"==== {path.stem}: attempt started {datetime.now(UTC).isoformat(timespec='seconds')}\n")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("sail-recsys", "torch", "torchrec", "pyspark", "polars", "feast", "transformers", "lightgbm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_pipeline(cfg: RunConfig, echo: Callable[[str], None] = print, until: str | None = None) -> RunResult:
    """Runs (or resumes) every stage of `cfg` (up to and including `until` when given); returns where the report
    is and what each stage did. Raises RunDirLocked when another run holds the run directory."""
    from embedding.device import resolve_device

    try:  # before any stage: a run asking for CUDA on a machine without it fails now, not after mining
        resolve_device(cfg.embedding.device)
    except ValueError as e:
        raise ValueError(f"[embedding] of run '{cfg.name}': {e}") from None
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run_dir(run_dir):
        leftovers = _remove_leftovers(run_dir)
        if leftovers:
            shown = ", ".join(leftovers[:3]) + (f" and {len(leftovers) - 3} more" if len(leftovers) > 3 else "")
            echo(f"removed {len(leftovers)} temporary folder(s) an interrupted run left behind: {shown}")
        return _run_stages(cfg, run_dir, echo, until)


def _run_stages(cfg: RunConfig, run_dir: Path, echo: Callable[[str], None], until: str | None) -> RunResult:
    from core.machine import code_version
    from core.spark_session import spark_released_after

    code = code_hash()
    write_json_atomic(
        run_dir / "run.json",
        {
            "config": {**asdict(cfg), "run_dir": "."},  # paths in the run directory's files are relative to it
            "started": datetime.now(UTC).isoformat(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "code": {**code_version(), "hash": code},
        },
    )
    stages: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    total = len(STAGES)
    t_run = time.perf_counter()
    for i, stage in enumerate(STAGES, 1):
        parts = {
            "stage": stage.name,
            "settings": _hash(stage.settings(cfg)),
            "code": code,
            "upstream": {d: hashes[d] for d in stage.deps},
        }
        want = _hash(parts)
        path = run_dir / stage.name
        problem = _reuse_problem(path, want, parts)
        if problem is None:
            hashes[stage.name] = _outputs_key(path, want)
            meta = json.loads((path / "stage.json").read_text())
            status = "not applicable" if meta.get("skipped") else "skipped"
            # seconds: what the stage took when it ran (timings.json then describes the outputs on disk)
            seconds = round(float(meta.get("seconds", 0.0)), 2)
            stages[stage.name] = {"status": status, "seconds": seconds, "metrics": meta.get("metrics", {})}
            echo(f"[{i}/{total}] {stage.name}: up to date, skipped")
            if stage.name == until:
                break
            continue
        if path.exists():
            echo(f"[{i}/{total}] {stage.name}: outputs not reusable, running again: {problem}")
        echo(f"[{i}/{total}] {stage.name}: running (log: {run_dir / 'logs' / (stage.name + '.log')})")
        handler = _file_logger(run_dir / "logs" / f"{stage.name}.log")
        logging.getLogger().addHandler(handler)
        work = run_dir / "work" / f"{stage.name}-{want}"
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        skipped = None
        try:
            with atomic_dir(path) as tmp:
                try:
                    # this process and its children (Spark's JVM, torchrun ranks); a Spark session the stage started
                    # is shut down with its JVM at the end, so its heap does not stay held through later stages
                    with PeakRss() as memory, spark_released_after():
                        metrics = stage.run(StageContext(cfg, run_dir, tmp, work, echo))
                except StageSkipped as why:
                    skipped, metrics = str(why), {"reason": str(why)}
                seconds = time.perf_counter() - t0
                peak_mb = round(memory.peak / 2**20)
                metrics = _portable(metrics, run_dir, tmp, stage.name)
                record = {"config_hash": want, "key": parts, "seconds": seconds, "peak_rss_mb": peak_mb}
                (tmp / "stage.json").write_text(
                    json.dumps(
                        {**record, "skipped": skipped, "metrics": metrics},
                        indent=2,
                        default=str,
                    )
                )
        except Exception as exc:
            log.exception("stage %s failed", stage.name)  # the traceback: the stage log (and the console)
            raise StageFailed(stage.name, exc, run_dir / "logs" / f"{stage.name}.log") from exc
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        hashes[stage.name] = _outputs_key(path, want)
        if skipped:
            stages[stage.name] = {"status": "not applicable", "seconds": round(seconds, 2), "metrics": metrics}
            echo(f"[{i}/{total}] {stage.name}: not applicable ({skipped})")
            if stage.name == until:
                break
            continue
        stages[stage.name] = {"status": "ran", "seconds": round(seconds, 2), "peak_rss_mb": peak_mb, "metrics": metrics}
        echo(
            f"[{i}/{total}] {stage.name}: done in {seconds:.1f} s, peak memory {peak_mb:,} MB "
            f"(run so far {time.perf_counter() - t_run:.0f} s)"
        )
        if stage.name == until:
            break
    timings = {k: v["seconds"] for k, v in stages.items()}
    write_json_atomic(run_dir / "timings.json", timings)
    return RunResult(run_dir=run_dir, report_path=run_dir / "report" / "report.html", stages=stages)
