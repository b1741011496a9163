"""The SAIL model through the batch-embedding job: Spark equals single process; broken media counted per item."""

import json

import numpy as np
import polars as pl
import torch

from core import contracts as K
from core.io import read_table, write_table
from embedding.batch_infer import BatchEmbedConfig, EmbedderSpec, embed_local, embed_spark, read_embeddings
from embedding.checkpoint import save_embedding_model
from embedding.config import ModelConfig
from embedding.model import build_embedding_model
from sources.world import WorldConfig, generate_world


def test_sail_model_batch_embedding_spark_matches_local_and_counts_broken_media(tmp_path, spark):
    # Given a tiny world of 40 items, one with a corrupt cover and one with a corrupt WAV, and an (untrained,
    # seeded) tiny SAIL model saved as safetensors
    world = tmp_path / "w"
    generate_world(WorldConfig.for_size("tiny", seed=5, n_items=40, n_users=20, days=2), world)
    items = pl.from_arrow(read_table(world / "items", K.ITEMS)).sort("item_id")
    rows = items.head(2).to_dicts()
    (world / "media" / rows[0]["cover_path"]).write_bytes(b"not a png")
    (world / "media" / rows[1]["audio_path"]).write_bytes(b"RIFF....garbage")
    write_table(items.to_arrow(), K.ITEMS, tmp_path / "items")
    torch.manual_seed(0)
    model_path = save_embedding_model(build_embedding_model(ModelConfig.tiny()), tmp_path / "model.safetensors")
    spec = EmbedderSpec(
        "embedding.infer:sail_embedder", {"model_path": str(model_path), "media_root": str(world / "media")}
    )

    # When the catalogue is embedded in one process and with Spark mapInPandas
    def cfg(out):
        return BatchEmbedConfig(str(tmp_path / "items"), str(tmp_path / out), "sail-v0", spec, batch_size=16)

    local = embed_local(cfg("local"))
    embed_spark(cfg("spark"), spark)

    # Then both paths give the same vectors, and each broken file is counted against its own item
    a, b = read_embeddings(tmp_path / "local"), read_embeddings(tmp_path / "spark")
    order = np.argsort(b.ids)
    assert np.array_equal(a.ids, b.ids[order])
    assert np.allclose(a.vectors, b.vectors[order], atol=1e-5)
    assert a.vectors.shape == (40, ModelConfig.tiny().embed_dim)
    assert local.report["failures"] == {"corrupt_image": 1, "corrupt_audio": 1}
    assert local.report["items_with_failures"] == 2
    spark_report = json.loads((tmp_path / "spark.report.json").read_text())
    assert spark_report["failures"] == {"corrupt_image": 1, "corrupt_audio": 1}
