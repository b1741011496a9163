"""The ranker's arches: the sparse slots read without a copy equal the per-feature stack; the interactions."""

from __future__ import annotations

import pytest
import torch
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from recsys.features import FeatureSpec
from recsys.model import (
    INTERACTION_ARCHES,
    ITEM_TABLE,
    DcnDotInteraction,
    DotInteraction,
    RankerConfig,
    SparseArch,
    build_ranker,
    table_configs,
)

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


def test_dot_interaction_is_the_dense_vector_then_every_pairwise_dot_by_hand():
    torch.manual_seed(0)
    dense, slots = torch.randn(2, 4), torch.randn(2, 3, 4)
    arch = DotInteraction(num_slots=3, dim=4)
    out = arch(dense, slots)
    assert out.shape == (2, arch.out_features) and arch.out_features == 4 + 6
    vecs = torch.cat([dense.unsqueeze(1), slots], dim=1)  # (B, 4, D): dense first, then the slots
    dots = [(vecs[:, i] * vecs[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4)]
    torch.testing.assert_close(out, torch.cat([dense, torch.stack(dots, dim=1)], dim=1))


def test_dcn_dot_interaction_is_the_dcn_output_next_to_the_dots():
    torch.manual_seed(0)
    dense, slots = torch.randn(2, 4), torch.randn(2, 3, 4)
    arch = DcnDotInteraction(num_slots=3, dim=4, cross_layers=2, cross_rank=2)
    out = arch(dense, slots)
    assert out.shape == (2, arch.out_features) and arch.out_features == 4 * 4 + 6
    torch.testing.assert_close(out[:, :16], arch.dcn(dense, slots))
    torch.testing.assert_close(out[:, 16:], DotInteraction(3, 4)(dense, slots)[:, 4:])


@pytest.mark.parametrize("interaction", INTERACTION_ARCHES)
def test_every_interaction_builds_a_ranker_that_trains(interaction):
    torch.manual_seed(0)
    spec = _Spec(variant="control", sid_levels=0, use_embedding=False)
    cfg = RankerConfig(embedding_dim=8, interaction=interaction)
    model = build_ranker(cfg, spec, {"item_id": 10, "user_id": 3, "category": 4}, num_dense=5)
    dense, kjt = torch.randn(3, 5), _kjt()
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model(dense, kjt).shape == (3, 2)
    assert losses[-1] < 0.5 * losses[0]


def test_an_unknown_interaction_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"interaction must be one of \('dcn', 'dot', 'dcn_dot'\), got 'mlp'"):
        RankerConfig(interaction="mlp")
