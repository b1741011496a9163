"""Item media: a cover and 4-8 frames (64x64 PNG) and an audio track (8 kHz mono 16-bit WAV), driven by topics.

Each topic has a visual and acoustic style: a palette (background, shape and stripe colours), a shape kind, a
stripe texture (angle, period), a tone with a chord and a beat rate. An item's media mixes its primary topic's
style with a smaller share of its secondary topic's, nudged by its content latent, with random placement (and
noise in the audio). Every item's media comes from its own random stream, so
`render_item_media(item_id, world_seed)` renders any item on demand, byte-identical to the files a
`files`-mode world writes.
"""

from __future__ import annotations

import colorsys
import io
import multiprocessing
import os
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from offline_eval.world.catalogue import Catalogue, build_catalogue, media_dir
from offline_eval.world.config import WorldConfig
from offline_eval.world.rng import stream

SHAPES = ("circle", "square", "triangle", "diamond", "cross")


@dataclass(frozen=True)
class TopicStyle:
    background: tuple[int, int, int]  # RGB background colour
    shape_color: tuple[int, int, int]  # RGB fill of the topic's shapes
    stripe_color: tuple[int, int, int]  # RGB of the stripe texture
    shape: str  # one of SHAPES
    stripe_angle: int  # degrees: 0, 45, 90 or 135
    stripe_period: int  # pixels between stripes
    tone_hz: float  # fundamental of the topic's tone
    chord: tuple[float, ...]  # frequency ratios played with the fundamental
    beat_hz: float  # rhythm: amplitude pulses per second


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=8)
def topic_styles(seed: int, n_topics: int) -> tuple[TopicStyle, ...]:
    """The style of every topic (distinct hues, shapes cycled, tones spread over 180-1400 Hz log-spaced)."""
    rng = stream(seed, "topic-style")
    hue_order = rng.permutation(n_topics)
    tone_order = rng.permutation(n_topics)
    styles = []
    for t in range(n_topics):
        h = (hue_order[t] + 0.3 * rng.random()) / n_topics
        tone = 180.0 * (1400.0 / 180.0) ** ((tone_order[t] + 0.5 * rng.random()) / n_topics)
        styles.append(
            TopicStyle(
                background=_rgb(h, 0.45 + 0.2 * rng.random(), 0.75 + 0.2 * rng.random()),
                shape_color=_rgb(h + 0.5, 0.7, 0.9),
                stripe_color=_rgb(h + 0.08, 0.6, 0.5),
                shape=SHAPES[t % len(SHAPES)],
                stripe_angle=int(rng.choice([0, 45, 90, 135])),
                stripe_period=int(rng.integers(4, 13)),
                tone_hz=float(tone),
                chord=(1.0, float(rng.choice([1.25, 1.333, 1.5]))),
                beat_hz=float(rng.uniform(1.0, 6.0)),
            )
        )
    return tuple(styles)


def style_dict(seed: int, n_topics: int) -> list[dict]:
    """Topic styles as JSON-ready dicts (recorded in truth/world.json)."""
    return [s.__dict__.copy() for s in topic_styles(seed, n_topics)]


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------


def _jitter(rgb: tuple[int, int, int], shift: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + s, 0, 255)) for c, s in zip(rgb, shift, strict=True))  # type: ignore[return-value]


@lru_cache(maxsize=256)
def _stripe_mask(angle: int, period: int, size: int) -> np.ndarray:
    """(size, size) bool mask of a topic's stripe texture."""
    y, x = np.mgrid[0:size, 0:size]
    coord = {0: y, 90: x, 45: x - y, 135: x + y}[angle]
    return (coord % period) < max(1, period // 3)


def _background(style: TopicStyle, bg: tuple[int, int, int], size: int, phase: int) -> Image.Image:
    mask = np.roll(_stripe_mask(style.stripe_angle, style.stripe_period, size), phase, axis=0)
    arr = np.where(mask[:, :, None], np.array(style.stripe_color, np.uint8), np.array(bg, np.uint8))
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _shape(draw: ImageDraw.ImageDraw, kind: str, x: float, y: float, r: float, fill: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    else:
        w = max(2.0, r / 3)
        draw.rectangle([x - r, y - w, x + r, y + w], fill=fill)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=fill)


def _layout(rng: np.random.Generator, size: int, n: int, r_range: tuple[float, float]) -> np.ndarray:
    """(n, 5): x, y, radius, vx, vy of each shape."""
    return np.column_stack(
        [
            rng.uniform(0, size, n),
            rng.uniform(0, size, n),
            rng.uniform(*r_range, n),
            rng.uniform(-3, 3, n),
            rng.uniform(-3, 3, n),
        ]
    )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _render_image(
    size: int,
    styles: tuple[TopicStyle, TopicStyle | None],
    bg_shift: np.ndarray,
    layouts: tuple[np.ndarray, np.ndarray],
    step: int,
) -> bytes:
    prim, sec = styles
    img = _background(prim, _jitter(prim.background, bg_shift), size, phase=step)
    draw = ImageDraw.Draw(img)
    for style, layout in ((prim, layouts[0]), (sec, layouts[1])):
        if style is None:
            continue
        for x, y, r, vx, vy in layout:
            _shape(draw, style.shape, (x + step * vx) % size, (y + step * vy) % size, r, style.shape_color)
    return _png(img)


# --------------------------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------------------------


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def _render_audio(
    rng: np.random.Generator,
    styles: tuple[TopicStyle, TopicStyle | None],
    latent: np.ndarray,
    n_samples: int,
    rate: int,
) -> bytes:
    prim, sec = styles
    t = np.arange(n_samples, dtype=np.float32) / np.float32(rate)
    f0 = prim.tone_hz * (1.0 + 0.02 * float(latent[3 % len(latent)]))
    sig = np.zeros(n_samples, np.float32)
    for k, ratio in enumerate(prim.chord):
        amp = np.float32(1.0 if k == 0 else 0.6)
        sig += amp * np.sin(np.float32(2 * np.pi * f0 * ratio) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    # the beat envelope varies slowly: computed every 10 ms and held
    hop = rate // 100
    tc = np.arange(0, n_samples, hop) / rate
    env = 0.3 + 0.7 * (0.5 + 0.5 * np.cos(2 * np.pi * prim.beat_hz * tc + rng.uniform(0, 2 * np.pi))) ** 3
    sig *= np.repeat(env.astype(np.float32), hop)[:n_samples]
    if sec is not None:
        sig += np.float32(0.5) * np.sin(np.float32(2 * np.pi * sec.tone_hz) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    sig += np.float32(0.15) * rng.standard_normal(n_samples, dtype=np.float32)
    sig *= np.float32(0.7 * 32767 / max(float(np.abs(sig).max()), 1e-9))
    return _wav(np.round(sig).astype(np.int16), rate)


# --------------------------------------------------------------------------------------------------------
# per item
# --------------------------------------------------------------------------------------------------------


def render_media(cfg: WorldConfig, cat: Catalogue, idx: int) -> dict:
    """Cover, frames and audio bytes of catalogue row `idx`."""
    styles_all = topic_styles(cfg.seed, cfg.n_topics)
    p, s = cat.topics[idx]
    styles = (styles_all[p], styles_all[s] if s >= 0 else None)
    rng = stream(cfg.seed, "item-media", int(cat.item_id[idx]))
    size = cfg.image_size
    latent = cat.content_latent[idx]
    bg_shift = 40.0 * latent[:3]

    def layouts() -> tuple[np.ndarray, np.ndarray]:
        return _layout(rng, size, int(rng.integers(2, 5)), (5, 13)), _layout(rng, size, 2, (3, 7))

    cover = _render_image(size, styles, bg_shift, layouts(), 0)
    scene = layouts()  # the frames show one scene whose shapes move from frame to frame
    frames = [_render_image(size, styles, bg_shift, scene, k) for k in range(int(cat.n_frames[idx]))]
    n_samples = int(cat.audio_ms[idx]) * cfg.audio_sample_rate // 1000
    audio = _render_audio(rng, styles, latent, n_samples, cfg.audio_sample_rate)
    return {"cover": cover, "frames": frames, "audio": audio}


def render_item_media(item_id: int, world_seed: int, size: str = "large", *, config: WorldConfig | None = None) -> dict:
    """Renders one item's media deterministically from the world's seed: dict(cover=bytes, frames=[bytes],
    audio=bytes). `size` names the preset the world was generated with (see the manifest); pass `config`
    instead for a world generated with overridden fields (`WorldConfig.from_dict(manifest["config"])`)."""
    cfg = config if config is not None else WorldConfig.for_size(size, seed=world_seed)
    if cfg.seed != world_seed:
        raise ValueError(f"config seed {cfg.seed} does not match world_seed {world_seed}")
    cat = build_catalogue(cfg)
    if not 1 <= item_id <= len(cat):
        raise KeyError(f"item {item_id} is not in the {cfg.size!r} world (item ids 1..{len(cat)})")
    return render_media(cfg, cat, item_id - 1)


def _write_range(cfg: WorldConfig, root: str, lo: int, hi: int) -> tuple[int, int]:
    cat = build_catalogue(cfg)
    files = nbytes = 0
    for idx in range(lo, hi):
        m = render_media(cfg, cat, idx)
        d = Path(root) / media_dir(int(cat.item_id[idx]))
        d.mkdir(parents=True, exist_ok=True)
        blobs = {"cover.png": m["cover"], "audio.wav": m["audio"]}
        blobs.update({f"frame_{k}.png": f for k, f in enumerate(m["frames"])})
        for name, data in blobs.items():
            (d / name).write_bytes(data)
            files += 1
            nbytes += len(data)
    return files, nbytes


def write_media_files(cfg: WorldConfig, root: Path, workers: int = 1) -> dict[str, int]:
    """Writes every item's media under `root` (in `workers` processes). Returns file and byte counts."""
    n = cfg.n_items
    workers = max(1, min(workers, os.cpu_count() or 1))
    if workers == 1:
        files, nbytes = _write_range(cfg, str(root), 0, n)
        return {"media_files": files, "media_bytes": nbytes}
    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    # spawn, not fork: the caller may hold threads (Spark, polars, torch) whose locks a forked child would inherit
    # held, and such a child can hang forever
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(
            pool.map(
                _write_range,
                [cfg] * (len(bounds) - 1),
                [str(root)] * (len(bounds) - 1),
                bounds[:-1].tolist(),
                bounds[1:].tolist(),
            )
        )
    return {"media_files": sum(p[0] for p in parts), "media_bytes": sum(p[1] for p in parts)}
