"""SAIL-style omni-modal embedding model: towers -> projectors -> bidirectional LLM backbone -> Matryoshka heads.

Notation key
    B   batch (items)
    L   text tokens per item (tokenizer)
    F   frames per item (cover first)         P   patches per frame
    Q   resampler latents (16)                C   audio chunks (10 s each)
    K   instruction tokens per task           S   fused sequence length (K + 1 + Q + L before compaction)
    Dt / Dv / Da   text / vision / audio tower widths
    H   backbone width                        D   full embedding dim (largest Matryoshka dim)

Data flow for one batch and task:
    text ids (B, L)        -> TextTower           -> (B, L, Dt) -> text_proj   -> (B, L, H)
    frames (B, F, 3, h, w) -> ViT per frame       -> (B, F*P, Dv) -> resampler -> (B, Q, Dv) -> vision_proj (B, Q, H)
    log-mel (B, C, M, T)   -> audio encoder       -> (B, Da) (chunks mean-pooled) -> audio_proj -> (B, 1, H)
    sequence = [instruction(task) (B, K, H); audio; vision; text], absent modalities and padding masked out, then
    real tokens left-aligned (so an item's RoPE positions do not depend on the batch it is in)
    -> Qwen2 with a 4D additive mask = BIDIRECTIONAL attention -> tanh -> mean over real positions -> (B, H)
    -> head -> (B, D) = fused embedding.

Text residual (`ModelConfig.text_residual`, the pretrained start): the text tower's mean-pooled sentence vector,
L2-normalised, goes through `text_residual` (Linear Dt -> D, no bias) and is added to the head's output before the
normalisation: fused = normalise(head(pooled backbone) + text_residual(normalise(mean text states))). The head starts
at zero and `init_text_residual` sets the projection to the catalogue's principal axes (the top-D right singular
vectors of its sentence vectors), so before any step the fused embedding is the text encoder's sentence vector
rotated (cosines unchanged when D = Dt) and its Matryoshka prefixes are its best low-rank views; training then moves
the projection, the fine-tuned text layers and the backbone's contribution away from that start.

Modality-only embeddings for the mICL terms: visual = visual_head(mean resampler tokens), text =
text_head(mean text states), both (B, D); audio = the audio token itself, (B, H), so an audio-only term trains
exactly the vector the fuser reads for the audio (no extra head).

Late-fusion gate (documented choice): the visual-only embedding z_v (resampler tokens mean-pooled, projected,
normalised) and the fused embedding z_f are combined as g = sigmoid(w . [z_f; z_v] + b),
z = normalise(g * z_f + (1 - g) * z_v), with g forced to 1 for items without images. The bias starts at
`gate_bias_init` (2.0, i.e. 88% fused) so training starts close to the fused embedding. Matryoshka outputs are
the prefixes z[:, :d] for each d in `matryoshka_dims`, each re-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from embedding.config import BackboneConfig, ModelConfig
from embedding.preprocess import ItemBatch
from embedding.towers import (
    AudioEncoder,
    InstructionEmbedding,
    PerceiverResampler,
    TextTower,
    VisionEncoder,
    _hf_load,
    build_audio_encoder,
    build_text_tower,
    build_vision_encoder,
    l2_normalize,
    masked_mean,
)


@dataclass
class EmbeddingOutput:
    """Embeddings of one batch; every vector is L2-normalised (rows of absent modalities are zero)."""

    matryoshka: dict[int, torch.Tensor]  # d -> (B, d), nested prefixes of the gated embedding
    fused: torch.Tensor  # (B, D) backbone embedding before the late-fusion gate
    visual: torch.Tensor  # (B, D) visual-only embedding (zero rows for items without images)
    text: torch.Tensor  # (B, D) text-only embedding from the text tower (zero rows for items without text)
    gate: torch.Tensor  # (B,) weight of `fused` in the final embedding
    has_vision: torch.Tensor  # (B,) bool
    has_text: torch.Tensor  # (B,) bool
    audio: torch.Tensor | None = None  # (B, H) audio-only embedding: the audio token the fuser reads, normalised
    # (zero rows for items without audio; None for models without that token)
    has_audio: torch.Tensor | None = None  # (B,) bool

    @property
    def embedding(self) -> torch.Tensor:
        """(B, D): the full-size final embedding."""
        return self.matryoshka[max(self.matryoshka)]


class BidirectionalBackbone(nn.Module):
    """A decoder LLM (Qwen2Model) run with full bidirectional attention over a padded embedding sequence."""

    def __init__(self, llm: nn.Module) -> None:
        super().__init__()
        self.llm = llm
        self.hidden_size: int = llm.config.hidden_size

    @staticmethod
    def bidirectional_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, S) bool -> (B, 1, S, S) additive mask: 0 where the key is real, dtype-min where it is padding.

        transformers returns a 4D mask to the attention as is, so no causal triangle is added.
        """
        blocked = torch.finfo(dtype).min
        keys = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, blocked)
        return keys[:, None, None, :].expand(-1, 1, valid.shape[1], -1)  # (B, 1, S, S)

    def forward(self, embeds: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, S, H) input embeddings, (B, S) bool real positions -> (B, S, H) last hidden states."""
        mask = self.bidirectional_mask(valid, embeds.dtype)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state


def build_backbone(cfg: BackboneConfig, load_weights: bool = True) -> BidirectionalBackbone:
    """A local Qwen2-family model (`load_dir`) or a random Qwen2 from the config fields."""
    if cfg.load_dir is not None:
        return BidirectionalBackbone(_hf_load(cfg.load_dir, load_weights))
    from transformers import Qwen2Config, Qwen2Model

    qcfg = Qwen2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions,
        use_sliding_window=False,
        tie_word_embeddings=False,
    )
    qcfg._attn_implementation = "sdpa"
    return BidirectionalBackbone(Qwen2Model(qcfg))


def left_align(seq: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real positions to the front (order kept) and trim to the longest row.

    (B, S, H), (B, S) -> (B, S', H), (B, S') with S' = max real positions per row.
    """
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # (B, S): real positions first
    seq = torch.gather(seq, 1, order.unsqueeze(-1).expand_as(seq))
    valid = torch.gather(valid, 1, order)
    width = int(valid.sum(1).max())
    return seq[:, :width], valid[:, :width]


class SailEmbeddingModel(nn.Module):
    """Wires the towers, projectors, instruction embeddings, backbone and heads; see the module docstring."""

    def __init__(
        self,
        text_tower: TextTower,
        vision_encoder: VisionEncoder,
        resampler: PerceiverResampler,
        audio_encoder: AudioEncoder,
        backbone: BidirectionalBackbone,
        instruction: InstructionEmbedding,
        matryoshka_dims: tuple[int, ...],
        gate_bias_init: float = 2.0,
        text_residual: bool = False,
    ) -> None:
        super().__init__()
        h, d = backbone.hidden_size, matryoshka_dims[-1]
        self.matryoshka_dims = tuple(matryoshka_dims)
        self.text_tower = text_tower
        self.vision_encoder = vision_encoder
        self.resampler = resampler
        self.audio_encoder = audio_encoder
        self.backbone = backbone
        self.instruction = instruction
        self.text_proj = nn.Linear(text_tower.hidden_size, h)
        self.vision_proj = nn.Linear(vision_encoder.hidden_size, h)
        self.audio_proj = nn.Linear(audio_encoder.hidden_size, h)
        self.head = nn.Linear(h, d)
        self.visual_head = nn.Linear(vision_encoder.hidden_size, d)
        self.text_head = nn.Linear(text_tower.hidden_size, d)
        self.gate = nn.Linear(2 * d, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, gate_bias_init)
        self.text_residual: nn.Linear | None = None
        if text_residual:
            if d > text_tower.hidden_size:
                raise ValueError(f"text_residual needs D <= the text width, got D {d} > Dt {text_tower.hidden_size}")
            self.text_residual = nn.Linear(text_tower.hidden_size, d, bias=False)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.cfg: ModelConfig | None = None  # set by build_model; saved with checkpoints

    def encode_modalities(self, batch: ItemBatch) -> dict[str, torch.Tensor]:
        """Tower outputs: text (B, L, Dt), vision (B, Q, Dv), audio (B, Da) (zeros where absent)."""
        b = len(batch)
        text = self.text_tower(batch.input_ids, batch.attention_mask, batch.texts)
        q, dv = self.resampler.latents.shape
        if batch.has_vision.any():
            patches, patch_mask = self.vision_encoder(batch.frames, batch.frame_mask)  # (B, F*P, Dv)
            vision = self.resampler(patches, patch_mask)  # (B, Q, Dv)
        else:
            vision = text.new_zeros(b, q, dv)
        if batch.has_audio.any():
            audio = self.audio_encoder(batch.audio, batch.audio_chunk_mask, batch.audio_frames)  # (B, Da)
        else:
            audio = text.new_zeros(b, self.audio_encoder.hidden_size)
        return {"text": text, "vision": vision, "audio": audio}

    def forward(self, batch: ItemBatch, task: str) -> EmbeddingOutput:
        """ItemBatch of B items, task name -> EmbeddingOutput (all (B, d) rows L2-normalised).

        Raises ValueError when an item has no modality at all (no text, no decodable image, no audio).
        """
        empty = ~(batch.has_text | batch.has_vision | batch.has_audio)
        if empty.any():
            raise ValueError(f"items at batch positions {empty.nonzero().flatten().tolist()} have no modality")
        b = len(batch)
        towers = self.encode_modalities(batch)
        text_valid = batch.attention_mask.bool() & batch.has_text.unsqueeze(1)  # (B, L)
        q = towers["vision"].shape[1]

        instr = self.instruction(task, b)  # (B, K, H)
        audio_token = self.audio_proj(towers["audio"])  # (B, H)
        seq = torch.cat(
            [
                instr,
                audio_token.unsqueeze(1),  # (B, 1, H)
                self.vision_proj(towers["vision"]),  # (B, Q, H)
                self.text_proj(towers["text"]),  # (B, L, H)
            ],
            dim=1,
        )  # (B, S, H)
        valid = torch.cat(
            [
                torch.ones(b, instr.shape[1], dtype=torch.bool, device=seq.device),
                batch.has_audio.unsqueeze(1),
                batch.has_vision.unsqueeze(1).expand(b, q),
                text_valid,
            ],
            dim=1,
        )  # (B, S)
        seq, valid = left_align(seq, valid)
        hidden = self.backbone(seq, valid)  # (B, S', H)
        pooled_text = masked_mean(towers["text"], text_valid, dim=1)  # (B, Dt)
        fused = self.head(masked_mean(torch.tanh(hidden), valid, dim=1))  # (B, D)
        if self.text_residual is not None:
            fused = fused + self.text_residual(l2_normalize(pooled_text).to(fused.dtype))
        fused = l2_normalize(fused)  # (B, D)

        visual = l2_normalize(self.visual_head(towers["vision"].mean(1))) * batch.has_vision.unsqueeze(1)
        text = l2_normalize(self.text_head(pooled_text)) * batch.has_text.unsqueeze(1)

        gate = torch.sigmoid(self.gate(torch.cat([fused, visual], dim=1))).squeeze(1)  # (B,)
        gate = torch.where(batch.has_vision, gate, torch.ones_like(gate))
        final = l2_normalize(gate.unsqueeze(1) * fused + (1 - gate.unsqueeze(1)) * visual)  # (B, D)
        return EmbeddingOutput(
            matryoshka={d: l2_normalize(final[:, :d]) for d in self.matryoshka_dims},
            fused=fused,
            visual=visual,
            text=text,
            gate=gate,
            has_vision=batch.has_vision,
            has_text=batch.has_text,
            audio=l2_normalize(audio_token) * batch.has_audio.unsqueeze(1),
            has_audio=batch.has_audio,
        )


def build_model(cfg: ModelConfig, load_weights: bool = True) -> SailEmbeddingModel:
    """The model of `cfg`. `load_weights=False` builds pretrained towers from their configs only (a checkpoint
    will overwrite every weight anyway)."""
    vision = build_vision_encoder(cfg.vision, cfg.preprocess, load_weights)
    backbone = build_backbone(cfg.backbone, load_weights)
    model = SailEmbeddingModel(
        text_tower=build_text_tower(cfg.text, load_weights),
        vision_encoder=vision,
        resampler=PerceiverResampler(
            vision.hidden_size, cfg.vision.num_latents, cfg.vision.num_heads, cfg.vision.resampler_layers
        ),
        audio_encoder=build_audio_encoder(cfg.audio, cfg.preprocess),
        backbone=backbone,
        instruction=InstructionEmbedding(cfg.backbone.tasks, cfg.backbone.instruction_tokens, backbone.hidden_size),
        matryoshka_dims=cfg.matryoshka_dims,
        gate_bias_init=cfg.gate_bias_init,
        text_residual=cfg.text_residual,
    )
    model.cfg = cfg
    return model


@torch.no_grad()
def init_text_residual(model: SailEmbeddingModel, sentence_vectors: torch.Tensor) -> None:
    """Set `model.text_residual` to the top-D principal axes of the catalogue's sentence vectors ((N, Dt), rows
    L2-normalised first): the uncentred SVD X = U S V^T gives the projection V[:, :D]^T, so the prefix of width d is
    the best rank-d view of the sentence space and, with D = Dt, the projection is a rotation. Signs are fixed so
    that each axis's largest loading is positive (the SVD is otherwise sign-ambiguous)."""
    if model.text_residual is None:
        raise ValueError("the model has no text_residual projection (ModelConfig.text_residual is false)")
    x = l2_normalize(sentence_vectors.double()).double()
    d = model.text_residual.weight.shape[0]
    if x.shape[0] < 1:
        raise ValueError("init_text_residual needs at least one sentence vector")
    # Vh (Dt, Dt): rows = right singular vectors, by singular value. The full U (N, N) is asked for only when there
    # are fewer rows than dims (so that Vh is still a whole basis): on a catalogue of N items it would take 8 N^2
    # bytes (80 GB at 100k items)
    _, _, vt = torch.linalg.svd(x, full_matrices=x.shape[0] < x.shape[1])
    axes = vt[:d]  # (D, Dt)
    flip = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))  # (D, 1)
    model.text_residual.weight.copy_((axes * flip).to(model.text_residual.weight.dtype))


# --------------------------------------------------------------------------------------------------------
# The concatenation variant (no LLM fuser)
# --------------------------------------------------------------------------------------------------------


class ConcatFusionModel(nn.Module):
    """Ablation / CLIP-style variant: the same towers, no LLM fuser.

    pooled text (B, Dt) ++ pooled resampler tokens (B, Dv) ++ audio (B, Da) -> Linear -> (B, D), L2-normalised,
    Matryoshka prefixes re-normalised. The task is ignored (one tower for items and queries).
    """

    def __init__(self, text_tower, vision_encoder, resampler, audio_encoder, matryoshka_dims: tuple[int, ...]) -> None:
        super().__init__()
        d = matryoshka_dims[-1]
        self.matryoshka_dims = tuple(matryoshka_dims)
        self.text_tower = text_tower
        self.vision_encoder = vision_encoder
        self.resampler = resampler
        self.audio_encoder = audio_encoder
        width = text_tower.hidden_size + vision_encoder.hidden_size + audio_encoder.hidden_size
        self.fuse = nn.Linear(width, d)
        self.visual_head = nn.Linear(vision_encoder.hidden_size, d)
        self.text_head = nn.Linear(text_tower.hidden_size, d)
        self.cfg: ModelConfig | None = None

    def forward(self, batch: ItemBatch, task: str) -> EmbeddingOutput:
        """ItemBatch of B items -> EmbeddingOutput (gate fixed at 1: the concatenation is the embedding)."""
        b = len(batch)
        text_valid = batch.attention_mask.bool() & batch.has_text.unsqueeze(1)  # (B, L)
        text = masked_mean(self.text_tower(batch.input_ids, batch.attention_mask, batch.texts), text_valid, 1)
        q, dv = self.resampler.latents.shape
        if batch.has_vision.any():
            patches, patch_mask = self.vision_encoder(batch.frames, batch.frame_mask)
            vision = self.resampler(patches, patch_mask).mean(1) * batch.has_vision.unsqueeze(1)  # (B, Dv)
        else:
            vision = text.new_zeros(b, dv)
        if batch.has_audio.any():
            audio = self.audio_encoder(batch.audio, batch.audio_chunk_mask, batch.audio_frames)  # (B, Da)
        else:
            audio = text.new_zeros(b, self.audio_encoder.hidden_size)
        final = l2_normalize(self.fuse(torch.cat([text, vision, audio], dim=1)))  # (B, D)
        visual = l2_normalize(self.visual_head(vision)) * batch.has_vision.unsqueeze(1)
        text_emb = l2_normalize(self.text_head(text)) * batch.has_text.unsqueeze(1)
        return EmbeddingOutput(
            matryoshka={d: l2_normalize(final[:, :d]) for d in self.matryoshka_dims},
            fused=final,
            visual=visual,
            text=text_emb,
            gate=torch.ones(b, device=final.device),
            has_vision=batch.has_vision,
            has_text=batch.has_text,
        )


def build_concat_model(cfg: ModelConfig, load_weights: bool = True) -> ConcatFusionModel:
    vision = build_vision_encoder(cfg.vision, cfg.preprocess, load_weights)
    model = ConcatFusionModel(
        text_tower=build_text_tower(cfg.text, load_weights),
        vision_encoder=vision,
        resampler=PerceiverResampler(
            vision.hidden_size, cfg.vision.num_latents, cfg.vision.num_heads, cfg.vision.resampler_layers
        ),
        audio_encoder=build_audio_encoder(cfg.audio, cfg.preprocess),
        matryoshka_dims=cfg.matryoshka_dims,
    )
    model.cfg = cfg
    return model


def build_embedding_model(cfg: ModelConfig, fuser: bool = True, load_weights: bool = True) -> nn.Module:
    return build_model(cfg, load_weights) if fuser else build_concat_model(cfg, load_weights)
