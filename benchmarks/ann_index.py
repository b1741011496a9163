"""Benchmark of the ANN index: recall@50 and queries per second of HNSW and IVF against exact search.

    python benchmarks/ann_index.py [--n 100000] [--dims 128] [--queries 1000] [--out benchmarks/results/ann_index.json]

Data sets (seeded, L2-normalised, inner product): 'clustered', a mixture of Gaussian clusters (item vectors cluster
by topic), and 'gaussian', isotropic random vectors (no structure: the hardest case for an ANN index). Exact search
(`IndexFlatIP`) is the reference and the simpler peer; each index is built once and evaluated with
`embedding.ann.evaluate_ann` on the same query sample (queries are indexed items).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402
from embedding.ann import build_ann_index, evaluate_ann, normalise  # noqa: E402


def machine() -> dict:
    import faiss

    return describe_machine("faiss", faiss_threads=faiss.omp_get_max_threads())


def make_vectors(kind: str, n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return normalise(rng.standard_normal((n, d)).astype(np.float32))
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return normalise(x)


def run_dataset(dataset: str, x: np.ndarray, args: argparse.Namespace) -> list[dict]:
    import faiss

    ids = np.arange(len(x), dtype=np.int64)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    runs = []
    for kind, build_kw, sweep_key, sweep in (
        ("hnsw", {"m": 32, "ef_construction": 40}, "ef_search", [32, 64, 128]),
        ("ivf", {"nlist": 1024}, "nprobe", [8, 16, 32]),
    ):
        t0 = time.perf_counter()
        index = build_ann_index(x, ids, kind, model_version="bench", **build_kw)
        build_s = time.perf_counter() - t0
        for value in sweep:
            index.set_search_params(**{sweep_key: value})
            res = evaluate_ann(
                index, x, sample=args.queries, k=50, seed=args.seed, single_queries=args.single_queries, exact=exact
            )
            res.update(dataset=dataset, build_seconds=round(build_s, 2))
            runs.append(res)
            print(
                f"{dataset} {kind} {sweep_key}={value}: recall@50 {res['recall_at_50']:.4f}  "
                f"single {res['qps_single']:.0f} q/s  batch {res['qps_batch']:.0f} q/s  "
                f"(exact: {res['exact_qps_single']:.0f} / {res['exact_qps_batch']:.0f} q/s)  build {build_s:.1f} s",
                flush=True,
            )
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single-queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", default="clustered,gaussian", help="comma-separated: clustered, gaussian")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ann_index.json")
    args = ap.parse_args(argv)

    report = {"benchmark": "ann_index", "date": dt.datetime.now(dt.UTC).isoformat(), "machine": machine()}
    runs = []
    for dataset in args.datasets.split(","):
        x = make_vectors(dataset, args.n, args.dims, args.clusters, args.seed)
        runs += run_dataset(dataset, x, args)
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
