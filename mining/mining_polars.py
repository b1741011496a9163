"""Pair mining on polars LazyFrames: the single-machine twin of `mining.mining_spark`.

Every function mirrors the Spark transform of the same name (same columns, same formulas, same deterministic
ordering and sampling hash), takes and returns a `pl.LazyFrame` (or builds a `pl.Expr`), and never reads or
writes; `mining.mine_pairs` scans the inputs and writes the outputs. See `mining.mining_spark` for the formulas;
they are repeated briefly here.
"""

from __future__ import annotations

from datetime import date, datetime

import polars as pl

from mining.mining_config import (
    HASH_ITEM_MUL,
    HASH_MOD,
    HASH_USER_MUL,
    QUERY_SEPARATORS,
    RANK_SCALE,
    CovisitConfig,
    PositiveConfig,
    Q2IConfig,
    Seq2ItemConfig,
    SwingConfig,
)

REJECT = "reject_reason"
_US = 1_000_000

# ------------------------------------------------------------------------------------------------------------
# Input checks and positives
# ------------------------------------------------------------------------------------------------------------


def flag_interaction_rejects(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `reject_reason` (see INTERACTION_REJECT_REASONS; null when the row is usable)."""
    c = pl.col
    reason = (
        pl.when(c("user_id").is_null() | c("item_id").is_null())
        .then(pl.lit("null_id"))
        .when(c("ts").is_null())
        .then(pl.lit("null_ts"))
        .when(pl.any_horizontal([c(x).is_null() for x in ("clicked", "finished", "liked", "shared", "watch_ms")]))
        .then(pl.lit("null_value"))
        .when(c("watch_ms") < 0)
        .then(pl.lit("negative_watch_ms"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return lf.with_columns(reason.alias(REJECT))


def drop_rejected(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Keeps the rows whose `reject_reason` is null and drops that column."""
    return lf.filter(pl.col(REJECT).is_null()).drop(REJECT)


def within_period(lf: pl.LazyFrame, ts_from: datetime | None, ts_until: datetime | None) -> pl.LazyFrame:
    """Keeps the rows with ts_from <= ts < ts_until (a None bound is open)."""
    if ts_from is not None:
        lf = lf.filter(pl.col("ts") >= pl.lit(ts_from).dt.convert_time_zone("UTC"))
    if ts_until is not None:
        lf = lf.filter(pl.col("ts") < pl.lit(ts_until).dt.convert_time_zone("UTC"))
    return lf


def engagement_score(cfg: PositiveConfig) -> pl.Expr:
    """The weighted engagement score of an impression (see PositiveConfig)."""

    def on(e: pl.Expr, w: float) -> pl.Expr:
        return pl.when(e).then(pl.lit(float(w))).otherwise(pl.lit(0.0))

    return (
        on(pl.col("clicked"), cfg.click_weight)
        + on(pl.col("finished"), cfg.finish_weight)
        + on(pl.col("liked"), cfg.like_weight)
        + on(pl.col("shared"), cfg.share_weight)
        + on(pl.col("watch_ms") >= cfg.min_watch_ms, cfg.watch_weight)
    )


def select_positive_events(interactions: pl.LazyFrame, cfg: PositiveConfig) -> pl.LazyFrame:
    """Valid interactions -> distinct positive events (user_id, item_id, ts)."""
    return (
        interactions.filter(engagement_score(cfg) >= cfg.threshold)
        .select("user_id", "item_id", "ts")
        .unique(["user_id", "item_id", "ts"])
    )


# ------------------------------------------------------------------------------------------------------------
# i2i: session co-visitation
# ------------------------------------------------------------------------------------------------------------


def sessionize(events: pl.LazyFrame, session_gap_s: int) -> pl.LazyFrame:
    """Sorts by (user_id, ts, item_id); adds `ts_us` and `session` (a new one per user and after each gap).

    Session ids are global (unique across users) rather than 0, 1, ... per user as in Spark; they are only ever
    grouped on together with user_id, so the pairs do not depend on the numbering. Shifts run over the whole sorted
    frame (with a same-user check) instead of `over("user_id")`, which is much faster with many users.
    """
    prev_user = pl.col("user_id").shift(1)
    new = (
        prev_user.is_null()
        | (prev_user != pl.col("user_id"))
        | ((pl.col("ts_us") - pl.col("ts_us").shift(1)) > session_gap_s * _US)
    )
    return (
        events.with_columns(pl.col("ts").dt.epoch("us").alias("ts_us"))
        .sort("user_id", "ts_us", "item_id")
        .with_columns(new.cast(pl.Int64).cum_sum().alias("session"))
    )


def mine_covisit(events: pl.LazyFrame, cfg: CovisitConfig) -> pl.LazyFrame:
    """Positive events -> co-visitation pairs (anchor_item_id, item_id, score, support), both directions.

    IUF(u) = 1 / ln(1 + n_u); each event pairs with the next `window` events of its session within max_gap_s,
    weight IUF(u) * exp(-dt / tau) (no decay when tau is None); max per session and unordered pair; score = sum
    over sessions, support = sessions.
    """
    s = sessionize(events, cfg.session_gap_s).with_columns(
        (1.0 / (1.0 + pl.len().over("user_id").cast(pl.Float64)).log()).alias("iuf")
    )
    # One frame per offset d = 1..window, with the d-th next event's columns shifted over the whole sorted frame
    # (a session id never spans two users, so an equal session implies the same user), then concatenated.
    dt_us = pl.col("n_ts_us") - pl.col("ts_us")
    weight = pl.col("iuf")
    if cfg.decay_tau_s is not None:
        weight = weight * (-(dt_us.cast(pl.Float64) / _US) / float(cfg.decay_tau_s)).exp()
    base = s.select("user_id", "session", "item_id", "ts_us", "iuf")
    per_offset = [
        base.with_columns(
            pl.col("item_id").shift(-d).alias("n_item"),
            pl.col("ts_us").shift(-d).alias("n_ts_us"),
            pl.col("session").shift(-d).alias("n_session"),
        )
        .filter(
            (pl.col("n_session") == pl.col("session"))
            & (dt_us <= cfg.max_gap_s * _US)
            & (pl.col("n_item") != pl.col("item_id"))
        )
        .select(
            "user_id",
            "session",
            pl.min_horizontal("item_id", "n_item").alias("a"),
            pl.max_horizontal("item_id", "n_item").alias("b"),
            weight.alias("w"),
        )
        for d in range(1, cfg.window + 1)
    ]
    occ = pl.concat(per_offset)
    per_session = occ.group_by("user_id", "session", "a", "b").agg(pl.col("w").max())
    both = pl.concat(
        [
            per_session.select(pl.col("a").alias("anchor_item_id"), pl.col("b").alias("item_id"), "w"),
            per_session.select(pl.col("b").alias("anchor_item_id"), pl.col("a").alias("item_id"), "w"),
        ]
    )
    return both.group_by("anchor_item_id", "item_id").agg(
        pl.col("w").sum().alias("score"), pl.len().cast(pl.Int64).alias("support")
    )


# ------------------------------------------------------------------------------------------------------------
# i2i: Swing
# ------------------------------------------------------------------------------------------------------------


def sample_hash(user: pl.Expr, item: pl.Expr, seed: int) -> pl.Expr:
    """((u mod M) * 2654435761 + (i mod M) * 40503 + seed mod M) mod M with M = 2**31, in int64.

    Same integer mix as `mining.mining_spark.sample_hash` (`mod` here is the non-negative remainder).
    """

    def pmod(e: pl.Expr) -> pl.Expr:
        return ((e % HASH_MOD) + HASH_MOD) % HASH_MOD

    u = pmod(user.cast(pl.Int64))
    i = pmod(item.cast(pl.Int64))
    return pmod(u * HASH_USER_MUL + i * HASH_ITEM_MUL + (seed % HASH_MOD))


def cap_user_items(events: pl.LazyFrame, cfg: SwingConfig) -> pl.LazyFrame:
    """Positive events -> the capped edge set (user_id, item_id); see `mining.mining_spark.cap_user_items`."""
    edges = events.group_by("user_id", "item_id").agg(pl.col("ts").max().alias("last_ts"))
    return (
        edges.sort(["user_id", "last_ts", "item_id"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("user_id") < cfg.max_items_per_user)
        .with_columns(sample_hash(pl.col("user_id"), pl.col("item_id"), cfg.seed).alias("_h"))
        .sort("item_id", "_h", "user_id")
        .filter(pl.int_range(pl.len()).over("item_id") < cfg.max_users_per_item)
        .select("user_id", "item_id")
    )


def mine_swing(events: pl.LazyFrame, cfg: SwingConfig) -> pl.LazyFrame:
    """Positive events -> Swing pairs (anchor_item_id, item_id, score, support), both directions.

    w_u = 1 / sqrt(|I_u| + 1); score(i, j) = sum over u < v in U_i & U_j of w_u w_v / (alpha + |I_u & I_v|);
    support = |U_i & U_j| (on the capped edge set).
    """
    e = cap_user_items(events, cfg)
    ew = e.with_columns((1.0 / (pl.len().over("user_id").cast(pl.Float64) + 1.0).sqrt()).alias("w"))
    up = (
        ew.join(ew, on="item_id", suffix="_b")
        .filter(pl.col("user_id") < pl.col("user_id_b"))
        .select(
            "item_id",
            pl.col("user_id").alias("u"),
            pl.col("user_id_b").alias("v"),
            (pl.col("w") * pl.col("w_b")).alias("ww"),
        )
    )
    per_uv = (
        up.group_by("u", "v")
        .agg(pl.col("item_id").alias("items"), pl.col("ww").first())
        .with_columns(pl.col("items").list.len().alias("c"))
        .filter(pl.col("c") >= 2)
    )
    pairs = (
        per_uv.select(pl.col("items").alias("i"), "items", "ww", "c")
        .explode("i")
        .explode("items")
        .filter(pl.col("i") < pl.col("items"))
        .select(
            "i",
            pl.col("items").alias("j"),
            (pl.col("ww") / (float(cfg.alpha) + pl.col("c").cast(pl.Float64))).alias("contrib"),
        )
        .group_by("i", "j")
        .agg(pl.col("contrib").sum().alias("score"), pl.len().alias("n"))
        .with_columns(
            ((1.0 + (1.0 + 8.0 * pl.col("n").cast(pl.Float64)).sqrt()) / 2.0).round(0).cast(pl.Int64).alias("support")
        )
    )
    return pl.concat(
        [
            pairs.select(pl.col("i").alias("anchor_item_id"), pl.col("j").alias("item_id"), "score", "support"),
            pairs.select(pl.col("j").alias("anchor_item_id"), pl.col("i").alias("item_id"), "score", "support"),
        ]
    )


# ------------------------------------------------------------------------------------------------------------
# i2i: top-K and the contract columns
# ------------------------------------------------------------------------------------------------------------


def top_k_pairs(pairs: pl.LazyFrame, top_k: int, miner: str, date_from: date, date_to: date) -> pl.LazyFrame:
    """(anchor_item_id, item_id, score, support) -> I2I_PAIRS columns, top_k per anchor.

    Ranking per anchor: the score rounded to RANK_DECIMALS (the rank key, see RANK_DECIMALS) desc, then item_id asc.
    """
    x = pl.col("score") * RANK_SCALE + 0.5
    return (
        pairs.with_columns((x - x % 1.0).alias("_rs"))
        .sort(["anchor_item_id", "_rs", "item_id"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("anchor_item_id") < top_k)
        .select(
            pl.col("anchor_item_id").cast(pl.Int64),
            pl.col("item_id").cast(pl.Int64),
            pl.col("score").cast(pl.Float64),
            pl.col("support").cast(pl.Int64),
            pl.lit(miner).alias("miner"),
            pl.lit(date_from, dtype=pl.Date).alias("date_from"),
            pl.lit(date_to, dtype=pl.Date).alias("date_to"),
        )
    )


# ------------------------------------------------------------------------------------------------------------
# q2i
# ------------------------------------------------------------------------------------------------------------


def normalize_query(e: pl.Expr) -> pl.Expr:
    """Unicode NFKC, lowercase, runs of punctuation / symbols / spaces / control characters -> one space, trim."""
    return e.str.normalize("NFKC").str.to_lowercase().str.replace_all(QUERY_SEPARATORS, " ").str.strip_chars(" ")


def flag_search_rejects(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `query_norm` and `reject_reason` (see SEARCH_REJECT_REASONS; null when usable)."""
    c = pl.col
    reason = (
        pl.when(c("user_id").is_null() | c("item_id").is_null())
        .then(pl.lit("null_id"))
        .when(c("ts").is_null())
        .then(pl.lit("null_ts"))
        .when(c("query").is_null() | c("clicked").is_null())
        .then(pl.lit("null_value"))
        .when(c("query_norm") == "")
        .then(pl.lit("empty_query"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return lf.with_columns(normalize_query(c("query")).alias("query_norm")).with_columns(reason.alias(REJECT))


def mine_q2i(searches: pl.LazyFrame, cfg: Q2IConfig) -> pl.LazyFrame:
    """Valid searches with `query_norm` -> Q2I_PAIRS columns (clicks >= min_clicks; score = clicks / impressions)."""
    return (
        searches.group_by("query_norm", "item_id")
        .agg(
            pl.col("clicked").cast(pl.Int64).sum().alias("clicks"),
            pl.len().cast(pl.Int64).alias("impressions"),
        )
        .filter(pl.col("clicks") >= cfg.min_clicks)
        .select(
            pl.col("query_norm").alias("query"),
            pl.col("item_id").cast(pl.Int64),
            "clicks",
            "impressions",
            (pl.col("clicks").cast(pl.Float64) / pl.col("impressions").cast(pl.Float64)).alias("score"),
        )
    )


# ------------------------------------------------------------------------------------------------------------
# seq2item
# ------------------------------------------------------------------------------------------------------------


def build_seq2item(events: pl.LazyFrame, cfg: Seq2ItemConfig, split_ts: datetime) -> pl.LazyFrame:
    """Positive events -> SEQ2ITEM columns; see `mining.mining_spark.build_seq2item` for the rules."""
    L = cfg.history_len
    groups = events.group_by("user_id", "ts").agg(pl.col("item_id").sort().alias("items")).sort("user_id", "ts")
    empty = pl.lit([], dtype=pl.List(pl.Int64))
    same_user = [pl.col("user_id").shift(d) == pl.col("user_id") for d in range(L, 0, -1)]
    lags = [
        pl.when(same).then(pl.col("items").shift(d)).otherwise(empty)
        for same, d in zip(same_user, range(L, 0, -1), strict=True)
    ]
    hist = pl.concat_list(lags).list.tail(L)
    split = pl.when(pl.col("target_ts") < pl.lit(split_ts)).then(pl.lit("train")).otherwise(pl.lit("eval"))
    return (
        groups.with_columns(hist.alias("history_item_ids"))
        .filter(pl.col("history_item_ids").list.len() >= cfg.min_history)
        .explode("items")
        .select(
            "user_id",
            "history_item_ids",
            pl.col("items").alias("target_item_id"),
            pl.col("ts").alias("target_ts"),
        )
        .with_columns(split.alias("split"))
        .sort(["user_id", "split", "target_ts", "target_item_id"], descending=[False, False, True, True])
        .filter(pl.int_range(pl.len()).over("user_id", "split") < cfg.max_samples_per_user)
    )
