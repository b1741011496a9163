"""Ranking and retrieval metrics against hand-worked cases, scikit-learn and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score

from core.metrics import (
    auc,
    average_ranks,
    calibration,
    gauc,
    gauc_report,
    hit_rate_at_k,
    logloss,
    ndcg_at_k,
    ndcg_at_k_per_query,
    normalized_entropy,
    per_group_auc,
    recall_at_k,
    recall_at_k_per_query,
)

# --------------------------------------------------------------------------------------------------- AUC


def test_auc_hand_worked_without_ties():
    # positives 0.35, 0.8 ; negatives 0.1, 0.4. Pairs: 0.35>0.1 win, 0.35<0.4 loss, 0.8>0.1 win, 0.8>0.4 win
    # -> 3 / 4
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-15)


def test_auc_hand_worked_with_a_tie():
    # positives 0.5, 0.9 ; negatives 0.2, 0.5. Pairs: 0.5>0.2 win, 0.5=0.5 tie (1/2), 0.9>0.2 win, 0.9>0.5 win
    # -> 3.5 / 4 = 0.875. Ranks: 0.2 -> 1, the two 0.5 -> 2.5, 0.9 -> 4: (2.5 + 4 - 3) / 4 = 0.875.
    assert auc([0, 1, 0, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875, abs=1e-15)


def test_auc_published_example_hanley_mcneil_1982():
    # Hanley & McNeil (1982), CT ratings 1..5: 58 normal = (33, 6, 6, 11, 2), 51 abnormal = (3, 2, 2, 11, 33).
    # Per abnormal rating r: normals below + 1/2 normals tied: r1 16.5, r2 36, r3 42, r4 50.5, r5 57.
    # U = 3*16.5 + 2*36 + 2*42 + 11*50.5 + 33*57 = 2642 ; AUC = 2642 / (58 * 51) = 0.8932 (published: 0.893).
    ratings = np.arange(1, 6)
    neg = np.repeat(ratings, [33, 6, 6, 11, 2])
    pos = np.repeat(ratings, [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(neg.size), np.ones(pos.size)]
    assert auc(y, np.r_[neg, pos]) == pytest.approx(2642 / 2958, abs=1e-14)


def test_auc_matches_sklearn_with_many_ties():
    rng = np.random.default_rng(0)
    for n in (7, 100, 5000):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.integers(0, 5, n).astype(float)  # 5 distinct values: ties everywhere
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        s = np.round(rng.normal(size=n), 1)
        assert auc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_average_ranks_ties():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_auc_one_class_raises_naming_the_problem():
    with pytest.raises(ValueError, match="only one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, np.nan])


# -------------------------------------------------------------------------------------------------- GAUC


def _three_users():
    # user A: labels (1, 0, 0), scores (0.9, 0.5, 0.95): 0.9>0.5 win, 0.9<0.95 loss -> AUC 1/2 ; 3 imp, 1 pos
    # user B: labels (1, 1, 0, 0), scores (0.7, 0.6, 0.5, 0.65): 0.7>0.5, 0.7>0.65, 0.6>0.5 win, 0.6<0.65 loss
    #         -> AUC 3/4 ; 4 imp, 2 pos
    # user C: labels (0, 0): single label -> skipped
    labels = [1, 0, 0, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.5, 0.95, 0.7, 0.6, 0.5, 0.65, 0.3, 0.4]
    groups = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    return labels, scores, groups


def test_gauc_hand_worked_weightings_differ():
    labels, scores, groups = _three_users()
    by_imp = gauc(labels, scores, groups, "impressions")
    by_pos = gauc(labels, scores, groups, "positives")
    # impressions: (3 * 1/2 + 4 * 3/4) / 7 = 4.5 / 7 ; positives: (1 * 1/2 + 2 * 3/4) / 3 = 2 / 3
    assert by_imp.value == pytest.approx(4.5 / 7, abs=1e-15)
    assert by_pos.value == pytest.approx(2 / 3, abs=1e-15)
    assert (by_imp.groups_used, by_imp.groups_skipped, by_imp.weighting) == (2, 1, "impressions")
    assert (by_pos.groups_used, by_pos.groups_skipped, by_pos.weighting) == (2, 1, "positives")
    report = gauc_report(labels, scores, groups)
    assert report == {"impressions": by_imp, "positives": by_pos}
    assert float(by_pos) == by_pos.value


def test_per_group_auc_matches_a_loop_over_groups():
    rng = np.random.default_rng(1)
    n = 3000
    g = rng.integers(0, 150, n)
    y = (rng.random(n) < 0.2).astype(int)
    s = np.round(rng.normal(size=n) + y, 1)  # ties within and across groups
    ids, values, n_imp, n_pos = per_group_auc(y, s, g)
    for gid, v, ni, npos in zip(ids, values, n_imp, n_pos, strict=True):
        m = g == gid
        assert (ni, npos) == (m.sum(), y[m].sum())
        if 0 < y[m].sum() < m.sum():
            assert v == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)
        else:
            assert np.isnan(v)


def test_gauc_no_usable_group_raises():
    with pytest.raises(ValueError, match="none of the 2 groups"):
        gauc([0, 0, 1], [0.1, 0.2, 0.3], [1, 1, 2])
    with pytest.raises(ValueError, match="weighting"):
        gauc([0, 1], [0.1, 0.2], [1, 1], "users")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- logloss, NE, cal


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    p = rng.uniform(0.01, 0.99, 1000)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_logloss_hand_and_clipping():
    # -(ln 0.8 + ln(1 - 0.4)) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2, rel=1e-14)
    assert np.isfinite(logloss([1, 0], [0.0, 1.0]))  # clipped to eps instead of infinity
    # 1 - 1e-15 is not exact in float64, so the 0-label term is only close to -ln(1e-15)
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-np.log(1e-15), rel=1e-4)


def test_normalized_entropy_of_the_base_rate_is_one():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0])  # base rate 1/4
    assert normalized_entropy(y, np.full(8, 0.25)) == pytest.approx(1.0, abs=1e-14)
    # a better-than-base-rate model: NE = logloss / H(1/4), H(1/4) = -(1/4 ln 1/4 + 3/4 ln 3/4)
    p = np.where(y == 1, 0.6, 0.1)
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    expected = -(2 * np.log(0.6) + 6 * np.log(0.9)) / 8 / h
    assert normalized_entropy(y, p) == pytest.approx(expected, rel=1e-13)
    assert expected < 1
    with pytest.raises(ValueError, match="base rate"):
        normalized_entropy([0, 0], [0.1, 0.2])


def test_calibration_hand_case_uniform_and_quantile():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 0])
    # uniform, 2 buckets [0, .5) and [.5, 1]: means .25 and .75, rates 1/4 and 2/4 ; ratio 4.0 / 3
    cal = calibration(y, p, n_buckets=2, strategy="uniform")
    assert cal.bucket.tolist() == [0, 1]
    np.testing.assert_allclose(cal.mean_predicted, [0.25, 0.75])
    np.testing.assert_allclose(cal.observed_rate, [0.25, 0.5])
    assert cal.count.tolist() == [4, 4]
    assert cal.ratio == pytest.approx(4.0 / 3)
    assert cal.ece == pytest.approx((4 * 0 + 4 * 0.25) / 8)
    # quantile, 4 buckets: edges at the 0, 25, 50, 75, 100 % quantiles = 0.1, 0.275, 0.5, 0.725, 0.9 -> pairs
    cal = calibration(y, p, n_buckets=4, strategy="quantile")
    np.testing.assert_allclose(cal.lower, [0.1, 0.275, 0.5, 0.725])
    np.testing.assert_allclose(cal.mean_predicted, [0.15, 0.35, 0.65, 0.85])
    np.testing.assert_allclose(cal.observed_rate, [0.0, 0.5, 1.0, 0.0])
    assert cal.count.tolist() == [2, 2, 2, 2]
    assert cal.to_rows()[1] == {
        "bucket": 1,
        "lower": 0.275,
        "upper": 0.5,
        "mean_predicted": pytest.approx(0.35),
        "observed_rate": 0.5,
        "count": 2,
    }


def test_calibration_empty_buckets_are_dropped_and_edges_inclusive():
    # uniform 10 buckets: 0.05 -> 0, 0.15 -> 1, 1.0 -> 9 (last bucket closed); buckets 2..8 empty
    cal = calibration([0, 1, 1], [0.05, 0.15, 1.0], n_buckets=10, strategy="uniform")
    assert cal.bucket.tolist() == [0, 1, 9]
    assert cal.count.tolist() == [1, 1, 1]
    # constant predictions: all quantile edges coincide, one bucket holds everything
    cal = calibration([0, 1, 0, 0], [0.3] * 4, n_buckets=4)
    assert cal.count.tolist() == [4]
    assert cal.ratio == pytest.approx(1.2)
    assert np.isnan(calibration([0, 0], [0.1, 0.2]).ratio)


# --------------------------------------------------------------------------------------------- retrieval


def test_recall_and_ndcg_hand_case_with_duplicates():
    # top-3 of [5, 3, 5, 9, 1] is positions (5, 3, 5): the repeated 5 takes a slot, 9 and 1 fall outside.
    # relevant {3, 1, 7}: one hit (3 at position 2) -> recall 1/3 ; DCG = 1/log2(3) ;
    # IDCG = 1 + 1/log2(3) + 1/2 (min(3, 3) = 3 ideal hits)
    retrieved, relevant = [[5, 3, 5, 9, 1]], [{3, 1, 7}]
    assert recall_at_k(retrieved, relevant, 3) == pytest.approx(1 / 3)
    idcg = 1 + 1 / np.log2(3) + 0.5
    assert ndcg_at_k(retrieved, relevant, 3) == pytest.approx((1 / np.log2(3)) / idcg)
    # duplicates of a relevant id count once: DCG = 1, not 1 + 1/log2(3)
    assert recall_at_k([[4, 4, 2]], [{4}], 3) == 1.0
    assert ndcg_at_k([[4, 4, 2]], [[4, 4]], 3) == pytest.approx(1.0)


def test_recall_and_ndcg_fewer_relevant_than_k_and_short_lists():
    retrieved = [[8, 2, 6, 7, 1], [1, 2], [9, 8, 7, 6, 5]]
    relevant = [{2}, {2, 3}, {1, 2, 3, 4, 5, 6, 7}]
    # q0: 2 at position 2 -> recall 1, NDCG (1/log2 3) / 1
    # q1: list shorter than k, 2 at position 2 -> recall 1/2, NDCG (1/log2 3) / (1 + 1/log2 3)
    # q2: 7, 6, 5 at positions 3, 4, 5 -> recall 3/7 ; IDCG over min(7, 5) = 5 positions
    disc = 1 / np.log2(np.arange(2, 7))
    np.testing.assert_allclose(recall_at_k_per_query(retrieved, relevant, 5), [1.0, 0.5, 3 / 7])
    np.testing.assert_allclose(
        ndcg_at_k_per_query(retrieved, relevant, 5),
        [disc[1], disc[1] / disc[:2].sum(), disc[2:].sum() / disc.sum()],
    )
    assert hit_rate_at_k(retrieved, relevant, 1) == 0.0
    assert hit_rate_at_k(retrieved, relevant, 2) == pytest.approx(2 / 3)


def test_retrieval_array_and_list_inputs_agree_with_a_python_loop():
    rng = np.random.default_rng(3)
    n_q, n_items, k = 200, 60, 10
    retrieved = rng.integers(0, n_items, (n_q, 15))  # with duplicates
    relevant = [set(rng.choice(n_items, rng.integers(1, 12), replace=False).tolist()) for _ in range(n_q)]
    expected = []
    for row, rel in zip(retrieved, relevant, strict=True):
        seen: set[int] = set()
        for x in row[:k]:
            seen.add(int(x))
        expected.append(len(seen & rel) / len(rel))
    np.testing.assert_allclose(recall_at_k_per_query(retrieved, relevant, k), expected)
    np.testing.assert_allclose(recall_at_k_per_query(retrieved.tolist(), relevant, k), expected)
    as_str = [[f"i{x}" for x in row] for row in retrieved]
    rel_str = [{f"i{x}" for x in rel} for rel in relevant]
    np.testing.assert_allclose(recall_at_k_per_query(as_str, rel_str, k), expected)
    np.testing.assert_allclose(ndcg_at_k_per_query(as_str, rel_str, k), ndcg_at_k_per_query(retrieved, relevant, k))


def test_ndcg_matches_sklearn_where_definitions_coincide():
    # binary gains, distinct scores, ranked list = all items by score: sklearn's NDCG@k is the same quantity
    rng = np.random.default_rng(4)
    n_q, n_items = 50, 40
    y_true = (rng.random((n_q, n_items)) < 0.15).astype(int)
    y_true[:, 0] = 1  # at least one relevant item per query
    scores = rng.random((n_q, n_items))
    retrieved = np.argsort(-scores, axis=1)
    relevant = [set(np.flatnonzero(row).tolist()) for row in y_true]
    for k in (1, 5, 10, 40):
        assert ndcg_at_k(retrieved, relevant, k) == pytest.approx(ndcg_score(y_true, scores, k=k), abs=1e-12)


def test_retrieval_rejects_bad_input():
    with pytest.raises(ValueError, match="no relevant item"):
        recall_at_k([[1, 2]], [set()], 2)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k([[1, 2]], [{1}], 0)
    with pytest.raises(ValueError, match="2 queries"):
        recall_at_k([[1], [2]], [{1}], 1)
