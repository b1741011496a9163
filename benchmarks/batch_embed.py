"""Benchmark of batch embedding: Spark (`mapInPandas`, local[N]) against the single-process path, same embedder.

    python benchmarks/batch_embed.py [--items 20000] [--dims 64] [--batch-size 512] [--master local[2]]
                                     [--out benchmarks/results/batch_embed.json]

A synthetic catalogue (titles and tags from topic vocabularies, a 16x16 PNG cover per item, 0.1% corrupt covers)
is written to a temporary directory, then embedded with `HashingTextEmbedder` (text hashing + cover decoding) by
`embed_local` and by `embed_spark` (twice: the first run includes starting the Python workers). Throughput counts
reading the catalogue, embedding and writing ITEM_EMBEDDINGS; Spark's session start is reported separately. The two
outputs are compared (largest absolute difference). Results go to a JSON file with the machine description.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402
from core.contracts import ITEMS  # noqa: E402
from core.io import write_table  # noqa: E402
from embedding.batch_infer import BatchEmbedConfig, EmbedderSpec, embed_local, embed_spark, read_embeddings  # noqa: E402

TS = datetime(2024, 5, 1, tzinfo=UTC)


def machine() -> dict:
    return describe_machine("pyspark")


def write_catalogue(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    vocab = [[f"w{t}_{j}" for j in range(30)] for t in range(50)]
    media = root / "media"
    rows = []
    for i in range(n):
        topic = int(rng.integers(0, 50))
        ref = f"c/{i // 1000}/{i}.png"
        path = media / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 1000 == 999:
            path.write_bytes(b"\x89PNG\r\n\x1a\ncorrupt")
        else:
            buf = io.BytesIO()
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
            path.write_bytes(buf.getvalue())
        words = rng.choice(vocab[topic], size=8)
        rows.append(
            {
                "item_id": i,
                "created_ts": TS,
                "author_id": i % 997,
                "category": f"t{topic}",
                "title": " ".join(words),
                "ocr_text": None,
                "asr_text": None,
                "tags": [f"topic{topic}", words[0]],
                "duration_ms": 15_000,
                "cover_path": ref,
                "frame_paths": [],
                "audio_path": None,
            }
        )
    write_table(pa.Table.from_pylist(rows, schema=ITEMS.to_arrow()), ITEMS, root / "items")
    return root / "items", media


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch_embed.json")
    args = ap.parse_args(argv)

    report: dict = {"benchmark": "batch_embed", "date": dt.datetime.now(dt.UTC).isoformat(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="sail-bench-embed-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        items, media = write_catalogue(root, args.items, args.seed)
        report["catalogue"] = {
            "items": args.items,
            "covers": "16x16 PNG, 0.1% corrupt",
            "seconds": time.perf_counter() - t0,
        }
        spec = EmbedderSpec(kwargs={"dims": args.dims, "media_root": str(media)})

        def cfg(name: str, engine: str) -> BatchEmbedConfig:
            return BatchEmbedConfig(
                str(items), str(root / name), "bench", spec, engine, args.batch_size, event_timestamp=TS
            )

        local = embed_local(cfg("local", "local"))
        report["local"] = local.report
        print(f"local: {local.report['items_per_s']:.0f} items/s ({local.report['seconds']:.1f} s)", flush=True)

        from core.spark_session import build_spark

        t0 = time.perf_counter()
        spark = build_spark(app_name="bench-embed", master=args.master, shuffle_partitions=4)
        report["spark_session_start_seconds"] = round(time.perf_counter() - t0, 2)
        report["spark_master"] = args.master
        runs = []
        for run in ("cold", "warm"):
            res = embed_spark(cfg(f"spark_{run}", "spark"), spark)
            runs.append({"run": run, **res.report})
            print(f"spark ({run}): {res.report['items_per_s']:.0f} items/s ({res.report['seconds']:.1f} s)", flush=True)
        spark.stop()
        report["spark"] = runs
        a, b = read_embeddings(root / "local"), read_embeddings(root / "spark_warm")
        oa, ob = np.argsort(a.ids), np.argsort(b.ids)
        same_ids = bool(np.array_equal(a.ids[oa], b.ids[ob]))
        report["spark_vs_local"] = {
            "same_items": same_ids,
            "max_abs_diff": float(np.abs(a.vectors[oa] - b.vectors[ob]).max()) if same_ids else None,
            "same_failures": local.report["failures"] == runs[-1]["failures"],
        }
        report["speedup_warm_spark_over_local"] = round(runs[-1]["items_per_s"] / local.report["items_per_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("spark_vs_local", "speedup_warm_spark_over_local")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
