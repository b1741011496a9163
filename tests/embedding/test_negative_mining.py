"""Hard-negative mining: F1-optimal threshold, false negatives and positives never returned, order, cadence."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.negatives import HardNegativeMiner, SourceEmbeddings, f1_optimal_threshold, mine_hard_negatives

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
