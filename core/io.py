"""Reading and writing contract tables (single-machine side; the Spark side lives in core.spark_io).

A table on disk is a directory of parquet files plus a `_SUCCESS` marker. Writers build the directory under a
temporary sibling name and rename it into place, so a reader never sees half a table and a re-run never leaves one:
a directory without `_SUCCESS` is treated as absent. The `_SUCCESS` that `atomic_dir` writes holds a manifest of the
directory's files (`build_manifest`), which `verify_manifest` checks (the pipeline does before it reuses a stage);
Spark's writers leave an empty `_SUCCESS`, which still marks a complete table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.contracts import TableSchema

SUCCESS = "_SUCCESS"


class SchemaError(ValueError):
    """An input does not match its contract: a column is missing or has the wrong type."""


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a table (or any output directory) written to completion (its `_SUCCESS` exists; the
    files are not checked against its manifest: `verify_manifest` does that)."""
    return (Path(path) / SUCCESS).exists()


MANIFEST_VERSION = 1
FULL_HASH_BYTES = 1 << 20  # a file other than parquet up to this size is hashed whole (sha256)
SAMPLE_BYTES = 64 << 10  # a larger one: sha256 of its first and last SAMPLE_BYTES (and its size)


def _sha256(fh: Any, start: int, n: int, h: Any = None) -> Any:
    h = h or hashlib.sha256()
    fh.seek(start)
    while n > 0:
        block = fh.read(min(n, 1 << 20))
        if not block:
            break
        h.update(block)
        n -= len(block)
    return h


def _parquet_footer(fh: Any, size: int) -> bytes | None:
    """A parquet file's footer (its thrift metadata, length and `PAR1` magic), None when the file has none."""
    if size < 12:
        return None
    fh.seek(size - 8)
    tail = fh.read(8)
    n = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or n + 12 > size:
        return None
    fh.seek(size - 8 - n)
    return fh.read(n) + tail


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest records of one file (see `build_manifest`)."""
    if path.is_symlink():
        return {"link": os.readlink(path)}
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if path.suffix == ".parquet":
            footer = _parquet_footer(fh, size)
            if footer is not None:
                entry = {"size": size, "footer_sha256": hashlib.sha256(footer).hexdigest()}
                with suppress(OSError, pa.ArrowException):
                    entry["rows"] = pq.read_metadata(path).num_rows
                return entry
        if size <= FULL_HASH_BYTES:
            return {"size": size, "sha256": _sha256(fh, 0, size).hexdigest()}
        h = _sha256(fh, 0, SAMPLE_BYTES)
        return {"size": size, "head_tail_sha256": _sha256(fh, size - SAMPLE_BYTES, SAMPLE_BYTES, h).hexdigest()}


def _manifest_files(root: Path) -> Iterator[str]:
    """Relative paths (POSIX) of every file under `root` but its own `_SUCCESS` and `__pycache__` folders; a
    symbolic link (to a file or a folder) is listed, not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        links = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in links]
        for name in sorted([*filenames, *links]):
            rel = (here / name).relative_to(root).as_posix()
            if rel != SUCCESS:
                yield rel


def build_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of every file under directory `root`: relative path -> size and a content digest.

    Cheap enough to build after each stage and to check on every resume of a run of many GBs, since neither reads
    the bulk of the data, while catching what happens to finished outputs in practice (a truncated, emptied,
    replaced, deleted or added file):

    - a parquet file: its size, the sha256 of its footer (the thrift metadata: schema, row groups with their
      offsets, sizes and column statistics, and row counts) and its row count. The footer is a few KB at the end
      of the file however large the file is, and any rewrite or truncation changes it or the size;
    - any other file up to `FULL_HASH_BYTES` (JSON, YAML, small models and media): size and sha256 of the whole
      content;
    - a larger file: size and sha256 of its first and last `SAMPLE_BYTES` (headers, e.g. safetensors', and tails).

    Modification times are not used: copying or moving a run directory keeps its manifests valid. A change in the
    middle of a large file that keeps its size is not detected (that would need reading every byte on every
    resume).
    """
    root = Path(root)
    return {
        "manifest": MANIFEST_VERSION,
        "files": {rel: file_entry(root / rel) for rel in _manifest_files(root)},
    }


def write_success(path: str | os.PathLike) -> None:
    """Writes `<path>/_SUCCESS` holding the manifest of the files now under `path`."""
    path = Path(path)
    text = json.dumps(build_manifest(path), indent=1, sort_keys=True)
    with open(path / SUCCESS, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest in `<path>/_SUCCESS`; None when there is no `_SUCCESS` or it holds no manifest (an empty
    marker: Spark's, or one written before markers carried manifests)."""
    marker = Path(path) / SUCCESS
    try:
        text = marker.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest") != MANIFEST_VERSION:
        return None
    return manifest


def _entry_problem(file: Path, want: dict[str, Any]) -> str | None:
    if "link" in want:
        if not file.is_symlink():
            return f"{file}: missing (the manifest records a link to {want['link']})"
        got = os.readlink(file)
        return None if got == want["link"] else f"{file}: links to {got}, the manifest records {want['link']}"
    if not file.is_file():
        return f"{file}: missing"
    got = file_entry(file)
    if got.get("size") != want.get("size"):
        rows = f" ({want['rows']:,} rows)" if "rows" in want else ""
        return f"{file}: {got.get('size', 0):,} bytes, the manifest records {want.get('size', 0):,}{rows}"
    for key, what in (("footer_sha256", "parquet footer"), ("sha256", "content"), ("head_tail_sha256", "content")):
        if key in want and got.get(key) != want[key]:
            return f"{file}: {what} differs from the manifest's (same size, {want['size']:,} bytes)"
    return None


def verify_manifest(path: str | os.PathLike) -> str | None:
    """None when directory `path` holds exactly the files its `_SUCCESS` manifest records (hidden files aside);
    otherwise the first problem, naming the file (missing, another size or digest, not in the manifest) or the
    marker (absent, or without a manifest)."""
    path = Path(path)
    if not (path / SUCCESS).exists():
        return f"{path} has no {SUCCESS} marker (unfinished)"
    manifest = read_manifest(path)
    if manifest is None:
        return f"{path / SUCCESS} holds no file manifest (an older or foreign marker): its outputs cannot be checked"
    files = manifest.get("files") or {}
    for rel, want in sorted(files.items()):
        problem = _entry_problem(path / rel, want)
        if problem:
            return problem
    extra = [rel for rel in _manifest_files(path) if rel not in files and not Path(rel).name.startswith(".")]
    if extra:
        return f"{path / extra[0]}: not in the manifest (added after the directory was finished)"
    return None


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary directory that replaces `path` (with a `_SUCCESS` marker holding the manifest of its
    files) when the block succeeds.

    On an exception the temporary directory is removed and `path` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        write_success(tmp)
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


def _write_atomic(path: str | os.PathLike, write: Any, binary: bool) -> None:
    """Calls `write(file)` on a temporary sibling (binary, or UTF-8 text), flushes it to disk, renames it to `path`.

    A reader sees the old file or the new one, never half of one; on an error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes text (UTF-8) through a temporary sibling file and an atomic rename (`_write_atomic`)."""
    _write_atomic(path, lambda f: f.write(text), binary=False)


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Writes numpy arrays as an .npz (`numpy.savez`) through a temporary sibling file and an atomic rename."""
    import numpy as np

    _write_atomic(path, lambda f: np.savez(f, **arrays), binary=True)


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
        try:
            t = pq.read_table(f)
        except (pa.ArrowException, OSError) as exc:  # truncated, emptied or not parquet: name the file
            raise SchemaError(f"{f}: not a readable parquet file ({exc})") from exc
        parts.append(conform(t, schema, source=str(f)))
    return pa.concat_tables(parts) if parts else schema.empty_arrow()


def _open_parquet(f: Path, schema: TableSchema) -> pq.ParquetFile:
    """`f` opened for reading, its columns checked against the contract (even where it holds no rows)."""
    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as exc:  # truncated, emptied or not parquet: name the file
        raise SchemaError(f"{f}: not a readable parquet file ({exc})") from exc
    try:
        conform(pf.schema_arrow.empty_table(), schema, source=str(f))
    except BaseException:
        pf.close()
        raise
    return pf


def table_rows(path: str | os.PathLike, schema: TableSchema) -> int:
    """Rows of a table, from its files' parquet footers (no data is read), every file's columns checked against
    the contract as `read_table` checks them."""
    n = 0
    for f in table_files(path):
        with _open_parquet(f, schema) as pf:
            n += pf.metadata.num_rows
    return n


def iter_table(path: str | os.PathLike, schema: TableSchema, batch_rows: int) -> Iterator[pa.Table]:
    """A table in chunks of at most `batch_rows` rows, each conformed to its contract: `read_table`'s rows in
    its order, without holding more than one chunk (and the parquet row group it comes from) at a time.

    A chunk never spans two files; the errors are `read_table`'s (SchemaError naming the file and column).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    for f in table_files(path):
        with _open_parquet(f, schema) as pf:
            batches = pf.iter_batches(batch_size=batch_rows)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise SchemaError(f"{f}: not a readable parquet file ({exc})") from exc
                yield conform(pa.Table.from_batches([batch]), schema, source=str(f))


def read_dataset_manifest(data_dir: str | os.PathLike) -> dict[str, Any] | None:
    """`<data_dir>/manifest.json` as a dict; None when there is none.

    Raises ValueError naming the file when it is not UTF-8 JSON holding an object.
    """
    path = Path(data_dir) / "manifest.json"
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a valid JSON manifest ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a manifest must be a JSON object, found {type(obj).__name__}")
    return obj
