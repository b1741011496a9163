"""Off-policy estimates of a ranking policy's click rate from the logged feed (IPS, SNIPS, doubly robust).

The logged bandit: in every feed request the logging policy drew the FIRST slot's item from
`FEED_REQUESTS.candidate_propensities` (a softmax over the request's candidates), so slot 0 is a contextual bandit
with known propensities pi_0(a | x). The reward is whether the slot-0 impression was clicked. A target policy
scores the same candidates and plays pi_t(a | x) = softmax(score / temperature).

Definitions (pinned), with w = pi_t(a_logged) / pi_0(a_logged) and R requests:
- IPS   = (1 / R) * sum w * r
- SNIPS = sum w * r / sum w
- DR    = (1 / R) * sum [ sum_a pi_t(a) q(x, a) + w * (r - q(x, a_logged)) ], with q a reward model (default:
  each item's smoothed slot-0 click rate in the same logs, (clicks + 1) / (impressions + 2)).
Intervals resample users (a user's requests stay together): each estimator is a ratio of per-user sums.
Later slots are not used: their propensities depend on the slots drawn before them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from core import contracts as K
from core.bootstrap import Interval, mean_interval
from core.io import read_table

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(user_ids (R,), candidate item ids (R, W) with -1 padding) -> logits (R, W)."""


@dataclass(frozen=True)
class LoggedBandit:
    user_ids: np.ndarray  # (R,) int64
    cand: np.ndarray  # (R, W) candidate item ids, -1 at padding
    props: np.ndarray  # (R, W) logging propensities, 0 at padding; rows sum to 1
    action: np.ndarray  # (R,) column of the logged slot-0 item in `cand`
    reward: np.ndarray  # (R,) 1.0 when the slot-0 impression was clicked

    def __len__(self) -> int:
        return len(self.action)


def load_logged_bandit(data_dir: str | os.PathLike) -> LoggedBandit:
    """The slot-0 bandit of a (validated) data set: requests whose slot-0 impression and candidates are logged."""
    data_dir = Path(data_dir)
    req = pl.from_arrow(read_table(data_dir / "feed_requests", K.FEED_REQUESTS))
    imp = pl.from_arrow(read_table(data_dir / "interactions", K.INTERACTIONS)).filter(pl.col("position") == 0)
    joined = req.join(imp.select("request_id", "item_id", "clicked"), on="request_id", how="inner")
    width = int(joined["candidate_item_ids"].list.len().max() or 0)
    cand = np.full((joined.height, width), -1, np.int64)
    props = np.zeros((joined.height, width))
    for r, (ids, ps) in enumerate(
        zip(joined["candidate_item_ids"].to_list(), joined["candidate_propensities"].to_list(), strict=True)
    ):
        cand[r, : len(ids)] = ids
        props[r, : len(ps)] = ps
    hit = cand == joined["item_id"].to_numpy()[:, None]
    found = hit.any(axis=1)
    if not found.all():
        raise ValueError(
            f"{data_dir}: {int((~found).sum())} slot-0 impressions are not among their request's candidates"
        )
    return LoggedBandit(
        user_ids=joined["user_id"].to_numpy(),
        cand=cand,
        props=props,
        action=hit.argmax(axis=1),
        reward=joined["clicked"].to_numpy().astype(np.float64),
    )


def target_propensities(logits: np.ndarray, valid: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax(logits / temperature) over the valid candidates (0 elsewhere)."""
    z = np.where(valid, np.asarray(logits, dtype=np.float64) / temperature, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(valid, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def item_ctr_model(bandit: LoggedBandit) -> np.ndarray:
    """q(x, a) for every candidate: the item's smoothed slot-0 click rate in the logs, (clicks + 1) / (n + 2)."""
    taken = bandit.cand[np.arange(len(bandit)), bandit.action]
    ids, inv = np.unique(taken, return_inverse=True)
    clicks = np.bincount(inv, weights=bandit.reward)
    shown = np.bincount(inv)
    ctr = (clicks + 1.0) / (shown + 2.0)
    pos = np.searchsorted(ids, bandit.cand)
    pos = np.minimum(pos, len(ids) - 1)
    known = (ids[pos] == bandit.cand) & (bandit.cand >= 0)
    return np.where(known, ctr[pos], 0.5)


@dataclass(frozen=True)
class OPEResult:
    ips: Interval
    snips: Interval
    dr: Interval
    logged_ctr: Interval  # the logging policy's own slot-0 click rate (on-policy)
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many requests the estimate is worth


def _per_user(users: np.ndarray, num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, inv = np.unique(users, return_inverse=True)
    return np.bincount(inv, weights=num), np.bincount(inv, weights=den)


def estimate_policy_value(
    bandit: LoggedBandit,
    target: np.ndarray,
    q: np.ndarray | None = None,
    n_boot: int = 500,
    seed: int = 0,
) -> OPEResult:
    """IPS, SNIPS and DR estimates of a target policy's slot-0 click rate, with user-level intervals.

    target: (R, W) the target policy's propensities over each request's candidates (rows sum to 1).
    q: (R, W) reward-model predictions for DR (default: `item_ctr_model`).
    """
    rows = np.arange(len(bandit))
    p0 = bandit.props[rows, bandit.action]
    if np.any(p0 <= 0):
        raise ValueError("a logged action has propensity 0: the logs and the candidate table disagree")
    w = target[rows, bandit.action] / p0
    r = bandit.reward
    q = item_ctr_model(bandit) if q is None else q
    dr_terms = (target * q).sum(axis=1) + w * (r - q[rows, bandit.action])
    ones = np.ones_like(r)
    u = bandit.user_ids

    def interval(num: np.ndarray, den: np.ndarray) -> Interval:
        return mean_interval(*_per_user(u, num, den), n_boot=n_boot, seed=seed)

    return OPEResult(
        ips=interval(w * r, ones),
        snips=interval(w * r, w),
        dr=interval(dr_terms, ones),
        logged_ctr=interval(r, ones),
        effective_sample_size=float(w.sum() ** 2 / np.maximum((w**2).sum(), 1e-300)),
    )
