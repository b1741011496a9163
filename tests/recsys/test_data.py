"""Encoding of ranking samples into model inputs, and the stand-in item features."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from core.io import conform
from recsys.data import Encoder, _lookup, make_batch, sid_prefix_ids
from recsys.features import RANKING_SAMPLES_EXT, feature_spec
from recsys.standin import STANDIN_VERSION, build_standin_features
from recsys.synthetic import synthetic_samples


def test_lookup_maps_to_one_based_rows_and_unknown_ids_to_zero():
    vocab = np.array([3, 10, 42])
    assert _lookup(vocab, np.array([42, 3, 7, 100, 10])).tolist() == [3, 1, 0, 0, 2]


def test_sid_prefixes_are_hierarchical():
    codes = np.array([[1, 2, 3], [1, 2, 4], [1, 5, 3], [-1, -1, -1]])
    l0, l1, l2 = (sid_prefix_ids(codes, lv) for lv in range(3))
    assert l0[0] == l0[1] == l0[2] and l1[0] == l1[1] != l1[2] and len({*l2[:3]}) == 3
    assert l0[3] == l1[3] == l2[3] == -1


def test_make_batch_gathers_the_jagged_history_of_the_chosen_rows():
    table = synthetic_samples(n_rows=600, n_users=20, n_items=40, days=6, seed=1)
    spec = feature_spec("both")
    enc = Encoder.fit(table.filter(pa.compute.equal(table["split"], "train")), spec)
    e = enc.encode(table)
    idx = np.array([5, 300, 2, 599])
    batch = make_batch(e, idx, spec)
    jt = batch.sparse.to_dict()
    assert list(jt) == list(spec.sparse_features)
    hist = jt["user_recent_items"]
    for k, i in enumerate(idx):  # the obvious per-row slice
        expected = e.recent_values[e.recent_offsets[i] : e.recent_offsets[i + 1]]
        got = hist.values()[hist.offsets()[k] : hist.offsets()[k + 1]].numpy()
        np.testing.assert_array_equal(got, expected)
    assert jt["sid_l2"].values().shape == (4,)
    assert batch.dense.shape == (4, len(spec.dense_features)) and batch.content.shape == (4, 16)
    np.testing.assert_array_equal(batch.labels.numpy(), e.labels[idx])


def test_cold_means_no_train_impression_and_new_means_created_in_the_window():
    # Given samples whose test split has warm items, items never shown in training, and items created in the window
    import pyarrow.compute as pc

    table = synthetic_samples(n_rows=2000, n_users=30, n_items=80, days=8, seed=3)
    train, test = (table.filter(pc.equal(table["split"], s)) for s in ("train", "test"))
    enc = Encoder.fit(train, feature_spec("control"))
    e = enc.encode(test)
    # Then "cold" is exactly "no impression in the training split" (not "unknown to any vocabulary")
    shown = set(train["item_id"].to_pylist())
    want_cold = np.array([i not in shown for i in test["item_id"].to_pylist()])
    np.testing.assert_array_equal(e.cold, want_cold)
    # and "new" is "created on or after the test window's first day", whatever its training history
    first_day = min(test["date"].to_pylist())
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=dt.UTC)
    want_new = np.array([c >= start for c in test["item_created_ts"].to_pylist()])
    np.testing.assert_array_equal(e.new, want_new)
    assert 0 < want_cold.sum() < len(want_cold) and 0 < want_new.sum() < len(want_new)
    # the slices survive a save / load of the encoder (serving reads it back)
    assert Encoder.from_json(enc.to_json()).train_items.tolist() == sorted(shown)


def test_encoder_refuses_a_variant_whose_features_are_missing():
    table = synthetic_samples(n_rows=200, n_users=10, n_items=30, days=5, seed=2)
    no_sail = table.set_column(
        table.schema.get_field_index("sail_embedding"),
        "sail_embedding",
        pa.nulls(table.num_rows, pa.list_(pa.float32())),
    )
    with pytest.raises(ValueError, match="needs sail_embedding"):
        Encoder.fit(no_sail, feature_spec("emb"))
    Encoder.fit(no_sail, feature_spec("control"))


def test_synthetic_table_matches_the_extended_contract():
    t = synthetic_samples(n_rows=100, n_users=10, n_items=30, days=5)
    assert conform(t, RANKING_SAMPLES_EXT).schema.names == RANKING_SAMPLES_EXT.names


def test_standin_features_are_unit_vectors_with_codes_stamped_at_creation():
    created = [dt.datetime(2025, 3, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i) for i in range(12)]
    words = ["cat kitten meow", "dog puppy bark", "car engine road"]
    items = pa.table(
        {
            "item_id": pa.array(range(1, 13), pa.int64()),
            "created_ts": pa.array(created, pa.timestamp("us", tz="UTC")),
            "title": [words[i % 3] + f" v{i}" for i in range(12)],
            "tags": [[words[i % 3].split()[0]] for i in range(12)],
            "ocr_text": [None] * 12,
            "asr_text": [None] * 12,
        }
    )
    f = build_standin_features(items, dim=4, levels=2, codebook_size=3)
    emb = np.array(f["embedding"].to_pylist())
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    codes = np.array(f["semantic_ids"].to_pylist())
    assert codes.shape == (12, 2) and codes.min() >= 0 and codes.max() < 3
    assert len({tuple(codes[i]) for i in range(0, 12, 3)}) == 1  # same words -> same first code... and second
    assert f["event_timestamp"].to_pylist() == created and set(f["model_version"].to_pylist()) == {STANDIN_VERSION}
