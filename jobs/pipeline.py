"""The pipeline driver: `sail run --config <name|file>` runs the stages in order in one run directory.

Each stage writes into `<run_dir>/<stage>/`, finished by a `_SUCCESS` marker and a `stage.json` holding the
hash of the configuration that produced it (its own section plus its upstream stages' hashes). A stage whose
directory is complete with a matching hash is skipped, so a run stopped at any point resumes where it stopped,
and changing a setting reruns that stage and everything after it.

Stages that exist today: data (generate the world or adapt real data) -> validate (contracts + quarantine)
-> report (data summary). Later stages plug in the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from jobs.io import atomic_dir, is_complete, write_json_atomic

log = logging.getLogger("sail")

SHIPPED_CONFIGS = ("demo", "smoke", "movielens", "large")


@dataclass(frozen=True)
class DataConfig:
    source: str = "generated"  # "generated" (the simulated world) or "movielens" (real data, text only)
    size: str = "small"  # generated world size: tiny | small | large
    seed: int = 7  # generated world seed
    movielens_dir: str | None = None  # MovieLens folder; None: $SAIL_MOVIELENS_DIR or ../shared/data/...
    session_gap_s: int = 1800  # MovieLens sessionisation gap (seconds)


@dataclass(frozen=True)
class ValidationSection:
    max_rejected_share: float = 0.01  # fail when more than this share of one table's rows is rejected
    clock_skew_s: int = 300  # tolerance (s) for late timestamps and events just before their item's creation


@dataclass(frozen=True)
class MiningSection:
    engine: str = "spark"  # "spark" (local[*] here, a cluster via spark-submit) or "polars" (single machine)
    miners: tuple[str, ...] = ("covisit", "swing")  # i2i miners to run
    top_k: int = 20  # i2i positives kept per anchor item (both miners)


@dataclass(frozen=True)
class RunConfig:
    name: str
    run_dir: str  # where every stage writes; relative paths are relative to the working directory
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationSection = field(default_factory=ValidationSection)
    mining: MiningSection = field(default_factory=MiningSection)


def _build(cls: type, section: dict[str, Any] | None, where: str) -> Any:
    section = section or {}
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**section)


def load_config(name_or_path: str, run_dir: str | None = None) -> RunConfig:
    """A shipped config by name (`demo`, `smoke`, `movielens`, `large`) or a YAML file by path."""
    if name_or_path in SHIPPED_CONFIGS:
        text = resources.files("jobs.configs").joinpath(f"{name_or_path}.yaml").read_text()
        where = f"shipped config {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(f"config {name_or_path!r} is neither a shipped config {SHIPPED_CONFIGS} nor a file")
        text, where = path.read_text(), str(path)
    raw = yaml.safe_load(text) or {}
    top = {"name", "run_dir", "data", "validation", "mining"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; known: {sorted(top)}")
    data = _build(DataConfig, raw.get("data"), f"{where} [data]")
    if data.source not in ("generated", "movielens"):
        raise ValueError(f"{where} [data]: source must be 'generated' or 'movielens', got {data.source!r}")
    return RunConfig(
        name=raw.get("name", Path(name_or_path).stem),
        run_dir=run_dir or raw.get("run_dir") or f"runs/{raw.get('name', 'run')}",
        data=data,
        validation=_build(ValidationSection, raw.get("validation"), f"{where} [validation]"),
        mining=_mining_section(raw.get("mining"), f"{where} [mining]"),
    )


def _mining_section(raw: dict[str, Any] | None, where: str) -> MiningSection:
    m = _build(MiningSection, raw, where)
    if m.engine not in ("spark", "polars"):
        raise ValueError(f"{where}: engine must be 'spark' or 'polars', got {m.engine!r}")
    return replace(m, miners=tuple(m.miners))


# ------------------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    settings: Callable[[RunConfig], Any]  # the part of the config this stage depends on (hashed)
    run: Callable[[RunConfig, Path, Path], dict[str, Any]]  # (cfg, run_dir, tmp out dir) -> metrics


def default_movielens_dir() -> Path:
    env = os.environ.get("SAIL_MOVIELENS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-latest-small"


def _stage_data(cfg: RunConfig, run_dir: Path, out: Path) -> dict[str, Any]:
    if cfg.data.source == "generated":
        from offline_eval.world import WorldConfig, generate_world

        res = generate_world(WorldConfig.for_size(cfg.data.size, seed=cfg.data.seed), out, progress=True)
        return {"counts": res.counts}
    from jobs.adapters.movielens import adapt_movielens

    src = Path(cfg.data.movielens_dir) if cfg.data.movielens_dir else default_movielens_dir()
    res = adapt_movielens(src, out, session_gap_s=cfg.data.session_gap_s)
    return {"counts": res.counts}


def _stage_validate(cfg: RunConfig, run_dir: Path, out: Path) -> dict[str, Any]:
    from jobs.validate import ValidationConfig, validate_dataset

    v = cfg.validation
    res = validate_dataset(
        run_dir / "data",
        out,
        ValidationConfig(max_rejected_share=v.max_rejected_share, clock_skew_s=v.clock_skew_s),
    )
    return {"rejected": {k: r.rejected for k, r in res.tables.items()}, "rejected_total": res.rejected_total}


def _stage_mine(cfg: RunConfig, run_dir: Path, out: Path) -> dict[str, Any]:
    from jobs.mine_pairs import run as mine
    from jobs.mining_config import CovisitConfig, MiningConfig, SwingConfig

    m = cfg.mining
    res = mine(
        MiningConfig(
            data_dir=str(run_dir / "validate"),
            out_dir=str(out),
            engine=m.engine,
            miners=m.miners,
            covisit=CovisitConfig(top_k=m.top_k),
            swing=SwingConfig(top_k=m.top_k),
        )
    )
    keep = ("engine", "seconds", "input_rows", "rejected", "positive_events", "pairs", "split_ts")
    return {k: res.counts[k] for k in keep if k in res.counts}


def _stage_report(cfg: RunConfig, run_dir: Path, out: Path) -> dict[str, Any]:
    from offline_eval.data_report import write_data_report

    return write_data_report(
        run_dir / "validate", out, title=f"SAIL pipeline run '{cfg.name}'", mining_json=run_dir / "mine" / "mining.json"
    )


STAGES: tuple[Stage, ...] = (
    Stage("data", lambda c: asdict(c.data), _stage_data),
    Stage("validate", lambda c: asdict(c.validation), _stage_validate),
    Stage("mine", lambda c: asdict(c.mining), _stage_mine),
    Stage("report", lambda c: {"version": 2}, _stage_report),
)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_done(path: Path, want: str) -> bool:
    meta = path / "stage.json"
    return is_complete(path) and meta.exists() and json.loads(meta.read_text()).get("config_hash") == want


@dataclass
class RunResult:
    run_dir: Path
    report_path: Path
    stages: dict[str, dict[str, Any]]  # per stage: status ("ran" | "skipped"), seconds, metrics


def _file_logger(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def run_pipeline(cfg: RunConfig, echo: Callable[[str], None] = print) -> RunResult:
    """Runs (or resumes) every stage of `cfg`; returns where the report is and what each stage did."""
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        run_dir / "run.json",
        {
            "config": asdict(cfg),
            "started": datetime.now(UTC).isoformat(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    )
    stages: dict[str, dict[str, Any]] = {}
    upstream = ""
    total = len(STAGES)
    for i, stage in enumerate(STAGES, 1):
        want = _hash({"stage": stage.name, "settings": stage.settings(cfg), "upstream": upstream})
        upstream = want
        path = run_dir / stage.name
        if _stage_done(path, want):
            meta = json.loads((path / "stage.json").read_text())
            stages[stage.name] = {"status": "skipped", "seconds": 0.0, "metrics": meta.get("metrics", {})}
            echo(f"[{i}/{total}] {stage.name}: up to date, skipped")
            continue
        echo(f"[{i}/{total}] {stage.name}: running (log: {run_dir / 'logs' / (stage.name + '.log')})")
        handler = _file_logger(run_dir / "logs" / f"{stage.name}.log")
        logging.getLogger().addHandler(handler)
        t0 = time.perf_counter()
        try:
            with atomic_dir(path) as tmp:
                metrics = stage.run(cfg, run_dir, tmp)
                seconds = time.perf_counter() - t0
                (tmp / "stage.json").write_text(
                    json.dumps({"config_hash": want, "seconds": seconds, "metrics": metrics}, indent=2, default=str)
                )
        except Exception:
            log.exception("stage %s failed", stage.name)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        stages[stage.name] = {"status": "ran", "seconds": round(seconds, 2), "metrics": metrics}
        echo(f"[{i}/{total}] {stage.name}: done in {seconds:.1f} s")
    timings = {k: v["seconds"] for k, v in stages.items()}
    write_json_atomic(run_dir / "timings.json", timings)
    return RunResult(run_dir=run_dir, report_path=run_dir / "report" / "report.html", stages=stages)
