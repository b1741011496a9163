"""Searches: noisy queries from a topic a user likes, results ranked by noisy text match, relevance-driven clicks.

A query is 1-3 head words of one topic's vocabulary (drawn from the user's true interests), typed with casing,
whitespace and punctuation noise so a normaliser has work to do. The engine matches normalised query words
against an inverted index of item titles and tags, ranks by matched words plus noise and fills short lists with
items of the query's topic. Clicks depend on relevance (topic match), rank and the user's utility for the item
(which includes the collaborative term).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sources.world import response
from sources.world.catalogue import Catalogue
from sources.world.config import WorldConfig
from sources.world.users import Population
from sources.world.vocab import Vocabulary

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words (the engine's own normalisation)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class SearchIndex:
    """Inverted index word -> items whose title or tags contain it."""

    word_ids: dict[str, int]
    offsets: np.ndarray  # (words + 1,) into postings
    postings: np.ndarray  # item indices, grouped by word

    @staticmethod
    def build(titles: list[str], tags: list[list[str]]) -> SearchIndex:
        word_ids: dict[str, int] = {}
        words, items = [], []
        for i, (title, tag) in enumerate(zip(titles, tags, strict=True)):
            for w in set(tokens(title)) | set(tokens(" ".join(tag))):
                words.append(word_ids.setdefault(w, len(word_ids)))
                items.append(i)
        w_arr, i_arr = np.asarray(words, np.int64), np.asarray(items, np.int64)
        order = np.argsort(w_arr, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(w_arr, minlength=len(word_ids)))])
        return SearchIndex(word_ids, offsets, i_arr[order])

    def match(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Items matching any query word and how many distinct query words each matches."""
        ids = {self.word_ids[w] for w in tokens(query) if w in self.word_ids}
        if not ids:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        hits = np.concatenate([self.postings[self.offsets[w] : self.offsets[w + 1]] for w in ids])
        return np.unique(hits, return_counts=True)


def noisy_query(rng: np.random.Generator, words: list[str]) -> str:
    """The query as typed: random casing, doubled / padded whitespace, punctuation and hashtags."""
    r = rng.random()
    if r < 0.2:
        words = [w.capitalize() for w in words]
    elif r < 0.3:
        words = [w.upper() for w in words]
    elif r < 0.4:
        words = [words[0].capitalize()] + words[1:]
    if rng.random() < 0.1:
        k = int(rng.integers(len(words)))
        words = words[:k] + ["#" + words[k]] + words[k + 1 :]
    text = "".join(w + ("  " if rng.random() < 0.15 else " ") for w in words).rstrip(" ")
    if rng.random() < 0.15:
        text += str(rng.choice(["!", "?", "...", " !", ","]))
    if rng.random() < 0.1:
        text = " " + text
    if rng.random() < 0.1:
        text += " "
    return text


def _query_words(rng: np.random.Generator, vocab: Vocabulary, topic: int) -> list[str]:
    words = vocab.topic_words[topic]
    w = 1.0 / (np.arange(len(words)) + 1.0) ** 1.2
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    picks = rng.choice(len(words), size=n, replace=False, p=w / w.sum())
    return [words[i] for i in picks]


def _results(
    rng: np.random.Generator,
    index: SearchIndex,
    query: str,
    topic: int,
    available: np.ndarray,
    by_topic: list[np.ndarray],
    quality: np.ndarray,
    k: int,
) -> np.ndarray:
    items, counts = index.match(query)
    keep = available[items]
    items, counts = items[keep], counts[keep]
    score = counts + 0.6 * rng.standard_normal(len(items)) + 0.2 * quality[items]
    ranked = items[np.argsort(-score, kind="stable")[:k]]
    if len(ranked) < k:
        pool = by_topic[topic]
        extra = pool[~np.isin(pool, ranked)]
        extra = rng.permutation(extra)[: k - len(ranked)]
        ranked = np.concatenate([ranked, extra])
    return ranked


def run_searches(
    rng: np.random.Generator,
    cfg: WorldConfig,
    day: int,
    users: np.ndarray,
    ts_us: np.ndarray,
    pop: Population,
    cat: Catalogue,
    vocab: Vocabulary,
    index: SearchIndex,
) -> pa.Table | None:
    """SEARCHES rows of one day's searches (one per (search, result)); users/ts_us: one entry per search."""
    if len(users) == 0:
        return None
    available = cat.created_day < day
    by_topic = [np.flatnonzero(available & (cat.primary == t)) for t in range(cfg.n_topics)]
    cdf = np.cumsum(pop.interest[users], axis=1)
    topics = np.minimum((cdf < rng.random(len(users))[:, None]).sum(axis=1), cfg.n_topics - 1)
    queries, result_items, owner = [], [], []
    for s, topic in enumerate(topics):
        q = noisy_query(rng, _query_words(rng, vocab, int(topic)))
        res = _results(rng, index, q, int(topic), available, by_topic, cat.quality, cfg.search_results)
        queries.append(q)
        result_items.append(res)
        owner.append(np.full(len(res), s))
    items = np.concatenate(result_items).astype(np.int64)
    owner = np.concatenate(owner)
    position = np.concatenate([np.arange(len(r)) for r in result_items]).astype(np.int32)
    u_idx = users[owner]
    params = cfg.response
    u = response.utility(
        pop.interest[u_idx], pop.collab[u_idx], cat.topics[items], cat.collab_latent[items], cat.quality[items], params
    )
    q_topic = topics[owner]
    relevance = np.where(cat.topics[items, 0] == q_topic, 1.0, np.where(cat.topics[items, 1] == q_topic, 0.5, 0.0))
    clicked = rng.random(len(items)) < response.search_click_probability(u, relevance, position, params)
    search_ids = pc.binary_join_element_wise(f"s{day}-", pa.array(owner).cast(pa.string()), "")
    event_ids = pc.binary_join_element_wise(f"q{day}-", pa.array(np.arange(len(items))).cast(pa.string()), "")
    return pa.table(
        {
            "event_id": event_ids,
            "search_id": search_ids,
            "user_id": pop.user_id[u_idx],
            "ts": pa.array(ts_us[owner]).cast(pa.timestamp("us", tz="UTC")),
            "query": pa.array(np.asarray(queries, dtype=object)[owner].tolist(), pa.string()),
            "item_id": cat.item_id[items],
            "position": position,
            "clicked": clicked,
        }
    )
