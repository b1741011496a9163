"""Made-up vocabularies: one per topic, a shared noise vocabulary, shared filler words and category names.

Words are pronounceable pseudo-words built from syllables, deterministic from the seed and unique across the
whole world, so a topic's words identify it and nothing in a pretrained text model knows them in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sources.world.rng import stream

FILLER_WORDS: tuple[str, ...] = (
    "the", "my", "new", "best", "today", "watch", "this", "video", "part", "how", "to", "with", "and", "so",
    "wow", "look", "first", "time", "day", "vlog", "top", "easy", "real", "try", "of", "in", "for", "you",
)  # fmt: skip
"""Shared filler words (English-like, topic-free)."""

GENERIC_TAGS: tuple[str, ...] = ("fyp", "viral", "trending", "foryou", "daily")
"""Topic-free hashtags sometimes added to an item's tags."""

QUALITY_WORDS: dict[str, tuple[str, ...]] = {
    "high": ("official", "exclusive", "acclaimed", "original", "award", "uhd"),
    "low": ("unedited", "amateur", "outtake", "unfocused", "echoey", "erratic"),
}
"""Title words that show an item's quality (WorldConfig.quality_in_content). Each starts with a vowel, and every
made-up topic or noise word starts with a consonant, so they never collide."""

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "s", "l", "x", "m")


@dataclass(frozen=True)
class Vocabulary:
    topic_words: tuple[tuple[str, ...], ...]  # topic -> its words, most frequent first (Zipf-like use)
    noise_words: tuple[str, ...]  # topic-free pseudo-words
    category_names: tuple[str, ...]  # category (topic group) -> name
    topic_category: tuple[int, ...]  # topic -> category index

    @property
    def topic_names(self) -> tuple[str, ...]:
        """A readable name per topic: its category and its most frequent word."""
        return tuple(
            f"{self.category_names[c]}/{w[0]}" for c, w in zip(self.topic_category, self.topic_words, strict=True)
        )

    def to_dict(self) -> dict:
        return {
            "topic_words": [list(w) for w in self.topic_words],
            "topic_names": list(self.topic_names),
            "noise_words": list(self.noise_words),
            "filler_words": list(FILLER_WORDS),
            "generic_tags": list(GENERIC_TAGS),
            "category_names": list(self.category_names),
            "topic_category": list(self.topic_category),
        }


def _pseudo_word(rng: np.random.Generator, syllables: int) -> str:
    parts = [_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(syllables)]
    return "".join(parts) + _CODAS[rng.integers(len(_CODAS))]


def _unique_words(rng: np.random.Generator, n: int, taken: set[str], syllables: tuple[int, int]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _pseudo_word(rng, int(rng.integers(syllables[0], syllables[1] + 1)))
        if w not in taken and len(w) >= 4:
            taken.add(w)
            out.append(w)
    return out


def build_vocabulary(seed: int, n_topics: int, n_categories: int, words_per_topic: int, n_noise: int) -> Vocabulary:
    """The world's vocabularies; topics are assigned to categories round-robin (every category non-empty)."""
    rng = stream(seed, "vocabulary")
    taken = set(FILLER_WORDS) | set(GENERIC_TAGS)
    categories = tuple(w.capitalize() for w in _unique_words(rng, n_categories, taken, (2, 3)))
    topics = tuple(tuple(_unique_words(rng, words_per_topic, taken, (2, 3))) for _ in range(n_topics))
    noise = tuple(_unique_words(rng, n_noise, taken, (2, 4)))
    topic_category = tuple(int(c) for c in rng.permutation(np.arange(n_topics) % n_categories))
    return Vocabulary(topics, noise, categories, topic_category)
