"""Cluster bootstrap, paired bootstrap differences and the DeLong test: coverage, determinism, references."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from core.bootstrap import (
    Interval,
    cluster_bootstrap,
    delong_components,
    delong_test,
    gauc_bootstrap,
    paired_bootstrap_diff,
    paired_gauc_diff,
    slice_gain_difference,
)
from core.metrics import auc, gauc, logloss, normalized_entropy


def _auc_world(rng: np.random.Generator, n_users: int, per_user: int, shift: float = 1.0):
    """Labels independent of users, scores ~ N(shift * y, 1): the population AUC is Phi(shift / sqrt 2)."""
    users = np.repeat(np.arange(n_users), per_user)
    y = (rng.random(users.size) < 0.3).astype(np.int64)
    s = shift * y + rng.normal(size=users.size)
    return y, s, users


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _covers(iv: Interval, truth: float) -> bool:
    return iv.low <= truth <= iv.high


def test_auc_interval_covers_the_truth_at_about_the_nominal_rate():
    # Given 100 independent small worlds (40 users x 10 impressions) with a known population AUC
    truth = _phi(1.0 / math.sqrt(2.0))
    hits = 0
    for rep in range(100):
        y, s, users = _auc_world(np.random.default_rng(1000 + rep), 40, 10)
        iv = cluster_bootstrap(auc, {"labels": y, "scores": s}, users, n_boot=200, seed=rep)
        hits += _covers(iv, truth)
    # Then the 95 % interval covers it about 95 % of the time (binomial sd over 100 repeats ~ 2 points)
    assert 0.85 <= hits / 100 <= 0.99


def test_resampling_users_not_rows_keeps_coverage_under_within_user_correlation():
    # Given users whose click propensities differ (p_u ~ Beta(1, 3), mean 1/4), 20 impressions each
    def click_rate(labels: np.ndarray) -> float:
        return float(labels.mean())

    cluster_hits = row_hits = 0
    for rep in range(100):
        rng = np.random.default_rng(2000 + rep)
        users = np.repeat(np.arange(30), 20)
        y = (rng.random(users.size) < rng.beta(1.0, 3.0, 30)[users]).astype(np.int64)
        data = {"labels": y}
        cluster_hits += _covers(cluster_bootstrap(click_rate, data, users, n_boot=200, seed=rep), 0.25)
        row_hits += _covers(cluster_bootstrap(click_rate, data, np.arange(users.size), n_boot=200, seed=rep), 0.25)
    # Then resampling users keeps ~95 % coverage while resampling rows is far too narrow (design effect ~ 4.8)
    assert 0.85 <= cluster_hits / 100 <= 0.99
    assert row_hits / 100 < 0.8


def test_interval_narrows_with_more_users():
    rng = np.random.default_rng(5)
    widths = []
    for n_users in (50, 400):
        y, s, users = _auc_world(rng, n_users, 10)
        iv = cluster_bootstrap(auc, {"labels": y, "scores": s}, users, n_boot=300, seed=0)
        assert iv.low < iv.estimate < iv.high
        widths.append(iv.high - iv.low)
    assert widths[1] < 0.6 * widths[0]  # ~ 1 / sqrt(8) in theory


def test_bootstrap_is_deterministic_under_a_seed():
    y, s, users = _auc_world(np.random.default_rng(6), 60, 5)
    data = {"labels": y, "scores": s}
    first = cluster_bootstrap(auc, data, users, n_boot=100, seed=11)
    assert cluster_bootstrap(auc, data, users, n_boot=100, seed=11) == first
    assert cluster_bootstrap(auc, data, users, n_boot=100, seed=12) != first
    assert (first.level, first.n_boot, first.n_failed) == (0.95, 100, 0)
    assert first.estimate == auc(y, s)


def test_gauc_through_the_bootstrap_and_failed_resamples_are_counted():
    y, s, users = _auc_world(np.random.default_rng(7), 80, 6)
    metric = functools.partial(gauc, weighting="positives")
    iv = cluster_bootstrap(metric, {"labels": y, "scores": s, "groups": users}, users, n_boot=50, seed=0)
    assert iv.estimate == gauc(y, s, users, "positives").value
    assert iv.low <= iv.estimate <= iv.high
    # two users, one all-positive and one all-negative: a resample that draws one user twice has one class
    iv = cluster_bootstrap(auc, {"labels": [1, 1, 0, 0], "scores": [0.9, 0.8, 0.1, 0.2]}, [0, 0, 1, 1], n_boot=200)
    assert iv.n_failed > 0 and iv.n_boot + iv.n_failed == 200
    assert iv.low == iv.high == 1.0


def test_auc_fast_path_equals_materialised_resamples():
    # `auc` is bootstrapped from row multiplicities with one sort; a wrapper forces the obvious path that
    # materialises every resample. Same seed -> same draws -> the same statistics up to summation order.
    rng = np.random.default_rng(13)
    y, _, users = _auc_world(rng, 70, 6)
    s = np.round(rng.normal(size=y.size) + 0.7 * y, 1)  # ties
    s_b = s + 0.3 * rng.normal(size=y.size)
    data = {"labels": y, "scores": s}
    fast = cluster_bootstrap(auc, data, users, n_boot=100, seed=3)
    slow = cluster_bootstrap(lambda labels, scores: auc(labels, scores), data, users, n_boot=100, seed=3)
    assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
    fast_d = paired_bootstrap_diff(auc, y, s, s_b, users, n_boot=100, seed=3)
    slow_d = paired_bootstrap_diff(lambda labels, scores: auc(labels, scores), y, s, s_b, users, n_boot=100, seed=3)
    assert fast_d.diff.low == pytest.approx(slow_d.diff.low, abs=1e-12)
    assert fast_d.diff.high == pytest.approx(slow_d.diff.high, abs=1e-12)
    assert fast_d.p_value == slow_d.p_value


def test_normalized_entropy_fast_path_equals_materialised_resamples():
    # NE is bootstrapped from per-user sums; a wrapper forces the path that materialises every resample.
    rng = np.random.default_rng(17)
    y, _, users = _auc_world(rng, 60, 7)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + 0.1 * rng.normal(size=y.size), 0.0, 1.0)  # includes 0 and 1: clipped
    p_b = np.clip(p + 0.05 * rng.normal(size=y.size), 0.0, 1.0)
    data = {"labels": y, "probs": p}
    fast = cluster_bootstrap(normalized_entropy, data, users, n_boot=100, seed=5)
    slow = cluster_bootstrap(lambda labels, probs: normalized_entropy(labels, probs), data, users, n_boot=100, seed=5)
    assert fast.estimate == pytest.approx(normalized_entropy(y, p), abs=1e-14)
    assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
    fast_d = paired_bootstrap_diff(normalized_entropy, y, p, p_b, users, n_boot=100, seed=5)
    slow_d = paired_bootstrap_diff(
        lambda labels, scores: normalized_entropy(labels, scores), y, p, p_b, users, n_boot=100, seed=5
    )
    assert (fast_d.diff.low, fast_d.diff.high) == (
        pytest.approx(slow_d.diff.low, abs=1e-12),
        pytest.approx(slow_d.diff.high, abs=1e-12),
    )
    assert fast_d.p_value == slow_d.p_value
    # a resample with one class fails the same way on both paths and is counted
    one_class = cluster_bootstrap(normalized_entropy, {"labels": np.r_[1, 0], "probs": np.r_[0.6, 0.4]}, [0, 1], 50)
    assert one_class.n_failed > 0


def test_gauc_bootstrap_equals_the_generic_path():
    rng = np.random.default_rng(14)
    y, _, users = _auc_world(rng, 90, 6)
    s_a = np.round(rng.normal(size=y.size) + 0.6 * y, 1)
    s_b = s_a + 0.4 * y + 0.5 * rng.normal(size=y.size)
    for weighting in ("impressions", "positives"):
        metric = functools.partial(gauc, weighting=weighting)
        slow = cluster_bootstrap(metric, {"labels": y, "scores": s_a, "groups": users}, users, n_boot=60, seed=1)
        fast = gauc_bootstrap(y, s_a, users, weighting, n_boot=60, seed=1)
        assert fast.estimate == pytest.approx(gauc(y, s_a, users, weighting).value, abs=1e-14)
        assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
        slow_d = paired_bootstrap_diff(
            lambda labels, scores, groups, w=weighting: gauc(labels, scores, groups, w).value,
            y,
            s_a,
            s_b,
            users,
            n_boot=60,
            seed=1,
            extra={"groups": users},
        )
        fast_d = paired_gauc_diff(y, s_a, s_b, users, weighting, n_boot=60, seed=1)
        assert fast_d.diff.estimate == pytest.approx(slow_d.diff.estimate, abs=1e-14)
        assert (fast_d.diff.low, fast_d.diff.high) == (
            pytest.approx(slow_d.diff.low, abs=1e-12),
            pytest.approx(slow_d.diff.high, abs=1e-12),
        )
        assert fast_d.p_value == slow_d.p_value
    # groups nested in coarser clusters (sessions inside users) are fine; a group spanning clusters is not
    sessions = users * 2 + (np.arange(y.size) % 2)
    assert gauc_bootstrap(y, s_a, sessions, clusters=users, n_boot=20).n_boot == 20
    with pytest.raises(ValueError, match="inside one cluster"):
        gauc_bootstrap(y, s_a, users, clusters=np.arange(y.size), n_boot=20)


def test_paired_diff_of_a_model_with_itself_is_exactly_zero():
    y, s, users = _auc_world(np.random.default_rng(8), 50, 8)
    res = paired_bootstrap_diff(auc, y, s, s.copy(), users, n_boot=200, seed=0)
    assert (res.diff.estimate, res.diff.low, res.diff.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert res.metric_a == res.metric_b == auc(y, s)
    res = paired_bootstrap_diff(logloss, y, 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s)), users, n_boot=50)
    assert (res.diff.low, res.diff.high, res.p_value) == (0.0, 0.0, 1.0)
    res = paired_gauc_diff(y, s, s, users, n_boot=50)
    assert (res.diff.estimate, res.diff.low, res.diff.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_diff_detects_a_better_model_and_its_sign():
    rng = np.random.default_rng(9)
    y, s, users = _auc_world(rng, 200, 10, shift=0.5)
    better = s + 0.5 * y  # strictly more separation on the same impressions
    res = paired_bootstrap_diff(auc, y, s, better, users, n_boot=200, seed=0)
    assert res.diff.estimate > 0 and res.diff.low > 0
    assert res.p_value == pytest.approx(1 / 200)  # no resample on the other side: floored at 1 / n_boot
    worse = paired_bootstrap_diff(auc, y, better, s, users, n_boot=200, seed=0)
    assert worse.diff.estimate == pytest.approx(-res.diff.estimate) and worse.diff.high < 0
    # GAUC and probability metrics go through the same path (groups resampled with the rows)
    g = paired_bootstrap_diff(
        lambda labels, scores, groups: gauc(labels, scores, groups).value,
        y,
        s,
        better,
        users,
        n_boot=30,
        extra={"groups": users},
    )
    assert g.diff.estimate == pytest.approx(gauc(y, better, users).value - gauc(y, s, users).value)
    p_a, p_b = 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-better))
    ll = paired_bootstrap_diff(logloss, y, p_a, p_b, users, n_boot=30)
    assert ll.diff.estimate == pytest.approx(logloss(y, p_b) - logloss(y, p_a))


def test_delong_components_match_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 120)
    s = rng.integers(0, 6, 120).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (P, N) Mann-Whitney kernel
    value, v10, v01 = delong_components(y, s)
    np.testing.assert_allclose(v10, psi.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(v01, psi.mean(axis=0), atol=1e-12)
    assert value == pytest.approx(psi.mean(), abs=1e-12)
    assert value == pytest.approx(auc(y, s), abs=1e-12)


def test_delong_agrees_with_the_paired_bootstrap():
    # Given two correlated models on the same independent impressions (so each row is its own cluster)
    rng = np.random.default_rng(11)
    n = 3000
    y = (rng.random(n) < 0.3).astype(np.int64)
    common = rng.normal(size=n)
    a = 0.8 * y + common + 0.5 * rng.normal(size=n)
    b = 0.82 * y + common + 0.5 * rng.normal(size=n)  # DeLong p ~ 0.03: inside the bootstrap resolution
    # When testing AUC_b - AUC_a both ways
    dl = delong_test(y, a, b)
    boot = paired_bootstrap_diff(auc, y, a, b, np.arange(n), n_boot=1000, seed=0)
    # Then they agree on the AUCs, the sign, the standard error (within 10 %) and the p-value's order of magnitude
    assert (dl.auc_a, dl.auc_b) == (pytest.approx(boot.metric_a), pytest.approx(boot.metric_b))
    assert np.sign(dl.z) == np.sign(boot.diff.estimate) == 1
    se_boot = (boot.diff.high - boot.diff.low) / (2 * 1.959964)
    se_delong = (dl.auc_b - dl.auc_a) / dl.z
    assert se_delong == pytest.approx(se_boot, rel=0.1)
    assert abs(math.log10(dl.p_value) - math.log10(boot.p_value)) < 1.0
    # and swapping the models flips z, keeps p
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-dl.z) and swapped.p_value == pytest.approx(dl.p_value)


def test_delong_identical_models_and_bad_input():
    y, s, _ = _auc_world(np.random.default_rng(12), 20, 5)
    res = delong_test(y, s, s)
    assert (res.z, res.p_value) == (0.0, 1.0) and res.auc_a == res.auc_b
    with pytest.raises(ValueError, match="one class"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_ratio_mean_and_two_sample_lift_hand_case():
    from core.bootstrap import mean_interval, two_sample_lift

    # control: users with (num, den) (4, 2), (2, 2) -> 6 / 4 = 1.5 ; treatment: (3, 1), (6, 3) -> 9 / 4 = 2.25
    c = (np.array([4.0, 2.0]), np.array([2.0, 2.0]))
    t = (np.array([3.0, 6.0]), np.array([1.0, 3.0]))
    m = mean_interval(*c, n_boot=200, seed=1)
    assert m.estimate == pytest.approx(1.5)
    assert 1.0 <= m.low <= m.high <= 2.0  # resamples of two users: ratios in {1, 1.5, 2}
    lift = two_sample_lift(c, t, n_boot=200, seed=1)
    assert lift.estimate == pytest.approx(2.25 / 1.5 - 1)
    with pytest.raises(ValueError, match="no users"):
        mean_interval(np.array([]), np.array([]))


def test_two_sample_lift_covers_the_true_lift():
    from core.bootstrap import two_sample_lift

    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(100):
        # per-user activity rates; treatment multiplies the mean by 1.1
        den_c, den_t = rng.integers(1, 8, 300).astype(float), rng.integers(1, 8, 300).astype(float)
        num_c = rng.binomial(den_c.astype(int), 0.5).astype(float)
        num_t = rng.binomial(den_t.astype(int), 0.55).astype(float)
        iv = two_sample_lift((num_c, den_c), (num_t, den_t), n_boot=200, seed=int(rng.integers(1 << 30)))
        covered += iv.low <= 0.1 <= iv.high
    assert 85 <= covered <= 99


def test_slice_gain_difference_equals_four_materialised_aucs_per_resample():
    # Reference: draw the same user resamples, materialise each one's rows, and compute the four AUCs with
    # scikit-learn: (AUC_b - AUC_a inside the slice) - (AUC_b - AUC_a outside it).
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(21)
    y, _, users = _auc_world(rng, 60, 8)
    cold = rng.random(y.size) < 0.4
    a = np.round(rng.normal(size=y.size) + 0.6 * y, 1)  # ties
    b = a + np.where(cold, 0.8 * y, 0.1 * y) + 0.2 * rng.normal(size=y.size)  # helps cold rows more
    res = slice_gain_difference(y, a, b, cold, users, n_boot=60, seed=5)

    def gains(idx):
        yi, ci = y[idx], cold[idx]
        g = [roc_auc_score(yi[m], b[idx][m]) - roc_auc_score(yi[m], a[idx][m]) for m in (ci, ~ci)]
        return g[0], g[1]

    g_in, g_out = gains(np.arange(y.size))
    assert (res.metric_b, res.metric_a) == (pytest.approx(g_in, abs=1e-12), pytest.approx(g_out, abs=1e-12))
    draw = np.random.default_rng(5)
    _, code = np.unique(users, return_inverse=True)
    diffs = []
    for _ in range(60):
        mult = draw.multinomial(60, np.full(60, 1 / 60))
        g = gains(np.repeat(np.arange(y.size), mult[code]))
        diffs.append(g[0] - g[1])
    assert res.diff.low == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert res.diff.high == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    assert res.diff.estimate == pytest.approx(g_in - g_out, abs=1e-12) and res.diff.low > 0  # the larger cold gain
    with pytest.raises(ValueError, match="outside the slice is undefined"):
        slice_gain_difference(y, a, b, np.ones(y.size, bool), users, n_boot=5)


def test_threaded_resamples_give_the_single_thread_values_in_order(monkeypatch):
    """The fast paths evaluate resamples in threads; the draws come from the seed in order either way."""
    import core.bootstrap as cb

    rng = np.random.default_rng(23)
    y, _, users = _auc_world(rng, 80, 6)
    a = np.round(rng.normal(size=y.size) + 0.5 * y, 1)
    b = a + 0.3 * y + 0.2 * rng.normal(size=y.size)
    cold = rng.random(y.size) < 0.3
    results = {}
    for threads in (1, 3):
        monkeypatch.setattr(cb, "FAST_PATH_THREADS", threads)
        results[threads] = (
            cb.slice_gain_difference(y, a, b, cold, users, n_boot=37, seed=2),
            cb.paired_bootstrap_diff(auc, y, a, b, users, n_boot=37, seed=2),
            cb.cluster_bootstrap(auc, {"labels": y, "scores": b}, users, n_boot=37, seed=2),
        )
    assert results[1] == results[3]
    _, code = np.unique(users, return_inverse=True)
    fast = cb._PresortedAUC(y, b, code)
    values = {t: cb._draws(37, np.random.default_rng(4), 80, fast, threads=t) for t in (1, 3)}
    np.testing.assert_array_equal(values[1], values[3])
    assert values[1].shape == (37,) and len(set(values[1].tolist())) > 30  # distinct resamples, in one order
