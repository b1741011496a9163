"""Contrastive losses on embeddings: InfoNCE (per-source learnable temperature), Matryoshka, COSENT, mICL.

Notation: B pairs in the batch, D embedding dim, N extra hard negatives per query. Embeddings are expected to be
L2-normalised, so dot products are cosine similarities.

Each loss is a small nn.Module whose `forward` gets embeddings and calls a pure function (`info_nce_loss`,
`cosent_loss`) through `compute_loss_from_embeddings`, so wrappers (Matryoshka, mICL) reuse the math.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover - typing only
    from embedding.model import EmbeddingOutput


def info_nce_loss(
    query: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor | float,
    hard_negatives: torch.Tensor | None = None,
    hard_negative_mask: torch.Tensor | None = None,
    symmetric: bool = True,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: query i must pick target i among all B targets (+ its N hard negatives).

    query, target: (B, D); hard_negatives: (B, N, D) extra negatives of each query (query -> target direction
    only); hard_negative_mask: (B, N) bool, False for padding negatives. Symmetric: the mean of the
    query -> target and target -> query cross-entropies. Returns a scalar.
    """
    scale = 1.0 / temperature
    logits = query @ target.T * scale  # (B, B)
    labels = torch.arange(query.shape[0], device=query.device)
    q2t_logits = logits
    if hard_negatives is not None and hard_negatives.shape[1] > 0:
        hard = torch.einsum("bd,bnd->bn", query, hard_negatives) * scale  # (B, N)
        if hard_negative_mask is not None:
            hard = hard.masked_fill(~hard_negative_mask, float("-inf"))
        q2t_logits = torch.cat([logits, hard], dim=1)  # (B, B + N)
    loss = F.cross_entropy(q2t_logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels)) / 2
    return loss


def cosent_loss(query: torch.Tensor, target: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """COSENT: for every pair of pairs (i, j) with scores[i] > scores[j], cos_i should exceed cos_j.

    loss = log(1 + sum_{s_i > s_j} exp(scale * (cos_j - cos_i))), scale = 1 / temperature.
    query, target: (B, D) normalised; scores: (B,) graded labels in [0, 1]. Returns a scalar (0 with no pair).
    """
    scale = 1.0 / temperature
    cos = (query * target).sum(dim=1) * scale  # (B,)
    diff = cos.unsqueeze(0) - cos.unsqueeze(1)  # (B, B): [i, j] = cos_j - cos_i
    ordered = scores.unsqueeze(1) > scores.unsqueeze(0)  # (B, B): [i, j] = s_i > s_j
    diff = diff.masked_fill(~ordered, float("-inf"))
    zero = torch.zeros(1, device=cos.device, dtype=cos.dtype)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


class TemperatureBank(nn.Module):
    """A learnable temperature per data source, stored as log(tau) and clamped to [min_temp, max_temp]."""

    def __init__(
        self, sources: Iterable[str], init: float = 0.05, min_temp: float = 0.01, max_temp: float = 1.0
    ) -> None:
        super().__init__()
        if not 0 < min_temp <= init <= max_temp:
            raise ValueError(f"need 0 < min_temp <= init <= max_temp, got {min_temp}, {init}, {max_temp}")
        self.min_temp, self.max_temp, self.init = min_temp, max_temp, init
        self.log_temps = nn.ParameterDict({s: nn.Parameter(torch.tensor(math.log(init))) for s in sources})

    @property
    def sources(self) -> list[str]:
        return list(self.log_temps.keys())

    def add_source(self, source: str) -> None:
        """Register a source (before the optimizer is built, so that it trains)."""
        if source not in self.log_temps:
            self.log_temps[source] = nn.Parameter(torch.tensor(math.log(self.init)))

    def forward(self, source: str) -> torch.Tensor:
        """The temperature of `source` (a scalar tensor with a gradient inside the clamp range)."""
        if source not in self.log_temps:
            raise KeyError(f"unknown source {source!r}; known: {self.sources}")
        log_t = self.log_temps[source].clamp(math.log(self.min_temp), math.log(self.max_temp))
        return log_t.exp()


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch (+ optional hard) negatives and the source's learnable temperature."""

    def __init__(self, temperatures: TemperatureBank, symmetric: bool = True) -> None:
        super().__init__()
        self.temperatures = temperatures
        self.symmetric = symmetric

    def compute_loss_from_embeddings(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        source: str,
        hard_negatives: torch.Tensor | None = None,
        hard_negative_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return info_nce_loss(
            query, target, self.temperatures(source), hard_negatives, hard_negative_mask, self.symmetric
        )

    def forward(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        source: str,
        hard_negatives: torch.Tensor | None = None,
        hard_negative_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, D), (B, D), source [, (B, N, D), (B, N)] -> scalar."""
        return self.compute_loss_from_embeddings(query, target, source, hard_negatives, hard_negative_mask)


class CoSENTLoss(nn.Module):
    """COSENT on graded pairs (scores in [0, 1]), fixed temperature (0.05, i.e. scale 20)."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def compute_loss_from_embeddings(
        self, query: torch.Tensor, target: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        return cosent_loss(query, target, scores, self.temperature)

    def forward(self, query: torch.Tensor, target: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D), (B,) -> scalar."""
        return self.compute_loss_from_embeddings(query, target, scores)


def _prefix(x: torch.Tensor | dict[int, torch.Tensor] | None, d: int) -> torch.Tensor | None:
    """The d-dim Matryoshka view: the dict's entry, or the first d dims of a full tensor re-normalised."""
    if x is None:
        return None
    if isinstance(x, dict):
        return x[d]
    return F.normalize(x[..., :d], dim=-1)


class MatryoshkaLoss(nn.Module):
    """Sum over nested dims d of weight_d * inner(query_d, target_d, ...); the inner loss sees d-dim embeddings.

    query / target / hard_negatives may be dicts d -> tensor (as `EmbeddingOutput.matryoshka`) or full (.., D)
    tensors, whose first d dims are taken and re-normalised.
    """

    def __init__(self, inner: nn.Module, dims: tuple[int, ...], weights: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if weights is not None and len(weights) != len(dims):
            raise ValueError("one weight per Matryoshka dim")
        self.inner = inner
        self.dims = tuple(dims)
        self.weights = tuple(weights) if weights is not None else (1.0,) * len(dims)

    def forward(
        self,
        query: torch.Tensor | dict[int, torch.Tensor],
        target: torch.Tensor | dict[int, torch.Tensor],
        *args,
        hard_negatives: torch.Tensor | dict[int, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Embeddings per dim (see class doc), extra inner-loss arguments -> scalar weighted sum."""
        total = 0.0
        for d, w in zip(self.dims, self.weights, strict=True):
            per_dim = dict(kwargs)
            if hard_negatives is not None:
                per_dim["hard_negatives"] = _prefix(hard_negatives, d)
            total = total + w * self.inner(_prefix(query, d), _prefix(target, d), *args, **per_dim)
        return total


def micl_sources(audio_weight: float) -> list[str]:
    """The temperature-bank sources the mICL terms use: 'visual', 'text', and 'audio' when its term is on."""
    return ["visual", "text", "audio"] if audio_weight else ["visual", "text"]


class MICLLoss(nn.Module):
    """Modality-specific contrastive terms (mICL): InfoNCE between the visual-only embeddings of query and
    target, plus InfoNCE between their text-only embeddings, plus (with `audio_weight` > 0) InfoNCE between their
    audio-only embeddings; each over the pairs where both sides have that modality (a term is 0 when fewer than 2
    such pairs). Temperatures: sources 'visual', 'text' and 'audio' of its bank.
    """

    def __init__(
        self,
        temperatures: TemperatureBank | None = None,
        visual_weight: float = 1.0,
        text_weight: float = 1.0,
        audio_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if audio_weight < 0:
            raise ValueError(f"audio_weight must be >= 0, got {audio_weight}")
        names = micl_sources(audio_weight)
        self.temperatures = temperatures if temperatures is not None else TemperatureBank(names)
        missing = [n for n in names if n not in self.temperatures.sources]
        if missing:
            raise ValueError(f"the temperature bank has no source {missing}; known: {self.temperatures.sources}")
        self.visual_weight, self.text_weight, self.audio_weight = visual_weight, text_weight, audio_weight

    def _term(self, q: torch.Tensor, t: torch.Tensor, keep: torch.Tensor, source: str) -> torch.Tensor:
        if int(keep.sum()) < 2:
            return q.sum() * 0.0
        return info_nce_loss(q[keep], t[keep], self.temperatures(source))

    def compute_loss_from_embeddings(
        self,
        query_visual: torch.Tensor,
        target_visual: torch.Tensor,
        query_text: torch.Tensor,
        target_text: torch.Tensor,
        visual_mask: torch.Tensor,
        text_mask: torch.Tensor,
        query_audio: torch.Tensor | None = None,
        target_audio: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss = self.visual_weight * self._term(query_visual, target_visual, visual_mask, "visual") + (
            self.text_weight * self._term(query_text, target_text, text_mask, "text")
        )
        if self.audio_weight and query_audio is not None and target_audio is not None and audio_mask is not None:
            loss = loss + self.audio_weight * self._term(query_audio, target_audio, audio_mask, "audio")
        return loss

    def forward(self, query_out: EmbeddingOutput, target_out: EmbeddingOutput) -> torch.Tensor:
        """Two EmbeddingOutputs of B paired items (visual, text (B, D), audio (B, H) or None; has_vision,
        has_text, has_audio (B,)) -> scalar."""
        q_audio, t_audio = getattr(query_out, "audio", None), getattr(target_out, "audio", None)
        audio_mask = None
        if q_audio is not None and t_audio is not None:
            audio_mask = query_out.has_audio & target_out.has_audio
        return self.compute_loss_from_embeddings(
            query_out.visual,
            target_out.visual,
            query_out.text,
            target_out.text,
            query_out.has_vision & target_out.has_vision,
            query_out.has_text & target_out.has_text,
            q_audio,
            t_audio,
            audio_mask,
        )
