"""Pair mining as Spark transforms: i2i co-visitation and Swing, q2i and seq2item.

Every function here is a typed `DataFrame -> DataFrame` transform (or a `Column` builder): none reads, writes,
collects or creates a session, so they chain with `df.transform(fn, ...)` and run unchanged on a cluster.
`mining.mining_polars` implements the same transforms on polars LazyFrames; `tests/test_mining_parity.py` checks
that both give the same pairs and scores.

Pipeline (see `mining.mine_pairs.run`):

    interactions -> flag_interaction_rejects -> drop_rejected -> select_positive_events   (user_id, item_id, ts)
        positives -> mine_covisit -> top_k_pairs            (i2i, miner 'covisit')
        positives -> cap_user_items -> swing_pairs -> top_k_pairs          (i2i, miner 'swing';
                     the runner caches the capped edges)
        positives -> build_seq2item                         (seq2item)
    searches -> flag_search_rejects -> drop_rejected -> mine_q2i     (q2i)

Scale: no quadratic self-join over raw events. Co-visitation pairs each positive with its next `window`
positives through `lead` (O(window * events)); Swing works only within the capped (user, item) edge set: one
array of at most max_items_per_user * max_users_per_item co-user ids per user, then item pairs only
from the user pairs sharing two or more items (at most max_items_per_user**2 per such pair).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

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
"""Column added by the flag_* transforms: the first rejection reason of a row, null for a valid row."""

_US = 1_000_000  # microseconds per second

# ------------------------------------------------------------------------------------------------------------
# Input checks and positives
# ------------------------------------------------------------------------------------------------------------


def flag_interaction_rejects(df: DataFrame) -> DataFrame:
    """Adds `reject_reason` (see INTERACTION_REJECT_REASONS; null when the row is usable)."""
    reason = (
        F.when(F.col("user_id").isNull() | F.col("item_id").isNull(), "null_id")
        .when(F.col("ts").isNull(), "null_ts")
        .when(
            F.col("clicked").isNull()
            | F.col("finished").isNull()
            | F.col("liked").isNull()
            | F.col("shared").isNull()
            | F.col("watch_ms").isNull(),
            "null_value",
        )
        .when(F.col("watch_ms") < 0, "negative_watch_ms")
    )
    return df.withColumn(REJECT, reason)


def input_metrics(reasons: Iterable[str]) -> list[Column]:
    """Aggregates over rows flagged by a flag_* transform, for `DataFrame.observe`: `rows`, one count per
    rejection reason (named after it), and `ts_min` / `ts_max` of the usable rows (null when there are none).

    Observed on the way into a job's first pass, they cost no scan of their own."""
    usable = F.col(REJECT).isNull()
    return [
        F.count(F.lit(1)).alias("rows"),
        *[F.count_if(F.col(REJECT) == F.lit(r)).alias(r) for r in reasons],
        F.min(F.when(usable, F.col("ts"))).alias("ts_min"),
        F.max(F.when(usable, F.col("ts"))).alias("ts_max"),
    ]


def drop_rejected(df: DataFrame) -> DataFrame:
    """Keeps the rows whose `reject_reason` is null and drops that column."""
    return df.filter(F.col(REJECT).isNull()).drop(REJECT)


def within_period(df: DataFrame, ts_from: datetime | None, ts_until: datetime | None) -> DataFrame:
    """Keeps the rows with ts_from <= ts < ts_until (a None bound is open)."""
    if ts_from is not None:
        df = df.filter(F.col("ts") >= F.lit(ts_from))
    if ts_until is not None:
        df = df.filter(F.col("ts") < F.lit(ts_until))
    return df


def engagement_score(cfg: PositiveConfig) -> Column:
    """The weighted engagement score of an impression (see PositiveConfig)."""

    def on(c: Column, w: float) -> Column:
        return F.when(c, F.lit(float(w))).otherwise(F.lit(0.0))

    return (
        on(F.col("clicked"), cfg.click_weight)
        + on(F.col("finished"), cfg.finish_weight)
        + on(F.col("liked"), cfg.like_weight)
        + on(F.col("shared"), cfg.share_weight)
        + on(F.col("watch_ms") >= cfg.min_watch_ms, cfg.watch_weight)
    )


def select_positive_events(interactions: DataFrame, cfg: PositiveConfig) -> DataFrame:
    """Valid interactions -> distinct positive events (user_id, item_id, ts), hash-partitioned by user_id.

    Every consumer works per user (sessions, Swing's per-user cap, histories): partitioned so, and cached by the
    runner, the positives need no further shuffle before those steps.
    """
    return (
        interactions.filter(engagement_score(cfg) >= cfg.threshold)
        .select("user_id", "item_id", "ts")
        .repartition("user_id")
        .dropDuplicates(["user_id", "item_id", "ts"])
    )


# ------------------------------------------------------------------------------------------------------------
# i2i: session co-visitation
# ------------------------------------------------------------------------------------------------------------


def sessionize(events: DataFrame, session_gap_s: int) -> DataFrame:
    """Adds `ts_us` (epoch microseconds) and `session` (0, 1, ... per user; a new one after a gap > session_gap_s).

    Events are ordered per user by (ts, item_id).
    """
    w = Window.partitionBy("user_id").orderBy("ts_us", "item_id")
    prev = F.lag("ts_us").over(w)
    new = F.when(prev.isNull() | ((F.col("ts_us") - prev) > session_gap_s * _US), 1).otherwise(0)
    return (
        events.withColumn("ts_us", F.unix_micros("ts"))
        .withColumn("_new", new)
        .withColumn("session", F.sum("_new").over(w.rowsBetween(Window.unboundedPreceding, 0)) - 1)
        .drop("_new")
    )


def mine_covisit(events: DataFrame, cfg: CovisitConfig) -> DataFrame:
    """Positive events -> co-visitation pairs (anchor_item_id, item_id, score, support), both directions.

    For each user u with n_u positive events, IUF(u) = 1 / ln(1 + n_u). Each event e at (item i, time t) of a
    session is paired with each of the next `window` events e' (item j != i, time t') of the same session with
    dt = t' - t <= max_gap_s; the occurrence weighs IUF(u) * exp(-dt / decay_tau_s) (the decay factor is 1 when
    decay_tau_s is None). Within one session an unordered pair {i, j} counts once, with its largest weight w_s.
    Then score(i, j) = score(j, i) = sum over sessions s of w_s, support = number of sessions.
    """
    s = sessionize(events, cfg.session_gap_s).withColumn(
        "iuf", 1.0 / F.log(1.0 + F.count(F.lit(1)).over(Window.partitionBy("user_id")))
    )
    w = Window.partitionBy("user_id").orderBy("ts_us", "item_id")
    nxt = F.array(
        *[
            F.struct(
                F.lead("item_id", d).over(w).alias("item"),
                F.lead("ts_us", d).over(w).alias("ts_us"),
                F.lead("session", d).over(w).alias("session"),
            )
            for d in range(1, cfg.window + 1)
        ]
    )
    dt_s = (F.col("n.ts_us") - F.col("ts_us")) / float(_US)
    weight = F.col("iuf") if cfg.decay_tau_s is None else F.col("iuf") * F.exp(-dt_s / float(cfg.decay_tau_s))
    occ = (
        s.withColumn("nxt", nxt)  # window functions cannot sit inside explode: materialise the array first
        .select("user_id", "session", "item_id", "ts_us", "iuf", F.explode("nxt").alias("n"))
        .filter(
            F.col("n.item").isNotNull()
            & (F.col("n.session") == F.col("session"))
            & ((F.col("n.ts_us") - F.col("ts_us")) <= cfg.max_gap_s * _US)
            & (F.col("n.item") != F.col("item_id"))
        )
        .select(
            "user_id",
            "session",
            F.least("item_id", "n.item").alias("a"),
            F.greatest("item_id", "n.item").alias("b"),
            weight.alias("w"),
        )
    )
    per_session = occ.groupBy("user_id", "session", "a", "b").agg(F.max("w").alias("w"))
    both = per_session.select(
        F.explode(
            F.array(
                F.struct(F.col("a").alias("anchor_item_id"), F.col("b").alias("item_id"), F.col("w").alias("w")),
                F.struct(F.col("b").alias("anchor_item_id"), F.col("a").alias("item_id"), F.col("w").alias("w")),
            )
        ).alias("p")
    ).select("p.*")
    # Shuffled by anchor alone (not by the grouping key): the pairs come out partitioned as top_k_pairs' window
    # needs them, which saves that window a second shuffle of every pair.
    return (
        both.repartition("anchor_item_id")
        .groupBy("anchor_item_id", "item_id")
        .agg(F.sum("w").alias("score"), F.count(F.lit(1)).cast("long").alias("support"))
    )


# ------------------------------------------------------------------------------------------------------------
# i2i: Swing
# ------------------------------------------------------------------------------------------------------------


def sample_hash(user: Column, item: Column, seed: int) -> Column:
    """((u mod M) * 2654435761 + (i mod M) * 40503 + seed mod M) mod M with M = 2**31, in int64 (never overflows).

    The same integer mix as `mining.mining_polars.sample_hash`, so user sampling is identical in both engines.
    """
    u = F.pmod(user.cast("long"), F.lit(HASH_MOD))
    i = F.pmod(item.cast("long"), F.lit(HASH_MOD))
    return F.pmod(u * F.lit(HASH_USER_MUL) + i * F.lit(HASH_ITEM_MUL) + F.lit(seed % HASH_MOD), F.lit(HASH_MOD))


def cap_user_items(events: DataFrame, cfg: SwingConfig) -> DataFrame:
    """Positive events -> the capped edge set (user_id, item_id).

    1. distinct (user, item) with the item's latest positive time for that user;
    2. per user keep the `max_items_per_user` most recent items (latest ts desc, then item_id asc);
    3. per item keep the `max_users_per_item` users with the smallest sample_hash(user, item, seed)
       (then user_id asc): a deterministic pseudo-random sample.
    """
    edges = events.groupBy("user_id", "item_id").agg(F.max("ts").alias("last_ts"))
    by_user = Window.partitionBy("user_id").orderBy(F.col("last_ts").desc(), F.col("item_id").asc())
    by_item = Window.partitionBy("item_id").orderBy(F.col("_h").asc(), F.col("user_id").asc())
    return (
        edges.withColumn("_r", F.row_number().over(by_user))
        .filter(F.col("_r") <= cfg.max_items_per_user)
        .withColumn("_h", sample_hash(F.col("user_id"), F.col("item_id"), cfg.seed))
        .withColumn("_r", F.row_number().over(by_item))
        .filter(F.col("_r") <= cfg.max_users_per_item)
        .select("user_id", "item_id")
    )


def mine_swing(events: DataFrame, cfg: SwingConfig) -> DataFrame:
    """Positive events -> Swing pairs (anchor_item_id, item_id, score, support), both directions.

    `swing_pairs` on `cap_user_items`. The edge set feeds two branches of the plan (the shared items and the
    users' weights), which recompute it (two window sorts) unless it is cached: a caller that can cache (see
    `mining.mine_pairs`) caps, caches, and calls `swing_pairs` itself.
    """
    return swing_pairs(cap_user_items(events, cfg), cfg)


def swing_shared_items(edges: DataFrame) -> DataFrame:
    """Capped edges (user_id, item_id) -> (u, v, items, n_u): every two users u < v sharing two or more capped items,
    with those items (c = |I_u & I_v| = size(items)) and u's capped item count n_u = |I_u|.

    Per user, not per user pair: each edge (u, i) carries the users of item i above u (the item's user list, at
    most max_users_per_item); u's lists are flattened into one sorted array of user ids, where a repeated id v is
    a user sharing two or more items with u, and only for those v are the items gathered (the items whose list
    holds v). Most user pairs share a single item: this never materialises them as rows (a count over every user
    pair is a hash aggregate over tens of millions of mostly distinct keys), and an array holds at most
    max_items_per_user * max_users_per_item ids. A user with a single capped item repeats no v and is never a
    repeated v, so it gives no row.
    """
    item_users = F.collect_list("user_id").over(Window.partitionBy("item_id"))
    above = F.filter(item_users, lambda v: v > F.col("user_id"))
    per_user = (
        edges.select("user_id", "item_id", above.alias("above"))
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).alias("n_u"),
            F.sort_array(F.flatten(F.collect_list("above"))).alias("vs"),  # a primitive sort, no struct compares
            F.collect_list(F.struct("item_id", "above")).alias("lists"),
        )
    )
    repeated = F.array_distinct(F.filter("vs", lambda v, k: F.coalesce(F.get(F.col("vs"), k - 1) == v, F.lit(False))))
    shared = F.filter("lists", lambda x: F.array_contains(x["above"], F.col("v")))
    return per_user.select(F.col("user_id").alias("u"), "n_u", "lists", F.explode(repeated).alias("v")).select(
        "u", "v", F.transform(shared, lambda x: x["item_id"]).alias("items"), "n_u"
    )


def swing_pairs(edges: DataFrame, cfg: SwingConfig) -> DataFrame:
    """Capped edges (user_id, item_id) -> Swing pairs (anchor_item_id, item_id, score, support), both directions.

    On the capped edge set E (see `cap_user_items`), with U_i = users of item i and I_u = items of user u in E:

        w_u = 1 / sqrt(|I_u| + 1)
        score(i, j) = sum over user pairs u < v in U_i & U_j of  w_u * w_v / (alpha + |I_u & I_v|)
        support(i, j) = |U_i & U_j|

    Computed as: the user pairs sharing c = |I_u & I_v| >= 2 items with those items (`swing_shared_items`; only
    they give item pairs), joined with w_v; each item list -> item pairs (i < j) by exploding it twice. An item
    pair reached through n user pairs has m = |U_i & U_j| users with n = m (m - 1) / 2, so
    support = (1 + sqrt(1 + 8 n)) / 2.
    """
    w_v = edges.groupBy("user_id").agg((1.0 / F.sqrt(F.count(F.lit(1)) + 1.0)).alias("w_v"))
    per_uv = (
        swing_shared_items(edges)
        .join(w_v.withColumnRenamed("user_id", "v"), "v")
        .select("items", (F.col("w_v") / F.sqrt(F.col("n_u") + 1.0)).alias("ww"), F.size("items").alias("c"))
    )
    pairs = (
        per_uv.select("items", "ww", "c", F.explode("items").alias("i"))
        .select("i", "ww", "c", F.explode("items").alias("j"))
        .filter(F.col("i") < F.col("j"))
        .select("i", "j", (F.col("ww") / (F.lit(float(cfg.alpha)) + F.col("c"))).alias("contrib"))
        .groupBy("i", "j")
        .agg(F.sum("contrib").alias("score"), F.count(F.lit(1)).alias("n"))
        .withColumn("support", F.round((1.0 + F.sqrt(1.0 + 8.0 * F.col("n"))) / 2.0).cast("long"))
    )
    both = pairs.select(
        F.explode(
            F.array(
                F.struct(F.col("i").alias("anchor_item_id"), F.col("j").alias("item_id"), "score", "support"),
                F.struct(F.col("j").alias("anchor_item_id"), F.col("i").alias("item_id"), "score", "support"),
            )
        ).alias("p")
    )
    return both.select("p.*")


# ------------------------------------------------------------------------------------------------------------
# i2i: top-K and the contract columns
# ------------------------------------------------------------------------------------------------------------


def top_k_pairs(pairs: DataFrame, top_k: int, miner: str, date_from: date, date_to: date) -> DataFrame:
    """(anchor_item_id, item_id, score, support) -> the I2I_PAIRS columns, top_k per anchor.

    Ranking per anchor: the score rounded to RANK_DECIMALS (the rank key, see RANK_DECIMALS) desc, then item_id asc.
    """
    x = F.col("score") * F.lit(RANK_SCALE) + F.lit(0.5)
    w = Window.partitionBy("anchor_item_id").orderBy((x - x % F.lit(1.0)).desc(), F.col("item_id").asc())
    return (
        pairs.withColumn("_r", F.row_number().over(w))
        .filter(F.col("_r") <= top_k)
        .select(
            F.col("anchor_item_id").cast("long"),
            F.col("item_id").cast("long"),
            F.col("score").cast("double"),
            F.col("support").cast("long"),
            F.lit(miner).alias("miner"),
            F.lit(date_from).cast("date").alias("date_from"),
            F.lit(date_to).cast("date").alias("date_to"),
        )
    )


# ------------------------------------------------------------------------------------------------------------
# q2i
# ------------------------------------------------------------------------------------------------------------


def normalize_query(col: Column) -> Column:
    """Unicode NFKC, lowercase, runs of punctuation / symbols / spaces / control characters -> one space, trim.

    NFKC comes from ICU4J (bundled with Spark 4) through `reflect`, since Spark SQL has no normalize function;
    `mining.mining_polars.normalize_query` does the same with polars' `str.normalize("NFKC")`.
    """
    return F.trim(F.regexp_replace(F.lower(_nfkc(col)), QUERY_SEPARATORS, " "))


def _nfkc(col: Column) -> Column:
    # ICU's Normalizer.compose(str, compat=true) is NFKC; it fails on null, hence the guard.
    return F.when(
        col.isNotNull(),
        F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), col, F.lit(True)),
    )


def flag_search_rejects(df: DataFrame) -> DataFrame:
    """Adds `query_norm` (normalised query) and `reject_reason` (see SEARCH_REJECT_REASONS; null when usable)."""
    df = df.withColumn("query_norm", normalize_query(F.col("query")))
    reason = (
        F.when(F.col("user_id").isNull() | F.col("item_id").isNull(), "null_id")
        .when(F.col("ts").isNull(), "null_ts")
        .when(F.col("query").isNull() | F.col("clicked").isNull(), "null_value")
        .when(F.col("query_norm") == "", "empty_query")
    )
    return df.withColumn(REJECT, reason)


def mine_q2i(searches: DataFrame, cfg: Q2IConfig) -> DataFrame:
    """Valid searches with `query_norm` -> Q2I_PAIRS columns.

    Per (normalised query, item): impressions = result rows, clicks = clicked rows; kept when clicks >=
    min_clicks; score = clicks / impressions.
    """
    return (
        searches.groupBy("query_norm", "item_id")
        .agg(
            F.sum(F.col("clicked").cast("long")).alias("clicks"),
            F.count(F.lit(1)).cast("long").alias("impressions"),
        )
        .filter(F.col("clicks") >= cfg.min_clicks)
        .select(
            F.col("query_norm").alias("query"),
            F.col("item_id").cast("long"),
            "clicks",
            "impressions",
            (F.col("clicks") / F.col("impressions")).cast("double").alias("score"),
        )
    )


# ------------------------------------------------------------------------------------------------------------
# seq2item
# ------------------------------------------------------------------------------------------------------------


def build_seq2item(events: DataFrame, cfg: Seq2ItemConfig, split_ts: datetime) -> DataFrame:
    """Positive events -> SEQ2ITEM columns.

    A user's positives are grouped by timestamp (items of one timestamp sorted by item_id). For each positive
    (target), the history is the last `history_len` positive items with ts strictly before the target's ts,
    oldest first. Targets with fewer than `min_history` history items are dropped. split = 'train' when the
    target's ts < split_ts, else 'eval'; so a train sample's history and target all precede split_ts, and an
    eval sample's history may hold anything before its target. At most `max_samples_per_user` targets per user
    and split are kept: the most recent (target_ts desc, then target_item_id desc).
    """
    L = cfg.history_len
    groups = events.groupBy("user_id", "ts").agg(F.sort_array(F.collect_list("item_id")).alias("items"))
    w = Window.partitionBy("user_id").orderBy("ts")
    empty = F.array().cast("array<bigint>")
    # the previous L timestamp groups hold at least L items (when there are that many), oldest first
    hist = F.flatten(F.array(*[F.coalesce(F.lag("items", d).over(w), empty) for d in range(L, 0, -1)]))
    n = F.size("hist")
    cap = Window.partitionBy("user_id", "split").orderBy(F.col("target_ts").desc(), F.col("target_item_id").desc())
    return (
        groups.withColumn("hist", hist)
        .withColumn("hist", F.when(n > L, F.slice("hist", n - L + 1, F.lit(L))).otherwise(F.col("hist")))
        .filter(F.size("hist") >= cfg.min_history)
        .select(
            "user_id",
            F.col("hist").alias("history_item_ids"),
            F.explode("items").alias("target_item_id"),
            F.col("ts").alias("target_ts"),
            F.when(F.col("ts") < F.lit(split_ts), "train").otherwise("eval").alias("split"),
        )
        .withColumn("_r", F.row_number().over(cap))
        .filter(F.col("_r") <= cfg.max_samples_per_user)
        .drop("_r")
    )
