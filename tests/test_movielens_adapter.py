"""Tests of the MovieLens adapter (sources.movielens).

The small fixture's expected values are worked out by hand below, not from the code. The round trip on the
real ml-latest-small files skips where the folder is absent (set SAIL_MOVIELENS_DIR to point elsewhere).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path

import pyarrow.compute as pc
import pytest

from core.contracts import FEED_REQUESTS, INTERACTIONS, ITEMS, SEARCHES, USER_ACTIVITY
from core.io import read_table
from sources.movielens import AdaptResult, adapt_movielens

UTC = dt.UTC


def _movielens_dir() -> Path:
    env = os.environ.get("SAIL_MOVIELENS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data/movielens-latest-small"


ML_DIR = _movielens_dir()
HAVE_ML = (ML_DIR / "ratings.csv").is_file()
needs_movielens = pytest.mark.skipif(
    not HAVE_ML,
    reason=f"MovieLens ml-latest-small not found at {ML_DIR} (set SAIL_MOVIELENS_DIR to its folder)",
)


def ts(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=UTC)


# --------------------------------------------------------------------------------------------------------
# Hand-worked fixture
# --------------------------------------------------------------------------------------------------------
#
# T = 1609542000 = 2021-01-01 23:00:00 UTC.
# user 1: movie 10 @ T       (4.0)  session s0
#         movie 30 @ T+600   (3.5)  gap 10 min  -> s0
#         movie 20 @ T+2460  (5.0)  gap 31 min  -> new session s1 (23:41 UTC)
#         movie 60 @ T+4260  (2.0)  gap exactly 30 min -> still s1, but 2021-01-02 00:11 UTC (next day)
# user 2: movie 30 @ T+1800  (4.5)  s0 (same second as movie 10: ordered by movieId, so 10 first)
#         movie 10 @ T+1800  (3.0)  s0
#         movie 20 @ T+9000  (0.5)  gap 2 h -> s1 (2021-01-02 01:30 UTC)
# movie 40 has only a tag (earliest event of all, 1609400000 = 2020-12-31 07:33:20 UTC); movie 50 has nothing.
T = 1609542000
RATINGS = """userId,movieId,rating,timestamp
1,10,4.0,{t0}
1,30,3.5,{t1}
1,20,5.0,{t2}
1,60,2.0,{t3}
2,30,4.5,{u0}
2,10,3.0,{u0}
2,20,0.5,{u1}
""".format(t0=T, t1=T + 600, t2=T + 2460, t3=T + 4260, u0=T + 1800, u1=T + 9000)
MOVIES = """movieId,title,genres
10,"Alpha, The (1990)",Action|Comedy
20,Beta (2001),(no genres listed)
30,Gamma (2010),Drama
40,Delta (2015),Comedy
50,Epsilon (2020),Horror
60,Zeta (1999),Comedy|Drama
"""
TAGS = """userId,movieId,tag,timestamp
2,40,Space,1609400000
1,10,Funny,1609541000
2,10, funny ,1609550000
1,10,action,1609550001
2,10,Classic,1609550002
1,20,"dark, moody",1609550003
1,30,g,1609560000
1,30,f,1609560000
1,30,e,1609560000
1,30,d,1609560000
1,30,c,1609560000
1,30,b,1609560000
1,30,a,1609560000
2,30,B,1609560000
"""
LINKS = """movieId,imdbId,tmdbId
10,0000010,10
"""

H = 7_200_000  # the constant 2-hour duration


def write_fixture(root: Path, *, ratings=RATINGS, movies=MOVIES, tags=TAGS, links=LINKS) -> Path:
    src = root / "ml"
    src.mkdir(parents=True, exist_ok=True)
    for name, text in (("ratings", ratings), ("movies", movies), ("tags", tags), ("links", links)):
        if text is not None:
            (src / f"{name}.csv").write_text(text, encoding="utf-8")
    return src


@pytest.fixture
def small(tmp_path) -> tuple[AdaptResult, Path]:
    src = write_fixture(tmp_path)
    return adapt_movielens(src, tmp_path / "out"), src


def test_small_items(small):
    result, _ = small
    items = {r["item_id"]: r for r in read_table(result.paths["items"], ITEMS).to_pylist()}
    assert sorted(items) == [10, 20, 30, 40, 50, 60]
    # genres first (source casing), then user tags lower-cased by frequency, ties alphabetical;
    # "action" repeats the genre Action and is dropped.
    assert items[10]["tags"] == ["Action", "Comedy", "funny", "classic"]
    assert items[20]["tags"] == ["dark, moody"]  # no genres listed; a tag with a comma survives CSV quoting
    assert items[30]["tags"] == ["Drama", "b", "a", "c", "d", "e"]  # b twice; then top 5 alphabetical
    assert items[40]["tags"] == ["Comedy", "space"]
    assert items[50]["tags"] == ["Horror"]
    assert items[60]["tags"] == ["Comedy", "Drama"]
    assert {i: r["category"] for i, r in items.items()} == {
        10: "Action",
        20: "unknown",
        30: "Drama",
        40: "Comedy",
        50: "Horror",
        60: "Comedy",
    }
    assert items[10]["title"] == "Alpha, The (1990)"
    # created_ts = first rating or tag of the movie; movie 50 (no event) = earliest event of the dump
    assert {i: r["created_ts"] for i, r in items.items()} == {
        10: ts(1609541000),  # tag before the first rating
        20: ts(T + 2460),
        30: ts(T + 600),
        40: ts(1609400000),
        50: ts(1609400000),
        60: ts(T + 4260),
    }
    for r in items.values():
        assert r["author_id"] == 0
        assert r["duration_ms"] == H
        assert r["ocr_text"] is None and r["asr_text"] is None
        assert r["cover_path"] is None and r["audio_path"] is None and r["frame_paths"] == []


def test_small_interactions(small):
    result, _ = small
    rows = read_table(result.paths["interactions"], INTERACTIONS).to_pylist()
    got = [(r["event_id"], r["request_id"], r["ts"], r["liked"], r["finished"], r["watch_ms"]) for r in rows]
    # a rating >= 4 is engaged (clicked, liked, finished, watched); a lower one is shown but not engaged
    assert got == [
        ("ml-1-10", "ml-1-s0", ts(T), True, True, H),
        ("ml-1-30", "ml-1-s0", ts(T + 600), False, False, 0),
        ("ml-1-20", "ml-1-s1", ts(T + 2460), True, True, H),
        ("ml-1-60", "ml-1-s1", ts(T + 4260), False, False, 0),
        ("ml-2-10", "ml-2-s0", ts(T + 1800), False, False, 0),
        ("ml-2-30", "ml-2-s0", ts(T + 1800), True, True, H),
        ("ml-2-20", "ml-2-s1", ts(T + 9000), False, False, 0),
    ]
    for r in rows:
        assert r["surface"] == "rating"
        assert r["position"] == 0
        assert r["propensity"] == 1.0
        assert r["clicked"] is r["liked"] and r["shared"] is False
        assert r["user_id"] == int(r["event_id"].split("-")[1])
        assert r["item_id"] == int(r["event_id"].split("-")[2])


def test_low_ratings_are_not_positives_for_the_miners_and_the_threshold_is_a_setting(tmp_path):
    import polars as pl

    from mining import mining_polars as M
    from mining.mine_pairs import scan_contract_table
    from mining.mining_config import PositiveConfig

    src = write_fixture(tmp_path)

    def positives(out: Path) -> set[str]:
        lf = scan_contract_table(out / "interactions", INTERACTIONS)
        events = lf.pipe(M.select_positive_events, PositiveConfig()).collect()
        return set(pl.Series(events["item_id"]).cast(str) + "@" + pl.Series(events["user_id"]).cast(str))

    # the miners' default definition: only ratings >= 4 are positive (a 3.5, a 3.0, a 2.0 and a 0.5 are not)
    adapt_movielens(src, tmp_path / "a")
    assert positives(tmp_path / "a") == {"10@1", "20@1", "30@2"}
    # positive_rating 3.0 also makes the 3.5 and the 3.0 positive
    adapt_movielens(src, tmp_path / "b", positive_rating=3.0)
    assert positives(tmp_path / "b") == {"10@1", "20@1", "30@2", "30@1", "10@2"}


def test_user_tags_after_the_content_cutoff_are_not_used(tmp_path):
    src = write_fixture(tmp_path)
    # tags on movie 10: Funny @1609541000, funny @1609550000, action @1609550001, Classic @1609550002
    res = adapt_movielens(src, tmp_path / "out", content_cutoff=ts(1609550001))
    items = {r["item_id"]: r for r in read_table(res.paths["items"], ITEMS).to_pylist()}
    assert items[10]["tags"] == ["Action", "Comedy", "funny"]  # "classic" is from after the cutoff
    assert items[30]["tags"] == ["Drama"]  # every tag of movie 30 is later
    assert items[40]["tags"] == ["Comedy", "space"]
    manifest = json.loads(res.manifest_path.read_text())
    assert manifest["content_cutoff"] == ts(1609550001).isoformat()


def test_small_feed_requests(small):
    result, _ = small
    rows = read_table(result.paths["feed_requests"], FEED_REQUESTS).to_pylist()
    got = [(r["request_id"], r["user_id"], r["ts"], r["candidate_item_ids"], r["candidate_propensities"]) for r in rows]
    assert got == [
        ("ml-1-s0", 1, ts(T), [10, 30], [0.5, 0.5]),
        ("ml-1-s1", 1, ts(T + 2460), [20, 60], [0.5, 0.5]),
        ("ml-2-s0", 2, ts(T + 1800), [10, 30], [0.5, 0.5]),
        ("ml-2-s1", 2, ts(T + 9000), [20], [1.0]),
    ]
    assert all(r["surface"] == "rating" for r in rows)


def test_small_user_activity(small):
    result, _ = small
    rows = read_table(result.paths["user_activity"], USER_ACTIVITY).to_pylist()
    d1, d2 = dt.date(2021, 1, 1), dt.date(2021, 1, 2)
    assert [(r["user_id"], r["activity_date"], r["sessions"], r["impressions"], r["watch_ms"]) for r in rows] == [
        (1, d1, 2, 3, H + H),  # s0 (2 ratings) and the start of s1 (1 rating); only the 4+ ratings watched
        (1, d2, 1, 1, 0),  # the end of s1 after midnight (a 2.0)
        (2, d1, 1, 2, H),
        (2, d2, 1, 1, 0),
    ]


def test_small_searches_empty_and_manifest(small):
    result, src = small
    assert read_table(result.paths["searches"], SEARCHES).num_rows == 0
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["dataset"] == "movielens"
    assert manifest["source"] == str(src.resolve())
    assert manifest["start_date"] == "2021-01-01"
    assert manifest["days"] == 2
    assert dt.datetime.fromisoformat(manifest["now"]) == ts(1609560000)  # the last tag, 2021-01-02 04:00 UTC
    assert dt.datetime.fromisoformat(manifest["catalogue_start"]) == ts(1609400000)
    assert manifest["media"] == {"root": None, "mode": "none"}
    counts = manifest["counts"]
    assert (counts["items"], counts["interactions"], counts["feed_requests"]) == (6, 7, 4)
    assert (counts["searches"], counts["user_activity"], counts["users"]) == (0, 4, 2)
    assert counts == result.counts
    assert any("search" in n and "empty" in n for n in manifest["notes"])
    assert any("propensity" in n for n in manifest["notes"])
    # the manifest is written last: every table is complete and older than it
    for path in result.paths.values():
        assert (path / "_SUCCESS").stat().st_mtime <= result.manifest_path.stat().st_mtime


@pytest.mark.parametrize(
    ("gap", "user1_sessions", "user2_sessions"),
    [
        (3600, ["s0", "s0", "s0", "s0"], ["s0", "s0", "s1"]),  # 600, 1860, 1800 all <= 3600
        (1799, ["s0", "s0", "s1", "s2"], ["s0", "s0", "s1"]),  # 1800 > 1799 splits movie 60 off
        (0, ["s0", "s1", "s2", "s3"], ["s0", "s0", "s1"]),  # same second stays together
    ],
)
def test_session_gap_is_configurable(tmp_path, gap, user1_sessions, user2_sessions):
    result = adapt_movielens(write_fixture(tmp_path), tmp_path / "out", session_gap_s=gap)
    rows = read_table(result.paths["interactions"], INTERACTIONS).to_pylist()
    assert [r["request_id"].rsplit("-", 1)[1] for r in rows if r["user_id"] == 1] == user1_sessions
    assert [r["request_id"].rsplit("-", 1)[1] for r in rows if r["user_id"] == 2] == user2_sessions


def test_rerun_replaces_output(tmp_path):
    src = write_fixture(tmp_path)
    adapt_movielens(src, tmp_path / "out")
    result = adapt_movielens(src, tmp_path / "out", session_gap_s=3600)
    assert read_table(result.paths["feed_requests"], FEED_REQUESTS).num_rows == 3
    assert json.loads(result.manifest_path.read_text())["counts"]["feed_requests"] == 3


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        adapt_movielens(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.parametrize("missing", ["ratings", "movies", "tags"])
def test_missing_file(tmp_path, missing):
    src = write_fixture(tmp_path, **{missing: None})
    with pytest.raises(FileNotFoundError, match=f"{missing}.csv"):
        adapt_movielens(src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_links_csv_is_optional(tmp_path):
    result = adapt_movielens(write_fixture(tmp_path, links=None), tmp_path / "out")
    assert result.counts["interactions"] == 7


@pytest.mark.parametrize(
    ("file", "column"),
    [("ratings", "rating"), ("ratings", "timestamp"), ("movies", "genres"), ("tags", "tag")],
)
def test_missing_column(tmp_path, file, column):
    text = {"ratings": RATINGS, "movies": MOVIES, "tags": TAGS}[file]
    header, body = text.split("\n", 1)
    src = write_fixture(tmp_path, **{file: header.replace(column, "renamed") + "\n" + body})
    with pytest.raises(ValueError, match=rf"{file}\.csv.*'{column}'"):
        adapt_movielens(src, tmp_path / "out")


def test_bad_value_names_file_and_column(tmp_path):
    src = write_fixture(tmp_path, ratings=RATINGS.replace("4.0,", "four,"))
    with pytest.raises(ValueError, match=r"ratings\.csv.*'rating'"):
        adapt_movielens(src, tmp_path / "out")


def test_duplicate_rating_rejected(tmp_path):
    src = write_fixture(tmp_path, ratings=RATINGS + f"1,10,3.0,{T + 99999}\n")
    with pytest.raises(ValueError, match=r"ratings\.csv.*duplicate"):
        adapt_movielens(src, tmp_path / "out")


# --------------------------------------------------------------------------------------------------------
# Round trip on the real ml-latest-small files
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> AdaptResult:
    return adapt_movielens(ML_DIR, tmp_path_factory.mktemp("movielens") / "data")


@needs_movielens
def test_real_counts_match_readme(real):
    readme = (ML_DIR / "README.txt").read_text(encoding="utf-8")
    assert "100836 ratings" in readme and "9742 movies" in readme and "610 users" in readme
    tables = {
        "items": read_table(real.paths["items"], ITEMS),
        "interactions": read_table(real.paths["interactions"], INTERACTIONS),
        "feed_requests": read_table(real.paths["feed_requests"], FEED_REQUESTS),
        "searches": read_table(real.paths["searches"], SEARCHES),
        "user_activity": read_table(real.paths["user_activity"], USER_ACTIVITY),
    }
    assert tables["interactions"].num_rows == 100_836
    assert tables["items"].num_rows == 9_742
    assert len(pc.unique(tables["interactions"]["user_id"])) == 610
    assert tables["searches"].num_rows == 0
    assert {k: t.num_rows for k, t in tables.items()} == {k: real.counts[k] for k in tables}
    manifest = json.loads(real.manifest_path.read_text())
    assert manifest["counts"]["users"] == 610
    assert manifest["start_date"] == "1996-03-29"
    # every impression is in exactly one request and one activity row
    assert pc.sum(pc.list_value_length(tables["feed_requests"]["candidate_item_ids"])).as_py() == 100_836
    assert pc.sum(tables["user_activity"]["impressions"]).as_py() == 100_836


@needs_movielens
def test_real_integrity(real):
    import polars as pl

    items = pl.from_arrow(read_table(real.paths["items"], ITEMS))
    inter = pl.from_arrow(read_table(real.paths["interactions"], INTERACTIONS))
    reqs = pl.from_arrow(read_table(real.paths["feed_requests"], FEED_REQUESTS))
    assert inter["event_id"].n_unique() == inter.height
    assert items["item_id"].n_unique() == items.height
    joined = inter.join(items.select("item_id", "created_ts"), on="item_id", how="left")
    assert joined["created_ts"].null_count() == 0
    assert joined.filter(pl.col("ts") < pl.col("created_ts")).height == 0
    sums = reqs["candidate_propensities"].list.sum()
    assert (sums - 1.0).abs().max() < 1e-9
    now = dt.datetime.fromisoformat(json.loads(real.manifest_path.read_text())["now"])
    assert inter["ts"].max() <= now and items["created_ts"].max() <= now


@needs_movielens
def test_real_positive_share_matches_csv(real):
    with (ML_DIR / "ratings.csv").open(newline="", encoding="utf-8") as f:
        ratings = [float(row["rating"]) for row in csv.DictReader(f)]
    expected = sum(r >= 4.0 for r in ratings) / len(ratings)
    inter = read_table(real.paths["interactions"], INTERACTIONS)
    liked = pc.sum(pc.cast(inter["liked"], "int64")).as_py() / inter.num_rows
    finished = pc.sum(pc.cast(inter["finished"], "int64")).as_py() / inter.num_rows
    assert liked == pytest.approx(expected, abs=1e-9)
    assert finished == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 0.7  # sanity: ml-latest-small is about half positives
