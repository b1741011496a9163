"""Benchmark: the ranking samples' SAIL features by broadcast lookup against the plain Spark join, same run.

    python benchmarks/ranking_samples.py --run-dir runs/scaling/medium [--run-dir runs/large] [--config large]
        [--engines lookup,join] [--out benchmarks/results/ranking_samples.json]

Each run directory is a finished `sail run` up to `export` (its validated log and its exported feature table). For
each run directory and engine (`recsys.samples.SamplesConfig.sail_engine`), the ranking_samples stage's own
settings (`jobs.pipeline.ranking_samples_config` with the config `--config`) build the samples in a fresh process
with its own Spark local directory:

- lookup: the feature rows collected once, broadcast, and looked up per Arrow batch (no join, no shuffle);
- join: the plain Spark reference (an interval join per target and per recent item, a group-by per impression).

Reported per pair: wall seconds, peak resident memory of the process tree (Python and Spark's JVM), the peak size
of Spark's local directory (shuffle and sort spill on disk, sampled every second), rows per split, and two
checksums over the written samples (rows with a SAIL vector; the sum of user_hist_sim), which must agree between
engines. A failed build is reported with its error's last line. Results: benchmarks/results/ranking_samples.json
and .md, with the machine, the commit and each run's config.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.machine import describe_machine, dir_bytes, run_measured, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ranking_samples.json"
ENGINES = ("lookup", "join")


def build_child(config: str, run_dir: Path, engine: str, out: Path) -> dict[str, Any]:
    """In the child process: the stage's samples with `engine`, then the checksums. Returns the record."""
    import dataclasses

    from pyspark.sql import functions as F

    from core.spark_io import read_contract_table
    from jobs.pipeline import load_config, ranking_samples_config
    from recsys.features import RANKING_SAMPLES_EXT
    from recsys.samples import run

    cfg = load_config(config)
    samples_cfg = dataclasses.replace(ranking_samples_config(cfg, run_dir, out), sail_engine=engine)
    t0 = time.perf_counter()
    res = run(samples_cfg)
    seconds = time.perf_counter() - t0
    from core.spark_session import build_spark

    spark = build_spark("sail-ranking-samples-check", master=samples_cfg.master)
    ext = read_contract_table(spark, res.ext_path, RANKING_SAMPLES_EXT)
    sums = ext.agg(
        F.count("sail_embedding").alias("with_vector"),
        F.sum(F.col("user_hist_sim").cast("double")).alias("hist_sim_sum"),
        F.count("user_hist_sim").alias("with_hist_sim"),
    ).first()
    return {
        "seconds": round(seconds, 1),
        "rows": res.rows,
        "embedding_dim": res.embedding_dim,
        "with_vector": int(sums["with_vector"]),
        "with_hist_sim": int(sums["with_hist_sim"]),
        "hist_sim_sum": float(sums["hist_sim_sum"] or 0.0),
    }


def measure(config: str, run_dir: Path, engine: str, scratch: Path) -> dict[str, Any]:
    """One (run, engine) build in its own process; peak memory and local-dir bytes sampled from outside."""
    out, local, record = scratch / f"out-{engine}", scratch / f"spark-local-{engine}", scratch / f"{engine}.json"
    for p in (out, local):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child", config, str(run_dir), engine, str(out), str(record)]
    env = {**os.environ, "SPARK_LOCAL_DIRS": str(local)}
    run = run_measured(cmd, cwd=ROOT, env=env, merge_stderr=True, every=1.0, sample={"local": lambda: dir_bytes(local)})
    log = run.stdout
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "engine": engine,
        "process_seconds": round(run.seconds, 1),
        "peak_rss_mb": round(run.peak_rss / 2**20),
        "peak_local_dir_mb": round(run.peaks["local"] / 2**20),
    }
    if run.returncode == 0 and record.exists():
        row.update(json.loads(record.read_text()), status="ok")
    else:
        lines = [ln for ln in log.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        row.update(status="failed", error=(errors or lines or ["(no output)"])[-1][:300])
    for p in (out, local):
        shutil.rmtree(p, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def to_markdown(result: dict[str, Any]) -> str:
    code = result["machine"]["code"]
    lines = [
        "# Ranking samples: SAIL features by broadcast lookup vs the Spark join",
        "",
        f"Commit {code['commit']}{' (uncommitted changes)' if code['dirty'] else ''}; config "
        f"`{result['config']}`; {result['machine']['cores']} cores, {result['machine']['ram_gib']} GiB. Each build in "
        "its own process (Python + Spark JVM), its own Spark local directory (spill on disk).",
        "",
        "| run | engine | status | seconds | peak memory (MB) | peak local dir (MB) | train / valid / test rows "
        "| rows with a vector | sum of user_hist_sim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        rows = r.get("rows", {})
        split = " / ".join(f"{rows.get(s, 0):,}" for s in ("train", "valid", "test")) if rows else ""
        lines.append(
            f"| {Path(r['run_dir']).name} | {r['engine']} | {r['status']} | {r.get('seconds', r['process_seconds'])} "
            f"| {r['peak_rss_mb']:,} | {r['peak_local_dir_mb']:,} | {split} | {r['with_vector']:,} "
            f"| {r['hist_sim_sum']:.3f} |"
            if r["status"] == "ok"
            else f"| {Path(r['run_dir']).name} | {r['engine']} | failed after {r['process_seconds']} s "
            f"| | {r['peak_rss_mb']:,} | {r['peak_local_dir_mb']:,} | {r['error']} | | |"
        )
    lines += ["", "Seconds: the build (`recsys.samples.run`, including its Spark session), failures: the process."]
    for run_dir, verdict in result["agreement"].items():
        lines.append(f"- {Path(run_dir).name}: {verdict}")
    return "\n".join(lines) + "\n"


def agreement(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Per run directory: whether the engines that finished wrote the same rows, vectors and similarities."""
    out: dict[str, str] = {}
    for run_dir in dict.fromkeys(r["run_dir"] for r in rows):
        ok = [r for r in rows if r["run_dir"] == run_dir and r["status"] == "ok"]
        if len(ok) < 2:
            out[run_dir] = f"{len(ok)} engine(s) finished; nothing to compare"
            continue
        a, b = ok[0], ok[1]
        same = (
            a["rows"] == b["rows"] and a["with_vector"] == b["with_vector"] and a["with_hist_sim"] == b["with_hist_sim"]
        )
        close = abs(a["hist_sim_sum"] - b["hist_sim_sum"]) <= 1e-6 * max(1.0, a["with_hist_sim"])
        out[run_dir] = (
            f"{a['engine']} and {b['engine']} agree (rows per split, rows with a vector and with a similarity; "
            f"similarity sums differ by {abs(a['hist_sim_sum'] - b['hist_sim_sum']):.2e})"
            if same and close
            else f"{a['engine']} and {b['engine']} DIFFER: {a} vs {b}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        config, run_dir, engine, out, record = argv[1:6]
        Path(record).write_text(json.dumps(build_child(config, Path(run_dir), engine, Path(out))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", action="append", required=True, type=Path, help="a sail run directory (repeatable)")
    p.add_argument("--config", default="large", help="the config whose [ranker] and [spark] settings apply")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        p.error(f"unknown engine(s) {unknown}; known: {list(ENGINES)}")
    for d in args.run_dir:
        for need in ("validate", "export/stage.json", "mine/mining.json"):
            if not (d / need).exists():
                p.error(f"{d}: not a run directory finished up to export (no {need})")
    machine = describe_machine("pyspark")
    rows = []
    for d in args.run_dir:
        scratch = d.resolve() / "work" / "bench-ranking-samples"
        for engine in engines:
            rows.append(measure(args.config, d.resolve(), engine, scratch))
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "benchmark": "ranking_samples",
        "machine": machine,
        "config": args.config,
        "runs": rows,
        "agreement": agreement(rows),
        "run_configs": {str(d): json.loads((d / "run.json").read_text()).get("config") for d in args.run_dir},
    }
    write_results(args.out, result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
