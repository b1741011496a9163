"""Modality towers: text encoder, per-frame vision encoder + Perceiver resampler, CLAP-style audio encoder.

Notation: B items, L text tokens, F frames, P patches per frame, Q resampler latents, C audio chunks,
M mel bins, T log-mel frames per chunk, S conv-stem tokens per chunk, Dt / Dv / Da tower widths.

Each tower returns tokens in its own width; `model.py` projects them into the backbone width.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from embedding.config import AudioTowerConfig, PreprocessConfig, TextTowerConfig, VisionTowerConfig, resolve_load_dir


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of `x` over `dim` where `mask` (x's shape without the last dim) is true; 0 where nothing is."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def _hf_load(load_dir: str, weights: bool) -> nn.Module:
    """A local HF model: its weights (`weights`) or only its architecture (weights come from a checkpoint)."""
    from transformers import AutoConfig, AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if weights:
        return AutoModel.from_pretrained(load_dir, local_files_only=True)
    return AutoModel.from_config(AutoConfig.from_pretrained(load_dir, local_files_only=True))


# --------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------


def minilm_sentence_encoder(batch_size: int = 128, max_length: int = 64, model: nn.Module | None = None):
    """The packaged pretrained MiniLM, frozen: a function texts -> (n, 384) float32 mean-pooled token states (not
    normalised). Loads once per call of this factory (`model`: the packaged encoder, already loaded); reads only
    the package's local files."""
    import numpy as np
    from transformers import AutoModel, AutoTokenizer

    from embedding.config import packaged_minilm_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    d = str(packaged_minilm_dir())
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = (model if model is not None else AutoModel.from_pretrained(d, local_files_only=True)).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = [np.zeros((0, model.config.hidden_size), dtype=np.float32)]
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s : s + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")  # fmt: skip
            h = model(**enc).last_hidden_state
            out.append(masked_mean(h, enc["attention_mask"].bool(), 1).numpy())
        return np.concatenate(out)

    return encode


def _encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-like encoder (`encoder.encoder.layer`)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        name = type(encoder).__name__
        raise ValueError(f"{name} has no encoder.layer list; train_top_layers needs a BERT-like model")
    return layers


class TextTower(nn.Module):
    """A BERT-like encoder: token ids -> token states.

    Frozen towers can cache per-text states (LRU, fp16). With `train_top_layers = k > 0` a frozen tower still trains
    its top k layers: the states below them are what is cached (once per text), and the top layers run on them with
    gradients at every step, so fine-tuning costs k layers instead of the whole encoder. A cache miss first reads
    the states stored on disk for the catalogue's texts (`states`, see `embedding.text_states`), if attached.
    """

    def __init__(self, encoder: nn.Module, freeze: bool = False, cache_size: int = 0, train_top_layers: int = 0):
        super().__init__()
        self.encoder = encoder
        self.hidden_size: int = encoder.config.hidden_size
        self.freeze = freeze
        self.cache_size = cache_size if freeze else 0
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.states = None  # embedding.text_states.TextStates: stored states read before encoding (cache misses)
        self.top_layers: list[nn.Module] = []
        if freeze:
            self.encoder.requires_grad_(False)
            if train_top_layers > 0:
                layers = _encoder_layers(encoder)
                if train_top_layers > len(layers):
                    raise ValueError(f"train_top_layers {train_top_layers} > the encoder's {len(layers)} layers")
                self.top_layers = list(layers[len(layers) - train_top_layers :])
                for layer in self.top_layers:
                    layer.requires_grad_(True)

    @property
    def cached_depth(self) -> int:
        """Index into the encoder's hidden states of what the cache keeps (the last layer for a frozen tower)."""
        return len(_encoder_layers(self.encoder)) - len(self.top_layers) if self.top_layers else -1

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # no dropout in a frozen tower, so cached states equal fresh ones
        return self

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's states at `cached_depth` (its last layer when no top layers train). With trained top layers
        only the layers below them run: the encoder's own forward over its lower layers, the top ones left out."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            if not self.top_layers:
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            stack = self.encoder.encoder
            full = stack.layer
            stack.layer = nn.ModuleList(list(full)[: self.cached_depth])
            try:
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            finally:
                stack.layer = full

    def _top(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers on (B, L, Dt) lower states with a (B, L) mask -> (B, L, Dt)."""
        if not self.top_layers:
            return states
        blocked = torch.finfo(states.dtype).min
        ext = (1.0 - attention_mask[:, None, None, :].to(states.dtype)) * blocked  # (B, 1, 1, L) additive
        for layer in self.top_layers:
            out = layer(states, attention_mask=ext)
            states = out[0] if isinstance(out, tuple) else out
        return states

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, texts: list[str] | None = None
    ) -> torch.Tensor:
        """(B, L) ids, (B, L) mask [, B texts as cache keys] -> (B, L, Dt) token states (0 at padding)."""
        if not self.cache_size or texts is None:
            states = self._encode(input_ids, attention_mask)
            return self._top(states, attention_mask) * attention_mask.unsqueeze(-1)
        todo = [i for i, t in enumerate(texts) if t not in self._cache]
        if todo and self.states is not None:
            stored = [(i, self.states.get(texts[i])) for i in todo]
            for i, state in stored:
                if state is not None:
                    self._cache[texts[i]] = state
            todo = [i for i, state in stored if state is None]
        if todo:
            width = int(attention_mask[todo].sum(1).max())
            with torch.no_grad():
                states = self._encode(input_ids[todo, :width], attention_mask[todo, :width])
            for j, i in enumerate(todo):
                n = int(attention_mask[i].sum())
                self._cache[texts[i]] = states[j, :n].detach().to(torch.float16)
        self.cache_hits += len(texts) - len(todo)
        out = input_ids.new_zeros((*input_ids.shape, self.hidden_size), dtype=torch.float32)
        for i, t in enumerate(texts):
            cached = self._cache[t]
            self._cache.move_to_end(t)
            out[i, : cached.shape[0]] = cached.float()
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return self._top(out, attention_mask) * attention_mask.unsqueeze(-1)


def build_text_tower(cfg: TextTowerConfig, load_weights: bool = True) -> TextTower:
    """The configured text tower: a local HF encoder (`load_dir`) or a tiny random BERT."""
    load_dir = resolve_load_dir(cfg.load_dir)
    if load_dir is not None:
        encoder = _hf_load(load_dir, load_weights)
    else:
        from transformers import BertConfig, BertModel

        encoder = BertModel(
            BertConfig(
                vocab_size=cfg.vocab_size,
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
                max_position_embeddings=512,
            ),
            add_pooling_layer=False,
        )
    return TextTower(encoder, freeze=cfg.freeze, cache_size=cfg.cache_size, train_top_layers=cfg.train_top_layers)


# --------------------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------------------


class VisionEncoder(nn.Module):
    """A ViT / SigLIP vision model applied to every real frame: (B, F, 3, H, W) -> patch tokens."""

    def __init__(self, vit: nn.Module, freeze: bool = False) -> None:
        super().__init__()
        self.vit = vit
        self.hidden_size: int = vit.config.hidden_size
        self.freeze = freeze
        if freeze:
            self.vit.requires_grad_(False)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, 3, H, W), (B, F) -> (patch tokens (B, F * P, Dv), token mask (B, F * P)).

        Only real frames go through the ViT; padding frames get zero tokens and a false mask.
        """
        b, f = frame_mask.shape
        if not frame_mask.any():
            return frames.new_zeros(b, 0, self.hidden_size), frame_mask.new_zeros(b, 0)
        real = frames[frame_mask]  # (n_real, 3, H, W)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            tokens = self.vit(pixel_values=real).last_hidden_state  # (n_real, P, Dv)
        p = tokens.shape[1]
        out = tokens.new_zeros(b, f, p, self.hidden_size)
        out[frame_mask] = tokens
        mask = frame_mask.unsqueeze(-1).expand(b, f, p)
        return out.reshape(b, f * p, self.hidden_size), mask.reshape(b, f * p)


def build_vision_encoder(cfg: VisionTowerConfig, pre: PreprocessConfig, load_weights: bool = True) -> VisionEncoder:
    """A local HF vision model (`load_dir`; a dual-tower SigLIP/CLIP keeps its vision half) or a tiny ViT."""
    if cfg.load_dir is not None:
        model = _hf_load(cfg.load_dir, load_weights)
        vit = getattr(model, "vision_model", model)
        size = getattr(vit.config, "image_size", pre.image_size)
        if size != pre.image_size:
            raise ValueError(f"vision tower expects {size}px images, preprocess.image_size is {pre.image_size}")
    else:
        from transformers import ViTConfig, ViTModel

        vit = ViTModel(
            ViTConfig(
                image_size=pre.image_size,
                patch_size=cfg.patch_size,
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
            ),
            add_pooling_layer=False,
        )
    return VisionEncoder(vit, freeze=cfg.freeze)


class PerceiverResampler(nn.Module):
    """Q learnable latent queries cross-attend over all patch tokens of an item's frames -> Q tokens."""

    def __init__(self, dim: int, num_latents: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim**-0.5)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_q": nn.LayerNorm(dim),
                    "norm_kv": nn.LayerNorm(dim),
                    "attn": nn.MultiheadAttention(dim, num_heads, batch_first=True),
                    "norm_ff": nn.LayerNorm(dim),
                    "ff": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
                }
            )
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N_tok, Dv) tokens, (B, N_tok) mask -> (B, Q, Dv). Items with no real token get finite garbage
        (the caller masks them out)."""
        b = tokens.shape[0]
        ignore = ~mask
        ignore[:, 0] &= mask.any(dim=1)  # an item with no token attends to a zero token instead of to nothing
        x = self.latents.unsqueeze(0).expand(b, -1, -1)  # (B, Q, Dv)
        for layer in self.layers:
            kv = layer["norm_kv"](tokens)
            attended, _ = layer["attn"](layer["norm_q"](x), kv, kv, key_padding_mask=ignore, need_weights=False)
            x = x + attended
            x = x + layer["ff"](layer["norm_ff"](x))
        return self.norm_out(x)


# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------


class AudioEncoder(nn.Module):
    """CLAP-style audio encoder: per chunk, log-mel -> conv stem (stride 4) -> transformer -> masked mean.

    The chunk embeddings of an item are mean-pooled (over real chunks) into ONE audio embedding.
    """

    def __init__(self, n_mels: int, dim: int, num_layers: int, num_heads: int, max_tokens: int) -> None:
        super().__init__()
        self.hidden_size = dim
        self.in_norm = nn.LayerNorm(n_mels)
        self.stem = nn.Sequential(
            nn.Conv1d(n_mels, dim, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
        )
        self.pos = nn.Parameter(torch.zeros(max_tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, num_heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(dim)

    def encode_chunks(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(n, M, T) log-mel chunks, (n,) real frames -> (n, Da) chunk embeddings."""
        x = self.in_norm(mel.transpose(1, 2)).transpose(1, 2)  # (n, M, T) normalised per frame over mels
        x = self.stem(x).transpose(1, 2)  # (n, S, Da)
        s = x.shape[1]
        x = x + self.pos[:s]
        real_tokens = (frames + 3) // 4  # ceil(frames / 4): tokens the stride-4 stem makes from real frames
        token_mask = torch.arange(s, device=x.device).unsqueeze(0) < real_tokens.unsqueeze(1)  # (n, S)
        x = self.encoder(x, src_key_padding_mask=~token_mask)
        return self.norm_out(masked_mean(x, token_mask, dim=1))

    def forward(self, audio: torch.Tensor, chunk_mask: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, C, M, T), (B, C) chunk mask, (B, C) real frames -> (B, Da) (0 for items without audio)."""
        b, c = chunk_mask.shape
        if not chunk_mask.any():
            return audio.new_zeros(b, self.hidden_size)
        enc = self.encode_chunks(audio[chunk_mask], frames[chunk_mask])  # bf16 under autocast
        out = enc.new_zeros(b, c, self.hidden_size)
        out[chunk_mask] = enc
        return masked_mean(out, chunk_mask, dim=1)  # (B, Da)


def build_audio_encoder(cfg: AudioTowerConfig, pre: PreprocessConfig) -> AudioEncoder:
    return AudioEncoder(pre.n_mels, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_tokens)


# --------------------------------------------------------------------------------------------------------
# Task instructions
# --------------------------------------------------------------------------------------------------------


class InstructionEmbedding(nn.Module):
    """K learned embeddings per task name (in backbone width), prepended to every sequence of that task.

    Learned soft prompts instead of tokenised instruction text: the backbone's token table is not used (tiny
    random backbones have no vocabulary), and a soft prompt per task is what the prompt would converge to.
    """

    def __init__(self, tasks: tuple[str, ...], num_tokens: int, dim: int) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.num_tokens = num_tokens
        self.table = nn.Parameter(torch.randn(len(tasks), num_tokens, dim) * 0.02)

    def forward(self, task: str, batch_size: int) -> torch.Tensor:
        """task name -> (B, K, H). Unknown tasks raise KeyError naming the known ones."""
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; known tasks: {self.tasks}")
        return self.table[self.tasks.index(task)].unsqueeze(0).expand(batch_size, -1, -1)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float32 (bf16 rows under autocast come out exactly
    unit-norm in float32 rather than within bf16's 3 significant digits)."""
    return F.normalize(x.float(), p=2, dim=-1, eps=1e-12)
