"""Validation of a data set's log tables against the contracts, with a counted quarantine.

`validate_dataset(data_dir, out_dir, cfg)` reads every log table (a missing or mistyped column is a
`SchemaError` naming the column and the file), assigns each bad row one reason (the first rule it breaks, in
the order of `REASONS`), writes the clean rows and a `quarantine/` table (table, source, reason, row as JSON),
and a `validation.json` of counts. It raises `TooManyRejectedError` when any table's rejected share exceeds
`ValidationConfig.max_rejected_share`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from jobs import contracts as K
from jobs.io import read_table, write_json_atomic, write_table
from jobs.media import media_ref_problem

REASONS: dict[str, str] = {
    "null_value": "a column the contract marks non-nullable is null",
    "unsafe_media_path": "a media reference is absolute, contains '..', or is otherwise unsafe",
    "negative_duration": "a duration or watch time is negative (or an item's duration is not positive)",
    "out_of_range": "a value is outside its allowed range (propensity, position, counters)",
    "ts_in_future": "the timestamp is later than the data set's end plus the allowed clock skew",
    "ts_before_catalogue": "the timestamp precedes the catalogue's first item",
    "unknown_item_id": "the item id is not in the (valid) catalogue",
    "ts_before_item_created": "the event precedes its item's creation (beyond the allowed clock skew)",
    "duplicate_key": "another row has the same key (event id); the earliest is kept",
}
"""Every rejection reason, in the order rules are applied (a row gets the first one it breaks)."""


class TooManyRejectedError(RuntimeError):
    """More rows were rejected than the configured share allows."""


@dataclass(frozen=True)
class ValidationConfig:
    max_rejected_share: float = 0.01  # fail when more than this share of one table's rows is rejected (0..1)
    clock_skew_s: int = 300  # tolerance (seconds) for timestamps slightly after `now` or before item creation
    now: datetime | None = None  # end of the data; None: the manifest's "now", else the wall clock


@dataclass
class TableReport:
    table: str
    source: str
    rows_in: int
    rows_ok: int
    rejected: dict[str, int] = field(default_factory=dict)

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


def _unsafe_media(df: pl.DataFrame) -> pl.Series:
    """True where the cover, the audio or any frame reference is unsafe (a lexical check, no file access)."""
    bad = [
        any(media_ref_problem(r) for r in (cover, audio, *(frames or [])))
        for cover, audio, frames in zip(
            df["cover_path"].to_list(), df["audio_path"].to_list(), df["frame_paths"].to_list(), strict=True
        )
    ]
    return pl.Series("_unsafe_media", bad, dtype=pl.Boolean)


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
        "unsafe_media_path": lambda df, ctx: _unsafe_media(df),
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


def assign_reasons(df: pl.DataFrame, schema: K.TableSchema, ctx: Context) -> pl.DataFrame:
    """Adds a `_reason` column: null for a valid row, else the first rule (in REASONS order) it breaks.

    Duplicate keys are judged among the rows that passed every other rule; the earliest (by time, then
    input order) is kept.
    """
    df = df.with_row_index("_row")
    if "item_id" in df.columns and ctx.items is not None and schema.name != "items":
        df = df.join(
            ctx.items.select("item_id", pl.col("created_ts").alias("_item_created_ts")),
            on="item_id",
            how="left",
        )
    rules = {"null_value": lambda d, c: _nulls(schema), **TABLE_RULES.get(schema.name, {})}
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
    if schema.key:
        order = _sort_key(schema) + ["_row"]
        ok = df.filter(pl.col("_reason").is_null()).sort(order)
        dup_rows = ok.filter(~pl.struct(list(schema.key)).is_first_distinct())["_row"]
        df = df.with_columns(
            _reason=pl.when(pl.col("_row").is_in(dup_rows.implode()))
            .then(pl.lit("duplicate_key"))
            .otherwise(pl.col("_reason"))
        )
    return df.sort("_row").drop([c for c in ("_row", "_item_created_ts") if c in df.columns])


def _quarantine_rows(bad: pl.DataFrame, table: str, source: str) -> pl.DataFrame:
    rows = bad.drop("_reason").to_dicts()
    return pl.DataFrame(
        {
            "table": [table] * len(rows),
            "source": [source] * len(rows),
            "reason": bad["_reason"].to_list(),
            "row_json": [json.dumps(r, default=str, sort_keys=True) for r in rows],
        },
        schema={"table": pl.String, "source": pl.String, "reason": pl.String, "row_json": pl.String},
    )


def split_valid(
    df: pl.DataFrame, schema: K.TableSchema, ctx: Context, source: str
) -> tuple[pl.DataFrame, pl.DataFrame, TableReport]:
    """(valid rows, quarantine rows, report) for one table."""
    judged = assign_reasons(df, schema, ctx)
    good = judged.filter(pl.col("_reason").is_null()).drop("_reason")
    bad = judged.filter(pl.col("_reason").is_not_null())
    counts = dict(sorted(bad.group_by("_reason").len().iter_rows())) if bad.height else {}
    report = TableReport(schema.name, source, rows_in=df.height, rows_ok=good.height, rejected=counts)
    return good, _quarantine_rows(bad, schema.name, source), report


def _read(path: Path, schema: K.TableSchema) -> pl.DataFrame:
    return pl.from_arrow(read_table(path, schema))


def _manifest_now(data_dir: Path) -> datetime | None:
    manifest = data_dir / "manifest.json"
    if not manifest.exists():
        return None
    now = json.loads(manifest.read_text()).get("now")
    return datetime.fromisoformat(now).astimezone(UTC) if now else None


def _write_manifest(data_dir: Path, out_dir: Path, now: datetime, reports: dict[str, TableReport]) -> None:
    """Copies the source manifest, pointing its media root at the source's media (validation copies no media)."""
    src = data_dir / "manifest.json"
    manifest = json.loads(src.read_text()) if src.exists() else {"dataset": "unknown"}
    media = dict(manifest.get("media") or {})
    if media.get("root"):
        media["root"] = str((data_dir / media["root"]).resolve())
    manifest.update(
        media=media,
        now=now.isoformat(),
        validated_from=str(data_dir.resolve()),
        counts={k: r.rows_ok for k, r in reports.items()},
    )
    write_json_atomic(out_dir / "manifest.json", manifest)


def validate_dataset(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ValidationConfig = ValidationConfig()
) -> ValidationResult:
    """Validates every log table of `data_dir`; writes clean tables, `quarantine/` and `validation.json`."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    now = cfg.now or _manifest_now(data_dir) or datetime.now(UTC)
    skew = timedelta(seconds=cfg.clock_skew_s)
    reports: dict[str, TableReport] = {}
    quarantined: list[pl.DataFrame] = []

    clean: dict[str, pl.DataFrame] = {}
    items_src = data_dir / "items"
    ctx = Context(now=now + skew, catalogue_start=None, skew=skew, items=None)
    clean["items"], q, reports["items"] = split_valid(_read(items_src, K.ITEMS), K.ITEMS, ctx, str(items_src))
    quarantined.append(q)
    items = clean["items"]
    start = items["created_ts"].min() if items.height else None
    ctx = Context(now=now + skew, catalogue_start=start, skew=skew, items=items.select("item_id", "created_ts"))
    for name in K.LOG_TABLES:
        if name == "items":
            continue
        schema = K.ALL_TABLES[name]
        src = data_dir / name
        clean[name], q, reports[name] = split_valid(_read(src, schema), schema, ctx, str(src))
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
            f"{k}: {r.rows_in - r.rows_ok} of {r.rows_in} rows ({r.rejected_share:.2%}) {r.rejected} from {r.source}"
            for k, r in over.items()
        )
        raise TooManyRejectedError(
            f"rejected share above the limit {cfg.max_rejected_share:.2%} — {detail}. "
            f"Rejected rows are in {out_dir / 'quarantine'}; raise validation.max_rejected_share to accept them."
        )
    for name, df in clean.items():
        write_table(df.to_arrow(), K.ALL_TABLES[name], out_dir / name)
    _write_manifest(data_dir, out_dir, now, reports)
    return ValidationResult(out_dir=out_dir, tables=reports)
