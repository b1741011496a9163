"""Training sources for the staged SAIL trainer, built from the data contracts with a time-based split.

Notation: N catalogue items, P pairs of a source, L history length, d_id collaborative factor dim.

Nothing here mines: `load_pairs(data_dir, pairs_dir)` reads what the mine stage wrote with its configured engine
(`mining.mine_pairs.run_periods`): the TRAIN period's i2i and q2i pairs, the HELD-OUT period's co-visitation pairs
(evaluation only) and the whole log's SEQ2ITEM samples split at the embedding cutoff (`split_ts`).

`build_training_data(prepared, store, cfg)` turns them into `PairSource`s, each a set of (query, target[, score]) rows
with a name, a stage and a query kind:

    stage I   content_i2i    items with overlapping title words / tags (TF-IDF cosine from the CATALOGUE)
              q2i            train-period Q2I_PAIRS (graded score -> COSENT as well as InfoNCE)
              item_tags      query = the item's tags as text, target = the item
              word_queries   pseudo-queries: 1-3 IDF-drawn words of an item's title / tags -> the item
                             (`word_queries_per_item` per item; word-level matching for searches)
    stage II  content_clean  content pairs with a higher overlap (top neighbour only)
              q2i_clean      q2i pairs with score >= clean_q2i_min_score and clicks >= 1
    stage III *_hn           the stage II sources, capped to `clean_max_pairs`, trained with mined hard negatives
    CRE       covisit_i2i, swing_i2i   train-period I2I_PAIRS from the miners
              seq2item       SEQ2ITEM train split: mean-pooled history embeddings vs the next item
              id2item        item -> its collaborative ID vector (through a trained projection)
              content_clean  the auxiliary i2i task that keeps content awareness
              q2i_clean      auxiliary q2i task (without it CRE forgets the query side: q2i R@50 fell 47 -> 35)

Nothing here reads the world's truth tables. Item-ID vectors come from an `ItemIdTable`: by default a truncated SVD
of the train-period user x item positive matrix (`fit_item_id_table`); `load_item_id_table` reads any parquet with
(item_id, embedding) columns, e.g. the ranking model's exported item table, to replace it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from core import contracts as K
from core.io import is_complete, read_table
from embedding.config import PreprocessConfig
from embedding.preprocess import ItemInputs, Preprocessor, build_text
from mining.mining_config import PositiveConfig

QueryKind = Literal["item", "text", "history", "id"]

STAGES = ("I", "II", "III", "CRE")
CONTENT_SIMILARITIES = ("tfidf", "minilm")


@dataclass(frozen=True)
class DataConfig:
    content_similarity: str = "tfidf"  # what makes two items content neighbours: "tfidf" (title words + tags) or
    # "minilm" (cosine of the packaged MiniLM's sentence vectors of the item text: semantic, not lexical)
    content_neighbours: int = 3  # stage I content pairs per item (its top neighbours)
    content_min_sim: float = 0.2  # stage I: minimum cosine of a content pair
    clean_min_sim: float = 0.35  # stage II/III: minimum cosine of the (top-1) clean content pair
    clean_q2i_min_score: float = 0.3  # stage II/III: minimum clicks / impressions of a clean q2i pair
    clean_max_pairs: int = 2000  # stage III: cap per hard-negative source (mining cost grows with it)
    word_queries_per_item: int = 4  # stage I pseudo-queries (title / tag words -> item) per item; 0: none
    history_len: int = 5  # seq2item: last L history items used (mean-pooled)
    id_dim: int = 32  # d_id: truncated-SVD factors of the collaborative model
    max_pairs_per_source: int = 50_000  # cap per source (seeded sample) to bound memory
    seed: int = 0

    def __post_init__(self) -> None:
        if self.word_queries_per_item < 0:
            raise ValueError(f"word_queries_per_item must be >= 0, got {self.word_queries_per_item}")
        if self.content_similarity not in CONTENT_SIMILARITIES:
            raise ValueError(
                f"content_similarity must be one of {list(CONTENT_SIMILARITIES)}, got {self.content_similarity!r}"
            )


# --------------------------------------------------------------------------------------------------------
# The mined pairs (one source: the mine stage's period layout)
# --------------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """A validated data set and the pairs mined from it at the embedding cutoff (`mining.mine_pairs.run_periods`)."""

    data_dir: Path  # items/, interactions/, searches/
    pairs_dir: Path  # train/, heldout/, full/, mining.json
    split_ts: datetime  # the embedding cutoff: training reads events before it, evaluation events at or after it
    media_root: Path | None
    positive: PositiveConfig = field(default_factory=PositiveConfig)  # the miners' positive definition

    def table(self, which: Literal["train", "heldout", "full"], name: str) -> Path:
        return self.pairs_dir / which / name

    def _period(self, name: str, schema: K.TableSchema, before: bool) -> pa.Table:
        t = read_table(self.data_dir / name, schema)
        ts = pa.scalar(self.split_ts, type=pa.timestamp("us", tz="UTC"))
        return t.filter(pc.less(t["ts"], ts) if before else pc.greater_equal(t["ts"], ts))

    def interactions(self, before: bool) -> pa.Table:
        """The data set's interactions before (True) or at / after (False) the cutoff."""
        return self._period("interactions", K.INTERACTIONS, before)

    def searches(self, before: bool) -> pa.Table:
        """The data set's searches before (True) or at / after (False) the cutoff."""
        return self._period("searches", K.SEARCHES, before)


def load_pairs(data_dir: str | os.PathLike, pairs_dir: str | os.PathLike) -> PreparedData:
    """The mine stage's output for `data_dir`. Raises FileNotFoundError naming what is missing (and how to make it)."""
    from mining.mine_pairs import PERIOD_TABLES

    data_dir, pairs_dir = Path(data_dir), Path(pairs_dir)
    meta_path = pairs_dir / "mining.json"
    tables = [pairs_dir / w / t for w, ts in PERIOD_TABLES.items() for t in ts]
    missing = [str(t) for t in tables if not is_complete(t)]
    if not meta_path.exists() or missing:
        raise FileNotFoundError(
            f"{pairs_dir} does not hold mined pairs in the period layout (missing: "
            f"{', '.join(missing) or str(meta_path)}); make them with `sail mine-pairs --data {data_dir} "
            f"--out {pairs_dir} --holdout-frac F` (or `sail run`'s mine stage)"
        )
    meta = json.loads(meta_path.read_text())
    if "cutoff" not in meta:
        raise ValueError(f"{meta_path} records no cutoff: it is not a period-layout mining run")
    positive = PositiveConfig(**meta.get("config", {}).get("positive", {}))
    return PreparedData(
        data_dir=data_dir,
        pairs_dir=pairs_dir,
        split_ts=datetime.fromisoformat(meta["cutoff"]),
        media_root=default_media_root(data_dir),
        positive=positive,
    )


def default_media_root(data_dir: str | os.PathLike) -> Path | None:
    """`<data_dir>/media`, else the media root its manifest names (a validated data set points at its source's
    media). None when there are no media files (text-only data, or media rendered on demand)."""
    root = Path(data_dir) / "media"
    if root.exists():
        return root
    manifest = Path(data_dir) / "manifest.json"
    if manifest.exists():
        media = json.loads(manifest.read_text()).get("media") or {}
        if media.get("mode") == "files" and media.get("root"):
            root = Path(data_dir) / media["root"]  # absolute roots stay absolute
            return root if root.exists() else None
    return None


# --------------------------------------------------------------------------------------------------------
# The catalogue, preprocessed once (and cached on disk as safetensors)
# --------------------------------------------------------------------------------------------------------

_TEXT_COLUMNS = ("title", "ocr_text", "asr_text", "tags")


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class ItemStore:
    """Every catalogue item preprocessed: text fields (for field dropout at batch time), frames and audio (fp16).

    Row i is item `item_ids[i]`; `index[item_id] = i`.
    """

    item_ids: np.ndarray  # (N,) int64
    text_rows: list[dict[str, Any]]  # per item, its text columns (title, ocr_text, asr_text, tags)
    frames: list[torch.Tensor | None]  # per item (F, 3, H, W) float16, None when no image decodes
    audio: list[torch.Tensor | None]  # per item (C, M, T) float16
    audio_frames: list[torch.Tensor | None]  # per item (C,) int64
    media_stats: dict[str, int] = field(default_factory=dict)
    cache_dir: Path | None = None  # where build_item_store cached it; frozen text states are stored beside it

    def __post_init__(self) -> None:
        self.index = {int(i): k for k, i in enumerate(self.item_ids.tolist())}

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows_of(self, item_ids: Sequence[int]) -> np.ndarray:
        """Item ids -> store rows; raises KeyError naming the first unknown id."""
        try:
            return np.fromiter((self.index[int(i)] for i in item_ids), dtype=np.int64, count=len(item_ids))
        except KeyError as exc:
            raise KeyError(f"item id {exc.args[0]} is not in the catalogue") from None

    def inputs(
        self, rows: Sequence[int], drop_prob: float = 0.0, generator: torch.Generator | None = None, audio: bool = True
    ) -> list[ItemInputs]:
        """ItemInputs of some store rows (text fields dropped with `drop_prob`; audio left out when not `audio`)."""
        out = []
        for r in rows:
            r = int(r)
            has_audio = audio and self.audio[r] is not None
            out.append(
                ItemInputs(
                    text=build_text(self.text_rows[r], drop_prob, generator),
                    frames=self.frames[r],
                    audio=self.audio[r] if has_audio else None,
                    audio_frames=self.audio_frames[r] if has_audio else None,
                )
            )
        return out

    # -- disk cache ------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {"item_ids": torch.from_numpy(self.item_ids.astype(np.int64))}
        for name, values in (("frames", self.frames), ("audio", self.audio), ("audio_frames", self.audio_frames)):
            lengths = torch.tensor([0 if v is None else v.shape[0] for v in values], dtype=torch.int64)
            present = [v for v in values if v is not None]
            tensors[f"{name}.lengths"] = lengths
            tensors[f"{name}.present"] = torch.tensor([v is not None for v in values])
            if present:
                tensors[f"{name}.data"] = torch.cat(present).contiguous()
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            tensors, str(tmp), metadata={"text_rows": json.dumps(self.text_rows), "stats": json.dumps(self.media_stats)}
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ItemStore:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__

        def split(name: str) -> list[torch.Tensor | None]:
            lengths, present = t[f"{name}.lengths"].tolist(), t[f"{name}.present"].tolist()
            data, out, at = t.get(f"{name}.data"), [], 0
            for n, p in zip(lengths, present, strict=True):
                out.append(data[at : at + n] if p else None)
                at += n if p else 0
            return out

        return cls(
            item_ids=t["item_ids"].numpy(),
            text_rows=json.loads(meta["text_rows"]),
            frames=split("frames"),
            audio=split("audio"),
            audio_frames=split("audio_frames"),
            media_stats=json.loads(meta["stats"]),
        )


def _text_row(row: dict[str, Any]) -> dict[str, Any]:
    return {c: (list(row[c]) if c == "tags" and row.get(c) is not None else row.get(c)) for c in _TEXT_COLUMNS}


def build_item_store(
    items: pa.Table,
    media_root: str | os.PathLike | None,
    pre: PreprocessConfig,
    cache_dir: str | os.PathLike | None = None,
) -> ItemStore:
    """Preprocess every ITEMS row (no field dropout; that happens per batch). Cached in `cache_dir` when given."""
    rows = items.to_pylist()
    path = None
    if cache_dir is not None:
        key = _digest(
            {
                "pre": asdict(pre),
                "media": str(media_root),
                "ids": [r["item_id"] for r in rows][:1000],
                "n": len(rows),
                "texts": _digest([_text_row(r) for r in rows]),
            }
        )
        path = Path(cache_dir) / f"items-{key}.safetensors"
        if path.exists():
            store = ItemStore.load(path)
            store.cache_dir = Path(cache_dir)
            return store
    prep = Preprocessor(pre, media_root, seed=0)
    frames, audio, audio_frames = [], [], []
    for row in rows:
        x = prep(row, training=False)
        frames.append(None if x.frames is None else x.frames.half())
        audio.append(None if x.audio is None else x.audio.half())
        audio_frames.append(x.audio_frames)
    store = ItemStore(
        item_ids=np.asarray([r["item_id"] for r in rows], dtype=np.int64),
        text_rows=[_text_row(r) for r in rows],
        frames=frames,
        audio=audio,
        audio_frames=audio_frames,
        media_stats=prep.stats.as_dict(),
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.save(path)
        store.cache_dir = Path(cache_dir)
    return store


# --------------------------------------------------------------------------------------------------------
# Pair sources
# --------------------------------------------------------------------------------------------------------


@dataclass
class PairSource:
    """(query, target[, score]) rows of one training source. Targets are ItemStore rows.

    queries: item rows (kind 'item' and 'id'), strings ('text'), or per row an int64 array of history item rows
    ('history'). For 'id' rows the target is the item itself and the positive is its ID vector.
    """

    name: str
    stage: str  # one of STAGES
    query_kind: QueryKind
    queries: Any  # np.ndarray (P,) | list[str] | list[np.ndarray]
    targets: np.ndarray  # (P,) int64 store rows
    scores: np.ndarray | None = None  # (P,) graded labels in [0, 1] (COSENT), None when ungraded
    hard_negatives: bool = False  # stage III: train with mined hard negatives

    def __len__(self) -> int:
        return len(self.targets)

    def query_key(self, i: int) -> Any:
        """A hashable identity of row i's query (rows with the same key share positives)."""
        q = self.queries[i]
        return tuple(q.tolist()) if self.query_kind == "history" else (q if isinstance(q, str) else int(q))

    def positives_by_query(self) -> list[set[int]]:
        """Per row, every target row seen with the same query (for false-negative filtering)."""
        by_key: dict[Any, set[int]] = {}
        keys = [self.query_key(i) for i in range(len(self))]
        for k, t in zip(keys, self.targets.tolist(), strict=True):
            by_key.setdefault(k, set()).add(int(t))
        return [by_key[k] for k in keys]

    def subset(self, rows: np.ndarray, name: str | None = None, **changes: Any) -> PairSource:
        q = self.queries
        sub_q = q[rows] if isinstance(q, np.ndarray) else [q[int(i)] for i in rows]
        return PairSource(
            name=name or self.name,
            stage=changes.get("stage", self.stage),
            query_kind=self.query_kind,
            queries=sub_q,
            targets=self.targets[rows],
            scores=None if self.scores is None else self.scores[rows],
            hard_negatives=changes.get("hard_negatives", self.hard_negatives),
        )


def _cap(src: PairSource, cap: int, seed: int) -> PairSource:
    if len(src) <= cap:
        return src
    rows = np.sort(np.random.default_rng(seed).choice(len(src), size=cap, replace=False))
    return src.subset(rows)


def content_text(row: dict[str, Any]) -> str:
    """Title words + tags: the text of the catalogue overlap measure."""
    tags = " ".join(str(t) for t in (row.get("tags") or []))
    return f"{row.get('title') or ''} {tags}"


def content_vectors(store: ItemStore, by: str = "tfidf"):
    """Row-normalised content vectors of every item, from the catalogue only: a sparse TF-IDF matrix of title words
    + tags (`tfidf`), or the packaged MiniLM's sentence vectors of the item text (`minilm`, dense)."""
    if by == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True).fit_transform(
            [content_text(r) for r in store.text_rows]
        )  # (N, V) L2-normalised rows
    if by == "minilm":
        from embedding.towers import minilm_sentence_encoder

        v = minilm_sentence_encoder()([build_text(r) for r in store.text_rows])
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    raise ValueError(f"content similarity must be one of {list(CONTENT_SIMILARITIES)}, got {by!r}")


def content_neighbours(store: ItemStore, k: int, chunk: int = 2048, by: str = "tfidf") -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k content neighbours of every item (itself excluded), by `content_vectors(store, by)`.

    Returns (neighbour rows (N, k), cosines (N, k)), best first. Computed in row chunks (memory O(chunk x N)).
    """
    import scipy.sparse as sp

    x = content_vectors(store, by)
    n = x.shape[0]
    k = min(k, n - 1)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    xt = x.T.tocsr() if sp.issparse(x) else np.ascontiguousarray(x.T)
    for s in range(0, n, chunk):
        block = x[s : s + chunk] @ xt  # (c, N)
        block = block.toarray() if sp.issparse(block) else np.array(block)
        block[np.arange(block.shape[0]), np.arange(s, s + block.shape[0])] = -np.inf  # not itself
        top = np.argpartition(-block, k, axis=1)[:, :k] if k < n - 1 else np.argsort(-block, axis=1)[:, :k]
        vals = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[s : s + chunk] = np.take_along_axis(top, order, axis=1)
        sim[s : s + chunk] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def content_source(store: ItemStore, name: str, stage: str, neighbours: int, min_sim: float, nbrs=None) -> PairSource:
    idx, sim = nbrs if nbrs is not None else content_neighbours(store, neighbours)
    idx, sim = idx[:, :neighbours], sim[:, :neighbours]
    q, j = np.nonzero(sim >= min_sim)
    return PairSource(name, stage, "item", q.astype(np.int64), idx[q, j].astype(np.int64), sim[q, j].astype(np.float32))


def tags_source(store: ItemStore, stage: str = "I") -> PairSource:
    rows = [i for i, r in enumerate(store.text_rows) if r.get("tags")]
    texts = ["tags: " + ", ".join(str(t) for t in store.text_rows[i]["tags"]) for i in rows]
    return PairSource("item_tags", stage, "text", texts, np.asarray(rows, dtype=np.int64))


def word_query_source(store: ItemStore, per_item: int, seed: int, max_words: int = 3, stage: str = "I") -> PairSource:
    """Pseudo-queries from the catalogue: `per_item` queries per item, each 1..max_words distinct words of its title
    and tags drawn with probability proportional to their inverse document frequency (so topic words, not fillers),
    paired with the item. Teaches the word-level matching that searches need; reads no log."""
    rng = np.random.default_rng(seed)
    words = [sorted(set(re.findall(r"\w+", content_text(r).lower()))) for r in store.text_rows]
    df: dict[str, int] = {}
    for ws in words:
        for w in ws:
            df[w] = df.get(w, 0) + 1
    n = max(len(words), 1)
    texts, rows = [], []
    for i, ws in enumerate(words):
        if not ws:
            continue
        idf = np.asarray([np.log(n / df[w]) + 1e-3 for w in ws])
        for _ in range(per_item):
            k = int(rng.integers(1, min(max_words, len(ws)) + 1))
            pick = rng.choice(len(ws), size=k, replace=False, p=idf / idf.sum())
            texts.append(" ".join(ws[j] for j in pick))
            rows.append(i)
    return PairSource("word_queries", stage, "text", texts, np.asarray(rows, dtype=np.int64))


def q2i_source(q2i: pa.Table, store: ItemStore, name: str, stage: str, min_score: float = 0.0) -> PairSource:
    t = q2i.filter(
        pc.and_(pc.greater_equal(q2i["score"], min_score), pc.is_in(q2i["item_id"], pa.array(store.item_ids)))
    )
    return PairSource(
        name,
        stage,
        "text",
        t["query"].to_pylist(),
        store.rows_of(t["item_id"].to_pylist()),
        np.asarray(t["score"].to_numpy(), dtype=np.float32),
    )


def i2i_source(i2i: pa.Table, store: ItemStore, miner: str, name: str) -> PairSource:
    known = pa.array(store.item_ids)
    t = i2i.filter(
        pc.and_(
            pc.equal(i2i["miner"], miner),
            pc.and_(pc.is_in(i2i["anchor_item_id"], known), pc.is_in(i2i["item_id"], known)),
        )
    )
    score = np.asarray(t["score"].to_numpy(), dtype=np.float64)
    graded = (score / score.max()).astype(np.float32) if len(score) else None
    return PairSource(
        name,
        "CRE",
        "item",
        store.rows_of(t["anchor_item_id"].to_pylist()),
        store.rows_of(t["item_id"].to_pylist()),
        graded,
    )


def seq2item_source(seq: pa.Table, store: ItemStore, history_len: int) -> PairSource:
    t = seq.filter(pc.equal(seq["split"], "train"))
    hist, targets = [], []
    for h, tgt in zip(t["history_item_ids"].to_pylist(), t["target_item_id"].to_pylist(), strict=True):
        h = [i for i in h if int(i) in store.index][-history_len:]
        if h and int(tgt) in store.index:
            hist.append(store.rows_of(h))
            targets.append(store.index[int(tgt)])
    return PairSource("seq2item", "CRE", "history", hist, np.asarray(targets, dtype=np.int64))


# --------------------------------------------------------------------------------------------------------
# Item-ID vectors (collaborative model)
# --------------------------------------------------------------------------------------------------------


@dataclass
class ItemIdTable:
    """Item-ID embeddings of a collaborative model: row i of `vectors` (L2-normalised) is item `item_ids[i]`."""

    item_ids: np.ndarray  # (M,) int64
    vectors: np.ndarray  # (M, d_id) float32

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def positive_matrix(
    interactions_dir: str | os.PathLike,
    positive: PositiveConfig | None = None,
    before: datetime | None = None,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """The (log-scaled) user x item positive matrix of an interactions table under the miners' positive definition,
    from events before `before` (None: all): (user_ids (U,), item_ids (M,), CSR (U, M) of log1p(positive events)).
    Items without positives get no column (default definition: `PositiveConfig()`)."""
    import polars as pl
    import scipy.sparse as sp

    from mining import mining_polars as M
    from mining.mine_pairs import scan_contract_table

    lf = scan_contract_table(interactions_dir, K.INTERACTIONS).pipe(M.flag_interaction_rejects).pipe(M.drop_rejected)
    pos = (
        lf.pipe(M.within_period, None, before)
        .pipe(M.select_positive_events, positive or PositiveConfig())
        .group_by("user_id", "item_id")
        .agg(pl.len().alias("n"))
        .collect()
    )
    users, u_idx = np.unique(pos["user_id"].to_numpy(), return_inverse=True)
    items, i_idx = np.unique(pos["item_id"].to_numpy(), return_inverse=True)
    m = sp.csr_matrix(
        (np.log1p(pos["n"].to_numpy().astype(np.float64)), (u_idx, i_idx)), shape=(len(users), len(items))
    )
    return users.astype(np.int64), items.astype(np.int64), m


def svd_factors(m: Any, dim: int, seed: int = 0) -> np.ndarray:
    """(columns, dim) float32 factors V * sqrt(S) of the randomised truncated SVD of a (sparse) matrix; `dim` is
    capped at min(shape) - 1."""
    from sklearn.decomposition import TruncatedSVD

    dim = max(1, min(dim, min(m.shape) - 1))
    svd = TruncatedSVD(n_components=dim, random_state=seed, algorithm="randomized", n_iter=7).fit(m)
    return (svd.components_.T * np.sqrt(svd.singular_values_)[None, :]).astype(np.float32)


def svd_item_id_table(item_ids: np.ndarray, m: Any, dim: int, seed: int = 0) -> ItemIdTable:
    """Item-ID vectors of a user x item matrix whose columns are `item_ids`: its `svd_factors`, L2-normalised."""
    v = svd_factors(m, dim, seed)  # (M, d_id)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return ItemIdTable(np.asarray(item_ids, dtype=np.int64), v)


def fit_item_id_table(prepared: PreparedData, dim: int, seed: int = 0) -> ItemIdTable:
    """`svd_item_id_table` of the train-period user x item positive matrix (`positive_matrix` before the cutoff).
    Items without positives get no row."""
    _, items, m = positive_matrix(prepared.data_dir / "interactions", prepared.positive, prepared.split_ts)
    return svd_item_id_table(items, m, dim, seed)


def load_item_id_table(path: str | os.PathLike) -> ItemIdTable:
    """Item-ID vectors from any parquet table with `item_id` (int64) and `embedding` (list<float>) columns, e.g.
    the ranking model's exported item-embedding table (ITEM_EMBEDDINGS works as is)."""
    import pyarrow.parquet as pq

    from core.io import table_files

    t = pa.concat_tables([pq.read_table(f, columns=["item_id", "embedding"]) for f in table_files(path)])
    v = np.asarray(t["embedding"].to_pylist(), dtype=np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return ItemIdTable(np.asarray(t["item_id"].to_numpy(), dtype=np.int64), v)


def id2item_source(table: ItemIdTable, store: ItemStore) -> tuple[PairSource, np.ndarray]:
    """The id2item source (query = item row, target = the same row) and the (N, d_id) ID vectors per store row
    (zeros for items the table lacks; those items are not in the source)."""
    vecs = np.zeros((len(store), table.dim), dtype=np.float32)
    rows = []
    for iid, v in zip(table.item_ids.tolist(), table.vectors, strict=True):
        r = store.index.get(int(iid))
        if r is not None:
            vecs[r] = v
            rows.append(r)
    rows_arr = np.asarray(sorted(rows), dtype=np.int64)
    return PairSource("id2item", "CRE", "id", rows_arr, rows_arr), vecs


# --------------------------------------------------------------------------------------------------------
# All sources
# --------------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """Everything the trainer samples from."""

    store: ItemStore
    sources: dict[str, PairSource]  # name -> source
    stages: dict[str, list[str]]  # stage -> source names trained in it
    id_vectors: np.ndarray | None  # (N, d_id) per store row, for id2item; None when no collaborative table
    benchmarks: dict[str, PairSource]  # train-period proxies of the evaluation tasks (for OT balancing)
    split_ts: datetime

    def summary(self) -> dict[str, Any]:
        return {
            "split_ts": self.split_ts.isoformat(),
            "items": len(self.store),
            "sources": {n: {"stage": s.stage, "rows": len(s), "kind": s.query_kind} for n, s in self.sources.items()},
            "stages": self.stages,
            "media": self.store.media_stats,
        }


def build_training_data(
    prepared: PreparedData,
    store: ItemStore,
    cfg: DataConfig = DataConfig(),
    collaborative: bool = True,
    id_table: ItemIdTable | None = None,
) -> TrainingData:
    """All sources per stage. `collaborative=False` (the content-only baseline) leaves out CRE entirely."""
    nbrs = content_neighbours(store, max(cfg.content_neighbours, 1), by=cfg.content_similarity)
    # miner outputs come in no fixed row order (parallel engines): sort so that sources, and training, are reproducible
    q2i = read_table(prepared.table("train", "q2i_pairs"), K.Q2I_PAIRS).sort_by(
        [("query", "ascending"), ("item_id", "ascending")]
    )
    cap = cfg.max_pairs_per_source
    src: dict[str, PairSource] = {}
    src["content_i2i"] = _cap(
        content_source(store, "content_i2i", "I", cfg.content_neighbours, cfg.content_min_sim, nbrs), cap, cfg.seed
    )
    src["q2i"] = _cap(q2i_source(q2i, store, "q2i", "I"), cap, cfg.seed)
    src["item_tags"] = _cap(tags_source(store), cap, cfg.seed)
    if cfg.word_queries_per_item > 0:
        src["word_queries"] = _cap(word_query_source(store, cfg.word_queries_per_item, cfg.seed), cap, cfg.seed)
    src["content_clean"] = _cap(content_source(store, "content_clean", "II", 1, cfg.clean_min_sim, nbrs), cap, cfg.seed)
    src["q2i_clean"] = _cap(q2i_source(q2i, store, "q2i_clean", "II", cfg.clean_q2i_min_score), cap, cfg.seed)
    for base in ("content_clean", "q2i_clean"):
        hn = _cap(src[base], cfg.clean_max_pairs, cfg.seed + 1)
        src[f"{base}_hn"] = hn.subset(np.arange(len(hn)), name=f"{base}_hn", stage="III", hard_negatives=True)
    stages = {
        "I": ["content_i2i", "q2i", "item_tags", "word_queries"],
        "II": ["content_clean", "q2i_clean"],
        "III": ["content_clean_hn", "q2i_clean_hn"],
        "CRE": [],
    }
    id_vectors = None
    if collaborative:
        i2i = read_table(prepared.table("train", "i2i_pairs"), K.I2I_PAIRS).sort_by(
            [("miner", "ascending"), ("anchor_item_id", "ascending"), ("item_id", "ascending")]
        )
        src["covisit_i2i"] = _cap(i2i_source(i2i, store, "covisit", "covisit_i2i"), cap, cfg.seed)
        src["swing_i2i"] = _cap(i2i_source(i2i, store, "swing", "swing_i2i"), cap, cfg.seed)
        seq = read_table(prepared.table("full", "seq2item"), K.SEQ2ITEM).sort_by(
            [("user_id", "ascending"), ("target_ts", "ascending"), ("target_item_id", "ascending")]
        )
        src["seq2item"] = _cap(seq2item_source(seq, store, cfg.history_len), cap, cfg.seed)
        table = id_table or fit_item_id_table(prepared, cfg.id_dim, cfg.seed)
        src["id2item"], id_vectors = id2item_source(table, store)
        stages["CRE"] = ["covisit_i2i", "swing_i2i", "seq2item", "id2item", "content_clean", "q2i_clean"]
    benchmarks = {"bench_q2i": _cap(src["q2i"], 400, cfg.seed + 2)}
    if collaborative:
        benchmarks["bench_i2i"] = _cap(src["covisit_i2i"], 400, cfg.seed + 3)
    else:
        benchmarks["bench_i2i"] = _cap(src["content_clean"], 400, cfg.seed + 3)
    for stage in stages:
        stages[stage] = [s for s in stages[stage] if s in src and len(src[s]) > 0]
    benchmarks = {k: b for k, b in benchmarks.items() if len(b) > 0}  # e.g. no searches in a data set
    return TrainingData(store, src, stages, id_vectors, benchmarks, prepared.split_ts)
