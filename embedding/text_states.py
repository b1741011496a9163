"""A frozen text tower's token states on disk, computed once per catalogue and shared by every model that starts
from the same encoder.

The `minilm` model freezes MiniLM's lower layers and fine-tunes only the top one (`TextTower`, `train_top_layers`).
So the states below the top layer of an item's text are the same in the pretrained start, in SAIL stages I-III, in
SAIL + CRE and in the content two-tower: a pipeline that embeds the catalogue with each of them computes them again
and again, and at 100k items each pass of those layers takes about half an hour on 2 cores. A `TextStates`
directory keeps them (fp16, the precision of the tower's in-memory cache) for every full item text of the
catalogue; a tower attached to it reads the states instead of running its frozen layers, so a later catalogue
pass costs the top layer and the image / audio towers only.

Layout of `<cache_dir>/text-states-<fingerprint>/` (written to a temporary directory, then renamed):

- `states.npy`: (tokens, hidden) float16, the texts' states one after another (memory-mapped on read);
- `index.npz`: `keys` (uint64, sorted: a 64-bit hash of each text), `offsets`, `lengths` (tokens per text);
- `meta.json`: the fingerprint, hidden size, text and token counts.

The fingerprint covers what the states depend on: the frozen parameters (everything but the trained top layers),
the depth the states are taken at, the tokenizer and its truncation length. A tower whose frozen layers differ
(another encoder, a tower trained end to end) gets another directory, never a wrong state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FORMAT = 1


def text_key(text: str) -> int:
    """64-bit hash of a text (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def tower_fingerprint(tower, tokenizer, max_tokens: int) -> str:
    """Hash of what a tower's cached states depend on (its frozen parameters, the cached depth, the tokenizer and
    the truncation length); '' for a tower that caches nothing."""
    if not tower.cache_size:
        return ""
    trained = {id(p) for layer in tower.top_layers for p in layer.parameters()}
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT, tower.cached_depth, tower.hidden_size, max_tokens, _tokenizer_id(tokenizer)]).encode())
    for name, p in tower.encoder.named_parameters():
        if id(p) not in trained:
            h.update(name.encode())
            h.update(p.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _tokenizer_id(tokenizer) -> str:
    inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer's transformers tokenizer; None for HashTokenizer
    vocab = getattr(inner, "vocab_size", None) or getattr(tokenizer, "vocab_size", None)
    name = getattr(inner, "name_or_path", None)
    return f"{type(tokenizer).__name__}:{type(inner).__name__}:{vocab}:{Path(name).name if name else ''}"


class TextStates:
    """Read side: text -> its (n_tokens, hidden) float16 states, or None when the text is not stored."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        index = np.load(self.path / "index.npz")
        self.keys, self.offsets, self.lengths = index["keys"], index["offsets"], index["lengths"]
        self.states = np.load(self.path / "states.npy", mmap_mode="r")
        self.hits = 0

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, text: str) -> torch.Tensor | None:
        key = np.uint64(text_key(text))
        at = int(np.searchsorted(self.keys, key))
        if at >= len(self.keys) or self.keys[at] != key:
            return None
        self.hits += 1
        start, n = int(self.offsets[at]), int(self.lengths[at])
        return torch.from_numpy(np.array(self.states[start : start + n]))


def states_dir(cache_dir: str | os.PathLike, fingerprint: str) -> Path:
    return Path(cache_dir) / f"text-states-{fingerprint}"


def _attach(tower, path: Path) -> TextStates | None:
    """Attaches the finished directory `path` to the tower; None when it is not there (a directory is only
    renamed into place once complete)."""
    if not (path / "meta.json").exists():
        return None
    tower.states = TextStates(path)
    return tower.states


def open_text_states(tower, tokenizer, max_tokens: int, cache_dir: str | os.PathLike | None) -> TextStates | None:
    """The stored states matching this tower under `cache_dir`, attached to the tower; None (and nothing attached)
    when the tower caches nothing or no matching directory exists."""
    if cache_dir is None or not tower.cache_size:
        return None
    return _attach(tower, states_dir(cache_dir, tower_fingerprint(tower, tokenizer, max_tokens)))


def open_at_any_depth(encoder, tokenizer, max_tokens: int, cache_dir: str | os.PathLike | None, cache_size: int = 256):
    """A frozen `TextTower` over the pretrained `encoder`, attached to states stored under `cache_dir` by a model
    that froze the same encoder below some depth (any number of trained top layers); None when none match.

    The layers above that depth run with the encoder's own weights, so the tower computes the pretrained encoder's
    output and reads what it can: the pretrained-encoder column of the retrieval table uses it."""
    from embedding.towers import TextTower, _encoder_layers

    if cache_dir is None or not any(Path(cache_dir).glob("text-states-*")):
        return None
    for top in range(len(_encoder_layers(encoder))):
        tower = TextTower(encoder, freeze=True, cache_size=cache_size, train_top_layers=top)
        if open_text_states(tower, tokenizer, max_tokens, cache_dir) is not None:
            return tower.eval()
    return None


@torch.no_grad()
def build_text_states(
    tower,
    tokenizer,
    texts: Sequence[str],
    max_tokens: int,
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    desc: str | None = None,
) -> TextStates | None:
    """Computes the frozen states of every distinct non-empty text once, writes them under `cache_dir` and
    attaches them to the tower. Reuses a directory with the same fingerprint. None for a tower that caches nothing.

    Texts are encoded in order of token count, so a batch pads little; a state is the tower's `_encode` output
    for the text's own tokens, in fp16 (what the in-memory cache holds)."""
    from core.progress import progress

    if not tower.cache_size:
        return None
    fingerprint = tower_fingerprint(tower, tokenizer, max_tokens)
    path = states_dir(cache_dir, fingerprint)
    if (found := _attach(tower, path)) is not None:
        return found
    unique = sorted({t for t in texts if t})
    lengths = np.zeros(len(unique), np.int64)
    for s in range(0, len(unique), 4096):
        _, mask = tokenizer(unique[s : s + 4096], max_tokens)
        lengths[s : s + len(mask)] = mask.sum(1).numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = np.lib.format.open_memmap(tmp / "states.npy", mode="w+", dtype=np.float16,
                                    shape=(int(lengths.sum()), tower.hidden_size))  # fmt: skip
    order = np.argsort(lengths, kind="stable")
    was_training = tower.training
    tower.eval()
    bar = progress(len(unique), desc=desc, unit="texts") if desc else None
    try:
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            ids, mask = tokenizer([unique[r] for r in rows], max_tokens)
            width = int(mask.sum(1).max())
            states = tower._encode(ids[:, :width], mask[:, :width]).to(torch.float16).numpy()
            for j, r in enumerate(rows):
                out[offsets[r] : offsets[r] + lengths[r]] = states[j, : lengths[r]]
            if bar is not None:
                bar.update(len(rows))
    finally:
        tower.train(was_training)
    out.flush()
    del out
    keys = np.fromiter((text_key(t) for t in unique), dtype=np.uint64, count=len(unique))
    by_key = np.argsort(keys, kind="stable")
    if len(keys) > 1 and np.any(keys[by_key][1:] == keys[by_key][:-1]):
        raise RuntimeError(f"{path}: two texts share a 64-bit key; the states cannot be stored by text")
    np.savez(tmp / "index.npz", keys=keys[by_key], offsets=offsets[by_key], lengths=lengths[by_key])
    meta = {"format": FORMAT, "fingerprint": fingerprint, "hidden": tower.hidden_size, "texts": len(unique),
            "tokens": int(lengths.sum()), "max_tokens": max_tokens}  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, path)
    except OSError:  # another process wrote the same directory first: its states are the same
        shutil.rmtree(tmp, ignore_errors=True)
    return _attach(tower, path)
