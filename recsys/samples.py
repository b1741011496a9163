"""Ranking samples (Spark): impressions joined point-in-time with features known at impression time only.

Every transform is a typed `DataFrame -> DataFrame` function (no reads, writes, collects or sessions); `run`
is the thin entry point that reads the tables, computes the split days and writes the outputs.

Point-in-time rules (what "known at impression time" means here)
- counters (item / user impressions and clicks) count days strictly before the impression's UTC day;
- `user_recent_items` are the user's last L clicked items with click time strictly before the feed request's
  time (the first impression of the request), so a slate never sees clicks on its own earlier slots;
- SAIL features: per item, the feature rows become validity intervals [event_timestamp, next event_timestamp);
  the row joined to an impression at ts is the one whose interval holds ts (the latest row with
  event_timestamp <= ts). A row stamped after ts is never joined; an impression with no valid row gets nulls.
  `user_hist_sim` uses, for each recent item, its row valid at the impression's ts too.
The feature table has one row per item and version, so it is collected once and broadcast, and every partition
looks rows up per batch of impressions (`recsys.feature_lookup`): no join and no shuffle, whatever the number of
recent items. `sail_engine="join"` keeps the plain Spark formulation (an interval join per target and per recent
item, then a group-by per impression) as the reference the lookup is tested and benchmarked against. Rows before
`train_start` are dropped before any SAIL feature is attached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from core.contracts import INTERACTIONS, ITEM_FEATURES, ITEMS, RANKING_SAMPLES
from recsys.feature_lookup import SAIL_COLUMNS, FeatureRows
from recsys.features import RANKING_SAMPLES_EXT

SAIL_ENGINES = ("lookup", "join")


@dataclass(frozen=True)
class SamplesConfig:
    data_dir: Path  # data set with interactions/ and items/ (a generated world or an adapter's output)
    out_dir: Path  # writes ranking_samples/ (core contract) and ranking_samples_ext/ here
    item_features_dir: Path | None = None  # ITEM_FEATURES table; None: SAIL columns are null
    model_version: str | None = None  # feature rows of this version only; None: the latest version by `created`
    recent_len: int = 10  # L: recent positive items kept per impression
    valid_days: int = 3  # the last valid_days + test_days days are held out, valid first
    test_days: int = 4  # the last test_days days of the log are the test period
    train_start: dt.date | None = None  # first day of the train split (the embedding cutoff's day: impressions before
    # it only feed counters and recent items, no sample is written for them); None: the log's first day
    embedding_prefix: int | None = None  # the samples carry the first N dims of each SAIL vector, re-normalised (a
    # Matryoshka prefix: the model trains its losses on it); None: the whole vector
    master: str | None = "local[2]"  # Spark master; None: leave it to spark-submit
    shuffle_partitions: int = 8
    sail_engine: str = "lookup"  # "lookup" (broadcast feature rows, no shuffle) or "join" (the plain Spark reference)


@dataclass(frozen=True)
class SamplesResult:
    ext_path: Path
    core_path: Path
    rows: dict[str, int]  # rows per split
    valid_start: dt.date
    test_start: dt.date
    train_start: dt.date | None
    model_version: str | None
    embedding_dim: int


# ------------------------------------------------------------------------------------------------ transforms


def add_calendar(impressions: DataFrame) -> DataFrame:
    """Adds date (UTC day), hour (0..23), ts_us (microseconds since the epoch) and request_ts_us.

    request_ts_us is the first impression time of the row's feed request: the ranker scores a whole slate at
    request time, so history features must not see clicks on the same slate's earlier slots.
    """
    return (
        impressions.withColumn("date", F.to_date("ts"))
        .withColumn("hour", F.hour("ts").cast("int"))
        .withColumn("ts_us", F.unix_micros("ts"))
        .withColumn("request_ts_us", F.min("ts_us").over(Window.partitionBy("request_id")))
    )


def add_item_attributes(impressions: DataFrame, items: DataFrame) -> DataFrame:
    """Adds author_id, category, item_created_ts and item_age_hours (>= 0) from the catalogue (inner join)."""
    cat = items.select("item_id", "author_id", "category", F.col("created_ts").alias("item_created_ts"))
    age_h = (F.unix_micros("ts") - F.unix_micros("item_created_ts")) / F.lit(3.6e9)
    return impressions.join(F.broadcast(cat), "item_id", "inner").withColumn(
        "item_age_hours", F.greatest(age_h, F.lit(0.0)).cast("float")
    )


def _before_day_counts(df: DataFrame, key: str, prefix: str) -> DataFrame:
    """Per (key, date): impressions and clicks of `key` on all earlier days (cumulative sum minus the day)."""
    daily = df.groupBy(key, "date").agg(
        F.count(F.lit(1)).alias("_imps"), F.sum(F.col("clicked").cast("long")).alias("_clicks")
    )
    w = Window.partitionBy(key).orderBy("date").rowsBetween(Window.unboundedPreceding, -1)
    return daily.select(
        key,
        "date",
        F.coalesce(F.sum("_imps").over(w), F.lit(0)).cast("long").alias(f"{prefix}_imps_before"),
        F.coalesce(F.sum("_clicks").over(w), F.lit(0)).cast("long").alias(f"{prefix}_clicks_before"),
    )


def add_prior_counters(impressions: DataFrame) -> DataFrame:
    """Adds item_/user_ imps_before and clicks_before: counts over days strictly before the impression's day."""
    return impressions.join(_before_day_counts(impressions, "item_id", "item"), ["item_id", "date"], "left").join(
        _before_day_counts(impressions, "user_id", "user"), ["user_id", "date"], "left"
    )


def add_recent_positives(impressions: DataFrame, recent_len: int) -> DataFrame:
    """Adds user_recent_items: the user's last `recent_len` clicked items clicked strictly before the request.

    Each click carries the list of the last L clicks up to itself (a bounded rows window over clicks). Clicks
    (keyed by their ts) and impressions (keyed by their request's ts) then go into one stream per user, and every
    impression takes the list of the latest click with a smaller key (a range window ending at key - 1 us).
    Both windows are O(L) per row, never O(history), and no join is needed.
    """
    if recent_len < 1:
        raise ValueError(f"recent_len must be >= 1, got {recent_len}")
    by_user = Window.partitionBy("user_id")
    clicks = impressions.filter(F.col("clicked")).select(
        "user_id",
        F.col("ts_us").alias("_key"),
        F.collect_list("item_id")
        .over(by_user.orderBy("ts_us", "event_id").rowsBetween(-(recent_len - 1), 0))
        .alias("_through_me"),
        F.lit(False).alias("_is_row"),
    )
    rows = impressions.withColumn("_key", F.col("request_ts_us")).withColumn("_is_row", F.lit(True))
    before = by_user.orderBy("_key").rangeBetween(Window.unboundedPreceding, -1)
    return (
        rows.unionByName(clicks, allowMissingColumns=True)
        .withColumn("user_recent_items", F.last("_through_me", ignorenulls=True).over(before))
        .filter(F.col("_is_row"))
        .withColumn("user_recent_items", F.coalesce("user_recent_items", F.array().cast("array<bigint>")))
        .drop("_through_me", "_key", "_is_row")
    )


def select_feature_version(features: DataFrame, model_version: str | None) -> DataFrame:
    """Feature rows of one model version (None: every row; the caller picks a version, mixing spaces is wrong)."""
    return features if model_version is None else features.filter(F.col("model_version") == model_version)


def feature_validity_intervals(features: DataFrame) -> DataFrame:
    """Per item, each feature row with valid_from = event_timestamp and valid_to = the next row's (null: open).

    Rows of one item with the same event_timestamp keep the one written last (`created`, then model_version).
    """
    latest_first = Window.partitionBy("item_id", "event_timestamp").orderBy(
        F.col("created").desc(), F.col("model_version").desc()
    )
    dedup = features.withColumn("_rn", F.row_number().over(latest_first)).filter(F.col("_rn") == 1)
    nxt = Window.partitionBy("item_id").orderBy("event_timestamp")
    return dedup.select(
        "item_id",
        "embedding",
        "semantic_ids",
        "model_version",
        F.col("event_timestamp").alias("valid_from"),
        F.lead("event_timestamp").over(nxt).alias("valid_to"),
    )


def _valid_at(intervals: DataFrame, item_col: SparkColumn, ts_col: SparkColumn) -> SparkColumn:
    return (
        (intervals["item_id"] == item_col)
        & (intervals["valid_from"] <= ts_col)
        & (intervals["valid_to"].isNull() | (ts_col < intervals["valid_to"]))
    )


def join_item_features_pit(impressions: DataFrame, intervals: DataFrame) -> DataFrame:
    """Adds sail_embedding, semantic_ids, sail_model_version: the target item's row valid at ts (else nulls)."""
    f = intervals.alias("f")
    i = impressions.alias("i")
    joined = i.join(F.broadcast(f), _valid_at(f, F.col("i.item_id"), F.col("i.ts")), "left")
    return joined.select(
        "i.*",
        F.col("f.embedding").alias("sail_embedding"),
        F.col("f.semantic_ids").alias("semantic_ids"),
        F.col("f.model_version").alias("sail_model_version"),
    )


def _array_sum(a: SparkColumn) -> SparkColumn:
    """The sum of a numeric array column's elements, as a double."""
    return F.aggregate(a, F.lit(0.0).cast("double"), lambda acc, x: acc + x)


def _l2_norm(a: SparkColumn) -> SparkColumn:
    return F.sqrt(_array_sum(F.transform(a, lambda x: x * x)))


def matryoshka_prefix(col: str, n: int) -> SparkColumn:
    """The first `n` elements of an array<float> column, scaled to unit length (null stays null; a zero prefix stays
    zero)."""
    head = F.slice(F.col(col), 1, n)
    norm = _l2_norm(head)
    return F.when(norm > 0, F.transform(head, lambda x: (x / norm).cast("float"))).otherwise(head)


def add_history_similarity(impressions: DataFrame, intervals: DataFrame, dim: int) -> DataFrame:
    """Adds user_hist_sim = cosine(sail_embedding, mean of the recent items' vectors valid at ts).

    The mean's direction is the sum's, so the sum is enough: the recent items are exploded, joined point-in-time
    (broadcast), and their vectors summed per impression element-wise with array functions (one flat expression
    whatever `dim` is; a sum of `dim` columns nests `dim` deep and overflows the JVM's stack at MiniLM's 384).
    Null when the target or every recent item lacks a vector.
    """
    hist = impressions.select("event_id", "ts", F.explode("user_recent_items").alias("_h")).alias("h")
    f = intervals.alias("f")
    matched = hist.join(F.broadcast(f), _valid_at(f, F.col("h._h"), F.col("h.ts")), "inner").select(
        "h.event_id", F.col("f.embedding").cast("array<double>").alias("_e")
    )
    zero = F.array_repeat(F.lit(0.0).cast("double"), dim)
    sums = matched.groupBy("event_id").agg(
        F.aggregate(F.collect_list("_e"), zero, lambda acc, x: F.zip_with(acc, x, lambda a, b: a + b)).alias("_s")
    )
    t, h = F.col("sail_embedding").cast("array<double>"), F.col("_s")
    dot = _array_sum(F.zip_with(t, h, lambda a, b: a * b))
    hist_norm, t_norm = _l2_norm(h), _l2_norm(t)
    sim = F.when(t.isNotNull() & (hist_norm > 0) & (t_norm > 0), dot / (hist_norm * t_norm))
    return impressions.join(sums, "event_id", "left").withColumn("user_hist_sim", sim.cast("float")).drop("_s")


def attach_sail_features(impressions: DataFrame, rows: FeatureRows) -> DataFrame:
    """Adds sail_embedding, semantic_ids, sail_model_version and user_hist_sim (as `join_item_features_pit` and
    `add_history_similarity` define them) in one pass over each partition: `rows` is broadcast and looked up per
    Arrow batch. The rows keep their partitioning and order."""
    import pyarrow as pa

    bc = impressions.sparkSession.sparkContext.broadcast(rows)
    ext = {f.name: f for f in RANKING_SAMPLES_EXT.to_spark().fields}
    schema = StructType([*impressions.schema.fields, *(ext[c] for c in SAIL_COLUMNS)])
    names = [*impressions.columns, *SAIL_COLUMNS]

    def with_sail(batches):
        lookup = bc.value
        for b in batches:
            extra = lookup.sail_columns(b.column("item_id"), b.column("ts"), b.column("user_recent_items"))
            yield pa.RecordBatch.from_arrays([*b.columns, *extra], names=names)

    return impressions.mapInArrow(with_sail, schema)


def add_null_sail_columns(impressions: DataFrame) -> DataFrame:
    """The SAIL columns as typed nulls (no feature table given)."""
    return (
        impressions.withColumn("sail_embedding", F.lit(None).cast("array<float>"))
        .withColumn("semantic_ids", F.lit(None).cast("array<int>"))
        .withColumn("sail_model_version", F.lit(None).cast("string"))
        .withColumn("user_hist_sim", F.lit(None).cast("float"))
    )


def add_labels_and_split(
    impressions: DataFrame, valid_start: dt.date, test_start: dt.date, train_start: dt.date | None = None
) -> DataFrame:
    """Adds label_click, label_finish (0/1) and split by day: train_start <= train < valid_start <= valid <
    test_start <= test; rows before train_start (when given) are dropped."""
    if not valid_start <= test_start:
        raise ValueError(f"valid_start {valid_start} must not be after test_start {test_start}")
    if train_start is not None:
        if not train_start < valid_start:
            raise ValueError(f"train_start {train_start} must be before valid_start {valid_start}")
        impressions = impressions.filter(F.col("date") >= F.lit(train_start))
    split = (
        F.when(F.col("date") >= F.lit(test_start), "test")
        .when(F.col("date") >= F.lit(valid_start), "valid")
        .otherwise("train")
    )
    return (
        impressions.withColumn("label_click", F.col("clicked").cast("int"))
        .withColumn("label_finish", F.col("finished").cast("int"))
        .withColumn("split", split)
    )


def build_ranking_samples(
    interactions: DataFrame,
    items: DataFrame,
    item_features: DataFrame | None,
    *,
    valid_start: dt.date,
    test_start: dt.date,
    recent_len: int = 10,
    model_version: str | None = None,
    embedding_dim: int = 0,
    train_start: dt.date | None = None,
    sail_engine: str = "lookup",
) -> DataFrame:
    """Interactions + items (+ ITEM_FEATURES) -> RANKING_SAMPLES_EXT rows (exactly its columns).

    sail_engine: "lookup" (the feature rows broadcast and looked up per batch; collects the feature intervals) or
    "join" (the plain Spark reference; `embedding_dim` <= 0 leaves user_hist_sim null there).
    """
    if sail_engine not in SAIL_ENGINES:
        raise ValueError(f"sail_engine must be one of {SAIL_ENGINES}, got {sail_engine!r}")
    df = (
        interactions.transform(add_calendar)
        .transform(add_item_attributes, items)
        .transform(add_prior_counters)
        .transform(add_recent_positives, recent_len)
        .transform(add_labels_and_split, valid_start, test_start, train_start)
    )
    if item_features is None:
        df = df.transform(add_null_sail_columns)
    else:
        intervals = feature_validity_intervals(select_feature_version(item_features, model_version))
        if sail_engine == "lookup":
            df = df.transform(attach_sail_features, FeatureRows.from_arrow(intervals.toArrow()))
        else:
            df = df.transform(join_item_features_pit, intervals)
            df = df.transform(add_history_similarity, intervals, embedding_dim) if embedding_dim > 0 else df
            if embedding_dim <= 0:
                df = df.withColumn("user_hist_sim", F.lit(None).cast("float"))
    return df.select(*RANKING_SAMPLES_EXT.names)


# ---------------------------------------------------------------------------------------------- entry point


def split_days(first: dt.date, last: dt.date, valid_days: int, test_days: int) -> tuple[dt.date, dt.date]:
    """(valid_start, test_start) holding out the last valid_days + test_days days of [first, last]."""
    n_days = (last - first).days + 1
    if valid_days < 0 or test_days < 1 or valid_days + test_days >= n_days:
        raise ValueError(f"cannot hold out {valid_days} + {test_days} days of a {n_days}-day log")
    test_start = last - dt.timedelta(days=test_days - 1)
    return test_start - dt.timedelta(days=valid_days), test_start


def run(cfg: SamplesConfig, spark: SparkSession | None = None) -> SamplesResult:
    """Reads the logs (and the feature table), builds the samples and writes both outputs atomically."""
    from core.spark_io import read_contract_table, write_contract_table

    if spark is None:
        from core.spark_session import build_spark

        spark = build_spark("sail-ranking-samples", master=cfg.master, shuffle_partitions=cfg.shuffle_partitions)
    interactions = read_contract_table(spark, cfg.data_dir / "interactions", INTERACTIONS)
    items = read_contract_table(spark, cfg.data_dir / "items", ITEMS)
    bounds = interactions.select(F.min(F.to_date("ts")).alias("a"), F.max(F.to_date("ts")).alias("b")).first()
    valid_start, test_start = split_days(bounds["a"], bounds["b"], cfg.valid_days, cfg.test_days)
    features, version, dim = None, None, 0
    if cfg.item_features_dir is not None:
        features = read_contract_table(spark, cfg.item_features_dir, ITEM_FEATURES)
        version = cfg.model_version
        if version is None:
            latest = features.orderBy(F.col("created").desc(), F.col("model_version").desc()).first()
            version = latest["model_version"] if latest else None
        row = features.filter(F.col("model_version") == version).select(F.size("embedding").alias("d")).first()
        dim = int(row["d"]) if row else 0
        if cfg.embedding_prefix is not None and 0 < cfg.embedding_prefix < dim:
            dim = cfg.embedding_prefix
            features = features.withColumn("embedding", matryoshka_prefix("embedding", dim))
    samples = build_ranking_samples(
        interactions,
        items,
        features,
        valid_start=valid_start,
        test_start=test_start,
        recent_len=cfg.recent_len,
        model_version=version,
        embedding_dim=dim,
        train_start=cfg.train_start,
        sail_engine=cfg.sail_engine,
    )
    ext_path = cfg.out_dir / "ranking_samples_ext"
    core_path = cfg.out_dir / "ranking_samples"
    write_contract_table(samples, RANKING_SAMPLES_EXT, str(ext_path), sort_within=("user_id", "ts"))
    ext = read_contract_table(spark, ext_path, RANKING_SAMPLES_EXT)
    write_contract_table(ext, RANKING_SAMPLES, str(core_path))
    rows = {r["split"]: int(r["count"]) for r in ext.groupBy("split").count().collect()}
    return SamplesResult(ext_path, core_path, rows, valid_start, test_start, cfg.train_start, version, dim)
