"""Ranking samples -> model inputs: vocabularies fitted on the train split, dense features, batches.

Ids map to table rows through vocabularies of the training split (row 0 is the out-of-vocabulary row, which is
where unseen items and users land; every train row's ids are in the vocabularies, so row 0 keeps its initial
values unless training drops item ids on purpose: `make_batch(..., drop_item=...)`). Semantic IDs are hierarchical:
level l's sparse id is the code prefix (c_0 .. c_l), so a cold item shares trained rows with warm items whose
vectors fall in the same cells. Dense features are log1p counters and smoothed CTRs, standardised with train
statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec import KeyedJaggedTensor

from core.io import read_table
from recsys.features import RANKING_SAMPLES_EXT, WITH_SIDS, FeatureSpec, feature_spec
from recsys.model import RankerBatch

MAX_POSITION = 63  # positions beyond this share one row
CTR_PRIOR = 20.0  # pseudo-impressions of the smoothed CTR (prior mean = the train base rate)


def load_samples(path: str | Path) -> pa.Table:
    """The extended ranking-sample table, conformed to RANKING_SAMPLES_EXT."""
    return read_table(path, RANKING_SAMPLES_EXT)


def split_of(table: pa.Table, split: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), split))


def _lookup(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rows of `values` in a sorted vocabulary, 1-based; 0 where absent."""
    if vocab.size == 0:
        return np.zeros(values.shape, dtype=np.int64)
    pos = np.clip(np.searchsorted(vocab, values), 0, vocab.size - 1)
    return np.where(vocab[pos] == values, pos + 1, 0).astype(np.int64)


def sid_prefix_ids(codes: np.ndarray, level: int) -> np.ndarray:
    """(N, levels) codes -> (N,) int64 id of the prefix (c_0 .. c_level); -1 where the row has no codes."""
    ids = np.zeros(codes.shape[0], dtype=np.int64)
    for lv in range(level + 1):
        ids = ids * 4096 + (codes[:, lv].astype(np.int64) + 1)
    return np.where(codes[:, 0] < 0, -1, ids)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, offsets (N + 1)); nulls are empty lists."""
    arr = table.column(name).combine_chunks()
    arr = pc.if_else(pc.is_null(arr), pa.scalar([], type=arr.type), arr) if arr.null_count else arr
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def _fixed_list(table: pa.Table, name: str, width: int, fill: float) -> np.ndarray:
    """A list column of rows of length `width` (or null) as an (N, width) array; nulls become `fill`."""
    values, offsets = _list_column(table, name)
    out = np.full((table.num_rows, width), fill, dtype=values.dtype if values.size else np.float32)
    lengths = np.diff(offsets)
    full = lengths == width
    if np.any((lengths != 0) & ~full):
        raise ValueError(f"column {name!r}: rows must hold {width} values or be null")
    rows = np.flatnonzero(full)
    if rows.size:
        out[rows] = values[(offsets[rows][:, None] + np.arange(width)).ravel()].reshape(-1, width)
    return out


DAY_US = 86_400_000_000
"""Microseconds per day."""


@dataclass
class Encoded:
    """One split as arrays: ids already mapped to table rows."""

    single: dict[str, np.ndarray]  # single-valued sparse feature -> (N,) rows
    recent_values: np.ndarray  # flat item rows of user_recent_items
    recent_offsets: np.ndarray  # (N + 1,)
    dense: np.ndarray  # (N, Dd) float32, standardised
    content: np.ndarray | None  # (N, E) float32 (zeros where missing) or None
    labels: np.ndarray  # (N, T) float32
    user_ids: np.ndarray  # (N,) raw user ids (GAUC groups, bootstrap clusters)
    item_ids: np.ndarray  # (N,) raw item ids
    cold: np.ndarray  # (N,) bool: the item had no impression in the training split (its id row never trained)
    new: np.ndarray  # (N,) bool: the item was created within this split's window (on or after its first day)
    offset: np.ndarray | None = None  # (N, T) float32 base-model logits of a residual variant (recsys.train)
    offset_cold: np.ndarray | None = None  # (N, T) the base model's logits with every target item id unknown (OOV):
    # a row whose item id is dropped in training takes these, so the variant learns on the base a cold item has

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass
class Encoder:
    """Vocabularies and dense statistics fitted on the train split."""

    spec: FeatureSpec
    vocabs: dict[str, np.ndarray]  # feature -> sorted raw ids (int64; strings via their sorted values)
    dense_mean: np.ndarray
    dense_std: np.ndarray
    base_ctr: float
    train_start_us: int  # first train impression
    content_dim: int
    sid_levels_available: int
    string_vocabs: dict[str, list[str]] = field(default_factory=dict)
    train_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted ids with a train impression

    # ----------------------------------------------------------------------------------------- fitting
    @staticmethod
    def fit(train: pa.Table, spec: FeatureSpec) -> Encoder:
        item_ids = train.column("item_id").to_numpy()
        recent, _ = _list_column(train, "user_recent_items")
        vocabs = {
            "user_id": np.unique(train.column("user_id").to_numpy()),
            "item_id": np.unique(np.concatenate([item_ids, recent.astype(np.int64)])),
            "author_id": np.unique(train.column("author_id").to_numpy()),
        }
        strings = {c: sorted(set(train.column(c).to_pylist())) for c in ("category", "surface")}
        emb_values, emb_offsets = _list_column(train, "sail_embedding")
        lengths = np.diff(emb_offsets)
        content_dim = int(lengths.max()) if lengths.size else 0
        sid_values, sid_offsets = _list_column(train, "semantic_ids")
        sid_len = np.diff(sid_offsets)
        levels = int(sid_len.max()) if sid_len.size else 0
        if spec.sid_levels > levels:
            raise ValueError(f"variant {spec.variant!r} uses {spec.sid_levels} SID levels; samples hold {levels}")
        if spec.use_embedding and content_dim == 0:
            raise ValueError(f"variant {spec.variant!r} needs sail_embedding, but the train split has none")
        codes = _fixed_list(train, "semantic_ids", levels, -1).astype(np.int64) if levels else None
        for lv in range(spec.sid_levels):
            ids = sid_prefix_ids(codes, lv)
            vocabs[f"sid_l{lv}"] = np.unique(ids[ids >= 0])
        clicks = train.column("label_click").to_numpy().astype(np.float64)
        ts_us = pc.cast(train.column("ts"), pa.int64()).to_numpy()
        enc = Encoder(
            spec=spec,
            vocabs=vocabs,
            dense_mean=np.zeros(len(spec.dense_features), np.float32),
            dense_std=np.ones(len(spec.dense_features), np.float32),
            base_ctr=float(clicks.mean()),
            train_start_us=int(ts_us.min()),
            train_items=np.unique(item_ids).astype(np.int64),
            content_dim=content_dim,
            sid_levels_available=levels,
            string_vocabs=strings,
        )
        raw = enc._raw_dense(train)
        enc.dense_mean = raw.mean(0).astype(np.float32)
        enc.dense_std = np.maximum(raw.std(0), 1e-6).astype(np.float32)
        return enc

    def table_rows(self) -> dict[str, int]:
        """Rows per sparse feature's table (vocabulary + the OOV row)."""
        rows = {f: v.size + 1 for f, v in self.vocabs.items()}
        rows.update({c: len(v) + 1 for c, v in self.string_vocabs.items()})
        rows.update({"hour": 25, "position": MAX_POSITION + 2, "user_recent_items": rows["item_id"]})
        return rows

    # ---------------------------------------------------------------------------------------- encoding
    def _raw_dense(self, t: pa.Table) -> np.ndarray:
        def col(name: str) -> np.ndarray:
            return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

        _, rec_off = _list_column(t, "user_recent_items")
        ii, ic, ui, uc = (
            col(c) for c in ("item_imps_before", "item_clicks_before", "user_imps_before", "user_clicks_before")
        )
        feats = {
            "log_item_age_hours": np.log1p(col("item_age_hours")),
            "log_item_imps_before": np.log1p(ii),
            "log_item_clicks_before": np.log1p(ic),
            "item_ctr_before": (ic + CTR_PRIOR * self.base_ctr) / (ii + CTR_PRIOR),
            "log_user_imps_before": np.log1p(ui),
            "log_user_clicks_before": np.log1p(uc),
            "user_ctr_before": (uc + CTR_PRIOR * self.base_ctr) / (ui + CTR_PRIOR),
            "recent_len": np.diff(rec_off).astype(np.float64),
        }
        if self.spec.use_embedding:
            sim = t.column("user_hist_sim")
            feats["user_hist_sim"] = pc.fill_null(sim, 0.0).to_numpy().astype(np.float64)
            feats["has_sail"] = (
                pc.is_valid(t.column("sail_embedding")).to_numpy(zero_copy_only=False).astype(np.float64)
            )
        return np.stack([feats[f] for f in self.spec.dense_features], axis=1)

    def encode(self, t: pa.Table) -> Encoded:
        single: dict[str, np.ndarray] = {}
        for f in ("user_id", "item_id", "author_id"):
            single[f] = _lookup(self.vocabs[f], t.column(f).to_numpy())
        for c, vocab in self.string_vocabs.items():
            index = {v: i + 1 for i, v in enumerate(vocab)}
            single[c] = np.array([index.get(v, 0) for v in t.column(c).to_pylist()], dtype=np.int64)
        single["hour"] = t.column("hour").to_numpy().astype(np.int64) + 1
        single["position"] = np.minimum(t.column("position").to_numpy().astype(np.int64), MAX_POSITION) + 1
        if self.spec.sid_levels:
            codes = _fixed_list(t, "semantic_ids", self.sid_levels_available, -1).astype(np.int64)
            for lv in range(self.spec.sid_levels):
                single[f"sid_l{lv}"] = _lookup(self.vocabs[f"sid_l{lv}"], sid_prefix_ids(codes, lv))
        rec_values, rec_offsets = _list_column(t, "user_recent_items")
        content = None
        if self.spec.use_embedding:
            content = _fixed_list(t, "sail_embedding", self.content_dim, 0.0).astype(np.float32)
        labels = np.stack([t.column("label_click").to_numpy(), t.column("label_finish").to_numpy()], 1)
        item_ids = t.column("item_id").to_numpy()
        created_us = pc.cast(t.column("item_created_ts"), pa.int64()).to_numpy()
        cold = ~np.isin(item_ids, self.train_items)
        new = np.zeros(len(item_ids), dtype=bool)  # rows without a time (serving) belong to no window
        if "ts" in t.column_names and t.num_rows:
            ts_us = pc.cast(t.column("ts"), pa.int64()).to_numpy()
            new = created_us >= (int(ts_us.min()) // DAY_US) * DAY_US  # created on or after the split's first day
        dense = ((self._raw_dense(t) - self.dense_mean) / self.dense_std).astype(np.float32)
        return Encoded(
            single=single,
            recent_values=_lookup(self.vocabs["item_id"], rec_values.astype(np.int64)),
            recent_offsets=rec_offsets,
            dense=dense,
            content=content,
            labels=labels.astype(np.float32),
            user_ids=t.column("user_id").to_numpy(),
            item_ids=item_ids,
            cold=cold,
            new=new,
        )

    # -------------------------------------------------------------------------------------- persistence
    def to_json(self) -> dict:
        return {
            "variant": self.spec.variant,
            "vocabs": {k: v.tolist() for k, v in self.vocabs.items()},
            "string_vocabs": self.string_vocabs,
            "dense_mean": self.dense_mean.tolist(),
            "dense_std": self.dense_std.tolist(),
            "base_ctr": self.base_ctr,
            "train_start_us": self.train_start_us,
            "train_items": self.train_items.tolist(),
            "content_dim": self.content_dim,
            "sid_levels_available": self.sid_levels_available,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @staticmethod
    def from_json(d: dict) -> Encoder:
        """Inverse of `to_json`; the spec's SID levels are the number of `sid_l*` vocabularies saved."""
        vocabs = {k: np.asarray(v, dtype=np.int64) for k, v in d["vocabs"].items()}
        levels = sum(k.startswith("sid_l") for k in vocabs)
        variant = d["variant"]
        spec = feature_spec(variant, levels) if variant in WITH_SIDS else feature_spec(variant)
        return Encoder(
            spec=spec,
            vocabs=vocabs,
            dense_mean=np.asarray(d["dense_mean"], dtype=np.float32),
            dense_std=np.asarray(d["dense_std"], dtype=np.float32),
            base_ctr=float(d["base_ctr"]),
            train_start_us=int(d["train_start_us"]),
            train_items=np.asarray(d.get("train_items", []), dtype=np.int64),
            content_dim=int(d["content_dim"]),
            sid_levels_available=int(d["sid_levels_available"]),
            string_vocabs={k: list(v) for k, v in d["string_vocabs"].items()},
        )

    @staticmethod
    def load(path: str | Path) -> Encoder:
        """Reads an encoder written by `save`."""
        return Encoder.from_json(json.loads(Path(path).read_text()))


@dataclass
class EncodedSplits:
    """A variant's encoder fitted on the training split, and every split encoded with it."""

    spec: FeatureSpec
    encoder: Encoder
    train: Encoded
    valid: Encoded
    test: Encoded


PLACEBO_SEED = 20_241_206
"""Seed of the placebo variant's random item vectors and codes."""


def _item_generator(item: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(item) & 0xFFFFFFFF, (int(item) >> 32) & 0xFFFFFFFF])


def placebo_features(table: pa.Table, seed: int = PLACEBO_SEED) -> pa.Table:
    """The samples with random SAIL features of the same shape: the placebo variant's input.

    Every item gets one random unit vector (as wide as the SAIL vectors) and one random code per semantic-ID
    level (uniform over the level's codes in the table), drawn from the item id, so an item keeps them across
    rows and splits as it keeps its real ones. Rows without a vector or codes stay without; `user_hist_sim` is
    recomputed as the cosine between the target's random vector and the sum of its recent items' random vectors
    (null where the real one is null). Nothing about the items' content or behaviour is left in these columns.
    """
    n = table.num_rows
    emb_values, emb_offsets = _list_column(table, "sail_embedding")
    dim = int(np.diff(emb_offsets).max()) if n else 0
    sid_values, sid_offsets = _list_column(table, "semantic_ids")
    levels = int(np.diff(sid_offsets).max()) if n else 0
    codes = _fixed_list(table, "semantic_ids", levels, -1).astype(np.int64) if levels else np.zeros((n, 0), np.int64)
    sizes = [int(codes[:, lv].max()) + 1 for lv in range(levels)]
    targets = table.column("item_id").to_numpy().astype(np.int64)
    recent, rec_offsets = _list_column(table, "user_recent_items")
    items = np.unique(np.concatenate([targets, recent.astype(np.int64)]))
    vectors = np.zeros((items.size, dim), np.float32)
    item_codes = np.zeros((items.size, levels), np.int64)
    for k, item in enumerate(items):
        rng = _item_generator(item, seed)
        v = rng.standard_normal(dim)
        vectors[k] = v / max(np.linalg.norm(v), 1e-12)
        item_codes[k] = [rng.integers(0, size) for size in sizes]
    row = np.searchsorted(items, targets)
    has_vec = np.diff(emb_offsets) > 0
    has_sid = np.diff(sid_offsets) > 0
    emb_type = table.schema.field("sail_embedding").type
    sid_type = table.schema.field("semantic_ids").type
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors[row].ravel(), pa.float32()), dim) if dim else None
    sid = pa.FixedSizeListArray.from_arrays(pa.array(item_codes[row].ravel()), levels) if levels else None
    columns = {}
    if emb is not None:
        columns["sail_embedding"] = pc.if_else(pa.array(has_vec), emb.cast(emb_type), pa.nulls(n, emb_type))
    if sid is not None:
        columns["semantic_ids"] = pc.if_else(pa.array(has_sid), sid.cast(sid_type), pa.nulls(n, sid_type))
    if dim:
        sums = np.add.reduceat(
            np.concatenate([vectors[np.searchsorted(items, recent.astype(np.int64))], np.zeros((1, dim))]),
            np.minimum(rec_offsets[:-1], recent.size),
        )
        sums[np.diff(rec_offsets) == 0] = 0.0
        norms = np.linalg.norm(sums, axis=1)
        sim = np.where(norms > 0, np.einsum("ij,ij->i", vectors[row], sums) / np.maximum(norms, 1e-12), 0.0)
        real = table.column("user_hist_sim")
        columns["user_hist_sim"] = pc.if_else(pc.is_valid(real), pa.array(sim.astype(np.float32)), real)
    for name, col in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def load_encoded_splits(samples_dir: str | Path, spec: FeatureSpec, max_train_rows: int | None = None) -> EncodedSplits:
    """Reads the samples, fits the encoder on the (optionally truncated) training split, encodes all three (the
    placebo variant's SAIL columns are replaced by `placebo_features` first)."""
    table = load_samples(samples_dir)
    if spec.variant == "placebo":
        table = placebo_features(table)
    train_t = split_of(table, "train")
    if max_train_rows is not None:
        train_t = train_t.slice(0, max_train_rows)
    encoder = Encoder.fit(train_t, spec)
    return EncodedSplits(
        spec,
        encoder,
        encoder.encode(train_t),
        encoder.encode(split_of(table, "valid")),
        encoder.encode(split_of(table, "test")),
    )


def make_batch(
    enc: Encoded,
    idx: np.ndarray,
    spec: FeatureSpec,
    drop_item: np.ndarray | None = None,
    drop_sail: np.ndarray | None = None,
) -> RankerBatch:
    """Rows `idx` of an encoded split as a RankerBatch (KJT keys in spec.sparse_features order).

    drop_item: optional (len(idx),) bool; those rows' target item_id becomes the OOV row 0, as a cold item's is
    (item-id dropout in training: row 0 learns "an item we have no id for" and the rest of the model learns to
    rank such items from their other features); in a residual variant with `offset_cold`, those rows' base logits
    are the base model's for an unknown item too. drop_sail: optional (len(idx),) bool; those rows' SAIL vector
    becomes zeros and their semantic-ID levels the OOV rows, as for an item without them (SAIL dropout).
    """
    n = idx.shape[0]
    starts = enc.recent_offsets[idx]
    rec_len = enc.recent_offsets[idx + 1] - starts
    total = int(rec_len.sum())
    shift = np.repeat(starts - (np.cumsum(rec_len) - rec_len), rec_len)
    recent = enc.recent_values[shift + np.arange(total)]
    values, lengths = [], []
    ones = np.ones(n, dtype=np.int64)
    for f in spec.sparse_features:
        if f == "user_recent_items":
            values.append(recent)
            lengths.append(rec_len)
        elif f == "item_id" and drop_item is not None:
            values.append(np.where(drop_item, 0, enc.single[f][idx]))
            lengths.append(ones)
        elif f.startswith("sid_l") and drop_sail is not None:
            values.append(np.where(drop_sail, 0, enc.single[f][idx]))
            lengths.append(ones)
        else:
            values.append(enc.single[f][idx])
            lengths.append(ones)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(spec.sparse_features),
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
    )
    return RankerBatch(
        dense=torch.from_numpy(enc.dense[idx]),
        sparse=kjt,
        content=None if enc.content is None else torch.from_numpy(_hide(enc.content[idx], drop_sail)),
        labels=torch.from_numpy(enc.labels[idx]),
        offset=None if enc.offset is None else torch.from_numpy(_base_logits(enc, idx, drop_item)),
    )


def _base_logits(enc: Encoded, idx: np.ndarray, drop_item: np.ndarray | None) -> np.ndarray:
    """A residual batch's base logits: the base model's, its cold-item logits where the item id is dropped."""
    if drop_item is None or enc.offset_cold is None or not drop_item.any():
        return enc.offset[idx]
    return np.where(drop_item[:, None], enc.offset_cold[idx], enc.offset[idx])


def _hide(content: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
    """The (B, E) vectors with the rows in `drop` zeroed (an item without a SAIL vector), a copy when any is."""
    if drop is None or not drop.any():
        return content
    return np.where(drop[:, None], np.float32(0.0), content)
