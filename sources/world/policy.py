"""The logged feed policy: candidate generation, scoring, propensities and Plackett-Luce slates.

The policy sees only what a platform would know: users' past clicks per topic (its estimate of their interests),
item popularity and freshness, smoothed click-through rates. It never uses the collaborative latent. Scores go
through a softmax to first-slot propensities (stored in FEED_REQUESTS); a slate of K items is drawn without
replacement (Plackett-Luce, via the Gumbel top-K trick) and each impression stores the probability of its item
at its slot given the slots before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PolicyParams:
    source_mix: tuple[float, float, float, float] = (0.5, 0.2, 0.15, 0.15)  # candidate sources: topic, popular,
    # fresh, random (probabilities per candidate slot)
    topic_prior: float = 0.5  # pseudo-clicks per topic in the platform's interest estimate
    fresh_days: int = 3  # an item is "fresh" for this many days after creation
    w_affinity: float = 1.0  # score weight of log(T * estimated topic share)
    w_popularity: float = 0.3  # score weight of log1p(decayed clicks)
    w_fresh: float = 0.5  # score weight of exp(-age_days / fresh_days)
    w_ctr: float = 1.0  # score weight of the smoothed click-through-rate logit
    temperature: float = 1.3  # softmax temperature of the scores (higher: more exploration)
    user_decay: float = 0.9  # daily decay of the per-user topic click counts
    item_decay: float = 0.8  # daily decay of item clicks / impressions
    dedupe_rounds: int = 3  # times duplicate candidates are re-drawn before being dropped


@dataclass
class PlatformState:
    """What the platform has learned from the logs so far (updated at the end of each day)."""

    user_topic_clicks: np.ndarray  # (users, topics) float32, decayed
    item_clicks: np.ndarray  # (items,) float64, decayed
    item_impressions: np.ndarray  # (items,) float64, decayed

    @staticmethod
    def empty(n_users: int, n_items: int, n_topics: int) -> PlatformState:
        return PlatformState(np.zeros((n_users, n_topics), np.float32), np.zeros(n_items), np.zeros(n_items))

    def update(
        self, users: np.ndarray, topics: np.ndarray, items: np.ndarray, clicked: np.ndarray, params: PolicyParams
    ) -> None:
        """Decays the counts and adds one day's impressions (aligned arrays, one entry per impression)."""
        n_users, n_topics = self.user_topic_clicks.shape
        self.user_topic_clicks *= params.user_decay
        flat = users[clicked].astype(np.int64) * n_topics + topics[clicked]
        self.user_topic_clicks += np.bincount(flat, minlength=n_users * n_topics).reshape(n_users, n_topics)
        self.item_clicks *= params.item_decay
        self.item_impressions *= params.item_decay
        self.item_clicks += np.bincount(items[clicked], minlength=len(self.item_clicks))
        self.item_impressions += np.bincount(items, minlength=len(self.item_impressions))


@dataclass(frozen=True)
class Availability:
    """Items a request may be served on one day (created before the day started), indexed for sampling."""

    items: np.ndarray  # available item indices, grouped by primary topic
    topic_start: np.ndarray  # (topics + 1,) offsets of each topic's block in `items`
    fresh: np.ndarray  # available items created within the last `fresh_days`
    popular_cdf: np.ndarray  # cumulative popularity weights over `items`

    @staticmethod
    def build(
        created_day: np.ndarray,
        primary: np.ndarray,
        day: int,
        n_topics: int,
        state: PlatformState,
        params: PolicyParams,
    ) -> Availability:
        avail = np.flatnonzero(created_day < day)
        avail = avail[np.argsort(primary[avail], kind="stable")]
        counts = np.bincount(primary[avail], minlength=n_topics)
        start = np.concatenate([[0], np.cumsum(counts)])
        fresh = avail[created_day[avail] >= day - params.fresh_days]
        cdf = np.cumsum(state.item_clicks[avail] + 0.5)
        return Availability(avail, start, fresh, cdf / cdf[-1])


def _pick_uniform(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    return pool[rng.integers(0, len(pool), n)]


def _row_categorical(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per entry of `rows` from the categorical distribution probs[row] (rows of probs sum to 1)."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    offset = np.arange(len(probs))[:, None]
    flat = (cdf + offset).ravel()
    idx = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(idx - rows * probs.shape[1], probs.shape[1] - 1)


def estimated_topic_share(state: PlatformState, users: np.ndarray, params: PolicyParams) -> np.ndarray:
    """The platform's estimate of each user's topic distribution (rows sum to 1)."""
    c = state.user_topic_clicks[users].astype(np.float64) + params.topic_prior
    return c / c.sum(axis=1, keepdims=True)


def sample_candidates(
    rng: np.random.Generator,
    req_users: np.ndarray,
    avail: Availability,
    state: PlatformState,
    params: PolicyParams,
    sizes: tuple[int, int],
) -> np.ndarray:
    """Candidate item indices (requests, sizes[1]); -1 marks unused slots. Each row holds 16..24 distinct items
    from the user's estimated topics, popular, fresh and random items."""
    n_req, width = len(req_users), sizes[1]
    n = n_req * width
    source = rng.choice(4, size=n, p=np.asarray(params.source_mix) / np.sum(params.source_mix))
    cand = _pick_uniform(rng, avail.items, n)  # random (also the fallback of the other sources)
    # topic: a topic from the user's estimated interests, then a uniform item of that topic
    sel = np.flatnonzero(source == 0)
    share = estimated_topic_share(state, req_users, params)
    topics = _row_categorical(rng, share, sel // width)
    lo, hi = avail.topic_start[topics], avail.topic_start[topics + 1]
    ok = hi > lo
    pos = lo + (rng.random(len(sel)) * (hi - lo)).astype(np.int64)
    cand[sel[ok]] = avail.items[pos[ok]]
    # popular: proportional to decayed clicks
    sel = np.flatnonzero(source == 1)
    cand[sel] = avail.items[np.minimum(np.searchsorted(avail.popular_cdf, rng.random(len(sel))), len(avail.items) - 1)]
    # fresh: uniform among recently created items
    sel = np.flatnonzero(source == 2)
    if len(avail.fresh):
        cand[sel] = _pick_uniform(rng, avail.fresh, len(sel))
    cand = cand.reshape(n_req, width)
    m = rng.integers(sizes[0], sizes[1] + 1, n_req)
    cand[np.arange(width)[None, :] >= m[:, None]] = -1
    return _dedupe(rng, cand, avail, params.dedupe_rounds)


def _dedupe(rng: np.random.Generator, cand: np.ndarray, avail: Availability, rounds: int) -> np.ndarray:
    for _ in range(rounds + 1):
        cand = np.sort(cand, axis=1)
        dup = np.zeros(cand.shape, bool)
        dup[:, 1:] = (cand[:, 1:] == cand[:, :-1]) & (cand[:, 1:] >= 0)
        n_dup = int(dup.sum())
        if n_dup == 0:
            return cand
        if _ == rounds:
            cand[dup] = -1
            return np.sort(cand, axis=1)
        cand[dup] = _pick_uniform(rng, avail.items, n_dup)
    return cand


def policy_logits(
    cand: np.ndarray,
    req_users: np.ndarray,
    primary: np.ndarray,
    created_day: np.ndarray,
    day: int,
    state: PlatformState,
    params: PolicyParams,
) -> np.ndarray:
    """Scores of each candidate (requests, width); -inf at unused slots. No collaborative latent is used."""
    valid = cand >= 0
    c = np.where(valid, cand, 0)
    share = estimated_topic_share(state, req_users, params)
    n_topics = share.shape[1]
    aff = np.log(n_topics * np.take_along_axis(share, primary[c], axis=1))
    pop = np.log1p(state.item_clicks[c])
    age = np.maximum(day - created_day[c], 0)
    fresh = np.exp(-age / max(params.fresh_days, 1))
    ctr = np.log((state.item_clicks[c] + 1.0) / (state.item_impressions[c] - state.item_clicks[c] + 3.0))
    score = params.w_affinity * aff + params.w_popularity * pop + params.w_fresh * fresh + params.w_ctr * ctr
    return np.where(valid, score / params.temperature, -np.inf)


def softmax_propensities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (0 at -inf slots); each row sums to 1 within rounding."""
    z = logits - logits.max(axis=1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def plackett_luce_slates(
    rng: np.random.Generator, logits: np.ndarray, props: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws K slots per row without replacement. Returns the candidate columns (requests, K) and the conditional
    propensity of each slot's item given the earlier slots (the first equals its candidate propensity)."""
    g = logits + rng.gumbel(size=logits.shape)
    cols = np.argsort(-g, axis=1, kind="stable")[:, :k]
    p = np.take_along_axis(props, cols, axis=1)
    before = np.cumsum(p, axis=1) - p
    cond = np.clip(p / np.maximum(1.0 - before, p), 0.0, 1.0)
    return cols, cond
