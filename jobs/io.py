"""Reading and writing contract tables (single-machine side; the Spark side lives in jobs.spark_io).

A table on disk is a directory of parquet files plus an empty `_SUCCESS` marker. Writers build the directory
under a temporary sibling name and rename it into place, so a reader never sees half a table and a re-run never
leaves one: a directory without `_SUCCESS` is treated as absent.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.contracts import TableSchema

SUCCESS = "_SUCCESS"


class SchemaError(ValueError):
    """An input does not match its contract: a column is missing or has the wrong type."""


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a table (or any output directory) written to completion."""
    return (Path(path) / SUCCESS).exists()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary directory that replaces `path` (with a `_SUCCESS` marker) when the block succeeds.

    On an exception the temporary directory is removed and `path` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / SUCCESS).touch()
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes text (UTF-8) through a temporary sibling file, flushed to disk, and an atomic rename.

    A reader sees the old file or the new one, never half of one; on an error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON through a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def conform(table: pa.Table, schema: TableSchema, source: str = "<memory>") -> pa.Table:
    """Selects exactly the contract's columns, in order, cast to the contract's types.

    Raises SchemaError naming the column and source when a column is missing or cannot be cast safely.
    """
    check_columns(table.schema, schema, source)
    target = schema.to_arrow()
    arrays = []
    for f in target:
        col = table.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{source}: column {f.name!r} of table {schema.name!r} has type {col.type}, "
                    f"expected {f.type} ({exc})"
                ) from exc
        arrays.append(col)
    # Nullability is not enforced here: readers conform first and quarantine null rows afterwards;
    # writers call `check_not_null` before writing.
    relaxed = pa.schema([f.with_nullable(True) for f in target], metadata=target.metadata)
    return pa.Table.from_arrays(arrays, schema=relaxed)


def check_not_null(table: pa.Table, schema: TableSchema, source: str) -> None:
    """Raises SchemaError when a non-nullable contract column holds nulls."""
    for c in schema:
        if not c.nullable and table.column(c.name).null_count:
            raise SchemaError(
                f"{source}: column {c.name!r} of table {schema.name!r} is not nullable but holds "
                f"{table.column(c.name).null_count} null(s)"
            )


_COMPATIBLE = {
    # actual -> contract types it may be cast to without loss of meaning
    pa.int8(): {pa.int16(), pa.int32(), pa.int64()},
    pa.int16(): {pa.int32(), pa.int64()},
    pa.int32(): {pa.int64()},
    pa.float32(): {pa.float64()},
    pa.large_string(): {pa.string()},
    pa.string_view(): {pa.string()},
}


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    if pa.types.is_timestamp(actual) and pa.types.is_timestamp(expected):
        # any unit; a naive timestamp is read as UTC
        return actual.tz in (None, "UTC", "Etc/UTC", "+00:00")
    if (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and pa.types.is_list(expected):
        return _compatible(actual.value_type, expected.value_type)
    if pa.types.is_null(actual):
        return True
    return expected in _COMPATIBLE.get(actual, set())


def check_columns(actual: pa.Schema, schema: TableSchema, source: str) -> None:
    """Raises SchemaError when a contract column is missing from `actual` or has an incompatible type."""
    names = set(actual.names)
    missing = [c.name for c in schema if c.name not in names]
    if missing:
        raise SchemaError(
            f"{source}: table {schema.name!r} is missing column(s) {missing}; found columns {actual.names}"
        )
    for c in schema:
        got = actual.field(c.name).type
        want = schema.to_arrow().field(c.name).type
        if not _compatible(got, want):
            raise SchemaError(
                f"{source}: column {c.name!r} of table {schema.name!r} has type {got}, expected {want} "
                f"(contract dtype {c.dtype})"
            )


def write_table(
    table: pa.Table | Iterable[pa.Table],
    schema: TableSchema,
    path: str | os.PathLike,
    *,
    rows_per_file: int = 2_000_000,
) -> int:
    """Writes one table (or a stream of chunks) atomically as parquet under `path`. Returns rows written."""
    chunks = [table] if isinstance(table, pa.Table) else table
    n = 0
    with atomic_dir(path) as tmp:
        writer = None
        part = 0
        in_file = 0
        try:
            for chunk in chunks:
                chunk = conform(chunk, schema, source=f"writer of {path}")
                check_not_null(chunk, schema, source=f"writer of {path}")
                if writer is None or in_file >= rows_per_file:
                    if writer is not None:
                        writer.close()
                    writer = pq.ParquetWriter(tmp / f"part-{part:05d}.parquet", chunk.schema)
                    part += 1
                    in_file = 0
                writer.write_table(chunk)
                in_file += chunk.num_rows
                n += chunk.num_rows
        finally:
            if writer is not None:
                writer.close()
        if part == 0:
            pq.write_table(schema.empty_arrow(), tmp / "part-00000.parquet")
    return n


def table_files(path: str | os.PathLike) -> list[Path]:
    """Parquet files of a complete table; raises FileNotFoundError naming the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"table not found: {p}")
    if p.is_file():
        return [p]
    if not is_complete(p):
        raise FileNotFoundError(f"{p} has no {SUCCESS} marker: it is incomplete (a writer failed or is running)")
    nested = sorted(d.name for d in p.iterdir() if d.is_dir() and is_complete(d))
    if nested:  # a stage's output directory, say, rather than one of the tables in it
        raise FileNotFoundError(f"{p} holds tables ({', '.join(nested)}), not one table: pass one of them")
    files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"{p} holds no parquet files")
    return files


def read_table(path: str | os.PathLike, schema: TableSchema) -> pa.Table:
    """Reads a table and conforms it to its contract (columns checked, extra columns dropped)."""
    files = table_files(path)
    parts = []
    for f in files:
        t = pq.read_table(f)
        parts.append(conform(t, schema, source=str(f)))
    return pa.concat_tables(parts) if parts else schema.empty_arrow()
