"""Semantic IDs: residual k-means codes for item vectors (the hierarchical sparse IDs of SAIL's downstream use).

Notation: N items, D dims, L levels, K codes per level.

Level 1 clusters the vectors into K centroids; level l clusters what the previous levels left unexplained (the
residual). An item's semantic ID is its L code indices, coarse to fine; `decode` sums the chosen centroids.
Training uses `faiss.Kmeans` with a fixed seed, so a fit is reproducible. K is capped at N (with a warning) when
the catalogue is smaller than the codebook.

Codebooks are saved as safetensors (`codebooks.safetensors`, tensor "codebooks" (L, K, D)) with a JSON sidecar
(`rq.json`: model_version, levels, K, seed, ...); loading never executes pickled code.

`quantisation_report` gives code usage per level (share of codes used, entropy, perplexity), collisions (items
whose full code is shared) and reconstruction error (MSE, and relative to the data's variance).
`code_cluster_agreement` measures how often items of one ground-truth cluster share a level's code, against chance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.contracts import ITEM_FEATURES
from core.io import atomic_dir, write_json_atomic, write_table

log = logging.getLogger(__name__)

CODEBOOKS_FILE = "codebooks.safetensors"
SIDECAR_FILE = "rq.json"
FORMAT = "sail-rq-v1"


@dataclass
class ResidualQuantizer:
    """L codebooks of K centroids each, applied to residuals in turn."""

    codebooks: np.ndarray  # (L, K, D) float32
    model_version: str = ""  # version of the embedding model the codebooks were trained on
    seed: int = 0
    niter: int = 0
    requested_codebook_size: int = 0  # K asked for (K actually used is codebooks.shape[1])

    @property
    def levels(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dims(self) -> int:
        return int(self.codebooks.shape[2])

    def encode(self, emb: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, L) int32 codes: greedy nearest centroid on each level's residual."""
        import faiss

        x = _as_matrix(emb, self.dims)
        codes = np.empty((len(x), self.levels), dtype=np.int32)
        residual = x.copy()
        for level in range(self.levels):
            index = faiss.IndexFlatL2(self.dims)
            index.add(np.ascontiguousarray(self.codebooks[level]))
            _, nearest = index.search(residual, 1)  # (N, 1)
            codes[:, level] = nearest[:, 0]
            residual -= self.codebooks[level][nearest[:, 0]]
        return codes

    def decode(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        """(N, L) codes -> (N, D) reconstruction, the sum of the chosen centroids (of the first `levels` levels)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"codes must have shape (N, {self.levels}), got {codes.shape}")
        out = np.zeros((len(codes), self.dims), dtype=np.float32)
        for level in range(self.levels if levels is None else levels):
            out += self.codebooks[level][codes[:, level]]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Writes `codebooks.safetensors` + `rq.json` into directory `path` (atomically, with `_SUCCESS`)."""
        from safetensors.numpy import save_file

        with atomic_dir(path) as tmp:
            save_file({"codebooks": np.ascontiguousarray(self.codebooks, dtype=np.float32)}, str(tmp / CODEBOOKS_FILE))
            write_json_atomic(
                tmp / SIDECAR_FILE,
                {
                    "format": FORMAT,
                    "model_version": self.model_version,
                    "levels": self.levels,
                    "codebook_size": self.codebook_size,
                    "requested_codebook_size": self.requested_codebook_size,
                    "dims": self.dims,
                    "seed": self.seed,
                    "niter": self.niter,
                },
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResidualQuantizer:
        """Reads what `save` wrote; raises ValueError when the sidecar and the tensor disagree."""
        from safetensors.numpy import load_file

        path = Path(path)
        meta = json.loads((path / SIDECAR_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / SIDECAR_FILE}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
        codebooks = load_file(str(path / CODEBOOKS_FILE))["codebooks"]
        want = (meta["levels"], meta["codebook_size"], meta["dims"])
        if codebooks.shape != want:
            raise ValueError(f"{path}: codebooks have shape {codebooks.shape}, the sidecar says {want}")
        return cls(codebooks, meta["model_version"], meta["seed"], meta["niter"], meta["requested_codebook_size"])


def _as_matrix(emb: np.ndarray, dims: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
    if x.ndim != 2 or (dims is not None and x.shape[1] != dims):
        raise ValueError(f"embeddings must have shape (N, {dims or 'D'}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or infinite values")
    return x


def fit_rq(
    emb: np.ndarray,
    levels: int = 3,
    codebook_size: int = 256,
    seed: int = 0,
    niter: int = 20,
    model_version: str = "",
) -> ResidualQuantizer:
    """Residual k-means: `levels` codebooks of `codebook_size` centroids, each fitted on the previous residual.

    K is capped at N with a warning when there are fewer vectors than codes. Deterministic under `seed`.
    """
    import faiss

    x = _as_matrix(emb)
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot fit semantic-ID codebooks on 0 vectors")
    if levels < 1 or codebook_size < 1:
        raise ValueError(f"levels and codebook_size must be >= 1, got {levels} and {codebook_size}")
    k = min(codebook_size, n)
    if k < codebook_size:
        msg = f"codebook size capped from {codebook_size} to {k}: only {n} vectors to cluster"
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    codebooks = np.zeros((levels, k, d), dtype=np.float32)
    residual = x.copy()
    for level in range(levels):
        km = faiss.Kmeans(d, k, niter=niter, seed=seed + level, verbose=False, min_points_per_centroid=1)
        km.train(residual)
        codebooks[level] = km.centroids
        _, nearest = km.index.search(residual, 1)  # (N, 1)
        residual -= km.centroids[nearest[:, 0]]
    return ResidualQuantizer(codebooks, model_version, seed, niter, codebook_size)


# --------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------


def code_usage(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per level: codes used (count, share of K), entropy in bits, perplexity (2**entropy) and its share of K."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
        out.append(
            {
                "level": level + 1,
                "codes_used": int((counts > 0).sum()),
                "usage": float((counts > 0).sum() / codebook_size),
                "entropy_bits": entropy,
                "perplexity": float(2.0**entropy),
                "perplexity_share": float(2.0**entropy / codebook_size),
            }
        )
    return out


def code_collisions(codes: np.ndarray) -> dict[str, float]:
    """Items sharing their full code: distinct codes, items in a shared code (count, share), largest bucket."""
    n = len(codes)
    if n == 0:
        return {"items": 0, "unique_codes": 0, "colliding_items": 0, "collision_share": 0.0, "max_bucket": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    colliding = int(counts[counts > 1].sum())
    return {
        "items": n,
        "unique_codes": len(counts),
        "colliding_items": colliding,
        "collision_share": colliding / n,
        "max_bucket": int(counts.max()),
    }


def reconstruction_error(rq: ResidualQuantizer, emb: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """MSE per element after all levels and after each level, and relative to the data's variance (MSE / var)."""
    x = _as_matrix(emb, rq.dims)
    var = float(((x - x.mean(axis=0)) ** 2).mean())
    by_level = [float(((x - rq.decode(codes, levels=level + 1)) ** 2).mean()) for level in range(rq.levels)]
    return {
        "mse": by_level[-1],
        "variance": var,
        "relative_mse": by_level[-1] / var if var > 0 else float("nan"),
        "mse_by_level": by_level,
    }


def quantisation_report(rq: ResidualQuantizer, emb: np.ndarray, codes: np.ndarray | None = None) -> dict[str, Any]:
    """Usage, collisions and reconstruction error of `rq` on `emb` (codes computed when not given)."""
    codes = rq.encode(emb) if codes is None else codes
    return {
        "model_version": rq.model_version,
        "levels": rq.levels,
        "codebook_size": rq.codebook_size,
        "requested_codebook_size": rq.requested_codebook_size,
        "usage": code_usage(codes, rq.codebook_size),
        "collisions": code_collisions(codes),
        "reconstruction": reconstruction_error(rq, emb, codes),
    }


def code_cluster_agreement(codes: np.ndarray, labels: np.ndarray, level: int = 0) -> dict[str, float]:
    """How often two items share `level`'s code when they share a ground-truth cluster, versus when they do not.

    Pair shares over unordered pairs of distinct items; `chance` is the share of all pairs that share a code;
    `lift` = same_cluster_share / chance.
    """
    code = np.asarray(codes)[:, level].astype(np.int64)
    labels = np.asarray(labels)
    _, lab = np.unique(labels, return_inverse=True)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    n = len(code)
    all_pairs = n * (n - 1) / 2
    same_label = pairs(np.bincount(lab))
    same_code = pairs(np.unique(code, return_counts=True)[1])
    both = pairs(np.unique(np.stack([lab, code], axis=1), axis=0, return_counts=True)[1])
    same_share = both / same_label if same_label else float("nan")
    diff_share = (same_code - both) / (all_pairs - same_label) if all_pairs > same_label else float("nan")
    chance = same_code / all_pairs if all_pairs else float("nan")
    return {
        "level": level + 1,
        "same_cluster_share": same_share,
        "diff_cluster_share": diff_share,
        "chance": chance,
        "lift": same_share / chance if chance else float("nan"),
    }


# --------------------------------------------------------------------------------------------------------
# The job: ITEM_EMBEDDINGS -> ITEM_FEATURES + codebooks + report
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSidsConfig:
    embeddings_dir: str  # ITEM_EMBEDDINGS table (one model version)
    out_dir: str  # writes item_features/ (ITEM_FEATURES), codebooks/ and sid_report.json
    levels: int = 3  # L
    codebook_size: int = 256  # K (capped at the number of items)
    seed: int = 0
    niter: int = 20  # k-means iterations per level


@dataclass
class BuildSidsResult:
    features_dir: Path
    codebooks_dir: Path
    report_path: Path
    report: dict[str, Any]


def semantic_id_table(
    ids: np.ndarray, emb: np.ndarray, codes: np.ndarray, version: str, event_ts: Any, created: datetime
) -> pa.Table:
    """An ITEM_FEATURES table: item_id, embedding, semantic_ids (coarse to fine), model_version, timestamps."""
    n, d = emb.shape
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1), pa.float32())
    sids = pa.array(np.ascontiguousarray(codes, dtype=np.int32).reshape(-1), pa.int32())
    ts_type = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d).cast(pa.list_(pa.float32())),
            "semantic_ids": pa.FixedSizeListArray.from_arrays(sids, codes.shape[1]).cast(pa.list_(pa.int32())),
            "model_version": pa.array([version] * n, pa.string()),
            "event_timestamp": event_ts if isinstance(event_ts, pa.Array | pa.ChunkedArray) else pa.array(event_ts),
            "created": pa.array([created] * n, ts_type),
        }
    )


def run_build_sids(cfg: BuildSidsConfig) -> BuildSidsResult:
    """Fits the codebooks on one version's embeddings, encodes every item, writes features, codebooks, report."""
    from embedding.batch_infer import read_embeddings

    t0 = time.perf_counter()
    emb = read_embeddings(cfg.embeddings_dir)
    rq = fit_rq(emb.vectors, cfg.levels, cfg.codebook_size, cfg.seed, cfg.niter, model_version=emb.model_version)
    codes = rq.encode(emb.vectors)
    out = Path(cfg.out_dir)
    created = datetime.now(UTC).replace(microsecond=0)
    table = semantic_id_table(emb.ids, emb.vectors, codes, emb.model_version, emb.event_timestamp, created)
    write_table(table, ITEM_FEATURES, out / "item_features")
    rq.save(out / "codebooks")
    report = quantisation_report(rq, emb.vectors, codes)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(out / "sid_report.json", report)
    return BuildSidsResult(out / "item_features", out / "codebooks", out / "sid_report.json", report)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sail build-sids", description="Residual k-means semantic IDs for items.")
    p.add_argument("--embeddings", required=True, type=Path, help="ITEM_EMBEDDINGS table directory")
    p.add_argument("--out", required=True, type=Path, help="writes item_features/, codebooks/, sid_report.json")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--niter", type=int, default=20)
    args = p.parse_args(argv)
    res = run_build_sids(
        BuildSidsConfig(str(args.embeddings), str(args.out), args.levels, args.codebook_size, args.seed, args.niter)
    )
    summary = {
        "features": str(res.features_dir),
        "codebooks": str(res.codebooks_dir),
        "report": str(res.report_path),
        "usage": [round(u["usage"], 3) for u in res.report["usage"]],
        "collision_share": round(res.report["collisions"]["collision_share"], 4),
        "relative_mse": round(res.report["reconstruction"]["relative_mse"], 4),
    }
    print(json.dumps(summary, indent=2))
    return 0
