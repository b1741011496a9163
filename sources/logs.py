"""Your own logs: a mapping from a user's files (CSV, parquet, JSON lines) onto the log contracts.

`data.source: logs` with a `[data.logs]` section (a `LogsMapping`) names the files and which of their columns play
which part; `adapt_logs` reads them, checks them, and writes the five contract tables the pipeline reads, laid out
like a generated world (see docs/DATA.md for a worked example and every check's error)::

    <out_dir>/items/  interactions/  feed_requests/  searches/  user_activity/   the contracts
    <out_dir>/rejected/                                                           rows dropped, with the reason
    <out_dir>/id_map/users/  id_map/items/                                        only for non-integer source ids
    <out_dir>/manifest.json                                                       written last

What the adapter decides (each rule is listed in the manifest's `notes`):

- Ids: read as text. A column whose every value is a canonical integer ("42", not "042" or "4.0") keeps its
  integer values; otherwise each distinct value gets a dense id 1..N in sorted order, and `id_map/<users|items>`
  (source_id, id) says which.
- Time (`time_unit`): epoch `s`, `ms` or `us`, `iso` strings (a naive one is UTC), `date` (midnight UTC), or `auto`
  (an integer column by magnitude, a text column as ISO date-time or date, a parquet timestamp or date as is).
  Ties within a user (day-resolution logs) keep a stable order, the `order` column's when given, else the file
  order: the k-th tied event of a user gets k microseconds added, so every later stage sees that order.
- Positives (`[data.logs.positives]`): a row is a positive engagement when every condition given holds: its event
  type is one of `event_types`, its rating >= `rating_threshold`, its label is true, its watch time >= `watch_fraction`
  x the item's duration. With no condition every row is a positive (a positive-only log). A positive has clicked =
  finished = liked = true; any other logged row is an impression shown and not engaged (all false). Mining, the
  embedding and the ranker all read these flags, so there is one definition.
- Negatives (`[data.logs.negatives]`, `sources.negatives`): `per_positive` > 0 adds that many sampled items per
  positive as impressions shown and not engaged, at the positive's time and in its session.
- Sessions: a user's events more than `session_gap_s` apart start a new request (`request_id`); feed requests list
  a session's items with uniform propensities (a placeholder: real logs carry no logging policy, so off-policy
  estimates are not meaningful on them). User activity counts logged rows only (not sampled negatives).
- Items: the catalogue's rows; text from `title` (+ `description` as ocr_text, `transcript` as asr_text), tags from
  the `tags` columns (split on `tags_sep`) and, with an `item_tags` table, each item's `top_n` most frequent user
  tags written before the content cutoff (the embedding cutoff: the catalogue knows nothing of the held-out
  period). Media paths are relative to `media_root`; a path whose file does not exist is dropped (counted).
  `created` missing: the item's first event in any mapped table.
- Rejected rows (null or unparseable user, item or time; an interaction of an item not in the catalogue) go to
  `rejected/` with the reason and are counted; more than `max_rejected_share` of a table fails the stage.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import polars as pl

from core.contracts import FEED_REQUESTS, INTERACTIONS, ITEMS, QUARANTINE, SEARCHES, USER_ACTIVITY, Column, TableSchema
from core.io import write_json_atomic, write_table

FORMATS = ("auto", "csv", "parquet", "jsonl")
TIME_UNITS = ("auto", "s", "ms", "us", "iso", "date")
SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
UNKNOWN_CATEGORY = "unknown"
UNKNOWN_AUTHOR = 0
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"

# --------------------------------------------------------------------------------------------------------
# The mapping (YAML keys are the field names; jobs.pipeline types and range-checks them)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableFiles:
    """Where a table's rows are."""

    path: str | None = None  # file, folder or glob under `root`, or one URI
    format: str = "auto"  # auto (by suffix) | csv | parquet | jsonl
    separator: str = ","  # CSV field separator (a .tsv file: tab)


@dataclass(frozen=True)
class EventFiles(TableFiles):
    """A table of user events with items."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    time_unit: str = "auto"  # auto | s | ms | us | iso | date


@dataclass(frozen=True)
class InteractionsMapping(EventFiles):
    """The interaction log (required): one row per event of a user with an item."""

    order: str | None = None  # breaks ties of equal times (day-resolution logs); null: file order
    event: str | None = None  # event type (e.g. view / cart / purchase); positives.event_types picks positives
    rating: str | None = None  # explicit rating; positives.rating_threshold
    label: str | None = None  # a 0/1 or true/false engagement label
    watch_ms: str | None = None  # watch time in milliseconds (>= 0); positives.watch_fraction


@dataclass(frozen=True)
class ItemsMapping(TableFiles):
    """The catalogue (required): one row per item."""

    item: str = "item_id"
    title: tuple[str, ...] = ("title",)  # joined with " - " when several
    description: tuple[str, ...] = ()  # more free text, joined with ". " (the contract's ocr_text)
    transcript: str | None = None  # speech transcript (asr_text)
    tags: tuple[str, ...] = ()  # categorical / tag columns; each value (split on tags_sep) becomes a tag
    tags_sep: str | None = None  # e.g. "|" for "Comedy|Drama"
    tags_drop: tuple[str, ...] = ()  # tag values that mean "none" (e.g. "(no genres listed)")
    category: str | None = None  # coarse category; null: "unknown"
    category_sep: str | None = None  # keep the first part of the category column split on this
    author: str | None = None  # uploader / brand / seller; null: 0 for every item
    created: str | None = None  # publication time; null: the item's first event
    created_unit: str = "auto"
    duration_ms: str | None = None  # length in ms; null: default_duration_ms
    default_duration_ms: int = 60_000
    image: str | None = None  # column holding an image path under media_root
    image_pattern: str | None = None  # or a pattern, e.g. "{item}.jpg" ({item}: the source item id)
    frames: str | None = None  # column holding frame image paths (a list, or text split on frames_sep)
    frames_sep: str = "|"
    audio: str | None = None  # column holding an audio (WAV) path under media_root
    audio_pattern: str | None = None


@dataclass(frozen=True)
class SearchesMapping(EventFiles):
    """Search logs (optional): one row per (search, shown result); without it there are no q2i pairs."""

    query: str = "query"
    clicked: str | None = None  # null: every row is a clicked result
    search: str | None = None  # search id; null: one search per (user, query, time)
    position: str | None = None  # rank in the result list; null: 0


@dataclass(frozen=True)
class ImpressionsMapping(EventFiles):
    """Real impressions shown and not engaged (optional): an impression with the same user, item and time as a
    logged interaction is a duplicate and dropped."""


@dataclass(frozen=True)
class ItemTagsMapping(TableFiles):
    """User-written tags (optional): (item, tag, time) rows; each item's most frequent before the content cutoff
    are added to its tags."""

    item: str = "item_id"
    tag: str = "tag"
    time: str = "timestamp"
    time_unit: str = "auto"
    top_n: int = 5


@dataclass(frozen=True)
class PositivesMapping:
    """What a positive engagement is: every condition given must hold; none given: every row is positive."""

    event_types: tuple[str, ...] = ()  # values of interactions.event
    rating_threshold: float | None = None  # interactions.rating >= this
    label: bool = False  # interactions.label must be true (1 / true / yes)
    watch_fraction: float | None = None  # interactions.watch_ms >= this x the item's duration


@dataclass(frozen=True)
class NegativesMapping:
    """Sampled negatives for positive-only logs (`sources.negatives`); 0 per positive: none."""

    per_positive: int = 0
    sampler: str = "popularity"  # uniform | popularity (popularity ** alpha, from positives before that day)
    alpha: float = 0.75
    seed: int = 0


@dataclass(frozen=True)
class LogsMapping:
    name: str = "logs"  # the data set's name (reports, ids of events and requests)
    root: str | None = None  # folder the paths are relative to; null: the config file's folder ($VARS expand)
    media_root: str | None = None  # folder media paths are relative to (relative to root); null: root
    surface: str = "log"  # the contracts' surface value of every row
    session_gap_s: int = 1800  # a user's events further apart start a new session (request)
    rows_per_part: int = 5_000_000  # a larger interaction log is split into parts of whole users, spilled to disk
    # and processed one at a time, so the data stage's memory follows this, not the log's size
    interactions: InteractionsMapping = field(default_factory=InteractionsMapping)
    items: ItemsMapping = field(default_factory=ItemsMapping)
    searches: SearchesMapping = field(default_factory=SearchesMapping)
    impressions: ImpressionsMapping = field(default_factory=ImpressionsMapping)
    item_tags: ItemTagsMapping = field(default_factory=ItemTagsMapping)
    positives: PositivesMapping = field(default_factory=PositivesMapping)
    negatives: NegativesMapping = field(default_factory=NegativesMapping)


LOGS_RANGES: dict[str, dict[str, str]] = {
    "data.logs": {"session_gap_s": ">= 1", "rows_per_part": ">= 1"},
    "data.logs.items": {"default_duration_ms": ">= 1"},
    "data.logs.item_tags": {"top_n": ">= 0"},
    "data.logs.positives": {"rating_threshold": "in [-1e9, 1e9]", "watch_fraction": "in [0, 1]"},
    "data.logs.negatives": {"per_positive": "in [0, 1000]", "alpha": ">= 0", "seed": ">= 0"},
}
"""The range of every numeric mapping setting (jobs.pipeline.RANGES includes these)."""

MOVIELENS = LogsMapping(
    name="ml",
    surface="rating",
    interactions=InteractionsMapping(
        path="ratings.csv",
        user="userId",
        item="movieId",
        time="timestamp",
        time_unit="s",
        order="movieId",
        rating="rating",
    ),
    items=ItemsMapping(
        path="movies.csv",
        item="movieId",
        title=("title",),
        tags=("genres",),
        tags_sep="|",
        tags_drop=("(no genres listed)",),
        category="genres",
        category_sep="|",
        default_duration_ms=2 * 60 * 60 * 1000,
    ),
    item_tags=ItemTagsMapping(path="tags.csv", item="movieId", tag="tag", time="timestamp", time_unit="s", top_n=5),
    positives=PositivesMapping(rating_threshold=4.0),
)
"""MovieLens (ml-latest-small and the other GroupLens dumps) as a shipped mapping: ratings >= 4 are positives,
genres are tags and the first one the category, user tags before the cutoff join the tags, no media (a run
config's `data.movielens_posters` adds each movie's poster as its image)."""


class MappingError(ValueError):
    """The mapping does not fit the files (a missing file or column, a value of the wrong kind)."""


def check_mapping(m: LogsMapping, where: str = "[data.logs]") -> None:
    """Refuses a mapping that cannot work before any file is read, naming the setting."""
    for key in ("interactions", "items"):
        if not getattr(m, key).path:
            raise MappingError(f"{where[:-1]}.{key}]: path is required (the {key} file, folder or glob)")
    for key in ("interactions", "items", "searches", "impressions", "item_tags"):
        t = getattr(m, key)
        if t.format not in FORMATS:
            raise MappingError(f"{where[:-1]}.{key}]: format must be one of {list(FORMATS)}, got {t.format!r}")
        for unit_key in ("time_unit", "created_unit"):
            unit = getattr(t, unit_key, "auto")
            if unit not in TIME_UNITS:
                raise MappingError(f"{where[:-1]}.{key}]: {unit_key} must be one of {list(TIME_UNITS)}, got {unit!r}")
    p, i, it = m.positives, m.interactions, m.items
    needs = [
        (bool(p.event_types), "event_types", i.event, "event"),
        (p.rating_threshold is not None, "rating_threshold", i.rating, "rating"),
        (p.label, "label", i.label, "label"),
        (p.watch_fraction is not None, "watch_fraction", i.watch_ms, "watch_ms"),
    ]
    for used, key, column, col_key in needs:
        if used and not column:
            raise MappingError(
                f"{where[:-1]}.positives]: {key} needs the interactions column that holds it "
                f"([data.logs.interactions] {col_key}: <column>)"
            )
    if p.watch_fraction is not None and not it.duration_ms:
        raise MappingError(
            f"{where[:-1]}.positives]: watch_fraction needs the items' durations ([data.logs.items] duration_ms)"
        )
    if it.image and it.image_pattern:
        raise MappingError(f"{where[:-1]}.items]: give image or image_pattern, not both")
    if it.audio and it.audio_pattern:
        raise MappingError(f"{where[:-1]}.items]: give audio or audio_pattern, not both")
    for key in ("image_pattern", "audio_pattern"):
        pattern = getattr(it, key)
        try:
            if pattern is not None:
                pattern.format(item="0123456789")
        except (KeyError, IndexError, ValueError) as e:
            raise MappingError(
                f"{where[:-1]}.items]: {key} {pattern!r} must use only {{item}} (the source item id, e.g. "
                f"'{{item}}.jpg' or 'images/{{item:.3}}/{{item}}.jpg'): {type(e).__name__}: {e}"
            ) from None
    if not it.title:
        raise MappingError(f"{where[:-1]}.items]: title must name at least one column")
    if m.negatives.sampler not in ("uniform", "popularity"):
        raise MappingError(
            f"{where[:-1]}.negatives]: sampler must be 'uniform' or 'popularity', got {m.negatives.sampler!r}"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.]+", m.name):
        raise MappingError(f"{where}: name must be letters, digits, '_' or '.', got {m.name!r}")


def config_path(text: str | None, base: Path | None) -> Path:
    """A folder a config names, absolute: $VARS expanded, relative to `base` (the config file's folder; the working
    directory when None); None or empty: `base` itself."""
    path = Path(os.path.expandvars(text)) if text else Path(".")
    return (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()


def resolve_root(m: LogsMapping, base: Path | None) -> LogsMapping:
    """The mapping with `root` absolute (`config_path`)."""
    from dataclasses import replace

    return replace(m, root=str(config_path(m.root, base)))


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def _suffix(f: Path | str) -> str:
    return (PurePosixPath(urlparse(f).path) if isinstance(f, str) else f).suffix.lower()


def table_files(root: Path, spec: str, fmt: str, what: str) -> tuple[list[Path | str], str]:
    """The files a mapping's `path` names (a file, a folder of files or a glob, under `root`; or one URI that polars
    reads, e.g. s3://bucket/log.parquet, kept as text) and their format."""
    pattern = spec if os.path.isabs(spec) else str(root / spec)
    files: list[Path | str]
    if "://" in spec:
        files, pattern = [spec], spec
    elif any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    elif Path(pattern).is_dir():
        files = sorted(p for p in Path(pattern).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIX_FORMAT)
    else:
        files = [Path(pattern)] if Path(pattern).is_file() else []
    if not files:
        raise FileNotFoundError(f"[data.logs.{what}] path {spec!r}: no file found (looked for {pattern})")
    if fmt == "auto":
        kinds = {SUFFIX_FORMAT.get(_suffix(f)) for f in files}
        if None in kinds or len(kinds) != 1:
            raise MappingError(
                f"[data.logs.{what}] path {spec!r}: cannot tell the format of {[str(f) for f in files][:5]} "
                f"(suffixes {sorted(SUFFIX_FORMAT)}); set format: csv | parquet | jsonl"
            )
        fmt = kinds.pop()
    return files, fmt


def file_columns(path: Path | str, fmt: str, separator: str = ",") -> list[str]:
    """The column names of one file, read from its header (CSV), schema (parquet) or first record (JSON lines)."""
    try:
        if fmt == "csv":
            sep = "\t" if _suffix(path) == ".tsv" and separator == "," else separator
            return pl.read_csv(path, n_rows=0, infer_schema=False, separator=sep, encoding="utf8-lossy").columns
        if fmt == "parquet":
            return list(pl.read_parquet_schema(path))
        if isinstance(path, str):  # a URI
            return pl.scan_ndjson(path).collect_schema().names()
        with open(path, "rb") as f:
            first = next((line for line in f if line.strip()), b"{}")
        return list(json.loads(first))
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise MappingError(f"{path}: cannot read it as {fmt} ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _roles(m: LogsMapping, key: str) -> dict[str, str | None]:
    """{mapping key: source column} of one table of the mapping."""
    t = getattr(m, key)
    skip = {
        "path",
        "format",
        "separator",
        "time_unit",
        "created_unit",
        "tags_sep",
        "tags_drop",
        "category_sep",
        "default_duration_ms",
        "image_pattern",
        "audio_pattern",
        "frames_sep",
        "top_n",
    }
    out: dict[str, str | None] = {}
    for f in fields(t):
        if f.name in skip:
            continue
        v = getattr(t, f.name)
        if isinstance(v, tuple):
            out |= {f"{f.name}[{k}]": c for k, c in enumerate(v)}
        else:
            out[f.name] = v
    return out


def check_columns(m: LogsMapping) -> None:
    """Every mapped table's files exist and hold every column the mapping names (headers only, no rows read):
    a MappingError names the file, the column and the mapping key."""
    root = Path(m.root or ".")
    for key in ("interactions", "items", "searches", "impressions", "item_tags"):
        t = getattr(m, key)
        if not t.path:
            continue
        files, fmt = table_files(root, t.path, t.format, key)
        wanted = {role: col for role, col in _roles(m, key).items() if col}
        for f in files:
            cols = file_columns(f, fmt, t.separator)
            missing = [f"{col!r} ([data.logs.{key}] {role})" for role, col in wanted.items() if col not in cols]
            if missing:
                hint = ""
                if key == "interactions" and wanted["time"] not in cols:
                    hint = (
                        "; every interaction needs a time (the log is split into training and held-out days by it): "
                        "add a column of epoch seconds / ms / us, ISO date-times or dates and name it in time"
                    )
                raise MappingError(f"{f}: missing column(s) {', '.join(missing)}; its columns: {cols}{hint}")


def read_table(root: Path, spec: Any, what: str, columns: dict[str, str | None]) -> tuple[pl.DataFrame, str]:
    """`scan_table`, collected."""
    lf, where = scan_table(root, spec, what, columns)
    try:
        return lf.collect(engine="streaming"), where
    except (pl.exceptions.PolarsError, OSError) as e:
        raise MappingError(f"{where}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def scan_table(root: Path, spec: Any, what: str, columns: dict[str, str | None]) -> tuple[pl.LazyFrame, str]:
    """The mapped columns of one table as {role: column}, with a `_file` and a `_row` column (file order).

    `columns` maps each role to its source column (None: not mapped). A missing column raises MappingError naming
    the file, the column and the mapping key; text formats are read as text (types are parsed per role).
    """
    files, fmt = table_files(root, spec.path, spec.format, what)
    wanted = {role: col for role, col in columns.items() if col}
    frames = []
    for f in files:  # lazy scans: only the mapped columns are read, in streaming batches
        try:
            if fmt == "csv":
                sep = "\t" if _suffix(f) == ".tsv" and spec.separator == "," else spec.separator
                lf = pl.scan_csv(f, infer_schema=False, separator=sep, encoding="utf8-lossy")
            elif fmt == "parquet":
                lf = pl.scan_parquet(f)
            else:
                lf = pl.scan_ndjson(f, infer_schema_length=None)
            names = lf.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as e:
            raise MappingError(f"{f}: cannot read it as {fmt} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        missing = [f"{col!r} ([data.logs.{what}] {role})" for role, col in wanted.items() if col not in names]
        if missing:
            raise MappingError(f"{f}: missing column(s) {', '.join(missing)}; its columns: {names}")
        frames.append(
            lf.select(
                *[pl.col(col).alias(role) for role, col in wanted.items()],
                pl.lit(str(f)).cast(pl.Categorical).alias("_file"),
            )
        )
    where = str(files[0] if len(files) == 1 else Path(str(files[0])).parent)
    lf = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    return lf.with_row_index("_row"), where


def parse_time(col: pl.Series, unit: str, where: str) -> pl.Series:
    """A column of times as UTC microsecond datetimes (null where a value does not parse); see the module doc."""
    dtype = col.dtype
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        c = col.dt.cast_time_unit("us")
        return c.dt.replace_time_zone("UTC") if dtype.time_zone is None else c.dt.convert_time_zone("UTC")
    if unit in ("s", "ms", "us") or (unit == "auto" and dtype.is_numeric()):
        num = col.cast(pl.Float64, strict=False) if dtype == pl.String else col.cast(pl.Float64)
        if unit == "auto":
            big = num.abs().max()
            unit = "s" if big is None or big < 1e11 else "ms" if big < 1e14 else "us"
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
        return (num * scale).round(0).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype != pl.String:
        raise MappingError(f"{where}: a {dtype} column cannot be read as times ({unit})")
    text = col.str.strip_chars()
    if unit == "auto" and text.drop_nulls().str.contains(r"^-?\d+(\.\d+)?$").all():
        return parse_time(text.cast(pl.Float64, strict=False), "auto", where)
    as_date = text.str.to_date(strict=False)
    if unit == "date":
        return as_date.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    ts = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    if ts.null_count() > text.null_count():  # offsets ("+02:00") or mixed forms: one value at a time
        ts = ts.fill_null(text.str.to_datetime(time_unit="us", strict=False).dt.replace_time_zone("UTC"))
    return ts.fill_null(as_date.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).str.strip_chars()


def ids_map(values: pl.Series) -> tuple[pl.DataFrame, bool]:
    """(source_id, id) for the distinct non-null text ids: their integer values when every one is a canonical
    integer, else 1..N in sorted order; the flag says whether the ids were kept as integers."""
    distinct = values.drop_nulls().unique().sort()
    if distinct.str.contains(_CANONICAL_INT).all():
        return pl.DataFrame({"source_id": distinct, "id": distinct.cast(pl.Int64)}), True
    return pl.DataFrame({"source_id": distinct, "id": pl.int_range(1, distinct.len() + 1, eager=True)}), False


# --------------------------------------------------------------------------------------------------------
# Adapting
# --------------------------------------------------------------------------------------------------------


@dataclass
class LogsResult:
    out_dir: Path
    manifest: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


class _Rejects:
    """Rows dropped on read, with their reason, per table; fails past the allowed share."""

    def __init__(self, max_share: float) -> None:
        self.max_share = max_share
        self.frames: list[pl.DataFrame] = []
        self.counts: dict[str, dict[str, int]] = {}

    def take(self, df: pl.DataFrame, bad: pl.Expr, table: str, reason: str, source: str) -> pl.DataFrame:
        mask = df.select(bad.fill_null(True)).to_series()
        if not mask.any():  # the common case: no copy
            return df
        rows = df.filter(mask)
        if rows.height:
            self.counts.setdefault(table, {})[reason] = self.counts.get(table, {}).get(reason, 0) + rows.height
            sample = rows.head(100_000)
            self.frames.append(
                pl.DataFrame(
                    {
                        "table": [table] * sample.height,
                        "source": sample.get_column("_file").to_list()
                        if "_file" in sample.columns
                        else [source] * sample.height,
                        "reason": [reason] * sample.height,
                        "row_json": [json.dumps(r, default=str) for r in sample.drop("_file", strict=False).to_dicts()],
                    }
                )
            )
        return df.filter(~mask)

    def check(self, table: str, total: int, source: str) -> None:
        n = sum(self.counts.get(table, {}).values())
        if total and n / total > self.max_share:
            raise MappingError(
                f"{source}: {n} of {total} {table} rows rejected ({self.counts[table]}), more than "
                f"max_rejected_share {self.max_share:g}; see the reasons above"
            )


def _positive_expr(m: LogsMapping) -> pl.Expr:
    p = m.positives
    cond = pl.lit(True)
    if p.event_types:
        cond = cond & pl.col("event").is_in(list(p.event_types))
    if p.rating_threshold is not None:
        cond = cond & (pl.col("rating") >= p.rating_threshold)
    if p.label:
        cond = cond & pl.col("label").str.to_lowercase().is_in(["1", "true", "yes", "y", "t", "1.0"])
    if p.watch_fraction is not None:
        cond = cond & (pl.col("watch") >= p.watch_fraction * pl.col("duration_ms"))
    return cond.fill_null(False)


def _stable_ties(df: pl.DataFrame, by: str, order: list[str]) -> pl.DataFrame:
    """Sorted by (`by`, ts, *order); the k-th event of a run of equal times of one `by` gets ts + k microseconds."""
    df = df.sort([by, "ts", *order])
    k = pl.int_range(pl.len()).over([by, "ts"])
    return df.with_columns(pl.col("ts") + pl.duration(microseconds=k))


def _media_column(
    items: pl.DataFrame, media_root: Path, column: str | None, pattern: str | None, role: str, counts: dict[str, int]
) -> pl.Series:
    """Media paths under `media_root` that exist (others null, counted as media_missing.<role>)."""
    if column:
        refs = items.get_column(column).cast(pl.String).to_list()
    elif pattern:
        refs = [pattern.format(item=s) for s in items.get_column("source_item").to_list()]
    else:
        return pl.Series(role, [None] * items.height, pl.String)
    kept, missing = [], 0
    for r in refs:
        ok = bool(r) and (media_root / r).is_file()
        missing += bool(r) and not ok
        kept.append(r if ok else None)
    if missing:
        counts[f"media_missing_{role}"] = missing
    return pl.Series(role, kept, pl.String)


def _frames_column(
    items: pl.DataFrame, media_root: Path, column: str | None, sep: str, counts: dict[str, int]
) -> pl.Series:
    if not column:
        return pl.Series("frame_paths", [[]] * items.height, pl.List(pl.String))
    col = items.get_column(column)
    lists = (
        col.to_list()
        if isinstance(col.dtype, pl.List)
        else [[s for s in (v or "").split(sep) if s.strip()] for v in col.cast(pl.String).to_list()]
    )
    out, missing = [], 0
    for refs in lists:
        keep = [r.strip() for r in (refs or []) if r and (media_root / r.strip()).is_file()]
        missing += len([r for r in (refs or []) if r]) - len(keep)
        out.append(keep)
    if missing:
        counts["media_missing_frames"] = missing
    return pl.Series("frame_paths", out, pl.List(pl.String))


def _tag_list(df: pl.DataFrame, column: str, sep: str | None, drop: tuple[str, ...]) -> pl.Expr:
    """A tags column as a list of non-empty stripped values: a list column as is, text split on `sep` (or one value)."""
    col = pl.col(column)
    if isinstance(df.schema[column], pl.List):
        parts = col.cast(pl.List(pl.String))
    else:
        text = _text(col).fill_null("")
        parts = text.str.split(sep) if sep else pl.concat_list(text)
    return parts.list.eval(pl.element().str.strip_chars()).list.eval(
        pl.element().filter((pl.element() != "") & ~pl.element().is_in(list(drop)))
    )


def _events(
    df: pl.DataFrame,
    source: str,
    spec: Any,
    table: str,
    item_ids: pl.DataFrame,
    user_ids: pl.DataFrame | None,
    rejects: _Rejects,
) -> pl.DataFrame:
    """An optional event table with `ts`, `item_id` (and `user_id`, when `user_ids` is given) from the ids the
    interactions and the catalogue defined; rows with an unparseable time, an unknown item or user are rejected."""
    df = df.with_columns(
        _text(pl.col("item")).alias("item"),
        parse_time(df.get_column("time"), spec.time_unit, f"{source} column {spec.time!r}").alias("ts"),
    )
    df = rejects.take(df, pl.col("ts").is_null(), table, "unparseable_time", source)
    df = df.join(item_ids.rename({"source_id": "item", "id": "item_id"}), on="item", how="left")
    df = rejects.take(df, pl.col("item_id").is_null(), table, "unknown_item", source)
    if user_ids is not None:
        df = df.with_columns(_text(pl.col("user")).alias("user"))
        df = df.join(user_ids.rename({"source_id": "user", "id": "user_id"}), on="user", how="left")
        df = rejects.take(df, pl.col("user_id").is_null(), table, "unknown_user", source)
    return df


def _count(lf: pl.LazyFrame, where: str) -> int:
    """The rows of a scanned table (one streaming pass)."""
    try:
        return int(lf.select(pl.len()).collect(engine="streaming").item())
    except (pl.exceptions.PolarsError, OSError) as e:
        raise MappingError(f"{where}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _split(lf: pl.LazyFrame, n_parts: int, spill: Path) -> list[pl.DataFrame | Path]:
    """A scanned table in `n_parts` parts of whole users (by a hash of the user's text): one part is collected, more
    are streamed to parquet under `spill` (one folder per part) and read back one at a time."""
    if n_parts == 1:
        return [lf.collect(engine="streaming")]
    part = _text(pl.col("user")).fill_null("").hash(seed=0) % n_parts
    lf.with_columns(_part=part).sink_parquet(pl.PartitionBy(spill, key="_part", include_key=False), mkdir=True)
    dirs = [spill / f"_part={k}" for k in range(n_parts)]
    empty = lf.clear().collect()
    for d in dirs:  # a part no user fell into: an empty file with the columns
        if not d.is_dir():
            d.mkdir(parents=True)
            empty.write_parquet(d / "empty.parquet")
    return dirs


def _load(part: pl.DataFrame | Path) -> pl.DataFrame:
    if isinstance(part, pl.DataFrame):
        return part
    files = sorted(part.glob("*.parquet")) if part.is_dir() else [part] if part.exists() else []
    return pl.read_parquet(files) if files else pl.DataFrame()


def _keep(df: pl.DataFrame, path: Path, n_parts: int) -> pl.DataFrame | Path:
    """A part's result: kept in memory when there is one part, else written to `path` (and read back later)."""
    if n_parts == 1:
        return df
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return path


def _max_ts(part: pl.DataFrame | Path) -> dt.datetime:
    if isinstance(part, pl.DataFrame):
        return part.get_column("ts").max()
    return pl.scan_parquet(part).select(pl.col("ts").max()).collect().item()


def _slices(parts: list[pl.DataFrame | Path], rows: int = 1_000_000):
    """Arrow tables of at most `rows` rows from the parts in order (a table converts a million rows at a time)."""
    for part in parts:
        df = _load(part)
        for i in range(0, max(df.height, 1), rows):
            yield df.slice(i, rows).to_arrow()


def _clean_interactions(
    inter: pl.DataFrame, im: InteractionsMapping, item_ids: pl.DataFrame, rejects: _Rejects, src: str
) -> pl.DataFrame:
    """One part of the interaction log: user and item text, times parsed, bad rows rejected, catalogue ids joined."""
    inter = inter.with_columns(
        _text(pl.col("user")).alias("user"),
        _text(pl.col("item")).alias("item"),
        parse_time(inter.get_column("time"), im.time_unit, f"{src} column {im.time!r}").alias("ts"),
    )
    inter = rejects.take(inter, pl.col("user").is_null() | (pl.col("user") == ""), "interactions", "null_user", src)
    inter = rejects.take(inter, pl.col("item").is_null() | (pl.col("item") == ""), "interactions", "null_item", src)
    inter = rejects.take(inter, pl.col("ts").is_null(), "interactions", "unparseable_time", src)
    if im.rating:
        inter = inter.with_columns(pl.col("rating").cast(pl.Float64, strict=False))
        inter = rejects.take(inter, pl.col("rating").is_null(), "interactions", "unparseable_rating", src)
    if im.watch_ms:
        inter = inter.with_columns(pl.col("watch").cast(pl.Float64, strict=False).round(0).cast(pl.Int64))
        inter = rejects.take(
            inter, pl.col("watch").is_null() | (pl.col("watch") < 0), "interactions", "bad_watch_ms", src
        )
    if im.event:
        inter = inter.with_columns(_text(pl.col("event")))
    if im.label:
        inter = inter.with_columns(_text(pl.col("label")))
    inter = inter.join(item_ids.rename({"source_id": "item", "id": "item_id"}), on="item", how="left")
    return rejects.take(inter, pl.col("item_id").is_null(), "interactions", "unknown_item", src)


def _logged_rows(logged: pl.DataFrame, m: LogsMapping, items: pl.DataFrame) -> pl.DataFrame:
    """The contract rows of one part's logged events: ties ordered, sessions numbered, the k-th event of a user is
    `<name>-<user>-<k>` (the same whichever part the user is in)."""
    if m.interactions.order:  # numbers sort as numbers, anything else as text
        as_num = logged.get_column("order").cast(pl.Float64, strict=False)
        if as_num.null_count() == logged.get_column("order").null_count():
            logged = logged.with_columns(as_num.alias("order"))
    logged = _stable_ties(logged, "user_id", ["order", "_src", "_row"] if m.interactions.order else ["_src", "_row"])
    gap = pl.col("ts").diff().over("user_id")
    logged = logged.with_columns(
        (
            (gap.is_null() | (gap > dt.timedelta(seconds=m.session_gap_s))).cast(pl.Int64).cum_sum().over("user_id") - 1
        ).alias("session"),
        pl.int_range(pl.len()).over("user_id").alias("_seq"),
    )
    logged = logged.join(items.select("item_id", "duration_ms"), on="item_id", how="left").with_columns(
        pl.format(f"{m.name}-{{}}-{{}}", "user_id", "_seq").alias("event_id"),
        pl.format(f"{m.name}-{{}}-s{{}}", "user_id", "session").alias("request_id"),
    )
    watch = pl.col("watch").fill_null(pl.when(pl.col("positive")).then(pl.col("duration_ms")).otherwise(0))
    return _contract_rows(logged, m, pl.col("positive"), watch)


def _contract_rows(df: pl.DataFrame, m: LogsMapping, engaged: pl.Expr, watch_ms: pl.Expr) -> pl.DataFrame:
    """INTERACTIONS rows: every row on the mapping's surface at position 0 with propensity 1; clicked = finished =
    liked = `engaged` (the one positive definition)."""
    return df.select(
        "event_id",
        "request_id",
        "user_id",
        "item_id",
        "ts",
        pl.lit(m.surface).alias("surface"),
        pl.lit(0, dtype=pl.Int32).alias("position"),
        pl.lit(1.0).alias("propensity"),
        engaged.alias("clicked"),
        watch_ms.cast(pl.Int64).alias("watch_ms"),
        engaged.alias("finished"),
        engaged.alias("liked"),
        pl.lit(False).alias("shared"),
    )


def _negatives(
    rows: pl.DataFrame, items: pl.DataFrame, m: LogsMapping, popularity: pl.DataFrame | None, stream: int | None
) -> tuple[pl.DataFrame, dict]:
    """One part's sampled negatives as contract rows (not engaged, at their positive's time and in its session)."""
    from sources.negatives import NegativeSampling, sample_negatives

    pos = rows.filter(pl.col("clicked")).select("event_id", "request_id", "user_id", "item_id", "ts")
    seen = rows.select("user_id", "item_id").unique()
    neg, stats = sample_negatives(
        pos,
        items.select("item_id", "created_ts"),
        NegativeSampling(**asdict(m.negatives)),
        exclude=seen,
        popularity=popularity,
        stream=stream,
    )
    return _contract_rows(neg, m, pl.lit(False), pl.lit(0, dtype=pl.Int64)), stats


def _add_stats(total: dict | None, part: dict) -> dict:
    if total is None:
        return dict(part)
    return total | {k: total[k] + part[k] for k in ("positives", "sampled", "short")}


def adapt_logs(
    m: LogsMapping,
    out_dir: str | Path,
    *,
    holdout_frac: float | None = None,
    content_cutoff: dt.datetime | None = None,
    max_rejected_share: float = 0.01,
    echo: Callable[[str], None] = print,
) -> LogsResult:
    """Reads the files `m` names and writes the contract tables under `out_dir` (manifest.json last).

    `m.root` must be absolute (see `resolve_root`); `holdout_frac` places the content cutoff for user tags (the
    embedding cutoff); `content_cutoff`, when given, is that cutoff instead (a naive time is UTC), e.g. an earlier
    one for a validation split; neither: every user tag counts. `max_rejected_share`: the share of one table's rows
    that may be rejected before it fails.
    """
    from core.timeline import embedding_cutoff

    check_mapping(m)
    check_columns(m)  # every file there with every mapped column, before any row is read
    root = Path(m.root or ".")
    media_root = (root / m.media_root).resolve() if m.media_root else root
    out = Path(out_dir)
    rejects = _Rejects(max_rejected_share)
    counts: dict[str, int] = {}
    notes: list[str] = []

    # ---- catalogue
    itm = m.items
    item_roles = {
        "source_item": itm.item,
        "created": itm.created,
        "duration": itm.duration_ms,
        "author": itm.author,
        "category": itm.category,
        "transcript": itm.transcript,
        "image": itm.image,
        "frames": itm.frames,
        "audio": itm.audio,
    }
    item_roles |= {f"title_{k}": c for k, c in enumerate(itm.title)}
    item_roles |= {f"desc_{k}": c for k, c in enumerate(itm.description)}
    item_roles |= {f"tags_{k}": c for k, c in enumerate(itm.tags)}
    cat, src_items = read_table(root, itm, "items", item_roles)
    cat = cat.with_columns(_text(pl.col("source_item")).alias("source_item"))
    cat = rejects.take(
        cat, pl.col("source_item").is_null() | (pl.col("source_item") == ""), "items", "null_item", src_items
    )
    dup = cat.group_by("source_item").len().filter(pl.col("len") > 1)
    if dup.height:
        raise MappingError(
            f"{src_items}: {dup.height} item id(s) appear more than once in column {itm.item!r} "
            f"(e.g. {dup.get_column('source_item')[0]!r}); the catalogue needs one row per item"
        )
    item_ids, items_int = ids_map(cat.get_column("source_item"))
    cat = cat.join(item_ids.rename({"source_id": "source_item", "id": "item_id"}), on="source_item", how="left")

    # ---- interactions (and real impressions), in parts of whole users: one part in memory, or several spilled to
    # parquet under <out>/.parts and processed one at a time (memory bounded by rows_per_part, not by the log)
    im = m.interactions
    roles = {
        "user": im.user,
        "item": im.item,
        "time": im.time,
        "order": im.order,
        "event": im.event,
        "rating": im.rating,
        "label": im.label,
        "watch": im.watch_ms,
    }
    inter_lf, src_inter = scan_table(root, im, "interactions", roles)
    total_inter = _count(inter_lf, src_inter)
    n_parts = max(1, -(-total_inter // m.rows_per_part))
    echo(
        f"data: {total_inter:,} interaction rows from {src_inter}"
        + (f", in {n_parts} parts of whole users" if n_parts > 1 else "")
    )
    spill = out / ".parts"
    parts = _split(inter_lf, n_parts, spill / "interactions")
    imp_parts, src_p = None, None
    if m.impressions.path:
        pm = m.impressions
        imp_lf, src_p = scan_table(root, pm, "impressions", {"user": pm.user, "item": pm.item, "time": pm.time})
        total_imp = _count(imp_lf, src_p)
        imp_parts = _split(imp_lf, n_parts, spill / "impressions")
    # pass 1: times, rejects, item ids; the log's span, users and first events
    cleaned, imp_cleaned, users_seen, first_events, extra_last = [], [], [], [], []
    for k in range(n_parts):
        inter = _clean_interactions(_load(parts[k]), im, item_ids, rejects, src_inter)
        users_seen.append(inter.get_column("user").unique())
        first_events.append(inter.group_by("item_id").agg(pl.col("ts").min()))
        cleaned.append(_keep(inter, spill / "clean" / f"{k}.parquet", n_parts))
        if imp_parts is not None:
            imp = _events(_load(imp_parts[k]), src_p, m.impressions, "impressions", item_ids, None, rejects)
            first_events.append(imp.group_by("item_id").agg(pl.col("ts").min()))
            if imp.height:
                extra_last.append(imp.get_column("ts").max())
            imp_cleaned.append(_keep(imp, spill / "clean_imp" / f"{k}.parquet", n_parts))
    rejects.check("interactions", total_inter, src_inter)
    spans = pl.concat(first_events[:: 2 if imp_parts is not None else 1]) if first_events else None
    if spans is None or spans.height == 0:
        raise MappingError(f"{src_inter}: no usable interaction rows (of {total_inter})")
    first = spans.get_column("ts").min()
    last = max(t for t in (_max_ts(c) for c in cleaned) if t is not None)
    user_ids, users_int = ids_map(pl.concat(users_seen))
    del users_seen

    # optional tables, read before the catalogue's creation times (their events count as first events)
    extra_events = [pl.concat(first_events).group_by("item_id").agg(pl.col("ts").min())]
    searches = None
    if m.searches.path:
        sm = m.searches
        s, src_s = read_table(
            root,
            sm,
            "searches",
            {
                "user": sm.user,
                "query": sm.query,
                "item": sm.item,
                "time": sm.time,
                "clicked": sm.clicked,
                "search": sm.search,
                "position": sm.position,
            },
        )
        s = _events(s, src_s, sm, "searches", item_ids, user_ids, rejects)
        s = rejects.take(s, pl.col("query").is_null(), "searches", "null_query", src_s)
        rejects.check("searches", s.height + sum(rejects.counts.get("searches", {}).values()), src_s)
        searches = s
        extra_events.append(s.select("item_id", "ts"))
    user_tags = None
    if m.item_tags.path:
        tm = m.item_tags
        tg, src_t = read_table(root, tm, "item_tags", {"item": tm.item, "tag": tm.tag, "time": tm.time})
        tg = _events(tg, src_t, tm, "item_tags", item_ids, None, rejects)
        user_tags = tg
        counts["item_tag_rows"] = tg.height
        extra_events.append(tg.select("item_id", "ts"))

    # ---- times: the log's span, the content cutoff
    if content_cutoff is not None:
        cutoff = content_cutoff.astimezone(dt.UTC) if content_cutoff.tzinfo else content_cutoff.replace(tzinfo=dt.UTC)
    else:
        cutoff = embedding_cutoff(first, last, holdout_frac) if holdout_frac else None

    # ---- items
    first_seen = (
        pl.concat([e.select("item_id", "ts") for e in extra_events])
        .group_by("item_id")
        .agg(pl.col("ts").min().alias("first_ts"))
    )
    cat = cat.join(first_seen, on="item_id", how="left")
    if itm.created:
        cat = cat.with_columns(
            parse_time(cat.get_column("created"), itm.created_unit, f"{src_items} column {itm.created!r}").alias(
                "created_ts"
            )
        )
        unparsed = cat.filter(pl.col("created_ts").is_null() & pl.col("created").is_not_null()).height
        if unparsed:
            counts["items_created_unparseable"] = unparsed
        cat = cat.with_columns(pl.col("created_ts").fill_null(pl.col("first_ts")))
    else:
        cat = cat.with_columns(pl.col("first_ts").alias("created_ts"))
    cat = cat.with_columns(pl.col("created_ts").fill_null(first))
    if itm.duration_ms:
        cat = cat.with_columns(pl.col("duration").cast(pl.Float64, strict=False).round(0).cast(pl.Int64))
        bad = cat.filter(pl.col("duration").is_null() | (pl.col("duration") <= 0)).height
        if bad:
            counts["items_duration_defaulted"] = bad
        cat = cat.with_columns(
            pl.when(pl.col("duration") > 0)
            .then(pl.col("duration"))
            .otherwise(itm.default_duration_ms)
            .alias("duration_ms")
        )
    else:
        cat = cat.with_columns(pl.lit(itm.default_duration_ms, dtype=pl.Int64).alias("duration_ms"))
    if itm.author:
        author_ids, _ = ids_map(_text(cat.get_column("author")).filter(cat.get_column("author").is_not_null()))
        cat = (
            cat.with_columns(_text(pl.col("author")).alias("author"))
            .join(author_ids.rename({"source_id": "author", "id": "author_id"}), on="author", how="left")
            .with_columns(pl.col("author_id").fill_null(UNKNOWN_AUTHOR))
        )
    else:
        cat = cat.with_columns(pl.lit(UNKNOWN_AUTHOR, dtype=pl.Int64).alias("author_id"))
    if itm.category:
        c = _text(pl.col("category"))
        c = (
            c.str.split(itm.category_sep)
            .list.eval(
                pl.element().str.strip_chars().filter((pl.element() != "") & ~pl.element().is_in(list(itm.tags_drop)))
            )
            .list.first()
            if itm.category_sep
            else c
        )
        cat = cat.with_columns(c.fill_null(UNKNOWN_CATEGORY).replace("", UNKNOWN_CATEGORY).alias("category"))
    else:
        cat = cat.with_columns(pl.lit(UNKNOWN_CATEGORY).alias("category"))
    tag_lists = [_tag_list(cat, f"tags_{k}", itm.tags_sep, itm.tags_drop) for k in range(len(itm.tags))]
    cat = cat.with_columns(
        (
            pl.concat_list(tag_lists).list.unique(maintain_order=True)
            if tag_lists
            else pl.lit([], dtype=pl.List(pl.String))
        ).alias("tags")
    )
    if user_tags is not None:
        known = user_tags if cutoff is None else user_tags.filter(pl.col("ts") < cutoff)
        own = (
            cat.select("item_id", pl.col("tags").list.eval(pl.element().str.to_lowercase()).alias("tag"))
            .explode("tag")
            .drop_nulls()
        )
        top = (
            known.select("item_id", _text(pl.col("tag")).str.to_lowercase().alias("tag"))
            .drop_nulls("tag")
            .filter(pl.col("tag") != "")
            .join(own, on=["item_id", "tag"], how="anti")
            .group_by("item_id", "tag")
            .len()
            .sort(["item_id", "len", "tag"], descending=[False, True, False])
            .group_by("item_id", maintain_order=True)
            .agg(pl.col("tag").head(m.item_tags.top_n).alias("user_tags"))
        )
        cat = cat.join(top, on="item_id", how="left").with_columns(
            pl.concat_list("tags", pl.col("user_tags").fill_null(pl.lit([], dtype=pl.List(pl.String)))).alias("tags")
        )
        if cutoff is not None:
            why = "the given content cutoff" if content_cutoff is not None else "the embedding cutoff"
            notes.append(f"items: user tags written before {cutoff.isoformat()} only ({why}).")
    title = pl.concat_str(
        [_text(pl.col(f"title_{k}")) for k in range(len(itm.title))], separator=" - ", ignore_nulls=True
    )
    desc = (
        pl.concat_str(
            [_text(pl.col(f"desc_{k}")) for k in range(len(itm.description))], separator=". ", ignore_nulls=True
        )
        if itm.description
        else pl.lit(None, dtype=pl.String)
    )
    cat = cat.with_columns(
        title.fill_null("").alias("title"),
        pl.when(desc.str.len_chars() > 0).then(desc).otherwise(None).alias("ocr_text"),
        (_text(pl.col("transcript")) if itm.transcript else pl.lit(None, dtype=pl.String)).alias("asr_text"),
    )
    media_counts: dict[str, int] = {}
    cat = cat.with_columns(
        _media_column(cat, media_root, "image" if itm.image else None, itm.image_pattern, "cover_path", media_counts),
        _frames_column(cat, media_root, "frames" if itm.frames else None, itm.frames_sep, media_counts),
        _media_column(cat, media_root, "audio" if itm.audio else None, itm.audio_pattern, "audio_path", media_counts),
    )
    counts.update(media_counts)
    items = _select(cat.sort("item_id"), ITEMS)
    has_media = any(v is not None for v in (itm.image, itm.image_pattern, itm.frames, itm.audio, itm.audio_pattern))

    # ---- pass 2: positives, impressions, sessions and event ids per part; the log's popularity per item and day
    rows_parts, popularity_parts = [], []
    n_pos = n_logged_neg = n_users = dup_imp = 0
    for k in range(n_parts):
        inter = _load(cleaned[k]).join(user_ids.rename({"source_id": "user", "id": "user_id"}), on="user", how="left")
        inter = inter.drop("user", "item", "time", "_file")  # the source text is needed no more: free it early
        inter = inter.join(items.select("item_id", "duration_ms"), on="item_id", how="left").with_columns(
            _positive_expr(m).alias("positive")
        )
        logged = inter.select(
            "user_id",
            "item_id",
            "ts",
            "positive",
            "_row",
            (pl.col("watch") if im.watch_ms else pl.lit(None, dtype=pl.Int64)).alias("watch"),
            _text(pl.col("order")).alias("order") if im.order else pl.lit(None, dtype=pl.String).alias("order"),
            pl.lit(0, dtype=pl.Int8).alias("_src"),
        )
        del inter
        if imp_parts is not None:
            imp = _load(imp_cleaned[k]).with_columns(_text(pl.col("user")).alias("user"))
            imp = imp.join(user_ids.rename({"source_id": "user", "id": "user_id"}), on="user", how="left")
            imp = rejects.take(imp, pl.col("user_id").is_null(), "impressions", "unknown_user", src_p)
            imp = imp.select(
                "user_id",
                "item_id",
                "ts",
                pl.lit(False).alias("positive"),
                "_row",
                pl.lit(None, dtype=pl.Int64).alias("watch"),
                pl.lit(None, dtype=pl.String).alias("order"),
                pl.lit(1, dtype=pl.Int8).alias("_src"),
            )
            before = imp.height
            imp = imp.join(logged.select("user_id", "item_id", "ts"), on=["user_id", "item_id", "ts"], how="anti")
            dup_imp += before - imp.height
            logged = pl.concat([logged, imp])
        rows = _logged_rows(logged, m, items)
        del logged
        n_pos += rows.get_column("clicked").sum()
        n_logged_neg += rows.height - rows.get_column("clicked").sum()
        n_users += rows.get_column("user_id").n_unique()
        popularity_parts.append(
            rows.filter(pl.col("clicked"))
            .group_by("item_id", pl.col("ts").dt.date().alias("day"))
            .agg(pl.len().cast(pl.Int64).alias("positives"))
        )
        rows_parts.append(_keep(rows, spill / "rows" / f"{k}.parquet", n_parts))
    if imp_parts is not None:
        rejects.check("impressions", total_imp, src_p)
        counts["impressions_duplicate_of_interaction"] = dup_imp
    popularity = pl.concat(popularity_parts).group_by("item_id", "day").agg(pl.col("positives").sum())
    del popularity_parts

    # ---- pass 3: sampled negatives, then each part's interactions, feed requests and user activity
    negatives_stats = None
    if m.negatives.per_positive > 0:
        echo(f"data: sampling {m.negatives.per_positive} negatives per positive ({m.negatives.sampler})")
    out_parts: dict[str, list] = {"interactions": [], "feed_requests": [], "user_activity": []}
    for k in range(n_parts):
        rows = _load(rows_parts[k])
        all_rows = rows
        if m.negatives.per_positive > 0:
            neg_rows, stats = _negatives(
                rows, items, m, popularity if n_parts > 1 else None, k if n_parts > 1 else None
            )
            negatives_stats = _add_stats(negatives_stats, stats)
            all_rows = pl.concat([rows, neg_rows]).sort(["user_id", "ts", "event_id"])
        interactions = _select(all_rows, INTERACTIONS)
        tables_k = {
            "interactions": interactions,
            "feed_requests": feed_requests(interactions),
            "user_activity": user_activity(_select(rows, INTERACTIONS)),
        }
        for name, df in tables_k.items():
            out_parts[name].append(_keep(df, spill / name / f"{k}.parquet", n_parts))
        del rows, all_rows, interactions, tables_k
    n_logged_neg = int(n_logged_neg)
    n_pos = int(n_pos)
    impressions_kind = (
        "logged+sampled" if negatives_stats and n_logged_neg else "sampled" if negatives_stats else "logged"
    )

    # ---- searches
    if searches is not None:
        sm = m.searches
        s = _stable_ties(searches, "user_id", ["_row"])
        search_id = (
            pl.format(f"{m.name}-q{{}}", _text(pl.col("search")))
            if sm.search
            else pl.format(f"{m.name}-q{{}}-{{}}", "user_id", pl.col("ts").rank("dense").over("user_id"))
        )
        clicked = (
            _text(pl.col("clicked")).str.to_lowercase().is_in(["1", "true", "yes", "y", "t", "1.0"])
            if sm.clicked
            else pl.lit(True)
        )
        position = (
            pl.col("position").cast(pl.Int32, strict=False).fill_null(0) if sm.position else pl.lit(0, dtype=pl.Int32)
        )
        searches_df = _select(
            s.with_row_index("_seq").select(
                pl.format(f"{m.name}-r{{}}", "_seq").alias("event_id"),
                search_id.alias("search_id"),
                "user_id",
                "ts",
                _text(pl.col("query")).alias("query"),
                "item_id",
                position.alias("position"),
                clicked.alias("clicked"),
            ),
            SEARCHES,
        )
    else:
        searches_df = _empty(SEARCHES)
        notes.append("searches: none mapped; the searches table is empty, so there are no q2i pairs.")

    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    counts["items"] = write_table(_slices([items]), ITEMS, out / "items")
    for name, schema in (("interactions", INTERACTIONS), ("feed_requests", FEED_REQUESTS)):
        counts[name] = write_table(_slices(out_parts[name]), schema, out / name)
    counts["searches"] = write_table(_slices([searches_df]), SEARCHES, out / "searches")
    counts["user_activity"] = write_table(_slices(out_parts["user_activity"]), USER_ACTIVITY, out / "user_activity")
    shutil.rmtree(spill, ignore_errors=True)
    if rejects.frames:
        write_table(pl.concat(rejects.frames).to_arrow(), QUARANTINE, out / "rejected")
    if not users_int:
        write_table(user_ids.to_arrow(), _ID_MAP, out / "id_map" / "users")
    if not items_int:
        write_table(item_ids.to_arrow(), _ID_MAP, out / "id_map" / "items")
    counts["users"] = n_users
    counts["positives"] = n_pos
    counts["logged_non_positive"] = n_logged_neg

    now = max([last, *extra_last, *(e.get_column("ts").max() for e in extra_events[1:] if e.height)])
    notes += _notes(m, users_int, items_int)
    manifest = {
        "dataset": "logs",
        "name": m.name,
        "source": str(root),
        "start_date": first.date().isoformat(),
        "days": (last.date() - first.date()).days + 1,
        "now": now.isoformat(),
        "catalogue_start": items.get_column("created_ts").min().isoformat(),
        "media": {"root": str(media_root), "mode": "files"} if has_media else {"root": None, "mode": "none"},
        "impressions": impressions_kind,
        "positives": asdict(m.positives),
        "negatives": negatives_stats,
        "content_cutoff": cutoff.isoformat() if cutoff else None,
        "ids": {
            "users": "source integers" if users_int else "dense (id_map/users)",
            "items": "source integers" if items_int else "dense (id_map/items)",
        },
        "rejected": rejects.counts,
        "counts": counts,
        "mapping": asdict(m),
        "notes": notes,
    }
    write_json_atomic(manifest_path, manifest)
    echo(
        f"data: {counts['interactions']:,} interactions ({n_pos:,} positive), {counts['items']:,} items, "
        f"{counts['users']:,} users; impressions {impressions_kind}"
    )
    return LogsResult(out.resolve(), manifest, counts)


_ID_MAP = TableSchema(
    name="id_map",
    columns=(
        Column("source_id", "string", doc="the id in the source"),
        Column("id", "int64", doc="the id in the contracts"),
    ),
    key=("source_id",),
    doc="Source ids (text) and the dense int64 ids the contracts use.",
)


def _notes(m: LogsMapping, users_int: bool, items_int: bool) -> list[str]:
    p, n = m.positives, m.negatives
    cond = [f"event in {list(p.event_types)}"] if p.event_types else []
    cond += [f"rating >= {p.rating_threshold:g}"] if p.rating_threshold is not None else []
    cond += ["label true"] if p.label else []
    cond += [f"watch >= {p.watch_fraction:g} x duration"] if p.watch_fraction is not None else []
    return [
        f"interactions: positive = {' and '.join(cond) if cond else 'every logged row (a positive-only log)'}; "
        "clicked = finished = liked = positive.",
        f"interactions: surface '{m.surface}', position 0, propensity 1.0 (no logging policy: off-policy estimates "
        "are not meaningful).",
        f"interactions: a new session after {m.session_gap_s} s; ties in time keep the "
        f"{'order column' if m.interactions.order else 'file order'} (+1 us per tied event).",
        (
            f"negatives: {n.per_positive} sampled per positive ({n.sampler}"
            + (f"^{n.alpha:g}" if n.sampler == "popularity" else "")
            + f", seed {n.seed}); never a user's own item, "
            "never an item before its creation."
        )
        if n.per_positive
        else "negatives: none sampled.",
        f"ids: users {'kept (integers)' if users_int else 'dense, see id_map/users'}; items "
        f"{'kept (integers)' if items_int else 'dense, see id_map/items'}.",
        "feed_requests: a session's items with uniform propensities (a placeholder).",
        "user_activity: logged rows only (sampled negatives are not activity).",
    ]


def _empty(schema: TableSchema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema.to_polars())


def _select(df: pl.DataFrame, schema: TableSchema) -> pl.DataFrame:
    return df.select([pl.col(n).cast(t) for n, t in schema.to_polars().items()])


def feed_requests(interactions: pl.DataFrame) -> pl.DataFrame:
    """FEED_REQUESTS rows: one per request_id, candidates = its items in time order, uniform propensities."""
    if interactions.height == 0:
        return _empty(FEED_REQUESTS)
    req = (
        interactions.sort(["user_id", "ts", "item_id"])
        .group_by("request_id", maintain_order=True)
        .agg(
            pl.col("user_id").first(),
            pl.col("ts").min(),
            pl.col("surface").first(),
            pl.col("item_id").alias("candidate_item_ids"),
        )
        .with_columns(
            pl.col("candidate_item_ids")
            .list.eval(pl.element().cast(pl.Float64()) * 0.0 + 1.0 / pl.len())
            .alias("candidate_propensities")
        )
    )
    return _select(req, FEED_REQUESTS)


def user_activity(interactions: pl.DataFrame) -> pl.DataFrame:
    """USER_ACTIVITY rows: one per (user, UTC day) with at least one interaction."""
    if interactions.height == 0:
        return _empty(USER_ACTIVITY)
    act = (
        interactions.with_columns(pl.col("ts").dt.date().alias("activity_date"))
        .group_by("user_id", "activity_date")
        .agg(
            pl.col("request_id").n_unique().alias("sessions"),
            pl.len().alias("impressions"),
            pl.col("watch_ms").sum().alias("watch_ms"),
        )
        .sort(["user_id", "activity_date"])
    )
    return _select(act, USER_ACTIVITY)
