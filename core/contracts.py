"""Data contracts: the schema of every table the pipeline reads or writes.

Every stage imports its schemas from here. A `TableSchema` converts itself to a pyarrow schema (parquet files),
a polars schema (single-machine engine), a Spark `StructType` (Spark jobs) and pandas dtypes, so the three
engines agree on names, types and nullability.

Conventions:
- ids are int64; event ids are strings (unique per table);
- timestamps are UTC, microsecond precision (`timestamp`); calendar days are `date`;
- durations are integer milliseconds (`*_ms`), never negative;
- list columns hold homogeneous values (`list<int64>`, `list<float32>`, `list<string>`).

Tables written by the world generator or an adapter (the logs a platform would have):
ITEMS, INTERACTIONS, FEED_REQUESTS, SEARCHES, USER_ACTIVITY.
Tables the pipeline derives: I2I_PAIRS, Q2I_PAIRS, SEQ2ITEM, ITEM_EMBEDDINGS, ITEM_FEATURES, RANKING_SAMPLES and
RANKING_SAMPLES_EXT (with counters and SAIL features), plus QUARANTINE for rejected rows.
Ground truth of the generated world (never read by the pipeline, only by simulation and evaluation):
ITEM_TRUTH, USER_TRUTH.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover - typing only
    import polars as pl
    from pyspark.sql.types import StructType

SCALAR_DTYPES = ("int32", "int64", "float32", "float64", "bool", "string", "timestamp", "date")
"""Scalar types a column may have; `list<T>` wraps any of them."""


def _is_list(dtype: str) -> bool:
    return dtype.startswith("list<") and dtype.endswith(">")


def _inner(dtype: str) -> str:
    return dtype[len("list<") : -1]


def _check_dtype(dtype: str) -> None:
    base = _inner(dtype) if _is_list(dtype) else dtype
    if base not in SCALAR_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {SCALAR_DTYPES} or list<...> of them")


def arrow_type(dtype: str) -> pa.DataType:
    """The pyarrow type of a contract dtype."""
    if _is_list(dtype):
        return pa.list_(arrow_type(_inner(dtype)))
    return {
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }[dtype]


def polars_type(dtype: str) -> pl.DataType:
    """The polars type of a contract dtype."""
    import polars as pl

    if _is_list(dtype):
        return pl.List(polars_type(_inner(dtype)))
    return {
        "int32": pl.Int32(),
        "int64": pl.Int64(),
        "float32": pl.Float32(),
        "float64": pl.Float64(),
        "bool": pl.Boolean(),
        "string": pl.String(),
        "timestamp": pl.Datetime("us", "UTC"),
        "date": pl.Date(),
    }[dtype]


def spark_type(dtype: str) -> Any:
    """The Spark SQL type of a contract dtype (Spark timestamps are instants, shown in the session zone)."""
    from pyspark.sql import types as T

    if _is_list(dtype):
        return T.ArrayType(spark_type(_inner(dtype)), containsNull=False)
    return {
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
        "bool": T.BooleanType(),
        "string": T.StringType(),
        "timestamp": T.TimestampType(),
        "date": T.DateType(),
    }[dtype]


def pandas_dtype(dtype: str) -> Any:
    """The pandas dtype of a contract dtype (nullable extension types; lists are `object`)."""
    if _is_list(dtype):
        return "object"
    return {
        "int32": "Int32",
        "int64": "Int64",
        "float32": "float32",
        "float64": "float64",
        "bool": "boolean",
        "string": "string",
        "timestamp": "datetime64[us, UTC]",
        "date": "object",
    }[dtype]


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a contract dtype: see SCALAR_DTYPES; "list<...>" for arrays
    nullable: bool = False  # False: a null here makes the row invalid (quarantined on read)
    doc: str = ""

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # columns whose combination is unique; () means no uniqueness rule
    doc: str = ""
    partition_by: tuple[str, ...] = field(default=())  # suggested output partitioning, () for none

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names in {names}")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"table {self.name}: key columns {missing} are not columns")

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}; columns: {self.names}")

    def to_arrow(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, arrow_type(c.dtype), nullable=c.nullable) for c in self.columns],
            metadata={"sail.table": self.name},
        )

    def to_polars(self) -> dict[str, pl.DataType]:
        return {c.name: polars_type(c.dtype) for c in self.columns}

    def to_spark(self) -> StructType:
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, spark_type(c.dtype), nullable=c.nullable) for c in self.columns])

    def to_pandas_dtypes(self) -> dict[str, Any]:
        return {c.name: pandas_dtype(c.dtype) for c in self.columns}

    def empty_arrow(self) -> pa.Table:
        return self.to_arrow().empty_table()


def _t(name: str, doc: str, *cols: Column, key: tuple[str, ...] = (), partition_by: tuple[str, ...] = ()):
    return TableSchema(name=name, columns=tuple(cols), key=key, doc=doc, partition_by=partition_by)


C = Column

# --------------------------------------------------------------------------------------------------------
# Logs and catalogue (inputs)
# --------------------------------------------------------------------------------------------------------

ITEMS = _t(
    "items",
    "Item catalogue, one row per item. Media references are relative paths under the catalogue's media root.",
    C("item_id", "int64", doc="item id"),
    C("created_ts", "timestamp", doc="when the item was published; no event may precede it"),
    C("author_id", "int64", doc="uploader"),
    C("category", "string", doc="coarse category label"),
    C("title", "string", doc="title text"),
    C("ocr_text", "string", nullable=True, doc="text read from frames; null when none"),
    C("asr_text", "string", nullable=True, doc="speech transcript; null when none"),
    C("tags", "list<string>", doc="hashtags / genres (may be empty)"),
    C("duration_ms", "int64", doc="video length in ms, > 0"),
    C("cover_path", "string", nullable=True, doc="cover image (PNG) relative to the media root; null: none"),
    C("frame_paths", "list<string>", doc="sampled frames (PNG) relative to the media root; may be empty"),
    C("audio_path", "string", nullable=True, doc="audio track (WAV) relative to the media root; null: none"),
    key=("item_id",),
)

INTERACTIONS = _t(
    "interactions",
    "Feed impressions with their outcomes, one row per impression.",
    C("event_id", "string", doc="unique impression id"),
    C("request_id", "string", doc="feed request that served it (see FEED_REQUESTS)"),
    C("user_id", "int64"),
    C("item_id", "int64"),
    C("ts", "timestamp", doc="impression time (UTC)"),
    C("surface", "string", doc="where it was shown, e.g. 'feed', 'follow'"),
    C("position", "int32", doc="0-based slot in the request's slate"),
    C(
        "propensity",
        "float64",
        doc="probability the logging policy put this item in this slot, given the slots before",
    ),
    C("clicked", "bool", doc="user engaged (opened / did not swipe away within 1 s)"),
    C("watch_ms", "int64", doc="watch time in ms, >= 0"),
    C("finished", "bool", doc="watched to the end"),
    C("liked", "bool"),
    C("shared", "bool"),
    key=("event_id",),
    partition_by=("date",),
)

FEED_REQUESTS = _t(
    "feed_requests",
    "The logging policy's full distribution per feed request (for off-policy estimates). The slate was drawn "
    "from `candidate_propensities` without replacement (Plackett-Luce), so they sum to 1 per request.",
    C("request_id", "string"),
    C("user_id", "int64"),
    C("ts", "timestamp"),
    C("surface", "string"),
    C("candidate_item_ids", "list<int64>"),
    C("candidate_propensities", "list<float64>", doc="first-slot probabilities, sum to 1"),
    key=("request_id",),
)

SEARCHES = _t(
    "searches",
    "Search result impressions, one row per (search, shown item).",
    C("event_id", "string", doc="unique per result impression"),
    C("search_id", "string", doc="one search request"),
    C("user_id", "int64"),
    C("ts", "timestamp"),
    C("query", "string", doc="raw query text as typed"),
    C("item_id", "int64", doc="shown result"),
    C("position", "int32", doc="0-based rank in the result list"),
    C("clicked", "bool"),
    key=("event_id",),
)

USER_ACTIVITY = _t(
    "user_activity",
    "One row per user per day the user was active (opened the app at least once).",
    C("user_id", "int64"),
    C("activity_date", "date", doc="UTC calendar day"),
    C("sessions", "int32", doc="sessions that day, >= 1"),
    C("impressions", "int32", doc="feed impressions that day, >= 0"),
    C("watch_ms", "int64", doc="total watch time that day, >= 0"),
    key=("user_id", "activity_date"),
)

# --------------------------------------------------------------------------------------------------------
# Derived tables
# --------------------------------------------------------------------------------------------------------

I2I_PAIRS = _t(
    "i2i_pairs",
    "Item-to-item co-engagement positives: top-K per anchor item.",
    C("anchor_item_id", "int64"),
    C("item_id", "int64"),
    C("score", "float64", doc="miner score, higher is stronger"),
    C("support", "int64", doc="number of users (Swing) or sessions (co-visitation) behind the pair"),
    C("miner", "string", doc="'covisit' or 'swing'"),
    C("date_from", "date", doc="first day of the mined log range"),
    C("date_to", "date", doc="last day of the mined log range"),
    key=("miner", "anchor_item_id", "item_id"),
)

Q2I_PAIRS = _t(
    "q2i_pairs",
    "Normalised query -> clicked item, with a graded score for COSENT.",
    C("query", "string", doc="normalised query text"),
    C("item_id", "int64"),
    C("clicks", "int64"),
    C("impressions", "int64"),
    C("score", "float64", doc="clicks / impressions in [0, 1]"),
    key=("query", "item_id"),
)

SEQ2ITEM = _t(
    "seq2item",
    "A user's last L positive items before a target positive item.",
    C("user_id", "int64"),
    C("history_item_ids", "list<int64>", doc="oldest first, at most L"),
    C("target_item_id", "int64"),
    C("target_ts", "timestamp"),
    C("split", "string", doc="'train' or 'eval' (time-based)"),
    key=("user_id", "target_ts", "target_item_id"),
)

ITEM_EMBEDDINGS = _t(
    "item_embeddings",
    "Batch-inferred item vectors, one row per item and model version.",
    C("item_id", "int64"),
    C("embedding", "list<float32>", doc="L2-normalised vector of length `dims`"),
    C("dims", "int32"),
    C("model_version", "string"),
    C("event_timestamp", "timestamp", doc="when the vector became valid (point-in-time joins use it)"),
    key=("model_version", "item_id"),
)

ITEM_FEATURES = _t(
    "item_features",
    "Feature-store offline table: embedding plus hierarchical semantic ids, one row per item and version.",
    C("item_id", "int64"),
    C("embedding", "list<float32>"),
    C("semantic_ids", "list<int32>", doc="one code per quantisation level, coarse to fine"),
    C("model_version", "string"),
    C("event_timestamp", "timestamp"),
    C("created", "timestamp", doc="when the row was written"),
    key=("model_version", "item_id"),
)

RANKING_SAMPLES = _t(
    "ranking_samples",
    "Impressions joined point-in-time with features known at impression time.",
    C("event_id", "string"),
    C("user_id", "int64"),
    C("item_id", "int64"),
    C("ts", "timestamp"),
    C("author_id", "int64"),
    C("category", "string"),
    C("hour", "int32", doc="hour of day 0..23 (UTC)"),
    C("surface", "string"),
    C("position", "int32"),
    C("item_age_hours", "float32", doc="hours since the item was created"),
    C("user_recent_items", "list<int64>", doc="user's last positive items strictly before ts"),
    C("label_click", "int32", doc="0/1"),
    C("label_finish", "int32", doc="0/1"),
    C("split", "string", doc="'train', 'valid' or 'test' (time-based)"),
    key=("event_id",),
)

RANKING_SAMPLES_EXT = TableSchema(
    name="ranking_samples_ext",
    doc="RANKING_SAMPLES plus counters from earlier days and SAIL item features joined point-in-time.",
    columns=(
        *RANKING_SAMPLES.columns,
        C("date", "date", doc="UTC calendar day of the impression (the split unit)"),
        C("item_created_ts", "timestamp", doc="item publication time (cold-start slices)"),
        C("item_imps_before", "int64", doc="impressions of the item on days before the impression's day"),
        C("item_clicks_before", "int64", doc="clicks on the item on days before the impression's day"),
        C("user_imps_before", "int64", doc="impressions of the user on days before the impression's day"),
        C("user_clicks_before", "int64", doc="clicks of the user on days before the impression's day"),
        C(
            "sail_embedding",
            "list<float32>",
            nullable=True,
            doc="target item's SAIL vector valid at ts (latest feature row with event_timestamp <= ts); null: none",
        ),
        C("semantic_ids", "list<int32>", nullable=True, doc="target item's semantic ids from the same feature row"),
        C(
            "user_hist_sim",
            "float32",
            nullable=True,
            doc="cosine(target vector, mean of the vectors of user_recent_items valid at ts); null: none",
        ),
        C("sail_model_version", "string", nullable=True, doc="model_version of the joined feature row"),
    ),
    key=("event_id",),
)

QUARANTINE = _t(
    "quarantine",
    "Rows rejected on read, with the reason: one row per rejected input row, and one per media reference dropped "
    "from a kept item (reason 'unsafe_media_path').",
    C("table", "string", doc="contract name of the table the row came from"),
    C("source", "string", doc="file or directory it was read from"),
    C("reason", "string", doc="one of the REASONS in sources.validate, or 'unsafe_media_path' (a dropped reference)"),
    C("row_json", "string", doc="the rejected row as JSON; for a reference: item_id, column, ref and problem"),
)

# --------------------------------------------------------------------------------------------------------
# Ground truth of the generated world (kept apart from the logs)
# --------------------------------------------------------------------------------------------------------

ITEM_TRUTH = _t(
    "item_truth",
    "Hidden per-item latents of the generated world.",
    C("item_id", "int64"),
    C("topics", "list<int32>", doc="content topics, primary first"),
    C("content_latent", "list<float32>", doc="content direction (drives every modality)"),
    C("collab_latent", "list<float32>", doc="collaborative factor that content does not reveal"),
    C("quality", "float32", doc="intrinsic appeal"),
    key=("item_id",),
)

USER_TRUTH = _t(
    "user_truth",
    "Hidden per-user state of the generated world at the start of the log.",
    C("user_id", "int64"),
    C("topic_interest", "list<float32>", doc="interest per content topic"),
    C("collab_pref", "list<float32>", doc="preference in the collaborative space"),
    C("activity", "float32", doc="base daily return propensity"),
    C("created_date", "date", doc="sign-up day"),
    key=("user_id",),
)

ALL_TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        ITEMS,
        INTERACTIONS,
        FEED_REQUESTS,
        SEARCHES,
        USER_ACTIVITY,
        I2I_PAIRS,
        Q2I_PAIRS,
        SEQ2ITEM,
        ITEM_EMBEDDINGS,
        ITEM_FEATURES,
        RANKING_SAMPLES,
        RANKING_SAMPLES_EXT,
        QUARANTINE,
        ITEM_TRUTH,
        USER_TRUTH,
    )
}

LOG_TABLES = ("items", "interactions", "feed_requests", "searches", "user_activity")
"""Tables a data set (generated world or adapter) must provide, each as `<data_dir>/<name>/` parquet."""
