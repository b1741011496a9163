"""The offline A/B simulation: arms serve the generated world's users and the world's user model responds.

How a run works (all seeded):
1. **Warm start.** The world is replayed in memory from its config for the logged days (the same random streams
   as `generate_world`), so users' interests, the platform's counters and who returns tomorrow are exactly the
   state at the end of the log. No new items arrive during the experiment.
2. **Assignment.** Each user goes to an arm by a salted hash: arm = first arm whose cumulative share exceeds
   `blake2b(salt:user_id) mod 10_000 / 10_000`. The same salt and user always get the same arm.
3. **Serving.** For `days` simulated days, every active user has sessions of feed requests (as in the log);
   the candidate set of each request comes from the platform's retrieval (or the arm's own `recall`), the arm's
   scorer gives each candidate a logit, and a slate of K is drawn by Plackett-Luce from softmax(logit / T_arm)
   (T small: close to greedy). The response model (`sources.world.response`) draws clicks, watch time,
   likes, shares and each user-day's satisfaction; whether a user comes back the next day depends on it.
4. **Metrics per arm.** LT7 / LT14 (`offline_eval.lifetime`: active days in t0..t0+w-1 for a user active on
   experiment day t0, fully observed windows only), DAU share (active users / arm users, per day), clicks, watch
   time and satisfaction per active user-day. Each with a 95% interval from a user-level bootstrap, and the
   relative lift treatment / control - 1 with a two-sample user-level bootstrap interval (users resampled
   within each arm).

Scorers see a `ScoringContext`: the request's users and candidates (as indices into the world's arrays) and a
read-only view of what a platform knows (ids, authors, categories, creation days, the platform's click
counters, each user's recent positive items). `OracleScorer` reads the hidden truth and exists only as an upper
bound for tests; real arms wrap trained models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

import numpy as np
import polars as pl

from core.bootstrap import Interval, mean_interval, two_sample_lift
from offline_eval.lifetime import compute_lt
from sources.world import response
from sources.world.catalogue import build_catalogue, item_texts, world_vocabulary
from sources.world.config import WorldConfig
from sources.world.policy import (
    Availability,
    plackett_luce_slates,
    policy_logits,
    sample_candidates,
    softmax_propensities,
)
from sources.world.rng import stream
from sources.world.search import SearchIndex
from sources.world.simulate import Simulator
from sources.world.users import build_population

RECENT = 10
"""Recent positive items kept per user (most recent last) for scorers."""


@dataclass(frozen=True)
class ScoringContext:
    """One batch of feed requests to score. Indices refer to the world's user / item arrays."""

    day: int  # simulated day (log days come first; the experiment starts at cfg.days)
    users: np.ndarray  # (R,) user indices
    cand: np.ndarray  # (R, W) candidate item indices, -1 at unused slots
    sim: ABSimulator  # read-only: public arrays (see `user_ids`, `item_ids`, `recent`, platform state)

    @property
    def user_ids(self) -> np.ndarray:
        return self.sim.pop.user_id[self.users]

    @property
    def cand_item_ids(self) -> np.ndarray:
        """(R, W) item ids, -1 at unused slots."""
        return np.where(self.cand >= 0, self.sim.cat.item_id[np.maximum(self.cand, 0)], -1)

    @property
    def recent_item_ids(self) -> np.ndarray:
        """(R, RECENT) the users' most recent positive item ids (most recent last), -1 where fewer."""
        r = self.sim.recent[self.users]
        return np.where(r >= 0, self.sim.cat.item_id[np.maximum(r, 0)], -1)


class Scorer(Protocol):
    def score(self, ctx: ScoringContext) -> np.ndarray:
        """(R, W) logits for ctx.cand; any value at unused slots (they are masked)."""


@dataclass(frozen=True)
class Arm:
    name: str
    scorer: Scorer
    share: float = 0.5  # share of users assigned to this arm (arms' shares sum to 1)
    temperature: float = 0.3  # softmax temperature of the slate draw (small: near greedy)
    recall: Callable[[ScoringContext], np.ndarray] | None = None  # optional own candidates (R, W) item indices


class LoggedPolicyScorer:
    """The platform's logged policy (topic affinity, popularity, freshness, CTR; no collaborative signal)."""

    def score(self, ctx: ScoringContext) -> np.ndarray:
        sim = ctx.sim
        logits = policy_logits(
            ctx.cand, ctx.users, sim.cat.primary, sim.cat.created_day, ctx.day, sim.state, sim.cfg.policy
        )
        return logits * sim.cfg.policy.temperature  # undo the policy's own temperature: the arm sets it


class OracleScorer:
    """The true noise-free utility (hidden truth): an upper bound for tests, never a real arm."""

    def score(self, ctx: ScoringContext) -> np.ndarray:
        sim, c = ctx.sim, np.maximum(ctx.cand, 0)
        r, w = c.shape
        users = np.repeat(ctx.users, w)
        u = response.utility(
            sim.pop.interest[users],
            sim.pop.collab[users],
            sim.cat.topics[c.ravel()],
            sim.cat.collab_latent[c.ravel()],
            sim.cat.quality[c.ravel()],
            sim.cfg.response,
        )
        return u.reshape(r, w)


class RandomScorer:
    """Uniform logits (a floor)."""

    def score(self, ctx: ScoringContext) -> np.ndarray:
        return np.zeros(ctx.cand.shape)


def assign_arms(user_ids: np.ndarray, shares: Sequence[float], salt: str) -> np.ndarray:
    """Arm index per user from a salted hash (stable for a salt; independent across salts)."""
    shares = np.asarray(shares, dtype=np.float64)
    if np.any(shares <= 0) or abs(shares.sum() - 1.0) > 1e-9:
        raise ValueError(f"arm shares must be positive and sum to 1, got {shares.tolist()}")
    buckets = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{salt}:{int(u)}".encode(), digest_size=8).digest(), "big") % 10_000
            for u in user_ids
        ]
    )
    edges = np.cumsum(shares) * 10_000
    return np.minimum(np.searchsorted(edges, buckets, side="right"), len(shares) - 1)


class ABSimulator(Simulator):
    """The world's simulator with arms serving the feed after a warm start at the end of the log."""

    def __init__(self, cfg: WorldConfig, arms: Sequence[Arm], salt: str, run_seed: int = 0) -> None:
        cat = build_catalogue(cfg)
        texts = item_texts(cfg, cat)
        super().__init__(
            cfg, cat, build_population(cfg), world_vocabulary(cfg), SearchIndex.build(texts["title"], texts["tags"])
        )
        self.arms = list(arms)
        self.arm_of_user = assign_arms(self.pop.user_id, [a.share for a in arms], salt)
        self.run_seed = run_seed
        self.recent = np.full((len(self.pop), RECENT), -1, np.int64)

    def warm_start(self) -> None:
        """Replays the logged days (identical to the generated log) to reach the state at its end."""
        for day in range(self.cfg.days):
            self.run_day(day)

    def run_experiment_day(self, day: int) -> dict[str, np.ndarray]:
        """One experiment day (day >= cfg.days). Returns per-user arrays: active, impressions, clicks,
        watch_ms, reward, satisfaction."""
        cfg, pop = self.cfg, self.pop
        rng = stream(cfg.seed, "ab-day", day, self.run_seed)
        signed = pop.created_day <= day
        active = (self.active & signed) | (pop.created_day == day)
        plan = self._plan(rng, np.flatnonzero(active))
        items, position, imp_req = self._serve_arms(rng, day, plan.req_user)
        imp_user = plan.req_user[imp_req]
        out = self._respond(rng, imp_user, items, position)
        n = len(pop)
        imp_count = np.bincount(imp_user, minlength=n)
        reward = np.bincount(imp_user, weights=out.reward, minlength=n)
        sat = response.daily_satisfaction(reward, imp_count, cfg.response)
        self._remember_positives(imp_user, items, out)
        self._advance(rng, active, signed, sat, imp_user, items, out)
        return {
            "active": active,
            "impressions": imp_count,
            "clicks": np.bincount(imp_user, weights=out.clicked, minlength=n),
            "watch_ms": np.bincount(imp_user, weights=out.watch_ms, minlength=n),
            "reward": reward,
            "satisfaction": sat,
        }

    def _serve_arms(self, rng: np.random.Generator, day: int, req_user: np.ndarray):
        cfg, k = self.cfg, self.cfg.slate_size
        avail = Availability.build(self.cat.created_day, self.cat.primary, day, cfg.n_topics, self.state, cfg.policy)
        cand = sample_candidates(rng, req_user, avail, self.state, cfg.policy, (cfg.candidates_min, cfg.candidates_max))
        logits = np.full(cand.shape, -np.inf)
        arm_of_req = self.arm_of_user[req_user]
        for a, arm in enumerate(self.arms):
            rows = np.flatnonzero(arm_of_req == a)
            if len(rows) == 0:
                continue
            ctx = ScoringContext(day, req_user[rows], cand[rows], self)
            if arm.recall is not None:
                cand[rows] = arm.recall(ctx)
                ctx = ScoringContext(day, req_user[rows], cand[rows], self)
            s = np.asarray(arm.scorer.score(ctx), dtype=np.float64) / arm.temperature
            logits[rows] = np.where(cand[rows] >= 0, s, -np.inf)
        props = softmax_propensities(logits)
        cols, _ = plackett_luce_slates(rng, logits, props, k)
        items = np.take_along_axis(cand, cols, axis=1).ravel()
        imp_req = np.repeat(np.arange(len(req_user)), k)
        position = np.tile(np.arange(k, dtype=np.int32), len(req_user))
        return items, position, imp_req

    def _remember_positives(self, imp_user: np.ndarray, items: np.ndarray, out: response.FeedOutcome) -> None:
        pos = np.flatnonzero(out.clicked & (out.finished | out.liked))
        for u, i in zip(imp_user[pos], items[pos], strict=True):  # few per day; order = serving order
            row = self.recent[u]
            row[:-1] = row[1:]
            row[-1] = i


@dataclass(frozen=True)
class ABConfig:
    days: int = 21  # experiment length in days (LT14 needs at least 14)
    salt: str = "sail-ab-1"  # assignment salt
    n_boot: int = 500  # bootstrap resamples per interval
    seed: int = 0  # seed of the serving draws and of the bootstrap (the world keeps its own seed)


@dataclass
class ArmResult:
    name: str
    users: int  # users assigned
    metrics: dict[str, Interval]  # lt7, lt14, dau_share, clicks_per_active_day, watch_s_per_active_day, satisfaction


@dataclass
class ABResult:
    arms: list[ArmResult]
    lifts: dict[str, dict[str, Interval]]  # arm name -> metric -> relative lift vs arms[0] (control)
    daily: pl.DataFrame  # per arm and experiment day: active users, impressions, clicks, mean satisfaction
    config: ABConfig = field(default_factory=ABConfig)


def _user_day_frame(records: list[dict[str, np.ndarray]], sim: ABSimulator) -> pl.DataFrame:
    """(user_id, arm, day, active, impressions, clicks, watch_ms, satisfaction) for signed-up users."""
    frames = []
    for d, rec in enumerate(records):
        frames.append(
            pl.DataFrame(
                {
                    "user_id": sim.pop.user_id,
                    "arm": sim.arm_of_user,
                    "day": np.full(len(sim.pop), d),
                    "active": rec["active"],
                    "impressions": rec["impressions"],
                    "clicks": rec["clicks"],
                    "watch_ms": rec["watch_ms"],
                    "satisfaction": rec["satisfaction"],
                }
            )
        )
    return pl.concat(frames)


def _per_user_metrics(ud: pl.DataFrame, days: int) -> dict[str, pl.DataFrame]:
    """Per user (numerator, denominator) for each metric; ratio-of-sums over users is the arm's value."""
    d0 = date(2000, 1, 1)
    act = ud.filter(pl.col("active")).select(
        "user_id", "arm", (pl.lit(d0) + pl.duration(days=pl.col("day"))).alias("activity_date")
    )
    last = d0 + timedelta(days=days - 1)
    arms = ud.select("user_id", "arm").unique()
    out = {}
    for w in (w for w in (7, 14) if days >= w):  # LT_w needs a fully observed window
        lt = compute_lt(act.select("user_id", "activity_date"), w, last_day=last)
        out[f"lt{w}"] = (
            lt.group_by("user_id").agg(num=pl.col("lt").sum().cast(pl.Float64), den=pl.len()).join(arms, on="user_id")
        )
    active_days = ud.group_by("user_id", "arm").agg(
        num=pl.col("active").sum().cast(pl.Float64),
        den=pl.lit(float(days)),
        clicks=pl.col("clicks").sum(),
        watch=pl.col("watch_ms").sum() / 1000.0,
        sat=pl.col("satisfaction").filter(pl.col("active")).sum(),
    )
    out["dau_share"] = active_days.select("user_id", "arm", "num", "den")
    engaged = active_days.filter(pl.col("num") > 0)
    out["clicks_per_active_day"] = engaged.select(
        "user_id", "arm", pl.col("clicks").alias("num"), pl.col("num").alias("den")
    )
    out["watch_s_per_active_day"] = engaged.select(
        "user_id", "arm", pl.col("watch").alias("num"), pl.col("num").alias("den")
    )
    out["satisfaction"] = engaged.select("user_id", "arm", pl.col("sat").alias("num"), pl.col("num").alias("den"))
    return out


def summarise_ab(ud: pl.DataFrame, arms: Sequence[Arm], cfg: ABConfig) -> tuple[list[ArmResult], dict]:
    per_metric = _per_user_metrics(ud, cfg.days)
    results, lifts = [], {}
    for a, arm in enumerate(arms):
        metrics = {}
        for name, df in per_metric.items():
            sub = df.filter(pl.col("arm") == a).sort("user_id")  # group_by order varies: fix it for the bootstrap
            metrics[name] = mean_interval(sub["num"].to_numpy(), sub["den"].to_numpy(), cfg.n_boot, cfg.seed)
        n_users = int(ud.filter((pl.col("arm") == a) & (pl.col("day") == 0)).height)
        results.append(ArmResult(arm.name, n_users, metrics))
        if a == 0:
            continue
        lifts[arm.name] = {}
        for name, df in per_metric.items():
            c, t = df.filter(pl.col("arm") == 0).sort("user_id"), df.filter(pl.col("arm") == a).sort("user_id")
            lifts[arm.name][name] = two_sample_lift(
                (c["num"].to_numpy(), c["den"].to_numpy()),
                (t["num"].to_numpy(), t["den"].to_numpy()),
                cfg.n_boot,
                cfg.seed,
            )
    return results, lifts


def run_ab(
    world: WorldConfig, arms: Sequence[Arm], cfg: ABConfig = ABConfig(), progress: Callable[[str], None] | None = None
) -> ABResult:
    """Warm-starts the world, runs the experiment for cfg.days and summarises it per arm (arms[0] = control)."""
    if len(arms) < 2:
        raise ValueError("an A/B simulation needs at least two arms (the first is the control)")
    sim = ABSimulator(world, arms, cfg.salt, cfg.seed)
    sim.warm_start()
    records = []
    for d in range(cfg.days):
        records.append(sim.run_experiment_day(world.days + d))
        if progress:
            progress(f"A/B day {d + 1}/{cfg.days}")
    ud = _user_day_frame(records, sim)
    # users signed up by the end of the experiment; later sign-ups never appear
    ud = ud.filter(
        pl.col("user_id").is_in(pl.Series(sim.pop.user_id[sim.pop.created_day < world.days + cfg.days]).implode())
    )
    arm_results, lifts = summarise_ab(ud, arms, cfg)
    daily = (
        ud.group_by("arm", "day")
        .agg(
            active_users=pl.col("active").sum(),
            impressions=pl.col("impressions").sum(),
            clicks=pl.col("clicks").sum(),
            satisfaction=pl.col("satisfaction").filter(pl.col("active")).mean(),
        )
        .with_columns(arm=pl.col("arm").map_elements(lambda a: arms[a].name, return_dtype=pl.String))
        .sort("arm", "day")
    )
    return ABResult(arm_results, lifts, daily, cfg)


def run_aa_check(
    world: WorldConfig, n_runs: int, metric: str = "lt7", days: int = 10, n_boot: int = 300
) -> dict[str, float]:
    """Runs `n_runs` A/A experiments (both arms the logged policy) with different salts and serving seeds.

    Returns the share of runs whose 95% lift interval for `metric` excludes zero (nominal: 0.05).
    """
    significant = 0
    for r in range(n_runs):
        arms = [Arm("A", LoggedPolicyScorer()), Arm("A'", LoggedPolicyScorer())]
        res = run_ab(world, arms, ABConfig(days=days, salt=f"aa-{r}", n_boot=n_boot, seed=r))
        iv = res.lifts["A'"][metric]
        significant += int(iv.low > 0 or iv.high < 0)
    return {"runs": float(n_runs), "significant": float(significant), "false_positive_rate": significant / n_runs}
