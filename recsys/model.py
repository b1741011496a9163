"""TorchRec ranking model with SAIL features: DLRM-style arches, a DCNv2 (low-rank) or DLRM dot interaction, two heads.

Notation
  B  batch size
  F  sparse features (ids, context, semantic-ID levels; user_recent_items is one multi-hot bag feature)
  S  interaction slots = F (+ 1 when the target's SAIL vector is projected into a slot)
  D  embedding dimension (every table and every projection)
  Dd dense input features
  E  SAIL embedding dimension (frozen, from the feature store)
  T  tasks (click, finish)

Wiring (SailRanker): SparseArch (EmbeddingBagCollection over a KeyedJaggedTensor) -> (B, F, D); DenseArch (MLP)
-> (B, D); ContentArch (projection of the frozen vector, only in the +emb variants) -> one more (B, 1, D) slot;
an interaction (RankerConfig.interaction): "dcn", TorchRec's InteractionDCNArch with a LowRankCrossNet
-> (B, (S + 1) D); "dot", TorchRec's DLRM InteractionArch: the dense vector next to the pairwise dot products of
[dense; slots] -> (B, D + S (S + 1) / 2); "dcn_dot" (the default), both outputs side by side; OverArch (shared
MLP, one tower per task) -> (B, T) logits. The loss lives in RankerTrain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.models.dlrm import InteractionArch as DlrmInteractionArch
from torchrec.models.dlrm import InteractionDCNArch
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.modules.mlp import MLP

from recsys.features import INTERACTION_ARCHES, TASKS, FeatureSpec

SHARED_ITEM_FEATURES = ("item_id", "user_recent_items")  # both look up the item-ID table
ITEM_TABLE = "t_item"


@dataclass(frozen=True)
class RankerConfig:
    embedding_dim: int = 16  # D: every table and projection
    dense_layers: tuple[int, ...] = (64,)  # hidden sizes of DenseArch before its D-wide output
    cross_layers: int = 2  # LowRankCrossNet layers
    cross_rank: int = 16  # LowRankCrossNet rank
    over_layers: tuple[int, ...] = (64, 32)  # shared OverArch MLP
    tower_hidden: int = 16  # per-task tower hidden size
    task_weights: tuple[float, ...] = (1.0, 1.0)  # loss weight of click, finish
    interaction: str = "dcn_dot"  # INTERACTION_ARCHES: DCNv2 cross net, DLRM pairwise dots, or both side by side

    def __post_init__(self) -> None:
        if self.interaction not in INTERACTION_ARCHES:
            raise ValueError(f"RankerConfig.interaction must be one of {INTERACTION_ARCHES}, got {self.interaction!r}")


def table_name(feature: str) -> str:
    return ITEM_TABLE if feature in SHARED_ITEM_FEATURES else f"t_{feature}"


def table_configs(spec: FeatureSpec, rows: dict[str, int], dim: int) -> list[EmbeddingBagConfig]:
    """One table per sparse feature (rows[feature] rows), except that item_id and user_recent_items share one."""
    tables: dict[str, EmbeddingBagConfig] = {}
    for feat in spec.sparse_features:
        name = table_name(feat)
        if name in tables:
            tables[name].feature_names.append(feat)
            continue
        key = "item_id" if name == ITEM_TABLE else feat
        tables[name] = EmbeddingBagConfig(
            name=name, embedding_dim=dim, num_embeddings=rows[key], feature_names=[feat], pooling=PoolingType.MEAN
        )
    return list(tables.values())


class SparseArch(nn.Module):
    """Pooled embeddings of every sparse feature, in a fixed order."""

    def __init__(self, ebc: EmbeddingBagCollection, feature_names: tuple[str, ...]) -> None:
        super().__init__()
        self.ebc = ebc
        self.feature_names = list(feature_names)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT with keys feature_names, B rows each -> (B, F, D); an empty bag pools to zeros."""
        kt = self.ebc(features)
        if kt.keys() == self.feature_names:  # pooled values already laid out feature by feature: no copy
            values = kt.values()
            return values.view(values.shape[0], len(self.feature_names), -1)  # (B, F, D)
        return torch.stack([kt[f] for f in self.feature_names], dim=1)  # (B, F, D)


class DenseArch(nn.Module):
    """MLP over the dense features."""

    def __init__(self, in_features: int, layer_sizes: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.mlp = MLP(in_features, [*layer_sizes, out_dim])

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """dense: (B, Dd) -> (B, D)."""
        return self.mlp(dense)


class ContentArch(nn.Module):
    """Projection of the target item's frozen SAIL vector into one interaction slot."""

    def __init__(self, content_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(content_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        """content: (B, E) (zeros where the item has no vector) -> (B, 1, D)."""
        return self.proj(content).unsqueeze(1)  # (B, 1, D)


class InteractionArch(nn.Module):
    """DCNv2 interaction: TorchRec's InteractionDCNArch over [dense; slots] with a low-rank cross net."""

    def __init__(self, num_slots: int, dim: int, cross_layers: int, cross_rank: int) -> None:
        super().__init__()
        self.out_features = (num_slots + 1) * dim
        crossnet = LowRankCrossNet(in_features=self.out_features, num_layers=cross_layers, low_rank=cross_rank)
        self.dcn = InteractionDCNArch(num_sparse_features=num_slots, crossnet=crossnet)

    def forward(self, dense: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """dense: (B, D), slots: (B, S, D) -> (B, (S + 1) D)."""
        return self.dcn(dense, slots)


class DotInteraction(nn.Module):
    """DLRM interaction: TorchRec's InteractionArch, the dense vector next to the pairwise dots of [dense; slots]."""

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.arch = DlrmInteractionArch(num_sparse_features=num_slots)
        self.dim = dim
        self.out_features = dim + (num_slots + 1) * num_slots // 2

    def forward(self, dense: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """dense: (B, D), slots: (B, S, D) -> (B, D + S (S + 1) / 2)."""
        return self.arch(dense, slots)


class DcnDotInteraction(nn.Module):
    """The DCNv2 output next to the DLRM pairwise dots: crosses of every feature plus explicit similarities."""

    def __init__(self, num_slots: int, dim: int, cross_layers: int, cross_rank: int) -> None:
        super().__init__()
        self.dcn = InteractionArch(num_slots, dim, cross_layers, cross_rank)
        self.dot = DotInteraction(num_slots, dim)
        self.out_features = self.dcn.out_features + self.dot.out_features - dim

    def forward(self, dense: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """dense: (B, D), slots: (B, S, D) -> (B, (S + 1) D + S (S + 1) / 2)."""
        dots = self.dot(dense, slots)[:, self.dot.dim :]  # (B, S (S + 1) / 2): the dense copy is in the DCN's output
        return torch.cat([self.dcn(dense, slots), dots], dim=1)


def make_interaction(cfg: RankerConfig, num_slots: int) -> nn.Module:
    """The interaction `cfg.interaction` names over `num_slots` slots of width cfg.embedding_dim."""
    d = cfg.embedding_dim
    if cfg.interaction == "dot":
        return DotInteraction(num_slots, d)
    if cfg.interaction == "dcn_dot":
        return DcnDotInteraction(num_slots, d, cfg.cross_layers, cfg.cross_rank)
    return InteractionArch(num_slots, d, cfg.cross_layers, cfg.cross_rank)


class OverArch(nn.Module):
    """Shared MLP, then one small tower per task."""

    def __init__(self, in_features: int, layer_sizes: tuple[int, ...], tower_hidden: int, tasks: int) -> None:
        super().__init__()
        self.shared = MLP(in_features, list(layer_sizes))
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(layer_sizes[-1], tower_hidden), nn.ReLU(), nn.Linear(tower_hidden, 1))
            for _ in range(tasks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, (S + 1) D) -> logits (B, T)."""
        h = self.shared(x)
        return torch.cat([tower(h) for tower in self.towers], dim=1)  # (B, T)


class SailRanker(nn.Module):
    """Wires the arches; `content_arch` is None in the variants without the SAIL vector."""

    def __init__(
        self,
        sparse_arch: SparseArch,
        dense_arch: DenseArch,
        content_arch: ContentArch | None,
        interaction_arch: nn.Module,  # (dense (B, D), slots (B, S, D)) -> (B, out_features)
        over_arch: OverArch,
    ) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch
        self.content_arch = content_arch
        self.interaction_arch = interaction_arch
        self.over_arch = over_arch

    def forward(
        self, dense: torch.Tensor, sparse: KeyedJaggedTensor, content: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense: (B, Dd), sparse: KJT of F features, content: (B, E) or None -> logits (B, T)."""
        slots = self.sparse_arch(sparse)  # (B, F, D)
        if self.content_arch is not None:
            if content is None:
                raise ValueError("this ranker has a ContentArch: pass the (B, E) SAIL vectors as `content`")
            slots = torch.cat([slots, self.content_arch(content)], dim=1)  # (B, F + 1, D)
        return self.over_arch(self.interaction_arch(self.dense_arch(dense), slots))


@dataclass
class RankerBatch:
    """One batch: dense (B, Dd), sparse KJT, content (B, E) or None, labels (B, T) in {0, 1}, and offset (B, T) or
    None: a base model's logits that the model's output is added to (a residual variant, see recsys.train)."""

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    content: torch.Tensor | None
    labels: torch.Tensor
    offset: torch.Tensor | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> RankerBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return RankerBatch(
            dense=self.dense.to(device, non_blocking=non_blocking),
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            content=move(self.content),
            labels=self.labels.to(device, non_blocking=non_blocking),
            offset=move(self.offset),
        )

    def __len__(self) -> int:
        return self.labels.shape[0]


class RankerTrain(nn.Module):
    """Weighted sum of the tasks' mean binary cross-entropies (the loss lives here, not in the model)."""

    def __init__(self, model: SailRanker, task_weights: tuple[float, ...] = (1.0, 1.0)) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("task_weights", torch.tensor(task_weights, dtype=torch.float32), persistent=False)

    def forward(self, batch: RankerBatch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """batch of B rows -> loss (), (loss, logits (B, T), labels (B, T)) detached; the logits include the
        batch's offset when it has one."""
        logits = self.model(batch.dense, batch.sparse, batch.content)
        if batch.offset is not None:
            logits = logits + batch.offset
        per_task = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none").mean(0)
        loss = (per_task * self.task_weights).sum()
        return loss, (loss.detach(), logits.detach(), batch.labels.detach())


def zero_output(model: SailRanker) -> None:
    """Zeroes the last layer of every task tower: the model outputs 0 logits until it trains, so a residual
    variant (logits added to a base model's) starts as exactly its base model."""
    with torch.no_grad():
        for tower in model.over_arch.towers:
            tower[-1].weight.zero_()
            tower[-1].bias.zero_()


def build_ranker(
    cfg: RankerConfig,
    spec: FeatureSpec,
    table_rows: dict[str, int],
    num_dense: int,
    content_dim: int = 0,
    device: torch.device | str = "cpu",
) -> SailRanker:
    """The ranker of one variant. Tables go to `device` ("meta" defers them to DistributedModelParallel)."""
    d = cfg.embedding_dim
    ebc = EmbeddingBagCollection(tables=table_configs(spec, table_rows, d), device=torch.device(device))
    content_arch = None
    if spec.use_embedding:
        if content_dim < 1:
            raise ValueError(f"variant {spec.variant!r} needs the SAIL vectors (content_dim >= 1), got {content_dim}")
        content_arch = ContentArch(content_dim, d)
    n_slots = len(spec.sparse_features) + (1 if content_arch is not None else 0)
    interaction = make_interaction(cfg, n_slots)
    return SailRanker(
        sparse_arch=SparseArch(ebc, spec.sparse_features),
        dense_arch=DenseArch(num_dense, cfg.dense_layers, d),
        content_arch=content_arch,
        interaction_arch=interaction,
        over_arch=OverArch(interaction.out_features, cfg.over_layers, cfg.tower_hidden, len(TASKS)),
    )
