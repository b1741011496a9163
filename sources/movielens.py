"""MovieLens adapter: maps a MovieLens ratings/tags dump (e.g. ml-latest-small) into the log contracts.

The output is laid out like a generated world, so every pipeline stage runs on it unchanged::

    <out_dir>/items/            ITEMS
    <out_dir>/interactions/     INTERACTIONS
    <out_dir>/feed_requests/    FEED_REQUESTS
    <out_dir>/searches/         SEARCHES (empty: MovieLens has no search log)
    <out_dir>/user_activity/    USER_ACTIVITY
    <out_dir>/manifest.json     written last; its presence means the data set is complete

Source files (``<src_dir>/``): ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``
(movieId,title,genres) and ``tags.csv`` (userId,movieId,tag,timestamp) are required; ``links.csv`` (IMDb/TMDB
ids) is not used. A missing folder or file raises FileNotFoundError naming it; a file without a required column,
with a value of the wrong type, with a null in a required column or with a duplicate key raises ValueError naming
the file and the column.

Mapping decisions (MovieLens is a rating log, not a feed log; each gap is filled the same documented way):

Items (one per movies.csv row, so items without ratings are kept):
- ``item_id`` = movieId; ``title`` = movies.csv title, year included ("Toy Story (1995)").
- ``tags`` = the genres split on '|' (source casing, "(no genres listed)" dropped), followed by the movie's
  ``TOP_USER_TAGS`` most frequent user tags from tags.csv, lower-cased and stripped; ties are broken
  alphabetically, and a user tag equal (case-insensitively) to one of the movie's genres is not repeated. User tags
  are behaviour: with ``content_cutoff`` given (the pipeline passes the embedding cutoff), only tags written before
  it count, so the catalogue knows nothing of the held-out period; the manifest records it as ``content_cutoff``.
- ``category`` = the first genre, or "unknown" when the movie lists none.
- ``author_id`` = 0 for every item: MovieLens has no uploader / director field (``UNKNOWN_AUTHOR``).
- ``ocr_text`` / ``asr_text`` = null; no media: ``cover_path`` null, ``frame_paths`` empty, ``audio_path`` null
  (text modality only; the manifest says ``media.mode = "none"``).
- ``duration_ms`` = ``DURATION_MS`` (2 hours) for every item: MovieLens has no runtimes.
- ``created_ts`` = the movie's first rating or tag timestamp: MovieLens has no release timestamps (the year in
  the title is too coarse), and this guarantees no event precedes its item. A movie with neither (impossible in
  the GroupLens dumps, which only list movies with a rating or tag) gets the earliest event of the whole dump.

Interactions (one per rating):
- ``event_id`` = "ml-{userId}-{movieId}" (MovieLens has at most one rating per user and movie; a duplicate pair
  is rejected); ``ts`` = the rating's unix-second timestamp as UTC; ``surface`` = "rating"; ``position`` = 0.
- A rating >= ``positive_rating`` (default ``POSITIVE_RATING``, 4.0) is a positive engagement: ``clicked`` =
  ``finished`` = ``liked`` = True and ``watch_ms`` = the item's duration. A lower rating is an impression shown but
  not engaged: ``clicked`` = ``finished`` = ``liked`` = False and ``watch_ms`` = 0, so it never passes the miners'
  positive threshold and is a negative label for the ranker. ``shared`` = False (no such signal). MovieLens has no
  watch time: ``watch_ms`` only mirrors the label.
- ``propensity`` = 1.0: MovieLens has no logged policy (users chose what to rate), so off-policy estimates
  (IPS/SNIPS) computed on this data set are not meaningful.
- ``request_id`` = "ml-{userId}-s{k}": one request per (user, session), sessions numbered from 0 per user. A
  new session starts when the gap to the user's previous rating exceeds ``session_gap_s`` (default 1800 s =
  30 min; a gap of exactly ``session_gap_s`` stays in the session). Rows are ordered by user, timestamp, then
  movieId. Ratings of a movieId absent from movies.csv are dropped (counted in the manifest).

Feed requests (one per request_id): ``ts`` = the session's first rating, ``surface`` = "rating",
``candidate_item_ids`` = the items rated in the session in row order, ``candidate_propensities`` = 1/n each
(uniform, they sum to 1; like ``propensity`` they are a placeholder, not a logged policy).

Searches: MovieLens has no search log: the table is written EMPTY (with its schema) and the manifest says so.

User activity (one per user and UTC day with at least one rating): ``sessions`` = distinct sessions with a
rating that day (a session crossing midnight counts on both days), ``impressions`` = ratings that day,
``watch_ms`` = the sum of their ``watch_ms``.

Manifest: ``start_date`` = UTC date of the first rating, ``days`` = calendar days from it to the last rating
inclusive, ``now`` = ISO timestamp of the last event of the dump (rating or tag; every ``created_ts`` is at or
before it), ``catalogue_start`` = the earliest ``created_ts``, ``media`` = ``{"root": null, "mode": "none"}``,
``counts`` per table (plus users, tag rows used and dropped ratings) and ``notes`` listing the decisions above.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from core.contracts import FEED_REQUESTS, INTERACTIONS, ITEMS, SEARCHES, USER_ACTIVITY, TableSchema
from core.io import write_json_atomic, write_table

DATASET = "movielens"
SURFACE = "rating"
DURATION_MS = 2 * 60 * 60 * 1000
"""Every item's duration: MovieLens has no runtimes, so a constant 2 hours."""
UNKNOWN_AUTHOR = 0
"""MovieLens has no uploader / director field."""
POSITIVE_RATING = 4.0
"""A rating at or above this is a positive (liked, finished)."""
TOP_USER_TAGS = 5
NO_GENRES = "(no genres listed)"
UNKNOWN_CATEGORY = "unknown"
DEFAULT_SESSION_GAP_S = 1800

RATINGS_COLUMNS: dict[str, pl.DataType] = {
    "userId": pl.Int64(),
    "movieId": pl.Int64(),
    "rating": pl.Float64(),
    "timestamp": pl.Int64(),
}
MOVIES_COLUMNS: dict[str, pl.DataType] = {"movieId": pl.Int64(), "title": pl.String(), "genres": pl.String()}
TAGS_COLUMNS: dict[str, pl.DataType] = {
    "userId": pl.Int64(),
    "movieId": pl.Int64(),
    "tag": pl.String(),
    "timestamp": pl.Int64(),
}

NOTES = [
    "items: one per movies.csv row; item_id = movieId; title keeps the year.",
    "items: tags = genres (without '(no genres listed)') + the movie's top 5 user tags (lower-cased).",
    "items: category = first genre, 'unknown' when none.",
    "items: author_id = 0 for all items (MovieLens has no author field).",
    f"items: duration_ms = {DURATION_MS} (2 hours) for all items (MovieLens has no runtimes).",
    "items: created_ts = first rating or tag of the movie (MovieLens has no release timestamps).",
    "items: text modality only; no cover, frames or audio; ocr_text and asr_text are null.",
    "interactions: one per rating; surface 'rating'; position = 0; shared = False.",
    "interactions: clicked = liked = finished = (rating >= positive_rating); a lower rating is shown, not engaged.",
    "interactions: watch_ms = duration_ms for a positive, 0 otherwise (no watch time logged).",
    "interactions: propensity = 1.0; MovieLens has no logged policy, so off-policy estimates are not meaningful.",
    "interactions: request_id = one request per (user, session); a new session after a gap > session_gap_s.",
    "feed_requests: candidates = the session's rated items; candidate_propensities uniform 1/n (placeholder).",
    "searches: MovieLens has no search log; the searches table is written empty.",
    "user_activity: one row per (user, UTC day with ratings); impressions = ratings that day.",
]


@dataclass(frozen=True)
class MovieLensSource:
    """The source CSVs, typed (source column names)."""

    ratings: pl.DataFrame
    movies: pl.DataFrame
    tags: pl.DataFrame
    src_dir: Path


@dataclass
class AdaptResult:
    """What `adapt_movielens` wrote."""

    out_dir: Path
    manifest_path: Path
    paths: dict[str, Path] = field(default_factory=dict)  # table name -> table directory
    counts: dict[str, int] = field(default_factory=dict)  # table name (and extras) -> rows


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def read_source_csv(path: Path, columns: dict[str, pl.DataType], *, nullable: tuple[str, ...] = ()) -> pl.DataFrame:
    """Reads the required `columns` of one source CSV, typed; extra columns are ignored.

    Raises FileNotFoundError naming the file when it is absent, ValueError naming the file and the column when a
    column is missing, a value does not parse as the column's type, or a column not in `nullable` holds a null.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens source file not found: {path}")
    try:
        header = pl.read_csv(path, n_rows=0, infer_schema_length=0).columns
    except pl.exceptions.NoDataError as exc:
        raise ValueError(f"{path}: empty file, expected a header with columns {list(columns)}") from exc
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found columns {header}")
    # Read everything as text, then cast column by column so an error names the offending column.
    raw = pl.read_csv(path, columns=list(columns), infer_schema_length=0, encoding="utf8")
    out = []
    for name, dtype in columns.items():
        col = raw.get_column(name)
        if dtype != pl.String():
            try:
                col = col.str.strip_chars().cast(dtype, strict=True)
            except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
                raise ValueError(f"{path}: column {name!r} has values that are not {dtype}: {exc}") from exc
        nulls = col.null_count()
        if nulls and name not in nullable:
            raise ValueError(f"{path}: column {name!r} has {nulls} empty value(s)")
        out.append(col)
    return pl.DataFrame(out)


def _check_unique(df: pl.DataFrame, key: list[str], path: Path) -> None:
    dup = df.group_by(key).len().filter(pl.col("len") > 1)
    if dup.height:
        example = dup.row(0, named=True)
        raise ValueError(
            f"{path}: {dup.height} duplicate {'/'.join(key)} value(s) (e.g. {example}); column(s) {key} must be unique"
        )


def read_movielens(src_dir: str | Path) -> MovieLensSource:
    """Reads and validates ratings.csv, movies.csv and tags.csv from `src_dir`."""
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"MovieLens source folder not found: {src}")
    ratings_path, movies_path, tags_path = src / "ratings.csv", src / "movies.csv", src / "tags.csv"
    for p in (ratings_path, movies_path, tags_path):  # fail on any missing file before parsing
        if not p.is_file():
            raise FileNotFoundError(f"MovieLens source file not found: {p}")
    ratings = read_source_csv(ratings_path, RATINGS_COLUMNS)
    movies = read_source_csv(movies_path, MOVIES_COLUMNS, nullable=("genres",))
    tags = read_source_csv(tags_path, TAGS_COLUMNS, nullable=("tag",))
    _check_unique(ratings, ["userId", "movieId"], ratings_path)
    _check_unique(movies, ["movieId"], movies_path)
    return MovieLensSource(ratings=ratings, movies=movies, tags=tags, src_dir=src.resolve())


# --------------------------------------------------------------------------------------------------------
# Mapping (pure functions on polars frames)
# --------------------------------------------------------------------------------------------------------


def _ts_from_unix(col: str | pl.Expr) -> pl.Expr:
    expr = pl.col(col) if isinstance(col, str) else col
    return (expr * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _empty(schema: TableSchema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema.to_polars())


def _select(df: pl.DataFrame, schema: TableSchema) -> pl.DataFrame:
    return df.select([pl.col(n).cast(t) for n, t in schema.to_polars().items()])


def map_items(
    movies: pl.DataFrame, tags: pl.DataFrame, ratings: pl.DataFrame, content_cutoff: dt.datetime | None = None
) -> pl.DataFrame:
    """ITEMS rows from movies.csv, tags.csv and ratings.csv (see the module docstring for each column); user tags
    written at or after `content_cutoff` (when given) are not used."""
    events = pl.concat(
        [
            ratings.select(pl.col("movieId"), pl.col("timestamp")),
            tags.select(pl.col("movieId"), pl.col("timestamp")),
        ]
    )
    first_seen = events.group_by("movieId").agg(pl.col("timestamp").min().alias("first_ts"))
    fallback = events.get_column("timestamp").min() if events.height else 0

    genres = (
        movies.select(
            "movieId",
            pl.col("genres")
            .fill_null("")
            .str.split("|")
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter((pl.element() != "") & (pl.element() != NO_GENRES)))
            .alias("genre_list"),
        )
        if movies.height
        else pl.DataFrame(schema={"movieId": pl.Int64(), "genre_list": pl.List(pl.String())})
    )
    genre_lower = (
        genres.explode("genre_list")
        .drop_nulls("genre_list")
        .select("movieId", pl.col("genre_list").str.to_lowercase().alias("tag"))
        .unique()
    )
    known_tags = tags if content_cutoff is None else tags.filter(pl.col("timestamp") < int(content_cutoff.timestamp()))
    user_tags = (
        known_tags.select("movieId", pl.col("tag").str.strip_chars().str.to_lowercase())
        .drop_nulls("tag")
        .filter(pl.col("tag") != "")
        .join(genre_lower, on=["movieId", "tag"], how="anti")
        .group_by("movieId", "tag")
        .len()
        .sort(["movieId", "len", "tag"], descending=[False, True, False])
        .group_by("movieId", maintain_order=True)
        .agg(pl.col("tag").head(TOP_USER_TAGS).alias("user_tags"))
    )

    items = (
        movies.select("movieId", "title")
        .join(genres, on="movieId", how="left", maintain_order="left")
        .join(user_tags, on="movieId", how="left", maintain_order="left")
        .join(first_seen, on="movieId", how="left", maintain_order="left")
        .with_columns(
            pl.col("genre_list").fill_null(pl.lit([], dtype=pl.List(pl.String()))),
            pl.col("user_tags").fill_null(pl.lit([], dtype=pl.List(pl.String()))),
        )
        .select(
            pl.col("movieId").alias("item_id"),
            _ts_from_unix(pl.col("first_ts").fill_null(fallback)).alias("created_ts"),
            pl.lit(UNKNOWN_AUTHOR, dtype=pl.Int64()).alias("author_id"),
            pl.col("genre_list").list.first().fill_null(UNKNOWN_CATEGORY).alias("category"),
            pl.col("title"),
            pl.lit(None, dtype=pl.String()).alias("ocr_text"),
            pl.lit(None, dtype=pl.String()).alias("asr_text"),
            pl.concat_list("genre_list", "user_tags").alias("tags"),
            pl.lit(DURATION_MS, dtype=pl.Int64()).alias("duration_ms"),
            pl.lit(None, dtype=pl.String()).alias("cover_path"),
            pl.lit([], dtype=pl.List(pl.String())).alias("frame_paths"),
            pl.lit(None, dtype=pl.String()).alias("audio_path"),
        )
        .sort("item_id")
    )
    return _select(items, ITEMS)


def map_interactions(
    ratings: pl.DataFrame,
    items: pl.DataFrame,
    session_gap_s: int = DEFAULT_SESSION_GAP_S,
    positive_rating: float = POSITIVE_RATING,
) -> pl.DataFrame:
    """INTERACTIONS rows, one per rating of a known item, sessionised by `session_gap_s`; a rating >=
    `positive_rating` is engaged, a lower one shown but not engaged.

    Ordered by user, timestamp, movieId. Ratings of items absent from `items` are dropped.
    """
    if session_gap_s < 0:
        raise ValueError(f"session_gap_s must be >= 0, got {session_gap_s}")
    durations = items.select(pl.col("item_id").alias("movieId"), "duration_ms")
    df = (
        ratings.join(durations, on="movieId", how="inner")
        .sort(["userId", "timestamp", "movieId"])
        .with_columns(gap=pl.col("timestamp").diff().over("userId"))
        .with_columns(
            session=(pl.col("gap").is_null() | (pl.col("gap") > session_gap_s))
            .cast(pl.Int64())
            .cum_sum()
            .over("userId")
            - 1,
            positive=pl.col("rating") >= positive_rating,
        )
    )
    out = df.select(
        pl.format("ml-{}-{}", "userId", "movieId").alias("event_id"),
        pl.format("ml-{}-s{}", "userId", "session").alias("request_id"),
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        _ts_from_unix("timestamp").alias("ts"),
        pl.lit(SURFACE).alias("surface"),
        pl.lit(0, dtype=pl.Int32()).alias("position"),
        pl.lit(1.0).alias("propensity"),
        pl.col("positive").alias("clicked"),
        pl.when(pl.col("positive")).then(pl.col("duration_ms")).otherwise(0).alias("watch_ms"),
        pl.col("positive").alias("finished"),
        pl.col("positive").alias("liked"),
        pl.lit(False).alias("shared"),
    )
    return _select(out, INTERACTIONS)


def map_feed_requests(interactions: pl.DataFrame) -> pl.DataFrame:
    """FEED_REQUESTS rows: one per request_id, candidates = its items in row order, uniform propensities."""
    if interactions.height == 0:
        return _empty(FEED_REQUESTS)
    req = (
        interactions.sort(["user_id", "ts", "item_id"])
        .group_by("request_id", maintain_order=True)
        .agg(
            pl.col("user_id").first(),
            pl.col("ts").min(),
            pl.col("surface").first(),
            pl.col("item_id").alias("candidate_item_ids"),
        )
        .with_columns(
            pl.col("candidate_item_ids")
            .list.eval(pl.element().cast(pl.Float64()) * 0.0 + 1.0 / pl.len())
            .alias("candidate_propensities")
        )
    )
    return _select(req, FEED_REQUESTS)


def map_searches() -> pl.DataFrame:
    """SEARCHES rows: none (MovieLens has no search log)."""
    return _empty(SEARCHES)


def map_user_activity(interactions: pl.DataFrame) -> pl.DataFrame:
    """USER_ACTIVITY rows: one per (user, UTC day) with at least one interaction."""
    if interactions.height == 0:
        return _empty(USER_ACTIVITY)
    act = (
        interactions.with_columns(pl.col("ts").dt.date().alias("activity_date"))
        .group_by("user_id", "activity_date")
        .agg(
            pl.col("request_id").n_unique().alias("sessions"),
            pl.len().alias("impressions"),
            pl.col("watch_ms").sum().alias("watch_ms"),
        )
        .sort(["user_id", "activity_date"])
    )
    return _select(act, USER_ACTIVITY)


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------


def _iso(ts: dt.datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def adapt_movielens(
    src_dir: str | Path,
    out_dir: str | Path,
    session_gap_s: int = DEFAULT_SESSION_GAP_S,
    positive_rating: float = POSITIVE_RATING,
    content_cutoff: dt.datetime | None = None,
) -> AdaptResult:
    """Maps the MovieLens dump in `src_dir` into the log contracts under `out_dir` (manifest.json last).

    `positive_rating`: the lowest engaged rating; `content_cutoff`: user tags from this time on are not used.
    """
    src = read_movielens(src_dir)
    out = Path(out_dir)

    items = map_items(src.movies, src.tags, src.ratings, content_cutoff)
    interactions = map_interactions(src.ratings, items, session_gap_s, positive_rating)
    tables: dict[str, tuple[pl.DataFrame, TableSchema]] = {
        "items": (items, ITEMS),
        "interactions": (interactions, INTERACTIONS),
        "feed_requests": (map_feed_requests(interactions), FEED_REQUESTS),
        "searches": (map_searches(), SEARCHES),
        "user_activity": (map_user_activity(interactions), USER_ACTIVITY),
    }

    # Remove a stale manifest first: the data set is complete only once the new one is written.
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    result = AdaptResult(out_dir=out.resolve(), manifest_path=manifest_path.resolve())
    for name, (df, schema) in tables.items():
        path = out / name
        result.counts[name] = write_table(df.to_arrow(), schema, path)
        result.paths[name] = path.resolve()

    known = set(items.get_column("item_id").to_list())
    dropped = src.ratings.filter(~pl.col("movieId").is_in(list(known))).height
    result.counts["users"] = interactions.get_column("user_id").n_unique()
    result.counts["ratings_dropped_unknown_item"] = dropped
    result.counts["tag_rows"] = src.tags.height

    event_ts = pl.concat([src.ratings.get_column("timestamp"), src.tags.get_column("timestamp")])
    now = None if event_ts.is_empty() else _unix_to_dt(int(event_ts.max()))
    if interactions.height:
        first, last = interactions.get_column("ts").min(), interactions.get_column("ts").max()
    elif now is not None:
        first = last = now
    else:
        first = last = None
    start_date = first.date() if first is not None else None
    days = (last.date() - first.date()).days + 1 if first is not None else 0
    catalogue_start = items.get_column("created_ts").min() if items.height else None

    notes = list(NOTES)
    notes.append(f"interactions: session_gap_s = {session_gap_s}; positive_rating = {positive_rating}.")
    if content_cutoff is not None:
        notes.append(f"items: user tags written before {content_cutoff.isoformat()} only (the embedding cutoff).")
    if dropped:
        notes.append(f"interactions: {dropped} rating(s) of movieIds absent from movies.csv were dropped.")
    manifest = {
        "dataset": DATASET,
        "source": str(src.src_dir),
        "start_date": start_date.isoformat() if start_date is not None else None,
        "days": days,
        "now": _iso(now),
        "catalogue_start": _iso(catalogue_start),
        "media": {"root": None, "mode": "none"},
        "positive_rating": positive_rating,
        "content_cutoff": _iso(content_cutoff),
        "counts": dict(result.counts),
        "notes": notes,
    }
    write_json_atomic(manifest_path, manifest)
    return result


def _unix_to_dt(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def main(argv: list[str] | None = None) -> int:
    """`python -m sources.movielens SRC OUT [--session-gap-s N]`: adapt and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="MovieLens folder (ratings.csv, movies.csv, tags.csv)")
    parser.add_argument("out", type=Path, help="output data directory")
    parser.add_argument("--session-gap-s", type=int, default=DEFAULT_SESSION_GAP_S)
    parser.add_argument("--positive-rating", type=float, default=POSITIVE_RATING)
    args = parser.parse_args(argv)
    result = adapt_movielens(args.src, args.out, session_gap_s=args.session_gap_s, positive_rating=args.positive_rating)
    print(json.dumps({"out_dir": str(result.out_dir), "counts": result.counts}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
