"""Staged SAIL trainer: stage I -> II -> III (hard negatives) -> CRE, with OT source balancing, per-source learnable
temperatures, Matryoshka / COSENT / mICL losses, safetensors checkpoints with exact resume, and torchrun support.

Notation: B pairs per batch (per rank: B / world), N hard negatives per query, D embedding dim, d_id ID-vector dim.

    train(TrainConfig(...), data_dir, out_dir) -> TrainResult

- Data: `embedding.data` (time split, miners, sources). Items are embedded with task "item", text queries (q2i
  queries, tag lists) with task "query"; seq2item queries are the mean of the history items' embeddings; id2item
  compares a trained projection of the item embedding with the item's collaborative ID vector.
- Balancing: at the start of each stage the current model embeds a sample of every source and of the train-period
  benchmark proxies (q2i queries, co-engagement anchors); `embedding.balancing.source_weights` (k-means + Sinkhorn OT
  + softmax) gives the weights, mixed with a uniform floor; each batch is ONE source drawn by them
  (`StochasticSpecialisationSampler`). Without balancing the weights are uniform.
- Hard negatives (stage III sources): `HardNegativeMiner` refreshed every `refresh_every` stage steps (faiss over the
  current catalogue embeddings, F1-optimal false-negative threshold); negatives are forwarded with gradients. A
  refresh mines only the rows the seeded sampler draws before the next refresh, and with `hn_catalogue_pool` P > 0
  searches a seeded sample of P catalogue items instead of the whole catalogue (`embedding.negatives`).
- Loss (`SailTrain`, the thin train wrapper): Matryoshka(InfoNCE with the source's temperature) + cosent_weight *
  COSENT (graded q2i) + micl_weight * mICL (visual-only + text-only [+ micl_audio_weight * audio-only] terms)
  [+ id2item InfoNCE through `id_proj`].
- Determinism / resume: every step reseeds torch and the batch's field-dropout generator from (seed, step); the
  sampler is a pure function of (seed, stage, weights) and is fast-forwarded on resume; the learning rate is a pure
  function of the step. A checkpoint (`checkpoints/step-XXXXXXX/`) holds the model, temperatures, projection,
  AdamW state, RNG states and mined negatives in `state.safetensors`, and step / stage weights / miner scalars
  in `state.json`. Nothing is unpickled; a killed run resumed from its last checkpoint ends identical to an
  unbroken one.
- Device and precision: `device` ('cpu' default, 'cuda', 'cuda:N', 'auto') holds the model, the loss module and
  every batch (preprocessing stays on the CPU); `precision='bf16'` runs forward passes and losses under bfloat16
  autocast while weights and AdamW state stay fp32. Checkpoints are written from CPU copies, so a run may resume on
  another device; the CUDA RNG state is saved beside the CPU one when CUDA is used.
- Ablation variants: `fuser=False` builds `ConcatFusionModel` (pooled text + visual + audio concatenated -> linear,
  no LLM backbone); `audio=False` drops the audio of every item (training and inference); `hard_negatives=False`,
  `balancing=False`; `collaborative=False` skips CRE (content-only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from core.faults import EMBEDDING_FAULT_ENV, kill_after_step
from core.progress import progress
from embedding.balancing import StochasticSpecialisationSampler, source_weights
from embedding.checkpoint import save_embedding_model
from embedding.config import ModelConfig
from embedding.data import DataConfig, PairSource, TrainingData
from embedding.device import autocast, check_device, check_precision, resolve_device
from embedding.losses import CoSENTLoss, InfoNCELoss, MatryoshkaLoss, MICLLoss, TemperatureBank, micl_sources
from embedding.model import EmbeddingOutput, build_embedding_model
from embedding.negatives import HardNegativeMiner, MiningSource
from embedding.preprocess import ItemBatch, ItemInputs, build_text, build_tokenizer, collate_items
from embedding.towers import (
    l2_normalize,
    masked_mean,
)

# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tiny"  # 'tiny', 'minilm' (the pretrained start), 'cpu_default', or a JSON file of a ModelConfig dict
    # The defaults are `sail run`'s ([embedding] of jobs.pipeline.EmbeddingSection; a test keeps them equal)
    steps_i: int = 600  # stage I steps (broad content pairs); 0 skips the stage
    steps_ii: int = 80  # stage II steps (task-aligned clean pairs)
    steps_iii: int = 60  # stage III steps (hard negatives on the clean subset)
    steps_cre: int = 150  # CRE steps (co-engagement, seq2item, id2item, auxiliary content i2i)
    batch_size: int = 32  # B pairs per step (global; each torchrun rank takes B / world of them)
    lr: float = 1e-3  # peak AdamW learning rate
    pretrained_lr_scale: float = 0.1  # the pretrained text layers and the text residual projection learn at lr x this
    keep_start_weight: float = 0.0  # text-residual models: weight of mean(1 - cos(item embedding, its embedding at
    # the pretrained start)) on every batch's targets; 0 lets training move items anywhere
    weight_decay: float = 0.01
    warmup_steps: int = 10  # linear warm-up at the start of each stage, then cosine decay to 10% within the stage
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    seed: int = 0
    balancing: bool = True  # OT source weights per stage (False: uniform over the stage's sources)
    balance_sample: int = 160  # rows embedded per source / benchmark for the OT weights
    balance_k: int = 4  # k-means centroids per set
    balance_temperature: float = 0.05  # softmax temperature over OT similarities
    balance_floor: float = 0.2  # share of the weights spread uniformly (every source keeps some batches)
    hard_negatives: bool = True  # stage III with mined hard negatives (False: stage III trains without them)
    refresh_every: int = 30  # stage steps between hard-negative refreshes
    num_negatives: int = 2  # N hard negatives per query
    hn_range_max: int = 50  # candidates searched per query when mining
    hn_catalogue_pool: int = 0  # items a hard-negative refresh searches: 0 = the whole catalogue; P > 0 = a seeded
    # uniform sample of P items, new at each refresh (negatives are the hardest within the pool, not the catalogue;
    # the refresh embeds the pool, the rows drawn before the next refresh and their positives, not the whole catalogue)
    fuser: bool = True  # True: the LLM fuser (SailEmbeddingModel); False: ConcatFusionModel (ablation / CLIP-style)
    audio: bool = True  # False: every item's audio is dropped (ablation)
    collaborative: bool = True  # False: no CRE stage (content-only model)
    cosent_weight: float = 0.2  # COSENT on graded q2i pairs
    micl_weight: float = 0.1  # modality-specific contrastive terms
    micl_audio_weight: float = 0.0  # the audio-only term's weight inside mICL (visual and text weigh 1); 0: no term
    id_weight: float = 1.0  # id2item loss weight
    field_drop_prob: float = 0.1  # training-time text field dropout
    text_cache_size: int = 16384  # frozen text tower: cached texts (fp16 token states)
    threads: int = 1  # torch intra-op threads (1: measured fastest while the machine is shared)
    device: str = "cpu"  # 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available); torchrun ranks use cuda:LOCAL_RANK
    precision: str = "fp32"  # 'fp32' or 'bf16' (bfloat16 autocast of forward + loss; weights and AdamW stay fp32)
    checkpoint_every: int = 50  # global steps between checkpoints (the last step always checkpoints)
    keep_checkpoints: int = 2  # most recent checkpoints kept
    stop_after: int | None = None  # stop after this many global steps, as if killed (tests); None: run to the end
    embed_batch_size: int = 64  # items per forward when embedding (balancing, mining, inference)
    probe_batches: int = 2  # fixed batches per source whose loss is measured at each stage's start and end
    progress: bool = True  # progress: a bar on a terminal, a line every 30 s elsewhere (core.progress)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_device(self.device)

    def steps(self) -> dict[str, int]:
        return {"I": self.steps_i, "II": self.steps_ii, "III": self.steps_iii, "CRE": self.steps_cre}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["data"] = DataConfig(**d.get("data", {}))
        return cls(**d)


MODEL_PRESETS = ("tiny", "minilm", "cpu_default")


def resolve_model_config(spec: str, cfg: TrainConfig | None = None) -> ModelConfig:
    """'tiny' | 'minilm' | 'cpu_default' | a JSON file -> ModelConfig (with the trainer's text cache size)."""
    if spec == "tiny":
        mc = ModelConfig.tiny()
    elif spec == "minilm":
        mc = ModelConfig.minilm()
    elif spec == "cpu_default":
        mc = ModelConfig.cpu_default()
    else:
        try:
            mc = ModelConfig.from_dict(json.loads(Path(spec).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"model {spec!r} is neither a preset {list(MODEL_PRESETS)} nor a readable JSON ModelConfig file "
                f"({type(e).__name__}: {e})"
            ) from None
    if cfg is not None and mc.text.freeze:
        mc = dataclasses.replace(mc, text=dataclasses.replace(mc.text, cache_size=cfg.text_cache_size))
    return mc


# --------------------------------------------------------------------------------------------------------
# Batches and the train wrapper
# --------------------------------------------------------------------------------------------------------


@dataclass
class TrainBatch:
    """One source's batch. `query` is None for 'history' / 'id' kinds."""

    source: str
    kind: str  # PairSource.query_kind
    target: ItemBatch  # B items
    query: ItemBatch | None = None  # B items or texts
    history: ItemBatch | None = None  # sum of history lengths items
    history_segments: torch.Tensor | None = None  # (n_hist,) int64: query row of each history item
    negatives: ItemBatch | None = None  # B * N items
    negative_mask: torch.Tensor | None = None  # (B, N) bool
    scores: torch.Tensor | None = None  # (B,) graded labels
    id_vectors: torch.Tensor | None = None  # (B, d_id)
    start_vectors: torch.Tensor | None = None  # (B, D) the targets' embeddings at the pretrained start (0: none)

    def __len__(self) -> int:
        return len(self.target)

    def to(self, device: torch.device) -> TrainBatch:
        """The batch with every tensor (and every ItemBatch's tensors) on `device`."""
        moved = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device) if isinstance(v, (torch.Tensor, ItemBatch)) else v
        return TrainBatch(**moved)


def _segment_mean(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """(M, d) rows, (M,) segment ids in [0, n) -> (n, d) L2-normalised segment means."""
    out = x.new_zeros(n, x.shape[1]).index_add(0, seg, x)
    return l2_normalize(out)


class SailTrain(nn.Module):
    """Loss wrapper: model + per-source temperatures + id projection. forward(TrainBatch) ->
    (loss, (loss.detach(), per-part losses))."""

    def __init__(self, model: nn.Module, sources: list[str], id_dim: int | None, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.temperatures = TemperatureBank([*sources, *micl_sources(cfg.micl_audio_weight)])
        self.dims = tuple(model.matryoshka_dims)
        self.info_nce = MatryoshkaLoss(InfoNCELoss(self.temperatures), self.dims)
        self.cosent = CoSENTLoss()
        self.micl = MICLLoss(self.temperatures, audio_weight=cfg.micl_audio_weight)
        self.id_proj = nn.Linear(self.dims[-1], id_dim) if id_dim else None
        self.cosent_weight, self.micl_weight, self.id_weight = cfg.cosent_weight, cfg.micl_weight, cfg.id_weight
        self.keep_start_weight = cfg.keep_start_weight

    def keep_start(self, target: EmbeddingOutput, start: torch.Tensor | None) -> torch.Tensor | None:
        """keep_start_weight x mean(1 - cos(embedding, its pretrained start)) over the targets that have a start
        vector: how far training has moved them from where the pretrained encoder put them."""
        if start is None or not self.keep_start_weight:
            return None
        has = start.norm(dim=1) > 0  # (B,)
        if not has.any():
            return None
        cos = (target.embedding[has] * start[has]).sum(dim=1)
        return self.keep_start_weight * (1.0 - cos).mean()

    def forward(self, batch: TrainBatch) -> tuple[torch.Tensor, tuple[torch.Tensor, dict[str, float]]]:
        target = self.model(batch.target, "item")
        parts: dict[str, torch.Tensor] = {}
        keep = self.keep_start(target, batch.start_vectors)
        if keep is not None:
            parts["keep_start"] = keep
        if batch.kind == "id":
            pred = l2_normalize(self.id_proj(target.embedding))  # (B, d_id)
            loss = self.id_weight * self.info_nce.inner(pred, batch.id_vectors, batch.source)
            parts["id2item"] = loss
            if keep is not None:
                loss = loss + keep
            return loss, (loss.detach(), {k: float(v.detach()) for k, v in parts.items()})
        if batch.kind == "history":
            hist = self.model(batch.history, "item")
            query_m = {d: _segment_mean(hist.matryoshka[d], batch.history_segments, len(batch)) for d in self.dims}
            query = None
        else:
            query = self.model(batch.query, "query" if batch.kind == "text" else "item")
            query_m = query.matryoshka
        hard = None
        if batch.negatives is not None:
            neg = self.model(batch.negatives, "item")
            n = batch.negative_mask.shape[1]
            hard = {d: neg.matryoshka[d].view(len(batch), n, d) for d in self.dims}  # (B, N, d)
        loss = self.info_nce(
            query_m, target.matryoshka, batch.source, hard_negatives=hard, hard_negative_mask=batch.negative_mask
        )
        parts["infonce"] = loss
        if batch.scores is not None and batch.kind == "text" and self.cosent_weight:
            c = self.cosent_weight * self.cosent(query_m[self.dims[-1]], target.embedding, batch.scores)
            parts["cosent"] = c
            loss = loss + c
        if query is not None and self.micl_weight:
            m = self.micl_weight * self.micl(query, target)
            parts["micl"] = m
            loss = loss + m
        if keep is not None:
            loss = loss + keep
        return loss, (loss.detach(), {k: float(v.detach()) for k, v in parts.items()})


# --------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path  # final model (after CRE when it ran)
    content_model_path: Path | None  # snapshot after the last content stage (stages I-III)
    metrics_path: Path
    checkpoint_dir: Path | None  # last checkpoint written
    steps_done: int
    total_steps: int
    completed: bool  # False when stopped early by `stop_after`
    final_loss: float
    pairs_per_s: float
    seconds: float
    stage_losses: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> first / last mean loss
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> fixed-batch loss at start / end
    data_summary: dict[str, Any] = field(default_factory=dict)


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


_RESUME_FREE = (
    "stop_after",
    "progress",
    "threads",
    "checkpoint_every",
    "keep_checkpoints",
    "embed_batch_size",
    "device",
)
"""Config fields that may change between a run and its resumption."""


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])


class _ItemEmbeddings:
    """Catalogue indices -> embeddings, each item embedded (by `embed_rows`) at most once: the hard-negative sources
    of one refresh share the catalogue or pool."""

    def __init__(self, embed_rows) -> None:
        self.embed_rows = embed_rows
        self.idx = np.zeros(0, np.int64)  # sorted catalogue indices embedded so far
        self.emb: np.ndarray | None = None  # (len(idx), D)

    def __call__(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        missing = np.setdiff1d(items, self.idx)
        if missing.size:
            new = self.embed_rows(missing)
            idx = np.concatenate([self.idx, missing])
            emb = new if self.emb is None else np.concatenate([self.emb, new])
            order = np.argsort(idx, kind="stable")
            self.idx, self.emb = idx[order], emb[order]
        if items.size == self.idx.size and np.array_equal(items, self.idx):
            return self.emb
        return self.emb[np.searchsorted(self.idx, items)]


class Trainer:
    """Holds the model, optimizer, data and state; `run()` trains to the end (or `stop_after`)."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, out_dir: Path, model_cfg: ModelConfig) -> None:
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.rank, self.world = _dist()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        torch.manual_seed(cfg.seed)
        self.model_cfg = model_cfg
        self.model = build_embedding_model(model_cfg, fuser=cfg.fuser)
        self.tokenizer = build_tokenizer(model_cfg.text)
        self.start_vectors: np.ndarray | None = None  # (N, D) per store row: the embedding at the pretrained start
        self._store_text_states()
        if getattr(self.model, "text_residual", None) is not None:  # the pretrained start (a checkpoint overrides it)
            from embedding.model import init_text_residual

            sentence = torch.from_numpy(self.sentence_vectors(np.arange(len(data.store))))
            init_text_residual(self.model, sentence)
            if cfg.keep_start_weight:  # the rotated sentence vectors (zero rows for items without text)
                with torch.no_grad():
                    start = l2_normalize(l2_normalize(sentence) @ self.model.text_residual.weight.T)
                self.start_vectors = (start * (sentence.norm(dim=1, keepdim=True) > 0)).numpy()
        id_dim = data.id_vectors.shape[1] if data.id_vectors is not None else None
        self.train_module = SailTrain(self.model, list(data.sources), id_dim, cfg).to(self.device)
        self.params = [p for p in self.train_module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.wrapped: nn.Module = self.train_module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.train_module, device_ids=ids, find_unused_parameters=True)
        self.plan = self._plan()
        self.total_steps = sum(n for _, n, _ in self.plan)
        self.step = 0
        self.weights: dict[str, dict[str, float]] = {}
        hn_sources = tuple(s for s in data.stages.get("III", []) if data.sources[s].hard_negatives)
        self.miner = HardNegativeMiner(
            sources=hn_sources if cfg.hard_negatives else (),
            refresh_every=cfg.refresh_every,
            num_negatives=cfg.num_negatives,
            range_max=cfg.hn_range_max,
            catalogue_pool=cfg.hn_catalogue_pool,
            seed=cfg.seed,
        )
        self.ckpt_root = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.last_ckpt: Path | None = None
        self.probes: dict[str, dict[str, Any]] = {}  # stage -> probe loss at its start / end (this process)

    def _param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: the pretrained text layers and the text residual projection at lr x pretrained_lr_scale
        (each group's `scale`), everything else at lr."""
        pretrained = {id(p) for p in self.model.text_tower.parameters()}
        residual = getattr(self.model, "text_residual", None)
        if residual is not None:
            pretrained |= {id(p) for p in residual.parameters()}
        slow = [p for p in self.params if id(p) in pretrained]
        fast = [p for p in self.params if id(p) not in pretrained]
        groups = [{"params": fast, "scale": 1.0}]
        if slow:
            groups.append({"params": slow, "scale": self.cfg.pretrained_lr_scale})
        return groups

    def _store_text_states(self) -> None:
        """A frozen text tower reads its lower-layer states of the catalogue's full texts from disk, beside the
        item store's cache (`embedding.text_states`): rank 0 computes them once (or finds them from an earlier
        model with the same frozen layers), the other ranks then open them."""
        from embedding.text_states import build_text_states, open_text_states

        cache_dir = self.data.store.cache_dir
        tower = self.model.text_tower
        if cache_dir is None or not tower.cache_size:
            return
        max_tokens = self.model_cfg.preprocess.max_text_tokens
        if self.rank == 0:
            texts = [build_text(r) for r in self.data.store.text_rows]
            desc = "text states" if self.cfg.progress else None
            build_text_states(tower, self.tokenizer, texts, max_tokens, cache_dir, self.cfg.embed_batch_size, desc)
        _barrier()
        if self.rank != 0:
            open_text_states(tower, self.tokenizer, max_tokens, cache_dir)

    @torch.no_grad()
    def sentence_vectors(self, rows: np.ndarray) -> np.ndarray:
        """(n, Dt) mean-pooled text-tower states of some store rows' full texts (no field dropout), in eval mode."""
        tower = self.model.text_tower
        was_training = tower.training
        tower.eval()
        out = []
        for s in range(0, len(rows), self.cfg.embed_batch_size):
            texts = [build_text(self.data.store.text_rows[int(r)]) for r in rows[s : s + self.cfg.embed_batch_size]]
            ids, mask = self.tokenizer(texts, self.model_cfg.preprocess.max_text_tokens)
            states = tower(ids, mask, texts)  # (b, L, Dt), fills a frozen tower's cache
            out.append(masked_mean(states, mask.bool() & torch.tensor([bool(t) for t in texts])[:, None], 1))
        tower.train(was_training)
        return torch.cat(out).numpy()

    # -- plan and schedule -----------------------------------------------------------------------------

    def _plan(self) -> list[tuple[str, int, int]]:
        """[(stage, steps, first global step)] for the stages that run."""
        plan, at = [], 0
        for stage, n in self.cfg.steps().items():
            if stage == "CRE" and not self.cfg.collaborative:
                continue
            if n > 0 and self._stage_sources(stage):
                plan.append((stage, n, at))
                at += n
        return plan

    def _stage_sources(self, stage: str) -> list[str]:
        b = self.cfg.batch_size
        return [s for s in self.data.stages.get(stage, []) if len(self.data.sources[s]) >= b]

    def lr_at(self, local: int, n: int) -> float:
        w = self.cfg.warmup_steps
        if local < w:
            return self.cfg.lr * (local + 1) / w
        t = (local - w) / max(1, n - w)
        return self.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    # -- batches ---------------------------------------------------------------------------------------

    def _items(self, rows, gen: torch.Generator | None, train: bool = True) -> ItemBatch:
        drop = self.cfg.field_drop_prob if train else 0.0
        inputs = self.data.store.inputs(rows, drop, gen, audio=self.cfg.audio)
        return collate_items(inputs, self.tokenizer, self.model_cfg.preprocess)

    def _texts(self, texts: list[str]) -> ItemBatch:
        return collate_items([ItemInputs(text=t.strip()) for t in texts], self.tokenizer, self.model_cfg.preprocess)

    def make_batch(self, name: str, rows: np.ndarray, gen: torch.Generator) -> TrainBatch:
        src: PairSource = self.data.sources[name]
        rows = rows[self.rank :: self.world]
        targets = src.targets[rows]
        batch = TrainBatch(source=name, kind=src.query_kind, target=self._items(targets, gen))
        if src.query_kind == "item":
            batch.query = self._items(src.queries[rows], gen)
        elif src.query_kind == "text":
            batch.query = self._texts([src.queries[int(i)] for i in rows])
        elif src.query_kind == "history":
            hists = [src.queries[int(i)] for i in rows]
            batch.history = self._items(np.concatenate(hists), gen)
            batch.history_segments = torch.repeat_interleave(
                torch.arange(len(hists)), torch.tensor([len(h) for h in hists])
            )
        elif src.query_kind == "id":
            batch.id_vectors = torch.from_numpy(self.data.id_vectors[targets])
        if self.start_vectors is not None:
            batch.start_vectors = torch.from_numpy(self.start_vectors[targets])
        if src.scores is not None:
            batch.scores = torch.from_numpy(src.scores[rows].astype(np.float32))
        if src.hard_negatives and name in self.miner.negatives:
            mined = self.miner.negatives_for(name, rows)
            idx = mined.indices  # (B, N), -1 padding
            mask = idx >= 0
            fill = np.where(mask, idx, targets[:, None])  # padding rows: any real item, masked out
            batch.negatives = self._items(fill.reshape(-1), gen)
            batch.negative_mask = torch.from_numpy(mask)
        return batch.to(self.device)

    # -- embedding with the current model (balancing, mining) ---------------------------------------------

    def _embed(self, inputs: list[ItemInputs], task: str) -> np.ndarray:
        """(N, D) full-size embeddings of `inputs` with the current model, in the run's precision."""
        from embedding.infer import embed_item_inputs

        pre, batch = self.model_cfg.preprocess, self.cfg.embed_batch_size
        out = embed_item_inputs(self.model, inputs, self.tokenizer, pre, task, batch, self.cfg.precision)
        return out[self.model_cfg.embed_dim]

    def embed_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._embed(self.data.store.inputs(rows, audio=self.cfg.audio), "item")

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._embed([ItemInputs(text=t.strip()) for t in texts], "query")

    def embed_queries(self, src: PairSource, rows: np.ndarray) -> np.ndarray:
        if src.query_kind == "text":
            return self.embed_texts([src.queries[int(i)] for i in rows])
        if src.query_kind == "history":
            hists = [src.queries[int(i)] for i in rows]
            emb = self.embed_rows(np.concatenate(hists))
            seg = np.repeat(np.arange(len(hists)), [len(h) for h in hists])
            out = np.zeros((len(hists), emb.shape[1]), dtype=np.float32)
            np.add.at(out, seg, emb)
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return self.embed_rows(src.queries[rows])

    def stage_weights(self, stage: str, names: list[str]) -> dict[str, float]:
        if not self.cfg.balancing or len(names) == 1 or not self.data.benchmarks:
            return {s: 1.0 / len(names) for s in names}
        was_training = self.model.training
        self.model.eval()
        rng = np.random.default_rng(_step_seed(self.cfg.seed, 0, 7 + len(stage)))

        def sample(src: PairSource) -> np.ndarray:
            rows = np.sort(rng.choice(len(src), size=min(self.cfg.balance_sample, len(src)), replace=False))
            return self.embed_queries(src, rows)

        src_emb = {s: sample(self.data.sources[s]) for s in names}
        bench_emb = {b: sample(src) for b, src in self.data.benchmarks.items()}
        self.model.train(was_training)
        w = source_weights(src_emb, bench_emb, self.cfg.balance_temperature, self.cfg.balance_k, self.cfg.seed)
        f = self.cfg.balance_floor
        return {s: (1 - f) * w[s] + f / len(names) for s in names}

    def mining_source(self, name: str, item_cache: _ItemEmbeddings) -> MiningSource:
        """For the hard-negative miner: the source's positives per row, its queries and catalogue items embedded with
        the current model on demand (items through `item_cache`, shared by the sources of one refresh)."""
        src = self.data.sources[name]
        positives = src.positives_by_query()
        if src.query_kind == "item":
            positives = [p | {int(qi)} for p, qi in zip(positives, src.queries.tolist(), strict=True)]

        def embed_queries(rows: np.ndarray) -> np.ndarray:
            if src.query_kind == "item":  # an item query is embedded as its item: shared with the catalogue / pool
                return item_cache(src.queries[rows])
            return self.embed_queries(src, rows)

        return MiningSource(positives, len(self.data.store), embed_queries, item_cache)

    def mining_sources(self) -> Callable[[str], MiningSource]:
        """`mining_source` for one refresh: its sources share one item cache."""
        items = _ItemEmbeddings(self.embed_rows)
        return lambda name: self.mining_source(name, items)

    def refresh_rows(self, sampler: StochasticSpecialisationSampler, local: int, n: int) -> dict[str, np.ndarray]:
        """Per hard-negative source, the rows the stage's sampler draws in stage steps [local, local + refresh_every)
        (the steps that use a refresh at `local`): a fresh pass of the seeded sampler, so a resumed run gets the
        same rows."""
        rows: dict[str, list[np.ndarray]] = {s: [] for s in self.miner.sources}
        for name, r in islice(iter(sampler), local, min(local + self.cfg.refresh_every, n)):
            if name in rows:
                rows[name].append(r)
        return {s: np.unique(np.concatenate(v)) if v else np.zeros(0, np.int64) for s, v in rows.items()}

    @torch.no_grad()
    def probe_loss(self, stage: str) -> dict[str, Any]:
        """The stage objective on fixed data: the weight-averaged loss (eval mode, no hard negatives) of the first
        `probe_batches` x B rows of each of the stage's sources."""
        was_training = self.model.training
        self.model.eval()
        per_source = {}
        b = self.cfg.batch_size
        for name in self._stage_sources(stage):
            n = min(self.cfg.probe_batches, len(self.data.sources[name]) // b)
            losses = []
            for k in range(n):
                gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, k, 11))
                batch = self.make_batch(name, np.arange(k * b, (k + 1) * b), gen)
                batch.negatives, batch.negative_mask = None, None
                with autocast(self.device, self.cfg.precision):
                    losses.append(float(self.train_module(batch)[0]))
            per_source[name] = float(np.mean(losses))
        self.model.train(was_training)
        w = self.weights[stage]
        return {"loss": sum(w[s] * v for s, v in per_source.items()), "per_source": per_source}

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"module.{k}": v.detach().cpu().clone().contiguous() for k, v in self.train_module.state_dict().items()}
        opt = self.optimizer.state_dict()
        for i, st in opt["state"].items():
            for k, v in st.items():
                t[f"opt.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().clone().contiguous()
        t["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        for name, mined in self.miner.negatives.items():
            t[f"hn.{name}.indices"] = torch.from_numpy(mined.indices.copy())
            t[f"hn.{name}.scores"] = torch.from_numpy(mined.scores.copy())
        return t

    def state_json(self) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "weights": self.weights,
            "param_groups": opt["param_groups"],
            "opt_state_keys": {str(i): sorted(st) for i, st in opt["state"].items()},
            "miner": {
                "thresholds": self.miner.thresholds,
                "f1": self.miner.f1,
                "last_refresh": self.miner.last_refresh,
                "refreshes": self.miner.refreshes,
            },
            "cfg": self.cfg.to_dict(),
            "model_cfg": self.model_cfg.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        from core.io import atomic_dir

        path = self.ckpt_root / f"step-{self.step:07d}"
        with atomic_dir(path) as tmp:
            save_file(self.state_tensors(), str(tmp / "state.safetensors"), metadata={"format": "sail-train-v1"})
            (tmp / "state.json").write_text(json.dumps(self.state_json(), indent=1, default=str))
        self.last_ckpt = path
        done = sorted(p for p in self.ckpt_root.glob("step-*") if (p / "_SUCCESS").exists())
        for old in done[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def latest_checkpoint(self) -> Path | None:
        if not self.ckpt_root.exists():
            return None
        done = sorted(p for p in self.ckpt_root.glob("step-*") if (p / "_SUCCESS").exists())
        return done[-1] if done else None

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        from embedding.negatives import MinedNegatives

        t = load_file(str(path / "state.safetensors"))
        meta = json.loads((path / "state.json").read_text())
        saved, now = meta["cfg"], self.cfg.to_dict()
        differ = sorted(k for k in saved if k not in _RESUME_FREE and saved[k] != now.get(k))
        if differ:
            raise ValueError(f"{path} was written with another config ({differ} differ); use a new out_dir or --fresh")
        module_state = {k[len("module.") :]: v for k, v in t.items() if k.startswith("module.")}
        self.train_module.load_state_dict(module_state, strict=True)
        opt_state = {int(i): {k: t[f"opt.{i}.{k}"] for k in keys} for i, keys in meta["opt_state_keys"].items()}
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(t["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in t:
            torch.cuda.set_rng_state(t["rng.cuda"], self.device)
        self.step = int(meta["step"])
        self.weights = meta["weights"]
        m = meta["miner"]
        self.miner.thresholds, self.miner.f1 = m["thresholds"], m["f1"]
        self.miner.last_refresh, self.miner.refreshes = m["last_refresh"], m["refreshes"]
        for name in self.miner.sources:
            if f"hn.{name}.indices" in t:
                self.miner.negatives[name] = MinedNegatives(
                    t[f"hn.{name}.indices"].numpy(), t[f"hn.{name}.scores"].numpy()
                )
        self.last_ckpt = path

    # -- the loop ----------------------------------------------------------------------------------

    def _log(self, rec: dict[str, Any]) -> None:
        if self.rank == 0:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    def _truncate_log(self) -> None:
        """Drop log lines of steps after the resumed checkpoint (they will be redone)."""
        if self.rank != 0 or not self.metrics_path.exists():
            return
        keep = [ln for ln in self.metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.step]
        self.metrics_path.write_text("".join(ln + "\n" for ln in keep))

    def run(self, resume: bool = True) -> TrainResult:
        t_start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = self.latest_checkpoint() if resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            self._truncate_log()
            log.info("resuming from %s (step %d of %d)", ckpt, self.step, self.total_steps)
        elif self.rank == 0 and self.metrics_path.exists():
            self.metrics_path.unlink()
        self.model.train()
        pairs, t_train, last_loss = 0, 0.0, float("nan")
        bar = progress(
            self.total_steps, initial=self.step, desc="train-embedding", disable=not self.cfg.progress or self.rank != 0
        )
        stopped = False
        content_path = self.out_dir / "model_stages_1_3.safetensors"
        last_content_stage = max((i for i, (s, _, _) in enumerate(self.plan) if s != "CRE"), default=None)
        for si, (stage, n, offset) in enumerate(self.plan):
            if self.step >= offset + n:
                continue
            names = self._stage_sources(stage)
            if stage not in self.weights:
                self.weights[stage] = self.stage_weights(stage, names)
            sampler = StochasticSpecialisationSampler(
                {s: len(self.data.sources[s]) for s in names},
                self.weights[stage],
                self.cfg.batch_size,
                n,
                seed=_step_seed(self.cfg.seed, si, 1),
            )
            batches = islice(iter(sampler), self.step - offset, None)
            if self.step == offset:
                self.probes[stage] = {"start": self.probe_loss(stage)}
            for local in range(self.step - offset, n):
                bar.set_description(f"stage {stage}")
                if stage == "III" and self.miner.sources:
                    rows_due = partial(self.refresh_rows, sampler, local, n)  # computed only when a refresh is due
                    self.miner.maybe_refresh(local, self.mining_sources(), rows_due)
                name, rows = next(batches)
                t0 = time.perf_counter()
                torch.manual_seed(_step_seed(self.cfg.seed, self.step, 2))
                gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, self.step, 3))
                batch = self.make_batch(name, rows, gen)
                lr = self.lr_at(local, n)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr * g.get("scale", 1.0)
                with autocast(self.device, self.cfg.precision):
                    loss, (loss_d, parts) = self.wrapped(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
                self.optimizer.step()
                dt = time.perf_counter() - t0
                pairs += len(rows)
                t_train += dt
                last_loss = float(loss_d)
                self.step += 1
                self._log(
                    {
                        "step": self.step,
                        "stage": stage,
                        "source": name,
                        "loss": last_loss,
                        **parts,
                        "temperature": float(self.train_module.temperatures(name).detach()),
                        "lr": lr,
                        "pairs_per_s": len(rows) / dt,
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", src=name)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    if self.rank == 0:
                        self.save_checkpoint()
                    _barrier()
                kill_after_step(EMBEDDING_FAULT_ENV, self.step)  # resume tests only
                if self.cfg.stop_after is not None and self.step >= self.cfg.stop_after:
                    stopped = self.step < self.total_steps
                    break
            if stopped:
                break
            self.probes.setdefault(stage, {})["end"] = self.probe_loss(stage)
            if si == last_content_stage and self.rank == 0:
                save_embedding_model(self.model, content_path, self.cfg.audio)
        bar.close()
        model_path = self.out_dir / "model.safetensors"
        if not stopped and self.rank == 0:
            save_embedding_model(self.model, model_path, self.cfg.audio)
        _barrier()
        result = TrainResult(
            out_dir=self.out_dir,
            model_path=model_path,
            content_model_path=content_path if content_path.exists() else None,
            metrics_path=self.metrics_path,
            checkpoint_dir=self.last_ckpt,
            steps_done=self.step,
            total_steps=self.total_steps,
            completed=not stopped,
            final_loss=last_loss,
            pairs_per_s=pairs / t_train if t_train else 0.0,
            seconds=time.perf_counter() - t_start,
            stage_losses=stage_loss_summary(self.metrics_path) if self.rank == 0 else {},
            probes=self.probes,
            data_summary=self.data.summary(),
        )
        if self.rank == 0:
            from core.io import write_json_atomic

            write_json_atomic(
                self.out_dir / "train.json",
                {**dataclasses.asdict(result), "cfg": self.cfg.to_dict(), "weights": self.weights},
            )
        return result


def read_metrics(metrics_path: Path) -> list[dict[str, Any]]:
    """The records of a run's `metrics.jsonl`, one per step, in order."""
    return [json.loads(ln) for ln in Path(metrics_path).read_text().splitlines() if ln]


def stage_loss_summary(metrics_path: Path, k: int = 5) -> dict[str, dict[str, float]]:
    """Per stage: mean loss of its first k and last k logged steps."""
    if not metrics_path.exists():
        return {}
    recs = read_metrics(metrics_path)
    out: dict[str, dict[str, float]] = {}
    for stage in dict.fromkeys(r["stage"] for r in recs):
        losses = [r["loss"] for r in recs if r["stage"] == stage]
        out[stage] = {"first": float(np.mean(losses[:k])), "last": float(np.mean(losses[-k:])), "steps": len(losses)}
    return out


# --------------------------------------------------------------------------------------------------------
# Entry
# --------------------------------------------------------------------------------------------------------


def load_training_data(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    pairs_dir: str | os.PathLike,
    work_dir: Path,
    model_cfg: ModelConfig,
    id_table=None,
) -> TrainingData:
    """Read the mined pairs, preprocess the catalogue (rank 0 first, the others then hit its cache) and build the
    sources."""
    from core import contracts as K
    from core.io import read_table
    from embedding.data import build_item_store, build_training_data, load_pairs

    rank, _ = _dist()
    prepared = load_pairs(data_dir, pairs_dir)
    if rank == 0:
        items = read_table(Path(data_dir) / "items", K.ITEMS)
        store = build_item_store(items, prepared.media_root, model_cfg.preprocess, work_dir)
    _barrier()
    if rank != 0:
        items = read_table(Path(data_dir) / "items", K.ITEMS)
        store = build_item_store(items, prepared.media_root, model_cfg.preprocess, work_dir)
    return build_training_data(prepared, store, cfg.data, collaborative=cfg.collaborative, id_table=id_table)


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    pairs_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    resume: bool = True,
    data: TrainingData | None = None,
) -> TrainResult:
    """Train (or resume) the staged model on a data set directory and its mined pairs; outputs under `out_dir`.

    `pairs_dir`: the mine stage's period layout (`mining.mine_pairs.run_periods`); `work_dir` caches the preprocessed
    catalogue (default `<out_dir>/work`); `data` reuses already built TrainingData (several variants in one process),
    in which case `pairs_dir` is not read.
    """
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    model_cfg = resolve_model_config(cfg.model, cfg)
    if data is None:
        if pairs_dir is None:
            raise ValueError("train needs pairs_dir (the mine stage's output) or already built TrainingData")
        work = Path(work_dir) if work_dir else out_dir / "work"
        data = load_training_data(cfg, data_dir, pairs_dir, work, model_cfg)
    trainer = Trainer(cfg, data, out_dir, model_cfg)
    return trainer.run(resume=resume)
