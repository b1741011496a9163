"""Batch embedding: batching, the per-process embedder cache, media failure counting, Spark vs single process."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from core.contracts import ITEMS
from core.io import is_complete, write_table
from embedding.batch_infer import (
    EMPTY_EMBEDDING,
    BatchEmbedConfig,
    EmbedderSpec,
    HashingTextEmbedder,
    embed_batches,
    embed_local,
    embed_spark,
    get_embedder,
    main,
    read_embeddings,
    rebatch,
)

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOPICS = [["cat", "kitten", "paws"], ["guitar", "chord", "song"], ["soccer", "goal", "match"]]


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buf, format="PNG")
    return buf.getvalue()


def make_catalogue(root: Path, n: int = 30) -> tuple[Path, Path]:
    """n items in 3 topics. Item 0: corrupt cover; item 1: cover file absent; item 2: no cover at all;
    item 3: no text and no cover (dropped); the rest: valid PNG covers."""
    media = root / "media"
    media.mkdir(parents=True)
    rows = []
    for i in range(n):
        topic = TOPICS[i % 3]
        cover = f"c/{i}.png"
        if i == 0:
            (media / "c").mkdir(exist_ok=True)
            (media / cover).write_bytes(b"\x89PNG\r\n\x1a\n-not-really-a-png")
        elif i in (1, 2, 3):
            cover = None if i in (2, 3) else cover
        else:
            (media / "c").mkdir(exist_ok=True)
            (media / cover).write_bytes(_png((40 * (i % 3), 200 - 5 * i, 7 * i % 255)))
        rows.append(
            {
                "item_id": 100 + i,
                "created_ts": TS,
                "author_id": i % 4,
                "category": f"t{i % 3}",
                "title": "" if i == 3 else f"{topic[i % 3]} {topic[(i + 1) % 3]} number {i}",
                "ocr_text": None,
                "asr_text": None,
                "tags": [] if i == 3 else [topic[0], f"tag{i % 5}"],
                "duration_ms": 1000 + i,
                "cover_path": cover,
                "frame_paths": [],
                "audio_path": None,
            }
        )
    items = root / "items"
    write_table(pa.Table.from_pylist(rows, schema=ITEMS.to_arrow()), ITEMS, items)
    return items, media


def test_rebatch_slices_a_stream_into_fixed_batches():
    frames = [pd.DataFrame({"x": range(0, 3)}), pd.DataFrame({"x": range(3, 8)}), pd.DataFrame({"x": range(8, 10)})]
    out = list(rebatch(frames, 4))
    assert [len(f) for f in out] == [4, 4, 2]
    assert [f["x"].tolist() for f in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_embedder_is_called_once_per_batch_not_per_row():
    class Counting:
        dims = 2

        def __init__(self):
            self.calls = []

        def embed(self, items):
            self.calls.append(len(items))
            return np.ones((len(items), 2), np.float32), [[] for _ in range(len(items))]

    emb = Counting()
    frames = [pd.DataFrame({"item_id": np.arange(i * 10, i * 10 + 10)}) for i in range(3)]
    batches = list(embed_batches(emb, frames, batch_size=8))
    assert emb.calls == [8, 8, 8, 6]
    assert np.concatenate([b.item_ids for b in batches]).tolist() == list(range(30))


def test_embedder_is_built_once_per_process(tmp_path):
    spec = EmbedderSpec(kwargs={"dims": 8, "trace_dir": str(tmp_path / "trace")})
    assert get_embedder(spec) is get_embedder(spec)
    assert len(list((tmp_path / "trace").iterdir())) == 1
    assert get_embedder(spec.with_kwargs(dims=16)).dims == 16


def test_hashing_embedder_is_deterministic_and_normalised():
    items = pd.DataFrame({"title": ["Cat video", "cat VIDEO", "guitar song"], "tags": [["a"], ["a"], []]})
    a, reasons = HashingTextEmbedder(dims=32, seed=3).embed(items)
    b, _ = HashingTextEmbedder(dims=32, seed=3).embed(items)
    assert a.dtype == np.float32 and a.shape == (3, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a[0], a[1])  # tokenisation is case-insensitive
    assert reasons == [[], [], []]


def _local_cfg(tmp_path: Path, items: Path, media: Path, out: str, **kw) -> BatchEmbedConfig:
    spec = EmbedderSpec(kwargs={"dims": 16, "seed": 1, "media_root": str(media)})
    return BatchEmbedConfig(str(items), str(tmp_path / out), "v1", spec, event_timestamp=TS, batch_size=7, **kw)


def test_local_path_counts_corrupt_and_missing_media(tmp_path, capsys):
    # Given a catalogue with one corrupt cover, one absent cover file and one item with nothing to embed
    items, media = make_catalogue(tmp_path)
    # When it is embedded in one process
    res = embed_local(_local_cfg(tmp_path, items, media, "emb"))
    # Then its progress ends with every item counted
    assert capsys.readouterr().err.splitlines()[-1].startswith("batch-embed: 30/30 items (100%)")
    # Then the failures are counted by reason and only the empty item is dropped
    assert res.report["failures"] == {"corrupt_image": 1, "missing": 1, EMPTY_EMBEDDING: 1}
    assert (res.report["items_in"], res.report["items_written"], res.report["items_with_failures"]) == (30, 29, 3)
    assert json.loads(res.report_path.read_text())["failures"] == res.report["failures"]
    assert is_complete(res.output_dir)
    emb = read_embeddings(res.output_dir)
    assert 103 not in emb.ids.tolist() and emb.model_version == "v1"
    # the corrupt-cover item is embedded from its text alone: the text-only embedder gives the same vector
    text_only = HashingTextEmbedder(dims=16, seed=1)
    row = pd.DataFrame({"title": ["cat kitten number 0"], "tags": [["cat", "tag0"]], "cover_path": ["c/0.png"]})
    np.testing.assert_allclose(emb.vectors[emb.ids == 100][0], text_only.embed(row)[0][0], atol=1e-6)
    # while an item with a valid cover differs from its text-only vector
    row4 = pd.DataFrame({"title": ["kitten paws number 4"], "tags": [["cat", "tag4"]]})
    assert not np.allclose(emb.vectors[emb.ids == 104][0], text_only.embed(row4)[0][0], atol=1e-3)


@pytest.mark.spark
def test_spark_path_equals_single_process_path(spark, tmp_path):
    items, media = make_catalogue(tmp_path)
    local = embed_local(_local_cfg(tmp_path, items, media, "local"))
    trace = tmp_path / "trace"
    cfg = _local_cfg(tmp_path, items, media, "spark", engine="spark", partitions=2)
    cfg = BatchEmbedConfig(**{**cfg.__dict__, "embedder": cfg.embedder.with_kwargs(trace_dir=str(trace))})
    res = embed_spark(cfg, spark)

    assert res.report["failures"] == {"corrupt_image": 1, "missing": 1, EMPTY_EMBEDDING: 1}
    assert res.report["items_written"] == local.report["items_written"] == 29
    assert is_complete(res.output_dir)
    a, b = read_embeddings(local.output_dir), read_embeddings(res.output_dir)
    order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
    np.testing.assert_array_equal(a.ids[order_a], b.ids[order_b])
    np.testing.assert_allclose(a.vectors[order_a], b.vectors[order_b], atol=1e-6)
    assert b.event_timestamp.to_pylist()[0] == TS
    # the embedder was built once per Python worker process, not once per batch or task
    pids = [p.name.split("-")[0] for p in trace.iterdir()]
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)


def test_cli_local(tmp_path, capsys):
    items, media = make_catalogue(tmp_path, n=9)
    args = ["--items", str(items), "--out", str(tmp_path / "e"), "--model-version", "m1", "--media-root", str(media)]
    assert main([*args, "--embedder-kwargs", '{"dims": 8}']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items_written"] == 8 and out["failures"]["corrupt_image"] == 1
    assert read_embeddings(tmp_path / "e").vectors.shape == (8, 8)
