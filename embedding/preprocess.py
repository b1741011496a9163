"""Preprocessing: an ITEMS row (dict) plus the media root -> model inputs, and a collate into an `ItemBatch`.

Notation: B items, L text tokens, F frames (cover first), C audio chunks, M mel bins, T log-mel frames per chunk.

- Text: the fields are joined with field tags, "title: ... ocr: ... asr: ... tags: a, b". During training each
  field is dropped with probability `field_drop_prob` (a seeded generator), but one non-empty field always stays.
- Images: cover + frames, PNG bytes decoded with Pillow, RGB, resized to (H, W), scaled to [0, 1] and normalised
  per channel -> (F, 3, H, W).
- Audio: WAV bytes (16-bit PCM via the stdlib `wave`, anything else via soundfile) -> mono at `sample_rate` ->
  10 s chunks (a shorter clip is one chunk; the last chunk is zero-padded) -> log-mel (C, M, T) plus the number of
  real (non-padding) frames per chunk.
- Bad media never crash: an unsafe path, a missing file, or bytes that do not decode make that modality absent for
  the item, and the reason is counted in `MediaStats`.
"""

from __future__ import annotations

import io
import math
import os
import re
import wave
import zlib
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.media import UnsafeMediaPath, read_media
from embedding.config import PreprocessConfig, TextTowerConfig, resolve_load_dir

TEXT_FIELDS = (("title", "title"), ("ocr_text", "ocr"), ("asr_text", "asr"), ("tags", "tags"))
"""(ITEMS column, tag written before its text), in the order they are joined."""

MEDIA_REASONS = ("missing", "unsafe_path", "corrupt_image", "corrupt_audio", "empty_audio")
"""Reasons a media file can be skipped, as counted by `MediaStats`."""


@dataclass
class MediaStats:
    """Counts of media files skipped, by reason (see MEDIA_REASONS), and of files decoded."""

    skipped: Counter = field(default_factory=Counter)  # reason -> files skipped
    decoded: Counter = field(default_factory=Counter)  # 'image' / 'audio' -> files decoded

    def skip(self, reason: str) -> None:
        if reason not in MEDIA_REASONS:
            raise ValueError(f"unknown media skip reason {reason!r}; known: {MEDIA_REASONS}")
        self.skipped[reason] += 1

    def as_dict(self) -> dict[str, int]:
        return {**{f"skipped_{k}": v for k, v in sorted(self.skipped.items())}, **dict(self.decoded)}


# --------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------


def _field_text(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    return str(value).strip()


def build_text(row: dict[str, Any], drop_prob: float = 0.0, generator: torch.Generator | None = None) -> str:
    """The tagged text of an item ("title: ... ocr: ... asr: ... tags: ..."), '' when every field is empty.

    With `drop_prob > 0` each non-empty field is dropped independently (draws from `generator`); when every field
    would be dropped, one of them, chosen uniformly, is kept.
    """
    present = [(tag, text) for column, tag in TEXT_FIELDS if (text := _field_text(row, column))]
    if drop_prob > 0 and present:
        keep = (torch.rand(len(present), generator=generator) >= drop_prob).tolist()
        if not any(keep):
            keep[int(torch.randint(len(present), (1,), generator=generator))] = True
        present = [p for p, k in zip(present, keep, strict=True) if k]
    return " ".join(f"{tag}: {text}" for tag, text in present)


class Tokenizer(Protocol):
    """Texts -> (input_ids (B, L) int64, attention_mask (B, L) int64), padded to the longest, truncated to L."""

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class HashTokenizer:
    """Lower-cased word pieces (\\w+ runs and single punctuation) hashed (crc32) into `vocab_size` buckets.

    ids: 0 PAD, 1 CLS (always first, so an empty text still has one token), 2 SEP (unused), 3.. words. Stable across
    processes (crc32, not Python's salted `hash`). Used by the tiny random text tower.
    """

    _word = re.compile(r"\w+|[^\w\s]")

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 8:
            raise ValueError("vocab_size must be >= 8")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        words = self._word.findall(text.lower())
        return [1] + [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in words]

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.encode(t)[:max_length] for t in texts]
        width = max((len(e) for e in encoded), default=1)
        ids = torch.zeros(len(texts), width, dtype=torch.long)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        return ids, mask


class HFTokenizer:
    """A local Hugging Face tokenizer (never downloads)."""

    def __init__(self, load_dir: str) -> None:
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = AutoTokenizer.from_pretrained(load_dir, local_files_only=True)

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].long()


def build_tokenizer(cfg: TextTowerConfig) -> Tokenizer:
    """The tokenizer that matches the text tower of `cfg` (hashing for the tiny tower, else the dir's own)."""
    load_dir = resolve_load_dir(cfg.load_dir)
    return HashTokenizer(cfg.vocab_size) if load_dir is None else HFTokenizer(load_dir)


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


def decode_image(data: bytes, cfg: PreprocessConfig) -> torch.Tensor:
    """PNG/JPEG bytes -> (3, H, W) float32, resized to `image_size`, normalised by image_mean / image_std.

    Raises any Pillow / OS error on bytes that do not decode (the caller counts them).
    """
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGB")
    if rgb.size != (cfg.image_size, cfg.image_size):
        rgb = rgb.resize((cfg.image_size, cfg.image_size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
    mean = torch.tensor(cfg.image_mean).view(3, 1, 1)
    std = torch.tensor(cfg.image_std).view(3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes -> (mono float32 samples in [-1, 1], sample rate). 16-bit PCM via `wave`, else soundfile."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
        if width != 2:
            raise wave.Error(f"sample width {width}")
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        if len(samples) % channels:
            raise wave.Error("truncated frames")
        return samples.reshape(-1, channels).mean(axis=1), rate
    except (wave.Error, EOFError):
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples.mean(axis=1), int(rate)


def resample(x: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """(S,) -> (S * target / rate,) by linear interpolation (adequate for the coarse log-mel features)."""
    if rate == target:
        return x
    n_out = max(1, int(round(x.shape[0] * target / rate)))
    return F.interpolate(x.view(1, 1, -1), size=n_out, mode="linear", align_corners=False).view(-1)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters (peak 1), as torchaudio's `melscale_fbanks(norm=None)`."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)  # (n_freq,)
    mel_pts = torch.linspace(float(_hz_to_mel(torch.tensor(f_min))), float(_hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)  # (n_mels + 2,)
    lower, centre, upper = hz_pts[:-2], hz_pts[1:-1], hz_pts[2:]
    f = freqs.unsqueeze(1)  # (n_freq, 1)
    up = (f - lower) / (centre - lower)
    down = (upper - f) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)  # (n_freq, n_mels)


def log_mel_chunks(samples: np.ndarray, rate: int, cfg: PreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono samples -> (log-mel chunks (C, M, T), real frames per chunk (C,) int64), C <= max_chunks.

    A clip of <= chunk_seconds is one chunk; longer clips are cut into chunk_seconds pieces, the last zero-padded.
    Raises ValueError on an empty clip.
    """
    keep = int(math.ceil(cfg.max_chunks * cfg.chunk_seconds * rate))  # never resample audio that is cut anyway
    x = resample(torch.as_tensor(samples[:keep], dtype=torch.float32), rate, cfg.sample_rate)
    if x.numel() == 0:
        raise ValueError("empty audio")
    n = cfg.chunk_samples
    n_chunks = min(cfg.max_chunks, math.ceil(x.numel() / n))
    x = x[: n_chunks * n]
    real = x.numel()
    x = F.pad(x, (0, n_chunks * n - real)).view(n_chunks, n)  # (C, samples)
    spec = torch.stft(
        x, cfg.n_fft, cfg.hop_length, window=torch.hann_window(cfg.n_fft), center=True, return_complex=True
    )  # (C, n_freq, T)
    power = spec.abs() ** 2
    mel = torch.einsum("cft,fm->cmt", power, mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate))
    log_mel = torch.log(mel + 1e-6)  # (C, M, T)
    real_per_chunk = torch.clamp(real - torch.arange(n_chunks) * n, min=0, max=n)
    frames = torch.clamp(real_per_chunk // cfg.hop_length + 1, max=cfg.chunk_frames)  # (C,)
    return log_mel, frames.long()


# --------------------------------------------------------------------------------------------------------
# Items and batches
# --------------------------------------------------------------------------------------------------------


@dataclass
class ItemInputs:
    """One item, preprocessed. Absent modalities are None; `text` is '' when the item has no text."""

    text: str
    frames: torch.Tensor | None = None  # (F, 3, H, W)
    audio: torch.Tensor | None = None  # (C, M, T)
    audio_frames: torch.Tensor | None = None  # (C,) real log-mel frames per chunk


class Preprocessor:
    """ITEMS rows -> `ItemInputs`, reading media under `media_root`; counts skipped media in `self.stats`."""

    def __init__(self, cfg: PreprocessConfig, media_root: str | Path | None, seed: int = 0) -> None:
        self.cfg = cfg
        self.media_root = media_root
        self.stats = MediaStats()
        self.generator = torch.Generator().manual_seed(seed)

    def _read(self, ref: str) -> bytes | None:
        if self.media_root is None:
            self.stats.skip("missing")
            return None
        try:
            return read_media(self.media_root, ref)
        except UnsafeMediaPath:
            self.stats.skip("unsafe_path")
        except OSError:  # FileNotFoundError, permission, a directory
            self.stats.skip("missing")
        return None

    def images(self, row: dict[str, Any]) -> torch.Tensor | None:
        """(F, 3, H, W) for the cover + frames that decode, None when none does."""
        refs = ([row["cover_path"]] if row.get("cover_path") else []) + list(row.get("frame_paths") or [])
        out = []
        for ref in refs[: self.cfg.max_frames]:
            data = self._read(ref)
            if data is None:
                continue
            try:
                out.append(decode_image(data, self.cfg))
                self.stats.decoded["image"] += 1
            except Exception:  # noqa: BLE001 - any decoder failure means a corrupt file
                self.stats.skip("corrupt_image")
        return torch.stack(out) if out else None

    def audio(self, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log-mel chunks (C, M, T), real frames (C,)) or None when absent / unreadable."""
        ref = row.get("audio_path")
        if not ref:
            return None
        data = self._read(ref)
        if data is None:
            return None
        try:
            samples, rate = decode_wav(data)
        except Exception:  # noqa: BLE001 - any decoder failure means a corrupt file
            self.stats.skip("corrupt_audio")
            return None
        if samples.size == 0 or rate <= 0 or not np.isfinite(samples).all():
            self.stats.skip("empty_audio" if samples.size == 0 else "corrupt_audio")
            return None
        self.stats.decoded["audio"] += 1
        return log_mel_chunks(samples, rate, self.cfg)

    def __call__(self, row: dict[str, Any], training: bool = False) -> ItemInputs:
        """One ITEMS row -> ItemInputs (field dropout only when `training`)."""
        drop = self.cfg.field_drop_prob if training else 0.0
        audio = self.audio(row)
        return ItemInputs(
            text=build_text(row, drop, self.generator),
            frames=self.images(row),
            audio=None if audio is None else audio[0],
            audio_frames=None if audio is None else audio[1],
        )

    @staticmethod
    def query(text: str) -> ItemInputs:
        """A text-only input (a search query, an instruction-only probe)."""
        return ItemInputs(text=text.strip())


@dataclass
class ItemBatch:
    """A padded batch of items. Shapes: B items, L tokens, F frames, C chunks, M mels, T frames per chunk."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64, 1 at real tokens
    frames: torch.Tensor  # (B, F, 3, H, W) float32; F may be 0 when no item has images
    frame_mask: torch.Tensor  # (B, F) bool
    audio: torch.Tensor  # (B, C, M, T) float32; C may be 0 when no item has audio
    audio_chunk_mask: torch.Tensor  # (B, C) bool
    audio_frames: torch.Tensor  # (B, C) int64, real log-mel frames per chunk (0 at padding chunks)
    has_text: torch.Tensor  # (B,) bool
    has_vision: torch.Tensor  # (B,) bool
    has_audio: torch.Tensor  # (B,) bool
    texts: list[str]  # the B tagged texts (cache keys for a frozen text tower)

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> ItemBatch:
        moved = {
            f.name: getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor) else None
            for f in fields(self)
        }
        moved["texts"] = self.texts
        return ItemBatch(**moved)


def collate_items(items: list[ItemInputs], tokenizer: Tokenizer, cfg: PreprocessConfig) -> ItemBatch:
    """Pad `items` into an ItemBatch (frames and chunks padded to the batch maximum, masks mark the real ones)."""
    if not items:
        raise ValueError("collate_items needs at least one item")
    b, hw = len(items), cfg.image_size
    input_ids, attention_mask = tokenizer([it.text for it in items], cfg.max_text_tokens)

    n_frames = max((it.frames.shape[0] for it in items if it.frames is not None), default=0)
    frames = torch.zeros(b, n_frames, 3, hw, hw)
    frame_mask = torch.zeros(b, n_frames, dtype=torch.bool)
    n_chunks = max((it.audio.shape[0] for it in items if it.audio is not None), default=0)
    audio = torch.zeros(b, n_chunks, cfg.n_mels, cfg.chunk_frames)
    chunk_mask = torch.zeros(b, n_chunks, dtype=torch.bool)
    audio_frames = torch.zeros(b, n_chunks, dtype=torch.long)
    for i, it in enumerate(items):
        if it.frames is not None:
            frames[i, : it.frames.shape[0]] = it.frames
            frame_mask[i, : it.frames.shape[0]] = True
        if it.audio is not None:
            c = it.audio.shape[0]
            audio[i, :c] = it.audio
            chunk_mask[i, :c] = True
            audio_frames[i, :c] = it.audio_frames
    return ItemBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        frames=frames,
        frame_mask=frame_mask,
        audio=audio,
        audio_chunk_mask=chunk_mask,
        audio_frames=audio_frames,
        has_text=torch.tensor([bool(it.text) for it in items]),
        has_vision=frame_mask.any(dim=1) if n_frames else torch.zeros(b, dtype=torch.bool),
        has_audio=chunk_mask.any(dim=1) if n_chunks else torch.zeros(b, dtype=torch.bool),
        texts=[it.text for it in items],
    )
