"""benchmarks/ranker_truth_features: truth item-feature rows, checked by hand."""

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ranker_truth_features import TRUTH_VERSION, truth_item_features  # noqa: E402


def _tables():
    created = [dt.datetime(2025, 3, d, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]
    items = pa.table({"item_id": pa.array([30, 10, 20, 40], pa.int64()), "created_ts": created})
    truth = pa.table(
        {
            "item_id": pa.array([10, 20, 30, 40], pa.int64()),
            "topics": [[0], [2, 1], [], [1]],
            "collab_latent": [[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [0.0, 1.0]],
            "quality": [1.0, 2.0, 3.0, 2.0],
        }
    )
    return items, truth


def test_topic_block_follows_the_catalogue_order():
    items, truth = _tables()
    t = truth_item_features(items, truth, hidden=False, codebook_size=2)
    emb = np.asarray(t["embedding"].to_pylist())
    assert emb.shape == (4, 3)  # topics 0..2
    np.testing.assert_allclose(emb[0], [0, 0, 0])  # item 30: no topics
    np.testing.assert_allclose(emb[1], [1, 0, 0])  # item 10
    np.testing.assert_allclose(emb[2], np.array([0, 0.5, 1]) / np.sqrt(1.25), rtol=1e-6)  # item 20: primary 2
    assert t["item_id"].to_pylist() == [30, 10, 20, 40]
    assert t["event_timestamp"].to_pylist() == items["created_ts"].to_pylist()
    assert set(t["model_version"].to_pylist()) == {TRUTH_VERSION}
    codes = np.asarray(t["semantic_ids"].to_pylist())
    assert codes.shape == (4, 3) and codes.min() >= 0 and codes.max() < 2


def test_hidden_adds_unit_collab_and_standardised_quality():
    items, truth = _tables()
    emb = np.asarray(truth_item_features(items, truth, hidden=True, codebook_size=2)["embedding"].to_pylist())
    assert emb.shape == (4, 3 + 2 + 1)
    np.testing.assert_allclose(emb[1, 3:5], [0.6, 0.8], rtol=1e-6)  # item 10's latent (3, 4), unit length
    q = np.array([3.0, 1.0, 2.0, 2.0])  # catalogue order
    np.testing.assert_allclose(emb[:, 5], (q - q.mean()) / q.std(), rtol=1e-6)


def test_missing_truth_row_is_named():
    items, truth = _tables()
    with pytest.raises(ValueError, match="1 catalogue items have no truth row .first: item_id 40"):
        truth_item_features(items, truth.slice(0, 3), hidden=False)
