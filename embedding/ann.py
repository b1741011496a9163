"""Approximate nearest-neighbour index over item vectors (faiss), with an id map and the model version.

Notation: N items, Q queries, D dims, k neighbours.

Vectors are L2-normalised and searched by inner product (= cosine). Kinds:
- 'hnsw': `IndexHNSWFlat(D, M)` (M=32 by default), `ef_search` set at search time;
- 'ivf': `IndexIVFFlat` over an exact inner-product coarse quantiser with `nlist` lists, `nprobe` probed;
- 'flat': exact `IndexFlatIP` (the reference).
Row i of the faiss index is item `ids[i]`. `save` writes `index.faiss` (faiss.write_index), `ids.npy` and
`meta.json` (kind, parameters, model_version) into one directory atomically (with `_SUCCESS`).

`evaluate_ann` compares an index against exact search on a sample of the items as queries: recall@k and queries
per second, one query at a time and in one batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.io import atomic_dir, write_json_atomic

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
META_FILE = "meta.json"

AnnKind = Literal["hnsw", "ivf", "flat"]


def normalise(x: np.ndarray) -> np.ndarray:
    """A float32, C-contiguous, row-L2-normalised copy of `x` (N, D)."""
    import faiss

    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"vectors must have shape (N, D), got {x.shape}")
    faiss.normalize_L2(x)
    return x


@dataclass
class AnnIndex:
    """A faiss index whose row i is item `ids[i]`."""

    index: Any  # faiss.Index
    ids: np.ndarray  # (N,) int64
    kind: AnnKind
    model_version: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # M, ef_search, ef_construction, nlist, nprobe

    def __post_init__(self) -> None:
        self.apply_search_params()

    def apply_search_params(self) -> None:
        import faiss

        if self.kind == "hnsw" and "ef_search" in self.params:
            faiss.downcast_index(self.index).hnsw.efSearch = int(self.params["ef_search"])
        if self.kind == "ivf" and "nprobe" in self.params:
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])

    def set_search_params(self, **params: Any) -> None:
        """Changes `ef_search` (hnsw) or `nprobe` (ivf) for later searches."""
        self.params.update(params)
        self.apply_search_params()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries (normalised here) -> (scores (Q, k), item ids (Q, k); -1 where fewer than k found)."""
        scores, rows = self.index.search(normalise(queries), k)
        return scores, np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def save(self, path: str | os.PathLike) -> Path:
        import faiss

        with atomic_dir(path) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            np.save(tmp / IDS_FILE, self.ids.astype(np.int64), allow_pickle=False)
            write_json_atomic(
                tmp / META_FILE,
                {
                    "kind": self.kind,
                    "model_version": self.model_version,
                    "params": self.params,
                    "count": int(self.index.ntotal),
                    "dims": int(self.index.d),
                    "metric": "inner_product_on_l2_normalised",
                },
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AnnIndex:
        import faiss

        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        ids = np.load(path / IDS_FILE, allow_pickle=False)
        index = faiss.read_index(str(path / INDEX_FILE))
        if index.ntotal != len(ids):
            raise ValueError(f"{path}: index holds {index.ntotal} vectors but the id map {len(ids)}")
        return cls(index, ids, meta["kind"], meta["model_version"], meta["params"])


def build_ann_index(
    emb: np.ndarray,
    ids: np.ndarray,
    kind: AnnKind = "hnsw",
    *,
    model_version: str = "",
    m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    nlist: int | None = None,
    nprobe: int = 16,
    seed: int = 0,
) -> AnnIndex:
    """Builds an inner-product index over the L2-normalised `emb` (N, D); row i is item `ids[i]`.

    nlist (ivf): lists; None picks about 4 * sqrt(N), at most N // 39 (faiss wants >= 39 points per list).
    """
    import faiss

    x = normalise(emb)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        params: dict[str, Any] = {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        params = {"M": m, "ef_construction": ef_construction, "ef_search": ef_search}
    elif kind == "ivf":
        nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        params = {"nlist": nlist, "nprobe": min(nprobe, nlist)}
    else:
        raise ValueError(f"kind must be 'hnsw', 'ivf' or 'flat', got {kind!r}")
    index.add(x)
    return AnnIndex(index, ids, kind, model_version, params)


def _qps(fn, n_queries: int) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return n_queries / dt if dt > 0 else float("inf")


def evaluate_ann(
    index: AnnIndex,
    emb: np.ndarray,
    sample: int = 1000,
    k: int = 50,
    seed: int = 0,
    single_queries: int = 200,
    exact: Any = None,
) -> dict[str, Any]:
    """Recall@k of `index` against exact inner-product search, and QPS (single-query loop and one batch).

    emb: the indexed vectors (rows in the same order as `index.ids`); `sample` of them are the queries.
    exact: a prebuilt `faiss.IndexFlatIP` over the normalised `emb`, to share between evaluations.
    """
    import faiss

    x = normalise(emb)
    if exact is None:
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(x)
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    _, truth = exact.search(q, k)  # (Q, k) rows
    _, got = index.index.search(q, k)  # (Q, k) rows
    hits = [len(set(t[t >= 0]) & set(g[g >= 0])) / max(1, (t >= 0).sum()) for t, g in zip(truth, got, strict=True)]
    n_single = min(single_queries, len(q))

    def loop(idx) -> None:
        for i in range(n_single):
            idx.search(q[i : i + 1], k)

    return {
        "kind": index.kind,
        "params": dict(index.params),
        "model_version": index.model_version,
        "n_items": int(len(x)),
        "dims": int(x.shape[1]),
        "queries": int(len(q)),
        "k": k,
        f"recall_at_{k}": float(np.mean(hits)),
        "qps_single": _qps(lambda: loop(index.index), n_single),
        "qps_batch": _qps(lambda: index.index.search(q, k), len(q)),
        "exact_qps_single": _qps(lambda: loop(exact), n_single),
        "exact_qps_batch": _qps(lambda: exact.search(q, k), len(q)),
        "faiss_threads": faiss.omp_get_max_threads(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`sail build-ann`: ITEM_EMBEDDINGS -> a saved index directory plus its evaluation (index_report.json)."""
    from embedding.batch_infer import read_embeddings

    p = argparse.ArgumentParser(prog="sail build-ann", description="Build and evaluate an ANN index over items.")
    p.add_argument("--embeddings", required=True, type=Path, help="ITEM_EMBEDDINGS table directory")
    p.add_argument("--out", required=True, type=Path, help="index directory (index.faiss, ids.npy, meta.json)")
    p.add_argument("--kind", choices=["hnsw", "ivf", "flat"], default="hnsw")
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--eval-sample", type=int, default=1000)
    args = p.parse_args(argv)
    emb = read_embeddings(args.embeddings)
    index = build_ann_index(
        emb.vectors,
        emb.ids,
        args.kind,
        model_version=emb.model_version,
        ef_search=args.ef_search,
        nlist=args.nlist,
        nprobe=args.nprobe,
    )
    index.save(args.out)
    report = evaluate_ann(index, emb.vectors, sample=args.eval_sample)
    write_json_atomic(Path(f"{str(args.out).rstrip('/')}.report.json"), report)
    print(json.dumps(report, indent=2))
    return 0
