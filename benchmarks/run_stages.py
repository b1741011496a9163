"""Per-stage wall time and peak memory of a `sail run` directory, as a result file.

    python benchmarks/run_stages.py --run runs/large [--rss samples.tsv] --out benchmarks/results/large_run/stages.json

Reads every finished stage's `stage.json` (seconds; `peak_rss_mb` where the run recorded it) and the run's
`run.json` (commit, config). `--rss` adds a file of memory samples taken from outside the run (`<ISO time>\\t<bytes>`
per line, e.g. of the `sail run` process tree every 2 s) for runs that began before stages recorded their peak:
each stage's window is [end - seconds, end], its end the time its `stage.json` was written. The stage named by
--running is listed with the time from the previous stage's end until now (run this right after stopping it).
`--timed STAGE=FILE` lists a stage that ran by its own command on the run's outputs (`sail eval-retrieval --config`,
say) from that command's `/usr/bin/time -v` output (wall time, maximum resident set size, the command line).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from jobs.pipeline import STAGES  # noqa: E402


def _samples(path: Path | None) -> list[tuple[float, int]]:
    if path is None:
        return []
    out = []
    for line in path.read_text().splitlines():
        when, rss = line.split("\t")
        out.append((dt.datetime.fromisoformat(when).timestamp(), int(rss)))
    return out


def parse_time_v(text: str) -> dict:
    """Wall seconds, peak RSS (MB), the command and its exit status from GNU `/usr/bin/time -v` output."""
    fields = dict(line.strip().rsplit(": ", 1) for line in text.splitlines() if line.startswith("\t") and ": " in line)
    wall = [float(x) for x in fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")]
    seconds = sum(x * 60**i for i, x in enumerate(reversed(wall)))
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(int(fields["Maximum resident set size (kbytes)"]) / 1024),
        "command": fields["Command being timed"].strip('"'),
        "exit_status": int(fields["Exit status"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--rss", type=Path, default=None, help="memory samples taken outside the run (ISO time, bytes)")
    p.add_argument("--running", default=None, help="the stage running when the run was stopped (or still running)")
    p.add_argument("--timed", action="append", default=[], help="STAGE=FILE: a `/usr/bin/time -v` output")
    p.add_argument("--note", default="", help="a line for the Markdown (e.g. where and why the run was stopped)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    samples = _samples(args.rss)
    timed = {k: parse_time_v(Path(v).read_text()) for k, v in (t.split("=", 1) for t in args.timed)}
    run = json.loads((args.run / "run.json").read_text())
    rows, t_prev_end = [], None
    for stage in (s.name for s in STAGES):
        meta_path = args.run / stage / "stage.json"
        row: dict = {"stage": stage}
        if stage in timed:
            t = timed[stage]
            status = "done (own command)" if t["exit_status"] == 0 else f"failed ({t['exit_status']}, own command)"
            rows.append(row | t | {"status": status})
            continue
        if meta_path.exists() and (args.run / stage / "_SUCCESS").exists():
            meta = json.loads(meta_path.read_text())
            end = meta_path.stat().st_mtime
            start = end - float(meta["seconds"])
            row |= {"status": "skipped" if meta.get("skipped") else "done", "seconds": round(meta["seconds"], 1)}
            if meta.get("peak_rss_mb") is not None:
                row["peak_rss_mb"] = meta["peak_rss_mb"]
            t_prev_end = end
        elif stage == args.running and t_prev_end is not None:
            start, end = t_prev_end, dt.datetime.now(dt.UTC).timestamp()
            row |= {"status": "stopped or running", "seconds_so_far": round(end - start, 1)}
        else:
            rows.append(row | {"status": "not reached"})
            continue
        inside = [(t, b) for t, b in samples if start <= t <= end]
        if inside:
            row["peak_rss_mb_sampled"] = round(max(b for _, b in inside) / 2**20)
            row["sampled_from"] = dt.datetime.fromtimestamp(inside[0][0], dt.UTC).isoformat(timespec="seconds")
        rows.append(row)
    result = {
        "benchmark": "run_stages",
        "run_dir": str(args.run),
        "run": {"code": run.get("code"), "started": run.get("started"), "config": run.get("config")},
        "stages": rows,
        "note": args.note,
        "machine": describe_machine(),
    }
    lines = [
        f"# Stages of `{args.run}` (commit {str((run.get('code') or {}).get('commit'))[:7]})",
        "",
        *([args.note, ""] if args.note else []),
        "| stage | status | seconds | peak memory (MB) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        secs = r.get("seconds", r.get("seconds_so_far", ""))
        peak = r.get("peak_rss_mb", r.get("peak_rss_mb_sampled", ""))
        note = f" (sampled from {r['sampled_from']})" if "peak_rss_mb_sampled" in r and "peak_rss_mb" not in r else ""
        lines.append(f"| {r['stage']} | {r['status']} | {secs} | {peak}{note} |")
    lines += [f"\n{r['stage']}: `{r['command']}`" for r in rows if "command" in r]
    write_results(args.out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
