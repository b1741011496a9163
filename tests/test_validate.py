"""Validation assigns each kind of bad row its reason, counts it and fails above the limit."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core import contracts as K
from core.io import SchemaError, read_table
from sources.validate import REASONS, REPAIRS, TooManyRejectedError, ValidationConfig, validate_dataset

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
