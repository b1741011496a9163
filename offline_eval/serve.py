"""A trained ranker variant as an arm of the offline A/B simulator (`offline_eval.ab_sim`).

`RankerScorer` loads a variant directory written by `sail train-ranker` (the latest checkpoint's safetensors,
`encoder.json`, `train.json`) into a plain, unsharded `SailRanker` in eval mode (no process group, no torchrun),
plus the ITEM_FEATURES table the variant was trained with. For every (user, candidate) of a request it builds the
row the samples job (`recsys.samples`) would have written at that moment, encodes it with the saved `Encoder`
(unknown ids land in the out-of-vocabulary row, as in training) and returns the model's logits in batches.

Notation: R requests, W candidate slots per request, N used slots (rows), L recent items, E SAIL dimension.

Serving-time features against their training definition in `recsys.samples`:
- user_id, item_id, author_id, category: from the world's public catalogue arrays (exact).
- surface: `ServeConfig.surface`, the logs' "feed" (exact).
- position: `ServeConfig.position`, 0 (the first slot): every candidate is scored as if shown first (constant).
- hour, item_age_hours: from ts = the simulated day's midnight + `ServeConfig.hour`; the simulator serves a
  day at once, without a clock, so they are exact to within a day.
- item_ / user_ imps_before, clicks_before: counts over the days strictly before the request's day, as in the
  samples (exact; see "Counters").
- user_recent_items: the log's last L clicks, then the simulator's recent positives (differs; see "History").
- sail_embedding, semantic_ids: the feature row valid at ts, from the same table and model version (exact).
- user_hist_sim, has_sail: the samples' formula (cosine of the target vector and the sum of the recent items'
  vectors valid at ts) over the serving recent items (exact given the items).

Counters. The platform's own counters (`PlatformState`) decay daily (items by 0.8, users by 0.9) and hold no
per-user impression count, so they are not the cumulative counts the model was trained on. The scorer keeps its
own: at the first experiment day it counts the interaction log (the log the simulator's warm start replays:
the world's `interactions/`, or the samples table, whose rows are the same impressions) exactly as the samples
job does; every later day it adds the day's counts, recovered exactly from the platform's decayed counters
(today's = new - decay * yesterday's; users' clicks from their per-topic click counts), and the users'
impressions from the requests it served (K slots each; a user stays in one arm). If an arm had no request on some
day, the skipped days' counts are estimated as equal per day (the decayed counters give only their weighted sum).
At the first experiment day the decayed counts implied by the log are checked against the platform's, so a log of
another world is refused.

History. The samples' `user_recent_items` are the last L clicked items before the request. The simulator keeps
only positives (a click that is finished or liked) of experiment days, updated after each day. The scorer's
recent items are the log's last L clicks followed by the simulator's positives, most recent last: exact on the
first experiment day; later they hold positives only and miss clicks of the same day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from core.contracts import ITEM_FEATURES
from core.io import read_table, table_files
from recsys.data import Encoded, Encoder, make_batch
from recsys.distributed import selected_checkpoint
from recsys.features import TASKS, FeatureSpec
from recsys.model import RankerConfig, SailRanker, build_ranker

if TYPE_CHECKING:  # pragma: no cover - typing only
    from offline_eval.ab_sim import ABSimulator, Arm, ScoringContext

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MODEL_PREFIX = "model/model."  # checkpoint keys of SailRanker tensors (DMP around RankerTrain around SailRanker)
SHARD_SEP = "::shard::"

Head = Literal["click", "finish", "blend"]


@dataclass(frozen=True)
class ServeConfig:
    head: Head = "click"  # logit returned: the click head, the finish head, or "blend" (below)
    finish_weight: float = 0.5  # blend: (1 - w) * click logit + w * finish logit
    position: int = 0  # slot every candidate is scored in (0: the first slot, the most common first value)
    hour: int = 12  # UTC hour of every request (the simulator serves a day at once, without a clock)
    surface: str = "feed"  # the feed's surface value in the logs
    recent_len: int = 10  # L: recent items per request (the samples job's --recent-len)
    batch_size: int = 8192  # rows per model forward
    threads: int | None = 1  # torch intra-op threads set at load (None: leave the process setting)
    model_version: str | None = None  # ITEM_FEATURES version; None: the latest by `created` (the samples default)
    embedding_prefix: int | None = None  # serve the first N dims, re-normalised, as the samples job's
    # embedding_prefix did (the Matryoshka prefix the ranker was trained on); None: the whole vector


# ------------------------------------------------------------------------------------------ the trained model


@dataclass
class TrainedRanker:
    """A trained variant for inference: an unsharded SailRanker in eval mode and the encoder it was trained with."""

    model: SailRanker
    encoder: Encoder
    variant_dir: Path
    checkpoint: Path
    train_config: dict  # train.json's "config"
    base: TrainedRanker | None = None  # a residual variant's base model (its logits are added to this model's)

    @property
    def spec(self) -> FeatureSpec:
        return self.encoder.spec


def _ranker_config(d: dict) -> RankerConfig:
    """A saved model's RankerConfig; one saved before the interaction was a setting was a DCNv2 ("dcn")."""
    return RankerConfig(**{"interaction": "dcn", **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}})


def merge_checkpoint(ckpt: Path, world_size: int) -> dict[str, torch.Tensor]:
    """A checkpoint's SailRanker tensors as full tensors keyed like `SailRanker.state_dict()`.

    Dense parameters are the same on every rank (rank 0's are kept); table shards (`key::shard::row,col`) of all
    ranks are placed at their offsets, and a table not covered row by row is refused.
    """
    dense: dict[str, torch.Tensor] = {}
    shards: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for rank in range(world_size):
        f = ckpt / f"rank{rank}.safetensors"
        if not f.exists():
            raise FileNotFoundError(f"checkpoint {ckpt} lacks {f.name} (it was written by {world_size} ranks)")
        for key, t in load_file(str(f)).items():
            if not key.startswith(MODEL_PREFIX):
                continue  # optimiser state
            name = key[len(MODEL_PREFIX) :]
            if SHARD_SEP in name:
                name, offsets = name.split(SHARD_SEP)
                r0, c0 = (int(x) for x in offsets.split(","))
                shards.setdefault(name, []).append((r0, c0, t))
            elif rank == 0:
                dense[name] = t
    for name, parts in shards.items():
        rows = max(r0 + t.shape[0] for r0, _, t in parts)
        cols = max(c0 + t.shape[1] for _, c0, t in parts)
        if sum(t.numel() for _, _, t in parts) != rows * cols:
            raise ValueError(f"checkpoint {ckpt}: the shards of {name} do not cover its ({rows}, {cols}) table")
        full = torch.empty(rows, cols, dtype=parts[0][2].dtype)
        for r0, c0, t in parts:
            full[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]] = t
        dense[name] = full
    return dense


def load_trained_ranker(variant_dir: str | Path, threads: int | None = 1) -> TrainedRanker:
    """Loads a variant directory of `sail train-ranker` (the checkpoint chosen on valid, encoder.json, train.json)
    for inference.

    Only safetensors and JSON are read (no pickled code); no process group is needed.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    vdir = Path(variant_dir)
    if not vdir.is_dir():
        raise FileNotFoundError(f"ranker variant directory not found: {vdir}")
    for name, what in (("encoder.json", "the vocabularies"), ("train.json", "the model config")):
        if not (vdir / name).is_file():
            raise FileNotFoundError(f"{vdir} has no {name} ({what}); is it a variant directory of sail train-ranker?")
    ckpt = selected_checkpoint(vdir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{vdir / 'checkpoints'} holds no complete checkpoint (no 'selected' or 'latest')")
    encoder = Encoder.load(vdir / "encoder.json")
    info = json.loads((vdir / "train.json").read_text())
    config = info["config"]
    meta = json.loads((ckpt / "meta.json").read_text())
    if meta.get("variant") != encoder.spec.variant:
        raise ValueError(
            f"checkpoint {ckpt} is of variant {meta.get('variant')!r}; encoder.json of {encoder.spec.variant!r}"
        )
    spec = encoder.spec
    model = build_ranker(
        _ranker_config(config["ranker"]), spec, encoder.table_rows(), len(spec.dense_features), encoder.content_dim
    )
    try:
        model.load_state_dict(merge_checkpoint(ckpt, int(meta["world_size"])), strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {ckpt} does not fit the model of encoder.json and train.json: {e}") from e
    model.eval()
    base = load_trained_ranker(vdir / info["base_dir"], threads) if info.get("base_dir") else None
    return TrainedRanker(model, encoder, vdir, ckpt, config, base)


def score_table(ranker: TrainedRanker, table: pa.Table, batch_size: int = 8192) -> np.ndarray:
    """(N, T) logits of every sample row: the ranker's own, plus its base's for a residual variant."""
    logits = score_encoded(ranker, ranker.encoder.encode(table), batch_size)
    return logits if ranker.base is None else logits + score_table(ranker.base, table, batch_size)


@torch.no_grad()
def score_encoded(ranker: TrainedRanker, enc: Encoded, batch_size: int = 8192) -> np.ndarray:
    """(N, T) logits of the ranker's own model on every encoded row (a residual variant's without its base's:
    see score_table), `batch_size` rows per forward."""
    n = len(enc)
    out = np.empty((n, len(TASKS)), dtype=np.float32)
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(s + batch_size, n))
        b = make_batch(enc, idx, ranker.spec)
        out[idx] = ranker.model(b.dense, b.sparse, b.content).numpy()
    return out


def combine_heads(logits: np.ndarray, head: Head, finish_weight: float = 0.5) -> np.ndarray:
    """(N, T) click / finish logits -> (N,) serving logits (see ServeConfig.head)."""
    click, finish = logits[:, TASKS.index("click")], logits[:, TASKS.index("finish")]
    if head == "click":
        return click
    if head == "finish":
        return finish
    if head == "blend":
        return (1.0 - finish_weight) * click + finish_weight * finish
    raise ValueError(f"unknown head {head!r}; expected 'click', 'finish' or 'blend'")


# ------------------------------------------------------------------------------------------- item features


@dataclass(frozen=True)
class ItemFeatureStore:
    """One model version of an ITEM_FEATURES table, looked up point-in-time by the samples job's rule: the row
    valid at ts is the latest with event_timestamp <= ts (rows of one item and timestamp: the last written)."""

    path: Path
    model_version: str
    item_ids: np.ndarray  # (M,) rows sorted by item, then event_timestamp
    valid_from_us: np.ndarray  # (M,)
    ids: np.ndarray  # (I,) distinct items, sorted
    starts: np.ndarray  # (I + 1,) each item's first row
    embedding: pa.ListArray  # (M,) list<float32> of length E
    semantic_ids: pa.ListArray  # (M,) list<int32>
    vectors: np.ndarray  # (M, E) float32 (the same values)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def levels(self) -> int:
        return len(self.semantic_ids[0]) if len(self.semantic_ids) else 0

    @staticmethod
    def load(path: str | Path, model_version: str | None = None, prefix: int | None = None) -> ItemFeatureStore:
        """`prefix`: keep the first N dims of each vector, scaled to unit length (`recsys.samples.matryoshka_prefix`
        on the same rows)."""
        path = Path(path)
        t = read_table(path, ITEM_FEATURES)
        if t.num_rows == 0:
            raise ValueError(f"item features {path} hold no rows")
        if model_version is None:  # the samples job's default: the version of the row written last
            first = pc.sort_indices(t, sort_keys=[("created", "descending"), ("model_version", "descending")])[0]
            model_version = t.column("model_version")[first.as_py()].as_py()
        t = t.filter(pc.equal(t.column("model_version"), model_version))
        if t.num_rows == 0:
            raise ValueError(f"item features {path} have no rows of model version {model_version!r}")
        item = t.column("item_id").to_numpy()
        ts = pc.cast(t.column("event_timestamp"), pa.int64()).to_numpy()
        created = pc.cast(t.column("created"), pa.int64()).to_numpy()
        order = np.lexsort((-created, ts, item))
        keep = np.ones(order.size, dtype=bool)
        keep[1:] = (item[order][1:] != item[order][:-1]) | (ts[order][1:] != ts[order][:-1])
        rows = pa.array(order[keep])
        emb = t.column("embedding").combine_chunks().take(rows)
        sids = t.column("semantic_ids").combine_chunks().take(rows)
        for name, arr in (("embedding", emb), ("semantic_ids", sids)):
            lengths = pc.list_value_length(arr).to_numpy()
            if np.any(lengths != lengths[0]):
                raise ValueError(f"item features {path}: {name} lists differ in length ({sorted(set(lengths))})")
        item_ids = item[order[keep]]
        ids, first = np.unique(item_ids, return_index=True)
        vectors = emb.flatten().to_numpy().astype(np.float32).reshape(item_ids.size, -1)
        if prefix is not None and 0 < prefix < vectors.shape[1]:
            head = vectors[:, :prefix].astype(np.float64)
            norm = np.linalg.norm(head, axis=1, keepdims=True)
            vectors = np.where(norm > 0, head / np.where(norm > 0, norm, 1.0), head).astype(np.float32)
            offsets = pa.array(np.arange(0, vectors.size + 1, prefix, dtype=np.int32))
            emb = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
        return ItemFeatureStore(
            path=path,
            model_version=str(model_version),
            item_ids=item_ids,
            valid_from_us=ts[order[keep]],
            ids=ids,
            starts=np.append(first, item_ids.size).astype(np.int64),
            embedding=emb,
            semantic_ids=sids,
            vectors=vectors,
        )

    def require(self, item_ids: np.ndarray) -> None:
        """Raises ValueError naming the items of `item_ids` that have no feature row at all."""
        pos = np.clip(np.searchsorted(self.ids, item_ids), 0, max(self.ids.size - 1, 0))
        missing = np.unique(item_ids[self.ids[pos] != item_ids])
        if missing.size:
            raise ValueError(
                f"item features {self.path} (version {self.model_version}) have no row for {missing.size} item(s), "
                f"e.g. {missing[:5].tolist()}; serve with the ITEM_FEATURES table the ranker was trained with"
            )

    def rows_at(self, item_ids: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
        """(N,) the row valid at ts_us of each item (-1: the item has no row, or none stamped at or before ts)."""
        pos = np.clip(np.searchsorted(self.ids, item_ids), 0, self.ids.size - 1)
        found = self.ids[pos] == item_ids
        start = np.where(found, self.starts[pos], 0)
        count = np.where(found, self.starts[pos + 1] - self.starts[pos], 0)
        best = np.full(item_ids.shape, -1, dtype=np.int64)
        for k in range(int(count.max(initial=0))):  # rows per item: one per re-stamp (usually 1)
            row = np.minimum(start + k, self.item_ids.size - 1)
            best = np.where((k < count) & (self.valid_from_us[row] <= ts_us), start + k, best)
        return best


# ------------------------------------------------------------------------------------------ the interaction log


def _index_in(universe: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in `universe` (any order, distinct values); -1 where absent."""
    order = np.argsort(universe, kind="stable")
    srt = universe[order]
    pos = np.clip(np.searchsorted(srt, ids), 0, max(srt.size - 1, 0))
    return np.where(srt[pos] == ids, order[pos], -1) if srt.size else np.full(ids.shape, -1)


@dataclass(frozen=True)
class ClickLog:
    """The logged impressions (user, item, ts, clicked): the source of counters and recent clicks."""

    path: Path
    user_id: np.ndarray  # (n,) rows of every impression
    item_id: np.ndarray
    ts_us: np.ndarray
    clicked: np.ndarray  # bool
    click_user: np.ndarray  # clicks only, sorted by (user, ts, event_id)
    click_ts_us: np.ndarray
    click_item: np.ndarray

    @staticmethod
    def load(path: str | Path) -> ClickLog:
        """A data set directory (its `interactions/`) or a ranking-samples table (`label_click` is the click)."""
        path = Path(path)
        src, click_col = (path / "interactions", "clicked") if (path / "interactions").is_dir() else (path, None)
        parts = []
        for f in table_files(src):
            names = pq.read_schema(f).names
            col = click_col or ("label_click" if "label_click" in names else "clicked")
            need = ["event_id", "user_id", "item_id", "ts", col]
            if any(c not in names for c in need):
                raise ValueError(f"{f}: an interaction log needs columns {need}; it has {names}")
            t = pq.read_table(f, columns=need)
            parts.append(
                pa.table(
                    {
                        "event_id": t.column("event_id").cast(pa.string()),
                        "user_id": t.column("user_id").cast(pa.int64()),
                        "item_id": t.column("item_id").cast(pa.int64()),
                        "ts": t.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()),
                        "clicked": pc.not_equal(t.column(col).cast(pa.int32()), 0),
                    }
                )
            )
        return ClickLog.from_table(pa.concat_tables(parts), path)

    @staticmethod
    def from_table(t: pa.Table, path: Path) -> ClickLog:
        clicks = t.filter(t.column("clicked"))
        clicks = clicks.take(
            pc.sort_indices(clicks, [("user_id", "ascending"), ("ts", "ascending"), ("event_id", "ascending")])
        )
        return ClickLog(
            path=path,
            user_id=t.column("user_id").to_numpy(),
            item_id=t.column("item_id").to_numpy(),
            ts_us=t.column("ts").to_numpy(),
            clicked=t.column("clicked").to_numpy(zero_copy_only=False),
            click_user=clicks.column("user_id").to_numpy(),
            click_ts_us=clicks.column("ts").to_numpy(),
            click_item=clicks.column("item_id").to_numpy(),
        )

    def counters(
        self, key: Literal["item", "user"], universe: np.ndarray, before_us: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) of each id of `universe` over impressions with ts < before_us (int64 arrays)."""
        ids = self.item_id if key == "item" else self.user_id
        keep = self.ts_us < before_us
        idx = _index_in(universe, ids[keep])
        ok = idx >= 0
        imps = np.bincount(idx[ok], minlength=universe.size).astype(np.int64)
        clicks = np.bincount(idx[ok], weights=self.clicked[keep][ok], minlength=universe.size).astype(np.int64)
        return imps, clicks

    def decayed_counters(
        self, key: Literal["item", "user"], universe: np.ndarray, epoch_day: int, days: int, decay: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) decayed as the platform does at the end of each of the log's `days` days:
        sum over days d of count_d * decay^(days - 1 - d), day d = UTC day epoch_day + d."""
        ids = self.item_id if key == "item" else self.user_id
        day = self.ts_us // DAY_US - epoch_day
        w = decay ** (days - 1 - day).astype(np.float64)
        idx = _index_in(universe, ids)
        ok = (idx >= 0) & (day < days)
        imps = np.bincount(idx[ok], weights=w[ok], minlength=universe.size)
        clicks = np.bincount(idx[ok], weights=(w * self.clicked)[ok], minlength=universe.size)
        return imps, clicks

    def recent_clicks(self, user_ids: np.ndarray, before_us: np.ndarray, length: int) -> np.ndarray:
        """(Q, length) the last `length` items each user clicked strictly before before_us, most recent last,
        -1 padding first. Queries and clicks are merged in (user, ts) order, queries before clicks of equal ts."""
        n = self.click_user.size
        users = np.concatenate([self.click_user, user_ids])
        ts = np.concatenate([self.click_ts_us, before_us])
        is_click = np.concatenate([np.ones(n, np.int8), np.zeros(user_ids.size, np.int8)])
        order = np.lexsort((is_click, ts, users))
        clicks_before = np.cumsum(is_click[order]) - is_click[order]  # clicks ahead of each merged entry
        is_query = order >= n
        end = np.empty(user_ids.size, dtype=np.int64)  # per query: one past its last click in the sorted clicks
        end[order[is_query] - n] = clicks_before[is_query]
        first = np.searchsorted(self.click_user, user_ids, side="left")  # the user's first click
        idx = end[:, None] - length + np.arange(length)  # (Q, L)
        ok = idx >= first[:, None]
        return np.where(ok, self.click_item[np.clip(idx, 0, max(self.click_item.size - 1, 0))], -1)


# ---------------------------------------------------------------------------------------- feature assembly


@dataclass(frozen=True)
class ServingBatch:
    """Requests to score with what the platform knows at serving time: (R,) per request, (R, W) per slot."""

    user_id: np.ndarray  # (R,)
    ts_us: np.ndarray  # (R,) serving time, microseconds since the epoch (hour and item age derive from it)
    recent: np.ndarray  # (R, L) recent item ids, most recent last, -1 padding first
    user_imps: np.ndarray  # (R,) the user's impressions on days before ts's day
    user_clicks: np.ndarray  # (R,)
    item_id: np.ndarray  # (R, W) candidate ids, -1 at unused slots
    author_id: np.ndarray  # (R, W)
    category: np.ndarray  # (R, W) str
    created_us: np.ndarray  # (R, W) item creation time
    item_imps: np.ndarray  # (R, W) the item's impressions on days before ts's day
    item_clicks: np.ndarray  # (R, W)


def _list_array(values: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """(R, L) values -> R lists of the entries where `valid`, in column order."""
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid], type=value_type))


def history_similarity(
    store: ItemFeatureStore, target_rows: np.ndarray, recent: np.ndarray, ts_us: np.ndarray, slot_req: np.ndarray
) -> np.ndarray:
    """(N,) float32 cosine(target vector, sum of the request's recent items' vectors valid at ts), NaN where the
    target or every recent item lacks a vector (the samples job's null). target_rows (N,), slot_req (N,) -> request."""
    r, length = recent.shape
    rows = store.rows_at(recent.ravel(), np.repeat(ts_us, length)).reshape(r, length)
    rows = np.where(recent >= 0, rows, -1)
    hist = np.zeros((r, store.dim), dtype=np.float64)
    for k in range(length):  # (R, E) sums, one recent slot at a time
        has = rows[:, k] >= 0
        hist[has] += store.vectors[rows[has, k]]
    target = store.vectors[np.maximum(target_rows, 0)].astype(np.float64)  # (N, E)
    h = hist[slot_req]  # (N, E)
    dot = np.einsum("ne,ne->n", target, h)
    norms = np.linalg.norm(target, axis=1) * np.linalg.norm(h, axis=1)
    ok = (target_rows >= 0) & (norms > 0)
    return np.where(ok, dot / np.where(ok, norms, 1.0), np.nan).astype(np.float32)


def feature_table(batch: ServingBatch, store: ItemFeatureStore, position: int, surface: str) -> pa.Table:
    """The RANKING_SAMPLES_EXT columns the encoder reads, one row per used slot in row-major order (labels 0)."""
    req, col = np.nonzero(batch.item_id >= 0)
    n = req.size
    ts = batch.ts_us[req]
    item = batch.item_id[req, col]
    created = batch.created_us[req, col]
    target = store.rows_at(item, ts)
    no_row = target < 0
    sim = history_similarity(store, target, batch.recent, batch.ts_us, req)
    recent = _list_array(batch.recent, batch.recent >= 0, pa.int64()).take(pa.array(req))
    row_idx = pa.array(target, mask=no_row)
    version = np.full(n, store.model_version, dtype=object)
    zeros = np.zeros(n, dtype=np.int32)
    return pa.table(
        {
            "user_id": pa.array(batch.user_id[req], pa.int64()),
            "item_id": pa.array(item, pa.int64()),
            "author_id": pa.array(batch.author_id[req, col], pa.int64()),
            "category": pa.array(batch.category[req, col].tolist(), pa.string()),
            "hour": pa.array((ts // HOUR_US) % 24, pa.int32()),
            "surface": pa.array(np.full(n, surface, dtype=object).tolist(), pa.string()),
            "position": pa.array(np.full(n, position), pa.int32()),
            "item_age_hours": pa.array(np.maximum((ts - created) / 3.6e9, 0.0).astype(np.float32)),
            "user_recent_items": recent,
            "item_created_ts": pa.array(created, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "item_imps_before": pa.array(batch.item_imps[req, col], pa.int64()),
            "item_clicks_before": pa.array(batch.item_clicks[req, col], pa.int64()),
            "user_imps_before": pa.array(batch.user_imps[req], pa.int64()),
            "user_clicks_before": pa.array(batch.user_clicks[req], pa.int64()),
            "sail_embedding": store.embedding.take(row_idx),
            "semantic_ids": store.semantic_ids.take(row_idx),
            "user_hist_sim": pa.array(sim, mask=np.isnan(sim)),
            "sail_model_version": pa.array(version.tolist(), pa.string(), mask=no_row),
            "label_click": zeros,
            "label_finish": zeros,
        }
    )


# -------------------------------------------------------------------------------------------------- scorer


@dataclass
class ServingState:
    """The scorer's view of one simulated world, indexed like its arrays (item index i, user index u)."""

    day: int  # the counters cover the days before this one
    item_imps: np.ndarray  # (items,) int64
    item_clicks: np.ndarray
    user_imps: np.ndarray  # (users,) int64
    user_clicks: np.ndarray
    served_imps: np.ndarray  # (users,) impressions served on `day` (added when the day is over)
    platform: dict[str, np.ndarray]  # the platform's decayed counters at the start of `day`
    log_recent: np.ndarray  # (users, L) the log's last L clicks (ids), most recent last, -1 padding first
    category: np.ndarray  # (items,) str


def _platform_counts(sim: ABSimulator) -> dict[str, np.ndarray]:
    s = sim.state
    return {
        "item_imps": s.item_impressions.astype(np.float64),
        "item_clicks": s.item_clicks.astype(np.float64),
        "user_clicks": s.user_topic_clicks.astype(np.float64).sum(axis=1),
    }


def _categories(sim: ABSimulator) -> np.ndarray:
    """Each item's category name, as the catalogue's items table writes it (its primary topic's group)."""
    names = np.array(sim.vocab.category_names, dtype=object)
    return names[np.asarray(sim.vocab.topic_category)[sim.cat.primary]]


class RankerScorer:
    """A trained ranker variant as an A/B arm's scorer (offline_eval.ab_sim.Scorer); see the module docstring."""

    def __init__(
        self,
        variant_dir: str | Path,
        item_features_dir: str | Path,
        log_dir: str | Path | None = None,
        cfg: ServeConfig = ServeConfig(),
    ) -> None:
        """variant_dir: a variant of `sail train-ranker`; item_features_dir: the ITEM_FEATURES table it was trained
        with; log_dir: the world's data set (interactions/) or its samples table; None: the samples table named
        in the variant's train.json (every logged impression is a sample row)."""
        self.cfg = cfg
        self.ranker = load_trained_ranker(variant_dir, cfg.threads)
        self.store = ItemFeatureStore.load(item_features_dir, cfg.model_version, cfg.embedding_prefix)
        enc = self.ranker.encoder
        if enc.content_dim and self.store.dim != enc.content_dim:
            raise ValueError(
                f"item features {self.store.path} have {self.store.dim}-d vectors; the ranker was trained on "
                f"{enc.content_dim}-d"
            )
        if enc.sid_levels_available and self.store.levels != enc.sid_levels_available:
            raise ValueError(
                f"item features {self.store.path} have {self.store.levels} SID levels; the ranker was trained on "
                f"{enc.sid_levels_available}"
            )
        self.log_dir = Path(log_dir) if log_dir is not None else Path(self.ranker.train_config["samples_dir"])
        if not self.log_dir.exists():
            raise FileNotFoundError(f"interaction log not found: {self.log_dir} (pass log_dir=the world's data set)")
        self.state: ServingState | None = None

    # ------------------------------------------------------------------------------------- world state
    def _bind(self, ctx: ScoringContext) -> ServingState:
        """Counts the log up to the experiment's first day and checks it against the platform's counters."""
        sim, cfg = ctx.sim, ctx.sim.cfg
        self.store.require(sim.cat.item_id)
        if (sim.recent >= 0).any() and ctx.day == cfg.days:
            raise ValueError("the simulator's recent positives are not empty at the first experiment day")
        log = ClickLog.load(self.log_dir)
        start = (sim.epoch_day + cfg.days) * DAY_US  # the first experiment day
        if log.ts_us.size == 0 or log.ts_us.max() >= start:
            raise ValueError(f"interaction log {self.log_dir} does not end before the experiment's first day")
        item_imps, item_clicks = log.counters("item", sim.cat.item_id, start)
        user_imps, user_clicks = log.counters("user", sim.pop.user_id, start)
        p = cfg.policy
        di, dc = log.decayed_counters("item", sim.cat.item_id, sim.epoch_day, cfg.days, p.item_decay)
        _, du = log.decayed_counters("user", sim.pop.user_id, sim.epoch_day, cfg.days, p.user_decay)
        platform = {"item_imps": di, "item_clicks": dc, "user_clicks": du}
        if ctx.day == cfg.days and not np.allclose(di, sim.state.item_impressions, rtol=1e-6, atol=1e-6):
            raise ValueError(
                f"interaction log {self.log_dir} is not the log this world's warm start replays (its item counts "
                "differ from the platform's); pass the world's data set as log_dir"
            )
        recent = log.recent_clicks(sim.pop.user_id, np.full(len(sim.pop), start), self.cfg.recent_len)
        return ServingState(
            day=cfg.days,
            item_imps=item_imps,
            item_clicks=item_clicks,
            user_imps=user_imps,
            user_clicks=user_clicks,
            served_imps=np.zeros(len(sim.pop), dtype=np.int64),
            platform=platform,
            log_recent=recent,
            category=_categories(sim),
        )

    def _advance(self, sim: ABSimulator, day: int) -> None:
        """Adds the counts of days state.day .. day - 1 (see "Counters" in the module docstring)."""
        st = self.state
        gap = day - st.day
        if gap <= 0:
            return
        now = _platform_counts(sim)
        p = sim.cfg.policy
        for key, decay in (("item_imps", p.item_decay), ("item_clicks", p.item_decay), ("user_clicks", p.user_decay)):
            per_day = (now[key] - decay**gap * st.platform[key]) / sum(decay**j for j in range(gap))
            total = np.maximum(np.rint(per_day * gap), 0).astype(np.int64)
            getattr(st, key)[:] += total
        st.user_imps += st.served_imps
        st.served_imps[:] = 0
        st.platform = now
        st.day = day

    def _recent(self, sim: ABSimulator, users: np.ndarray) -> np.ndarray:
        """(R, L) the log's last clicks followed by the simulator's experiment positives, most recent last."""
        positives = sim.recent[users]
        merged = np.concatenate(
            [self.state.log_recent[users], np.where(positives >= 0, sim.cat.item_id[np.maximum(positives, 0)], -1)],
            axis=1,
        )
        order = np.argsort(merged >= 0, axis=1, kind="stable")  # padding first, items in their order
        return np.take_along_axis(merged, order, axis=1)[:, -self.cfg.recent_len :]

    # -------------------------------------------------------------------------------------------- scoring
    def batch(self, ctx: ScoringContext) -> ServingBatch:
        """The serving rows of a scoring context (binds to / advances with the simulator first)."""
        sim = ctx.sim
        if self.state is None:
            self.state = self._bind(ctx)
        self._advance(sim, ctx.day)
        st = self.state
        c = np.maximum(ctx.cand, 0)
        used = ctx.cand >= 0
        r = len(ctx.users)
        ts = (sim.epoch_day + ctx.day) * DAY_US + self.cfg.hour * HOUR_US
        return ServingBatch(
            user_id=sim.pop.user_id[ctx.users],
            ts_us=np.full(r, ts, dtype=np.int64),
            recent=self._recent(sim, ctx.users),
            user_imps=st.user_imps[ctx.users],
            user_clicks=st.user_clicks[ctx.users],
            item_id=np.where(used, sim.cat.item_id[c], -1),
            author_id=sim.cat.author_id[c],
            category=st.category[c],
            created_us=sim.cat.created_us[c],
            item_imps=st.item_imps[c],
            item_clicks=st.item_clicks[c],
        )

    def score(self, ctx: ScoringContext) -> np.ndarray:
        """(R, W) logits for ctx.cand (0 at unused slots); counts the served impressions for tomorrow's counters."""
        batch = self.batch(ctx)
        table = feature_table(batch, self.store, self.cfg.position, self.cfg.surface)
        logits = score_table(self.ranker, table, self.cfg.batch_size)
        used = ctx.cand >= 0
        out = np.zeros(ctx.cand.shape, dtype=np.float64)
        out[used] = combine_heads(logits, self.cfg.head, self.cfg.finish_weight)
        shown = np.minimum(used.sum(axis=1), ctx.sim.cfg.slate_size)
        np.add.at(self.state.served_imps, ctx.users, shown)
        return out


def load_ranker_arm(
    variant_dir: str | Path,
    item_features_dir: str | Path,
    name: str,
    *,
    log_dir: str | Path | None = None,
    share: float = 0.5,
    temperature: float = 0.3,
    cfg: ServeConfig = ServeConfig(),
) -> Arm:
    """An A/B arm serving a trained ranker variant (see RankerScorer for the arguments)."""
    from offline_eval.ab_sim import Arm

    return Arm(name, RankerScorer(variant_dir, item_features_dir, log_dir, cfg), share=share, temperature=temperature)
