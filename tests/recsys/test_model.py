"""The ranker's arches: the sparse slots read without a copy equal the per-feature stack."""

from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from recsys.features import FeatureSpec
from recsys.model import ITEM_TABLE, SparseArch, table_configs

FEATURES = ("item_id", "user_recent_items", "user_id", "category")


class _Spec(FeatureSpec):
    @property
    def sparse_features(self) -> tuple[str, ...]:
        return FEATURES


def _kjt() -> KeyedJaggedTensor:
    # 3 rows per feature; the bag has an empty row (pools to zeros) and a row of 3 ids
    lengths = {"item_id": [1, 1, 1], "user_recent_items": [0, 3, 2], "user_id": [1, 1, 1], "category": [1, 1, 1]}
    values = {"item_id": [0, 5, 9], "user_recent_items": [1, 2, 3, 4, 4], "user_id": [2, 0, 1], "category": [3, 3, 0]}
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(FEATURES),
        values=torch.tensor([v for f in FEATURES for v in values[f]]),
        lengths=torch.tensor([n for f in FEATURES for n in lengths[f]]),
    )


def test_sparse_arch_slots_equal_the_per_feature_pooled_embeddings_in_either_order():
    torch.manual_seed(0)
    spec = _Spec(variant="control", sid_levels=0, use_embedding=False)
    ebc = EmbeddingBagCollection(tables=table_configs(spec, {"item_id": 10, "user_id": 3, "category": 4}, 8))
    kjt = _kjt()
    kt = ebc(kjt)
    for order in (FEATURES, tuple(reversed(FEATURES))):  # the ebc's own order (no copy) and another (stacked)
        slots = SparseArch(ebc, order)(kjt)
        expected = torch.stack([kt[f] for f in order], dim=1)
        assert slots.shape == (3, len(FEATURES), 8)
        torch.testing.assert_close(slots, expected, rtol=0, atol=0)
    # by hand: row 1 of the bag is the mean of item rows 1, 2, 3; row 0 is empty
    table = ebc.embedding_bags[ITEM_TABLE].weight
    slots = SparseArch(ebc, FEATURES)(kjt)
    torch.testing.assert_close(slots[1, 1], table[[1, 2, 3]].mean(0))
    torch.testing.assert_close(slots[2, 0], table[9])
    torch.testing.assert_close(slots[0, 1], torch.zeros(8))
