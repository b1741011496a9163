"""Sampled negatives: only valid items (available, not the user's positives, not excluded), distinct, k when the
catalogue allows, seeded, time-honest popularity, and frequencies that match a slow reference."""

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sources.negatives import NEGATIVES_SCHEMA, NegativeSampling, sample_negatives

T0 = datetime(2026, 3, 1, tzinfo=UTC)  # midnight: day 0 of every synthetic log
US = pl.Datetime("us", "UTC")


def _positives(users, items, ts, prefix="e") -> pl.DataFrame:
    """A positives frame: one request per positive, event ids ``{prefix}{i}``."""
    n = len(users)
    return pl.DataFrame(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "request_id": [f"r{prefix}{i}" for i in range(n)],
            "user_id": pl.Series(users, dtype=pl.Int64),
            "item_id": pl.Series(items, dtype=pl.Int64),
            "ts": pl.Series(ts, dtype=US),
        }
    )


def _items(item_ids, created) -> pl.DataFrame:
    return pl.DataFrame({"item_id": pl.Series(item_ids, dtype=pl.Int64), "created_ts": pl.Series(created, dtype=US)})


def _random_log(seed=3, n=3000, n_users=60, n_items=150, days=5):
    """A log over ``days`` days where users repeat items and items keep arriving (30 exist before the log)."""
    rng = np.random.default_rng(seed)
    created = [T0 - timedelta(days=1)] * 30 + [T0 + timedelta(hours=float(h)) for h in rng.uniform(0, 24 * days, 120)]
    items = _items(range(1000, 1000 + n_items), created)
    ts = sorted(T0 + timedelta(seconds=float(s)) for s in rng.uniform(0, days * 86400, n))
    created_at = dict(zip(items["item_id"], items["created_ts"], strict=True))
    users, picks = [], []
    for t in ts:  # each positive's item exists at its ts, and popular ids are preferred
        avail = [i for i, c in created_at.items() if c <= t]
        users.append(int(rng.integers(0, n_users)))
        picks.append(avail[min(int(rng.zipf(1.5)) - 1, len(avail) - 1)])
    return _positives(users, picks, ts), items


def _by_anchor(out: pl.DataFrame) -> dict[str, list[int]]:
    got = defaultdict(list)
    for anchor, item in out.select("anchor_event_id", "item_id").iter_rows():
        got[anchor].append(item)
    return got


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_every_negative_is_valid_distinct_and_k_per_positive(sampler):
    pos, items = _random_log()
    k = 4
    out, stats = sample_negatives(pos, items, NegativeSampling(per_positive=k, sampler=sampler, seed=11))

    user_items = defaultdict(set)  # the whole log, past and future
    for u, i in pos.select("user_id", "item_id").iter_rows():
        user_items[u].add(i)
    created = dict(items.select("item_id", "created_ts").iter_rows())
    anchor = {row[0]: row for row in pos.iter_rows()}
    for event_id, request_id, user, item, ts, anchor_id in out.iter_rows():
        a_event, a_request, a_user, a_item, a_ts = anchor[anchor_id]
        assert (request_id, user, ts) == (a_request, a_user, a_ts)
        assert item in created and created[item] <= ts
        assert item not in user_items[user] and item != a_item
        assert event_id.startswith(f"{anchor_id}~neg")
    groups = _by_anchor(out)
    assert set(groups) == set(anchor)
    assert all(len(v) == k == len(set(v)) for v in groups.values())
    assert sorted(out["event_id"].str.split("~neg").list.get(1).cast(pl.Int64).unique().to_list()) == list(range(k))
    assert out.schema == pl.Schema(NEGATIVES_SCHEMA)
    assert out["event_id"].n_unique() == out.height
    assert_frame_equal(out, out.sort("ts", "user_id", "event_id"))
    assert stats == {
        "per_positive": k,
        "sampler": sampler,
        "alpha": 0.75,
        "seed": 11,
        "positives": pos.height,
        "sampled": pos.height * k,
        "short": 0,
    }


def test_same_seed_same_frame_other_seed_other_frame():
    pos, items = _random_log(n=800)
    cfg = NegativeSampling(per_positive=3, seed=5)
    first, _ = sample_negatives(pos, items, cfg)
    again, _ = sample_negatives(pos.sample(fraction=1.0, shuffle=True, seed=1), items.reverse(), cfg)
    other, _ = sample_negatives(pos, items, NegativeSampling(per_positive=3, seed=6))
    assert_frame_equal(first, again)
    assert not first.equals(other)


def test_a_day_does_not_depend_on_the_other_days():
    # Given the uniform sampler (no popularity) and the other days' pairs passed as exclusions
    pos, items = _random_log(n=800)
    cfg = NegativeSampling(per_positive=3, sampler="uniform", seed=2)
    day2 = pos.filter(pl.col("ts").dt.date() == (T0 + timedelta(days=2)).date())
    # When day 2 is sampled alone
    alone, _ = sample_negatives(day2, items, cfg, exclude=pos.select("user_id", "item_id"))
    full, _ = sample_negatives(pos, items, cfg)
    # Then it gets exactly the negatives it gets inside the whole log
    assert_frame_equal(alone, full.filter(pl.col("anchor_event_id").is_in(day2["event_id"].implode())))


def test_exclude_pairs_are_never_sampled():
    pos, items = _random_log(n=600)
    cfg = NegativeSampling(per_positive=5, sampler="uniform", seed=4)
    plain, _ = sample_negatives(pos, items, cfg)
    exclude = plain.filter(pl.col("user_id") < 30).select("user_id", "item_id").unique()  # pairs that do get drawn
    out, stats = sample_negatives(pos, items, cfg, exclude=exclude)
    banned = set(exclude.iter_rows())
    assert len(banned) > 100
    assert not banned & set(out.select("user_id", "item_id").iter_rows())
    # Each positive gets min(5, its valid items): excluding drawn pairs leaves some early positives short
    banned_for = defaultdict(set)
    for u, i in [*banned, *pos.select("user_id", "item_id").iter_rows()]:
        banned_for[u].add(i)
    valid = [
        sum(c <= t and i not in banned_for[u] for i, c in items.iter_rows())
        for u, t in pos.select("user_id", "ts").iter_rows()
    ]
    assert out.height == sum(min(5, v) for v in valid) > 0.9 * pos.height * 5
    assert stats["short"] == sum(v < 5 for v in valid) > 0


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_tiny_catalogue_gives_fewer_and_counts_them(sampler):
    # Given items 1..5: item 5 arrives between the user's two positives, item 4 is excluded for the user, and
    # the user's later positive (item 2) is already excluded at the first one
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(days=1, hours=1)
    pos = _positives([10, 10], [1, 2], [t1, t2])
    items = _items([1, 2, 3, 4, 5], [T0, T0, T0, T0, T0 + timedelta(hours=5)])
    exclude = pl.DataFrame({"user_id": [10, 99], "item_id": [4, 3]})
    # When 3 negatives are asked for
    out, stats = sample_negatives(pos, items, NegativeSampling(per_positive=3, sampler=sampler), exclude=exclude)
    # Then the first positive gets item 3 only, the second items 3 and 5
    assert _by_anchor(out)["e0"] == [3]
    assert sorted(_by_anchor(out)["e1"]) == [3, 5]
    assert out.filter(pl.col("anchor_event_id") == "e1")["event_id"].sort().to_list() == ["e1~neg0", "e1~neg1"]
    assert (stats["sampled"], stats["short"], stats["positives"]) == (3, 2, 2)


def test_a_user_of_all_popular_items_still_gets_k_or_is_counted_short():
    # Given one user with 2000 positives on each of the 5 items that carry almost all popularity weight, and 95
    # items nobody engaged with; the user's positive on day 1 needs negatives from those 95
    hist = [i for i in range(5) for _ in range(2000)]
    ts = [T0 + timedelta(seconds=j) for j in range(len(hist))] + [T0 + timedelta(days=1)]
    pos = _positives([1] * (len(hist) + 1), [*hist, 5], ts)
    items = _items(range(100), [T0 - timedelta(days=1)] * 100)
    day1 = pl.col("ts") >= T0 + timedelta(days=1)
    # When alpha = 1 (a draw is valid about once in 100 tries), the rounds still find k = 10
    out, _ = sample_negatives(pos, items, NegativeSampling(per_positive=10, alpha=1.0, seed=1))
    got = out.filter(day1)["item_id"].to_list()
    assert len(got) == len(set(got)) == 10 and min(got) > 5
    # When alpha = 3 (once in ~10 ** 9 tries), the positive gets fewer, counted as short, and never an invalid one
    out, stats = sample_negatives(pos, items, NegativeSampling(per_positive=10, alpha=3.0, seed=1))
    got = out.filter(day1)["item_id"].to_list()
    assert len(got) < 10 and all(i > 5 for i in got)
    assert stats["short"] == 1  # day 0 has no earlier popularity: its positives get their 10


def test_no_available_item_gives_none():
    pos = _positives([1], [7], [T0])
    items = _items([7, 8], [T0, T0 + timedelta(seconds=1)])
    out, stats = sample_negatives(pos, items, NegativeSampling(per_positive=2))
    assert out.height == 0 and out.schema == pl.Schema(NEGATIVES_SCHEMA)
    assert stats["short"] == 1
    out, stats = sample_negatives(pos, items.head(0), NegativeSampling(per_positive=2, sampler="uniform"))
    assert out.height == 0 and out.schema == pl.Schema(NEGATIVES_SCHEMA)
    assert (stats["positives"], stats["short"]) == (1, 1)


def _reference_inclusion(pos, items, day, sampler, alpha, k, exclude=()):
    """Slow obvious reference: expected times each item is sampled for the positives of ``day``. Weights are
    (1 + positives on earlier days) ** alpha (1 for uniform) over the valid items; k = 1 or 2 draws without
    replacement, so P(i in sample) = p_i + sum_{j != i} p_j * p_i / (1 - p_j) for k = 2."""
    earlier = Counter(i for i, t in pos.select("item_id", "ts").iter_rows() if t.date() < day)
    banned = defaultdict(set)
    for u, i in [*pos.select("user_id", "item_id").iter_rows(), *exclude]:
        banned[u].add(i)
    expected = Counter()
    for _, _, u, _, t in pos.iter_rows():
        if t.date() != day:
            continue
        valid = [i for i, c in items.iter_rows() if c <= t and i not in banned[u]]
        w = {i: (1 + earlier[i]) ** alpha if sampler == "popularity" else 1.0 for i in valid}
        total = sum(w.values())
        p = {i: w[i] / total for i in valid}
        for i in valid:
            expected[i] += p[i] if k == 1 else p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in valid if j != i)
    return expected


@pytest.mark.parametrize(
    ("sampler", "alpha", "k"), [("uniform", 0.75, 2), ("popularity", 0.75, 2), ("popularity", 2.0, 1)]
)
def test_frequencies_match_the_slow_reference(sampler, alpha, k):
    # Given a day 0 where item 100 + i has 4 * i positives, and a day 1 of 6000 fresh users with one positive each
    # (their items spread over the catalogue; some users also exclude an item)
    rng = np.random.default_rng(0)
    hist_items = [100 + i for i in range(10) for _ in range(4 * i)]
    day1_items = rng.integers(100, 112, 6000).tolist()
    users = list(range(len(hist_items))) + list(range(1000, 7000))
    ts = [T0 + timedelta(minutes=j) for j in range(len(hist_items))]
    ts += [T0 + timedelta(days=1, seconds=10 * j) for j in range(6000)]
    pos = _positives(users, hist_items + day1_items, ts)
    items = _items(range(100, 112), [T0 - timedelta(days=1)] * 11 + [T0 + timedelta(days=1, hours=8)])
    exclude = [(u, 105) for u in range(1000, 7000, 3)]
    ex = pl.DataFrame(exclude, schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row")
    # When negatives are sampled
    out, stats = sample_negatives(pos, items, NegativeSampling(k, sampler, alpha, seed=9), exclude=ex)
    # Then day 1's counts per item match the exact expectation within 5 standard deviations
    day = (T0 + timedelta(days=1)).date()
    expected = _reference_inclusion(pos, items, day, sampler, alpha, k, exclude)
    got = Counter(out.filter(pl.col("ts").dt.date() == day)["item_id"].to_list())
    assert stats["short"] == 0
    assert set(got) <= set(expected)
    for item, e in expected.items():
        assert abs(got[item] - e) <= 5 * np.sqrt(e) + 1, (item, got[item], e)
    chi2 = sum((got[i] - e) ** 2 / e for i, e in expected.items() if e > 0)
    assert chi2 < 40  # 11 cells; ~0.01% tail of chi-square(11)


def test_popularity_is_only_from_earlier_days():
    # Given item 0 with no positives until day 1 noon, where it gets 3000; other positives around the clock
    rng = np.random.default_rng(1)
    n0, n1, n2 = 1800, 1000, 1000
    items0 = rng.integers(1, 10, n0).tolist()
    ts0 = [T0 + timedelta(seconds=40 * j) for j in range(n0)]
    burst = [0] * 3000
    ts_burst = [T0 + timedelta(days=1, hours=12)] * 3000
    items1 = rng.integers(1, 10, n1).tolist()
    ts1 = [T0 + timedelta(days=1, seconds=80 * j) for j in range(n1)]
    items2 = rng.integers(1, 10, n2).tolist()
    ts2 = [T0 + timedelta(days=2, seconds=80 * j) for j in range(n2)]
    all_items = items0 + burst + items1 + items2
    pos = _positives(range(len(all_items)), all_items, ts0 + ts_burst + ts1 + ts2)
    items = _items(range(10), [T0 - timedelta(days=1)] * 10)
    cfg = NegativeSampling(per_positive=1, sampler="popularity", alpha=0.75, seed=3)
    out, _ = sample_negatives(pos, items, cfg)
    non_burst = out.join(pos.filter(pl.col("item_id") != 0).select(anchor_event_id="event_id"), on="anchor_event_id")
    share = non_burst.group_by(pl.col("ts").dt.date().alias("day")).agg((pl.col("item_id") == 0).mean().alias("s"))
    share = dict(share.sort("day").iter_rows())
    days = [(T0 + timedelta(days=d)).date() for d in range(3)]
    # Then item 0 is drawn like any item on day 0, barely on day 1 (weight 1 against ~200 ** 0.75), and mostly on
    # day 2 once its burst is in the past
    assert 0.05 < share[days[0]] < 0.15
    assert share[days[1]] < 0.02
    assert share[days[2]] > 0.3
    # And the later days' positives change nothing before them
    early = pos.filter(pl.col("ts") < T0 + timedelta(days=1))
    alone, _ = sample_negatives(early, items, cfg, exclude=pos.select("user_id", "item_id"))
    assert_frame_equal(alone, out.filter(pl.col("ts") < T0 + timedelta(days=1)))


def test_zero_per_positive_gives_an_empty_frame():
    pos, items = _random_log(n=50)
    out, stats = sample_negatives(pos, items, NegativeSampling(per_positive=0, sampler="uniform", seed=1))
    assert out.height == 0 and out.schema == pl.Schema(NEGATIVES_SCHEMA)
    assert stats == {
        "per_positive": 0,
        "sampler": "uniform",
        "alpha": 0.75,
        "seed": 1,
        "positives": 50,
        "sampled": 0,
        "short": 0,
    }
    empty, stats = sample_negatives(pos.head(0), items, NegativeSampling(per_positive=3))
    assert empty.height == 0 and empty.schema == pl.Schema(NEGATIVES_SCHEMA) and stats["positives"] == 0


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (NegativeSampling(per_positive=-1), "per_positive"),
        (NegativeSampling(per_positive=2, sampler="zipf"), "sampler"),
        (NegativeSampling(per_positive=2, alpha=-0.5), "alpha"),
        (NegativeSampling(per_positive=2, seed=-3), "seed"),
    ],
)
def test_bad_config_is_rejected(cfg, message):
    pos, items = _random_log(n=20)
    with pytest.raises(ValueError, match=message):
        sample_negatives(pos, items, cfg)


def test_bad_frames_are_rejected_naming_frame_and_column():
    pos, items = _random_log(n=20)
    cfg = NegativeSampling(per_positive=2)
    with pytest.raises(ValueError, match=r"positives: missing column 'ts'"):
        sample_negatives(pos.drop("ts"), items, cfg)
    with pytest.raises(ValueError, match=r"items: missing column 'created_ts'"):
        sample_negatives(pos, items.drop("created_ts"), cfg)
    with pytest.raises(ValueError, match=r"exclude: missing column 'item_id'"):
        sample_negatives(pos, items, cfg, exclude=pos.select("user_id"))
    with pytest.raises(ValueError, match=r"positives: column 'user_id' must be Int64"):
        sample_negatives(pos.with_columns(pl.col("user_id").cast(pl.String)), items, cfg)
    with pytest.raises(ValueError, match=r"positives: column 'event_id' has duplicate values"):
        sample_negatives(pos.with_columns(event_id=pl.lit("same")), items, cfg)
    with pytest.raises(ValueError, match=r"items: column 'item_id' has duplicate values"):
        sample_negatives(pos, pl.concat([items, items]), cfg)


def _log_popularity(pos: pl.DataFrame) -> pl.DataFrame:
    return pos.group_by("item_id", pl.col("ts").dt.date().alias("day")).agg(pl.len().cast(pl.Int64).alias("positives"))


def test_the_log_popularity_given_equals_the_one_counted():
    pos, items = _random_log()
    cfg = NegativeSampling(per_positive=3, sampler="popularity", alpha=1.0, seed=5)
    own, _ = sample_negatives(pos, items, cfg)
    given, _ = sample_negatives(pos, items, cfg, popularity=_log_popularity(pos))
    assert_frame_equal(own, given)


def test_parts_of_users_draw_valid_items_from_the_whole_log_popularity():
    pos, items = _random_log()
    cfg = NegativeSampling(per_positive=3, sampler="popularity", seed=5)
    pop = _log_popularity(pos)
    users = pos["user_id"].unique().sort()
    halves = [pos.filter(pl.col("user_id").is_in(users[: users.len() // 2])), None]
    halves[1] = pos.filter(~pl.col("user_id").is_in(users[: users.len() // 2]))
    outs = [sample_negatives(h, items, cfg, popularity=pop, stream=k)[0] for k, h in enumerate(halves)]
    whole = pl.concat(outs)
    assert whole.height == pos.height * 3
    created = dict(zip(items["item_id"].to_list(), items["created_ts"].to_list(), strict=True))
    positives = defaultdict(set)
    for u, i in pos.select("user_id", "item_id").iter_rows():
        positives[u].add(i)
    for u, i, t in whole.select("user_id", "item_id", "ts").iter_rows():
        assert i not in positives[u] and created[i] <= t
    again = sample_negatives(halves[0], items, cfg, popularity=pop, stream=0)[0]
    assert_frame_equal(outs[0], again)
    assert not outs[0].equals(sample_negatives(halves[0], items, cfg, popularity=pop, stream=1)[0])
