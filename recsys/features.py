"""Feature specs of the ranking model: the extended ranking-sample table and what each variant feeds the model.

The extended table `RANKING_SAMPLES_EXT` is RANKING_SAMPLES plus the columns the ranker and the LightGBM baseline
use (calendar day, counters from earlier days, SAIL features joined point-in-time). Its first columns are exactly
RANKING_SAMPLES', so `core.io.conform(table, RANKING_SAMPLES)` turns it into the core contract.

Variants (one config, four wirings):
- control: ids, context and counters only;
- emb: + the frozen SAIL embedding of the target item (dense, through a projection) and `user_hist_sim`;
- sid: + the semantic-ID levels of the target item as trainable sparse features;
- both: emb + sid;
- placebo: wired as both, but every item's SAIL vector is a random unit vector and its semantic IDs random codes
  (same shapes, the same items without features, `user_hist_sim` recomputed from the random vectors; see
  `recsys.data.placebo_features`). It guards the injection itself: its AUC must stay within noise of control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.contracts import RANKING_SAMPLES_EXT  # noqa: F401 - re-exported for recsys modules

Variant = Literal["control", "emb", "sid", "both", "placebo"]
VARIANTS: tuple[Variant, ...] = ("control", "emb", "sid", "both", "placebo")
WITH_SIDS: tuple[Variant, ...] = ("sid", "both", "placebo")
WITH_EMBEDDING: tuple[Variant, ...] = ("emb", "both", "placebo")


SPLITS = ("train", "valid", "test")

# ------------------------------------------------------------------------------------------- model features

CONTEXT_SPARSE = ("user_id", "item_id", "user_recent_items", "author_id", "category", "surface", "hour", "position")
"""Sparse features of every variant (user_recent_items is a multi-hot bag sharing the item table)."""

COUNTER_DENSE = (
    "log_item_age_hours",
    "log_item_imps_before",
    "log_item_clicks_before",
    "item_ctr_before",
    "log_user_imps_before",
    "log_user_clicks_before",
    "user_ctr_before",
    "recent_len",
)
"""Dense features of every variant (log1p counters, smoothed CTRs, history length / L)."""

TASKS = ("click", "finish")
INTERACTION_ARCHES = ("dcn", "dot", "dcn_dot")  # the TorchRec ranker's interaction arches (recsys.model)


@dataclass(frozen=True)
class FeatureSpec:
    """What one variant feeds the model."""

    variant: Variant
    sid_levels: int  # semantic-ID levels used as sparse features (0: none)
    use_embedding: bool  # frozen target embedding (dense, projected) + user_hist_sim

    @property
    def sparse_features(self) -> tuple[str, ...]:
        return CONTEXT_SPARSE + tuple(f"sid_l{i}" for i in range(self.sid_levels))

    @property
    def dense_features(self) -> tuple[str, ...]:
        return COUNTER_DENSE + (("user_hist_sim", "has_sail") if self.use_embedding else ())


def feature_spec(variant: Variant, sid_levels: int = 3) -> FeatureSpec:
    """The feature spec of a variant; sid_levels is how many semantic-ID levels the sid variants use."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return FeatureSpec(
        variant=variant,
        sid_levels=sid_levels if variant in WITH_SIDS else 0,
        use_embedding=variant in WITH_EMBEDDING,
    )
