"""Configuration of pair mining (i2i co-visitation and Swing, q2i, seq2item): frozen dataclasses per step.

Both engines (`mining.mining_spark`, `mining.mining_polars`) read the same objects, so one config gives the same
pairs on either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Engine = Literal["spark", "polars"]


@dataclass(frozen=True)
class PositiveConfig:
    """Which impressions count as positive engagements.

    An impression's engagement score is
        click_weight * clicked + finish_weight * finished + like_weight * liked + share_weight * shared
        + watch_weight * (watch_ms >= min_watch_ms)
    and the impression is positive when that score is >= `threshold`. With the defaults a click alone is not
    positive (it may be an accidental tap), but a click with >= 5 s of watch time, a finish, a like or a share is.
    """

    click_weight: float = 1.0  # added when `clicked` is true
    finish_weight: float = 2.0  # added when `finished` is true (watched to the end)
    like_weight: float = 2.0  # added when `liked` is true
    share_weight: float = 2.0  # added when `shared` is true
    watch_weight: float = 1.0  # added when watch_ms >= min_watch_ms
    min_watch_ms: int = 5_000  # watch-time threshold (ms) for the watch signal
    threshold: float = 2.0  # an impression is positive when its weighted score is >= this


@dataclass(frozen=True)
class CovisitConfig:
    """Session co-visitation i2i: pairs of positives close together in one user session."""

    session_gap_s: int = 1800  # a gap longer than this (s) between consecutive positives starts a new session
    window: int = 5  # pair each positive with the next `window` positives of the same session
    max_gap_s: int = 3600  # and only when they are at most this many seconds apart
    decay_tau_s: float | None = None  # time decay exp(-dt / tau) per pair (s); None: no decay
    top_k: int = 20  # pairs kept per anchor item (score desc, then item_id asc)


@dataclass(frozen=True)
class SwingConfig:
    """Swing i2i (see `mine_swing` in either engine for the formula)."""

    alpha: float = 1.0  # smoothing in 1 / (alpha + |I_u & I_v|); > 0
    max_items_per_user: int = 50  # keep each user's most recent N distinct positive items (skew cap)
    max_users_per_item: int = 100  # keep N users per item with the smallest sample_hash(user, item, seed)
    seed: int = 0  # seed of the deterministic user sampling per item
    top_k: int = 20  # pairs kept per anchor item (score desc, then item_id asc)


@dataclass(frozen=True)
class Q2IConfig:
    """Query -> clicked item pairs from the search log."""

    min_clicks: int = 2  # minimum support: a (query, item) pair needs at least this many clicks


@dataclass(frozen=True)
class Seq2ItemConfig:
    """User-history -> next positive item samples with a time-based split."""

    history_len: int = 10  # L: at most this many positives strictly before the target (oldest first)
    min_history: int = 1  # drop targets with fewer history items than this
    max_samples_per_user: int = 50  # keep the most recent N targets per user and split (deterministic)
    split_ts: datetime | None = None  # targets with ts < split_ts are 'train', others 'eval' (UTC); None: eval_days
    eval_days: int = 2  # when split_ts is None: the last `eval_days` UTC calendar days of the log are eval


# ------------------------------------------------------------------------------------------------------------
# Definitions both engines share (so that they agree exactly)
# ------------------------------------------------------------------------------------------------------------

INTERACTION_REJECT_REASONS: dict[str, str] = {
    "null_id": "user_id or item_id is null",
    "null_ts": "ts is null",
    "null_value": "clicked, finished, liked, shared or watch_ms is null",
    "negative_watch_ms": "watch_ms < 0",
}
"""Why an interaction row is rejected before mining, in the order checked (a row gets the first that applies)."""

SEARCH_REJECT_REASONS: dict[str, str] = {
    "null_id": "user_id or item_id is null",
    "null_ts": "ts is null",
    "null_value": "query or clicked is null",
    "empty_query": "the query is empty after normalisation",
}
"""Why a search row is rejected before mining, in the order checked."""

QUERY_SEPARATORS = r"[\p{P}\p{S}\p{Z}\p{Cc}]+"
"""Runs of punctuation, symbols, separators (spaces) and control characters; replaced by one space. The same
pattern in Java (Spark) and Rust (polars) regex syntax."""

HASH_MOD = 2**31  # sample_hash(u, i, seed) = ((u mod M) * HASH_USER_MUL + (i mod M) * HASH_ITEM_MUL + seed mod M) mod M
HASH_USER_MUL = 2654435761  # Knuth's multiplicative constant; (M - 1) * this < 2**63, so int64 never overflows
HASH_ITEM_MUL = 40503

RANK_DECIMALS = 10
"""Top-K ranking sorts by the score rounded half up to this many decimals (desc), then item_id (asc): scores that
are equal in exact arithmetic but differ in the last bits (float summation order) then rank identically in both
engines. The rounded score is the rank key x - (x mod 1) with x = score * RANK_SCALE + 0.5 (scores are never
negative): the same three floating-point operations in both engines, so equal scores get equal keys, and far
cheaper in Spark than its decimal `round`."""

RANK_SCALE = 10.0**RANK_DECIMALS


@dataclass(frozen=True)
class MiningConfig:
    """Everything `mining.mine_pairs.run` needs."""

    data_dir: str  # data set directory holding interactions/ and searches/ contract tables
    out_dir: str  # where i2i_pairs/, q2i_pairs/, seq2item/ and mining.json are written
    engine: Engine = "spark"  # "spark" or "polars"
    positive: PositiveConfig = field(default_factory=PositiveConfig)
    covisit: CovisitConfig = field(default_factory=CovisitConfig)
    swing: SwingConfig = field(default_factory=SwingConfig)
    q2i: Q2IConfig = field(default_factory=Q2IConfig)
    seq2item: Seq2ItemConfig = field(default_factory=Seq2ItemConfig)
    miners: tuple[str, ...] = ("covisit", "swing")  # i2i miners to run (a subset of covisit, swing)
    tables: tuple[str, ...] = ("i2i_pairs", "q2i_pairs", "seq2item")  # outputs to write (a subset of these three)
    ts_from: datetime | None = None  # mine only events (interactions, searches) with ts >= this (UTC); None: all
    ts_until: datetime | None = None  # and ts < this (UTC); None: up to the end of the log
    master: str | None = "local[*]"  # Spark master; None leaves it to spark-submit
    shuffle_partitions: int | None = None  # spark.sql.shuffle.partitions; None: Spark's default (AQE coalesces)
    driver_memory: str | None = None  # spark.driver.memory for local runs, e.g. "8g"; None: 40% of the RAM
    output_files: int | None = None  # files per output table (Spark repartition); None: let Spark/AQE decide

    def __post_init__(self) -> None:
        if self.engine not in ("spark", "polars"):
            raise ValueError(f"engine must be 'spark' or 'polars', got {self.engine!r}")
        unknown = set(self.miners) - {"covisit", "swing"}
        if unknown:
            raise ValueError(f"unknown i2i miner(s) {sorted(unknown)}; known: covisit, swing")
        unknown = set(self.tables) - set(MINED_TABLES)
        if unknown or not self.tables:
            raise ValueError(f"tables must be a non-empty subset of {list(MINED_TABLES)}, got {sorted(unknown)}")
        if self.ts_from is not None and self.ts_until is not None and self.ts_from >= self.ts_until:
            raise ValueError(f"empty period: ts_from {self.ts_from} is not before ts_until {self.ts_until}")


MINED_TABLES = ("i2i_pairs", "q2i_pairs", "seq2item")
"""The tables one mining run can write."""
