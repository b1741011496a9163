"""Atomic table writes and contract checks on read."""

import os
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import contracts as K
from core.io import (
    SchemaError,
    atomic_dir,
    is_complete,
    iter_table,
    read_table,
    table_rows,
    write_table,
    write_text_atomic,
)


def _activity(n: int) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(range(n), pa.int32()),  # narrower than the contract: widened on write
            "activity_date": pa.array([datetime(2026, 1, 1).date()] * n),
            "sessions": pa.array([1] * n, pa.int32()),
            "impressions": pa.array([3] * n, pa.int32()),
            "watch_ms": pa.array([1000] * n, pa.int64()),
            "extra": pa.array(["dropped"] * n),
        }
    )


def test_write_then_read_round_trips_and_selects_contract_columns(tmp_path):
    n = write_table(_activity(5), K.USER_ACTIVITY, tmp_path / "t")
    assert n == 5
    assert is_complete(tmp_path / "t")
    back = read_table(tmp_path / "t", K.USER_ACTIVITY)
    assert back.column_names == K.USER_ACTIVITY.names
    assert back.column("user_id").type == pa.int64()
    assert back.column("user_id").to_pylist() == [0, 1, 2, 3, 4]


def test_chunks_are_split_into_files(tmp_path):
    write_table((_activity(3) for _ in range(4)), K.USER_ACTIVITY, tmp_path / "t", rows_per_file=5)
    files = sorted((tmp_path / "t").glob("*.parquet"))
    assert len(files) == 2  # 3+3 rows in the first file, then 3+3 in the second
    assert read_table(tmp_path / "t", K.USER_ACTIVITY).num_rows == 12


def test_a_failed_write_leaves_the_previous_table_intact(tmp_path):
    write_table(_activity(2), K.USER_ACTIVITY, tmp_path / "t")

    def chunks():
        yield _activity(3)
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        write_table(chunks(), K.USER_ACTIVITY, tmp_path / "t")
    assert read_table(tmp_path / "t", K.USER_ACTIVITY).num_rows == 2
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary directories left behind


def test_incomplete_directory_is_not_a_table(tmp_path):
    (tmp_path / "t").mkdir()
    pq.write_table(_activity(1), tmp_path / "t" / "part-0.parquet")
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        read_table(tmp_path / "t", K.USER_ACTIVITY)


def test_a_directory_of_tables_is_refused_with_their_names(tmp_path):
    stage = tmp_path / "stage"
    write_table(_activity(2), K.USER_ACTIVITY, stage / "a")
    write_table(_activity(2), K.USER_ACTIVITY, stage / "b")
    (stage / "_SUCCESS").touch()  # a complete stage output holding two tables
    with pytest.raises(FileNotFoundError, match=r"stage holds tables \(a, b\), not one table: pass one of them"):
        read_table(stage, K.USER_ACTIVITY)
    assert read_table(stage / "b", K.USER_ACTIVITY).num_rows == 2


def test_atomic_dir_marks_success_only_on_exit(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("x")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
    assert is_complete(tmp_path / "out")


def test_missing_column_names_the_column_and_file(tmp_path):
    f = tmp_path / "activity.parquet"
    pq.write_table(_activity(2).drop(["sessions"]), f)
    with pytest.raises(SchemaError, match=r"activity\.parquet.*missing column\(s\) \['sessions'\]"):
        read_table(f, K.USER_ACTIVITY)


def test_mistyped_column_names_the_column_and_file(tmp_path):
    f = tmp_path / "activity.parquet"
    t = _activity(2).set_column(2, "sessions", pa.array(["1", "2"]))
    pq.write_table(t, f)
    with pytest.raises(SchemaError, match=r"activity\.parquet: column 'sessions'.*type string, expected int32"):
        read_table(f, K.USER_ACTIVITY)


def test_iter_table_yields_read_tables_rows_in_bounded_chunks(tmp_path):
    write_table((_activity(n) for n in (5, 0, 7)), K.USER_ACTIVITY, tmp_path / "t", rows_per_file=4)
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 2  # a chunk never spans two files
    whole = read_table(tmp_path / "t", K.USER_ACTIVITY)
    for batch_rows in (1, 3, 4, 100):
        chunks = list(iter_table(tmp_path / "t", K.USER_ACTIVITY, batch_rows))
        assert max(c.num_rows for c in chunks) <= batch_rows
        assert all(c.schema == whole.schema for c in chunks)
        assert pa.concat_tables(chunks).equals(whole)
    assert table_rows(tmp_path / "t", K.USER_ACTIVITY) == 12
    with pytest.raises(ValueError, match="batch_rows"):
        next(iter_table(tmp_path / "t", K.USER_ACTIVITY, 0))


def test_a_mistyped_column_of_a_file_without_rows_is_still_named(tmp_path):
    d = tmp_path / "t"
    write_table(_activity(2), K.USER_ACTIVITY, d)
    t = _activity(0).set_column(2, "sessions", pa.array([], pa.string()))
    pq.write_table(t, d / "part-00001.parquet")
    want = r"part-00001\.parquet: column 'sessions'.*type string, expected int32"
    with pytest.raises(SchemaError, match=want):
        list(iter_table(d, K.USER_ACTIVITY, 10))
    with pytest.raises(SchemaError, match=want):
        table_rows(d, K.USER_ACTIVITY)
    (d / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match=r"part-00001\.parquet: not a readable parquet file"):
        list(iter_table(d, K.USER_ACTIVITY, 10))


def test_writer_refuses_nulls_in_non_nullable_columns(tmp_path):
    t = _activity(2).set_column(0, "user_id", pa.array([1, None], pa.int64()))
    with pytest.raises(SchemaError, match="'user_id'.*not nullable.*1 null"):
        write_table(t, K.USER_ACTIVITY, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_naive_timestamps_are_read_as_utc(tmp_path):
    f = tmp_path / "x.parquet"
    t = pa.table(
        {
            "item_id": pa.array([1], pa.int64()),
            "embedding": pa.array([[0.1, 0.2]], pa.list_(pa.float32())),
            "dims": pa.array([2], pa.int32()),
            "model_version": ["v1"],
            "event_timestamp": pa.array([datetime(2026, 1, 2, 3)], pa.timestamp("ms")),
        }
    )
    pq.write_table(t, f)
    back = read_table(f, K.ITEM_EMBEDDINGS)
    assert back.column("event_timestamp")[0].as_py() == datetime(2026, 1, 2, 3, tzinfo=UTC)


def test_write_text_atomic_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    write_text_atomic(target, "old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # the temporary file is gone
