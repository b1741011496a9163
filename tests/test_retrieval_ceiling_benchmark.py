"""benchmarks/retrieval_ceiling: truth vectors and the engine-like lexical retrieval, checked by hand."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.retrieval_ceiling import (  # noqa: E402
    cooccurrence_cosine_retrieve,
    item_words,
    lexical_retrieve,
    markdown,
    ppmi_svd_vectors,
    truth_vectors,
)


def test_truth_vectors_blocks_by_hand():
    topics = [[0], [1, 0], []]
    collab = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    quality = np.array([1.0, 2.0, 3.0])
    popularity = np.array([0.0, 0.0, 0.0])
    v = truth_vectors(topics, collab, quality, popularity, w_collab=0.5, w_quality=2.0, w_popularity=1.0)
    assert v.shape == (3, 2 + 2 + 2)
    np.testing.assert_allclose(v[0, :2], [1.0, 0.0])
    np.testing.assert_allclose(v[1, :2], [0.5 / np.sqrt(1.25), 1.0 / np.sqrt(1.25)], rtol=1e-6)
    np.testing.assert_allclose(v[2, :2], [0.0, 0.0])  # no topics: a zero block, not a division by zero
    np.testing.assert_allclose(v[0, 2:4], [0.3, 0.4], rtol=1e-6)  # unit latent x 0.5
    sd = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(v[:, 4], 2.0 * (quality - 2.0) / sd, rtol=1e-6)
    np.testing.assert_allclose(v[:, 5], 0.0)  # constant popularity standardises to zero


def test_truth_vectors_zero_weights_keep_only_topics():
    rng = np.random.default_rng(0)
    v = truth_vectors([[0], [1]], rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=2), 0.0, 0.0, 0.0)
    np.testing.assert_allclose(v, [[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]])


def test_lexical_retrieve_counts_distinct_words_then_popularity():
    words = item_words(
        [
            {"title": "Babo zeba", "tags": ["kibra"]},
            {"title": "babo", "tags": []},
            {"title": "zeba ZEBA", "tags": None},
            {"title": None, "tags": ["other"]},
        ]
    )
    assert words[0] == {"babo", "zeba", "kibra"} and words[2] == {"zeba"} and words[3] == {"other"}
    pop = np.array([0.0, 5.0, 9.0, 100.0])
    # item 0 matches both words; 1 and 2 one each, 2 is more popular; 3 none (popularity never beats a word)
    assert lexical_retrieve(["babo  Zeba!"], words, pop, 4) == [[0, 2, 1, 3]]
    assert lexical_retrieve(["babo babo"], words, pop, 2) == [[1, 0]]  # a repeated word counts once
    assert lexical_retrieve(["nothing"], words, pop, 2) == [[3, 2]]  # no match: by popularity


def test_markdown_states_target_and_ceiling():
    cell = {"recall": 0.25, "low": 0.24, "high": 0.26}
    result = {
        "rows": {"ItemCF (covisit)": {"i2i_coengagement": cell, "q2i": cell}, "lexical": {"q2i": cell}},
        "truth_grid": [{}, {}],
        "truth_grid_best": {"collab": 0.6, "quality": 0.2, "popularity": 0.3},
        "coengagement_target": 30.0,
        "coengagement_ceiling": 26.1,
        "ppmi_dims": {"64": 25.5, "128": 25.72},
    }
    md = markdown(result)
    assert "| ItemCF (covisit) | 25.0 [24.0, 26.0] | 25.0 [24.0, 26.0] |" in md
    assert "| lexical | - | 25.0 [24.0, 26.0] |" in md
    assert "target (best baseline + 5 points): 30.0; the truth-vector ceiling is 26.1." in md
    assert "Item PPMI SVD at d = 64 / 128: 25.5 / 25.7 (the best" in md


def test_ppmi_svd_vectors_match_the_dense_computation():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    b = (rng.random((40, 9)) < 0.3).astype(np.float64)
    c = b.T @ b
    np.fill_diagonal(c, 0.0)
    marg = c.sum(1)
    with np.errstate(divide="ignore"):
        ppmi = np.where(c > 0, np.maximum(np.log(c * c.sum() / np.outer(marg, marg)), 0.0), 0.0)
    v = ppmi_svd_vectors(sp.csr_matrix(b), dim=8)
    # U * sqrt(S) of a symmetric matrix: the Gram of the factors is |ppmi| reconstructed up to rank 8 of 9
    u, s, _ = np.linalg.svd(ppmi)
    np.testing.assert_allclose(v @ v.T, (u[:, :8] * s[:8]) @ u[:, :8].T, atol=1e-6)
    assert not np.allclose(ppmi, 0.0)


def test_cooccurrence_cosine_retrieve_by_hand():
    import scipy.sparse as sp

    # users x items: item 0 = {u0, u1}, item 1 = {u0, u1}, item 2 = {u0}, item 3 = {u2}
    b = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64))
    # from item 0: item 1 cosine 1, item 2 1/sqrt(2), item 3 0; the anchor itself never returned
    assert cooccurrence_cosine_retrieve(b, np.array([0, 3]), 3) == [[1, 2, 3], [0, 1, 2]]
