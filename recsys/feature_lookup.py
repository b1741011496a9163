"""Point-in-time lookup of SAIL feature rows by (item, time), in numpy.

The ranking samples need, for every impression, the target item's feature row valid at the impression's time and
the sum of its recent items' rows valid at that time. A feature table has one row per item and version, so it fits
in every worker's memory (100k items x 64 floats is 26 MB; 1M items, 256 MB). Looking rows up there replaces a
join per recent item and a group-by per impression (a shuffle of recent_len vectors per impression, which at 14M
impressions spilled more than this machine's free disk) with array indexing inside each batch of rows.

`FeatureRows` holds the validity intervals (`recsys.samples.feature_validity_intervals`): per item, rows sorted by
valid_from, valid_to the next row's valid_from (open: none). The row valid at ts is the one with
valid_from <= ts < valid_to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OPEN_END = np.iinfo(np.int64).max
"""valid_to of an item's latest row (microseconds): open-ended."""

SAIL_COLUMNS = ("sail_embedding", "semantic_ids", "sail_model_version", "user_hist_sim")
"""The columns `FeatureRows.sail_columns` adds, in order."""


def _micros(col: pa.ChunkedArray | pa.Array, null: int = 0) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC), whatever its unit; nulls become `null`."""
    us = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.fill_null(us, null).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


@dataclass(frozen=True)
class FeatureRows:
    item_id: np.ndarray  # int64 [n], sorted by (item_id, valid_from)
    valid_from: np.ndarray  # int64 microseconds [n]
    valid_to: np.ndarray  # int64 microseconds [n]; OPEN_END: open
    vectors: np.ndarray  # float32 [n, dim]
    embedding: pa.Array  # list<float32> [n], the rows' vectors as the samples carry them
    semantic_ids: pa.Array  # list<int32> [n]
    model_version: pa.Array  # string [n]
    max_rows_per_item: int

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def from_arrow(cls, table: pa.Table) -> FeatureRows:
        """From intervals with columns item_id, embedding, semantic_ids, model_version, valid_from, valid_to.

        Every embedding must be present and of one length; two rows of one item may not hold the same instant.
        """
        need = ("item_id", "embedding", "semantic_ids", "model_version", "valid_from", "valid_to")
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise ValueError(f"feature intervals lack column(s) {missing}; they have {table.column_names}")
        n = table.num_rows
        item = table["item_id"].to_numpy().astype(np.int64, copy=False)
        start = _micros(table["valid_from"])
        end = _micros(table["valid_to"], null=OPEN_END)
        order = np.lexsort((start, item))
        emb = table["embedding"].combine_chunks().take(pa.array(order))
        if emb.null_count:
            raise ValueError(f"{emb.null_count} of {n} feature rows have no embedding")
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if n else 0
        if n and not (lengths == dim).all():
            raise ValueError(f"feature rows have embeddings of lengths {sorted(set(lengths.tolist()))}, not one")
        vectors = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, dim)
        item, start, end = item[order], start[order], end[order]
        same = item[1:] == item[:-1]
        if (same & (end[:-1] > start[1:])).any():
            raise ValueError("feature intervals of one item overlap")
        _, counts = np.unique(item, return_counts=True)
        return cls(
            item_id=item,
            valid_from=start,
            valid_to=end,
            vectors=vectors,
            embedding=emb,
            semantic_ids=table["semantic_ids"].combine_chunks().take(pa.array(order)),
            model_version=table["model_version"].combine_chunks().take(pa.array(order)),
            max_rows_per_item=int(counts.max()) if n else 0,
        )

    def locate(self, items: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
        """Index of the row of items[i] valid at ts_us[i], or -1 (no row of that item, or none valid then)."""
        items = np.asarray(items, np.int64)
        ts_us = np.asarray(ts_us, np.int64)
        out = np.full(len(items), -1, np.int64)
        lo = np.searchsorted(self.item_id, items, "left")
        hi = np.searchsorted(self.item_id, items, "right")
        for k in range(self.max_rows_per_item):  # an item's k-th row; intervals are disjoint: one hit at most
            cand = lo + k
            live = np.flatnonzero(cand < hi)
            j = cand[live]
            hit = (self.valid_from[j] <= ts_us[live]) & (ts_us[live] < self.valid_to[j])
            out[live[hit]] = j[hit]
        return out

    def sail_columns(self, item_id: pa.Array, ts: pa.Array, recent: pa.Array) -> list[pa.Array]:
        """The SAIL_COLUMNS for rows (target item, time, recent items): the target's row valid at ts (nulls when
        none), and user_hist_sim = cosine(target vector, sum of the recent items' vectors valid at ts) in float64,
        null when the target or every recent item lacks a row, or either vector is zero."""
        n = len(item_id)
        ts_us = _micros(ts)
        target = self.locate(item_id.to_numpy(zero_copy_only=False), ts_us)
        parents = pc.list_parent_indices(recent).to_numpy(zero_copy_only=False)
        hist = self.locate(pc.list_flatten(recent).to_numpy(zero_copy_only=False), ts_us[parents])
        found = hist >= 0
        sums = np.zeros((n, self.dim), np.float64)
        has_hist = np.zeros(n, bool)
        if found.any():
            p = parents[found]  # non-decreasing: list elements come in row order
            rows, starts = np.unique(p, return_index=True)
            sums[rows] = np.add.reduceat(self.vectors[hist[found]].astype(np.float64), starts, axis=0)
            has_hist[rows] = True
        t = np.zeros((n, self.dim), np.float64)
        has_t = target >= 0
        t[has_t] = self.vectors[target[has_t]]
        t_norm, h_norm = np.linalg.norm(t, axis=1), np.linalg.norm(sums, axis=1)
        ok = has_t & has_hist & (t_norm > 0) & (h_norm > 0)
        sim = np.zeros(n, np.float64)
        sim[ok] = (t[ok] * sums[ok]).sum(axis=1) / (t_norm[ok] * h_norm[ok])
        take = pa.array(target, pa.int64(), mask=~has_t)
        return [
            self.embedding.take(take),
            self.semantic_ids.take(take),
            self.model_version.take(take),
            pa.array(sim.astype(np.float32), pa.float32(), mask=~ok),
        ]
