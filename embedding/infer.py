"""Batch inference API: items (ITEMS rows + media root) in, vectors at every Matryoshka size out.

Notation: N items, Q queries, d a Matryoshka dim, D the full dim.

    emb = ItemEncoder.from_checkpoint("runs/emb/model.safetensors", media_root="world/media")
    vecs = emb.embed_items(items_table)        # {d: (N, d) float32, L2-normalised} for every Matryoshka d
    qv = emb.embed_queries(["red cats"])       # {d: (Q, d)}

Items are embedded with task "item", queries with task "query", in eval mode, `batch_size` at a time, under
`torch.set_num_threads(threads)` (default 1: measured fastest on a shared 2-core machine). A model trained without
audio (`use_audio` false in its checkpoint) never sees audio at inference either. `device` ('cpu' default, 'cuda',
'auto') and `precision` ('fp32' default, 'bf16' autocast) choose where and how the forward passes run; inputs are
always preprocessed and collated on the CPU. `sail_embedder` adapts an
`ItemEncoder` to `embedding.batch_infer`'s `Embedder` protocol (factory "embedding.infer:sail_embedder").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn as nn

from core.progress import progress
from embedding.checkpoint import load_embedding_model
from embedding.config import ModelConfig, PreprocessConfig
from embedding.device import autocast, check_precision, resolve_device
from embedding.preprocess import ItemInputs, Preprocessor, Tokenizer, build_tokenizer, collate_items


@torch.no_grad()
def embed_item_inputs(
    model: nn.Module,
    inputs: Sequence[ItemInputs],
    tokenizer: Tokenizer,
    pre: PreprocessConfig,
    task: str = "item",
    batch_size: int = 64,
    precision: str = "fp32",
    desc: str | None = None,
) -> dict[int, np.ndarray]:
    """Preprocessed inputs -> {d: (N, d) float32} with `model` in eval mode (its previous mode is restored).
    Batches are collated on the CPU and run on the model's device, under bf16 autocast when `precision` is 'bf16'.
    With `desc`, progress lines (`core.progress`) count the items done."""
    bar = progress(len(inputs), desc=desc, unit="items") if desc else None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[int, list[np.ndarray]] = {d: [] for d in model.matryoshka_dims}
    try:
        for s in range(0, len(inputs), batch_size):
            batch_inputs = list(inputs[s : s + batch_size])
            batch = collate_items(batch_inputs, tokenizer, pre).to(device)
            with autocast(device, precision):
                res = model(batch, task)
            for d in model.matryoshka_dims:
                out[d].append(res.matryoshka[d].float().cpu().numpy())
            if bar is not None:
                bar.update(len(batch_inputs))
    finally:
        model.train(was_training)
    return {d: np.concatenate(v) if v else np.zeros((0, d), np.float32) for d, v in out.items()}


def _rows(items: pa.Table | pd.DataFrame | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(items, pa.Table):
        return items.to_pylist()
    if isinstance(items, pd.DataFrame):
        return [{k: _plain(v) for k, v in r.items()} for r in items.to_dict("records")]
    return list(items)


def _plain(v: Any) -> Any:
    """A pandas cell as the ITEMS row value: NaN -> None, numpy arrays (list columns) -> lists."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


class ItemEncoder:
    """A trained embedding model ready for batch inference over ITEMS rows and query texts."""

    def __init__(
        self,
        model: nn.Module,
        cfg: ModelConfig,
        media_root: str | os.PathLike | None,
        use_audio: bool = True,
        batch_size: int = 64,
        threads: int = 1,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.device, self.precision = resolve_device(device), check_precision(precision)
        self.model, self.cfg, self.use_audio = model.eval().to(self.device), cfg, use_audio
        self.tokenizer = build_tokenizer(cfg.text)
        self.preprocessor = Preprocessor(cfg.preprocess, media_root, seed=0)
        self.batch_size, self.threads = batch_size, threads
        self.dims = tuple(model.matryoshka_dims)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        media_root: str | os.PathLike | None,
        batch_size: int = 64,
        threads: int = 1,
        device: str = "cpu",
        precision: str = "fp32",
        text_states_dir: str | os.PathLike | None = None,
    ) -> ItemEncoder:
        """`text_states_dir`: a cache directory holding the frozen text states of the catalogue (written by the
        trainer, `embedding.text_states`); used when its fingerprint matches the model's text tower."""
        from embedding.text_states import open_text_states

        torch.set_num_threads(threads)
        loaded = load_embedding_model(path)
        enc = cls(loaded.model, loaded.cfg, media_root, loaded.use_audio, batch_size, threads, device, precision)
        max_tokens = loaded.cfg.preprocess.max_text_tokens
        open_text_states(enc.model.text_tower, enc.tokenizer, max_tokens, text_states_dir)
        return enc

    def preprocess(self, items: pa.Table | pd.DataFrame | Sequence[dict[str, Any]]) -> list[ItemInputs]:
        return self.preprocess_with_reasons(items)[0]

    def preprocess_with_reasons(
        self, items: pa.Table | pd.DataFrame | Sequence[dict[str, Any]]
    ) -> tuple[list[ItemInputs], list[list[str]]]:
        """Model inputs per row, and per row the media it had to skip (reasons from preprocess.MEDIA_REASONS)."""
        out, reasons = [], []
        skipped = self.preprocessor.stats.skipped
        for row in _rows(items):
            before = dict(skipped)
            x = self.preprocessor(row, training=False)
            if not self.use_audio:
                x.audio, x.audio_frames = None, None
            out.append(x)
            reasons.append([r for r in skipped for _ in range(skipped[r] - before.get(r, 0))])
        return out, reasons

    def embed_inputs(self, inputs: Sequence[ItemInputs], task: str = "item") -> dict[int, np.ndarray]:
        torch.set_num_threads(self.threads)
        return embed_item_inputs(
            self.model, inputs, self.tokenizer, self.cfg.preprocess, task, self.batch_size, self.precision
        )

    def embed_items(self, items: pa.Table | pd.DataFrame | Sequence[dict[str, Any]]) -> dict[int, np.ndarray]:
        """ITEMS rows -> {d: (N, d) float32 L2-normalised}, in the rows' order."""
        return self.embed_inputs(self.preprocess(items), "item")

    def embed_queries(self, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Query texts -> {d: (Q, d) float32}."""
        return self.embed_inputs([Preprocessor.query(t) for t in texts], "query")


class SailEmbedder:
    """`embedding.batch_infer.Embedder` over an ItemEncoder: one Matryoshka size (`dims`, default the full D)."""

    def __init__(self, encoder: ItemEncoder, dims: int | None = None) -> None:
        self.encoder = encoder
        self.dims = dims or encoder.dims[-1]
        if self.dims not in encoder.dims:
            raise ValueError(f"dims {self.dims} is not a Matryoshka size of the model {encoder.dims}")

    def embed(self, items: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
        inputs, reasons = self.encoder.preprocess_with_reasons(items)
        return self.encoder.embed_inputs(inputs, "item")[self.dims], reasons


def sail_embedder(
    model_path: str,
    media_root: str | None = None,
    dims: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    text_states_dir: str | None = None,
) -> SailEmbedder:
    """Factory for `EmbedderSpec("embedding.infer:sail_embedder", {"model_path": ..., "media_root": ...})`."""
    enc = ItemEncoder.from_checkpoint(
        Path(model_path), media_root, batch_size, threads, device, precision, text_states_dir
    )
    return SailEmbedder(enc, dims)
