"""Scaling curve: every stage of `sail run` at three world sizes, its time and memory against what it scales with.

    python benchmarks/scaling_curve.py [--sizes small,medium,large] [--runs runs/scaling]
        [--out benchmarks/results/scaling_curve.json]

Each size runs the `large` config with that size's world preset (same seed) up to the ranker (`sail run --until
ranker`), one run directory per size, with three changes that keep the curve about the data rather than about
model size: the test-size embedding model (`tiny`, steps 100/25/20/100: the trainers' cost is set by their steps,
and the pretrained model's costs at `large` are in `benchmarks/results/large_run/`), no retrieval table (it trains a
second model and embeds the catalogue with four), and the control and +both rankers of both trainers. No A/B.
Then the mine stage's polars twin runs on the same validated log in its own process (the same config with
`mining.engine: polars`; its pairs are the Spark stage's, which `tests/test_mining_parity.py` checks).

Per size and stage: seconds and peak memory of the process tree (the stage's `stage.json`: `sail run`'s Python
process plus Spark's JVM; the twin's own process). Each stage is compared with what it should scale with: the
interaction log's rows (data, validate, mine and its twin, ranking samples), the catalogue (embed, export), the
ranker's training rows (ranker), nothing (train_embedding: fixed steps, plus a catalogue-sized set-up). Between
consecutive sizes: time ratio / driver ratio; a stage above 1.3 is flagged with the two ratios.

Writes benchmarks/results/scaling_curve.json and .md with the machine, the commit and every run's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "scaling_curve.json"
GROWTH_TARGET = 1.3  # a data-bound stage's time ratio may be at most this x its driver's size ratio
STEPS = (100, 25, 20, 100)
DRIVERS = {
    "data": "interactions",
    "validate": "interactions",
    "mine": "interactions",
    "mine (polars twin)": "interactions",
    "train_embedding": "steps",
    "embed": "items",
    "export": "items",
    "ranking_samples": "interactions",
    "ranker": "ranker_train_rows",
}
"""What each measured stage's work grows with (`steps` does not grow: the trainers run a fixed schedule)."""
STAGES = ("data", "validate", "mine", "train_embedding", "embed", "export", "ranking_samples", "ranker")


def scaling_config(size: str, runs: Path, base: str = "large"):
    """The run config of one size: `base` with the size's world preset, the tiny model, no retrieval table, the
    control and +both rankers of both trainers, no A/B."""
    from jobs.pipeline import load_config

    cfg = load_config(base)
    return dataclasses.replace(
        cfg,
        name=f"scaling-{size}",
        run_dir=str(runs / size),
        data=dataclasses.replace(cfg.data, size=size),
        embedding=dataclasses.replace(cfg.embedding, model="tiny", steps=STEPS),
        retrieval=dataclasses.replace(cfg.retrieval, enabled=False),
        ranker=dataclasses.replace(cfg.ranker, variants=("control", "both")),
        ab=dataclasses.replace(cfg.ab, enabled=False),
    )


def mine_twin(size: str, runs: Path, base: str = "large") -> dict[str, Any]:
    """The mine stage with the polars engine on the run's validated log, in this process (run it in its own):
    seconds and peak memory of this process."""
    from core.machine import PeakRss
    from core.timeline import embedding_cutoff
    from jobs.pipeline import mining_config
    from mining.mine_pairs import log_time_range, run_periods

    cfg = scaling_config(size, runs, base)
    cfg = dataclasses.replace(cfg, mining=dataclasses.replace(cfg.mining, engine="polars"))
    run_dir = Path(cfg.run_dir)
    data, out = run_dir / "validate", run_dir / "mine_polars_twin"
    t0 = time.perf_counter()
    with PeakRss() as memory:
        first, last = log_time_range(data)
        cutoff = embedding_cutoff(first, last, cfg.embedding.holdout_frac)
        res = run_periods(mining_config(cfg, data, out), cutoff, heldout_top_k=cfg.mining.heldout_top_k)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(memory.peak / 2**20),
        "periods": res.counts["periods"],
    }


def size_row(size: str, runs: Path, base: str = "large", run: bool = True) -> dict[str, Any]:
    """Runs one size (its `sail run`, then the mine twin, each in its own process: a stage's peak memory is then
    its own, not what an earlier size left in the process) and reads its stages. run=False: reads the stages the
    size's run directory finished (the others recorded as not finished) and runs only the twin."""
    cfg = scaling_config(size, runs, base)
    args = ["--runs", str(runs), "--base", base]
    t0 = time.perf_counter()
    if run:
        subprocess.run([sys.executable, __file__, "--run-size", size, *args], check=True)
    wall = time.perf_counter() - t0 if run else None
    twin = subprocess.run([sys.executable, __file__, "--twin", size, *args], check=True, capture_output=True, text=True)
    run_dir = Path(cfg.run_dir)
    stages: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        if not (run_dir / name / "_SUCCESS").exists():
            stages[name] = {"seconds": None, "peak_rss_mb": None, "status": "not finished"}
            continue
        meta = json.loads((run_dir / name / "stage.json").read_text())
        stages[name] = {"seconds": round(float(meta["seconds"]), 2), "peak_rss_mb": meta.get("peak_rss_mb")}
    stages["mine (polars twin)"] = json.loads(twin.stdout.strip().splitlines()[-1])
    counts = json.loads((run_dir / "data" / "manifest.json").read_text())["counts"]
    samples = json.loads((run_dir / "ranking_samples" / "stage.json").read_text())["metrics"]["rows"]
    return {
        "size": size,
        "run_dir": str(run_dir),
        "config": dataclasses.asdict(cfg),
        "wall_seconds": round(wall, 1),
        "drivers": {
            "interactions": counts["interactions"],
            "items": counts["items"],
            "ranker_train_rows": samples["train"],
            "steps": sum(STEPS),
        },
        "stages": stages,
    }


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Between consecutive sizes, per stage: the driver's size ratio, the time ratio and their quotient; flagged
    when the quotient is above GROWTH_TARGET for a stage whose driver grows."""
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        for stage, driver in DRIVERS.items():
            ta, tb = a["stages"][stage]["seconds"], b["stages"][stage]["seconds"]
            if ta is None or tb is None:  # a stage one of the sizes did not finish
                continue
            size_ratio = b["drivers"][driver] / a["drivers"][driver]
            time_ratio = tb / ta if ta > 0 else float("inf")
            quotient = time_ratio / size_ratio
            out.append(
                {
                    "from": a["size"],
                    "to": b["size"],
                    "stage": stage,
                    "driver": driver,
                    "size_ratio": round(size_ratio, 3),
                    "time_ratio": round(time_ratio, 3),
                    "quotient": round(quotient, 3),
                    "above_target": driver != "steps" and quotient > GROWTH_TARGET,
                }
            )
    return out


def twin_ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per size: the mine stage's seconds (Spark in the `large` config) over its polars twin's."""
    return {
        r["size"]: round(r["stages"]["mine"]["seconds"] / r["stages"]["mine (polars twin)"]["seconds"], 2) for r in rows
    }


def _cells(stage: dict[str, Any]) -> str:
    if stage["seconds"] is None:
        return "not finished | —"
    return f"{stage['seconds']:.1f} | {stage['peak_rss_mb']}"


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["sizes"]
    head = " | ".join(f"{r['size']} s | {r['size']} MB" for r in rows)
    lines = [
        f"# Scaling curve (commit {str(payload['machine']['code'].get('commit'))[:7]})",
        "",
        f"`sail run --until ranker` of the `{payload['base_config']}` config at each world size (tiny embedding "
        f"model, steps {'/'.join(map(str, STEPS))}, no retrieval table, control and +both rankers); the mine "
        f"stage ({payload['mine_engine']}) and its polars twin, in its own process, on the same validated log.",
        "",
        *([payload["note"], ""] if payload.get("note") else []),
        "| driver | " + " | ".join(r["size"] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for d in ("interactions", "items", "ranker_train_rows", "steps"):
        lines.append(f"| {d} | " + " | ".join(f"{r['drivers'][d]:,}" for r in rows) + " |")
    lines += ["", f"| stage | grows with | {head} |", "|---|---|" + "---|---|" * len(rows)]
    for stage, driver in DRIVERS.items():
        cells = " | ".join(_cells(r["stages"][stage]) for r in rows)
        lines.append(f"| {stage} | {driver} | {cells} |")
    lines += [
        "",
        f"Time ratio against the driver's size ratio between consecutive sizes (target: at most {GROWTH_TARGET}x "
        "for a stage whose driver grows):",
        "",
        "| stage | sizes | size ratio | time ratio | time / size |",
        "|---|---|---|---|---|",
    ]
    for g in payload["growth"]:
        flag = " **above**" if g["above_target"] else ""
        lines.append(
            f"| {g['stage']} | {g['from']} -> {g['to']} | {g['size_ratio']:.2f} | {g['time_ratio']:.2f} | "
            f"{g['quotient']:.2f}{flag} |"
        )
    twins = ", ".join(f"{k} {v:.2f}x" for k, v in payload["mine_over_polars_twin"].items())
    lines += ["", f"The mine stage ({payload['mine_engine']}) over its polars twin, in time: {twins}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="small,medium,large")
    p.add_argument("--runs", type=Path, default=Path("runs/scaling"))
    p.add_argument("--base", default="large", help="the config whose stages run at each size")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--read-only", action="store_true", help="read the finished stages of earlier runs, run only twins")
    p.add_argument("--note", default="", help="a line for the Markdown (e.g. what else ran on the machine)")
    p.add_argument("--twin", default=None, help=argparse.SUPPRESS)  # internal: the mine twin of one size
    p.add_argument("--run-size", default=None, help=argparse.SUPPRESS)  # internal: the `sail run` of one size
    args = p.parse_args(argv)
    if args.run_size:
        from jobs.pipeline import run_pipeline

        run_pipeline(scaling_config(args.run_size, args.runs, args.base), until="ranker")
        return 0
    if args.twin:
        print(json.dumps(mine_twin(args.twin, args.runs, args.base)), flush=True)
        return 0
    rows = []
    for size in (s for s in args.sizes.split(",") if s):
        rows.append(size_row(size, args.runs, args.base, run=not args.read_only))
        print(json.dumps({"size": size, "stages": rows[-1]["stages"]}), flush=True)
    payload = {
        "benchmark": "scaling_curve",
        "machine": describe_machine("pyspark", "polars", "torch", "torchrec"),
        "base_config": args.base,
        "note": args.note,
        "sizes": rows,
        "growth": growth(rows),
        "mine_engine": rows[0]["config"]["mining"]["engine"] if rows else None,
        "mine_over_polars_twin": twin_ratios(rows),
    }
    write_results(args.out, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
