"""The day-by-day simulation of the log: who is active, their sessions, feed requests served by the logged
policy, responses, searches, timestamps, satisfaction, next-day return, interest drift and the platform's
learning. Each day yields arrow chunks of every log table; nothing accumulates across days except per-user and
per-item state arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts import Column, TableSchema
from sources.world import response
from sources.world.catalogue import DAY_US, Catalogue, start_us
from sources.world.config import WorldConfig
from sources.world.policy import (
    Availability,
    PlatformState,
    plackett_luce_slates,
    policy_logits,
    sample_candidates,
    softmax_propensities,
)
from sources.world.rng import stream
from sources.world.search import SearchIndex, run_searches
from sources.world.users import Population, drift_interests
from sources.world.vocab import Vocabulary

DAILY_SATISFACTION = TableSchema(
    name="daily_satisfaction",
    columns=(
        Column("user_id", "int64"),
        Column("date", "date", doc="UTC day"),
        Column("satisfaction", "float64", nullable=True, doc="mean reward per impression; null when inactive"),
        Column("active", "bool", doc="the user was active that day"),
    ),
    key=("user_id", "date"),
    doc="Ground truth: every signed-up user's satisfaction per day of the log.",
)

USER_STATE_END = TableSchema(
    name="user_state_end",
    columns=(
        Column("user_id", "int64"),
        Column("topic_interest", "list<float32>", doc="interests after the last day's drift"),
        Column("active_next_day", "bool", doc="drawn return for the day after the log"),
    ),
    key=("user_id",),
    doc="Ground truth: users' state at the end of the log (a starting point for simulations after it).",
)

SESSION_GAP_MS = 31 * 60 * 1000
"""Minimum idle time between two sessions of a user (a 30-minute sessionisation gap separates them)."""
DAY_MARGIN_MS = 16 * 60 * 1000
"""No session starts in the first or ends in the last 16 minutes of a day (so sessions never straddle midnight
and the last session of a day is more than 30 minutes from the first of the next)."""
DAY_MS = DAY_US // 1000


@dataclass
class DayOutput:
    interactions: pa.Table | None
    feed_requests: pa.Table | None
    searches: pa.Table | None
    user_activity: pa.Table | None
    daily_satisfaction: pa.Table


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _const(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def grouped_exclusive_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of earlier values within each group; `group` is sorted (groups are contiguous)."""
    cs = np.cumsum(values) - values
    first = np.searchsorted(group, group, side="left")
    return cs - cs[first]


def place_sessions(rng: np.random.Generator, owner: np.ndarray, length_ms: np.ndarray) -> np.ndarray:
    """Start offsets (ms into the day) of sessions; owner is sorted. Sessions of one owner do not overlap, are
    at least SESSION_GAP_MS apart and lie within the day's margins."""
    step = length_ms + SESSION_GAP_MS
    busy = np.bincount(owner, weights=step)[owner] - SESSION_GAP_MS
    free = np.maximum(DAY_MS - 2 * DAY_MARGIN_MS - busy, 0)
    pts = rng.random(len(owner)) * free
    pts = pts[np.lexsort((pts, owner))]
    return (DAY_MARGIN_MS + pts + grouped_exclusive_cumsum(step, owner)).astype(np.int64)


@dataclass(frozen=True)
class _Plan:
    sess_user: np.ndarray  # user index per session (sessions grouped by user)
    req_sess: np.ndarray  # session index per feed request
    req_user: np.ndarray  # user index per feed request
    searched: np.ndarray  # bool per session: it opens with a search


@dataclass(frozen=True)
class _Feed:
    cand: np.ndarray  # (requests, width) candidate item indices, -1: unused
    props: np.ndarray  # (requests, width) first-slot propensities
    items: np.ndarray  # item index per impression (requests * K, request-major)
    imp_req: np.ndarray  # request index per impression
    position: np.ndarray  # slot per impression
    cond: np.ndarray  # conditional propensity per impression


class Simulator:
    """Holds the evolving state (user interests, platform estimates, who returns tomorrow)."""

    def __init__(self, cfg: WorldConfig, cat: Catalogue, pop: Population, vocab: Vocabulary, index: SearchIndex):
        self.cfg, self.cat, self.pop, self.vocab, self.index = cfg, cat, pop, vocab, index
        self.state = PlatformState.empty(len(pop), len(cat), cfg.n_topics)
        rng = stream(cfg.seed, "initial-activity")
        self.active = (pop.created_day < 0) & (rng.random(len(pop)) < pop.activity)
        self.epoch_day = start_us(cfg) // DAY_US

    def run_day(self, day: int) -> DayOutput:
        """Simulates one day and returns its log chunks; advances the state to the next day."""
        cfg, pop = self.cfg, self.pop
        rng = stream(cfg.seed, "day", day)
        signed = pop.created_day <= day
        active = (self.active & signed) | (pop.created_day == day)
        users = np.flatnonzero(active)
        plan = self._plan(rng, users)
        feed = self._serve(rng, day, plan.req_user)
        imp_user = plan.req_user[feed.imp_req]
        out = self._respond(rng, imp_user, feed.items, feed.position)
        imp_ts, req_ts, search_ts = self._timestamps(rng, day, plan, feed, out)
        searches = run_searches(
            rng, cfg, day, plan.sess_user[plan.searched], search_ts, pop, self.cat, self.vocab, self.index
        )
        req_num = np.empty(len(req_ts), np.int64)
        req_num[np.argsort(req_ts, kind="stable")] = np.arange(len(req_ts))
        req_ids = _ids(f"r{day}-", req_num)
        interactions = self._interactions(day, req_ids, feed, imp_user, imp_ts, out)
        feed_requests = self._feed_requests(req_ids, plan.req_user, req_ts, feed.cand, feed.props)
        imp_count = np.bincount(imp_user, minlength=len(pop))
        reward = np.bincount(imp_user, weights=out.reward, minlength=len(pop))
        sat = response.daily_satisfaction(reward, imp_count, cfg.response)
        activity = self._activity(day, users, plan.sess_user, imp_user, imp_count, out)
        satisfaction = self._satisfaction(day, signed | active, active, sat)
        self._advance(rng, active, signed, sat, imp_user, feed.items, out)
        return DayOutput(interactions, feed_requests, searches, activity, satisfaction)

    def _plan(self, rng: np.random.Generator, users: np.ndarray) -> _Plan:
        """Sessions of the active users (1 + Poisson) and feed requests per session (1 + Poisson)."""
        cfg = self.cfg
        sess_user = np.repeat(users, 1 + rng.poisson(cfg.sessions_extra_mean, len(users)))
        n_sess = len(sess_user)
        req_sess = np.repeat(np.arange(n_sess), 1 + rng.poisson(cfg.requests_extra_mean, n_sess))
        searched = rng.random(n_sess) < cfg.search_prob
        return _Plan(sess_user, req_sess, sess_user[req_sess], searched)

    def _serve(self, rng: np.random.Generator, day: int, req_user: np.ndarray) -> _Feed:
        """The logged policy: candidates, propensities and a Plackett-Luce slate per request."""
        cfg, cat, k = self.cfg, self.cat, self.cfg.slate_size
        avail = Availability.build(cat.created_day, cat.primary, day, cfg.n_topics, self.state, cfg.policy)
        sizes = (cfg.candidates_min, cfg.candidates_max)
        cand = sample_candidates(rng, req_user, avail, self.state, cfg.policy, sizes)
        logits = policy_logits(cand, req_user, cat.primary, cat.created_day, day, self.state, cfg.policy)
        props = softmax_propensities(logits)
        cols, cond = plackett_luce_slates(rng, logits, props, k)
        items = np.take_along_axis(cand, cols, axis=1).ravel()
        imp_req = np.repeat(np.arange(len(req_user)), k)
        position = np.tile(np.arange(k, dtype=np.int32), len(req_user))
        return _Feed(cand, props, items, imp_req, position, cond.ravel())

    def _respond(
        self, rng: np.random.Generator, imp_user: np.ndarray, items: np.ndarray, position: np.ndarray
    ) -> response.FeedOutcome:
        pop, cat = self.pop, self.cat
        u = response.utility(
            pop.interest[imp_user],
            pop.collab[imp_user],
            cat.topics[items],
            cat.collab_latent[items],
            cat.quality[items],
            self.cfg.response,
        )
        return response.sample_feed_outcomes(rng, u, position, cat.duration_ms[items], self.cfg.response)

    def _timestamps(self, rng: np.random.Generator, day: int, plan: _Plan, feed: _Feed, out: response.FeedOutcome):
        """Impression, request and search times (us): impressions follow each other by watch time plus a short
        gap, a search (if any) opens its session, and sessions are spread over the day."""
        n_sess = len(plan.sess_user)
        imp_sess = plan.req_sess[feed.imp_req]
        step = out.watch_ms + rng.integers(300, 4000, len(feed.items))
        search_ms = np.where(plan.searched, rng.integers(15_000, 90_000, n_sess), 0)
        sess_len = search_ms + np.bincount(imp_sess, weights=step, minlength=n_sess).astype(np.int64)
        sess_start = place_sessions(rng, plan.sess_user, sess_len)
        day_start = (self.epoch_day + day) * DAY_US
        imp_ms = sess_start[imp_sess] + search_ms[imp_sess] + grouped_exclusive_cumsum(step, imp_sess)
        imp_ts = day_start + np.minimum(imp_ms, DAY_MS - 1) * 1000
        req_ts = imp_ts[:: self.cfg.slate_size]
        search_ts = day_start + sess_start[plan.searched] * 1000
        return imp_ts, req_ts, search_ts

    def _activity(self, day, users, sess_user, imp_user, imp_count, out) -> pa.Table:
        n = len(self.pop)
        return pa.table(
            {
                "user_id": self.pop.user_id[users],
                "activity_date": self._dates(np.full(len(users), day)),
                "sessions": np.bincount(sess_user, minlength=n)[users].astype(np.int32),
                "impressions": imp_count[users].astype(np.int32),
                "watch_ms": np.bincount(imp_user, weights=out.watch_ms, minlength=n)[users].astype(np.int64),
            }
        )

    def _satisfaction(self, day: int, rows_mask: np.ndarray, active: np.ndarray, sat: np.ndarray) -> pa.Table:
        rows = np.flatnonzero(rows_mask)
        return pa.table(
            {
                "user_id": self.pop.user_id[rows],
                "date": self._dates(np.full(len(rows), day)),
                "satisfaction": pa.array(sat[rows], mask=~active[rows]),
                "active": active[rows],
            }
        )

    def end_state_table(self) -> pa.Table:
        """USER_STATE_END: interests after the last simulated day and tomorrow's drawn return."""
        n, t = self.pop.interest.shape
        return pa.table(
            {
                "user_id": self.pop.user_id,
                "topic_interest": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, n * t + 1, t, dtype=np.int32)),
                    pa.array(self.pop.interest.astype(np.float32).ravel()),
                ),
                "active_next_day": self.active,
            }
        )

    def _dates(self, days: np.ndarray) -> pa.Array:
        return pa.array((self.epoch_day + days).astype(np.int32)).cast(pa.date32())

    def _interactions(self, day, req_ids, feed: _Feed, imp_user, imp_ts, out) -> pa.Table:
        order = np.argsort(imp_ts, kind="stable")
        items, position, cond, imp_req = feed.items, feed.position, feed.cond, feed.imp_req
        return pa.table(
            {
                "event_id": _ids(f"i{day}-", np.arange(len(order))),
                "request_id": req_ids.take(pa.array(imp_req[order])),
                "user_id": self.pop.user_id[imp_user[order]],
                "item_id": self.cat.item_id[items[order]],
                "ts": _ts(imp_ts[order]),
                "surface": _const("feed", len(order)),
                "position": position[order],
                "propensity": cond[order],
                "clicked": out.clicked[order],
                "watch_ms": out.watch_ms[order],
                "finished": out.finished[order],
                "liked": out.liked[order],
                "shared": out.shared[order],
            }
        )

    def _feed_requests(self, req_ids, req_user, req_ts, cand, props) -> pa.Table:
        order = np.argsort(req_ts, kind="stable")
        cand, props = cand[order], props[order]
        valid = cand >= 0
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32))
        return pa.table(
            {
                "request_id": req_ids.take(pa.array(order)),
                "user_id": self.pop.user_id[req_user[order]],
                "ts": _ts(req_ts[order]),
                "surface": _const("feed", len(order)),
                "candidate_item_ids": pa.ListArray.from_arrays(offsets, pa.array(self.cat.item_id[cand[valid]])),
                "candidate_propensities": pa.ListArray.from_arrays(offsets, pa.array(props[valid])),
            }
        )

    def _advance(self, rng, active, signed, sat, imp_user, items, out) -> None:
        cfg, pop, cat = self.cfg, self.pop, self.cat
        self.state.update(imp_user, cat.primary[items], items, out.clicked, cfg.policy)
        t = cfg.n_topics
        frac = np.where(out.clicked, out.watch_ms / cat.duration_ms[items], 0.0)
        consumed = np.bincount(imp_user * t + cat.primary[items], weights=frac, minlength=len(pop) * t)
        sec = cat.topics[items, 1]
        has = sec >= 0
        consumed += np.bincount(imp_user[has] * t + sec[has], weights=0.5 * frac[has], minlength=len(pop) * t)
        drifted = drift_interests(
            rng, pop.interest, consumed.reshape(len(pop), t), cfg.interest_drift_sigma, cfg.interest_pull
        )
        live = signed | active
        pop.interest[live] = drifted[live]
        p = response.return_probability(pop.activity, sat, active, cfg.response)
        self.active = rng.random(len(pop)) < p
