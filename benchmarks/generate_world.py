"""Benchmark of the world generator: wall time, rows written and peak memory per size.

    python benchmarks/generate_world.py --sizes small,large [--seed 7] [--out benchmarks/results/generate_world.json]

Each size runs in a child process (so peak memory is that size's own) generating into a temporary directory;
the parent samples the resident memory of the child's whole process tree (media workers included) every 0.2 s,
and the child reports its own `ru_maxrss`. Results go to a JSON file with the machine description.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402


def _child(size: str, seed: int, out: str) -> None:
    sys.path.insert(0, str(ROOT))
    from sources.world import WorldConfig, generate_world

    result = generate_world(WorldConfig.for_size(size, seed=seed), Path(out))
    print(
        json.dumps(
            {
                "seconds": round(result.seconds, 2),
                "stage_seconds": result.stage_seconds,
                "rows": result.counts,
                "ru_maxrss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "ru_maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            }
        )
    )


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (0 once gone)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_size(size: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"world-{size}-") as tmp:
        out = Path(tmp) / "world"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", size, "--seed", str(seed), "--child-out", str(out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, _ = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"generation of size {size!r} failed with exit code {proc.returncode}")
        child = json.loads(stdout.strip().splitlines()[-1])
        on_disk = _du(out)
    impressions = child["rows"]["interactions"]
    return {
        "size": size,
        "seed": seed,
        "wall_seconds_incl_process_start": round(wall, 2),
        "generation_seconds": child["seconds"],
        "stage_seconds": child["stage_seconds"],
        "rows": child["rows"],
        "impressions_per_second": round(impressions / child["seconds"]),
        "peak_rss_tree_mb_sampled": round(peak[0] / 1024, 1),
        "peak_rss_generator_mb": child["ru_maxrss_self_mb"],
        "peak_rss_media_workers_mb": child["ru_maxrss_children_mb"],
        "bytes_on_disk": on_disk,
    }


def machine() -> dict:
    return describe_machine()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,large", help="comma-separated sizes (tiny, small, large)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generate_world.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.seed, args.child_out)
        return
    report = {"benchmark": "generate_world", "date": dt.datetime.now(dt.UTC).isoformat(), "machine": machine()}
    runs = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        print(f"generating {size} ...", file=sys.stderr, flush=True)
        runs.append(run_size(size, args.seed))
        print(json.dumps(runs[-1], indent=2), file=sys.stderr, flush=True)
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
