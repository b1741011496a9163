"""MovieLens through the logs mapping: `adapt_logs` with the shipped `sources.logs.MOVIELENS`.

The small fixture's expected values are worked out by hand below, not from the code. The round trip on the
real ml-latest-small files skips where the folder is absent (set SAIL_MOVIELENS_DIR to point elsewhere).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pytest

from core.contracts import FEED_REQUESTS, INTERACTIONS, ITEMS, QUARANTINE, SEARCHES, USER_ACTIVITY
from core.io import read_table
from jobs.pipeline import default_movielens_dir
from sources.logs import MOVIELENS, LogsResult, MappingError, PositivesMapping, adapt_logs

UTC = dt.UTC
TABLES = {
    "items": ITEMS,
    "interactions": INTERACTIONS,
    "feed_requests": FEED_REQUESTS,
    "searches": SEARCHES,
    "user_activity": USER_ACTIVITY,
}

ML_DIR = default_movielens_dir()  # $SAIL_MOVIELENS_DIR, else the shared folder
HAVE_ML = (ML_DIR / "ratings.csv").is_file()
needs_movielens = pytest.mark.skipif(
    not HAVE_ML,
    reason=f"MovieLens ml-latest-small not found at {ML_DIR} (set SAIL_MOVIELENS_DIR to its folder)",
)


def ts(seconds: int, us: int = 0) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=UTC) + dt.timedelta(microseconds=us)


def adapt(
    src: Path,
    out: Path,
    *,
    holdout_frac: float | None = None,
    content_cutoff: dt.datetime | None = None,
    max_rejected_share: float = 0.01,
    **mapping_changes,
) -> LogsResult:
    """The shipped MovieLens mapping on `src` (with `mapping_changes`), adapted into `out`."""
    m = dataclasses.replace(MOVIELENS, root=str(src), **mapping_changes)
    return adapt_logs(
        m,
        out,
        holdout_frac=holdout_frac,
        content_cutoff=content_cutoff,
        max_rejected_share=max_rejected_share,
        echo=lambda _line: None,
    )


def rows(result: LogsResult, table: str) -> list[dict]:
    return read_table(result.out_dir / table, TABLES[table]).to_pylist()


def manifest_of(result: LogsResult) -> dict:
    return json.loads((result.out_dir / "manifest.json").read_text())


# --------------------------------------------------------------------------------------------------------
# Hand-worked fixture
# --------------------------------------------------------------------------------------------------------
#
# T = 1609542000 = 2021-01-01 23:00:00 UTC.
# user 1: movie 10 @ T       (4.0)  session s0
#         movie 30 @ T+600   (3.5)  gap 10 min  -> s0
#         movie 20 @ T+2460  (5.0)  gap 31 min  -> new session s1 (23:41 UTC)
#         movie 60 @ T+4260  (2.0)  gap exactly 30 min -> still s1, but 2021-01-02 00:11 UTC (next day)
# user 2: movie 30 @ T+1800  (4.5)  s0, the same second as movie 10: the order column (movieId) puts 10 first
#         movie 10 @ T+1800  (3.0)  s0, and 30, the second of the tie, gets +1 microsecond
#         movie 20 @ T+9000  (0.5)  gap 2 h -> s1 (2021-01-02 01:30 UTC)
# Event ids number each user's events in that order (time, tie order): ml-<user>-0, ml-<user>-1, ...
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
def small(tmp_path) -> tuple[LogsResult, Path]:
    src = write_fixture(tmp_path)
    return adapt(src, tmp_path / "out"), src


def test_small_items(small):
    result, _ = small
    items = {r["item_id"]: r for r in rows(result, "items")}
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
    # created_ts = first rating or tag of the movie; movie 50 (no event at all) = the log's first rating
    assert {i: r["created_ts"] for i, r in items.items()} == {
        10: ts(1609541000),  # tag before the first rating
        20: ts(T + 2460),
        30: ts(T + 600),
        40: ts(1609400000),
        50: ts(T),
        60: ts(T + 4260),
    }
    for r in items.values():
        assert r["author_id"] == 0
        assert r["duration_ms"] == H
        assert r["ocr_text"] is None and r["asr_text"] is None
        assert r["cover_path"] is None and r["audio_path"] is None and r["frame_paths"] == []


def by_user_and_time(result: LogsResult) -> list[dict]:
    return sorted(rows(result, "interactions"), key=lambda r: (r["user_id"], r["ts"]))


def test_small_interactions(small):
    result, _ = small
    got = [
        (r["event_id"], r["request_id"], r["user_id"], r["item_id"], r["ts"], r["liked"], r["finished"], r["watch_ms"])
        for r in by_user_and_time(result)
    ]
    # a rating >= 4 is engaged (clicked, liked, finished, watched); a lower one is shown but not engaged
    assert got == [
        ("ml-1-0", "ml-1-s0", 1, 10, ts(T), True, True, H),
        ("ml-1-1", "ml-1-s0", 1, 30, ts(T + 600), False, False, 0),
        ("ml-1-2", "ml-1-s1", 1, 20, ts(T + 2460), True, True, H),
        ("ml-1-3", "ml-1-s1", 1, 60, ts(T + 4260), False, False, 0),
        ("ml-2-0", "ml-2-s0", 2, 10, ts(T + 1800), False, False, 0),
        ("ml-2-1", "ml-2-s0", 2, 30, ts(T + 1800, us=1), True, True, H),  # the tie's second: +1 us
        ("ml-2-2", "ml-2-s1", 2, 20, ts(T + 9000), False, False, 0),
    ]
    for r in rows(result, "interactions"):
        assert r["surface"] == "rating"
        assert r["position"] == 0
        assert r["propensity"] == 1.0
        assert r["clicked"] is r["liked"] and r["shared"] is False


def test_low_ratings_are_not_positives_for_the_miners_and_the_threshold_is_a_setting(tmp_path):
    from mining import mining_polars as M
    from mining.mine_pairs import scan_contract_table
    from mining.mining_config import PositiveConfig

    src = write_fixture(tmp_path)

    def positives(out: Path) -> set[str]:
        lf = scan_contract_table(out / "interactions", INTERACTIONS)
        events = lf.pipe(M.select_positive_events, PositiveConfig()).collect()
        return set(pl.Series(events["item_id"]).cast(str) + "@" + pl.Series(events["user_id"]).cast(str))

    # the miners' default definition: only ratings >= 4 are positive (a 3.5, a 3.0, a 2.0 and a 0.5 are not)
    adapt(src, tmp_path / "a")
    assert positives(tmp_path / "a") == {"10@1", "20@1", "30@2"}
    # rating_threshold 3.0 also makes the 3.5 and the 3.0 positive
    res = adapt(src, tmp_path / "b", positives=PositivesMapping(rating_threshold=3.0))
    assert positives(tmp_path / "b") == {"10@1", "20@1", "30@2", "30@1", "10@2"}
    assert manifest_of(res)["positives"]["rating_threshold"] == 3.0


def test_user_tags_after_the_content_cutoff_are_not_used(tmp_path):
    src = write_fixture(tmp_path)
    # tags on movie 10: Funny @1609541000, funny @1609550000, action @1609550001, Classic @1609550002
    res = adapt(src, tmp_path / "out", content_cutoff=ts(1609550001))
    items = {r["item_id"]: r for r in rows(res, "items")}
    assert items[10]["tags"] == ["Action", "Comedy", "funny"]  # "classic" is from after the cutoff
    assert items[20]["tags"] == []  # "dark, moody" is later
    assert items[30]["tags"] == ["Drama"]  # every tag of movie 30 is later
    assert items[40]["tags"] == ["Comedy", "space"]
    assert manifest_of(res)["content_cutoff"] == "2021-01-02T01:13:21+00:00"


def test_holdout_frac_places_the_content_cutoff_and_content_cutoff_overrides_it(tmp_path):
    src = write_fixture(tmp_path)
    # the ratings span 2 days (2021-01-01 .. 2021-01-02): any holdout_frac holds out the last one, so the
    # cutoff is 2021-01-02 00:00 UTC; only Funny (2021-01-01 22:43:20) and Space are written before it
    res = adapt(src, tmp_path / "a", holdout_frac=0.5)
    items = {r["item_id"]: r["tags"] for r in rows(res, "items")}
    assert items[10] == ["Action", "Comedy", "funny"]
    assert items[30] == ["Drama"] and items[40] == ["Comedy", "space"]
    assert manifest_of(res)["content_cutoff"] == "2021-01-02T00:00:00+00:00"
    # a given content_cutoff wins over the holdout's: after the last tag, every tag counts
    res = adapt(src, tmp_path / "b", holdout_frac=0.5, content_cutoff=dt.datetime(2021, 1, 3))  # naive: UTC
    items = {r["item_id"]: r["tags"] for r in rows(res, "items")}
    assert items[10] == ["Action", "Comedy", "funny", "classic"]
    assert manifest_of(res)["content_cutoff"] == "2021-01-03T00:00:00+00:00"


def test_small_feed_requests(small):
    result, _ = small
    got = [
        (r["request_id"], r["user_id"], r["ts"], r["candidate_item_ids"], r["candidate_propensities"])
        for r in sorted(rows(result, "feed_requests"), key=lambda r: r["request_id"])
    ]
    assert got == [
        ("ml-1-s0", 1, ts(T), [10, 30], [0.5, 0.5]),
        ("ml-1-s1", 1, ts(T + 2460), [20, 60], [0.5, 0.5]),
        ("ml-2-s0", 2, ts(T + 1800), [10, 30], [0.5, 0.5]),
        ("ml-2-s1", 2, ts(T + 9000), [20], [1.0]),
    ]
    assert all(r["surface"] == "rating" for r in rows(result, "feed_requests"))


def test_small_user_activity(small):
    result, _ = small
    got = sorted(rows(result, "user_activity"), key=lambda r: (r["user_id"], r["activity_date"]))
    d1, d2 = dt.date(2021, 1, 1), dt.date(2021, 1, 2)
    assert [(r["user_id"], r["activity_date"], r["sessions"], r["impressions"], r["watch_ms"]) for r in got] == [
        (1, d1, 2, 3, H + H),  # s0 (2 ratings) and the start of s1 (1 rating); only the 4+ ratings watched
        (1, d2, 1, 1, 0),  # the end of s1 after midnight (a 2.0)
        (2, d1, 1, 2, H),
        (2, d2, 1, 1, 0),
    ]


def test_small_searches_empty_and_manifest(small):
    result, src = small
    assert rows(result, "searches") == []
    manifest = manifest_of(result)
    assert manifest == json.loads(json.dumps(result.manifest))  # what adapt_logs returned (tuples as lists)
    assert (manifest["dataset"], manifest["name"]) == ("logs", "ml")
    assert manifest["source"] == str(src)
    assert manifest["start_date"] == "2021-01-01"
    assert manifest["days"] == 2
    assert dt.datetime.fromisoformat(manifest["now"]) == ts(1609560000)  # the last tag, 2021-01-02 04:00 UTC
    assert dt.datetime.fromisoformat(manifest["catalogue_start"]) == ts(1609400000)
    assert manifest["media"] == {"root": None, "mode": "none"}
    assert manifest["impressions"] == "logged" and manifest["negatives"] is None
    assert manifest["positives"]["rating_threshold"] == 4.0
    assert manifest["content_cutoff"] is None  # no holdout_frac, no content_cutoff: every user tag counts
    assert manifest["ids"] == {"users": "source integers", "items": "source integers"}
    assert manifest["rejected"] == {}
    counts = manifest["counts"]
    assert (counts["items"], counts["interactions"], counts["feed_requests"]) == (6, 7, 4)
    assert (counts["searches"], counts["user_activity"], counts["users"]) == (0, 4, 2)
    assert (counts["positives"], counts["logged_non_positive"], counts["item_tag_rows"]) == (3, 4, 14)
    assert counts == result.counts
    assert any("search" in n and "empty" in n for n in manifest["notes"])
    assert any("propensity" in n for n in manifest["notes"])
    assert any("order column (+1 us per tied event)" in n for n in manifest["notes"])
    # the manifest is written last: every table is complete and older than it
    manifest_path = result.out_dir / "manifest.json"
    for name in TABLES:
        assert (result.out_dir / name / "_SUCCESS").stat().st_mtime <= manifest_path.stat().st_mtime


@pytest.mark.parametrize(
    ("gap", "user1_sessions", "user2_sessions"),
    [
        (3600, ["s0", "s0", "s0", "s0"], ["s0", "s0", "s1"]),  # 600, 1860, 1800 all <= 3600
        (1799, ["s0", "s0", "s1", "s2"], ["s0", "s0", "s1"]),  # 1800 > 1799 splits movie 60 off
        (1, ["s0", "s1", "s2", "s3"], ["s0", "s0", "s1"]),  # the tie (1 us apart) stays together
    ],
)
def test_session_gap_is_configurable(tmp_path, gap, user1_sessions, user2_sessions):
    result = adapt(write_fixture(tmp_path), tmp_path / "out", session_gap_s=gap)
    got = by_user_and_time(result)
    assert [r["request_id"].rsplit("-", 1)[1] for r in got if r["user_id"] == 1] == user1_sessions
    assert [r["request_id"].rsplit("-", 1)[1] for r in got if r["user_id"] == 2] == user2_sessions


def test_rerun_replaces_output(tmp_path):
    src = write_fixture(tmp_path)
    adapt(src, tmp_path / "out")
    result = adapt(src, tmp_path / "out", session_gap_s=3600)
    assert len(rows(result, "feed_requests")) == 3
    assert manifest_of(result)["counts"]["feed_requests"] == 3


def test_a_repeated_rating_of_the_same_movie_is_a_second_event(tmp_path):
    # MovieLens rates a movie once per user, but other logs repeat events: a second (user, movie) row is kept
    src = write_fixture(tmp_path, ratings=RATINGS + f"1,10,3.0,{T + 99999}\n")
    got = by_user_and_time(adapt(src, tmp_path / "out"))
    assert len(got) == 8 and len({r["event_id"] for r in got}) == 8
    again = [(r["request_id"], r["ts"], r["liked"]) for r in got if (r["user_id"], r["item_id"]) == (1, 10)]
    assert again == [("ml-1-s0", ts(T), True), ("ml-1-s2", ts(T + 99999), False)]  # 26 h later: a third session


def test_the_cli_maps_its_options_onto_the_mapping(tmp_path, capsys):
    from jobs.cli import main

    src, out = write_fixture(tmp_path), tmp_path / "out"
    argv = ["adapt-movielens", "--src", str(src), "--out", str(out), "--session-gap-s", "3600"]
    argv += ["--positive-rating", "3.0", "--content-cutoff", "2021-01-02T01:13:21"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert printed["counts"]["feed_requests"] == 3  # a 1-hour gap: 3 sessions
    assert printed["counts"]["positives"] == 5  # the 3.5 and the 3.0 count
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_cutoff"] == "2021-01-02T01:13:21+00:00"  # a naive time is UTC
    assert manifest["mapping"]["session_gap_s"] == 3600
    items = {r["item_id"]: r["tags"] for r in read_table(out / "items", ITEMS).to_pylist()}
    assert items[10] == ["Action", "Comedy", "funny"]
    with pytest.raises(SystemExit):
        main(["adapt-movielens", "--src", str(src), "--out", str(out), "--session-gap-s", "0"])
    assert "--session-gap-s must be >= 1" in capsys.readouterr().err
    assert main(["adapt-movielens", "--src", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "ratings.csv" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        adapt(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.parametrize("missing", ["ratings", "movies", "tags"])
def test_missing_file(tmp_path, missing):
    src = write_fixture(tmp_path, **{missing: None})
    with pytest.raises(FileNotFoundError, match=f"{missing}.csv"):
        adapt(src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_links_csv_is_optional(tmp_path):
    result = adapt(write_fixture(tmp_path, links=None), tmp_path / "out")
    assert result.counts["interactions"] == 7


@pytest.mark.parametrize(
    ("file", "column", "table"),
    [
        ("ratings", "rating", "interactions"),
        ("ratings", "timestamp", "interactions"),
        ("movies", "genres", "items"),
        ("tags", "tag", "item_tags"),
    ],
)
def test_missing_column_names_the_file_the_column_and_the_mapping_key(tmp_path, file, column, table):
    text = {"ratings": RATINGS, "movies": MOVIES, "tags": TAGS}[file]
    header, body = text.split("\n", 1)
    src = write_fixture(tmp_path, **{file: header.replace(column, "renamed") + "\n" + body})
    with pytest.raises(MappingError, match=rf"{file}\.csv: missing column\(s\) '{column}' \(\[data\.logs\.{table}\]"):
        adapt(src, tmp_path / "out")


@pytest.mark.parametrize(
    ("bad_ratings", "reason"),
    [
        (RATINGS.replace("4.0,", "four,"), "unparseable_rating"),
        (RATINGS.replace(f",{T + 9000}\n", ",soon\n"), "unparseable_time"),
    ],
)
def test_a_bad_value_is_rejected_and_fails_past_the_allowed_share(tmp_path, bad_ratings, reason):
    src = write_fixture(tmp_path, ratings=bad_ratings)
    # 1 of 7 rows (14%) is more than the default 1%: the stage fails, naming the file and the reason
    message = f"{src / 'ratings.csv'}: 1 of 7 interactions rows rejected ({{'{reason}': 1}})"
    with pytest.raises(MappingError, match=re.escape(message)):
        adapt(src, tmp_path / "a")
    assert not (tmp_path / "a" / "manifest.json").exists()
    # allowed: the row is dropped, counted and kept under rejected/ with its reason
    res = adapt(src, tmp_path / "b", max_rejected_share=0.2)
    assert res.counts["interactions"] == 6
    assert manifest_of(res)["rejected"] == {"interactions": {reason: 1}}
    (rejected,) = read_table(res.out_dir / "rejected", QUARANTINE).to_pylist()
    assert (rejected["table"], rejected["reason"]) == ("interactions", reason)
    assert rejected["source"] == str(src / "ratings.csv")


def test_a_duplicate_movie_id_in_movies_csv_is_an_error(tmp_path):
    src = write_fixture(tmp_path, movies=MOVIES + "10,Alpha again (1991),Drama\n")
    with pytest.raises(MappingError, match=r"movies\.csv: 1 item id\(s\) appear more than once in column 'movieId'"):
        adapt(src, tmp_path / "out")


# --------------------------------------------------------------------------------------------------------
# Round trip on the real ml-latest-small files
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> LogsResult:
    return adapt(ML_DIR.resolve(), tmp_path_factory.mktemp("movielens") / "data")


def real_table(result: LogsResult, table: str) -> pl.DataFrame:
    return pl.from_arrow(read_table(result.out_dir / table, TABLES[table]))


@needs_movielens
def test_real_counts_match_readme(real):
    readme = (ML_DIR / "README.txt").read_text(encoding="utf-8")
    assert "100836 ratings" in readme and "9742 movies" in readme and "610 users" in readme
    tables = {name: read_table(real.out_dir / name, schema) for name, schema in TABLES.items()}
    assert tables["interactions"].num_rows == 100_836
    assert tables["items"].num_rows == 9_742
    assert len(pc.unique(tables["interactions"]["user_id"])) == 610
    assert tables["searches"].num_rows == 0
    assert {k: t.num_rows for k, t in tables.items()} == {k: real.counts[k] for k in tables}
    manifest = manifest_of(real)
    assert manifest["counts"]["users"] == 610
    assert manifest["start_date"] == "1996-03-29"
    assert manifest["rejected"] == {}
    # every impression is in exactly one request and one activity row
    assert pc.sum(pc.list_value_length(tables["feed_requests"]["candidate_item_ids"])).as_py() == 100_836
    assert pc.sum(tables["user_activity"]["impressions"]).as_py() == 100_836


@needs_movielens
def test_real_integrity(real):
    items, inter = real_table(real, "items"), real_table(real, "interactions")
    reqs = real_table(real, "feed_requests")
    assert inter["event_id"].n_unique() == inter.height
    assert items["item_id"].n_unique() == items.height
    joined = inter.join(items.select("item_id", "created_ts"), on="item_id", how="left")
    assert joined["created_ts"].null_count() == 0
    assert joined.filter(pl.col("ts") < pl.col("created_ts")).height == 0
    sums = reqs["candidate_propensities"].list.sum()
    assert (sums - 1.0).abs().max() < 1e-9
    now = dt.datetime.fromisoformat(manifest_of(real)["now"])
    assert inter["ts"].max() <= now and items["created_ts"].max() <= now


@needs_movielens
def test_real_times_are_the_ratings_seconds_with_ties_ordered_by_movie(real):
    # every rating keeps its second; the k-th rating of a user within one second (by movieId) gets +k microseconds
    with (ML_DIR / "ratings.csv").open(newline="", encoding="utf-8") as f:
        ratings = sorted((int(r["userId"]), int(r["timestamp"]), int(r["movieId"])) for r in csv.DictReader(f))
    expected, k = set(), 0
    for i, (user, second, movie) in enumerate(ratings):
        k = k + 1 if i and ratings[i - 1][:2] == (user, second) else 0
        expected.add((user, movie, second * 1_000_000 + k))
    inter = real_table(real, "interactions")
    got = inter.select("user_id", "item_id", pl.col("ts").dt.epoch("us")).rows()
    assert len(got) == len(ratings) and set(got) == expected
    assert any(us % 1_000_000 for _, _, us in got)  # ml-latest-small has such ties


@needs_movielens
def test_real_titles_and_categories_match_movies_csv(real):
    with (ML_DIR / "movies.csv").open(newline="", encoding="utf-8") as f:
        movies = {int(r["movieId"]): r for r in csv.DictReader(f)}
    items = {r["item_id"]: r for r in real_table(real, "items").iter_rows(named=True)}
    assert set(items) == set(movies)
    for movie_id, m in movies.items():
        genres = [g for g in m["genres"].split("|") if g != "(no genres listed)"]
        assert items[movie_id]["title"] == m["title"].strip()
        assert items[movie_id]["category"] == (genres[0] if genres else "unknown")
        assert items[movie_id]["tags"][: len(genres)] == genres


@needs_movielens
def test_real_positive_share_matches_csv(real):
    with (ML_DIR / "ratings.csv").open(newline="", encoding="utf-8") as f:
        ratings = [float(row["rating"]) for row in csv.DictReader(f)]
    expected = sum(r >= 4.0 for r in ratings) / len(ratings)
    inter = read_table(real.out_dir / "interactions", INTERACTIONS)
    liked = pc.sum(pc.cast(inter["liked"], "int64")).as_py() / inter.num_rows
    finished = pc.sum(pc.cast(inter["finished"], "int64")).as_py() / inter.num_rows
    assert liked == pytest.approx(expected, abs=1e-9)
    assert finished == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 0.7  # sanity: ml-latest-small is about half positives


# --------------------------------------------------------------------------------------------------------
# Posters (data.movielens_posters)
# --------------------------------------------------------------------------------------------------------


def test_posters_become_the_movies_images_and_a_missing_one_is_counted(tmp_path):
    import yaml

    from jobs.pipeline import load_config, logs_mapping

    src = write_fixture(tmp_path)
    posters = tmp_path / "cfg" / "posters"
    posters.mkdir(parents=True)
    for movie in (10, 30):
        (posters / f"{movie}.jpg").write_bytes(b"\xff\xd8\xff")  # only the path's existence is read here
    config = tmp_path / "cfg" / "ml.yaml"  # paths in [data] are relative to the config file's folder
    config.write_text(
        yaml.safe_dump({"data": {"source": "movielens", "movielens_dir": str(src), "movielens_posters": "posters"}})
    )
    m = logs_mapping(load_config(str(config)))
    assert (m.items.image_pattern, Path(m.media_root)) == ("{item}.jpg", posters.resolve())
    result = adapt_logs(m, tmp_path / "out", echo=lambda _line: None)
    covers = {r["item_id"]: r["cover_path"] for r in rows(result, "items")}
    assert covers == {10: "10.jpg", 20: None, 30: "30.jpg", 40: None, 50: None, 60: None}
    assert manifest_of(result)["media"]["root"] == str(posters.resolve())
    assert result.counts["media_missing_cover_path"] == 4  # movies 20, 40, 50, 60 have no poster file


def test_a_posters_folder_that_is_not_there_is_named(tmp_path):
    from jobs.pipeline import load_config, logs_mapping

    cfg = load_config("movielens")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, movielens_posters=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        logs_mapping(cfg)


def test_default_posters_are_the_environment_folder_and_a_missing_one_says_how_to_go_text_only(tmp_path, monkeypatch):
    import yaml

    from jobs.pipeline import load_config, logs_mapping

    config = tmp_path / "ml.yaml"
    data = {"source": "movielens", "movielens_dir": "default", "movielens_posters": "default"}
    config.write_text(yaml.safe_dump({"data": data}))
    posters = tmp_path / "elsewhere"
    posters.mkdir()
    monkeypatch.setenv("SAIL_MOVIELENS_POSTERS", str(posters))
    cfg = load_config(str(config))
    assert cfg.data.movielens_posters == "default"  # not a folder named `default` beside the config
    assert cfg.data.movielens_dir == str(tmp_path / "default")  # the keyword is the posters' only
    assert Path(logs_mapping(cfg).media_root) == posters.resolve()
    monkeypatch.setenv("SAIL_MOVIELENS_POSTERS", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"nope is not a folder .*movielens_posters: null for text only"):
        logs_mapping(cfg)
