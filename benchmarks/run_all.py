"""Benchmark: every pipeline stage, timed in one `sail run` per repeat, reported as the median over repeats.

    .venv/bin/python benchmarks/run_all.py [--config smoke|demo|large|movielens|FILE] [--repeats 3] [--work DIR]

Each repeat runs `python -m jobs.cli run --config CONFIG` in a subprocess into a fresh run directory (nothing is
reused between repeats: every stage really runs), then reads the run's `timings.json`. Reported per stage: the
median, minimum and maximum wall seconds over the repeats, and the same for the whole process (which adds Python
and Spark start-up to the sum of the stages). The machine description (CPU, cores, memory, load average before
and after: the machine may be shared) is recorded beside the figures. Results go to
`benchmarks/results/run_all_<config>.json` and `.md`; the README's performance table quotes the `.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402


def run_once(config: str, run_dir: Path) -> tuple[dict[str, float], float]:
    """One full pipeline run in a subprocess: (stage -> seconds, wall seconds of the whole process)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--config", config, "--run-dir", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sail run --config {config} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads((run_dir / "timings.json").read_text()), wall


def summarise(runs: list[dict[str, float]], walls: list[float]) -> dict[str, dict[str, float]]:
    stages = list(runs[0])
    out = {}
    for s in stages:
        xs = [r[s] for r in runs]
        out[s] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
    out["whole run (process)"] = {"median": statistics.median(walls), "min": min(walls), "max": max(walls)}
    return out


def markdown(config: str, table: dict[str, dict[str, float]], repeats: int, machine: dict) -> str:
    load_end = machine.get("load_average_at_end", [float("nan")])[0]
    lines = [
        f"# `sail run --config {config}`: seconds per stage (median of {repeats} run(s), min / max)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB; load average before "
        f"{machine['load_average_at_start'][0]:.1f}, after {load_end:.1f}.",
        "",
        "| stage | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    for stage, v in table.items():
        lines.append(f"| {stage} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="smoke")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="run directories go here (default: a temporary dir)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    machine = describe_machine("torch", "polars", "pyspark")
    work = args.work or Path(tempfile.mkdtemp(prefix="sail-run-all-"))
    runs, walls = [], []
    try:
        for r in range(args.repeats):
            run_dir = work / f"repeat-{r}"
            shutil.rmtree(run_dir, ignore_errors=True)
            timings, wall = run_once(args.config, run_dir)
            runs.append(timings)
            walls.append(wall)
            print(f"repeat {r + 1}/{args.repeats}: {wall:.1f} s  {json.dumps(timings)}", flush=True)
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = list(os.getloadavg())
    table = summarise(runs, walls)
    name = Path(args.config).stem
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": args.config,
        "repeats": args.repeats,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "stages": table,
        "runs": runs,
        "walls": walls,
    }
    (args.out / f"run_all_{name}.json").write_text(json.dumps(payload, indent=2))
    md = markdown(args.config, table, args.repeats, machine)
    (args.out / f"run_all_{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
