"""The user response model: how a user reacts to an item shown at a position, and whether they come back.

Pure, vectorised functions over aligned arrays (one entry per impression), shared by the world generator and by
the offline A/B simulator, which calls them with its own ranked slates:

    u = utility(interest_rows, user_collab_rows, item_topics, item_collab, item_quality, params)
    probs = feed_probabilities(u, position, duration_ms, params)          # expected behaviour
    out = sample_feed_outcomes(rng, u, position, duration_ms, params)     # one draw (clicks, watch, likes ...)
    sat = daily_satisfaction(reward_sum, impressions, params)             # per user-day
    p = return_probability(activity, sat, was_active, params)             # next-day return

Utility = topic-interest match + collaborative dot product + quality (+ per-impression noise when sampling);
position bias enters the click probability. The collaborative term carries a substantial share of the variance,
so users' co-engagement follows the collaborative latent beyond what content reveals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ResponseParams:
    w_topic: float = 1.0  # weight of the topic-interest term log1p(T * match) - log 2 (0 at uniform interest)
    secondary_weight: float = 0.5  # weight of an item's secondary topic in the interest match (primary: 1)
    w_collab: float = 0.9  # weight of the collaborative dot product (user pref . item latent / sqrt(dim))
    w_quality: float = 1.0  # weight of the item's intrinsic quality
    noise_sd: float = 0.5  # sd of per-impression utility noise (shared by click, watch, like, share)
    click_bias: float = -1.0  # click logit offset
    position_bias: float = -0.12  # click logit change per slot further down (feed)
    finish_bias: float = -0.2  # finish-given-click logit offset
    finish_scale: float = 0.8  # finish logit per unit of utility
    finish_duration: float = 0.8  # finish logit decrease per unit of log(duration / 15 s)
    watch_bias: float = -0.2  # partial watch fraction logit offset (when not finished)
    watch_scale: float = 0.6  # partial watch fraction logit per unit of utility
    watch_sd: float = 0.8  # sd of the partial watch fraction logit
    like_bias: float = -2.6  # like-given-click logit offset
    like_scale: float = 0.9  # like logit per unit of utility
    share_bias: float = -4.0  # share-given-click logit offset
    share_scale: float = 0.9  # share logit per unit of utility
    reward_like: float = 0.5  # satisfaction reward of a like (a watch earns its watched fraction)
    reward_share: float = 1.0  # satisfaction reward of a share
    skip_penalty: float = 0.15  # satisfaction cost of an impression swiped away
    return_satisfaction: float = 3.0  # next-day return logit per unit of daily satisfaction above the reference
    satisfaction_ref: float = 0.2  # daily satisfaction at which return follows base activity alone
    inactive_shift: float = -1.0  # return logit change for a user who was not active that day
    search_bias: float = -2.2  # search result click logit offset
    search_relevance: float = 2.2  # search click logit for a result whose primary topic is the query's
    search_position_bias: float = -0.25  # search click logit change per rank


@dataclass(frozen=True)
class FeedOutcome:
    clicked: np.ndarray  # bool
    watch_ms: np.ndarray  # int64, >= 0; < 1000 when not clicked; == duration when finished
    finished: np.ndarray  # bool
    liked: np.ndarray  # bool
    shared: np.ndarray  # bool
    reward: np.ndarray  # float64, satisfaction contribution of each impression


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def interest_match(interest_rows: np.ndarray, item_topics: np.ndarray, secondary_weight: float) -> np.ndarray:
    """Sum of the user's interest in the item's topics; item_topics is (n, 2) with -1 for no secondary topic."""
    rows = np.arange(len(item_topics))
    match = interest_rows[rows, item_topics[:, 0]]
    sec = item_topics[:, 1]
    has = sec >= 0
    match = match + np.where(has, secondary_weight * interest_rows[rows, np.where(has, sec, 0)], 0.0)
    return match


def utility(
    interest_rows: np.ndarray,
    user_collab_rows: np.ndarray,
    item_topics: np.ndarray,
    item_collab: np.ndarray,
    item_quality: np.ndarray,
    params: ResponseParams,
) -> np.ndarray:
    """Noise-free utility per impression; all arrays are aligned row by row (one row per impression).

    interest_rows: (n, T) topic interests summing to 1; user_collab_rows: (n, D); item_topics: (n, 2) primary
    and secondary topic (-1: none); item_collab: (n, D); item_quality: (n,).
    """
    n_topics = interest_rows.shape[1]
    match = interest_match(interest_rows, item_topics, params.secondary_weight)
    topic_term = np.log1p(n_topics * match) - np.log(2.0)
    collab = np.einsum("ij,ij->i", user_collab_rows, item_collab) / np.sqrt(item_collab.shape[1])
    return params.w_topic * topic_term + params.w_collab * collab + params.w_quality * item_quality


def _logits(u: np.ndarray, position: np.ndarray, duration_ms: np.ndarray, params: ResponseParams) -> dict:
    dur = np.log(np.asarray(duration_ms, dtype=np.float64) / 15000.0)
    return {
        "click": params.click_bias + u + params.position_bias * position,
        "finish": params.finish_bias + params.finish_scale * u - params.finish_duration * dur,
        "watch": params.watch_bias + params.watch_scale * u,
        "like": params.like_bias + params.like_scale * u,
        "share": params.share_bias + params.share_scale * u,
    }


def feed_probabilities(
    u: np.ndarray, position: np.ndarray, duration_ms: np.ndarray, params: ResponseParams
) -> dict[str, np.ndarray]:
    """Expected behaviour without utility noise: click, finish|click, like|click, share|click probabilities,
    the expected watch fraction and the expected satisfaction reward of each impression."""
    lg = _logits(u, position, duration_ms, params)
    p = {k: sigmoid(v) for k, v in lg.items()}
    partial = p["watch"]  # the median of the partial watch fraction
    watch_frac = p["finish"] + (1 - p["finish"]) * partial
    reward = p["click"] * (watch_frac + params.reward_like * p["like"] + params.reward_share * p["share"])
    reward = reward - params.skip_penalty * (1 - p["click"])
    return {
        "click": p["click"],
        "finish_given_click": p["finish"],
        "like_given_click": p["like"],
        "share_given_click": p["share"],
        "watch_fraction_given_click": watch_frac,
        "reward": reward,
    }


def sample_feed_outcomes(
    rng: np.random.Generator,
    u: np.ndarray,
    position: np.ndarray,
    duration_ms: np.ndarray,
    params: ResponseParams,
) -> FeedOutcome:
    """One draw of every impression's outcome. Not clicked: watch < 1 s. Finished: watch == duration."""
    n = len(u)
    duration_ms = np.asarray(duration_ms, dtype=np.int64)
    lg = _logits(u + params.noise_sd * rng.standard_normal(n), position, duration_ms, params)
    clicked = rng.random(n) < sigmoid(lg["click"])
    finished = clicked & (rng.random(n) < sigmoid(lg["finish"]))
    frac = sigmoid(lg["watch"] + params.watch_sd * rng.standard_normal(n))
    partial = np.clip((frac * duration_ms).astype(np.int64), 1000, duration_ms - 1)
    skim = rng.integers(0, 1000, n)
    watch_ms = np.where(finished, duration_ms, np.where(clicked, partial, skim)).astype(np.int64)
    liked = clicked & (rng.random(n) < sigmoid(lg["like"]))
    shared = clicked & (rng.random(n) < sigmoid(lg["share"]))
    watched = np.where(clicked, watch_ms / duration_ms, 0.0)
    reward = np.where(
        clicked, watched + params.reward_like * liked + params.reward_share * shared, -params.skip_penalty
    )
    return FeedOutcome(clicked, watch_ms, finished, liked, shared, reward)


def daily_satisfaction(reward_sum: np.ndarray, impressions: np.ndarray, params: ResponseParams) -> np.ndarray:
    """A user-day's satisfaction: mean reward per impression (0 for a day without impressions)."""
    del params  # the same definition for every parameter set; kept for a uniform signature
    return np.where(impressions > 0, reward_sum / np.maximum(impressions, 1), 0.0)


def return_probability(
    activity: np.ndarray, satisfaction: np.ndarray, was_active: np.ndarray, params: ResponseParams
) -> np.ndarray:
    """Probability of being active the next day, from base activity (a probability) and the day's satisfaction."""
    z = logit(np.asarray(activity, dtype=np.float64))
    z = z + np.where(
        was_active, params.return_satisfaction * (satisfaction - params.satisfaction_ref), params.inactive_shift
    )
    return sigmoid(z)


def search_click_probability(
    u: np.ndarray, relevance: np.ndarray, position: np.ndarray, params: ResponseParams
) -> np.ndarray:
    """Click probability of a search result: relevance (1 primary topic = query topic, 0.5 secondary, else 0),
    rank and the user's utility for the item (which includes the collaborative term)."""
    z = params.search_bias + params.search_relevance * relevance + params.search_position_bias * position
    return sigmoid(z + 0.5 * u)
