"""Validation assigns each kind of bad row its reason, counts it and fails above the limit."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core import contracts as K
from core.io import SchemaError, conform, read_table, table_rows
from sources.validate import (
    REASONS,
    REPAIRS,
    Context,
    TooManyRejectedError,
    ValidationConfig,
    repair_utf8,
    split_valid,
    validate_dataset,
)

T0 = datetime(2026, 1, 10, tzinfo=UTC)  # catalogue start
NOW = datetime(2026, 2, 1, tzinfo=UTC)  # end of the data


def _item(item_id, created=T0, **over):
    row = dict(
        item_id=item_id,
        created_ts=created,
        author_id=1,
        category="c",
        title=f"t{item_id}",
        ocr_text=None,
        asr_text=None,
        tags=["a"],
        duration_ms=10_000,
        cover_path=f"items/{item_id}/cover.png",
        frame_paths=[f"items/{item_id}/f0.png"],
        audio_path=None,
    )
    row.update(over)
    return row


def _imp(event_id, item_id, ts, **over):
    row = dict(
        event_id=event_id,
        request_id="r1",
        user_id=1,
        item_id=item_id,
        ts=ts,
        surface="feed",
        position=0,
        propensity=0.5,
        clicked=True,
        watch_ms=500,
        finished=False,
        liked=False,
        shared=False,
    )
    row.update(over)
    return row


def _write(path, schema, rows):
    df = (
        pl.DataFrame(rows, schema=schema.to_polars(), orient="row") if rows else pl.DataFrame(schema=schema.to_polars())
    )
    # bypass the writer's null check: a raw source may hold nulls, validation must catch them
    import pyarrow.parquet as pq

    path.mkdir(parents=True)
    pq.write_table(df.to_arrow(), path / "part-0.parquet")
    (path / "_SUCCESS").touch()


@pytest.fixture
def dataset(tmp_path):
    """A hand-built data set: 3 good items + 2 with an unsafe media reference, 5 good impressions + one of each
    bad kind."""
    d = tmp_path / "raw"
    items = [
        _item(1),
        _item(2, created=T0 + timedelta(days=5)),
        _item(3),
        _item(4, cover_path="/etc/passwd"),  # unsafe_media_path: the cover is dropped, the item kept
        _item(5, frame_paths=["ok.png", "../../x.png"]),  # unsafe_media_path: one frame is dropped, the item kept
    ]
    ts = T0 + timedelta(days=10)
    imps = [
        _imp("e1", 1, ts),
        _imp("e2", 2, ts),
        _imp("e3", 3, ts, position=2),
        _imp("e4", 1, ts + timedelta(hours=1)),
        _imp("e4", 1, ts + timedelta(hours=2)),  # duplicate_key (later copy of e4)
        _imp("e5", None, ts),  # null_value
        _imp("e6", 1, ts, watch_ms=-5),  # negative_duration
        _imp("e7", 1, ts, propensity=0.0),  # out_of_range
        _imp("e8", 1, NOW + timedelta(days=1)),  # ts_in_future
        _imp("e9", 1, T0 - timedelta(days=3)),  # ts_before_catalogue
        _imp("e10", 99, ts),  # unknown_item_id
        _imp("e11", 4, ts),  # valid: its item lost only its unsafe cover
        _imp("e12", 2, T0 + timedelta(days=1)),  # ts_before_item_created (item 2 created on day 5)
    ]
    _write(d / "items", K.ITEMS, items)
    _write(d / "interactions", K.INTERACTIONS, imps)
    _write(
        d / "feed_requests",
        K.FEED_REQUESTS,
        [
            dict(
                request_id="r1",
                user_id=1,
                ts=ts,
                surface="feed",
                candidate_item_ids=[1, 2],
                candidate_propensities=[0.25, 0.75],
            ),
            dict(
                request_id="r2",
                user_id=1,
                ts=ts,
                surface="feed",
                candidate_item_ids=[1, 2],
                candidate_propensities=[0.5, 0.6],
            ),  # out_of_range: does not sum to 1
        ],
    )
    _write(d / "searches", K.SEARCHES, [])
    _write(
        d / "user_activity",
        K.USER_ACTIVITY,
        [
            dict(user_id=1, activity_date=ts.date(), sessions=1, impressions=4, watch_ms=2000),
        ],
    )
    (d / "manifest.json").write_text(
        json.dumps({"dataset": "hand", "now": NOW.isoformat(), "media": {"root": "media", "mode": "files"}})
    )
    return d


def test_each_bad_row_gets_its_reason(dataset, tmp_path):
    out = tmp_path / "valid"
    res = validate_dataset(dataset, out, ValidationConfig(max_rejected_share=1.0))

    assert res.tables["items"].rejected == {}
    assert res.tables["items"].repaired == {"unsafe_media_path": 2}
    assert res.tables["interactions"].rejected == {
        "duplicate_key": 1,
        "null_value": 1,
        "negative_duration": 1,
        "out_of_range": 1,
        "ts_in_future": 1,
        "ts_before_catalogue": 1,
        "unknown_item_id": 1,
        "ts_before_item_created": 1,
    }
    assert res.tables["feed_requests"].rejected == {"out_of_range": 1}
    assert res.tables["interactions"].rows_ok == 5

    clean = pl.from_arrow(read_table(out / "interactions", K.INTERACTIONS))
    assert clean["event_id"].to_list() == ["e1", "e2", "e3", "e4", "e11"]
    items = pl.from_arrow(read_table(out / "items", K.ITEMS)).sort("item_id")
    assert items["item_id"].to_list() == [1, 2, 3, 4, 5]
    assert items["cover_path"].to_list()[3:] == [None, "items/5/cover.png"]
    assert items["frame_paths"].to_list()[3:] == [["items/4/f0.png"], ["ok.png"]]
    # the earliest copy of the duplicate is the one kept
    assert clean.filter(pl.col("event_id") == "e4")["ts"].item() == T0 + timedelta(days=10, hours=1)

    q = pl.from_arrow(read_table(out / "quarantine", K.QUARANTINE))
    assert q.height == 2 + 8 + 1  # two dropped media references, 8 impressions, 1 feed request
    assert set(q["reason"]) <= set(REASONS) | set(REPAIRS)
    refs = [json.loads(r) for r in q.filter(pl.col("reason") == "unsafe_media_path")["row_json"]]
    assert sorted((r["item_id"], r["column"], r["ref"]) for r in refs) == [
        (4, "cover_path", "/etc/passwd"),
        (5, "frame_paths", "../../x.png"),
    ]
    row = json.loads(q.filter(pl.col("reason") == "negative_duration")["row_json"].item())
    assert row["event_id"] == "e6" and row["watch_ms"] == -5
    assert q.filter(pl.col("table") == "items")["source"].unique().item().endswith("raw/items")

    summary = json.loads((out / "validation.json").read_text())
    assert summary["tables"]["interactions"]["rows_in"] == 13
    manifest = json.loads((out / "manifest.json").read_text())
    # the media lie beside the output: a relative root, so the two can move together
    assert not Path(manifest["media"]["root"]).is_absolute()
    assert (out / manifest["media"]["root"]).resolve() == (dataset / "media").resolve()
    assert manifest["counts"]["interactions"] == 5


def test_run_fails_when_the_rejected_share_passes_the_limit(dataset, tmp_path):
    out = tmp_path / "valid"
    with pytest.raises(TooManyRejectedError, match=r"interactions: 8 of 13 rows .*raw/interactions"):
        validate_dataset(dataset, out, ValidationConfig(max_rejected_share=0.5))
    # the quarantine is kept for inspection, but no clean table is published
    assert (out / "quarantine" / "_SUCCESS").exists()
    assert not (out / "interactions").exists()


def test_clock_skew_tolerance(dataset, tmp_path):
    # e12 is 4 days before its item: still rejected with a 1-day skew; e8 is 1 day in the future: accepted
    res = validate_dataset(dataset, tmp_path / "v", ValidationConfig(max_rejected_share=1.0, clock_skew_s=86_400))
    rej = res.tables["interactions"].rejected
    assert "ts_in_future" not in rej
    assert rej["ts_before_item_created"] == 1


def test_mistyped_source_column_is_an_error_naming_it(dataset, tmp_path):
    import pyarrow.parquet as pq

    f = dataset / "interactions" / "part-0.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("watch_ms"), "watch_ms", t["watch_ms"].cast("string")), f)
    with pytest.raises(SchemaError, match=r"interactions/part-0\.parquet: column 'watch_ms'"):
        validate_dataset(dataset, tmp_path / "v")


def test_clean_data_passes_with_a_zero_limit(tmp_path):
    d = tmp_path / "raw"
    _write(d / "items", K.ITEMS, [_item(1)])
    _write(d / "interactions", K.INTERACTIONS, [_imp("e1", 1, T0 + timedelta(hours=1))])
    for name in ("feed_requests", "searches", "user_activity"):
        _write(d / name, K.ALL_TABLES[name], [])
    res = validate_dataset(d, tmp_path / "v", ValidationConfig(max_rejected_share=0.0, now=NOW))
    assert res.rejected_total == 0
    assert read_table(tmp_path / "v" / "interactions", K.INTERACTIONS).num_rows == 1


# ------------------------------------------------------------------------------------------------ batches
def _write_parts(path, schema, parts, raw_bytes=()):
    """One parquet file per list of rows (an empty list: a file without rows); `raw_bytes` holds
    (file, row, column, bytes) cells whose bytes (not necessarily UTF-8) replace the string written there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True)
    for i, rows in enumerate(parts):
        df = (
            pl.DataFrame(rows, schema=schema.to_polars(), orient="row")
            if rows
            else pl.DataFrame(schema=schema.to_polars())
        )
        t = df.to_arrow()
        for part, row, column, value in raw_bytes:
            if part != i:
                continue
            values = t[column].cast(pa.string()).combine_chunks().view(pa.binary()).to_pylist()
            values[row] = value
            arr = pa.array(values, type=pa.binary()).view(pa.string())
            t = t.set_column(t.schema.get_field_index(column), column, arr)
        pq.write_table(t, path / f"part-{i}.parquet")
    (path / "_SUCCESS").touch()


def _search(event_id, item_id, ts, **over):
    row = dict(event_id=event_id, search_id="s", user_id=1, ts=ts, query="q", item_id=item_id, position=0, clicked=True)
    row.update(over)
    return row


def _request(request_id, ts, props=(0.25, 0.75)):
    return dict(
        request_id=request_id,
        user_id=1,
        ts=ts,
        surface="feed",
        candidate_item_ids=[1, 2],
        candidate_propensities=list(props),
    )


TS = T0 + timedelta(days=10)
H = timedelta(hours=1)


@pytest.fixture
def messy(tmp_path):
    """Every kind of bad row, in tables of several files (one without rows), with duplicate keys whose copies lie in
    different files and batches: the earliest copy by time is sometimes the later one in input order, sometimes
    rejected for another reason (then another copy is kept), sometimes tied in time with another."""
    d = tmp_path / "raw"
    items = [
        _item(1),
        _item(2, created=T0 + timedelta(days=5)),
        _item(3),
        _item(4, cover_path="/etc/passwd"),  # unsafe_media_path
        _item(5),  # its title is not UTF-8: repaired
        _item(6, duration_ms=0),  # negative_duration
    ]
    _write_parts(d / "items", K.ITEMS, [items[:3], items[3:]], raw_bytes=[(1, 1, "title", b"caf\xe9")])
    interactions = [
        [
            _imp("e1", 1, TS + H),
            _imp("d1", 1, TS + 5 * H),  # duplicate_key: later than the copies in files 1 and 3
            _imp("e2", 2, TS),
            _imp("d2", 1, TS + 2 * H, watch_ms=-5),  # negative_duration: the copy in file 1 is kept
            _imp("d3", 3, TS + 3 * H),  # kept: tied in time with its copies, and first in input order
            _imp("e5", None, TS),  # null_value
            _imp("e6", 1, TS, propensity=0.0),  # out_of_range
            _imp("e7", 1, NOW + timedelta(days=1)),  # ts_in_future
            _imp("e8", 1, T0 - timedelta(days=3)),  # ts_before_catalogue
            _imp("e9", 99, TS),  # unknown_item_id
        ],
        [
            _imp("e10", 2, T0 + timedelta(days=1)),  # ts_before_item_created
            _imp("d1", 1, TS + H),  # kept: the earliest copy, though not the first in input order
            _imp("d2", 1, TS + 4 * H),  # kept
            _imp("d3", 3, TS + 3 * H),  # duplicate_key
            _imp("e11", 1, TS),  # invalid_utf8 (its event id)
            _imp("e12", 4, TS),
            _imp("d4", 1, TS + 6 * H),  # duplicate_key: the copy in file 3 is earlier
            _imp("e13", 6, TS),  # unknown_item_id: item 6 was rejected
        ],
        [],
        [
            _imp("d3", 3, TS + 3 * H),  # duplicate_key
            _imp("d4", 1, TS + H),  # kept
            _imp("e14", 1, TS, position=-1),  # out_of_range
            _imp("d1", 1, TS + H),  # duplicate_key: tied with file 1's copy, later in input order
            _imp("e15", 3, TS),
            _imp("e1", 1, TS, watch_ms=-1),  # negative_duration, not a duplicate
        ],
    ]
    _write_parts(d / "interactions", K.INTERACTIONS, interactions, raw_bytes=[(1, 4, "event_id", b"e\xff11")])
    searches = [
        [
            _search("s1", 1, TS),  # its query is not UTF-8: repaired and counted
            _search("s2", 1, TS + 2 * H),  # duplicate_key (its query, not UTF-8, is not counted as repaired)
            _search("s3", 99, TS),  # unknown_item_id
        ],
        [_search("s2", 1, TS + H), _search("s4", 2, TS + 6 * 24 * H), _search("s5", 3, TS, position=-1)],
    ]
    raw = [(0, 0, "query", b"qu\xe9ry"), (0, 1, "query", b"\xff")]
    _write_parts(d / "searches", K.SEARCHES, searches, raw_bytes=raw)
    requests = [
        _request("r1", TS),
        _request("r2", TS, (0.5, 0.6)),  # out_of_range
        _request("r3", TS + H),  # duplicate_key
        _request("r3", TS),
        _request("r4", TS),
    ]
    _write_parts(d / "feed_requests", K.FEED_REQUESTS, [requests[:2], requests[2:]])
    day = TS.date()
    activity = [
        dict(user_id=1, activity_date=day, sessions=1, impressions=4, watch_ms=2000),
        dict(user_id=2, activity_date=day, sessions=0, impressions=4, watch_ms=2000),  # out_of_range
        dict(user_id=1, activity_date=day + timedelta(days=1), sessions=2, impressions=4, watch_ms=2000),
        dict(user_id=1, activity_date=day, sessions=3, impressions=1, watch_ms=20),  # duplicate_key
    ]
    _write_parts(d / "user_activity", K.USER_ACTIVITY, [activity[:1], activity[1:]])
    (d / "manifest.json").write_text(json.dumps({"dataset": "messy", "now": NOW.isoformat()}))
    return d


def _outputs(out: Path) -> dict:
    """Every table validation published (as arrow, in file order), its counts and its manifest."""
    tables = {name: read_table(out / name, K.ALL_TABLES[name]) for name in (*K.LOG_TABLES, "quarantine")}
    return {
        **tables,
        "validation.json": json.loads((out / "validation.json").read_text()),
        "manifest.json": json.loads((out / "manifest.json").read_text()),
        "files": sorted(p.relative_to(out).parts[0] for p in out.iterdir()),
    }


def test_validation_in_batches_gives_the_whole_tables_result(messy, tmp_path):
    cfg = ValidationConfig(max_rejected_share=1.0)
    whole = validate_dataset(messy, tmp_path / "whole", cfg)
    want = _outputs(tmp_path / "whole")

    # the expected result, as judging each table whole gives it
    clean = pl.from_arrow(want["interactions"])
    assert clean["event_id"].to_list() == ["e1", "e2", "d3", "d1", "d2", "e12", "d4", "e15"]
    assert clean.filter(pl.col("event_id") == "d1")["ts"].item() == TS + H
    assert clean.filter(pl.col("event_id") == "d2")["ts"].item() == TS + 4 * H
    assert whole.tables["interactions"].rejected == {
        "duplicate_key": 5,
        "invalid_utf8": 1,
        "negative_duration": 2,
        "null_value": 1,
        "out_of_range": 2,
        "ts_before_catalogue": 1,
        "ts_before_item_created": 1,
        "ts_in_future": 1,
        "unknown_item_id": 2,
    }
    assert whole.tables["items"].repaired == {"invalid_utf8": 1, "unsafe_media_path": 1}
    assert whole.tables["searches"].rejected == {"duplicate_key": 1, "out_of_range": 1, "unknown_item_id": 1}
    assert whole.tables["searches"].repaired == {"invalid_utf8": 1}
    assert pl.from_arrow(want["searches"])["query"].to_list() == ["qu\ufffdry", "q", "q"]
    assert pl.from_arrow(want["feed_requests"])["ts"].to_list() == [TS, TS, TS]
    assert whole.tables["user_activity"].rejected == {"duplicate_key": 1, "out_of_range": 1}
    q = pl.from_arrow(want["quarantine"])
    assert q.height == sum(sum(r.rejected.values()) for r in whole.tables.values()) + 1  # + one media reference
    assert want["files"] == sorted([*K.LOG_TABLES, "quarantine", "validation.json", "manifest.json"])

    # and each event table's clean rows are split_valid's on the whole table
    ctx = Context(
        now=NOW + timedelta(seconds=cfg.clock_skew_s),
        catalogue_start=T0,
        skew=timedelta(seconds=cfg.clock_skew_s),
        items=pl.from_arrow(want["items"]).select("item_id", "created_ts"),
    )
    for name in K.LOG_TABLES[1:]:
        schema = K.ALL_TABLES[name]
        good, bad, report = split_valid(repair_utf8(read_table(messy / name, schema), schema), schema, ctx, "src")
        assert conform(good.to_arrow(), schema).equals(want[name]), name
        assert report.rejected == whole.tables[name].rejected and report.repaired == whole.tables[name].repaired
        assert bad["row_json"].to_list() == q.filter(pl.col("table") == name)["row_json"].to_list()

    for batch_rows in (1, 3, 7):
        out = tmp_path / f"batches_of_{batch_rows}"
        res = validate_dataset(messy, out, dataclasses.replace(cfg, batch_rows=batch_rows))
        got = _outputs(out)
        assert res.tables == whole.tables
        for name in (*K.LOG_TABLES, "quarantine"):
            assert got[name].equals(want[name]), (batch_rows, name)
        assert got["validation.json"] == want["validation.json"]
        assert got["manifest.json"] == want["manifest.json"]
        assert got["files"] == want["files"]  # no staging directory left behind


def test_no_more_than_a_batch_of_event_rows_is_judged_at_once(messy, tmp_path, monkeypatch):
    import sources.validate as V

    seen: dict[str, list[int]] = {}
    narrow: dict[str, list[str]] = {}
    keys: dict[str, list[int]] = {}
    repair, duplicates = V.repair_utf8, V._duplicates

    def counting_repair(table, schema):
        seen.setdefault(schema.name, []).append(table.num_rows)
        return repair(table, schema)

    def recording_duplicates(passing, schema):
        narrow[schema.name] = passing.columns
        keys.setdefault(schema.name, []).append(passing.height)
        return duplicates(passing, schema)

    monkeypatch.setattr(V, "repair_utf8", counting_repair)
    monkeypatch.setattr(V, "_duplicates", recording_duplicates)
    validate_dataset(messy, tmp_path / "v", ValidationConfig(max_rejected_share=1.0, batch_rows=3))

    assert seen.pop("items") == [6]  # the catalogue is read whole
    for name, sizes in seen.items():
        assert max(sizes) <= 3, name
        assert sum(sizes) == 2 * table_rows(messy / name, K.ALL_TABLES[name]), name  # two passes
    assert sum(seen["interactions"]) == 2 * 24
    # the first pass keeps only the key, the time and the position of the 13 rows that pass every other rule, and
    # finds the duplicates among them one partition (of the keys' hashes) at a time
    assert narrow["interactions"] == ["event_id", "ts", "_row"]
    assert narrow["user_activity"] == ["user_id", "activity_date", "_row"]
    assert sum(keys["interactions"]) == 13 and len(keys["interactions"]) > 1
    assert not (tmp_path / "v" / ".staging").exists()


def test_a_failed_validation_in_batches_publishes_no_clean_table(messy, tmp_path):
    out = tmp_path / "v"
    (out / ".staging" / "interactions").mkdir(parents=True)  # left by a killed run
    (out / ".staging" / "interactions" / "_SUCCESS").touch()
    with pytest.raises(TooManyRejectedError, match=r"interactions: 16 of 24 rows"):
        validate_dataset(messy, out, ValidationConfig(max_rejected_share=0.5, batch_rows=3))
    assert sorted(p.name for p in out.iterdir()) == ["quarantine", "validation.json"]
    q = read_table(out / "quarantine", K.QUARANTINE)
    assert q.num_rows == 16 + 1 + 1 + 3 + 2 + 2  # interactions, items (rejected, media), searches, requests, activity


def test_an_error_while_streaming_leaves_no_table_and_no_spilled_keys(messy, tmp_path, monkeypatch):
    import sources.validate as V

    judge, calls = V._judge, []

    def failing_judge(df, schema, ctx, offset=0):
        calls.append(schema.name)
        if calls.count("searches") == 3:  # the second pass over searches: two tables are staged
            raise OSError("disk gone")
        return judge(df, schema, ctx, offset)

    monkeypatch.setattr(V, "_judge", failing_judge)
    out = tmp_path / "v"
    with pytest.raises(OSError, match="disk gone"):
        validate_dataset(messy, out, ValidationConfig(max_rejected_share=1.0, batch_rows=3))
    assert not out.exists() or list(out.iterdir()) == []


def test_a_mistyped_column_in_a_file_without_rows_fails_before_any_output(messy, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = messy / "interactions" / "part-2.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("watch_ms"), "watch_ms", pa.array([], pa.string())), f)
    with pytest.raises(SchemaError, match=r"interactions/part-2\.parquet: column 'watch_ms'"):
        validate_dataset(messy, tmp_path / "v", ValidationConfig(batch_rows=3))
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_the_run_configs_batch_rows_reaches_validation(tmp_path, monkeypatch):
    import sources.validate as V
    from jobs.pipeline import StageContext, _stage_validate, load_config

    cfg = load_config("smoke")
    cfg = dataclasses.replace(cfg, validation=dataclasses.replace(cfg.validation, batch_rows=123))
    got = {}

    def fake(data_dir, out_dir, vcfg):
        got["cfg"] = vcfg
        return V.ValidationResult(out_dir=Path(out_dir), tables={})

    monkeypatch.setattr(V, "validate_dataset", fake)
    _stage_validate(StageContext(cfg=cfg, run_dir=tmp_path, out=tmp_path / "out", work=tmp_path / "work"))
    assert got["cfg"].batch_rows == 123
    assert got["cfg"].max_rejected_share == cfg.validation.max_rejected_share
