"""Fault injection on the inputs of validation: bytes that are not UTF-8, empty tables, unsafe media references,
a failed run over an earlier output and a broken manifest, on the tiny generated world."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import contracts as K
from core.io import SUCCESS, SchemaError, read_table
from jobs.cli import main
from sources.validate import EmptyTableError, TooManyRejectedError, ValidationConfig, validate_dataset

TABLES = ("items", "interactions", "feed_requests", "searches", "user_activity")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    from sources.world import WorldConfig, generate_world

    world = tmp_path_factory.mktemp("faults_inputs") / "world"
    generate_world(WorldConfig.for_size("tiny", seed=7), world)
    return world


@pytest.fixture
def raw(tiny_world, tmp_path) -> Path:
    """A private copy of the tiny world's log tables and manifest (validation never opens the media files)."""
    dst = tmp_path / "raw"
    for name in TABLES:
        shutil.copytree(tiny_world / name, dst / name)
    shutil.copy(tiny_world / "manifest.json", dst / "manifest.json")
    return dst


def _frame(table_dir: Path, schema: K.TableSchema) -> pl.DataFrame:
    return pl.from_arrow(read_table(table_dir, schema))


def _set_bytes(table_dir: Path, column: str, row: int, value: bytes) -> None:
    """Writes raw bytes (not necessarily UTF-8) into one string cell of a table's only parquet file."""
    (f,) = sorted(table_dir.glob("*.parquet"))
    t = pq.read_table(f)
    values = t[column].combine_chunks().view(pa.binary()).to_pylist()
    values[row] = value
    arr = pa.array(values, type=pa.binary()).view(pa.string())
    pq.write_table(t.set_column(t.schema.get_field_index(column), column, arr), f)


def _set_cells(table_dir: Path, schema: K.TableSchema, where: pl.Expr, **values) -> None:
    (f,) = sorted(table_dir.glob("*.parquet"))
    df = pl.from_arrow(pq.read_table(f))
    df = df.with_columns(
        **{c: pl.when(where).then(pl.lit(v, dtype=df.schema[c])).otherwise(pl.col(c)) for c, v in values.items()}
    )
    pq.write_table(df.to_arrow(), f)


# ------------------------------------------------------------------------------------------------ UTF-8
def test_invalid_utf8_title_and_query_are_repaired_counted_and_mined(raw, tmp_path):
    # Given: one title and one query holding bytes that are not UTF-8
    items = _frame(raw / "items", K.ITEMS)
    searches = _frame(raw / "searches", K.SEARCHES)
    item_id = items["item_id"][3]
    _set_bytes(raw / "items", "title", 3, b"caf\xe9 \xff clip")
    _set_bytes(raw / "searches", "query", 5, b"qu\xc3\x28ery")
    out = tmp_path / "valid"

    # When
    res = validate_dataset(raw, out)

    # Then: each is repaired and counted, and no row of any table is lost
    assert res.tables["items"].repaired == {"invalid_utf8": 1}
    assert res.tables["searches"].repaired == {"invalid_utf8": 1}
    for name, r in res.tables.items():
        assert r.rejected == {} and r.rows_ok == r.rows_in, name
    assert res.tables["items"].rows_ok == items.height and res.tables["searches"].rows_ok == searches.height
    clean = _frame(out / "items", K.ITEMS)
    assert clean.filter(pl.col("item_id") == item_id)["title"].item() == "caf\ufffd \ufffd clip"
    assert _frame(out / "searches", K.SEARCHES)["query"][5] == "qu\ufffd(ery"
    summary = json.loads((out / "validation.json").read_text())
    assert summary["tables"]["items"]["repaired"] == {"invalid_utf8": 1}

    # and the polars miner reads the validated tables without a crash
    mined = tmp_path / "mine"
    assert main(["mine-pairs", "--engine", "polars", "--data", str(out), "--out", str(mined)]) == 0
    q2i = _frame(mined / "q2i_pairs", K.Q2I_PAIRS)
    assert q2i.height > 0 and q2i["query"].str.len_chars().min() > 0


def test_invalid_utf8_in_an_event_id_rejects_that_row_only(raw, tmp_path):
    n = _frame(raw / "interactions", K.INTERACTIONS).height
    _set_bytes(raw / "interactions", "event_id", 7, b"ev\xff7")

    res = validate_dataset(raw, tmp_path / "valid")

    assert res.tables["interactions"].rejected == {"invalid_utf8": 1}
    assert res.tables["interactions"].rows_ok == n - 1
    q = _frame(tmp_path / "valid" / "quarantine", K.QUARANTINE).filter(pl.col("reason") == "invalid_utf8")
    assert json.loads(q["row_json"].item())["event_id"] == "ev\ufffd7"


# ------------------------------------------------------------------------------------------------ empty tables
def test_empty_interactions_is_an_error_naming_the_table(raw, tmp_path, capsys):
    shutil.rmtree(raw / "interactions")
    (raw / "interactions").mkdir()
    pq.write_table(K.INTERACTIONS.empty_arrow(), raw / "interactions" / "part-00000.parquet")
    (raw / "interactions" / SUCCESS).touch()

    want = rf"table 'interactions' \({re.escape(str(raw / 'interactions'))}\) has no rows"
    with pytest.raises(EmptyTableError, match=want):
        validate_dataset(raw, tmp_path / "valid")
    assert not (tmp_path / "valid" / "interactions").exists()

    assert main(["validate", "--data", str(raw), "--out", str(tmp_path / "v2")]) == 2
    err = capsys.readouterr().err
    assert re.search(want, err) and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ media
def test_unsafe_media_paths_drop_the_reference_not_the_item(raw, tmp_path):
    # Given: one item's cover escapes the media root, another item has an absolute frame path among good ones
    items = _frame(raw / "items", K.ITEMS)
    a, b = int(items["item_id"][0]), int(items["item_id"][1])
    frames_b = items["frame_paths"][1].to_list()
    assert len(frames_b) > 1
    _set_cells(raw / "items", K.ITEMS, pl.col("item_id") == a, cover_path="../../etc/passwd")
    _set_cells(raw / "items", K.ITEMS, pl.col("item_id") == b, frame_paths=[frames_b[0], "/etc/passwd", *frames_b[1:]])
    inter = _frame(raw / "interactions", K.INTERACTIONS)
    searches = _frame(raw / "searches", K.SEARCHES)
    events_ab = inter.filter(pl.col("item_id").is_in([a, b])).height
    assert events_ab > 0

    # When
    res = validate_dataset(raw, tmp_path / "valid")

    # Then: both items and every event are kept; only the two references are dropped, and counted
    out = tmp_path / "valid"
    assert res.tables["items"].rejected == {} and res.tables["items"].rows_ok == items.height
    assert res.tables["items"].repaired == {"unsafe_media_path": 2}
    assert res.tables["interactions"].rows_ok == inter.height and res.tables["interactions"].rejected == {}
    assert res.tables["searches"].rows_ok == searches.height
    clean = _frame(out / "items", K.ITEMS)
    assert clean.filter(pl.col("item_id") == a)["cover_path"].item() is None
    assert clean.filter(pl.col("item_id") == b)["frame_paths"].item().to_list() == frames_b
    assert _frame(out / "interactions", K.INTERACTIONS).filter(pl.col("item_id").is_in([a, b])).height == events_ab
    q = _frame(out / "quarantine", K.QUARANTINE)
    assert q["reason"].to_list() == ["unsafe_media_path", "unsafe_media_path"]
    refs = sorted((r["item_id"], r["column"], r["ref"]) for r in map(json.loads, q["row_json"]))
    assert refs == sorted([(a, "cover_path", "../../etc/passwd"), (b, "frame_paths", "/etc/passwd")])


# ------------------------------------------------------------------------------------------------ failed re-run
def _too_many_rejected(raw: Path) -> None:
    _set_cells(raw / "interactions", K.INTERACTIONS, pl.col("position") < 3, watch_ms=-1)


def _mistyped(raw: Path) -> None:
    (f,) = sorted((raw / "searches").glob("*.parquet"))
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("position"), "position", t["position"].cast("string")), f)


@pytest.mark.parametrize(
    "damage, error", [(_too_many_rejected, TooManyRejectedError), (_mistyped, SchemaError)], ids=["rejected", "schema"]
)
def test_failed_validate_leaves_no_success_over_an_earlier_output(raw, tmp_path, capsys, damage, error):
    out = tmp_path / "valid"
    validate_dataset(raw, out)
    assert all((out / name / SUCCESS).exists() for name in TABLES)

    damage(raw)
    with pytest.raises(error):
        validate_dataset(raw, out, ValidationConfig())

    # no clean table of the earlier run is left looking complete
    assert not any((out / name / SUCCESS).exists() for name in TABLES)
    assert not (out / "manifest.json").exists()
    # and a later command refuses the directory, naming what is missing
    assert main(["mine-pairs", "--engine", "polars", "--data", str(out), "--out", str(tmp_path / "mine")]) == 2
    assert f"table not found: {out / 'interactions'}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ manifest
def test_invalid_manifest_is_an_error_naming_its_path(raw, tmp_path, capsys):
    from core.media import MediaStore

    manifest = raw / "manifest.json"
    manifest.write_text('{"dataset": "tiny", "now": ')

    with pytest.raises(ValueError, match=re.escape(f"{manifest}: not a valid JSON manifest")):
        validate_dataset(raw, tmp_path / "valid")
    with pytest.raises(ValueError, match=re.escape(str(manifest))):
        MediaStore.from_data_dir(raw)
    assert main(["validate", "--data", str(raw), "--out", str(tmp_path / "v2")]) == 2
    assert str(manifest) in capsys.readouterr().err

    manifest.write_text('["not", "an", "object"]')
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: a manifest must be a JSON object")):
        validate_dataset(raw, tmp_path / "valid")
