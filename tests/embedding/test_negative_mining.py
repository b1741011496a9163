"""Hard-negative mining: F1-optimal threshold, false negatives and positives never returned, order, cadence; a
refresh of only the rows drawn before the next one, and of a catalogue pool."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.negatives import (
    HardNegativeMiner,
    MiningSource,
    SourceEmbeddings,
    f1_optimal_threshold,
    mine_hard_negatives,
    positive_and_negative_scores,
)

COS = np.array([0.95, 0.9, 0.85, 0.7, 0.6, 0.5, 0.3, 0.1])


def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """One query e1 and 8 unit targets whose cosine with it is COS (target i = (cos_i, sin_i))."""
    targets = np.stack([COS, np.sqrt(1 - COS**2)], axis=1).astype(np.float32)
    return np.array([[1.0, 0.0]], dtype=np.float32), targets


def test_f1_threshold_hand_case():
    # "score >= t is positive"; pos [0.9, 0.8, 0.4], neg [0.7, 0.3, 0.2] (P = 3):
    # t=0.9: TP1 FP0 FN2 -> 2/4 = 0.5;   t=0.8: TP2 FP0 FN1 -> 4/5 = 0.8;   t=0.7: TP2 FP1 FN1 -> 4/6 = 0.667
    # t=0.4: TP3 FP1 FN0 -> 6/7 = 0.857; t=0.3: TP3 FP2 -> 6/8 = 0.75;      t=0.2: TP3 FP3 -> 6/9 = 0.667
    threshold, f1 = f1_optimal_threshold(np.array([0.9, 0.8, 0.4]), np.array([0.7, 0.3, 0.2]))
    assert threshold == pytest.approx(0.4)
    assert f1 == pytest.approx(6 / 7)


def test_f1_threshold_ties_and_equal_scores():
    # perfectly separable: F1 = 1 at t = 0.8 (the lowest positive) -- higher thresholds lose recall
    assert f1_optimal_threshold(np.array([0.9, 0.8]), np.array([0.1])) == (pytest.approx(0.8), pytest.approx(1.0))
    # equal scores are all on the same side of a threshold: pos 0.5, neg 0.5 -> TP1 FP1 -> 2/3
    assert f1_optimal_threshold(np.array([0.5]), np.array([0.5]))[1] == pytest.approx(2 / 3)


def test_top_returns_hardest_below_threshold_in_order_never_positives_or_false_negatives():
    q, t = catalogue()
    mined = mine_hard_negatives(q, t, [{1}], threshold=0.8, num_negatives=3, sampling_strategy="top")
    # 0.95 (idx 0) and 0.85 (idx 2) are >= 0.8: dropped as false negatives; idx 1 is the positive
    assert mined.indices.tolist() == [[3, 4, 5]]
    assert mined.scores[0] == pytest.approx([0.7, 0.6, 0.5], abs=1e-6)
    skipped = mine_hard_negatives(q, t, [{1}], threshold=0.8, num_negatives=3, range_min=1)
    assert skipped.indices.tolist() == [[4, 5, 6]]


def test_random_sampling_is_seeded_eligible_and_padded_when_short():
    q, t = catalogue()
    runs = [mine_hard_negatives(q, t, [{4}], 0.8, num_negatives=2, sampling_strategy="random", seed=7) for _ in "ab"]
    assert runs[0].indices.tolist() == runs[1].indices.tolist()
    chosen = set(runs[0].indices[0].tolist())
    assert chosen <= {3, 5, 6, 7} and len(chosen) == 2
    assert list(runs[0].scores[0]) == sorted(runs[0].scores[0], reverse=True)
    short = mine_hard_negatives(q, t, [{3}], threshold=0.55, num_negatives=4)
    assert short.indices.tolist() == [[5, 6, 7, -1]] and short.mask.tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="sampling_strategy"):
        mine_hard_negatives(q, t, [set()], 0.8, sampling_strategy="hardest")  # type: ignore[arg-type]


def test_many_queries_never_get_positives_or_scores_at_threshold():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    positives = [{i, (i + 1) % 60} for i in range(60)]
    mined = mine_hard_negatives(emb, emb, positives, threshold=0.5, num_negatives=5, range_max=30)
    for i in range(60):
        real = mined.indices[i][mined.mask[i]]
        assert not set(real.tolist()) & positives[i]
        assert np.all(emb[real] @ emb[i] < 0.5)


def test_miner_refresh_cadence_and_per_source_thresholds():
    q, t = catalogue()
    calls: list[str] = []

    def embed_fn(source: str) -> SourceEmbeddings:
        calls.append(source)
        return SourceEmbeddings(q, t, [{0, 1}])

    miner = HardNegativeMiner(sources=("i2i", "q2i"), refresh_every=3, num_negatives=2, negatives_per_query=20)
    refreshed = [step for step in range(8) if miner.maybe_refresh(step, embed_fn)]
    assert refreshed == [0, 3, 6]
    assert calls == ["i2i", "q2i"] * 3
    assert set(miner.thresholds) == {"i2i", "q2i"}
    # positives score 0.95 and 0.9; random non-positives score <= 0.85 -> the F1 threshold is 0.9
    assert miner.thresholds["i2i"] == pytest.approx(0.9, abs=1e-6)
    assert miner.negatives_for("i2i", np.array([0])).indices.tolist() == [[2, 3]]


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _world(m: int = 400, q: int = 120, seed: int = 0):
    """q queries near their own positives in an m-item catalogue (positives: 2-3 items per query, shared by query
    pairs like rows of one query), as precomputed embeddings."""
    rng = np.random.default_rng(seed)
    targets = _unit(rng, m)
    positives = [set(rng.choice(m, size=2 + i % 2, replace=False).tolist()) for i in range(q // 2)]
    positives = [positives[i // 2] for i in range(q)]
    queries = np.stack([targets[sorted(p)].mean(0) for p in positives]) + 0.3 * _unit(rng, q)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32), targets, positives


class _Recorder:
    """A MiningSource over precomputed embeddings that records what the miner asks to embed."""

    def __init__(self, queries, targets, positives):
        self.queries, self.targets, self.positives = queries, targets, positives
        self.query_rows: list[np.ndarray] = []
        self.items: list[np.ndarray] = []

    def __call__(self, source: str) -> MiningSource:
        def embed_queries(rows):
            self.query_rows.append(np.asarray(rows))
            return self.queries[rows]

        def embed_items(idx):
            self.items.append(np.asarray(idx))
            return self.targets[idx]

        return MiningSource(self.positives, len(self.targets), embed_queries, embed_items)


def test_refreshing_only_the_drawn_rows_gives_them_the_negatives_of_a_full_refresh():
    # Given one source of 120 query rows over a 400-item catalogue, and the rows drawn before the next refresh
    queries, targets, positives = _world()
    drawn = np.array([3, 4, 17, 40, 41, 42, 77, 118])
    miner = HardNegativeMiner(sources=("s",), num_negatives=4, range_max=30, seed=5)
    # When the miner refreshes only those rows (the whole catalogue: catalogue_pool 0)
    miner.refresh(0, _Recorder(queries, targets, positives), {"s": drawn})
    # Then they get exactly what the full refresh (every row, the whole catalogue) gave them
    seed = miner.seed + 1000 * 0 + 0  # refresh 0, source 0
    pos, neg = positive_and_negative_scores(queries, targets, positives, miner.negatives_per_query, seed)
    threshold, f1 = f1_optimal_threshold(pos, neg)
    full = mine_hard_negatives(queries, targets, positives, threshold, 4, 0, 30, "top", seed)
    assert miner.thresholds["s"] == threshold and miner.f1["s"] == f1
    got = miner.negatives_for("s", drawn)
    assert got.indices.tolist() == full.indices[drawn].tolist()
    np.testing.assert_allclose(got.scores, full.scores[drawn], rtol=0, atol=1e-6)
    assert got.mask.any(axis=1).all()
    # and the other rows (not used before the next refresh) are padding
    rest = np.setdiff1d(np.arange(len(queries)), drawn)
    assert (miner.negatives_for("s", rest).indices == -1).all()
    assert miner.negatives["s"].indices.shape == (len(queries), 4)


def test_random_sampling_of_a_row_does_not_depend_on_the_other_rows_mined():
    queries, targets, positives = _world()
    drawn = np.array([5, 6, 50, 99])
    runs = []
    for rows in ({"s": drawn}, None):
        miner = HardNegativeMiner(sources=("s",), num_negatives=3, range_max=40, sampling_strategy="random", seed=1)
        miner.refresh(0, lambda _: SourceEmbeddings(queries, targets, positives), rows)
        runs.append(miner.negatives_for("s", drawn).indices)
    assert runs[0].tolist() == runs[1].tolist()


def test_catalogue_pool_negatives_come_from_that_refreshs_pool_as_global_indices():
    # Given a 400-item catalogue, a pool of 80 items per refresh and some drawn rows
    queries, targets, positives = _world()
    drawn = np.array([0, 1, 9, 30, 31, 64, 100, 101, 119])
    rec = _Recorder(queries, targets, positives)
    miner = HardNegativeMiner(sources=("s",), num_negatives=4, range_max=30, catalogue_pool=80, seed=3)
    pools = []
    for refresh in range(2):
        # When the miner refreshes
        miner.refresh(refresh, rec, {"s": drawn})
        pool = miner.pool(refresh, len(targets))
        pools.append(pool)
        assert pool.shape == (80,) and np.unique(pool).size == 80 and (np.diff(pool) > 0).all()
        got = miner.negatives_for("s", drawn)
        # Then every negative is an item of that refresh's pool, never a positive of its query, indexed globally
        # (its stored score is the query's score with that catalogue item)
        assert got.mask.any(axis=1).all()
        for k, row in enumerate(drawn):
            real = got.indices[k][got.mask[k]]
            assert set(real.tolist()) <= set(pool.tolist())
            assert not set(real.tolist()) & positives[row]
            np.testing.assert_allclose(got.scores[k][got.mask[k]], targets[real] @ queries[row], atol=1e-5)
            assert (got.scores[k][got.mask[k]] < miner.thresholds["s"]).all()
        # and only the pool, the drawn rows' positives and the drawn rows were embedded
        wanted = set(pool.tolist()) | {j for r in drawn for j in positives[r]}
        assert set(rec.items[-1].tolist()) == wanted
        assert rec.query_rows[-1].tolist() == drawn.tolist()
    # The same seed gives the same pools, the next refresh another one, another seed another one
    again = HardNegativeMiner(sources=("s",), catalogue_pool=80, seed=3)
    assert again.pool(0, 400).tolist() == pools[0].tolist()
    assert pools[1].tolist() != pools[0].tolist()
    assert HardNegativeMiner(sources=("s",), catalogue_pool=80, seed=4).pool(0, 400).tolist() != pools[0].tolist()
    # and a pool at least as large as the catalogue is the whole catalogue
    assert HardNegativeMiner(sources=("s",), catalogue_pool=400).pool(0, 400) is None


def test_a_source_without_drawn_rows_is_not_embedded():
    queries, targets, positives = _world()
    rec = _Recorder(queries, targets, positives)
    miner = HardNegativeMiner(sources=("s",), catalogue_pool=50)
    miner.refresh(0, rec, {"s": np.zeros(0, np.int64)})
    assert rec.items == [] and rec.query_rows == []
    assert (miner.negatives["s"].indices == -1).all() and miner.refreshes == 1
