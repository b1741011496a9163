"""Item media: a cover and 4-8 frames (64x64 PNG) and an audio track (8 kHz mono 16-bit WAV), driven by topics.

Each topic has a visual and acoustic style: a palette (background, shape and stripe colours), a shape kind, a
stripe texture (angle, period), a tone with a chord and a beat rate. An item's media mixes its primary topic's
style with a smaller share of its secondary topic's, nudged by its content latent, with random placement (and
noise in the audio). Every item's media comes from its own random streams, so
`render_item_media(item_id, world_seed)` renders any item on demand, byte-identical to the files a
`files`-mode world writes.

Two knobs add what short videos show beyond their topic (at 0, the default, neither changes a byte):

- `collab_in_content` > 0 (see `sources.world.catalogue` for how the sound and style latents make up a share
  of the collaborative latent): the audio mixes in the item's background sound, three partials, one in each of
  SOUND_BANDS_HZ (2.25-3.85 kHz, above every topic tone and chord, which stay under ~2.2 kHz), pulsing at a rhythm
  rate; and every cover and frame carries the author's style mark, a 2-pixel border with a dashed ring inside it.
  Both are smooth functions of the latent: `sound_signature` / `style_mark` map SIGNATURE_DIMS fixed unit
  projections of it through the normal CDF to partial frequencies, partial amplitudes and the rhythm rate, or to
  the two RGB colours and the dash share. An item plays its sound from its own offset, and its mark's colours are
  jittered a little per item.
- `quality_in_frames` = q > 0: an item shows its production quality noisily. Its degradation level is
  q * Phi(-(quality / QUALITY_SD + e) / sqrt(2)), e ~ N(0, 1) per item, so the level is uniform on [0, q] and
  correlates about -0.7 with quality; the footage (not the style mark) is then blurred, flattened in contrast and
  given grain in proportion to the level.
"""

from __future__ import annotations

import colorsys
import io
import math
import multiprocessing
import os
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sources.world.catalogue import QUALITY_SD, Catalogue, build_catalogue, media_dir
from sources.world.config import WorldConfig
from sources.world.rng import stream

SHAPES = ("circle", "square", "triangle", "diamond", "cross")

SIGNATURE_DIMS = 7
"""Projections of a sound's (an author style's) latent that its signature shows."""
SOUND_BANDS_HZ = ((2250.0, 2700.0), (2700.0, 3250.0), (3250.0, 3850.0))
"""One background-sound partial per band (log-uniform inside it); above every topic tone and chord (<= ~2.2 kHz)."""
SOUND_AMP_RANGE = (0.1, 0.35)
"""Amplitude range of each background partial (the topic tone's fundamental has amplitude 1)."""
SOUND_RHYTHM_HZ = (1.5, 8.0)
"""Range of a background sound's pulse rate."""
MARK_BAND_PX = 2
"""Width of the style mark's outer border band; its dashed ring is the pixel ring just inside."""
MARK_DASH_PX = 8
"""Period of the dashes of the style mark's inner ring, pixels."""
MARK_JITTER = 6.0
"""Standard deviation of the per-item shift of the style mark's colours (RGB units)."""
QUALITY_BLUR_PX = 1.6
"""Gaussian blur radius of the footage at degradation level 1."""
QUALITY_CONTRAST_LOSS = 0.5
"""Share of the footage's contrast lost at degradation level 1."""
QUALITY_GRAIN = 6.0
"""Standard deviation of the footage's pixel grain at degradation level 1 (RGB units)."""


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
# sound and style signatures (collab_in_content > 0)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoundSignature:
    partials_hz: tuple[float, ...]  # one partial per SOUND_BANDS_HZ band
    partial_amps: tuple[float, ...]  # amplitude of each partial (the topic tone's fundamental is 1)
    rhythm_hz: float  # pulses per second of the sound's envelope


@dataclass(frozen=True)
class StyleMark:
    outer: tuple[int, int, int]  # RGB of the outer border band
    inner: tuple[int, int, int]  # RGB of the dashed inner ring
    dash: float  # share of each MARK_DASH_PX period of the inner ring that is painted (rounded to whole pixels)


@lru_cache(maxsize=16)
def signature_projections(seed: int, name: str, dim: int) -> np.ndarray:
    """(SIGNATURE_DIMS, dim) unit rows: the directions of a latent that the signature `name` shows."""
    p = stream(seed, name).standard_normal((SIGNATURE_DIMS, dim))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _signature_coords(seed: int, name: str, latent: np.ndarray) -> list[float]:
    """The latent's SIGNATURE_DIMS projections through the normal CDF: smooth, in (0, 1), about uniform."""
    z = signature_projections(seed, name, len(latent)) @ np.asarray(latent, np.float64)
    return [0.5 * (1.0 + math.erf(float(v) / math.sqrt(2.0))) for v in z]


def sound_signature(seed: int, latent: np.ndarray) -> SoundSignature:
    """The background sound of a sound latent (a smooth function of it)."""
    u = _signature_coords(seed, "sound-signature", latent)
    lo_amp, hi_amp = SOUND_AMP_RANGE
    lo_r, hi_r = SOUND_RHYTHM_HZ
    return SoundSignature(
        partials_hz=tuple(lo * (hi / lo) ** u[j] for j, (lo, hi) in enumerate(SOUND_BANDS_HZ)),
        partial_amps=tuple(lo_amp + (hi_amp - lo_amp) * u[3 + j] for j in range(len(SOUND_BANDS_HZ))),
        rhythm_hz=lo_r + (hi_r - lo_r) * u[6],
    )


def style_mark(seed: int, latent: np.ndarray) -> StyleMark:
    """The style mark of an author style latent (a smooth function of it)."""
    u = _signature_coords(seed, "style-signature", latent)
    return StyleMark(
        outer=tuple(int(round(30 + 195 * v)) for v in u[0:3]),  # type: ignore[arg-type]
        inner=tuple(int(round(30 + 195 * v)) for v in u[3:6]),  # type: ignore[arg-type]
        dash=0.15 + 0.7 * u[6],
    )


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


@lru_cache(maxsize=64)
def _mark_masks(size: int, dash_px: int) -> tuple[Image.Image, Image.Image]:
    """(size, size) masks ("L", 255 = paint) of the style mark's outer band and of its inner ring's dashes."""
    y, x = np.mgrid[0:size, 0:size]
    edge = np.minimum(np.minimum(y, x), np.minimum(size - 1 - y, size - 1 - x))  # distance to the nearest edge
    along = np.where((y == edge) | (size - 1 - y == edge), x, y)  # position along the ring
    outer = edge < MARK_BAND_PX
    dashes = (edge == MARK_BAND_PX) & ((along % MARK_DASH_PX) < dash_px)
    return tuple(Image.fromarray((255 * m).astype(np.uint8), "L") for m in (outer, dashes))  # type: ignore[return-value]


def _draw_mark(img: Image.Image, mark: StyleMark) -> Image.Image:
    outer, dashes = _mark_masks(img.size[0], int(round(mark.dash * MARK_DASH_PX)))
    img.paste(mark.outer, mask=outer)
    img.paste(mark.inner, mask=dashes)
    return img


def _degrade(img: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Lower production quality: blur, contrast loss and grain in proportion to `level` in [0, 1]."""
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(QUALITY_BLUR_PX * level)), np.float32)
    mean = arr.mean(axis=(0, 1))
    arr = mean + (1.0 - QUALITY_CONTRAST_LOSS * level) * (arr - mean)
    arr += np.float32(QUALITY_GRAIN * level) * rng.standard_normal(arr.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")


@dataclass
class FrameLook:
    """What an item's cover and frames show beyond its topics (see the module doc)."""

    mark: StyleMark | None  # the author's style mark with this item's jitter (None: collab_in_content = 0)
    degrade: float  # degradation level in [0, quality_in_frames]: 0 is crisp
    rng: np.random.Generator  # the item's grain draws, one image after the other

    def apply(self, img: Image.Image) -> Image.Image:
        if self.degrade > 0:
            img = _degrade(img, self.degrade, self.rng)
        return img if self.mark is None else _draw_mark(img, self.mark)


def frame_look(cfg: WorldConfig, cat: Catalogue, idx: int) -> FrameLook | None:
    """The look of catalogue row `idx`'s images; None when both knobs are 0 (the images are the topic's only)."""
    if cfg.collab_in_content == 0 and cfg.quality_in_frames == 0:
        return None
    item_id = int(cat.item_id[idx])
    mark = None
    if cfg.collab_in_content > 0:
        base = style_mark(cfg.seed, cat.style_latent[cat.author_id[idx] - 1])
        shift = MARK_JITTER * stream(cfg.seed, "item-style-mark", item_id).standard_normal(6)
        mark = StyleMark(_jitter(base.outer, shift[:3]), _jitter(base.inner, shift[3:]), base.dash)
    rng = stream(cfg.seed, "item-frame-quality", item_id)
    shown = (float(cat.quality[idx]) / QUALITY_SD + rng.standard_normal()) / math.sqrt(2.0)  # ~ N(0, 1)
    level = cfg.quality_in_frames * 0.5 * (1.0 - math.erf(shown / math.sqrt(2.0)))  # q * Phi(-shown)
    return FrameLook(mark, level, rng)


def _render_image(
    size: int,
    styles: tuple[TopicStyle, TopicStyle | None],
    bg_shift: np.ndarray,
    layouts: tuple[np.ndarray, np.ndarray],
    step: int,
    look: FrameLook | None = None,
) -> bytes:
    prim, sec = styles
    img = _background(prim, _jitter(prim.background, bg_shift), size, phase=step)
    draw = ImageDraw.Draw(img)
    for style, layout in ((prim, layouts[0]), (sec, layouts[1])):
        if style is None:
            continue
        for x, y, r, vx, vy in layout:
            _shape(draw, style.shape, (x + step * vx) % size, (y + step * vy) % size, r, style.shape_color)
    if look is not None:
        img = look.apply(img)
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


def _render_sound(sig: SoundSignature, n_samples: int, rate: int, offset_s: float) -> np.ndarray:
    """(n_samples,) float32: the background sound from `offset_s` seconds into it (partials times a pulse)."""
    t = np.arange(n_samples, dtype=np.float32) / np.float32(rate)
    tone = np.zeros(n_samples, np.float32)
    for k, (f, amp) in enumerate(zip(sig.partials_hz, sig.partial_amps, strict=True)):
        phase = (2 * np.pi * f * offset_s + 2.1 * k) % (2 * np.pi)  # the offset, in float64, as a phase
        tone += np.float32(amp) * np.sin(np.float32(2 * np.pi * f) * t + np.float32(phase))
    hop = rate // 100  # the pulse envelope, like the topic's beat, is computed every 10 ms and held
    tc = offset_s + np.arange(0, n_samples, hop) / rate
    env = 0.2 + 0.8 * (0.5 + 0.5 * np.cos(2 * np.pi * sig.rhythm_hz * tc)) ** 2
    return tone * np.repeat(env.astype(np.float32), hop)[:n_samples]


def background_track(cfg: WorldConfig, cat: Catalogue, idx: int, n_samples: int) -> np.ndarray | None:
    """Catalogue row `idx`'s background sound, played from its own offset; None when collab_in_content = 0."""
    if cfg.collab_in_content == 0:
        return None
    sig = sound_signature(cfg.seed, cat.sound_latent[cat.sound_id[idx] - 1])
    offset = float(stream(cfg.seed, "item-sound-offset", int(cat.item_id[idx])).uniform(0.0, 30.0))
    return _render_sound(sig, n_samples, cfg.audio_sample_rate, offset)


def _render_audio(
    rng: np.random.Generator,
    styles: tuple[TopicStyle, TopicStyle | None],
    latent: np.ndarray,
    n_samples: int,
    rate: int,
    background: np.ndarray | None = None,
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
    if background is not None:
        sig += background
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

    look = frame_look(cfg, cat, idx)
    cover = _render_image(size, styles, bg_shift, layouts(), 0, look)
    scene = layouts()  # the frames show one scene whose shapes move from frame to frame
    frames = [_render_image(size, styles, bg_shift, scene, k, look) for k in range(int(cat.n_frames[idx]))]
    n_samples = int(cat.audio_ms[idx]) * cfg.audio_sample_rate // 1000
    background = background_track(cfg, cat, idx, n_samples)
    audio = _render_audio(rng, styles, latent, n_samples, cfg.audio_sample_rate, background)
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


def render_from_config(item_id: int, config: dict) -> dict:
    """`render_item_media` for a world described by its manifest's `config`: the renderer of a `core.media.MediaStore`
    in mode "on_demand"."""
    cfg = WorldConfig.from_dict(config)
    return render_item_media(item_id, cfg.seed, config=cfg)


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
