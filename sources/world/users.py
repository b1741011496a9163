"""The user population: sparse topic interests, a collaborative preference, base activity and sign-up days; and
the daily drift of interests (a multiplicative random walk plus a pull toward what the user consumed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sources.world.catalogue import collab_latents
from sources.world.config import WorldConfig
from sources.world.rng import stream


@dataclass
class Population:
    """Per-user arrays, row u is user id u + 1. `interest` is mutable state (it drifts day by day)."""

    user_id: np.ndarray  # int64 ids 1..U
    created_day: np.ndarray  # int64 sign-up day relative to the log start (negative: before it)
    activity: np.ndarray  # float64 base daily return probability
    interest: np.ndarray  # float64 (U, T) topic interests, rows sum to 1
    collab: np.ndarray  # float32 (U, collab_dim) preference in the collaborative space

    def __len__(self) -> int:
        return len(self.user_id)


def build_population(cfg: WorldConfig) -> Population:
    """Users at the start of the log (interests of later sign-ups are their interests when they sign up)."""
    rng = stream(cfg.seed, "users")
    n, t = cfg.n_users, cfg.n_topics
    topic_pop = rng.dirichlet(np.full(t, 5.0))  # some topics are more popular than others
    interest = rng.dirichlet(cfg.interest_alpha * t * topic_pop, size=n)
    interest = normalise(interest + 1e-6)
    collab = collab_latents(cfg, "user-collab", n).astype(np.float32)
    activity = rng.beta(*cfg.activity_beta, n)
    before = rng.random(n) < cfg.users_before_start_frac
    created = np.where(before, -rng.integers(1, 366, n), rng.integers(0, cfg.days, n)).astype(np.int64)
    return Population(np.arange(1, n + 1, dtype=np.int64), created, activity, interest, collab)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / x.sum(axis=1, keepdims=True)


def drift_interests(
    rng: np.random.Generator, interest: np.ndarray, consumed: np.ndarray, sigma: float, pull: float
) -> np.ndarray:
    """One day of drift. consumed: (U, T) non-negative consumption per topic (all-zero rows: nothing consumed,
    so only the random walk applies). Returns new interests (rows sum to 1)."""
    walked = normalise(interest * np.exp(sigma * rng.standard_normal(interest.shape)))
    total = consumed.sum(axis=1, keepdims=True)
    share = np.divide(consumed, total, out=np.zeros_like(consumed, dtype=np.float64), where=total > 0)
    mixed = np.where(total > 0, (1 - pull) * walked + pull * share, walked)
    return normalise(mixed + 1e-9)


def user_truth_table(cfg: WorldConfig, pop: Population) -> pa.Table:
    """USER_TRUTH: state at the start of the log (or at sign-up for later users)."""
    epoch = (dt.date.fromisoformat(cfg.start_date) - dt.date(1970, 1, 1)).days
    t, d = pop.interest.shape[1], pop.collab.shape[1]
    return pa.table(
        {
            "user_id": pop.user_id,
            "topic_interest": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(pop) * t + 1, t, dtype=np.int32)),
                pa.array(pop.interest.astype(np.float32).ravel()),
            ),
            "collab_pref": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(pop) * d + 1, d, dtype=np.int32)), pa.array(pop.collab.ravel())
            ),
            "activity": pop.activity.astype(np.float32),
            "created_date": pa.array((epoch + pop.created_day).astype(np.int32)).cast(pa.date32()),
        }
    )
