"""Unit checks of the world's building blocks: the response model, the logged policy's Plackett-Luce draws,
interest drift, session placement and the streaming writer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import USER_ACTIVITY
from core.io import is_complete, read_table
from sources.world import response
from sources.world.policy import plackett_luce_slates, softmax_propensities
from sources.world.response import ResponseParams
from sources.world.simulate import SESSION_GAP_MS, place_sessions
from sources.world.sinks import TableStreams
from sources.world.users import drift_interests

P = ResponseParams()


def _users_items(n: int, t: int = 6, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    interest = rng.dirichlet(np.full(t, 0.3), n)
    topics = np.stack([rng.integers(0, t, n), np.full(n, -1)], axis=1)
    return rng, interest, rng.standard_normal((n, d)), topics, rng.standard_normal((n, d)), np.zeros(n)


def test_utility_rises_with_interest_and_collab_alignment():
    _, interest, user_c, topics, item_c, q = _users_items(4000)
    base = response.utility(interest, user_c, topics, item_c, q, P)
    aligned = response.utility(interest, user_c, topics, user_c, q, P)  # item latent = user preference
    assert aligned.mean() > base.mean() + 2 * P.w_collab
    liked = np.stack([interest.argmax(axis=1), np.full(len(interest), -1)], axis=1)
    assert response.utility(interest, user_c, liked, item_c, q, P).mean() > base.mean() + 0.5


def test_probabilities_are_valid_and_position_biased():
    u = np.linspace(-3, 3, 50)
    p0 = response.feed_probabilities(u, np.zeros(50), np.full(50, 15000), P)
    p4 = response.feed_probabilities(u, np.full(50, 4), np.full(50, 15000), P)
    for probs in (p0, p4):
        for k, v in probs.items():
            if k != "reward":
                assert ((v >= 0) & (v <= 1)).all(), k
    assert (p4["click"] < p0["click"]).all()
    assert np.all(np.diff(p0["click"]) > 0) and np.all(np.diff(p0["reward"]) > 0)


def test_sampled_outcomes_obey_the_log_rules():
    rng = np.random.default_rng(1)
    n = 20000
    dur = rng.integers(3000, 60000, n)
    out = response.sample_feed_outcomes(rng, rng.normal(0, 1, n), rng.integers(0, 5, n), dur, P)
    assert (out.watch_ms >= 0).all()
    assert (out.watch_ms[~out.clicked] < 1000).all()
    assert (out.watch_ms[out.finished] == dur[out.finished]).all()
    assert (out.watch_ms[out.clicked & ~out.finished] < dur[out.clicked & ~out.finished]).all()
    assert not (out.liked & ~out.clicked).any() and not (out.shared & ~out.clicked).any()


def test_return_probability_follows_satisfaction():
    act = np.full(3, 0.5)
    p = response.return_probability(act, np.array([-0.2, 0.2, 0.8]), np.ones(3, bool), P)
    assert p[0] < p[1] < p[2]
    assert response.return_probability(act, np.zeros(3), np.zeros(3, bool), P)[0] < 0.5


def test_plackett_luce_conditional_propensities_match_frequencies():
    rng = np.random.default_rng(2)
    logits = np.tile(np.array([[2.0, 1.0, 0.5, 0.0, -np.inf, -1.0]]), (60000, 1))
    props = softmax_propensities(logits)
    assert np.allclose(props.sum(axis=1), 1.0) and (props[:, 4] == 0).all()
    cols, cond = plackett_luce_slates(rng, logits, props, 3)
    assert (cols != 4).all()
    assert np.allclose(cond[:, 0], props[np.arange(len(props)), cols[:, 0]])
    # P(slot 1 = candidate 1 | slot 0 = candidate 0) = p1 / (1 - p0), against the empirical frequency
    first0 = cols[:, 0] == 0
    expected = props[0, 1] / (1 - props[0, 0])
    assert abs((cols[first0, 1] == 1).mean() - expected) < 0.015
    assert np.allclose(cond[first0 & (cols[:, 1] == 1), 1], expected)


def test_drift_keeps_distributions_and_pulls_toward_consumption():
    rng = np.random.default_rng(3)
    interest = rng.dirichlet(np.full(5, 0.5), 1000)
    consumed = np.zeros_like(interest)
    consumed[:, 2] = 1.0
    new = drift_interests(rng, interest, consumed, sigma=0.1, pull=0.2)
    assert np.allclose(new.sum(axis=1), 1.0) and (new > 0).all()
    assert new[:, 2].mean() > interest[:, 2].mean() + 0.1


def test_sessions_do_not_overlap_and_stay_inside_the_day():
    rng = np.random.default_rng(4)
    owner = np.repeat(np.arange(500), rng.integers(1, 6, 500))
    length = rng.integers(60_000, 3_600_000, len(owner))
    start = place_sessions(rng, owner, length)
    end = start + length
    assert start.min() >= 0 and end.max() <= 86_400_000
    same = owner[1:] == owner[:-1]
    assert (start[1:][same] - end[:-1][same] >= SESSION_GAP_MS).all()


def _activity_chunk(n: int) -> pa.Table:
    return pa.table(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "activity_date": pa.array(np.full(n, 20000, np.int32)).cast(pa.date32()),
            "sessions": np.ones(n, np.int32),
            "impressions": np.ones(n, np.int32),
            "watch_ms": np.ones(n, np.int64),
        }
    )


def test_table_streams_write_atomically(tmp_path):
    with TableStreams({"a": (USER_ACTIVITY, tmp_path / "a"), "b": (USER_ACTIVITY, tmp_path / "b")}) as s:
        for _ in range(5):
            s.put("a", _activity_chunk(10))
        s.put("b", None)
    assert s.rows == {"a": 50, "b": 0}
    assert read_table(tmp_path / "a", USER_ACTIVITY).num_rows == 50
    with pytest.raises(ZeroDivisionError), TableStreams({"c": (USER_ACTIVITY, tmp_path / "c")}) as s:
        s.put("c", _activity_chunk(10))
        raise ZeroDivisionError
    assert not is_complete(tmp_path / "c") and not (tmp_path / "c").exists()
