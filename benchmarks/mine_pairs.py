"""Benchmark: pair mining (i2i co-visitation + Swing, q2i, seq2item) with Spark and polars on synthetic logs.

    .venv/bin/python benchmarks/mine_pairs.py [--sizes 1M,5M,20M] [--engines polars,spark] [--work DIR]
    .venv/bin/python benchmarks/mine_pairs.py --data runs/demo/validate --out benchmarks/results/mine_pairs_small.json

For each size a synthetic log is generated with numpy (Zipf item popularity, heavy-tailed (Pareto) user
activity, sessions with exponential gaps, ~35-40% positive impressions, searches = 10% of the interactions),
then each engine runs `python -m mining.mine_pairs` in a subprocess with the default mining config. Reported per
(size, engine): wall time of the whole process, mining time (`mining.json`'s seconds; for Spark also without the
session start) and the seconds of each of its phases, events/s, and peak RSS of the process tree (the Python
process plus the Spark JVM and any other children), sampled every 0.2 s with psutil (or /proc). Derived: the
5M/1M and 20M/5M time ratios per engine and the Spark/polars time ratio at the largest size. Results go to
benchmarks/results/mine_pairs.json with a machine description (CPU, cores, memory, load average before and
after: the machine may be shared).
With `--data DIR` the engines mine that data set instead (a directory with `interactions/` and `searches/`, e.g.
a `sail run`'s `validate/`); `--repeat N` runs each engine N times on it, each run a fresh process (Spark's
session start is in every run and reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine, run_measured  # noqa: E402
from core import contracts as K  # noqa: E402
from core.io import write_table  # noqa: E402
from core.spark_session import local_shuffle_partitions  # noqa: E402

START = datetime(2025, 3, 3, tzinfo=UTC)
DAYS = 30


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "KM" else s) * mult)


def synthetic_log(n: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """n interactions and n / 10 searches (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(1000, n // 25), max(5000, n // 50)
    # heavy-tailed activity: Pareto weights; Zipf(1.05) popularity over item ranks (a random id per rank)
    w_user = rng.pareto(1.2, n_users) + 0.05
    users = np.sort(rng.choice(n_users, n, p=w_user / w_user.sum())).astype(np.int64) + 1
    ranks = np.arange(1, n_items + 1, dtype=np.float64) ** -1.05
    item_of_rank = rng.permutation(n_items).astype(np.int64) + 1
    items = item_of_rank[rng.choice(n_items, n, p=ranks / ranks.sum())]
    # sessions: a new one at a user's first event or with prob 0.12; a session starts at a random time of the
    # log, events within it follow with exponential gaps (mean 90 s)
    first = np.r_[True, users[1:] != users[:-1]]
    new = first | (rng.random(n) < 0.12)
    sess = np.cumsum(new) - 1
    sess_start = rng.integers(0, DAYS * 86400, sess[-1] + 1)
    gaps = rng.exponential(90.0, n)
    gaps[new] = 0.0
    cum = np.cumsum(gaps)
    offset = cum - cum[np.flatnonzero(new)][sess]
    ts_us = (int(START.timestamp()) + sess_start[sess] + offset).astype(np.int64) * 1_000_000
    clicked = rng.random(n) < 0.55
    watch = np.where(clicked, rng.exponential(9000.0, n), rng.exponential(800.0, n)).astype(np.int64)
    ids = pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
    inter = pa.table(
        {
            "event_id": ids,
            "request_id": ids,
            "user_id": users,
            "item_id": items,
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "surface": pa.array(np.full(n, "feed", dtype=object), pa.string()),
            "position": pa.array(rng.integers(0, 5, n).astype(np.int32)),
            "propensity": np.full(n, 0.2),
            "clicked": clicked,
            "watch_ms": watch,
            "finished": clicked & (rng.random(n) < 0.3),
            "liked": clicked & (rng.random(n) < 0.08),
            "shared": clicked & (rng.random(n) < 0.02),
        },
        schema=K.INTERACTIONS.to_arrow(),
    )
    m = max(1000, n // 10)
    vocab = np.array([f"query {i}" for i in range(max(500, m // 200))], dtype=object)
    q_rank = np.arange(1, len(vocab) + 1, dtype=np.float64) ** -1.0
    q = rng.choice(len(vocab), m, p=q_rank / q_rank.sum())
    sids = pc.cast(pa.array(np.arange(m, dtype=np.int64)), pa.string())
    searches = pa.table(
        {
            "event_id": sids,
            "search_id": sids,
            "user_id": rng.integers(1, n_users + 1, m),
            "ts": pa.array(
                (int(START.timestamp()) + rng.integers(0, DAYS * 86400, m)) * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "query": pa.array(vocab[q], pa.string()),
            "item_id": item_of_rank[(q * 7 + rng.integers(0, 20, m)) % n_items],  # each query has ~20 items
            "position": pa.array(rng.integers(0, 10, m).astype(np.int32)),
            "clicked": rng.random(m) < 0.25,
        },
        schema=K.SEARCHES.to_arrow(),
    )
    return inter, searches


def label(n: int) -> str:
    """1000000 -> '1M', 200000 -> '200K'."""
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K" if n % 1000 == 0 else str(n)


def run_engine(engine: str, data: Path, out: Path, spark_args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "mining.mine_pairs", "--engine", engine, "--data", str(data), "--out", str(out)]
    if engine == "spark":
        cmd += spark_args
    run = run_measured(cmd, cwd=ROOT)
    wall, peak = run.seconds, run.peak_rss
    if run.returncode != 0:
        raise RuntimeError(f"{engine} failed ({run.returncode}):\n{run.stderr[-4000:]}")
    counts = json.loads((out / "mining.json").read_text())
    mine_s = counts["seconds"]
    start_s = counts.get("spark_start_s", 0.0)
    return {
        "wall_s": round(wall, 2),
        "mine_s": round(mine_s, 2),
        "spark_start_s": round(start_s, 2) if engine == "spark" else None,
        "mine_s_excl_start": round(mine_s - start_s, 2),
        "peak_rss_gb": round(peak / 2**30, 2),
        "positive_events": counts["positive_events"],
        "pairs": counts["pairs"],
        "phase_seconds": counts["phase_seconds"],
    }


def machine() -> dict:
    return describe_machine("polars", "pyspark")


def summarise(results: dict, sizes: list[int], engines: list[str], out: str) -> dict:
    """Adds the time ratios and the load average to `results` and writes them (called after every run)."""
    results["load_average_after"] = os.getloadavg()
    t = {(r["engine"], r["interactions"]): r["mine_s"] for r in results["runs"]}
    ratios: dict = {}
    for e in engines:
        for a, b in zip(sizes, sizes[1:], strict=False):
            if (e, a) in t and (e, b) in t:
                ratios[f"{e}_time_{label(b)}_over_{label(a)}"] = round(t[(e, b)] / t[(e, a)], 2)
    done = [n for n in sizes if ("spark", n) in t and ("polars", n) in t]
    if done:
        big = max(done)
        ratios[f"spark_over_polars_at_{label(big)}"] = round(t[("spark", big)] / t[("polars", big)], 2)
    results["ratios"] = ratios
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return ratios


def _setup(args: argparse.Namespace, **fields) -> tuple[list[str], list[str], Path, dict]:
    """engines, the Spark arguments, the scratch directory and the result header (with `fields`) of a run."""
    engines = [e.strip() for e in args.engines.split(",")]
    spark_args = ["--driver-memory", args.driver_memory]
    if args.shuffle_partitions:
        spark_args += ["--shuffle-partitions", str(args.shuffle_partitions)]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-mine-"))
    results: dict = {
        "benchmark": "mine_pairs",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": os.getloadavg(),
        **fields,
        "config": "MiningConfig defaults (covisit window 5 / 1 h / top-20, Swing caps 50 items/user, 100 users/item)",
        "spark": {
            "master": "local[*]",
            "--shuffle-partitions": str(args.shuffle_partitions or local_shuffle_partitions()),
            **dict(zip(spark_args[::2], spark_args[1::2], strict=True)),
        },
        "runs": [],
    }
    return engines, spark_args, work, results


def mine_dataset(args: argparse.Namespace) -> int:
    """Each engine `--repeat` times over the existing data set `--data`; one result per run."""
    from mining.mine_pairs import scan_contract_table

    for table in ("interactions", "searches"):
        if not (args.data / table).is_dir():
            raise SystemExit(f"{args.data}: no {table}/ table (pass a data set such as a run's validate/)")
    n = scan_contract_table(args.data / "interactions", K.INTERACTIONS).select(pl.len()).collect().item()
    engines, spark_args, work, results = _setup(args, data=str(args.data), interactions=n)
    try:
        for i in range(args.repeat):
            for engine in engines:
                r = run_engine(engine, args.data, work / f"out_{engine}_{i}", spark_args)
                r.update(engine=engine, run=i + 1, interactions=n, events_per_s=round(n / r["mine_s"]))
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
                shutil.rmtree(work / f"out_{engine}_{i}", ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    best = {e: min(r["wall_s"] for r in results["runs"] if r["engine"] == e) for e in engines}
    results["best_wall_s"] = best
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(best))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1M,5M,20M", help="comma-separated interaction counts, e.g. 200K,1M")
    p.add_argument("--engines", default="polars,spark")
    p.add_argument("--spark-max", default=None, help="skip Spark above this size (e.g. 5M) when time is short")
    p.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed after)")
    p.add_argument("--driver-memory", default="12g", help="Spark driver memory (local mode)")
    p.add_argument(
        "--shuffle-partitions", type=int, default=None, help="Spark shuffle partitions (default: the job's, 4 per core)"
    )
    p.add_argument("--data", type=Path, default=None, help="mine this data set instead of synthetic logs")
    p.add_argument("--repeat", type=int, default=1, help="runs per engine on --data")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mine_pairs.json"))
    args = p.parse_args(argv)
    if args.data is not None:
        return mine_dataset(args)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    engines, spark_args, work, results = _setup(args)
    try:
        for n in sizes:
            data = work / f"data_{n}"
            t0 = time.perf_counter()
            inter, searches = synthetic_log(n)
            write_table(inter, K.INTERACTIONS, data / "interactions")
            write_table(searches, K.SEARCHES, data / "searches")
            gen_s = time.perf_counter() - t0
            del inter, searches
            print(f"[{n:,}] generated in {gen_s:.1f} s", flush=True)
            for engine in engines:
                if engine == "spark" and args.spark_max and n > parse_size(args.spark_max):
                    print(f"[{n:,}] spark skipped (--spark-max {args.spark_max})", flush=True)
                    continue
                r = run_engine(engine, data, work / f"out_{engine}_{n}", spark_args)
                r.update(engine=engine, interactions=n, generate_s=round(gen_s, 2))
                r["events_per_s"] = round(n / r["mine_s"])
                r["events_per_s_excl_start"] = round(n / max(r["mine_s_excl_start"], 1e-9))
                results["runs"].append(r)
                summarise(results, sizes, engines, args.out)
                print(json.dumps(r), flush=True)
                shutil.rmtree(work / f"out_{engine}_{n}", ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios = summarise(results, sizes, engines, args.out)
    print(json.dumps(ratios, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
