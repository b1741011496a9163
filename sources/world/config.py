"""Configuration of the generated world: one frozen dataclass, scaled by a single size knob.

`WorldConfig.for_size("tiny" | "small" | "medium" | "large", seed=N)` gives the preset; any field can be overridden by
keyword. The config is serialised into the manifest (`to_dict`) and can be rebuilt from it (`from_dict`), which
is how on-demand media rendering recovers a world's catalogue from its seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sources.world.policy import PolicyParams
from sources.world.response import ResponseParams


@dataclass(frozen=True)
class WorldConfig:
    size: str = "tiny"  # preset label ("tiny", "small", "medium", "large" or "custom"), recorded in the manifest
    seed: int = 0  # master seed; every random stream is derived from it (same seed -> identical output)
    start_date: str = "2025-03-03"  # first UTC day of the log (ISO date); the log covers [start, start + days)
    days: int = 14  # length of the log in days
    n_items: int = 300  # catalogue size (item ids 1..n_items)
    n_users: int = 200  # user population (user ids 1..n_users), including users who sign up during the log
    n_topics: int = 8  # content topics; every modality is driven by them
    n_categories: int = 4  # topic groups; an item's `category` is its primary topic's group name
    content_dim: int = 16  # dimension of the content latent (topic directions + noise)
    collab_dim: int = 8  # dimension of the collaborative latent (independent of topics; at collab_in_content = 0
    # revealed by no modality)
    collab_clusters: int = 6  # taste communities: items and users sit near one of these collaborative centroids
    collab_cluster_weight: float = 0.85  # share of the centroid in a latent (the rest is noise; marginal var ~1)
    words_per_topic: int = 30  # size of each topic's made-up vocabulary
    n_noise_words: int = 200  # shared vocabulary of topic-free noise words
    items_per_author: float = 8.0  # mean items per author (authors = n_items / this)
    catalogue_lookback_days: int = 60  # pre-existing items were created within this many days before the start
    items_before_start_frac: float = 0.6  # share of items that exist before the log starts (the rest arrive later)
    secondary_topic_prob: float = 0.35  # probability that an item has a secondary topic
    author_topic_loyalty: float = 0.85  # probability that an item's primary topic is drawn from its author's affinity
    quality_in_content: float = 0.0  # probability that an item in the top (bottom) third of quality says so in its
    # title (a QUALITY_WORDS "high" ("low") word appended); 0: no text shows quality
    collab_in_content: float = 0.0  # rho: share of the collaborative latent's variance that comes from the item's
    # background sound (rho / 2, heard in its audio) and its author's style (rho / 2, seen as a border in its cover and
    # frames); never in titles, OCR, ASR or tags. 0: no modality shows the latent and media carry no signature
    n_sounds: int = 0  # background sounds shared by items (Zipf-like popularity); 0: max(8, n_items // 25)
    quality_in_frames: float = 0.0  # strength of a noisy production-quality cue in covers and frames (lower quality:
    # more blur, lower contrast, more grain; a per-item noise hides the exact value); 0: frames show no quality
    users_before_start_frac: float = 0.85  # share of users signed up before the log (the rest sign up during it)
    interest_alpha: float = 0.15  # Dirichlet concentration per topic of users' interests (small = sparse)
    activity_beta: tuple[float, float] = (2.0, 1.6)  # Beta(a, b) of users' base daily return probability
    interest_drift_sigma: float = 0.1  # daily log-normal random walk of each topic interest (multiplicative sd)
    interest_pull: float = 0.1  # daily pull of interests toward the topics a user consumed that day (mix weight)
    sessions_extra_mean: float = 0.6  # sessions on an active day = 1 + Poisson(this)
    requests_extra_mean: float = 2.0  # feed requests in a session = 1 + Poisson(this)
    slate_size: int = 5  # items per feed request (drawn without replacement from the candidates)
    candidates_min: int = 16  # smallest candidate set per feed request
    candidates_max: int = 24  # largest candidate set per feed request
    search_prob: float = 0.2  # probability that a session starts with a search
    search_results: int = 10  # result list length per search
    image_size: int = 64  # cover and frame width = height, pixels
    frames_range: tuple[int, int] = (4, 8)  # frames per item, inclusive
    duration_s_range: tuple[float, float] = (3.0, 60.0)  # video duration range, seconds
    audio_s_range: tuple[float, float] = (3.0, 30.0)  # audio track length range, seconds
    audio_beta_b: float = 16.0  # audio length = min + (max - min) * Beta(1, this): mostly short tracks (mean ~4.6 s)
    audio_sample_rate: int = 8000  # WAV sample rate, Hz (mono, 16-bit)
    write_media: bool = True  # True: media files under out/media; False: "on_demand" (render_item_media)
    media_workers: int = 2  # processes rendering media files (1: in-process; capped at the CPU count)
    response: ResponseParams = field(default_factory=ResponseParams)  # user response model
    policy: PolicyParams = field(default_factory=PolicyParams)  # logged feed policy

    def __post_init__(self) -> None:
        if self.n_topics < self.n_categories or self.n_categories < 1:
            raise ValueError(f"need 1 <= n_categories <= n_topics, got {self.n_categories} / {self.n_topics}")
        if not 1 <= self.slate_size <= self.candidates_min <= self.candidates_max:
            raise ValueError("need 1 <= slate_size <= candidates_min <= candidates_max")
        if self.days < 1 or self.n_items < self.candidates_max or self.n_users < 1:
            raise ValueError("need days >= 1, n_items >= candidates_max and n_users >= 1")
        if not 0.0 <= self.quality_in_content <= 1.0:
            raise ValueError(f"quality_in_content is a probability, got {self.quality_in_content}")
        if not 0.0 <= self.collab_in_content <= 1.0:
            raise ValueError(f"collab_in_content is a variance share in [0, 1], got {self.collab_in_content}")
        if not 0.0 <= self.quality_in_frames <= 1.0:
            raise ValueError(f"quality_in_frames is a strength in [0, 1], got {self.quality_in_frames}")
        if self.n_sounds < 0:
            raise ValueError(f"n_sounds must be >= 0 (0: derived from n_items), got {self.n_sounds}")

    @property
    def sound_count(self) -> int:
        """Background sounds in the world: n_sounds, or max(8, n_items // 25) when it is 0."""
        return self.n_sounds or max(8, self.n_items // 25)

    @staticmethod
    def for_size(size: str, seed: int = 0, **overrides: Any) -> WorldConfig:
        """The preset for `size` (see SIZES), with `seed` and any field overridden."""
        if size not in SIZES:
            raise ValueError(f"unknown world size {size!r}; expected one of {sorted(SIZES)}")
        return dataclasses.replace(SIZES[size], seed=seed, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (nested parameter blocks as dicts)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> WorldConfig:
        """Inverse of `to_dict` (lists become tuples again)."""
        d = _tuples(d)
        d["response"] = ResponseParams(**_tuples(d.get("response", {})))
        d["policy"] = PolicyParams(**_tuples(d.get("policy", {})))
        return WorldConfig(**d)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


_LARGE = WorldConfig(
    size="large",
    days=30,
    n_items=100_000,
    n_users=40_000,
    n_topics=32,
    n_categories=8,
    collab_clusters=24,
    words_per_topic=40,
    n_noise_words=500,
    search_prob=0.1,
    write_media=False,
)

SIZES: dict[str, WorldConfig] = {
    # a few hundred items, tens of thousands of impressions; used by the tests (whole generation < 10 s)
    "tiny": WorldConfig(size="tiny"),
    # the demo: ~1M impressions, media files written (< 2 minutes)
    "small": WorldConfig(
        size="small",
        days=28,
        n_items=3000,
        n_users=3000,
        n_topics=24,
        n_categories=6,
        collab_clusters=12,
    ),
    # the scaling curve's middle point: large's shape with 9,000 users (~3M interactions), media on demand
    "medium": dataclasses.replace(_LARGE, size="medium", n_items=22_500, n_users=9_000),
    # scale test: >= 10M impressions, media rendered on demand from the seed
    "large": _LARGE,
}
"""Preset configurations by size name."""
