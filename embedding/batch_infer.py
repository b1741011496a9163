"""Batch inference: the item catalogue (ITEMS) -> ITEM_EMBEDDINGS, with Spark (`mapInPandas`) or in one process.

Notation: N items in a batch, D embedding dims.

- An `Embedder` turns a pandas frame of ITEMS rows into `(vectors (N, D) float32, reasons per row)`. The reasons
  name media that could not be used for a row (e.g. 'corrupt_image'); the row is still embedded from what remains.
- An `EmbedderSpec` (an import path "module:callable" plus JSON-able kwargs) is what travels to Spark workers; each
  Python process builds the embedder once (`get_embedder` caches it by the spec's key) and reuses it for every
  batch of every task it runs.
- `embed_batches` is the one batching function: both engines call it, so a Spark run and a local run of the same
  items produce the same vectors. Rows whose vector is empty or not finite are dropped and counted as
  'empty_embedding'.
- The job writes ITEM_EMBEDDINGS atomically (temporary directory, rename, `_SUCCESS`) and a JSON report of failure
  counts by reason next to it (`<output_dir>.report.json` unless told otherwise).

`HashingTextEmbedder` is the deterministic baseline (and the test embedder): a hashing-trick bag of words of
title + tags through a fixed random projection, plus the cover image (8x8 RGB thumbnail through a second fixed
projection) when a media root is given; L2-normalised.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import json
import logging
import os
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from core.contracts import ITEM_EMBEDDINGS, ITEMS
from core.io import read_table, write_json_atomic, write_table
from core.media import UnsafeMediaPath, read_media
from core.progress import progress

log = logging.getLogger(__name__)

EMPTY_EMBEDDING = "empty_embedding"
"""Reason recorded (and the row dropped) when an embedder returns a zero or non-finite vector."""


class Embedder(Protocol):
    """Turns ITEMS rows into vectors. Built once per process from an `EmbedderSpec`."""

    dims: int  # D

    def embed(self, items: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
        """ITEMS rows (N) -> (vectors (N, D) float32, per row the reasons media were skipped, [] when none)."""
        ...


@dataclass(frozen=True)
class EmbedderSpec:
    """A picklable recipe for an `Embedder`: `factory(**kwargs)`, imported by path in whichever process needs it."""

    factory: str = "embedding.batch_infer:hashing_embedder"  # "package.module:callable" returning an Embedder
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # JSON-able keyword arguments for the factory

    @property
    def key(self) -> str:
        """Identifies the embedder in the per-process cache (factory path + canonical JSON of the kwargs)."""
        return f"{self.factory}?{json.dumps(dict(self.kwargs), sort_keys=True, default=str)}"

    def build(self) -> Embedder:
        module_name, _, attr = self.factory.partition(":")
        if not module_name or not attr:
            raise ValueError(f"embedder factory must look like 'package.module:callable', got {self.factory!r}")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**dict(self.kwargs))

    def with_kwargs(self, **extra: Any) -> EmbedderSpec:
        return EmbedderSpec(self.factory, {**dict(self.kwargs), **extra})


_EMBEDDERS: dict[str, Embedder] = {}
"""Per-process cache: spec key -> embedder (one model load per Python worker, reused across tasks)."""


def get_embedder(spec: EmbedderSpec) -> Embedder:
    """The embedder for `spec`, built on first use in this process and cached afterwards."""
    emb = _EMBEDDERS.get(spec.key)
    if emb is None:
        emb = spec.build()
        _EMBEDDERS[spec.key] = emb
    return emb


# --------------------------------------------------------------------------------------------------------
# The baseline embedder
# --------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _stable_hash(token: str) -> int:
    # Python's hash() is salted per process; Spark workers and the driver must agree, so use crc32
    return zlib.crc32(token.encode("utf-8"))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    return list(value)


class HashingTextEmbedder:
    """Hashing-trick bag of words (title + tags) -> fixed Gaussian projection, plus an optional cover thumbnail.

    Deterministic given `seed`; rows are embedded independently, so any batching gives the same vectors.
    """

    THUMB = 8  # cover thumbnail side in pixels: 8 x 8 x 3 = 192 image features

    def __init__(
        self,
        dims: int = 64,
        n_buckets: int = 1 << 14,
        seed: int = 0,
        media_root: str | os.PathLike | None = None,
        image_weight: float = 0.5,
    ) -> None:
        self.dims = int(dims)
        self.n_buckets = int(n_buckets)
        self.media_root = str(media_root) if media_root is not None else None
        self.image_weight = float(image_weight)
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(self.dims)
        self.text_proj = (rng.standard_normal((self.n_buckets, self.dims)) * scale).astype(np.float32)  # (V, D)
        n_pix = self.THUMB * self.THUMB * 3
        self.image_proj = (rng.standard_normal((n_pix, self.dims)) * scale).astype(np.float32)  # (192, D)

    def _tokens(self, title: Any, tags: Any) -> list[str]:
        words = _TOKEN.findall(str(title).lower()) if isinstance(title, str) else []
        return words + [f"#{str(t).strip().lower()}" for t in _as_list(tags) if t is not None and str(t).strip()]

    def _text(self, items: pd.DataFrame) -> np.ndarray:
        n = len(items)
        rows, buckets, signs = [], [], []
        titles = items["title"].tolist() if "title" in items else [None] * n
        tags = items["tags"].tolist() if "tags" in items else [None] * n
        for i, (title, tag) in enumerate(zip(titles, tags, strict=True)):
            for tok in self._tokens(title, tag):
                h = _stable_hash(tok)
                rows.append(i)
                buckets.append(h % self.n_buckets)
                signs.append(1.0 if (h >> 31) & 1 else -1.0)
        out = np.zeros((n, self.dims), dtype=np.float32)  # (N, D)
        if rows:
            contrib = self.text_proj[np.asarray(buckets)] * np.asarray(signs, dtype=np.float32)[:, None]
            np.add.at(out, np.asarray(rows), contrib)
        return out

    def _cover(self, ref: Any) -> tuple[np.ndarray | None, str | None]:
        """(192 thumbnail features or None, skip reason or None)."""
        if not isinstance(ref, str) or not ref or self.media_root is None:
            return None, None
        try:
            data = read_media(self.media_root, ref)
        except UnsafeMediaPath:
            return None, "unsafe_path"
        except OSError:
            return None, "missing"
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                thumb = img.convert("RGB").resize((self.THUMB, self.THUMB), Image.Resampling.BILINEAR)
                pix = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0 - 0.5
        except Exception:  # noqa: BLE001 - any decoder failure means the file is corrupt
            return None, "corrupt_image"
        return pix, None

    def embed(self, items: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
        """ITEMS rows (N) -> ((N, D) float32 L2-normalised, skip reasons per row)."""
        text = _l2_normalise(self._text(items))  # (N, D)
        reasons: list[list[str]] = [[] for _ in range(len(items))]
        image = np.zeros_like(text)  # (N, D)
        if self.media_root is not None and "cover_path" in items:
            for i, ref in enumerate(items["cover_path"].tolist()):
                pix, reason = self._cover(ref)
                if reason:
                    reasons[i].append(reason)
                if pix is not None:
                    image[i] = pix @ self.image_proj
            image = _l2_normalise(image) * self.image_weight
        return _l2_normalise(text + image), reasons


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def hashing_embedder(trace_dir: str | None = None, **kwargs: Any) -> HashingTextEmbedder:
    """Factory for `HashingTextEmbedder`. `trace_dir` (diagnostics, tests): each build drops a file `<pid>-<uuid>`
    there, so one can count how many times the embedder was built per process."""
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        (Path(trace_dir) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}").touch()
    return HashingTextEmbedder(**kwargs)


# --------------------------------------------------------------------------------------------------------
# Batching (shared by both engines)
# --------------------------------------------------------------------------------------------------------


@dataclass
class EmbeddedBatch:
    """One embedded batch. Rows with `keep == False` had an empty / non-finite vector and are not written."""

    item_ids: np.ndarray  # (N,) int64
    vectors: np.ndarray  # (N, D) float32
    reasons: list[list[str]]  # per row
    keep: np.ndarray  # (N,) bool


def rebatch(frames: Iterable[pd.DataFrame], batch_size: int) -> Iterator[pd.DataFrame]:
    """Re-slices a stream of frames into frames of exactly `batch_size` rows (the last one may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buf: pd.DataFrame | None = None  # rows not yet yielded (fewer than batch_size between frames)
    for frame in frames:
        buf = frame if buf is None or not len(buf) else pd.concat([buf, frame], ignore_index=True)
        start = 0
        while len(buf) - start >= batch_size:
            yield buf.iloc[start : start + batch_size].reset_index(drop=True)
            start += batch_size
        buf = buf.iloc[start:]
    if buf is not None and len(buf):
        yield buf.reset_index(drop=True)


def embed_batches(embedder: Embedder, frames: Iterable[pd.DataFrame], batch_size: int) -> Iterator[EmbeddedBatch]:
    """ITEMS frames -> embedded batches of `batch_size` rows: one `embedder.embed` call per batch, never per row."""
    for batch in rebatch(frames, batch_size):
        vectors, reasons = embedder.embed(batch)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(batch), embedder.dims):
            raise ValueError(f"embedder returned shape {vectors.shape} for {len(batch)} rows, dims {embedder.dims}")
        if len(reasons) != len(batch):
            raise ValueError(f"embedder returned {len(reasons)} reason lists for {len(batch)} rows")
        keep = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
        reasons = [list(r) if k else [*r, EMPTY_EMBEDDING] for r, k in zip(reasons, keep, strict=True)]
        ids = batch["item_id"].to_numpy(dtype=np.int64)
        yield EmbeddedBatch(ids, vectors, reasons, keep)


_SPARK_OUT_SCHEMA = "item_id long, embedding array<float>, dims int, reasons array<string>"


def _embed_partition(frames: Iterator[pd.DataFrame], spec: EmbedderSpec, batch_size: int) -> Iterator[pd.DataFrame]:
    """`mapInPandas` body: runs in a Python worker; the embedder is built once per worker process."""
    embedder = get_embedder(spec)
    for b in embed_batches(embedder, frames, batch_size):
        emb = [v if k else None for v, k in zip(b.vectors, b.keep, strict=True)]
        yield pd.DataFrame(
            {
                "item_id": b.item_ids,
                "embedding": emb,
                "dims": np.full(len(b.item_ids), embedder.dims, dtype=np.int32),
                "reasons": b.reasons,
            }
        )


# --------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchEmbedConfig:
    items_dir: str  # ITEMS table directory
    output_dir: str  # ITEM_EMBEDDINGS table directory (replaced atomically)
    model_version: str  # written on every row
    embedder: EmbedderSpec = field(default_factory=EmbedderSpec)
    engine: Literal["spark", "local"] = "local"
    batch_size: int = 256  # rows per embedder call
    partitions: int | None = None  # Spark: repartition the catalogue into this many tasks; None: default parallelism
    event_timestamp: datetime | None = None  # when the vectors become valid; None: now (UTC, whole seconds)
    report_path: str | None = None  # failure-count JSON; None: "<output_dir>.report.json"
    master: str | None = "local[*]"  # Spark master of a session run_batch_embed builds; None: spark-submit's


@dataclass
class BatchEmbedResult:
    output_dir: Path
    report_path: Path
    report: dict[str, Any]  # items_in, items_written, failures by reason, seconds, items_per_s, ...


def _report(cfg: BatchEmbedConfig, items_in: int, written: int, failures: Counter, with_failures: int, t0: float):
    seconds = time.perf_counter() - t0
    return {
        "engine": cfg.engine,
        "model_version": cfg.model_version,
        "embedder": cfg.embedder.key,
        "batch_size": cfg.batch_size,
        "items_in": items_in,
        "items_written": written,
        "items_dropped": items_in - written,
        "items_with_failures": with_failures,
        "failures": dict(sorted(failures.items())),
        "seconds": round(seconds, 3),
        "items_per_s": round(items_in / seconds, 1) if seconds > 0 else None,
    }


def _event_ts(cfg: BatchEmbedConfig) -> datetime:
    ts = cfg.event_timestamp or datetime.now(UTC).replace(microsecond=0)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def embed_local(cfg: BatchEmbedConfig) -> BatchEmbedResult:
    """Single-process path (small catalogues): same embedder and batching function as the Spark path."""
    t0 = time.perf_counter()
    items = read_table(cfg.items_dir, ITEMS)
    embedder = get_embedder(cfg.embedder)
    ts = _event_ts(cfg)
    failures: Counter = Counter()
    counts = {"written": 0, "with_failures": 0}

    bar = progress(items.num_rows, desc="batch-embed", unit="items")

    def chunks() -> Iterator[pa.Table]:
        frames = (b.to_pandas() for b in items.to_batches(max_chunksize=max(cfg.batch_size, 4096)))
        for b in embed_batches(embedder, frames, cfg.batch_size):
            bar.update(len(b.item_ids))
            for r in b.reasons:
                failures.update(r)
                counts["with_failures"] += bool(r)
            ids, vecs = b.item_ids[b.keep], b.vectors[b.keep]
            counts["written"] += len(ids)
            yield _arrow_embeddings(ids, vecs, cfg.model_version, ts)

    write_table(chunks(), ITEM_EMBEDDINGS, cfg.output_dir)
    report = _report(cfg, items.num_rows, counts["written"], failures, counts["with_failures"], t0)
    return _finish(cfg, report)


def _arrow_embeddings(ids: np.ndarray, vecs: np.ndarray, version: str, ts: datetime) -> pa.Table:
    n, d = vecs.shape
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), d).cast(pa.list_(pa.float32()))
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "embedding": emb,
            "dims": pa.array(np.full(n, d, dtype=np.int32)),
            "model_version": pa.array([version] * n, pa.string()),
            "event_timestamp": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def embed_items_spark(items, spec: EmbedderSpec, batch_size: int):
    """Transform: ITEMS DataFrame -> (item_id, embedding (null when dropped), dims, reasons) via `mapInPandas`."""
    fn = functools.partial(_embed_partition, spec=spec, batch_size=batch_size)
    return items.mapInPandas(fn, schema=_SPARK_OUT_SCHEMA)


def embed_spark(cfg: BatchEmbedConfig, spark) -> BatchEmbedResult:
    """Spark path: `mapInPandas` over the catalogue; failures aggregated from the cached output."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from core.spark_io import read_contract_table, write_contract_table

    t0 = time.perf_counter()
    items = read_contract_table(spark, cfg.items_dir, ITEMS)
    parts = cfg.partitions or spark.sparkContext.defaultParallelism
    items = items.repartition(parts)
    out = (
        embed_items_spark(items, cfg.embedder, cfg.batch_size)
        .withColumn("model_version", F.lit(cfg.model_version))
        .withColumn("event_timestamp", F.lit(_event_ts(cfg)).cast("timestamp"))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        write_contract_table(out.where(F.col("embedding").isNotNull()), ITEM_EMBEDDINGS, cfg.output_dir)
        # one small aggregation: rows per (reasons, kept) combination, summed up on the driver
        combos = out.groupBy("reasons", F.col("embedding").isNotNull().alias("kept")).count().collect()
    finally:
        out.unpersist()
    failures: Counter = Counter()
    n = written = with_failures = 0
    for row in combos:
        count = int(row["count"])
        n += count
        written += count if row["kept"] else 0
        with_failures += count if row["reasons"] else 0
        for reason in row["reasons"]:
            failures[reason] += count
    report = _report(cfg, n, written, failures, with_failures, t0)
    return _finish(cfg, report)


def _finish(cfg: BatchEmbedConfig, report: dict[str, Any]) -> BatchEmbedResult:
    report_path = Path(cfg.report_path or f"{str(cfg.output_dir).rstrip('/')}.report.json")
    write_json_atomic(report_path, report)
    if report["failures"]:
        log.warning("batch embedding: media failures %s (items embedded from what remained)", report["failures"])
    return BatchEmbedResult(Path(cfg.output_dir), report_path, report)


def run_batch_embed(cfg: BatchEmbedConfig, spark=None) -> BatchEmbedResult:
    """Embeds the catalogue with `cfg.engine`. A Spark run builds a session when none is passed."""
    if cfg.engine == "local":
        return embed_local(cfg)
    if cfg.engine != "spark":
        raise ValueError(f"engine must be 'spark' or 'local', got {cfg.engine!r}")
    if spark is None:
        from core.spark_session import build_spark

        spark = build_spark(app_name="sail-embed", master=cfg.master)
    return embed_spark(cfg, spark)


# --------------------------------------------------------------------------------------------------------
# Reading the output back (semantic IDs, ANN index and export start here)
# --------------------------------------------------------------------------------------------------------


class MixedVersionError(ValueError):
    """A table holds rows of more than one model version (or not the version asked for)."""


def check_single_version(versions: Iterable[str], source: str, expected: str | None = None) -> str:
    """The one model version in `versions`; MixedVersionError naming the versions (and source) otherwise."""
    found = sorted(set(versions))
    if len(found) > 1:
        raise MixedVersionError(
            f"{source}: rows of {len(found)} model versions mixed in one table: {found}; "
            "write each model version to its own table"
        )
    if not found:
        raise ValueError(f"{source}: no rows, so no model version")
    if expected is not None and found[0] != expected:
        raise MixedVersionError(f"{source}: holds model version {found[0]!r}, but version {expected!r} was asked for")
    return found[0]


@dataclass
class ItemVectors:
    """One model version's item vectors as arrays."""

    ids: np.ndarray  # (N,) int64
    vectors: np.ndarray  # (N, D) float32
    model_version: str
    event_timestamp: pa.ChunkedArray  # (N,) timestamp[us, UTC]


def read_embeddings(path: str | os.PathLike, expected_version: str | None = None) -> ItemVectors:
    """Reads an ITEM_EMBEDDINGS table of a single model version into arrays (refuses mixed versions)."""
    t = read_table(path, ITEM_EMBEDDINGS)
    version = check_single_version(t.column("model_version").unique().to_pylist(), str(path), expected_version)
    ids = t.column("item_id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate item_id rows for model version {version!r}")
    dims = np.unique(t.column("dims").to_numpy())
    flat = t.column("embedding").combine_chunks().flatten().to_numpy()
    if len(dims) != 1 or len(flat) != len(ids) * int(dims[0]):
        raise ValueError(f"{path}: embeddings of inconsistent length (dims values {dims.tolist()})")
    vectors = flat.astype(np.float32, copy=False).reshape(len(ids), int(dims[0]))
    return ItemVectors(ids.astype(np.int64), vectors, version, t.column("event_timestamp"))


# --------------------------------------------------------------------------------------------------------
# CLI: sail embed
# --------------------------------------------------------------------------------------------------------


def _default_media_root(items_dir: Path) -> str | None:
    """The media root named by the data set's manifest (`<items>/../manifest.json`), when its media are files."""
    manifest = items_dir.parent / "manifest.json"
    if not manifest.exists():
        return None
    media = json.loads(manifest.read_text()).get("media") or {}
    if not media.get("root") or media.get("mode", "files") != "files":
        return None
    return str((items_dir.parent / media["root"]).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sail embed", description="Embed the item catalogue into ITEM_EMBEDDINGS.")
    p.add_argument("--items", required=True, type=Path, help="ITEMS table directory")
    p.add_argument("--out", required=True, type=Path, help="ITEM_EMBEDDINGS output directory")
    p.add_argument("--engine", choices=["spark", "local"], default="local")
    p.add_argument("--embedder", default=EmbedderSpec.factory, help="factory import path 'module:callable'")
    p.add_argument("--embedder-kwargs", default="{}", help="JSON object of factory keyword arguments")
    p.add_argument("--media-root", default=None, help="media root (default: from the data set's manifest.json)")
    p.add_argument("--model-version", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--partitions", type=int, default=None)
    p.add_argument("--master", default="local[*]", help="Spark master ('' leaves it to spark-submit)")
    args = p.parse_args(argv)
    kwargs = json.loads(args.embedder_kwargs)
    if not isinstance(kwargs, dict):
        raise SystemExit("sail embed: --embedder-kwargs must be a JSON object")
    media_root = args.media_root or _default_media_root(args.items)
    if media_root is not None and "media_root" not in kwargs:
        kwargs["media_root"] = media_root
    cfg = BatchEmbedConfig(
        items_dir=str(args.items),
        output_dir=str(args.out),
        model_version=args.model_version,
        embedder=EmbedderSpec(args.embedder, kwargs),
        engine=args.engine,
        batch_size=args.batch_size,
        partitions=args.partitions,
    )
    spark = None
    if cfg.engine == "spark":
        from core.spark_session import build_spark

        spark = build_spark(app_name="sail-embed", master=args.master or None)
    res = run_batch_embed(cfg, spark)
    print(json.dumps({"out": str(res.output_dir), "report": str(res.report_path), **res.report}, indent=2))
    return 0
