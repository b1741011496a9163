"""Benchmark: the ranker evaluation's paired cluster bootstrap on one thread and in threads, same run.

    python benchmarks/bootstrap_threads.py --ranker runs/large/ranker [--threads 1,2] [--n-boot 100]
        [--out benchmarks/results/bootstrap_threads.json]

Takes the test scores of a finished ranker stage (TorchRec control and +both, `<ranker>/torchrec/*/scores.npz`) and
times the two bootstrap calls that dominate its evaluation at scale, each with the fast path's thread count set to
every value of --threads in turn: `paired_bootstrap_diff(auc, ...)` (+both - control click AUC, user clusters) and
`slice_gain_difference` (the cold-item gain minus the gain elsewhere). The intervals must be identical for every
thread count (the resamples are drawn from the seed in order); the script checks it. Results: the JSON and its .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bootstrap_threads.json"


def main(argv: list[str] | None = None) -> int:
    import core.bootstrap as cb
    from core.metrics import auc

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranker", type=Path, required=True, help="a finished ranker stage directory")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    control = np.load(args.ranker / "torchrec" / "control" / "scores.npz")
    both = np.load(args.ranker / "torchrec" / "both" / "scores.npz")
    y, users, cold = control["test_label_click"], control["test_user"], control["test_cold"]
    if not (np.array_equal(y, both["test_label_click"]) and np.array_equal(users, both["test_user"])):
        raise ValueError(f"{args.ranker}: control and +both scored different test rows")
    a, b = control["test_click"].astype(np.float64), both["test_click"].astype(np.float64)
    machine = describe_machine("numpy")
    rows, results = [], {}
    for threads in (int(t) for t in args.threads.split(",")):
        cb.FAST_PATH_THREADS = threads
        t0 = time.perf_counter()
        diff = cb.paired_bootstrap_diff(auc, y, a, b, users, n_boot=args.n_boot, seed=0)
        t1 = time.perf_counter()
        gain = cb.slice_gain_difference(y, a, b, cold, users, n_boot=args.n_boot, seed=0)
        t2 = time.perf_counter()
        results[threads] = (diff, gain)
        rows.append({"threads": threads, "paired_auc_s": round(t1 - t0, 2), "slice_gain_s": round(t2 - t1, 2)})
        print(rows[-1], flush=True)
    first = next(iter(results.values()))
    same = all(r == first for r in results.values())
    if not same:
        raise AssertionError(f"the intervals differ between thread counts: {results}")
    diff, gain = first
    result = {
        "benchmark": "bootstrap_threads",
        "machine": machine,
        "ranker": str(args.ranker),
        "test_rows": int(y.shape[0]),
        "users": int(np.unique(users).shape[0]),
        "n_boot": args.n_boot,
        "timings": rows,
        "identical_intervals": same,
        "paired_auc_diff": [diff.diff.estimate, diff.diff.low, diff.diff.high],
        "cold_gain_minus_other": [gain.diff.estimate, gain.diff.low, gain.diff.high],
    }
    code = machine["code"]
    md = [
        "# The ranker evaluation's bootstrap in threads",
        "",
        f"Commit {code['commit']}{' (uncommitted changes)' if code['dirty'] else ''}; {machine['cores']} cores; "
        f"`{args.ranker}` test rows: {y.shape[0]:,}, users: {result['users']:,}; {args.n_boot} resamples each.",
        "",
        "| threads | paired AUC diff (s) | slice gain difference (s) |",
        "|---|---|---|",
        *[f"| {r['threads']} | {r['paired_auc_s']} | {r['slice_gain_s']} |" for r in rows],
        "",
        f"Intervals identical for every thread count: {same} (+both - control click AUC {diff.diff.estimate:+.4f} "
        f"[{diff.diff.low:+.4f}, {diff.diff.high:+.4f}]; cold gain - other {gain.diff.estimate:+.4f} "
        f"[{gain.diff.low:+.4f}, {gain.diff.high:+.4f}]).",
    ]
    write_results(args.out, result, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
