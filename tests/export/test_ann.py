"""ANN index: recall against exact search on clustered vectors, the id map, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.ann import AnnIndex, build_ann_index, evaluate_ann, normalise


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)) * 2
    x = centres[rng.integers(0, 40, 3000)] + rng.standard_normal((3000, 32))
    return x.astype(np.float32), (np.arange(3000) * 3 + 1000).astype(np.int64)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_recall_at_50_against_exact_search(vectors, kind):
    x, ids = vectors
    index = build_ann_index(x, ids, kind, model_version="v1")
    report = evaluate_ann(index, x, sample=200, k=50, single_queries=20)
    assert report["recall_at_50"] >= 0.9, report
    assert report["qps_single"] > 0 and report["qps_batch"] > 0 and report["exact_qps_batch"] > 0


def test_exact_index_has_recall_one_and_maps_ids(vectors):
    x, ids = vectors
    index = build_ann_index(x, ids, "flat")
    assert evaluate_ann(index, x, sample=50, k=10, single_queries=5)["recall_at_10"] == 1.0
    scores, found = index.search(x[:3], k=1)
    assert found[:, 0].tolist() == ids[:3].tolist()  # a vector's nearest neighbour is itself
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)  # cosine of a normalised vector with itself


def test_save_and_load_round_trip(vectors, tmp_path):
    x, ids = vectors
    index = build_ann_index(x[:500], ids[:500], "hnsw", model_version="v3", ef_search=32)
    index.save(tmp_path / "ann")
    back = AnnIndex.load(tmp_path / "ann")
    assert (back.kind, back.model_version, back.params["ef_search"]) == ("hnsw", "v3", 32)
    q = normalise(x[:5])
    np.testing.assert_array_equal(back.search(q, 10)[1], index.search(q, 10)[1])
    assert set(back.search(q, 10)[1].ravel()) <= set(ids[:500].tolist())
