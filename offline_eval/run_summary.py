"""Collects a pipeline run's stage outputs into the report's `summary` (schema: offline_eval/summary.schema.json).

Sections come from the stages' own files, unchanged: `data` from the validated tables (+ the mining counts),
`data_source` from the validated data set's manifest (`offline_eval.report.describe_data_source`),
`retrieval` from `eval_retrieval/retrieval.json`, `ranker` from `ranker/results.json` (+ the paths of each model's
test scores, for the calibration plots), `ab` from `ab/ab.json`. A stage that did not run (or does not apply)
leaves its section null. `headline` picks the figures the run prints at the end; `reference` carries the
SAIL-Embedding paper's online figures for scale.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PAPER_REFERENCE = {"paper_lt7_lift_pct": 0.158, "paper_auc_gain_pct": 0.08}
"""The SAIL-Embedding paper's reported online LT7 lift and ranking AUC gain (percent), quoted for scale only."""


def _stage_meta(run_dir: Path, stage: str) -> dict[str, Any] | None:
    path = run_dir / stage / "stage.json"
    return json.loads(path.read_text()) if path.exists() else None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _figure(name: str, iv: dict, value_key: str, unit: str, source: str, scale: float = 1.0) -> dict[str, Any]:
    """A headline entry: iv[value_key] and its interval (low / high may be absent) times `scale`."""
    low, high = iv.get("low"), iv.get("high")
    return {
        "name": name,
        "value": iv[value_key] * scale,
        "low": None if low is None else low * scale,
        "high": None if high is None else high * scale,
        "unit": unit,
        "source": source,
    }


def headline_figures(ranker: dict | None, ab: dict | None, retrieval: dict | None, treatment: str) -> list[dict]:
    """The figures the run prints: A/B lifts (%), the +treatment vs control AUC difference, SAIL retrieval."""
    out: list[dict[str, Any]] = []
    if ab is not None and ab.get("lifts"):
        arm, lifts = next(iter(ab["lifts"].items()))
        control = ab["arms"][0]["name"]
        for metric, label in (("lt7", "LT7"), ("lt14", "LT14"), ("dau_share", "DAU share")):
            iv = lifts.get(metric)
            if iv is not None:
                out.append(_figure(f"{label} lift, {arm} vs {control}", iv, "value", "%", "ab", 100.0))
    if ranker is not None:
        for trainer in ("torchrec", "lgbm"):
            diff = ranker.get("differences", {}).get(f"{trainer}/{treatment}-control")
            if diff is None:
                continue
            for slice_ in ("all", "cold"):
                # click, or finish where click AUC is undefined (MovieLens: every rating is a click)
                task = next((t for t in ("click", "finish") if t in diff.get(slice_, {})), None)
                iv = diff.get(slice_, {}).get(task, {}).get("auc") if task else None
                if iv is not None:
                    name = f"{task} AUC difference, {trainer} {treatment} - control ({slice_} items)"
                    out.append(_figure(name, iv, "value", "AUC", "ranker"))
            gains = ranker.get("slice_gains", {}).get(f"{trainer}/{treatment}-control", {}).get("cold", {})
            task = next((t for t in ("click", "finish") if t in gains), None)
            if task is not None:  # > 0: the gain is larger on cold-start items than on the others
                name = f"{task} AUC gain on cold items - gain on the others, {trainer} {treatment} vs control"
                out.append(_figure(name, gains[task], "value", "AUC", "ranker"))
    if retrieval is not None:
        sail = retrieval.get("table", {}).get("SAIL + CRE", {})
        for task in ("i2i_coengagement", "q2i", "cold_start_i2i"):
            cell = sail.get(task)
            if cell is not None:
                name = f"SAIL + CRE {retrieval.get('tasks', {}).get(task, task)}"
                out.append(_figure(name, cell, "recall", "recall x 100", "retrieval", 100.0))
    return out


def read_data_source(valid_dir: str | Path) -> dict[str, Any]:
    """The summary's `data_source` from `valid_dir/manifest.json` (the manifest validation copied from the data)."""
    from offline_eval.report import describe_data_source

    return describe_data_source(_json(Path(valid_dir) / "manifest.json"))


def build_run_summary(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """The `summary` of a run directory whose data, validate and mine stages finished (later ones optional)."""
    from core.machine import describe_machine
    from offline_eval.data_report import summarise_dataset, summarise_mining

    run_dir = Path(run_dir)
    data = summarise_dataset(run_dir / "validate")
    if (run_dir / "mine" / "mining.json").exists():
        data["mining"] = summarise_mining(run_dir / "mine" / "mining.json")
    timings, notes = {}, {}
    for stage in (p.name for p in sorted(run_dir.iterdir()) if (p / "stage.json").exists()):
        meta = _stage_meta(run_dir, stage)
        timings[stage] = round(float(meta.get("seconds", 0.0)), 2)
        if meta.get("skipped"):
            notes[stage] = meta["skipped"]
    retrieval = _json(run_dir / "eval_retrieval" / "retrieval.json")
    ranker = _json(run_dir / "ranker" / "results.json")
    ranker_scores = None
    if ranker is not None:
        ranker_scores = {
            key: str(run_dir / "ranker" / key / "scores.npz")
            for key in ranker.get("models", {})
            if (run_dir / "ranker" / key / "scores.npz").exists()
        }
    ab = _json(run_dir / "ab" / "ab.json")
    treatment = getattr(getattr(cfg, "ab", None), "treatment", "both")
    return {
        "schema_version": 1,
        "run": {
            "name": cfg.name,
            "config": _plain(cfg),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": describe_machine(),
            "timings": timings,
            "notes": notes,
        },
        "data": data,
        "data_source": read_data_source(run_dir / "validate"),
        "retrieval": retrieval,
        "ranker": ranker,
        "ranker_scores": ranker_scores,
        "ab": ab,
        "headline": headline_figures(ranker, ab, retrieval, treatment),
        "reference": dict(PAPER_REFERENCE),
    }


def _plain(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg), default=str))
