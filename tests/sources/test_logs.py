"""Tests of the own-logs mapping (sources.logs): ids, times, ties, positives, formats, media, rejects, errors.

Each fixture is a few hand-written rows whose expected contract rows are worked out in the test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from sources.logs import (
    ImpressionsMapping,
    InteractionsMapping,
    ItemsMapping,
    LogsMapping,
    MappingError,
    PositivesMapping,
    SearchesMapping,
    adapt_logs,
    check_columns,
    check_mapping,
    parse_time,
)

UTC = dt.UTC

ITEMS_CSV = """sku,name,kind,desc,photo
A-1,Red mug,kitchen|mugs,Stoneware mug,img/a1.png
B-2,Blue cup,kitchen,,img/missing.png
C-3,Green pot,garden,Clay pot,
"""
# three users with text ids; 2024-05-01 and -02; u1 buys A-1 and B-2 on the same day (a tie), views C-3
EVENTS_CSV = """who,what,when,type,seq
u1,B-2,2024-05-01,purchase,2
u1,A-1,2024-05-01,purchase,1
u1,C-3,2024-05-02,view,1
u2,A-1,2024-05-02,purchase,1
u3,C-3,2024-05-02,purchase,1
"""


def _write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


@pytest.fixture
def shop(tmp_path) -> LogsMapping:
    root = tmp_path / "src"
    _write(root, "items.csv", ITEMS_CSV)
    _write(root, "events.csv", EVENTS_CSV)
    (root / "img").mkdir()
    (root / "img" / "a1.png").write_bytes(b"\x89PNG")
    return LogsMapping(
        name="t",
        root=str(root),
        interactions=InteractionsMapping(path="events.csv", user="who", item="what", time="when", event="type"),
        items=ItemsMapping(
            path="items.csv",
            item="sku",
            title=("name",),
            description=("desc",),
            tags=("kind",),
            tags_sep="|",
            category="kind",
            category_sep="|",
            image="photo",
        ),
        positives=PositivesMapping(event_types=("purchase",)),
    )


def _read(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / table / "*.parquet")


def _adapt(m: LogsMapping, out: Path, **kw) -> dict:
    return adapt_logs(m, out, echo=lambda _: None, **kw).manifest


def test_text_ids_become_dense_ids_with_an_id_map_and_items_keep_their_text(shop, tmp_path):
    out = tmp_path / "out"
    manifest = _adapt(shop, out)
    id_map = _read(out, "id_map/items").sort("id")
    assert id_map.to_dicts() == [
        {"source_id": "A-1", "id": 1},
        {"source_id": "B-2", "id": 2},
        {"source_id": "C-3", "id": 3},
    ]
    assert _read(out, "id_map/users").get_column("source_id").to_list() == ["u1", "u2", "u3"]
    items = _read(out, "items").sort("item_id")
    assert items.get_column("title").to_list() == ["Red mug", "Blue cup", "Green pot"]
    assert items.get_column("ocr_text").to_list() == ["Stoneware mug", None, "Clay pot"]
    assert items.get_column("tags").to_list() == [["kitchen", "mugs"], ["kitchen"], ["garden"]]
    assert items.get_column("category").to_list() == ["kitchen", "kitchen", "garden"]
    # a photo whose file is missing is dropped and counted; an empty one is simply absent
    assert items.get_column("cover_path").to_list() == ["img/a1.png", None, None]
    assert manifest["counts"]["media_missing_cover_path"] == 1
    assert manifest["media"] == {"root": str(Path(shop.root)), "mode": "files"}
    # created = the item's first event (no created column)
    assert items.get_column("created_ts").to_list() == [
        dt.datetime(2024, 5, 1, tzinfo=UTC),
        dt.datetime(2024, 5, 1, tzinfo=UTC),
        dt.datetime(2024, 5, 2, tzinfo=UTC),
    ]
    assert manifest["ids"] == {"users": "dense (id_map/users)", "items": "dense (id_map/items)"}


def test_positives_follow_the_event_types_and_ties_keep_the_file_or_order_column(shop, tmp_path):
    out = tmp_path / "out"
    manifest = _adapt(shop, out)
    inter = _read(out, "interactions").sort("event_id")
    u1 = inter.filter(pl.col("user_id") == 1).sort("ts")
    # file order on the tie: B-2 (2) then A-1 (1), one microsecond apart
    assert u1.get_column("item_id").to_list() == [2, 1, 3]
    day1 = dt.datetime(2024, 5, 1, tzinfo=UTC)
    assert u1.get_column("ts").to_list()[:2] == [day1, day1 + dt.timedelta(microseconds=1)]
    assert u1.get_column("clicked").to_list() == [True, True, False]  # the view is not a positive
    assert (inter["clicked"] == inter["finished"]).all() and (inter["clicked"] == inter["liked"]).all()
    assert manifest["counts"]["positives"] == 4 and manifest["counts"]["logged_non_positive"] == 1
    assert manifest["impressions"] == "logged"
    # with the order column the tie follows it: A-1 (seq 1) first
    ordered = dataclasses.replace(shop, interactions=dataclasses.replace(shop.interactions, order="seq"))
    _adapt(ordered, tmp_path / "o2")
    u1 = _read(tmp_path / "o2", "interactions").filter(pl.col("user_id") == 1).sort("ts")
    assert u1.get_column("item_id").to_list() == [1, 2, 3]


def test_an_image_pattern_may_use_a_prefix_of_the_source_id(shop, tmp_path):
    root = Path(shop.root)
    (root / "pics" / "B-").mkdir(parents=True)
    (root / "pics" / "B-" / "B-2.jpg").write_bytes(b"\xff\xd8")
    m = dataclasses.replace(
        shop, items=dataclasses.replace(shop.items, image=None, image_pattern="pics/{item:.2}/{item}.jpg")
    )
    manifest = _adapt(m, tmp_path / "out")
    items = _read(tmp_path / "out", "items").sort("item_id")
    assert items.get_column("cover_path").to_list() == [None, "pics/B-/B-2.jpg", None]
    assert manifest["counts"]["media_missing_cover_path"] == 2


def test_integer_ids_are_kept(tmp_path):
    root = tmp_path / "src"
    _write(root, "items.csv", "id,title\n10,a\n7,b\n")
    _write(root, "ev.csv", "user,id,t\n42,10,1714521600\n5,7,1714525200\n")
    m = LogsMapping(
        root=str(root),
        interactions=InteractionsMapping(path="ev.csv", user="user", item="id", time="t"),
        items=ItemsMapping(path="items.csv", item="id"),
    )
    manifest = _adapt(m, tmp_path / "out")
    inter = _read(tmp_path / "out", "interactions").sort("ts")
    assert inter.get_column("user_id").to_list() == [42, 5]
    assert inter.get_column("item_id").to_list() == [10, 7]
    assert not (tmp_path / "out" / "id_map").exists()
    assert manifest["ids"]["items"] == "source integers"
    assert inter.get_column("clicked").all()  # no condition: a positive-only log


@pytest.mark.parametrize(
    "values, unit, expected",
    [
        (["1714521600", "1714521601"], "auto", [1714521600_000000, 1714521601_000000]),
        (["1714521600000", "1714521600250"], "auto", [1714521600_000000, 1714521600_250000]),
        (["1714521600000000", "1714521600000001"], "auto", [1714521600_000000, 1714521600_000001]),
        (["1714521600", "1714521601"], "s", [1714521600_000000, 1714521601_000000]),
        (["1714521600500", "1714521600000"], "ms", [1714521600_500000, 1714521600_000000]),
        (["2024-05-01T00:00:00Z", "2024-05-01T02:00:00+02:00"], "iso", [1714521600_000000, 1714521600_000000]),
        (["2024-05-01 00:00:01", "2024-05-01"], "auto", [1714521601_000000, 1714521600_000000]),
        (["2024-05-01", "2024-05-02"], "date", [1714521600_000000, 1714608000_000000]),
        (["not a time", "2024-05-01"], "auto", [None, 1714521600_000000]),
    ],
)
def test_times_parse_as_utc_microseconds(values, unit, expected):
    got = parse_time(pl.Series(values), unit, "t").cast(pl.Int64).to_list()
    assert got == expected


def test_parquet_and_jsonl_and_a_glob_give_the_csv_tables(shop, tmp_path):
    _adapt(shop, tmp_path / "csv")
    root = Path(shop.root)
    events = pl.read_csv(root / "events.csv", infer_schema=False)
    (root / "pq").mkdir()
    events.head(3).write_parquet(root / "pq" / "part-0.parquet")
    events.slice(3).write_parquet(root / "pq" / "part-1.parquet")
    pl.read_csv(root / "items.csv", infer_schema=False).write_ndjson(root / "items.jsonl")
    m = dataclasses.replace(
        shop,
        interactions=dataclasses.replace(shop.interactions, path="pq/*.parquet"),
        items=dataclasses.replace(shop.items, path="items.jsonl"),
    )
    _adapt(m, tmp_path / "pq")
    for table in ("items", "interactions", "feed_requests", "user_activity"):
        assert _read(tmp_path / "pq", table).equals(_read(tmp_path / "csv", table)), table


def test_a_uri_is_read_as_the_same_file(shop, tmp_path):
    _adapt(shop, tmp_path / "path")
    uri = (Path(shop.root) / "events.csv").as_uri()
    m = dataclasses.replace(shop, interactions=dataclasses.replace(shop.interactions, path=uri))
    check_columns(m)
    _adapt(m, tmp_path / "uri")
    for table in ("items", "interactions"):
        assert _read(tmp_path / "uri", table).equals(_read(tmp_path / "path", table)), table


def test_interactions_of_unknown_items_are_rejected_and_counted_or_fail_past_the_share(shop, tmp_path):
    root = Path(shop.root)
    _write(root, "events.csv", EVENTS_CSV + "u4,Z-9,2024-05-02,purchase,1\n")
    with pytest.raises(MappingError, match=r"1 of 6 interactions rows rejected .*unknown_item"):
        _adapt(shop, tmp_path / "strict")
    manifest = _adapt(shop, tmp_path / "out", max_rejected_share=0.2)
    assert manifest["rejected"] == {"interactions": {"unknown_item": 1}}
    rejected = _read(tmp_path / "out", "rejected")
    assert rejected.get_column("reason").to_list() == ["unknown_item"]
    assert json.loads(rejected.get_column("row_json")[0])["item"] == "Z-9"
    assert _read(tmp_path / "out", "interactions").height == 5


def test_positive_conditions_rating_label_and_watch_fraction(tmp_path):
    root = tmp_path / "src"
    _write(root, "items.csv", "id,title,len\n1,a,10000\n2,b,20000\n")
    _write(
        root,
        "ev.csv",
        "u,i,t,stars,ok,ms\n1,1,100,5,1,9000\n1,2,200,5,1,5000\n2,1,300,3,1,10000\n2,2,400,5,0,20000\n",
    )
    m = LogsMapping(
        root=str(root),
        interactions=InteractionsMapping(
            path="ev.csv", user="u", item="i", time="t", time_unit="s", rating="stars", label="ok", watch_ms="ms"
        ),
        items=ItemsMapping(path="items.csv", item="id", duration_ms="len"),
        positives=PositivesMapping(rating_threshold=4.0, label=True, watch_fraction=0.8),
    )
    _adapt(m, tmp_path / "out")
    inter = _read(tmp_path / "out", "interactions").sort("ts")
    # row 1: 9000 >= 0.8 x 10000; row 2: 5000 < 0.8 x 20000; row 3: rating 3; row 4: label 0
    assert inter.get_column("clicked").to_list() == [True, False, False, False]
    assert inter.get_column("watch_ms").to_list() == [9000, 5000, 10000, 20000]


def test_searches_and_real_impressions(shop, tmp_path):
    root = Path(shop.root)
    _write(root, "search.csv", "user,q,hit,at\nu1,Red Mug,A-1,2024-05-01T10:00:00\nu2,pot,C-3,2024-05-02T11:00:00\n")
    _write(root, "shown.csv", "user,sku,at\nu2,B-2,2024-05-02\nu2,A-1,2024-05-02\n")
    m = dataclasses.replace(
        shop,
        searches=SearchesMapping(path="search.csv", user="user", query="q", item="hit", time="at"),
        impressions=ImpressionsMapping(path="shown.csv", user="user", item="sku", time="at"),
    )
    manifest = _adapt(m, tmp_path / "out")
    s = _read(tmp_path / "out", "searches").sort("ts")
    assert s.get_column("query").to_list() == ["Red Mug", "pot"]
    assert s.get_column("item_id").to_list() == [1, 3] and s.get_column("clicked").all()
    inter = _read(tmp_path / "out", "interactions").filter(pl.col("user_id") == 2).sort("ts")
    # u2's impression of A-1 duplicates the purchase (same user, item, time): dropped; B-2 kept, not engaged
    assert inter.select("item_id", "clicked").rows() == [(1, True), (2, False)]
    assert manifest["counts"]["impressions_duplicate_of_interaction"] == 1


def test_a_mapping_that_does_not_fit_the_files_names_file_column_and_key(shop):
    bad = dataclasses.replace(shop, items=dataclasses.replace(shop.items, title=("name", "subtitle")))
    with pytest.raises(MappingError) as e:
        check_columns(bad)
    assert str(e.value).startswith(
        f"{Path(shop.root) / 'items.csv'}: missing column(s) 'subtitle' ([data.logs.items] title[1])"
    )
    no_time = dataclasses.replace(shop, interactions=dataclasses.replace(shop.interactions, time="ts"))
    with pytest.raises(MappingError, match="every interaction needs a time .* name it in time"):
        check_columns(no_time)
    missing = dataclasses.replace(shop, interactions=dataclasses.replace(shop.interactions, path="nope/*.csv"))
    with pytest.raises(FileNotFoundError, match=r"\[data.logs.interactions\] path 'nope/\*.csv': no file found"):
        check_columns(missing)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"positives": PositivesMapping(rating_threshold=4.0)}, "rating_threshold needs the interactions column"),
        ({"positives": PositivesMapping(watch_fraction=0.5)}, "watch_fraction needs the interactions column"),
        ({"interactions": InteractionsMapping(path="e.csv", time_unit="hours")}, "time_unit must be one of"),
        ({"interactions": InteractionsMapping()}, r"interactions\]: path is required"),
        ({"name": "my shop"}, "name must be letters"),
        ({"items": ItemsMapping(path="i.csv", image_pattern="{id}.jpg")}, r"image_pattern '\{id\}.jpg' must use only"),
    ],
)
def test_an_impossible_mapping_is_refused_before_reading(shop, change, message):
    with pytest.raises(MappingError, match=message):
        check_mapping(dataclasses.replace(shop, **change))


def test_a_duplicate_catalogue_id_is_an_error_naming_file_and_column(shop, tmp_path):
    _write(Path(shop.root), "items.csv", ITEMS_CSV + "A-1,Red mug again,kitchen,,\n")
    with pytest.raises(MappingError, match=r"items.csv: 1 item id\(s\) appear more than once in column 'sku'"):
        _adapt(shop, tmp_path / "out")


def _sorted(out: Path, table: str) -> pl.DataFrame:
    keys = {
        "items": ["item_id"],
        "interactions": ["event_id"],
        "feed_requests": ["request_id"],
        "searches": ["event_id"],
        "user_activity": ["user_id", "activity_date"],
    }[table]
    return _read(out, table).sort(keys)


def test_a_log_in_parts_of_whole_users_gives_the_same_tables(shop, tmp_path):
    root = Path(shop.root)
    _write(root, "search.csv", "user,q,hit,at\nu1,Red Mug,A-1,2024-05-01T10:00:00\nu2,pot,C-3,2024-05-02T11:00:00\n")
    _write(root, "shown.csv", "user,sku,at\nu2,B-2,2024-05-02\nu2,A-1,2024-05-02\nu3,A-1,2024-05-01\n")
    _write(root, "events.csv", EVENTS_CSV + "u4,Z-9,2024-05-02,purchase,1\n")  # one rejected row
    m = dataclasses.replace(
        shop,
        searches=SearchesMapping(path="search.csv", user="user", query="q", item="hit", time="at"),
        impressions=ImpressionsMapping(path="shown.csv", user="user", item="sku", time="at"),
    )
    whole = _adapt(m, tmp_path / "whole", max_rejected_share=0.5)
    parts = _adapt(dataclasses.replace(m, rows_per_part=2), tmp_path / "parts", max_rejected_share=0.5)
    for table in ("items", "interactions", "feed_requests", "searches", "user_activity"):
        assert _sorted(tmp_path / "parts", table).equals(_sorted(tmp_path / "whole", table)), table
    for key in ("counts", "rejected", "start_date", "days", "now", "impressions"):
        assert parts[key] == whole[key], key
    assert not (tmp_path / "parts" / ".parts").exists()


def test_negatives_of_a_log_in_parts_are_valid_and_k_per_positive(tmp_path):
    from jobs.pipeline import load_config

    m = load_config(str(Path(__file__).resolve().parents[2] / "examples" / "shop.yaml")).data.logs
    manifest = _adapt(dataclasses.replace(m, rows_per_part=500), tmp_path / "out")
    assert manifest["negatives"]["positives"] == 2015 and manifest["negatives"]["sampled"] == 4 * 2015
    inter = _read(tmp_path / "out", "interactions")
    items = _read(tmp_path / "out", "items").select("item_id", "created_ts")
    neg = inter.filter(~pl.col("clicked")).join(items, on="item_id")
    assert neg.height == 4 * 2015 and (neg["created_ts"] <= neg["ts"]).all()
    bought = inter.filter(pl.col("clicked")).select("user_id", "item_id").unique()
    assert neg.join(bought, on=["user_id", "item_id"]).height == 0
