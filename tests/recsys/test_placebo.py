"""The placebo variant: random SAIL features of the same shape, kept per item, with the same missing rows, and a
history similarity recomputed from them; it trains like any variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys.data import load_samples, placebo_features
from recsys.features import feature_spec
from recsys.synthetic import write_synthetic_samples


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pa.Table:
    path = tmp_path_factory.mktemp("placebo") / "samples"
    write_synthetic_samples(path, n_rows=1500, n_users=40, n_items=60, days=8, seed=4)
    t = load_samples(path)
    # some rows lose their vector and codes, as items without SAIL features do
    gone = pa.array(np.arange(t.num_rows) % 7 == 0)
    for name in ("sail_embedding", "semantic_ids", "user_hist_sim"):
        col = t.column(name)
        t = t.set_column(t.schema.get_field_index(name), name, pc.if_else(gone, pa.nulls(t.num_rows, col.type), col))
    return t


def test_same_shapes_and_missing_rows_but_not_the_real_values(table):
    p = placebo_features(table)
    assert p.schema == table.schema and p.num_rows == table.num_rows
    for name in ("sail_embedding", "semantic_ids", "user_hist_sim"):
        np.testing.assert_array_equal(pc.is_null(p.column(name)).to_numpy(), pc.is_null(table.column(name)).to_numpy())
    for name in set(table.column_names) - {"sail_embedding", "semantic_ids", "user_hist_sim"}:
        assert p.column(name).equals(table.column(name)), name
    real = np.array([v for v in table.column("sail_embedding").to_pylist() if v is not None])
    fake = np.array([v for v in p.column("sail_embedding").to_pylist() if v is not None])
    assert fake.shape == real.shape
    np.testing.assert_allclose(np.linalg.norm(fake, axis=1), 1.0, atol=1e-5)
    assert abs(np.corrcoef(real.ravel(), fake.ravel())[0, 1]) < 0.1
    codes_real = np.array([v for v in table.column("semantic_ids").to_pylist() if v is not None])
    codes_fake = np.array([v for v in p.column("semantic_ids").to_pylist() if v is not None])
    assert codes_fake.shape == codes_real.shape
    assert (codes_fake.min(0) >= 0).all() and (codes_fake.max(0) <= codes_real.max(0)).all()


def test_an_item_keeps_its_random_features_and_history_similarity_is_recomputed(table):
    p = placebo_features(table)
    items = p.column("item_id").to_pylist()
    vecs = p.column("sail_embedding").to_pylist()
    codes = p.column("semantic_ids").to_pylist()
    by_item: dict[int, tuple] = {}
    for item, v, c in zip(items, vecs, codes, strict=True):
        if v is not None:
            assert by_item.setdefault(item, (v, c)) == (v, c)
    # the same vectors for another table holding the same items: drawn from the item id alone
    again = placebo_features(table.slice(701))
    assert again.column("sail_embedding").to_pylist()[0] == by_item[items[701]][0]
    # user_hist_sim = cos(target vector, sum of the recent items' vectors), by brute force
    sims = p.column("user_hist_sim").to_pylist()
    recent = p.column("user_recent_items").to_pylist()
    checked = 0
    for r, (hist, sim) in enumerate(zip(recent, sims, strict=True)):
        if sim is None or not hist or not all(h in by_item for h in hist) or vecs[r] is None:
            continue
        total = np.sum([by_item[h][0] for h in hist], axis=0)
        want = float(np.dot(vecs[r], total) / np.linalg.norm(total))
        assert sim == pytest.approx(want, abs=1e-5)
        checked += 1
    assert checked > 100


def test_the_placebo_variant_is_wired_as_both():
    assert feature_spec("placebo").sparse_features == feature_spec("both").sparse_features
    assert feature_spec("placebo").dense_features == feature_spec("both").dense_features


def test_placebo_trains_with_torchrec_and_lightgbm(tmp_path):
    from recsys.cli import run_variants
    from recsys.model import RankerConfig

    samples = tmp_path / "samples"
    write_synthetic_samples(samples, n_rows=2000, n_users=50, n_items=70, days=8, seed=6)
    small = RankerConfig(embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16,))
    res = run_variants(
        samples,
        tmp_path / "out",
        ["control", "placebo"],
        ["torchrec", "lgbm"],
        {"ranker": small, "epochs": 1, "batch_size": 128},
        {"threads": 1},
        n_boot=20,
    )
    assert set(res.runs) == {"torchrec/control", "torchrec/placebo", "lgbm/control", "lgbm/placebo"}
    md = Path(res.results_md).read_text()
    assert "torchrec | placebo-control" in md and "lgbm | placebo-control" in md
