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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine, dir_bytes, run_measured  # noqa: E402


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


def run_size(size: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"world-{size}-") as tmp:
        out = Path(tmp) / "world"
        run = run_measured(
            [sys.executable, __file__, "--child", size, "--seed", str(seed), "--child-out", str(out)], cwd=ROOT
        )
        wall = run.seconds
        if run.returncode != 0:
            raise RuntimeError(
                f"generation of size {size!r} failed with exit code {run.returncode}:\n{run.stderr[-4000:]}"
            )
        child = json.loads(run.stdout.strip().splitlines()[-1])
        on_disk = dir_bytes(out)
    impressions = child["rows"]["interactions"]
    return {
        "size": size,
        "seed": seed,
        "wall_seconds_incl_process_start": round(wall, 2),
        "generation_seconds": child["seconds"],
        "stage_seconds": child["stage_seconds"],
        "rows": child["rows"],
        "impressions_per_second": round(impressions / child["seconds"]),
        "peak_rss_tree_mb_sampled": round(run.peak_rss / 2**20, 1),
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
