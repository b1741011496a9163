"""Embedding-model checkpoints: one safetensors file per model, weights plus the config as JSON metadata.

Nothing is pickled, and no code runs on load. The metadata's `format` names the variant: "sail-embedding-v1" (the LLM
fuser, `SailEmbeddingModel`) or "sail-concat-v1" (`ConcatFusionModel`); `use_audio` records whether the model was
trained with audio. `save_model` / `load_model` handle the fuser model alone (the config may be passed instead of
stored); `save_embedding_model` / `load_embedding_model` either variant, as the trainer writes it and the inference
side reads it. `checkpoint_version` names a checkpoint by its model-defining metadata and tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from embedding.config import ModelConfig
from embedding.model import ConcatFusionModel, SailEmbeddingModel, build_embedding_model, build_model

FORMAT_SAIL = "sail-embedding-v1"
FORMAT_CONCAT = "sail-concat-v1"


def _write(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """The weights and `metadata` to `path` as safetensors, through a temporary sibling and an atomic rename."""
    from safetensors.torch import save_model as st_save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    st_save_model(model, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    from safetensors.torch import load_model as st_load_model

    st_load_model(model, str(path), strict=True)


def save_model(model: SailEmbeddingModel, path: str | os.PathLike) -> Path:
    """Write the weights (and the model's config, as JSON metadata) to `path` as safetensors, atomically."""
    metadata = {"format": FORMAT_SAIL}
    if model.cfg is not None:
        metadata["config"] = json.dumps(model.cfg.to_dict())
    return _write(model, path, metadata)


def load_model(path: str | os.PathLike, cfg: ModelConfig | None = None) -> SailEmbeddingModel:
    """A model rebuilt from `cfg` (default: the config stored in the checkpoint) with the saved weights (strict)."""
    metadata = _metadata(path)
    if metadata.get("format") != FORMAT_SAIL:
        raise ValueError(f"{path} is not a {FORMAT_SAIL} checkpoint (metadata {metadata})")
    if cfg is None:
        if "config" not in metadata:
            raise ValueError(f"{path} stores no config; pass cfg")
        cfg = ModelConfig.from_dict(json.loads(metadata["config"]))
    model = build_model(cfg, load_weights=False)
    _load_weights(model, path)
    return model


def save_embedding_model(model: nn.Module, path: str | os.PathLike, use_audio: bool = True) -> Path:
    """Weights + config (+ variant, audio flag) as safetensors metadata, written atomically. A fuser model stays
    loadable by `load_model`."""
    fmt = FORMAT_CONCAT if isinstance(model, ConcatFusionModel) else FORMAT_SAIL
    metadata = {"format": fmt, "config": json.dumps(model.cfg.to_dict()), "use_audio": json.dumps(use_audio)}
    return _write(model, path, metadata)


@dataclass
class LoadedModel:
    model: nn.Module
    cfg: ModelConfig
    use_audio: bool
    fuser: bool


def load_embedding_model(path: str | os.PathLike) -> LoadedModel:
    """Either variant from a safetensors file written by `save_embedding_model` (or `save_model`)."""
    meta = _metadata(path)
    fmt = meta.get("format")
    if fmt not in (FORMAT_SAIL, FORMAT_CONCAT):
        raise ValueError(f"{path} is not an embedding-model checkpoint (format {fmt!r})")
    cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    model = build_embedding_model(cfg, fuser=fmt == FORMAT_SAIL, load_weights=False)
    _load_weights(model, path)
    model.eval()
    return LoadedModel(model, cfg, json.loads(meta.get("use_audio", "true")), fmt == FORMAT_SAIL)


MODEL_METADATA = ("format", "config", "use_audio")  # the checkpoint metadata that defines the model


def checkpoint_version(path: str | os.PathLike) -> str:
    """`sail-<digest>`: the model version of an embedding checkpoint (safetensors).

    SHA-256 over the canonical JSON (sorted keys) of the model-defining metadata (`MODEL_METADATA`), then every
    tensor sorted by name: its name, dtype, shape and raw bytes. Equal weights and config give one version whatever
    order the writer put the metadata keys or the tensors in; a single changed bit gives another.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if size < 8 or 8 + n > size:
            raise ValueError(f"{path}: not a safetensors file (header length {n}, file size {size})")
        header = json.loads(fh.read(n))
        meta = header.pop("__metadata__", None) or {}

        def parsed(v: str) -> Any:
            try:
                return json.loads(v)
            except ValueError:
                return v

        h = hashlib.sha256()
        defining = json.dumps({k: parsed(meta[k]) for k in MODEL_METADATA if k in meta}, sort_keys=True).encode()
        h.update(len(defining).to_bytes(8, "little") + defining)
        for name in sorted(header):
            info = header[name]
            start, end = info["data_offsets"]
            h.update(json.dumps([name, info["dtype"], info["shape"], end - start]).encode())
            fh.seek(8 + n + start)
            left = end - start
            while left:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    raise ValueError(f"{path}: truncated (tensor {name!r} ends past the end of the file)")
                h.update(block)
                left -= len(block)
    return f"sail-{h.hexdigest()[:12]}"
