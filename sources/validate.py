"""Validation of a data set's log tables against the contracts, with a counted quarantine.

`validate_dataset(data_dir, out_dir, cfg)` checks every file of every log table (a missing or mistyped column is a
`SchemaError` naming the column and the file; an empty `items` or `interactions` table is an `EmptyTableError`
naming it), then reads the tables, assigns each bad row one reason (the first rule it breaks, in the order of
`REASONS`), repairs what can be repaired in the rows it keeps (`REPAIRS`: free text that is not valid UTF-8, unsafe
media references), writes the clean rows, a `quarantine/` table (table, source, reason, row as JSON: one row per
rejected row and per dropped media reference) and a `validation.json` of counts. It raises `TooManyRejectedError`
when any table's rejected share exceeds `ValidationConfig.max_rejected_share` (repairs do not count: their rows are
kept).

Bytes that are not valid UTF-8 in a string column never reach the clean tables: in free text (`TEXT_COLUMNS`:
titles, OCR / ASR text, tags, categories, queries) they become U+FFFD and the row is kept (counted under
`repaired["invalid_utf8"]`); in a media reference the reference is dropped (`unsafe_media_path`); in any other
string column (event, request and search ids, surfaces) the row is rejected (`invalid_utf8`).

No event table is held whole: only the catalogue (`items`) is read whole, its valid rows being the context of the
other tables' rules. Every other table streams through `validate_stream` in batches of at most
`ValidationConfig.batch_rows` rows, twice. Every rule but `duplicate_key` looks at one row (and the catalogue), so
the first pass judges them batch by batch and spills, of the rows that pass, only the key, the time and the
position, partitioned by the key's hash, to `out_dir/.staging/`; the duplicates are then found one partition at a
time (`_duplicate_rows`). The second pass judges each batch again with its duplicates marked, writes its valid rows
and keeps its (few) quarantine rows. The result is the same as judging each table whole (`split_valid`,
`assign_reasons`): the same rows kept, in input order, the same reasons and counts.

Validation first removes what an earlier run published in `out_dir` (clean tables, quarantine, manifest and
counts), so a run that fails leaves no `_SUCCESS` marker that later commands could mistake for clean data: the
clean event tables are written under `out_dir/.staging/` and moved into place only once every check has passed (a
failed run removes them).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from core import contracts as K
from core.io import (
    SUCCESS,
    iter_table,
    read_dataset_manifest,
    read_table,
    table_rows,
    write_json_atomic,
    write_table,
)
from core.media import media_ref_problem

REASONS: dict[str, str] = {
    "null_value": "a column the contract marks non-nullable is null",
    "invalid_utf8": "an id or surface column (not free text, not a media reference) holds bytes that are not UTF-8",
    "negative_duration": "a duration or watch time is negative (or an item's duration is not positive)",
    "out_of_range": "a value is outside its allowed range (propensity, position, counters)",
    "ts_in_future": "the timestamp is later than the data set's end plus the allowed clock skew",
    "ts_before_catalogue": "the timestamp precedes the catalogue's first item",
    "unknown_item_id": "the item id is not in the (valid) catalogue",
    "ts_before_item_created": "the event precedes its item's creation (beyond the allowed clock skew)",
    "duplicate_key": "another row has the same key (event id); the earliest is kept",
}
"""Every rejection reason, in the order rules are applied (a row gets the first one it breaks)."""

REPAIRS: dict[str, str] = {
    "invalid_utf8": "free text held bytes that are not valid UTF-8: they were replaced by U+FFFD (one per value)",
    "unsafe_media_path": (
        "a media reference was absolute, held '..' or bytes that are not valid UTF-8, or was otherwise unsafe: "
        "it was dropped (a cover or audio path set to null, a frame left out), the item kept (one per reference)"
    ),
}
"""Every repair of a kept row, counted in `TableReport.repaired`; a repaired row is not a rejected one."""

TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "items": ("category", "title", "ocr_text", "asr_text", "tags"),
    "searches": ("query",),
}
"""Free-text columns per table: bytes that are not valid UTF-8 there are replaced, and the row kept."""

MEDIA_COLUMNS = ("cover_path", "frame_paths", "audio_path")
"""The catalogue's media references: an unsafe one is dropped, and the item kept."""

REQUIRED_TABLES = ("items", "interactions")
"""Tables that must hold rows: without them no later stage has anything to learn from."""


class TooManyRejectedError(RuntimeError):
    """More rows were rejected than the configured share allows."""


class EmptyTableError(ValueError):
    """A required table (see REQUIRED_TABLES) has no rows, or none left after validation."""


@dataclass(frozen=True)
class ValidationConfig:
    max_rejected_share: float = 0.01  # fail when more than this share of one table's rows is rejected (0..1)
    clock_skew_s: int = 300  # tolerance (seconds) for timestamps slightly after `now` or before item creation
    now: datetime | None = None  # end of the data; None: the manifest's "now", else the wall clock
    batch_rows: int = 2_000_000  # rows of a log table judged at once (the catalogue is read whole): bounds memory


@dataclass
class TableReport:
    table: str
    source: str
    rows_in: int
    rows_ok: int
    rejected: dict[str, int] = field(default_factory=dict)  # reason (REASONS) -> rows rejected
    repaired: dict[str, int] = field(default_factory=dict)  # repair (REPAIRS) -> values fixed in kept rows

    @property
    def rejected_share(self) -> float:
        return 0.0 if self.rows_in == 0 else (self.rows_in - self.rows_ok) / self.rows_in


@dataclass
class ValidationResult:
    out_dir: Path
    tables: dict[str, TableReport]

    @property
    def rejected_total(self) -> int:
        return sum(r.rows_in - r.rows_ok for r in self.tables.values())


# ------------------------------------------------------------------------------------------------------------
# Rules: each returns a boolean polars expression that is True for a BAD row
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    now: datetime  # latest acceptable event time (skew already added)
    catalogue_start: datetime | None  # earliest item creation; None when the catalogue is empty
    skew: timedelta
    items: pl.DataFrame | None  # valid catalogue (item_id, created_ts) for event tables


def _nulls(schema: K.TableSchema) -> pl.Expr:
    cols = [pl.col(c.name).is_null() for c in schema if not c.nullable]
    return pl.any_horizontal(cols) if cols else pl.lit(False)


Rule = Callable[[pl.DataFrame, Context], pl.Expr | pl.Series | None]


def _ts_rules(col: str) -> dict[str, Rule]:
    return {
        "ts_in_future": lambda df, ctx: pl.col(col) > ctx.now,
        "ts_before_catalogue": lambda df, ctx: (
            pl.col(col) < ctx.catalogue_start - ctx.skew if ctx.catalogue_start else None
        ),
    }


def _range(expr: pl.Expr) -> Rule:
    return lambda df, ctx: expr


def _item_rules(col: str = "item_id", ts: str | None = "ts") -> dict[str, Rule]:
    rules: dict[str, Rule] = {
        "unknown_item_id": lambda df, ctx: ~pl.col(col).is_in(ctx.items["item_id"].implode()),
    }
    if ts is not None:
        rules["ts_before_item_created"] = lambda df, ctx: pl.col(ts) < pl.col("_item_created_ts") - ctx.skew
    return rules


TABLE_RULES: dict[str, dict[str, Rule]] = {
    "items": {
        "negative_duration": _range(pl.col("duration_ms") <= 0),
        "ts_in_future": lambda df, ctx: pl.col("created_ts") > ctx.now,
    },
    "interactions": {
        "negative_duration": _range(pl.col("watch_ms") < 0),
        "out_of_range": _range((pl.col("position") < 0) | (pl.col("propensity") <= 0) | (pl.col("propensity") > 1)),
        **_ts_rules("ts"),
        **_item_rules("item_id", "ts"),
    },
    "feed_requests": {
        "out_of_range": _range(
            (pl.col("candidate_item_ids").list.len() != pl.col("candidate_propensities").list.len())
            | ((pl.col("candidate_propensities").list.sum() - 1.0).abs() > 1e-6)
            | (pl.col("candidate_propensities").list.min() < 0)
        ),
        **_ts_rules("ts"),
    },
    "searches": {
        "out_of_range": _range(pl.col("position") < 0),
        **_ts_rules("ts"),
        **_item_rules("item_id", "ts"),
    },
    "user_activity": {
        "negative_duration": _range(pl.col("watch_ms") < 0),
        "out_of_range": _range((pl.col("sessions") < 1) | (pl.col("impressions") < 0)),
        "ts_in_future": lambda df, ctx: pl.col("activity_date") > pl.lit(ctx.now.date()),
        "ts_before_catalogue": lambda df, ctx: (
            pl.col("activity_date") < pl.lit(ctx.catalogue_start.date()) if ctx.catalogue_start else None
        ),
    },
}


def _sort_key(schema: K.TableSchema) -> list[str]:
    for c in ("ts", "created_ts", "activity_date"):
        if c in schema.names:
            return [c]
    return []


def _judge(df: pl.DataFrame, schema: K.TableSchema, ctx: Context, offset: int = 0) -> pl.DataFrame:
    """`df` with `_row` (its rows' positions in the whole table: `offset` onwards) and `_reason`: null, or the first
    rule (in REASONS order) the row breaks among every rule but `duplicate_key`. Each of those rules looks at one
    row (and the catalogue in `ctx`), so a table can be judged in batches."""
    df = df.with_row_index("_row", offset=offset)
    if "item_id" in df.columns and ctx.items is not None and schema.name != "items":
        df = df.join(
            ctx.items.select("item_id", pl.col("created_ts").alias("_item_created_ts")),
            on="item_id",
            how="left",
        )
    rules: dict[str, Rule] = {
        "null_value": lambda d, c: _nulls(schema),
        "invalid_utf8": lambda d, c: pl.col(_INVALID_UTF8) if _INVALID_UTF8 in d.columns else None,
        **TABLE_RULES.get(schema.name, {}),
    }
    reason = pl.lit(None, dtype=pl.String)
    for name in reversed(list(REASONS)):  # build a when-chain whose first branch is the first reason
        if name not in rules:
            continue
        cond = rules[name](df, ctx)
        if cond is None:
            continue
        if isinstance(cond, pl.Series):
            cond = pl.lit(cond)
        reason = pl.when(cond.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    df = df.with_columns(_reason=reason)
    return df.sort("_row").drop([c for c in ("_item_created_ts",) if c in df.columns])


def _duplicate_columns(schema: K.TableSchema) -> list[str]:
    """What `_duplicates` needs of a passing row: its key, its time and `_row`."""
    return list(dict.fromkeys([*schema.key, *_sort_key(schema), "_row"]))


def _duplicates(passing: pl.DataFrame, schema: K.TableSchema) -> pl.Series:
    """`_row` of every row of `passing` (the rows that broke no other rule, with at least `_duplicate_columns`)
    whose key an earlier row holds: the earliest by time, then by `_row` (input order), is the one kept."""
    ok = passing.sort(_sort_key(schema) + ["_row"])
    return ok.filter(~pl.struct(list(schema.key)).is_first_distinct())["_row"]


def _mark_duplicates(judged: pl.DataFrame, dup_rows: pl.Series) -> pl.DataFrame:
    return judged.with_columns(
        _reason=pl.when(pl.col("_row").is_in(dup_rows.implode()))
        .then(pl.lit("duplicate_key"))
        .otherwise(pl.col("_reason"))
    )


def assign_reasons(df: pl.DataFrame, schema: K.TableSchema, ctx: Context) -> pl.DataFrame:
    """Adds a `_reason` column: null for a valid row, else the first rule (in REASONS order) it breaks.

    Duplicate keys are judged among the rows that passed every other rule; the earliest (by time, then
    input order) is kept.
    """
    df = _judge(df, schema, ctx)
    if schema.key:
        df = _mark_duplicates(df, _duplicates(df.filter(pl.col("_reason").is_null()), schema))
    return df.drop("_row")


def _quarantine_rows(bad: pl.DataFrame, table: str, source: str) -> pl.DataFrame:
    rows = bad.drop("_reason").to_dicts()
    return _quarantine_frame(table, source, bad["_reason"].to_list(), rows)


def _quarantine_frame(table: str, source: str, reasons: list[str], rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "table": [table] * len(rows),
            "source": [source] * len(rows),
            "reason": reasons,
            "row_json": [json.dumps(r, default=str, sort_keys=True) for r in rows],
        },
        schema={"table": pl.String, "source": pl.String, "reason": pl.String, "row_json": pl.String},
    )


# ------------------------------------------------------------------------------------------------------------
# Repairs of kept rows: text that is not valid UTF-8, unsafe media references
# ------------------------------------------------------------------------------------------------------------

_INVALID_UTF8 = "_invalid_utf8"  # per row: an id or surface column held bytes that are not valid UTF-8
_REPAIRED_UTF8 = "_repaired_utf8"  # per row: free-text values whose invalid bytes were replaced by U+FFFD


def _repair_chunk(chunk: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The chunk of a string or list<string> column with invalid UTF-8 replaced by U+FFFD, and per row whether
    it held any (the fast path, for a chunk that validates, copies nothing)."""
    try:
        chunk.validate(full=True)
        return chunk, np.zeros(len(chunk), dtype=bool)
    except pa.ArrowInvalid:
        pass

    def decode(b: bytes | None) -> tuple[str | None, bool]:
        if b is None:
            return None, False
        try:
            return b.decode("utf-8"), False
        except UnicodeDecodeError:
            return b.decode("utf-8", errors="replace"), True

    values: list[Any] = []
    bad = np.zeros(len(chunk), dtype=bool)
    if pa.types.is_list(chunk.type):
        for i, row in enumerate(chunk.cast(pa.list_(pa.binary())).to_pylist()):
            if row is None:
                values.append(None)
                continue
            decoded = [decode(b) for b in row]
            values.append([v for v, _ in decoded])
            bad[i] = any(flag for _, flag in decoded)
    else:
        for i, b in enumerate(chunk.view(pa.binary()).to_pylist()):
            value, bad[i] = decode(b)
            values.append(value)
    return pa.array(values, type=chunk.type), bad


def repair_utf8(table: pa.Table, schema: K.TableSchema) -> pl.DataFrame:
    """The table as polars, with every byte sequence that is not valid UTF-8 replaced by U+FFFD, and two helper
    columns: `_invalid_utf8` (an id or surface column held such bytes: the row is rejected) and `_repaired_utf8`
    (how many free-text values were repaired; media references are judged afterwards by `drop_unsafe_media`)."""
    invalid = np.zeros(table.num_rows, dtype=bool)
    repaired = np.zeros(table.num_rows, dtype=np.int64)
    text = TEXT_COLUMNS.get(schema.name, ())
    for c in schema:
        if c.dtype not in ("string", "list<string>"):
            continue
        col = table.column(c.name)
        parts = [_repair_chunk(chunk) for chunk in col.chunks]
        bad = np.concatenate([b for _, b in parts]) if parts else np.zeros(0, dtype=bool)
        if not bad.any():
            continue
        fixed = pa.chunked_array([a for a, _ in parts], type=col.type)
        table = table.set_column(table.schema.get_field_index(c.name), table.schema.field(c.name), fixed)
        if c.name in text:
            repaired += bad
        elif c.name not in MEDIA_COLUMNS:
            invalid |= bad
    return pl.from_arrow(table).with_columns(
        pl.Series(_INVALID_UTF8, invalid, dtype=pl.Boolean), pl.Series(_REPAIRED_UTF8, repaired, dtype=pl.Int64)
    )


def drop_unsafe_media(items: pl.DataFrame, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items without their unsafe media references (a cover or audio path set to null, a frame left out of
    `frame_paths`), and one quarantine row (reason `unsafe_media_path`) per dropped reference.

    A lexical check (`core.media.media_ref_problem`), no file access: the item and its events are kept.
    """
    dropped: list[dict[str, Any]] = []

    def keep(item_id: int, column: str, ref: str | None) -> bool:
        problem = media_ref_problem(ref)
        if problem:
            dropped.append({"item_id": item_id, "column": column, "ref": ref, "problem": problem})
        return problem is None

    ids = items["item_id"].to_list()
    cover = [r if keep(i, "cover_path", r) else None for i, r in zip(ids, items["cover_path"].to_list(), strict=True)]
    audio = [r if keep(i, "audio_path", r) else None for i, r in zip(ids, items["audio_path"].to_list(), strict=True)]
    frames = [
        [r for r in refs if keep(i, "frame_paths", r)] if refs is not None else None
        for i, refs in zip(ids, items["frame_paths"].to_list(), strict=True)
    ]
    if not dropped:
        return items, _quarantine_frame("items", source, [], [])
    items = items.with_columns(
        pl.Series("cover_path", cover, dtype=pl.String),
        pl.Series("audio_path", audio, dtype=pl.String),
        pl.Series("frame_paths", frames, dtype=pl.List(pl.String)),
    )
    return items, _quarantine_frame("items", source, ["unsafe_media_path"] * len(dropped), dropped)


def split_valid(
    df: pl.DataFrame, schema: K.TableSchema, ctx: Context, source: str
) -> tuple[pl.DataFrame, pl.DataFrame, TableReport]:
    """(valid rows, quarantine rows, report) for one table (as read by `repair_utf8`, or any frame of its columns).

    Rows are judged first; the repairs (REPAIRS) are then applied to, and counted on, the rows that are kept.
    """
    good, bad, rejected, repaired_utf8 = _split(assign_reasons(df, schema, ctx), schema.name, source)
    repaired = {"invalid_utf8": repaired_utf8} if repaired_utf8 else {}
    quarantine = [bad]
    if schema.name == "items":
        good, refs = drop_unsafe_media(good, source)
        if refs.height:
            repaired["unsafe_media_path"] = refs.height
        quarantine.append(refs)
    report = TableReport(
        schema.name, source, df.height, good.height, rejected=rejected, repaired=dict(sorted(repaired.items()))
    )
    return good, pl.concat(quarantine), report


def _split(judged: pl.DataFrame, table: str, source: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int], int]:
    """(kept rows without the helper columns, their quarantine rows, rows rejected per reason, free-text values
    repaired in the kept rows) of frame judged by `assign_reasons` (or `_judge`, with `_row`)."""
    helpers = [c for c in (_INVALID_UTF8, _REPAIRED_UTF8, "_row") if c in judged.columns]
    good = judged.filter(pl.col("_reason").is_null()).drop("_reason")
    bad = judged.filter(pl.col("_reason").is_not_null()).drop(helpers)
    counts = dict(sorted(bad.group_by("_reason").len().iter_rows())) if bad.height else {}
    repaired = int(good[_REPAIRED_UTF8].sum()) if _REPAIRED_UTF8 in good.columns else 0
    return good.drop(helpers), _quarantine_rows(bad, table, source), counts, repaired


_MAX_KEY_PARTITIONS = 256
"""At most this many partitions of a table's keys (`_duplicate_rows`): beyond `batch_rows` times as many rows, a
partition holds more than `batch_rows` keys."""


def _duplicate_rows(
    judged: Iterable[pl.DataFrame], schema: K.TableSchema, rows: int, batch_rows: int, work: Path
) -> np.ndarray:
    """The positions (`_row`, sorted) of the rows of a table that `duplicate_key` rejects, from its batches as
    judged by `_judge`: `_duplicates` over the whole table, without holding all its keys at once.

    The key, time and position (`_duplicate_columns`) of each row that passed every other rule are spilled to
    `work`, into one of about `rows / batch_rows` partitions by the hash of the key; every copy of a key lands in
    the same partition, so `_duplicates` on each partition in turn finds every duplicate.
    """
    parts = max(1, min(_MAX_KEY_PARTITIONS, -(-rows // batch_rows)))
    cols = _duplicate_columns(schema)
    work.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for df in judged:
            passing = df.filter(pl.col("_reason").is_null()).select(cols)
            passing = passing.with_columns(_part=passing.select(schema.key).hash_rows() % parts)
            for (part,), keys in passing.partition_by("_part", as_dict=True, include_key=False).items():
                t = keys.to_arrow()
                if part not in writers:
                    writers[part] = pa.ipc.new_stream(str(work / f"keys-{part}.arrows"), t.schema)
                writers[part].write_table(t)
    finally:
        for w in writers.values():
            w.close()
    found = [
        _duplicates(pl.from_arrow(pa.ipc.open_stream(str(work / f"keys-{part}.arrows")).read_all()), schema)
        for part in sorted(writers)
    ]
    return np.sort(np.concatenate([d.to_numpy().astype(np.int64) for d in found])) if found else np.zeros(0, np.int64)


def validate_stream(
    path: Path,
    schema: K.TableSchema,
    ctx: Context,
    source: str,
    batch_rows: int,
    dest: Path,
    rows: int | None = None,
) -> tuple[pl.DataFrame, TableReport]:
    """`split_valid` of the table at `path` (an event table: no media references are judged) in batches of at most
    `batch_rows` rows: the valid rows are written to `dest` (`write_table`, chunk by chunk, in input order), the
    quarantine rows and the report returned. The result is `split_valid`'s on the whole table.

    Two passes over the table. The first judges every rule but `duplicate_key` (each looks at one row) and finds
    the duplicates among the rows that pass them (`_duplicate_rows`, which spills their keys beside `dest`); the
    second judges each batch again, marks its duplicates and splits it. Neither holds more than one batch of whole
    rows. `rows`: the table's row count where the caller has it (else read from the parquet footers).
    """

    def judged_batches() -> Iterator[tuple[int, int, pl.DataFrame]]:
        offset = 0
        for chunk in iter_table(path, schema, batch_rows):
            yield offset, offset + chunk.num_rows, _judge(repair_utf8(chunk, schema), schema, ctx, offset)
            offset += chunk.num_rows

    dup_rows = np.zeros(0, dtype=np.int64)
    if schema.key:
        work = dest.parent / f".{dest.name}.keys"
        try:
            judged = (j for _, _, j in judged_batches())
            n = table_rows(path, schema) if rows is None else rows
            dup_rows = _duplicate_rows(judged, schema, n, batch_rows, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    rows_in = rows_ok = repaired = 0
    rejected: Counter[str] = Counter()
    quarantine: list[pl.DataFrame] = []

    def clean() -> Iterator[pa.Table]:
        nonlocal rows_in, rows_ok, repaired
        for start, stop, judged in judged_batches():
            dups = dup_rows[np.searchsorted(dup_rows, start) : np.searchsorted(dup_rows, stop)]
            if len(dups):
                judged = _mark_duplicates(judged, pl.Series("_row", dups, dtype=judged.schema["_row"]))
            good, bad, counts, fixed = _split(judged, schema.name, source)
            rows_in += stop - start
            rows_ok += good.height
            repaired += fixed
            rejected.update(counts)
            if bad.height:
                quarantine.append(bad)
            if good.height:
                yield good.to_arrow()

    write_table(clean(), schema, dest)
    report = TableReport(
        schema.name,
        source,
        rows_in,
        rows_ok,
        rejected=dict(sorted(rejected.items())),
        repaired={"invalid_utf8": repaired} if repaired else {},
    )
    return pl.concat([_quarantine_frame(schema.name, source, [], []), *quarantine]), report


def _read(path: Path, schema: K.TableSchema) -> pl.DataFrame:
    return repair_utf8(read_table(path, schema), schema)


def _manifest_now(data_dir: Path) -> datetime | None:
    manifest = read_dataset_manifest(data_dir) or {}
    now = manifest.get("now")
    if not now:
        return None
    try:
        return datetime.fromisoformat(now).astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{data_dir / 'manifest.json'}: 'now' is not an ISO timestamp ({exc})") from None


def _write_manifest(data_dir: Path, out_dir: Path, now: datetime, reports: dict[str, TableReport]) -> None:
    """Copies the source manifest, pointing its media root at the source's media (validation copies no media):
    relative to `out_dir` when the media lie beside it (a run directory moves with its data), else absolute."""
    manifest = read_dataset_manifest(data_dir) or {"dataset": "unknown"}
    media = dict(manifest.get("media") or {})
    if media.get("root"):
        root, home = (data_dir / media["root"]).resolve(), out_dir.resolve().parent
        media["root"] = os.path.relpath(root, out_dir.resolve()) if root.is_relative_to(home) else str(root)
    manifest.update(
        media=media,
        now=now.isoformat(),
        validated_from=str(data_dir.resolve()),
        counts={k: r.rows_ok for k, r in reports.items()},
    )
    write_json_atomic(out_dir / "manifest.json", manifest)


_PUBLISHED = (*K.LOG_TABLES, "quarantine")
"""The tables validation writes in its output directory (beside validation.json and manifest.json)."""


def _unpublish(data_dir: Path, out_dir: Path) -> None:
    """Removes what an earlier validation wrote in `out_dir` (each table's `_SUCCESS` marker first), so that a run
    that fails leaves nothing a later command would take for clean data."""
    src = data_dir.resolve()
    for name in _PUBLISHED:
        if src.is_relative_to((out_dir / name).resolve()) or src == out_dir.resolve():
            raise ValueError(f"validation output {out_dir} overlaps its input {data_dir}: choose another --out")
    for name in _PUBLISHED:
        table = out_dir / name
        if table.is_dir():
            (table / SUCCESS).unlink(missing_ok=True)
            shutil.rmtree(table)
    for name in ("manifest.json", "validation.json"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / _STAGING, ignore_errors=True)  # left by a run that was killed


_STAGING = ".staging"
"""Where validation writes the clean event tables (in `out_dir`) until every check has passed."""


def _check_required(rows: dict[str, int], data_dir: Path, what: str, hint: str) -> None:
    empty = [name for name in REQUIRED_TABLES if rows[name] == 0]
    if empty:
        raise EmptyTableError(
            "; ".join(f"table {name!r} ({data_dir / name}) has {what}" for name in empty) + f". {hint}"
        )


def validate_dataset(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ValidationConfig = ValidationConfig()
) -> ValidationResult:
    """Validates every log table of `data_dir`; writes clean tables, `quarantine/` and `validation.json`."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.batch_rows < 1:
        raise ValueError(f"validation batch_rows must be at least 1, got {cfg.batch_rows}")
    _unpublish(data_dir, out_dir)
    now = cfg.now or _manifest_now(data_dir) or datetime.now(UTC)
    skew = timedelta(seconds=cfg.clock_skew_s)
    # every file's columns are checked, and the tables' rows counted, before any row is read
    rows_in = {name: table_rows(data_dir / name, K.ALL_TABLES[name]) for name in K.LOG_TABLES}
    _check_required(rows_in, data_dir, "no rows", "A data set needs items and interactions; nothing was validated.")
    reports: dict[str, TableReport] = {}
    quarantined: list[pl.DataFrame] = []

    items_src = data_dir / "items"
    ctx = Context(now=now + skew, catalogue_start=None, skew=skew, items=None)
    items, q, reports["items"] = split_valid(_read(items_src, K.ITEMS), K.ITEMS, ctx, str(items_src))
    quarantined.append(q)
    start = items["created_ts"].min() if items.height else None
    ctx = Context(now=now + skew, catalogue_start=start, skew=skew, items=items.select("item_id", "created_ts"))
    staging = out_dir / _STAGING
    try:
        # The event tables stream through in batches, their clean rows to `staging` (published below).
        for name in K.LOG_TABLES:
            if name == "items":
                continue
            schema = K.ALL_TABLES[name]
            src = data_dir / name
            q, reports[name] = validate_stream(
                src, schema, ctx, str(src), cfg.batch_rows, staging / name, rows=rows_in[name]
            )
            quarantined.append(q)

        # The quarantine and the counts are written whatever happens, so a failed run can be inspected.
        write_table(pl.concat(quarantined).to_arrow(), K.QUARANTINE, out_dir / "quarantine")
        summary = {
            "data_dir": str(data_dir),
            "now": now.isoformat(),
            "max_rejected_share": cfg.max_rejected_share,
            "tables": {k: {**asdict(r), "rejected_share": r.rejected_share} for k, r in reports.items()},
        }
        write_json_atomic(out_dir / "validation.json", summary)
        over = {k: r for k, r in reports.items() if r.rejected_share > cfg.max_rejected_share}
        if over:
            detail = "; ".join(
                f"{k}: {r.rows_in - r.rows_ok} of {r.rows_in} rows ({r.rejected_share:.2%}) {r.rejected} "
                f"from {r.source}"
                for k, r in over.items()
            )
            raise TooManyRejectedError(
                f"rejected share above the limit {cfg.max_rejected_share:.2%} — {detail}. "
                f"Rejected rows are in {out_dir / 'quarantine'}; raise validation.max_rejected_share to accept them."
            )
        rows_ok = {k: r.rows_ok for k, r in reports.items()}
        _check_required(rows_ok, data_dir, "no valid rows left", f"Rejected rows are in {out_dir / 'quarantine'}.")
        write_table(items.to_arrow(), K.ITEMS, out_dir / "items")
        for name in K.LOG_TABLES:
            if name != "items":
                (staging / name).rename(out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_manifest(data_dir, out_dir, now, reports)
    return ValidationResult(out_dir=out_dir, tables=reports)
