"""Semantic IDs: residual k-means codes, their statistics, determinism, persistence and the build-sids job."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import ITEM_EMBEDDINGS, ITEM_FEATURES
from core.io import is_complete, read_table, write_table
from embedding.batch_infer import MixedVersionError
from embedding.semantic_ids import (
    ResidualQuantizer,
    code_cluster_agreement,
    code_collisions,
    code_usage,
    fit_rq,
    main,
    quantisation_report,
    reconstruction_error,
)

TS = datetime(2024, 5, 1, tzinfo=UTC)


def clustered(n: int = 1200, d: int = 16, clusters: int = 8, seed: int = 0, spread: float = 4.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)) * spread
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + rng.standard_normal((n, d))).astype(np.float32), labels


def test_two_level_hand_case_is_reconstructed_exactly():
    # four points: level 1 separates the sign of x, level 2 the sign of y
    x = np.array([[10, 1], [10, -1], [-10, 1], [-10, -1]], np.float32)
    rq = fit_rq(x, levels=2, codebook_size=2, seed=0, niter=10)
    codes = rq.encode(x)
    assert codes.dtype == np.int32 and codes.shape == (4, 2)
    assert len({tuple(c) for c in codes}) == 4
    assert codes[0, 0] == codes[1, 0] != codes[2, 0] == codes[3, 0]
    np.testing.assert_allclose(rq.decode(codes), x, atol=1e-5)
    report = quantisation_report(rq, x, codes)
    assert [u["usage"] for u in report["usage"]] == [1.0, 1.0]
    assert report["collisions"]["colliding_items"] == 0
    assert report["reconstruction"]["mse"] == pytest.approx(0.0, abs=1e-8)
    assert report["reconstruction"]["mse_by_level"][0] == pytest.approx(0.5)  # every residual is (0, +-1)


def test_statistics_on_a_hand_case():
    # Given explicit codebooks: level 1 = (+-1, 0), level 2 = (0, +-1), and four points
    rq = ResidualQuantizer(np.array([[[1, 0], [-1, 0]], [[0, 1], [0, -1]]], np.float32))
    x = np.array([[1.5, 1], [1, 1], [-1, 1], [-1, -1]], np.float32)
    codes = rq.encode(x)
    # Then the codes are the nearest centroids level by level
    assert codes.tolist() == [[0, 0], [0, 0], [1, 0], [1, 1]]
    usage = code_usage(codes, 2)
    assert usage[0]["usage"] == 1.0 and usage[0]["entropy_bits"] == pytest.approx(1.0)
    h2 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # level-2 codes 0,0,0,1
    assert usage[1]["entropy_bits"] == pytest.approx(h2)
    assert usage[1]["perplexity"] == pytest.approx(2**h2)
    assert code_collisions(codes) == {
        "items": 4,
        "unique_codes": 3,
        "colliding_items": 2,  # items 0 and 1 share (0, 0)
        "collision_share": 0.5,
        "max_bucket": 2,
    }
    err = reconstruction_error(rq, x, codes)
    # only item 0 is off, by 0.5 in one of 8 elements; squared deviations from the column means sum to 8.1875
    assert err["mse"] == pytest.approx(0.25 / 8)
    assert err["relative_mse"] == pytest.approx(0.25 / 8.1875)
    assert err["mse_by_level"][0] == pytest.approx((1.25 + 1 + 1 + 1) / 8)


def test_codes_reconstruct_better_than_a_random_codebook():
    x, _ = clustered()
    rq = fit_rq(x, levels=2, codebook_size=16, seed=0, niter=15)
    rng = np.random.default_rng(1)
    random_rq = ResidualQuantizer((rng.standard_normal(rq.codebooks.shape) * x.std()).astype(np.float32))
    fitted = reconstruction_error(rq, x, rq.encode(x))["relative_mse"]
    random = reconstruction_error(random_rq, x, random_rq.encode(x))["relative_mse"]
    assert fitted < 0.25  # clusters of unit noise around centres of spread 4: most variance is between clusters
    assert random > 0.8
    assert fitted < random / 4


def test_fit_is_deterministic_under_a_seed():
    x, _ = clustered(n=600)
    a = fit_rq(x, levels=3, codebook_size=8, seed=5, niter=10)
    b = fit_rq(x, levels=3, codebook_size=8, seed=5, niter=10)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    c = fit_rq(x, levels=3, codebook_size=8, seed=6, niter=10)
    assert not np.array_equal(a.codebooks, c.codebooks)


def test_codebook_size_is_capped_on_a_small_catalogue():
    x, _ = clustered(n=5)
    with pytest.warns(UserWarning, match="capped from 256 to 5"):
        rq = fit_rq(x, levels=2, codebook_size=256, seed=0)
    assert rq.codebooks.shape == (2, 5, 16) and rq.requested_codebook_size == 256
    assert rq.encode(x).max() < 5


def test_same_cluster_items_share_first_level_codes():
    x, labels = clustered(n=2000, d=32, clusters=8, seed=3)
    rq = fit_rq(x, levels=2, codebook_size=8, seed=0, niter=20)
    agreement = code_cluster_agreement(rq.encode(x), labels, level=0)
    assert agreement["same_cluster_share"] > 0.7
    assert agreement["diff_cluster_share"] < 0.05
    assert agreement["lift"] > 4


def test_cluster_agreement_on_a_hand_case():
    # codes 0,0,1,1 and clusters a,a,a,b: of 6 pairs, 3 share a cluster, 2 share a code, 1 shares both
    got = code_cluster_agreement(np.array([[0], [0], [1], [1]]), np.array(["a", "a", "a", "b"]))
    assert got["same_cluster_share"] == pytest.approx(1 / 3)
    assert got["diff_cluster_share"] == pytest.approx(1 / 3)
    assert got["chance"] == pytest.approx(2 / 6)
    assert got["lift"] == pytest.approx(1.0)


def test_save_and_load_round_trip(tmp_path):
    x, _ = clustered(n=300)
    rq = fit_rq(x, levels=2, codebook_size=4, seed=0, niter=5, model_version="v7")
    rq.save(tmp_path / "rq")
    assert is_complete(tmp_path / "rq")
    assert json.loads((tmp_path / "rq" / "rq.json").read_text())["model_version"] == "v7"
    back = ResidualQuantizer.load(tmp_path / "rq")
    np.testing.assert_array_equal(back.codebooks, rq.codebooks)
    assert (back.model_version, back.seed, back.requested_codebook_size) == ("v7", 0, 4)


def _embeddings_table(x: np.ndarray, versions: list[str]) -> pa.Table:
    n, d = x.shape
    return pa.table(
        {
            "item_id": pa.array(np.arange(n) + 10, pa.int64()),
            "embedding": pa.array(list(x), pa.list_(pa.float32())),
            "dims": pa.array([d] * n, pa.int32()),
            "model_version": versions,
            "event_timestamp": pa.array([TS] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def test_build_sids_job_writes_features_codebooks_and_report(tmp_path, capsys):
    x, _ = clustered(n=200, d=8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    write_table(_embeddings_table(x, ["v1"] * 200), ITEM_EMBEDDINGS, tmp_path / "emb")
    args = ["--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "sids"), "--levels", "2"]
    assert main([*args, "--codebook-size", "8", "--niter", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["usage"]) == 2
    features = read_table(tmp_path / "sids" / "item_features", ITEM_FEATURES)
    rq = ResidualQuantizer.load(tmp_path / "sids" / "codebooks")
    codes = np.array(features.column("semantic_ids").to_pylist())
    np.testing.assert_array_equal(codes, rq.encode(np.array(features.column("embedding").to_pylist())))
    assert features.column("item_id").to_pylist() == list(range(10, 210))
    assert set(features.column("model_version").to_pylist()) == {"v1"} and rq.model_version == "v1"
    assert json.loads((tmp_path / "sids" / "sid_report.json").read_text())["levels"] == 2


def test_build_sids_refuses_mixed_model_versions(tmp_path):
    x, _ = clustered(n=20, d=4)
    write_table(_embeddings_table(x, ["v1"] * 10 + ["v2"] * 10), ITEM_EMBEDDINGS, tmp_path / "emb")
    with pytest.raises(MixedVersionError, match=r"\['v1', 'v2'\]"):
        main(["--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "sids")])
