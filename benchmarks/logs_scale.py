"""The own-logs data stage on a large CSV log: wall time and peak memory against a plain pandas read of the same file.

    python benchmarks/logs_scale.py --rows 10000000            # writes benchmarks/results/logs_scale/<rows>.json/.md

It writes a synthetic retailer-style log (a 16-character hex customer id, an article id with leading zeros, an ISO
day, an event type: views and purchases) and catalogue once under --work, then runs, each in its own process:

- `adapt-whole`: `sources.logs.adapt_logs` on it (purchases are positives, views logged non-positives; no sampled
  negatives), every contract table written, the log processed as one part (`rows_per_part` above its rows);
- `adapt-parts`: the same with `rows_per_part` = --rows-per-part: the log split into parts of whole users, spilled
  to parquet and processed one at a time (the same tables);
- `pandas`: `pandas.read_csv` of the same file with the same columns as text (the simpler peer: reading only,
  nothing checked, mapped or written).

Each process's peak resident memory comes from `resource.getrusage(RUSAGE_SELF).ru_maxrss` as it exits; the file's
size and both peaks are in the result, with the machine and commit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

N_ITEMS = 100_000
N_USERS_PER_ROW = 0.02  # users per log row
DAYS = 180


def write_log(work: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """transactions.csv (rows) and articles.csv (N_ITEMS) under `work`, written in chunks (bounded memory)."""
    import numpy as np
    import polars as pl

    work.mkdir(parents=True, exist_ok=True)
    log, cat = work / f"events-{rows}.csv", work / "articles.csv"
    if not cat.exists():
        ids = [f"0{108775015 + 7 * k:09d}" for k in range(N_ITEMS)]
        pl.DataFrame(
            {"article_id": ids, "prod_name": [f"Article {k % 977} in colour {k % 31}" for k in range(N_ITEMS)]}
        ).write_csv(cat)
    if log.exists():
        return log, cat
    rng = np.random.default_rng(seed)
    n_users = max(1, int(rows * N_USERS_PER_ROW))
    tmp = log.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(b"t_dat,customer_id,article_id,event\n")
        chunk = 1_000_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = rng.integers(0, n_users, n)
            items = np.minimum(rng.zipf(1.3, n) - 1, N_ITEMS - 1)
            days = rng.integers(0, DAYS, n)
            df = pl.DataFrame({"u": users, "i": items, "d": days, "p": rng.random(n) < 0.1}).select(
                (pl.lit("2024-01-01").str.to_date() + pl.duration(days=pl.col("d"))).cast(pl.String).alias("t_dat"),
                pl.col("u").hash(seed=7).cast(pl.String).str.slice(0, 16).alias("customer_id"),
                pl.format("0{}", (pl.col("i") * 7 + 108775015).cast(pl.String)).alias("article_id"),
                pl.when(pl.col("p")).then(pl.lit("purchase")).otherwise(pl.lit("view")).alias("event"),
            )
            df.write_csv(f, include_header=False)
    tmp.rename(log)
    return log, cat


def _child_adapt(log: str, cat: str, out: str, rows_per_part: int) -> dict:
    from sources.logs import InteractionsMapping, ItemsMapping, LogsMapping, PositivesMapping, adapt_logs

    m = LogsMapping(
        name="bench",
        root=str(Path(log).parent),
        interactions=InteractionsMapping(
            path=Path(log).name, user="customer_id", item="article_id", time="t_dat", time_unit="date", event="event"
        ),
        items=ItemsMapping(path=Path(cat).name, item="article_id", title=("prod_name",)),
        positives=PositivesMapping(event_types=("purchase",)),
        rows_per_part=rows_per_part,
    )
    res = adapt_logs(m, out, holdout_frac=0.2, echo=lambda _: None)
    return {"interactions": res.counts["interactions"], "positives": res.counts["positives"]}


def _child_pandas(log: str, cat: str, out: str) -> dict:  # noqa: ARG001
    import pandas as pd

    df = pd.read_csv(log, dtype=str)
    return {"rows": len(df)}


def child(kind: str, log: str, cat: str, out: str) -> None:
    t0 = time.perf_counter()
    # kind: "pandas" or "adapt-<rows per part>"
    info = _child_pandas(log, cat, out) if kind == "pandas" else _child_adapt(log, cat, out, int(kind.split("-")[1]))
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kind": kind, "seconds": seconds, "peak_rss_mib": peak_kib / 1024, **info}))


def run_child(kind: str, log: Path, cat: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(log), str(cat), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "logs_scale")
    p.add_argument("--rows-per-part", type=int, default=2_000_000, help="adapt-parts: rows per part")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/logs_scale/)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    t0 = time.perf_counter()
    log, cat = write_log(args.work, args.rows)
    write_s = time.perf_counter() - t0
    kinds = {"pandas": "pandas", "adapt-whole": f"adapt-{args.rows + 1}", "adapt-parts": f"adapt-{args.rows_per_part}"}
    runs = {name: run_child(kind, log, cat, args.work / f"out-{name}") for name, kind in kinds.items()}
    size_mib = log.stat().st_size / 2**20
    result = {
        "benchmark": "logs_scale",
        "rows": args.rows,
        "file_mib": round(size_mib, 1),
        "write_seconds": round(write_s, 1),
        "runs": runs,
        "rows_per_part": args.rows_per_part,
        "over_pandas": {
            name: {
                "seconds": runs[name]["seconds"] / runs["pandas"]["seconds"],
                "peak_rss": runs[name]["peak_rss_mib"] / runs["pandas"]["peak_rss_mib"],
            }
            for name in ("adapt-whole", "adapt-parts")
        },
        "machine": describe_machine("polars", "pandas"),
    }
    a, b, pd_ = runs["adapt-whole"], runs["adapt-parts"], runs["pandas"]
    parts = -(-args.rows // args.rows_per_part)
    md = "\n".join(
        [
            f"# Own-logs data stage on a {args.rows:,}-row CSV ({size_mib:,.0f} MiB)",
            "",
            f"Commit {str(result['machine']['code']['commit'])[:7]}; {result['machine']['cores']} cores, "
            f"{result['machine']['ram_gib']} GiB. Each run in its own process; peak = max resident memory.",
            "",
            "| run | what it does | seconds | peak MiB | peak / file size |",
            "|---|---|---|---|---|",
            f"| pandas.read_csv (dtype=str) | reads the file | {pd_['seconds']:.1f} | {pd_['peak_rss_mib']:,.0f} | "
            f"{pd_['peak_rss_mib'] / size_mib:.2f} |",
            "| sources.logs.adapt_logs, one part | reads, checks, maps ids and times, sessions, writes the contracts "
            f"| "
            f"{a['seconds']:.1f} | {a['peak_rss_mib']:,.0f} | {a['peak_rss_mib'] / size_mib:.2f} |",
            f"| sources.logs.adapt_logs, {parts} parts of {args.rows_per_part:,} rows | the same, part by part | "
            f"{b['seconds']:.1f} | {b['peak_rss_mib']:,.0f} | {b['peak_rss_mib'] / size_mib:.2f} |",
            "",
            f"One part / pandas: {result['over_pandas']['adapt-whole']['seconds']:.2f}x the time, "
            f"{result['over_pandas']['adapt-whole']['peak_rss']:.2f}x the peak memory; {parts} parts / pandas: "
            f"{result['over_pandas']['adapt-parts']['seconds']:.2f}x, "
            f"{result['over_pandas']['adapt-parts']['peak_rss']:.2f}x "
            f"({a['interactions']:,} interactions written, {a['positives']:,} positives; both runs write the same "
            f"{b['interactions']:,}).",
            "",
        ]
    )
    out = args.out or ROOT / "benchmarks" / "results" / "logs_scale" / f"{args.rows}.json"
    write_results(out, result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
