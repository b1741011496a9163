"""Sampled negatives for positive-only logs: k "shown, not engaged" impressions per positive.

Purchase, view and rating logs often hold only positives. A ranker trained or evaluated on click AUC needs
negatives, so `sample_negatives` adds ``per_positive`` sampled items per positive row, each shaped like an
impression of the positive's request that was not engaged.

Rules for a positive of user u at time t (UTC day d):

- every sampled item is in the catalogue with ``created_ts <= t`` (available when the positive happened);
- none is one of u's positives anywhere in the log (past or future), which covers the positive's own item, nor an
  ``exclude`` pair (u, item);
- the items of one positive are distinct;
- sampler "uniform": every valid item equally likely; sampler "popularity": an item is drawn with probability
  proportional to ``(1 + n) ** alpha``, where n counts the item's positives on days strictly before d
  (time-honest: no popularity from day d or later; the +1 lets new items be drawn). Draws are made with
  replacement and the first distinct valid ones are kept, i.e. successive sampling without replacement from the
  valid items with those weights.

Positives are processed one UTC day at a time, vectorised with numpy: items are ordered by ``created_ts``, so the
items available at t are a prefix of that order and a draw is an index into the prefix (``integers`` for uniform,
a search of the weights' cumulative sum for popularity). Invalid and repeated draws are rejected and the missing
ones redrawn for up to `MAX_ROUNDS` rounds. Each day draws from its own ``numpy.random.Generator`` seeded from
(seed, the day's ordinal), so a day's sample does not depend on which other days are processed with it.

The number of valid items of each positive is counted exactly beforehand; a positive with fewer than k (a tiny
catalogue) gets all it can, and one whose rounds run out before k distinct valid draws (a user who engaged with
nearly all the popular items) gets fewer. Both count in the stats' ``short``. No loop ever runs per row, and no
invalid item is ever returned.

Positives whose item is not in the catalogue are kept as anchors; they add nothing to any item's popularity.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

SAMPLERS = ("uniform", "popularity")
"""The known values of `NegativeSampling.sampler`."""

MAX_ROUNDS = 8
"""Draw rounds per day. Round r draws ``2 ** (r + 1)`` times the candidates expected to fill each unfinished
positive (from the share of its available weight that is still valid and new)."""

MAX_DRAWS = 1 << 16
"""At most this many candidates per positive and round."""

ROUND_CANDIDATES = 1 << 24
"""At most about this many candidates per round (the oversampling factor shrinks when more would be drawn)."""

POSITIVES_SCHEMA = {
    "event_id": pl.String,
    "request_id": pl.String,
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "ts": pl.Datetime("us", "UTC"),
}
ITEMS_SCHEMA = {"item_id": pl.Int64, "created_ts": pl.Datetime("us", "UTC")}
EXCLUDE_SCHEMA = {"user_id": pl.Int64, "item_id": pl.Int64}

NEGATIVES_SCHEMA = {
    "event_id": pl.String,
    "request_id": pl.String,
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "ts": pl.Datetime("us", "UTC"),
    "anchor_event_id": pl.String,
}
"""The output: one row per sampled negative; ``event_id`` is ``f"{anchor_event_id}~neg{j}"``, j = 0..k-1."""

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class NegativeSampling:
    """How many negatives to sample per positive, and from which distribution."""

    per_positive: int = 0  # k sampled negatives per positive; 0: none
    sampler: str = "popularity"  # "uniform" or "popularity" (probability proportional to popularity ** alpha)
    alpha: float = 0.75  # popularity exponent (0 = uniform); popularity = 1 + positives on earlier UTC days
    seed: int = 0  # >= 0; each UTC day draws from a generator seeded from (seed, day ordinal)


def sample_negatives(
    positives: pl.DataFrame,
    items: pl.DataFrame,
    cfg: NegativeSampling,
    exclude: pl.DataFrame | None = None,
    popularity: pl.DataFrame | None = None,
    stream: int | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Sample ``cfg.per_positive`` negatives for every row of ``positives`` (all positives of the log).

    ``positives`` needs event_id, request_id, user_id, item_id, ts (`POSITIVES_SCHEMA`; event ids unique),
    ``items`` item_id and created_ts (`ITEMS_SCHEMA`; item ids unique), ``exclude`` (optional) user_id and item_id
    pairs never to sample for that user. Returns the negatives (`NEGATIVES_SCHEMA`, sorted by ts, user_id,
    event_id) and stats ``{"per_positive", "sampler", "alpha", "seed", "positives", "sampled", "short"}``, where
    short counts the positives that got fewer than k. Raises ValueError for a bad config or input frame.

    A log sampled in parts (its users split into groups, one call per group) passes ``popularity``, the whole
    log's positives per item and UTC day (item_id, day, positives), so that every part draws from the log's
    popularity rather than its own, and ``stream``, the part's number, which enters each day's seed.
    """
    _check_config(cfg)
    positives = _checked_frame(positives, POSITIVES_SCHEMA, "positives", unique="event_id")
    items = _checked_frame(items, ITEMS_SCHEMA, "items", unique="item_id")
    if exclude is not None:
        exclude = _checked_frame(exclude, EXCLUDE_SCHEMA, "exclude")
    k = cfg.per_positive
    stats = {"per_positive": k, "sampler": cfg.sampler, "alpha": cfg.alpha, "seed": cfg.seed}
    stats |= {"positives": positives.height, "sampled": 0, "short": 0}
    if k == 0 or positives.height == 0:
        return pl.DataFrame(schema=NEGATIVES_SCHEMA), stats

    positives = positives.sort("ts", "user_id", "event_id")
    item_ids, created_us = _catalogue_order(items)
    users, pos_user, pos_rank = _encode_positives(positives, item_ids)
    forbidden = _forbidden_keys(users, pos_user, pos_rank, exclude, item_ids)
    pos_us = positives["ts"].dt.epoch("us").to_numpy()
    day = positives["ts"].dt.date().cast(pl.Int32).to_numpy().astype(np.int64)
    bounds = np.flatnonzero(np.diff(day)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, day.size]

    counts = np.zeros(item_ids.size, dtype=np.int64)  # positives per item on the days processed so far
    if popularity is not None:  # the whole log's: added day by day, before each day of these positives
        pop = popularity.sort("day")
        pop_day = pop["day"].cast(pl.Int32).to_numpy().astype(np.int64)
        pop_rank, pop_n = _ranks(pop["item_id"].to_numpy(), item_ids), pop["positives"].to_numpy().astype(np.int64)
        taken = 0
    anchors, ranks, slots, short = [], [], [], 0
    for lo, hi in zip(starts, ends, strict=True):
        if popularity is not None:
            upto = int(np.searchsorted(pop_day, day[lo], side="left"))
            r, n = pop_rank[taken:upto], pop_n[taken:upto]
            counts += np.bincount(r[r >= 0], weights=n[r >= 0], minlength=item_ids.size).astype(np.int64)
            taken = upto
        seed = [cfg.seed, int(day[lo]) + _EPOCH_ORDINAL, *([] if stream is None else [stream])]
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        weight = (1.0 + counts) ** cfg.alpha if cfg.sampler == "popularity" else None
        avail = np.searchsorted(created_us, pos_us[lo:hi], side="right")
        local, rank, slot, day_short = _sample_day(pos_user[lo:hi], avail, forbidden, item_ids.size, k, weight, rng)
        anchors.append(local + lo)
        ranks.append(rank)
        slots.append(slot)
        short += day_short
        if popularity is None:
            known = pos_rank[lo:hi]
            counts += np.bincount(known[known >= 0], minlength=item_ids.size)

    out = _negatives_frame(positives, np.concatenate(anchors), item_ids[np.concatenate(ranks)], np.concatenate(slots))
    stats |= {"sampled": out.height, "short": short}
    return out, stats


def _check_config(cfg: NegativeSampling) -> None:
    """Raise ValueError for a config that cannot be sampled."""
    if not isinstance(cfg.per_positive, int | np.integer) or cfg.per_positive < 0:
        raise ValueError(f"NegativeSampling.per_positive must be an int >= 0, got {cfg.per_positive!r}")
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"NegativeSampling.sampler must be one of {SAMPLERS}, got {cfg.sampler!r}")
    if not np.isfinite(cfg.alpha) or cfg.alpha < 0:
        raise ValueError(f"NegativeSampling.alpha must be a finite number >= 0, got {cfg.alpha!r}")
    if not isinstance(cfg.seed, int | np.integer) or cfg.seed < 0:
        raise ValueError(f"NegativeSampling.seed must be an int >= 0, got {cfg.seed!r}")


def _checked_frame(df: pl.DataFrame, schema: dict, name: str, unique: str | None = None) -> pl.DataFrame:
    """``df``'s columns of ``schema`` (timestamps cast to microseconds); ValueError naming ``name`` and the column
    when one is missing, of the wrong type or null, or when the ``unique`` column repeats a value."""
    for col, dtype in schema.items():
        if col not in df.columns:
            raise ValueError(f"{name}: missing column {col!r} (needs {list(schema)}; has {df.columns})")
        got = df.schema[col]
        ok = got.time_zone == "UTC" if isinstance(dtype, pl.Datetime) and isinstance(got, pl.Datetime) else got == dtype
        if not ok:
            raise ValueError(f"{name}: column {col!r} must be {dtype}, got {got}")
        if df[col].null_count():
            raise ValueError(f"{name}: column {col!r} has {df[col].null_count()} null value(s)")
    df = df.select([pl.col(c).cast(t) for c, t in schema.items()])
    if unique is not None and df[unique].n_unique() != df.height:
        raise ValueError(f"{name}: column {unique!r} has duplicate values; each must be unique")
    return df


def _catalogue_order(items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The item ids ordered by (created_ts, item_id) and their created_ts in epoch microseconds: the items
    available at time t are the prefix of those created at or before t. A "rank" is a position in this order."""
    items = items.sort("created_ts", "item_id")
    return items["item_id"].to_numpy(), items["created_ts"].dt.epoch("us").to_numpy()


def _encode_positives(positives: pl.DataFrame, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted distinct user ids, and per positive: the index of its user among them and its item's catalogue
    rank (-1 when not in the catalogue)."""
    users, user_index = np.unique(positives["user_id"].to_numpy(), return_inverse=True)
    return users, user_index.astype(np.int64), _ranks(positives["item_id"].to_numpy(), item_ids)


def _ranks(ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """The catalogue rank of each of ``ids``, -1 for an id not in the catalogue."""
    if item_ids.size == 0:
        return np.full(ids.size, -1, dtype=np.int64)
    order = np.argsort(item_ids)
    sorted_ids = item_ids[order]
    at = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return np.where(sorted_ids[at] == ids, order[at], -1).astype(np.int64)


def _forbidden_keys(
    users: np.ndarray, pos_user: np.ndarray, pos_rank: np.ndarray, exclude: pl.DataFrame | None, item_ids: np.ndarray
) -> np.ndarray:
    """Sorted unique ``user_index * n_items + rank`` of every (user, catalogue item) pair never to sample: the
    users' positives and the ``exclude`` pairs of users with positives (``users``: the sorted distinct user ids)."""
    n_items = item_ids.size
    if users.size * n_items >= 2**62:
        raise ValueError(f"too many users x items to encode their pairs: {users.size} x {n_items}")
    known = pos_rank >= 0
    keys = [pos_user[known] * n_items + pos_rank[known]]
    if exclude is not None and exclude.height:
        ex_user, ex_item = exclude["user_id"].to_numpy(), exclude["item_id"].to_numpy()
        at = np.minimum(np.searchsorted(users, ex_user), users.size - 1)
        rank = _ranks(ex_item, item_ids)
        ok = (users[at] == ex_user) & (rank >= 0)
        keys.append(at[ok] * n_items + rank[ok])
    return np.unique(np.concatenate(keys))


def _sample_day(
    user: np.ndarray,
    avail: np.ndarray,
    forbidden: np.ndarray,
    n_items: int,
    k: int,
    weight: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sample up to k distinct valid ranks for each of one day's positives (user indices ``user``, ``avail`` items
    available each; ``weight`` per rank, None for uniform). Returns (positive index, rank, slot j) of every
    negative, ordered by positive then slot, and the number of positives with fewer than k."""
    day = _Day(user * n_items, avail, forbidden, weight)
    target = np.minimum(k, avail - day.n_forbidden)  # exact: fewer valid items than k means fewer negatives
    acc_pos, acc_rank = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    have = np.zeros(user.size, dtype=np.int64)
    for r in range(MAX_ROUNDS):
        active = np.flatnonzero(have < target)
        if active.size == 0:
            break
        draws = _round_draws(target[active] - have[active], day.useful_share(active, acc_pos, acc_rank, have, r), r)
        cand_pos = np.repeat(active, draws)
        cand_rank = day.draw(cand_pos, rng)
        key = day.base[cand_pos] + cand_rank
        at = np.minimum(np.searchsorted(forbidden, key), max(forbidden.size - 1, 0))
        valid = forbidden[at] != key if forbidden.size else np.ones(key.size, dtype=bool)
        acc_pos, acc_rank = _keep_first(
            np.concatenate([acc_pos, cand_pos[valid]]), np.concatenate([acc_rank, cand_rank[valid]]), target, n_items
        )
        have = np.bincount(acc_pos, minlength=user.size)
    slot = np.arange(acc_pos.size) - np.repeat(np.cumsum(have) - have, have)
    return acc_pos, acc_rank, slot, int(np.count_nonzero(have < k))


class _Day:
    """One day's draw state: per positive its forbidden keys' offset ``f_lo`` and count ``n_forbidden`` in the
    sorted ``forbidden`` array (those below ``base + avail``), and the rank weights (None: uniform)."""

    def __init__(self, base: np.ndarray, avail: np.ndarray, forbidden: np.ndarray, weight: np.ndarray | None):
        self.base, self.avail, self.forbidden, self.weight = base, avail, forbidden, weight
        self.f_lo = np.searchsorted(forbidden, base)
        self.n_forbidden = np.searchsorted(forbidden, base + avail) - self.f_lo
        self.cum = None if weight is None else np.cumsum(weight)

    def draw(self, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One rank per entry of ``pos`` among that positive's available items, uniform or by weight."""
        avail = self.avail[pos]
        if self.cum is None:
            return rng.integers(0, avail)
        u = rng.random(avail.size) * self.cum[avail - 1]
        return np.minimum(np.searchsorted(self.cum, u, side="right"), avail - 1)

    def useful_share(self, active, acc_pos, acc_rank, have, r: int) -> np.ndarray:
        """Per active positive, the probability that a draw is valid and not yet accepted: exact for uniform; for
        popularity exact from round 1 while the forbidden keys to weigh fit a round's budget, else the uniform
        share as a proxy."""
        avail, n_forbidden = self.avail[active], self.n_forbidden[active]
        if self.weight is None or r == 0 or int(n_forbidden.sum()) > ROUND_CANDIDATES:
            return (avail - n_forbidden - have[active]) / avail
        lengths = n_forbidden  # the active positives' forbidden keys, gathered as one flat array
        owner = np.repeat(np.arange(active.size), lengths)
        idx = (
            np.repeat(self.f_lo[active], lengths)
            + np.arange(owner.size)
            - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        ranks = self.forbidden[idx] - self.base[active][owner]
        f_mass = np.bincount(owner, weights=self.weight[ranks], minlength=active.size)
        a_mass = np.bincount(acc_pos, weights=self.weight[acc_rank], minlength=self.avail.size)[active]
        total = self.cum[avail - 1]
        return (total - f_mass - a_mass) / total


def _round_draws(need: np.ndarray, share: np.ndarray, r: int) -> np.ndarray:
    """Draws per unfinished positive in round r: ``2 ** (r + 1)`` times the draws expected to give ``need`` useful
    ones at the useful ``share``, at most `MAX_DRAWS` each and about `ROUND_CANDIDATES` in all (never below need)."""
    draws = np.ceil(need * 2.0 ** (r + 1) / np.clip(share, 1e-12, 1.0))
    draws = np.minimum(draws, MAX_DRAWS)
    total = draws.sum()
    if total > ROUND_CANDIDATES:
        draws = np.floor(draws * (ROUND_CANDIDATES / total))
    return np.maximum(draws, need).astype(np.int64)


def _keep_first(pos: np.ndarray, rank: np.ndarray, target: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The first occurrence of each (pos, rank) pair, in input order, at most ``target[pos]`` per pos; returned
    grouped by pos (stable, so earlier-accepted ranks keep their slots)."""
    _, first = np.unique(pos * n_items + rank, return_index=True)
    first.sort()
    pos, rank = pos[first], rank[first]
    order = np.argsort(pos, kind="stable")
    pos, rank = pos[order], rank[order]
    counts = np.bincount(pos, minlength=target.size)
    within = np.arange(pos.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = within < target[pos]
    return pos[keep], rank[keep]


def _negatives_frame(
    positives: pl.DataFrame, anchor: np.ndarray, item_id: np.ndarray, slot: np.ndarray
) -> pl.DataFrame:
    """The output rows: each negative copies its anchor positive's request, user and ts."""
    rows = positives.select("event_id", "request_id", "user_id", "ts")[anchor]
    out = rows.with_columns(
        pl.Series("item_id", item_id, dtype=pl.Int64),
        pl.Series("slot", slot, dtype=pl.Int64),
    ).select(
        pl.concat_str(pl.col("event_id"), pl.lit("~neg"), pl.col("slot").cast(pl.String)).alias("event_id"),
        "request_id",
        "user_id",
        "item_id",
        "ts",
        pl.col("event_id").alias("anchor_event_id"),
    )
    return out.sort("ts", "user_id", "event_id")
