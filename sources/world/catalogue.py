"""The item catalogue: hidden latents (topics, content latent, collaborative latent, quality), authors, background
sounds, creation times, durations, media layout and text fields.

Everything here is a pure function of the config (its own random streams), so `build_catalogue(cfg)` gives the
same catalogue whether or not the log is simulated; on-demand media rendering relies on that.

The collaborative latent. Every item has its own latent `own_i`, every background sound `s` a latent `sound_s` and
every author `a` a style latent `style_a`, all drawn by `collab_latents` (the same taste-community centroids, so a
sound or a style belongs to a community as an item does). Each item uses one sound (Zipf-like popularity over
`cfg.sound_count` sounds) and has one author. With rho = `cfg.collab_in_content`, the item's collaborative latent is

    c_i = sqrt(1 - rho) * own_i + sqrt(rho / 2) * sound_{s(i)} + sqrt(rho / 2) * style_{a(i)}

so rho is the share of its variance that comes from what the audio (the sound) and the frames (the author's style)
show (`sources.world.media`); titles, OCR, ASR and tags never show sounds or styles. At rho = 0, c_i = own_i
exactly: the sounds and styles are drawn from streams of their own, so every other draw of the world is unchanged.
Which sound and style latents each item has is ground truth (`item_signals_table`, written to truth/item_signals).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from core.contracts import Column, TableSchema
from sources.world.config import WorldConfig
from sources.world.rng import stream
from sources.world.vocab import FILLER_WORDS, GENERIC_TAGS, QUALITY_WORDS, Vocabulary, build_vocabulary

DAY_US = 86_400_000_000
"""Microseconds per day."""

QUALITY_SD = 0.5
"""Standard deviation of item quality (normal, mean 0)."""

SOUND_ZIPF_OFFSET = 2.0
"""Sound s (1-based) is used with probability proportional to 1 / (s + this - 1): sound 1 is the most used."""

ITEM_SIGNALS = TableSchema(
    name="item_signals",
    columns=(
        Column("item_id", "int64"),
        Column("sound_id", "int64", doc="background sound 1..n_sounds, heard in the audio when collab_in_content > 0"),
        Column("author_id", "int64", doc="author, whose style is seen in the frames when collab_in_content > 0"),
        Column("sound_latent", "list<float32>", doc="the sound's collaborative latent"),
        Column("style_latent", "list<float32>", doc="the author style's collaborative latent"),
    ),
    key=("item_id",),
    doc="Ground truth: what the audio and frames can show of each item's collaborative latent.",
)


def start_us(cfg: WorldConfig) -> int:
    """The log start (midnight UTC of cfg.start_date) in microseconds since the epoch."""
    d = dt.date.fromisoformat(cfg.start_date)
    return (d - dt.date(1970, 1, 1)).days * DAY_US


@dataclass(frozen=True)
class Catalogue:
    """Per-item arrays, row i is item id i + 1 (except the per-sound and per-author latents at the end)."""

    item_id: np.ndarray  # int64 ids 1..N
    created_us: np.ndarray  # int64 creation time, microseconds since the epoch
    created_day: np.ndarray  # int64 day index of creation relative to the log start (negative: before it)
    author_id: np.ndarray  # int64
    topics: np.ndarray  # int32 (N, 2): primary, secondary (-1: none)
    content_latent: np.ndarray  # float32 (N, content_dim), unit norm
    collab_latent: np.ndarray  # float32 (N, collab_dim), clustered, independent of topics (see the module doc)
    quality: np.ndarray  # float32 intrinsic appeal
    duration_ms: np.ndarray  # int64 video length
    n_frames: np.ndarray  # int64 frames per item
    audio_ms: np.ndarray  # int64 audio track length
    sound_id: np.ndarray  # int64 background sound, 1..n_sounds
    sound_latent: np.ndarray  # float32 (n_sounds, collab_dim): row s - 1 is sound s's collaborative latent
    style_latent: np.ndarray  # float32 (n_authors, collab_dim): row a - 1 is author a's style latent

    @property
    def primary(self) -> np.ndarray:
        return self.topics[:, 0]

    def __len__(self) -> int:
        return len(self.item_id)


def topic_directions(cfg: WorldConfig, topic_category: tuple[int, ...]) -> np.ndarray:
    """Unit content directions per topic; topics of one category share a component, so they are related."""
    rng = stream(cfg.seed, "topic-directions")
    cat_dirs = rng.standard_normal((cfg.n_categories, cfg.content_dim))
    own = rng.standard_normal((cfg.n_topics, cfg.content_dim))
    d = 0.6 * cat_dirs[np.asarray(topic_category)] + own
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def collab_latents(cfg: WorldConfig, name: str, n: int) -> np.ndarray:
    """(n, collab_dim) latents near one of cfg.collab_clusters shared centroids (a cluster each, uniformly),
    independent of topics; per-dimension variance ~1 (w^2 + (1 - w^2))."""
    centroids = stream(cfg.seed, "collab-centroids").standard_normal((cfg.collab_clusters, cfg.collab_dim))
    rng = stream(cfg.seed, name)
    w = cfg.collab_cluster_weight
    cluster = rng.integers(0, cfg.collab_clusters, n)
    return w * centroids[cluster] + np.sqrt(1 - w * w) * rng.standard_normal((n, cfg.collab_dim))


def _item_topics(rng: np.random.Generator, cfg: WorldConfig, n_authors: int, topic_category: np.ndarray):
    n, t = cfg.n_items, cfg.n_topics
    author_aff = rng.dirichlet(np.full(t, 0.2), size=n_authors)
    prolific = rng.pareto(1.5, n_authors) + 1.0
    author = rng.choice(n_authors, size=n, p=prolific / prolific.sum())
    cdf = np.cumsum(author_aff[author], axis=1)
    from_author = np.minimum((cdf < rng.random(n)[:, None]).sum(axis=1), t - 1)
    primary = np.where(rng.random(n) < cfg.author_topic_loyalty, from_author, rng.integers(0, t, n))
    # secondary topic: often a sibling in the same category, never the primary itself
    members = np.argsort(topic_category, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(topic_category))])
    c = topic_category[primary]
    same_cat = members[start[c] + (rng.random(n) * (start[c + 1] - start[c])).astype(np.int64)]
    secondary = np.where(rng.random(n) < 0.6, same_cat, rng.integers(0, t, n))
    has = (rng.random(n) < cfg.secondary_topic_prob) & (secondary != primary)
    topics = np.stack([primary, np.where(has, secondary, -1)], axis=1).astype(np.int32)
    return topics, (author + 1).astype(np.int64)


def _created(rng: np.random.Generator, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    n = cfg.n_items
    before = rng.random(n) < cfg.items_before_start_frac
    offset = np.where(
        before,
        -rng.random(n) * cfg.catalogue_lookback_days * DAY_US,
        rng.random(n) * cfg.days * DAY_US,
    ).astype(np.int64)
    created = start_us(cfg) + offset
    return created, np.floor_divide(offset, DAY_US)


@lru_cache(maxsize=4)
def build_catalogue(cfg: WorldConfig) -> Catalogue:
    """The world's catalogue (cached per config: it is immutable)."""
    vocab = world_vocabulary(cfg)
    rng = stream(cfg.seed, "catalogue")
    n = cfg.n_items
    n_authors = max(1, round(n / cfg.items_per_author))
    topics, author = _item_topics(rng, cfg, n_authors, np.asarray(vocab.topic_category))
    dirs = topic_directions(cfg, vocab.topic_category)
    sec = topics[:, 1]
    latent = dirs[topics[:, 0]] + np.where(sec[:, None] >= 0, 0.5 * dirs[np.maximum(sec, 0)], 0.0)
    latent = latent + 0.35 * rng.standard_normal((n, cfg.content_dim))
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    collab = collab_latents(cfg, "item-collab", n)
    quality = QUALITY_SD * rng.standard_normal(n)
    created, created_day = _created(rng, cfg)
    lo, hi = cfg.duration_s_range
    duration = (1000 * (lo + (hi - lo) * rng.beta(1.3, 4.0, n))).astype(np.int64)
    n_frames = rng.integers(cfg.frames_range[0], cfg.frames_range[1] + 1, n)
    alo, ahi = cfg.audio_s_range
    audio_ms = (1000 * (alo + (ahi - alo) * rng.beta(1.0, cfg.audio_beta_b, n))).astype(np.int64)
    sound = item_sounds(cfg)
    sound_latent = collab_latents(cfg, "sound-collab", cfg.sound_count)
    style_latent = collab_latents(cfg, "author-style-collab", n_authors)
    collab = mix_collab(collab, sound_latent[sound - 1], style_latent[author - 1], cfg.collab_in_content)
    return Catalogue(
        item_id=np.arange(1, n + 1, dtype=np.int64),
        created_us=created,
        created_day=created_day,
        author_id=author,
        topics=topics,
        content_latent=latent.astype(np.float32),
        collab_latent=collab.astype(np.float32),
        quality=quality.astype(np.float32),
        duration_ms=duration,
        n_frames=n_frames.astype(np.int64),
        audio_ms=audio_ms,
        sound_id=sound,
        sound_latent=sound_latent.astype(np.float32),
        style_latent=style_latent.astype(np.float32),
    )


def item_sounds(cfg: WorldConfig) -> np.ndarray:
    """(n_items,) int64 sound id (1..cfg.sound_count) of each item, Zipf-like: a few sounds are used by many items
    (from a stream of its own, so no other draw of the world changes)."""
    weights = 1.0 / (np.arange(cfg.sound_count) + SOUND_ZIPF_OFFSET)
    rng = stream(cfg.seed, "item-sound")
    return (rng.choice(cfg.sound_count, size=cfg.n_items, p=weights / weights.sum()) + 1).astype(np.int64)


def mix_collab(own: np.ndarray, sound: np.ndarray, style: np.ndarray, rho: float) -> np.ndarray:
    """sqrt(1 - rho) * own + sqrt(rho / 2) * (sound + style), row by row; `own` itself (unchanged) at rho = 0."""
    if rho == 0:
        return own
    return np.sqrt(1.0 - rho) * own + np.sqrt(rho / 2.0) * (sound + style)


@lru_cache(maxsize=4)
def world_vocabulary(cfg: WorldConfig) -> Vocabulary:
    return build_vocabulary(cfg.seed, cfg.n_topics, cfg.n_categories, cfg.words_per_topic, cfg.n_noise_words)


def media_dir(item_id: int) -> str:
    """The item's media directory relative to the media root, e.g. items/012/12345."""
    return f"items/{item_id // 1000:03d}/{item_id}"


# --------------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------------


class _WordSampler:
    """Vectorised word draws: topic words follow a Zipf-like law so a topic's head words recur."""

    def __init__(self, rng: np.random.Generator, vocab: Vocabulary, topics: np.ndarray):
        self.rng = rng
        self.topic_words = np.array(vocab.topic_words, dtype=object)  # (T, W)
        w = 1.0 / (np.arange(self.topic_words.shape[1]) + 2.0)
        self.zipf_cdf = np.cumsum(w / w.sum())
        self.noise = np.array(vocab.noise_words, dtype=object)
        self.filler = np.array(FILLER_WORDS, dtype=object)
        self.topics = topics

    def field(self, lengths: np.ndarray, mix: tuple[float, float, float, float]) -> list[list[str]]:
        """Per item, `lengths[i]` words drawn from primary / secondary topic, filler and noise words with the
        given mix (secondary draws fall back to the primary topic when the item has none)."""
        rng = self.rng
        owner = np.repeat(np.arange(len(lengths)), lengths)
        n = len(owner)
        src = rng.choice(4, size=n, p=np.asarray(mix) / np.sum(mix))
        sec = self.topics[owner, 1]
        topic = np.where((src == 1) & (sec >= 0), sec, self.topics[owner, 0])
        rank = np.minimum(np.searchsorted(self.zipf_cdf, rng.random(n)), self.topic_words.shape[1] - 1)
        words = self.topic_words[topic, rank]
        words = np.where(src == 2, self.filler[rng.integers(0, len(self.filler), n)], words)
        words = np.where(src == 3, self.noise[rng.integers(0, len(self.noise), n)], words)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [list(words[bounds[i] : bounds[i + 1]]) for i in range(len(lengths))]


def _quality_cues(cfg: WorldConfig, cat: Catalogue, titles: list[str]) -> list[str]:
    """Titles with a quality word appended, with probability cfg.quality_in_content, to the items in the top third
    of quality ("high" words) and the bottom third ("low" words); from a stream of its own, so every other draw of
    the world is the same as without cues."""
    rng = stream(cfg.seed, "quality-cues")
    lo, hi = np.quantile(cat.quality, [1 / 3, 2 / 3])
    shown = rng.random(len(titles)) < cfg.quality_in_content
    pick = rng.integers(0, 1 << 30, len(titles))
    out = list(titles)
    for idx in np.flatnonzero(shown & ((cat.quality >= hi) | (cat.quality <= lo))):
        words = QUALITY_WORDS["high" if cat.quality[idx] >= hi else "low"]
        out[idx] = f"{titles[idx]} {words[pick[idx] % len(words)]}"
    return out


def item_texts(cfg: WorldConfig, cat: Catalogue) -> dict[str, list]:
    """Title, OCR text, ASR text (None when absent) and tags per item."""
    rng = stream(cfg.seed, "item-text")
    n = len(cat)
    vocab = world_vocabulary(cfg)
    ws = _WordSampler(rng, vocab, cat.topics)
    titles = [" ".join(w).capitalize() for w in ws.field(rng.integers(3, 9, n), (0.5, 0.15, 0.25, 0.1))]
    if cfg.quality_in_content > 0:
        titles = _quality_cues(cfg, cat, titles)
    ocr_words = ws.field(rng.integers(2, 7, n), (0.45, 0.15, 0.2, 0.2))
    asr_words = ws.field(rng.integers(6, 21, n), (0.3, 0.1, 0.45, 0.15))
    has_ocr, has_asr = rng.random(n) >= 0.4, rng.random(n) >= 0.3
    ocr = [" ".join(w).upper() if h else None for w, h in zip(ocr_words, has_ocr, strict=True)]
    asr = [" ".join(w) if h else None for w, h in zip(asr_words, has_asr, strict=True)]
    tag_words = ws.field(rng.integers(2, 6, n), (0.7, 0.3, 0.0, 0.0))
    generic = rng.random(n) < 0.3
    generic_tag = rng.integers(0, len(GENERIC_TAGS), n)
    tags = [
        list(dict.fromkeys(w + ([GENERIC_TAGS[g]] if add else [])))
        for w, add, g in zip(tag_words, generic, generic_tag, strict=True)
    ]
    return {"title": titles, "ocr_text": ocr, "asr_text": asr, "tags": tags}


# --------------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------------


def _list_array(flat: np.ndarray, per_row: int, value_type: pa.DataType) -> pa.Array:
    offsets = np.arange(0, len(flat) + 1, per_row, dtype=np.int32) if per_row else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def items_table(cfg: WorldConfig, cat: Catalogue, texts: dict[str, list]) -> pa.Table:
    """The ITEMS table (media paths relative to the media root, whether files exist or are rendered on demand)."""
    vocab = world_vocabulary(cfg)
    dirs = [media_dir(int(i)) for i in cat.item_id]
    frames = [[f"{d}/frame_{k}.png" for k in range(int(nf))] for d, nf in zip(dirs, cat.n_frames, strict=True)]
    categories = np.array(vocab.category_names, dtype=object)[np.asarray(vocab.topic_category)[cat.primary]]
    return pa.table(
        {
            "item_id": cat.item_id,
            "created_ts": pa.array(cat.created_us).cast(pa.timestamp("us", tz="UTC")),
            "author_id": cat.author_id,
            "category": pa.array(categories.tolist(), pa.string()),
            "title": texts["title"],
            "ocr_text": pa.array(texts["ocr_text"], pa.string()),
            "asr_text": pa.array(texts["asr_text"], pa.string()),
            "tags": pa.array(texts["tags"], pa.list_(pa.string())),
            "duration_ms": cat.duration_ms,
            "cover_path": [f"{d}/cover.png" for d in dirs],
            "frame_paths": pa.array(frames, pa.list_(pa.string())),
            "audio_path": [f"{d}/audio.wav" for d in dirs],
        }
    )


def item_truth_table(cat: Catalogue) -> pa.Table:
    """The ITEM_TRUTH table (topics primary first, latents, quality)."""
    topics = [[int(p)] + ([int(s)] if s >= 0 else []) for p, s in cat.topics]
    return pa.table(
        {
            "item_id": cat.item_id,
            "topics": pa.array(topics, pa.list_(pa.int32())),
            "content_latent": _list_array(cat.content_latent.ravel(), cat.content_latent.shape[1], pa.float32()),
            "collab_latent": _list_array(cat.collab_latent.ravel(), cat.collab_latent.shape[1], pa.float32()),
            "quality": cat.quality,
        }
    )


def item_signals_table(cat: Catalogue) -> pa.Table:
    """ITEM_SIGNALS: each item's sound and author with their collaborative latents (truth/item_signals)."""
    d = cat.collab_latent.shape[1]
    sound, style = cat.sound_latent[cat.sound_id - 1], cat.style_latent[cat.author_id - 1]
    return pa.table(
        {
            "item_id": cat.item_id,
            "sound_id": cat.sound_id,
            "author_id": cat.author_id,
            "sound_latent": _list_array(sound.ravel(), d, pa.float32()),
            "style_latent": _list_array(style.ravel(), d, pa.float32()),
        }
    )
