"""`sail eval-retrieval`: the retrieval table (rows = tasks, columns = methods) with bootstrap 95% intervals, plus
an ablation table (rows = SAIL + CRE variants).

Notation: N catalogue items, Q queries of a task, k the cut-off.

Tasks (held-out ground truth; everything a method trains on is from before `split_ts`):
- i2i_coengagement (R@50): anchors = items WITH training-period interactions that have co-visitation pairs mined
  from the HELD-OUT period; relevant = those held-out co-engaged items.
- i2i_content (R@50): relevance = same primary topic (the world's truth; evaluation only). Each topic has far more
  than 50 items, so the per-query value is hits@50 / min(|relevant|, 50) (capped recall).
- q2i (R@50): held-out searches with clicks; query = the normalised query text, relevant = its clicked items.
- cold_start_i2i (R@50): like i2i_coengagement, for anchors with NO training-period interactions.
- seq2item (R@25): SEQ2ITEM eval split; query = mean of the last history items' vectors (history items excluded from
  the results), relevant = the target item.

Methods: ItemCF (train-period co-visitation pairs) and Swing (train-period Swing pairs) rank an anchor's mined
neighbours (seq2item: summed neighbour scores over the history; q2i: the train-period q2i pairs of the exact same
normalised query; items without training pairs cannot be scored -> empty lists, recall 0); pretrained MiniLM
text-only (mean-pooled, frozen); a content-only two-tower contrastive model (ConcatFusionModel, stages I-II data, no
collaborative data, no hard negatives); SAIL stages I-III; SAIL + CRE. Embedding methods retrieve with faiss
`IndexFlatIP` over the whole catalogue (the query item itself excluded). Intervals: percentile bootstrap with
`core.bootstrap.cluster_bootstrap`, resampling anchors (i2i tasks) or users (q2i, seq2item).

Paired comparisons: every method answers the same queries, so "SAIL + CRE minus column X" (and "SAIL stages I-III
minus MiniLM") is the mean of per-query differences, with a cluster-bootstrap interval over the same clusters; far
tighter than comparing two separate intervals. The targets (`check_targets`) read those paired intervals; the
cold-start row is judged against the content columns (MiniLM, the two-tower, stages I-III) only, since ItemCF and
Swing score 0 there by construction.

Every pair is read from the mine stage's output (`embedding.data.load_pairs`): nothing is mined here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import contracts as K
from core.io import read_table, write_json_atomic
from embedding.data import ItemStore, PreparedData, TrainingData
from embedding.trainer import TrainConfig

TASKS = ("i2i_coengagement", "i2i_content", "q2i", "cold_start_i2i", "seq2item")
TASK_K = {"i2i_coengagement": 50, "i2i_content": 50, "q2i": 50, "cold_start_i2i": 50, "seq2item": 25}
TASK_LABEL = {
    "i2i_coengagement": "i2i co-engagement R@50",
    "i2i_content": "i2i content (same topic) R@50",
    "q2i": "q2i R@50",
    "cold_start_i2i": "cold-start i2i R@50",
    "seq2item": "seq2item R@25",
}


@dataclass(frozen=True)
class EvalConfig:
    train: TrainConfig = field(default_factory=TrainConfig)  # SAIL (+ CRE) schedule; baselines derive from it
    max_queries: int = 2000  # per task, a seeded sample of queries when there are more
    content_anchors: int = 500  # anchors for i2i_content
    n_boot: int = 1000  # bootstrap resamples
    seed: int = 0
    ablations: bool = True  # train and evaluate the ablation variants
    ablation_scale: float = 1.0  # ablation runs use round(steps * this) per stage (same for the reference row)
    baseline_steps_scale: float = 1.0  # content two-tower: steps of stages I + II scaled by this
    minilm: bool = True  # evaluate the pretrained MiniLM column (needs the packaged model)
    two_tower: bool = True  # train and evaluate the content-only two-tower (CLIP-style) column


# --------------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------------


@dataclass
class Benchmark:
    """Q queries of one task. Exactly one of anchors / texts / histories is set."""

    task: str
    k: int
    relevant: list[set[int]]  # per query, relevant store rows
    clusters: np.ndarray  # (Q,) bootstrap cluster per query (anchor item or user id)
    anchors: np.ndarray | None = None  # (Q,) store rows (i2i tasks)
    texts: list[str] | None = None  # q2i
    histories: list[np.ndarray] | None = None  # seq2item: store rows, oldest first
    capped: bool = False  # per-query value divides by min(|relevant|, k)

    def __len__(self) -> int:
        return len(self.relevant)


def _sample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def _subset(b: Benchmark, rows: np.ndarray) -> Benchmark:
    return dataclasses.replace(
        b,
        relevant=[b.relevant[i] for i in rows],
        clusters=b.clusters[rows],
        anchors=None if b.anchors is None else b.anchors[rows],
        texts=None if b.texts is None else [b.texts[i] for i in rows],
        histories=None if b.histories is None else [b.histories[i] for i in rows],
    )


def normalise_queries(queries: list[str]) -> list[str]:
    """The miners' query normalisation (so held-out queries match the train-period q2i keys)."""
    import polars as pl

    from mining.mining_polars import normalize_query

    return pl.DataFrame({"q": queries}).select(normalize_query(pl.col("q"))).to_series().to_list()


def _truth_dir(data_dir: Path) -> Path:
    """`<data_dir>/truth`, or the truth of the data set a validated copy was made from (validation copies none)."""
    manifest = data_dir / "manifest.json"
    if not (data_dir / "truth").exists() and manifest.exists():
        source = json.loads(manifest.read_text()).get("validated_from")
        if source:
            return Path(source) / "truth"
    return data_dir / "truth"


def build_benchmarks(
    prepared: PreparedData, store: ItemStore, cfg: EvalConfig, history_len: int = 5
) -> dict[str, Benchmark]:
    """Every task's held-out queries (see the module docstring)."""
    known = set(store.index)
    train_items = set(prepared.interactions(before=True)["item_id"].unique().to_pylist())
    out: dict[str, Benchmark] = {}

    i2i = read_table(prepared.table("heldout", "i2i_pairs"), K.I2I_PAIRS)
    i2i = i2i.filter(pc.equal(i2i["miner"], "covisit"))
    rel: dict[int, set[int]] = {}
    for a, b in zip(i2i["anchor_item_id"].to_pylist(), i2i["item_id"].to_pylist(), strict=True):
        if a in known and b in known and a != b:
            rel.setdefault(a, set()).add(store.index[b])
    for task, warm in (("i2i_coengagement", True), ("cold_start_i2i", False)):
        anchors = sorted(a for a in rel if (a in train_items) == warm)
        if anchors:
            b = Benchmark(
                task, TASK_K[task], [rel[a] for a in anchors], np.asarray(anchors), anchors=store.rows_of(anchors)
            )
            out[task] = _subset(b, _sample(len(b), cfg.max_queries, cfg.seed))

    truth_path = _truth_dir(prepared.data_dir) / "item_truth"
    if truth_path.exists():
        truth = read_table(truth_path, K.ITEM_TRUTH)
        primary = {
            int(i): (t[0] if t else -1)
            for i, t in zip(truth["item_id"].to_pylist(), truth["topics"].to_pylist(), strict=True)
        }
        topic = np.asarray([primary.get(int(i), -1) for i in store.item_ids])
        by_topic = {t: set(np.flatnonzero(topic == t).tolist()) for t in np.unique(topic) if t >= 0}
        rows = _sample(len(store), cfg.content_anchors, cfg.seed + 1)
        rows = np.asarray([r for r in rows if topic[r] >= 0 and len(by_topic[topic[r]]) > 1], dtype=np.int64)
        out["i2i_content"] = Benchmark(
            "i2i_content",
            50,
            [by_topic[topic[r]] - {int(r)} for r in rows],
            store.item_ids[rows],
            anchors=rows,
            capped=True,
        )

    s = prepared.searches(before=False)
    s = s.filter(s["clicked"])
    if s.num_rows:
        norm = normalise_queries(s["query"].to_pylist())
        groups: dict[str, tuple[str, int, set[int]]] = {}
        for sid, q, u, it in zip(
            s["search_id"].to_pylist(), norm, s["user_id"].to_pylist(), s["item_id"].to_pylist(), strict=True
        ):
            if q and it in known:
                groups.setdefault(sid, (q, u, set()))[2].add(store.index[it])
        keys = sorted(groups)
        b = Benchmark(
            "q2i",
            50,
            [groups[k][2] for k in keys],
            np.asarray([groups[k][1] for k in keys]),
            texts=[groups[k][0] for k in keys],
        )
        out["q2i"] = _subset(b, _sample(len(b), cfg.max_queries, cfg.seed + 2))

    seq = read_table(prepared.table("full", "seq2item"), K.SEQ2ITEM)
    seq = seq.filter(pc.equal(seq["split"], "eval"))
    hist, rel_s, users = [], [], []
    for u, h, t in zip(
        seq["user_id"].to_pylist(), seq["history_item_ids"].to_pylist(), seq["target_item_id"].to_pylist(), strict=True
    ):
        h = [i for i in h if i in known][-history_len:]
        if h and t in known and t not in h:
            hist.append(store.rows_of(h))
            rel_s.append({store.index[t]})
            users.append(u)
    if hist:
        b = Benchmark("seq2item", 25, rel_s, np.asarray(users), histories=hist)
        out["seq2item"] = _subset(b, _sample(len(b), cfg.max_queries, cfg.seed + 3))
    return out


# --------------------------------------------------------------------------------------------------------
# Retrieval and scoring
# --------------------------------------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def search_excluding(index_vecs: np.ndarray, queries: np.ndarray, k: int, exclude: list[set[int]]) -> list[list[int]]:
    """Exact inner-product top-k (faiss IndexFlatIP) with per-query excluded rows removed."""
    import faiss

    index = faiss.IndexFlatIP(index_vecs.shape[1])
    index.add(_normalise(index_vecs))
    extra = max((len(e) for e in exclude), default=0)
    _, idx = index.search(_normalise(queries), min(k + extra, index_vecs.shape[0]))
    return [[int(i) for i in row if i >= 0 and int(i) not in ex][:k] for row, ex in zip(idx, exclude, strict=True)]


class EmbeddingMethod:
    """Retrieval with item vectors (N, D) and a text-query embedding function."""

    def __init__(
        self, item_vecs: np.ndarray, embed_texts: Callable[[list[str]], np.ndarray], stored_states: int = 0
    ) -> None:
        self.item_vecs, self.embed_texts = _normalise(item_vecs), embed_texts
        self.stored_states = stored_states  # item texts whose frozen lower-layer states were read from disk

    def retrieve(self, b: Benchmark) -> list[list[int]]:
        if b.anchors is not None:
            return search_excluding(self.item_vecs, self.item_vecs[b.anchors], b.k, [{int(a)} for a in b.anchors])
        if b.texts is not None:
            return search_excluding(self.item_vecs, self.embed_texts(b.texts), b.k, [set() for _ in b.texts])
        q = np.stack([self.item_vecs[h].mean(0) for h in b.histories])
        return search_excluding(self.item_vecs, q, b.k, [set(h.tolist()) for h in b.histories])


class PairsMethod:
    """ItemCF / Swing from the train-period miners (+ the train-period q2i pairs for queries)."""

    def __init__(self, i2i: pa.Table, q2i: pa.Table, store: ItemStore, miner: str) -> None:
        t = i2i.filter(pc.equal(i2i["miner"], miner))
        self.nbrs: dict[int, list[tuple[int, float]]] = {}
        for a, b, s in zip(
            t["anchor_item_id"].to_pylist(), t["item_id"].to_pylist(), t["score"].to_pylist(), strict=True
        ):
            if a in store.index and b in store.index:
                self.nbrs.setdefault(store.index[a], []).append((store.index[b], s))
        self.q2i: dict[str, list[tuple[int, float]]] = {}
        for q, it, c in zip(
            q2i["query"].to_pylist(), q2i["item_id"].to_pylist(), q2i["clicks"].to_pylist(), strict=True
        ):
            if it in store.index:
                self.q2i.setdefault(q, []).append((store.index[it], c))

    @staticmethod
    def _top(scores: dict[int, float], k: int) -> list[int]:
        return [i for i, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]]

    def retrieve(self, b: Benchmark) -> list[list[int]]:
        if b.anchors is not None:
            return [self._top(dict(self.nbrs.get(int(a), [])), b.k) for a in b.anchors]
        if b.texts is not None:
            return [self._top(dict(self.q2i.get(q, [])), b.k) for q in b.texts]
        out = []
        for h in b.histories:
            acc: dict[int, float] = {}
            for i in h.tolist():
                for j, s in self.nbrs.get(i, []):
                    acc[j] = acc.get(j, 0.0) + s
            for i in h.tolist():
                acc.pop(i, None)
            out.append(self._top(acc, b.k))
        return out


def per_query_recall(retrieved: list[list[int]], b: Benchmark) -> np.ndarray:
    out = np.zeros(len(b))
    for i, (r, rel) in enumerate(zip(retrieved, b.relevant, strict=True)):
        hits = len(set(r[: b.k]) & rel)
        out[i] = hits / (min(len(rel), b.k) if b.capped else len(rel))
    return out


def _mean(r: np.ndarray) -> float:
    return float(np.mean(r))


def score_method(
    method, benchmarks: dict[str, Benchmark], n_boot: int, seed: int, per_query: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """{task: {recall, low, high, queries}}; `per_query` (when given) receives each task's per-query recalls."""
    from core.bootstrap import cluster_bootstrap

    out = {}
    for task, b in benchmarks.items():
        r = per_query_recall(method.retrieve(b), b)
        if per_query is not None:
            per_query[task] = r
        iv = cluster_bootstrap(_mean, {"r": r}, b.clusters, n_boot=n_boot, seed=seed)
        out[task] = {"recall": iv.estimate, "low": iv.low, "high": iv.high, "queries": len(b)}
    return out


def paired_differences(
    per_query: dict[str, dict[str, np.ndarray]],
    benchmarks: dict[str, Benchmark],
    pairs: list[tuple[str, str]],
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """{"A - B": {task: {diff, low, high, queries}}}: the mean per-query recall difference of column A over column B
    on the same queries, with a cluster-bootstrap interval (the benchmark's clusters)."""
    from core.bootstrap import cluster_bootstrap

    out: dict[str, dict[str, dict[str, float]]] = {}
    for a, b in pairs:
        if a not in per_query or b not in per_query:
            continue
        cell = {}
        for task, bench in benchmarks.items():
            if task in per_query[a] and task in per_query[b]:
                d = per_query[a][task] - per_query[b][task]
                iv = cluster_bootstrap(_mean, {"r": d}, bench.clusters, n_boot=n_boot, seed=seed)
                cell[task] = {"diff": iv.estimate, "low": iv.low, "high": iv.high, "queries": len(bench)}
        out[f"{a} - {b}"] = cell
    return out


# --------------------------------------------------------------------------------------------------------
# Methods that need models
# --------------------------------------------------------------------------------------------------------


def minilm_method(store: ItemStore, batch_size: int = 128, max_tokens: int = 64) -> EmbeddingMethod:
    """The packaged pretrained MiniLM, frozen: mean-pooled token states of the tagged item text / the query.

    When a model trained on this catalogue stored the states of MiniLM's frozen lower layers (`embedding.text_states`,
    under `store.cache_dir`), the item pass reads them and runs only the layers above: the same vectors up to the fp16
    rounding of the stored states, for the cost of those layers."""
    import torch

    from core.progress import progress
    from embedding.config import ModelConfig
    from embedding.preprocess import build_text, build_tokenizer
    from embedding.text_states import open_at_any_depth
    from embedding.towers import build_text_tower, masked_mean, minilm_sentence_encoder

    text_cfg = ModelConfig.minilm().text
    encoder = build_text_tower(text_cfg).encoder  # loaded once: the item pass and the query encoder share it
    encode = minilm_sentence_encoder(batch_size, max_tokens, model=encoder)
    texts = [build_text(r) for r in store.text_rows]
    tok = build_tokenizer(text_cfg)
    tower = open_at_any_depth(encoder, tok, max_tokens, store.cache_dir)
    if tower is None:
        return EmbeddingMethod(encode(texts), encode)
    vecs = np.zeros((len(texts), tower.hidden_size), np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # batches of similar length pad little
    bar = progress(len(texts), desc="MiniLM catalogue (stored states)", unit="items")
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            batch = [texts[r] for r in rows]
            ids, mask = tok(batch, max_tokens)
            vecs[rows] = masked_mean(tower(ids, mask, batch), mask.bool(), 1).numpy()
            bar.update(len(rows))
    bar.close()
    return EmbeddingMethod(vecs, encode, stored_states=tower.states.hits)


def model_method(
    path: Path, store: ItemStore, batch_size: int = 64, device: str = "cpu", precision: str = "fp32"
) -> EmbeddingMethod:
    from embedding.checkpoint import load_embedding_model
    from embedding.device import resolve_device
    from embedding.infer import embed_item_inputs
    from embedding.preprocess import ItemInputs, build_tokenizer
    from embedding.text_states import open_text_states

    lm = load_embedding_model(path)
    model = lm.model.to(resolve_device(device))
    tok = build_tokenizer(lm.cfg.text)
    open_text_states(model.text_tower, tok, lm.cfg.preprocess.max_text_tokens, store.cache_dir)
    d = lm.cfg.embed_dim
    inputs = store.inputs(range(len(store)), audio=lm.use_audio)
    desc = f"embed catalogue ({Path(path).parent.name}/{Path(path).name})"
    items = embed_item_inputs(model, inputs, tok, lm.cfg.preprocess, "item", batch_size, precision, desc)[d]

    def texts(qs: list[str]) -> np.ndarray:
        queries = [ItemInputs(text=q.strip()) for q in qs]
        return embed_item_inputs(model, queries, tok, lm.cfg.preprocess, "query", batch_size, precision)[d]

    return EmbeddingMethod(items, texts)


def _scaled(cfg: TrainConfig, scale: float, **changes: Any) -> TrainConfig:
    """`cfg` with every stage's steps x `scale` and `changes` applied (a "data" entry: DataConfig changes)."""
    s = {
        k: max(1, round(getattr(cfg, k) * scale)) if getattr(cfg, k) > 0 else 0
        for k in ("steps_i", "steps_ii", "steps_iii", "steps_cre")
    }
    if "data" in changes:
        changes = {**changes, "data": dataclasses.replace(cfg.data, **changes["data"])}
    return dataclasses.replace(cfg, **s, **changes)


ABLATIONS: dict[str, dict[str, Any]] = {
    "SAIL + CRE (reference)": {},
    "w/o hard negatives": {"hard_negatives": False},
    "w/o balancing": {"balancing": False},
    "w/o LLM fuser (concat)": {"fuser": False},
    "w/o audio": {"audio": False},
    "w/o word queries": {"data": {"word_queries_per_item": 0}},
}


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    out_dir: Path
    json_path: Path
    markdown_path: Path
    table: dict[str, dict[str, dict[str, float]]]  # column -> task -> {recall, low, high, queries}
    ablations: dict[str, dict[str, dict[str, float]]]  # variant -> task -> ...
    seconds: float
    paired: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # "A - B" -> task -> diff, low, high


def run_retrieval_eval(
    cfg: EvalConfig,
    data_dir: str | os.PathLike,
    pairs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    sail_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
) -> EvalResult:
    """Train what is missing, evaluate every column and ablation, write `retrieval.json` and `retrieval.md`.

    `pairs_dir`: the mine stage's period layout (training pairs, held-out ground truth); `sail_dir`: an existing
    `sail train-embedding` output (model.safetensors + model_stages_1_3.safetensors); without it SAIL is trained
    here with `cfg.train`.
    """
    import torch

    from embedding.trainer import load_training_data, resolve_model_config, train

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.train.threads)
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir / "work"
    model_cfg = resolve_model_config(cfg.train.model, cfg.train)
    data: TrainingData = load_training_data(cfg.train, data_dir, pairs_dir, work, model_cfg)
    from embedding.data import load_pairs

    prepared = load_pairs(data_dir, pairs_dir)
    store = data.store
    benchmarks = build_benchmarks(prepared, store, cfg, cfg.train.data.history_len)
    log: dict[str, Any] = {"benchmarks": {t: len(b) for t, b in benchmarks.items()}, "train": {}}

    table: dict[str, dict[str, dict[str, float]]] = {}
    per_query: dict[str, dict[str, np.ndarray]] = {}

    def add(column: str, method) -> None:
        per_query[column] = {}
        table[column] = score_method(method, benchmarks, cfg.n_boot, cfg.seed, per_query[column])

    i2i = read_table(prepared.table("train", "i2i_pairs"), K.I2I_PAIRS)
    q2i = read_table(prepared.table("train", "q2i_pairs"), K.Q2I_PAIRS)
    add("ItemCF (covisit)", PairsMethod(i2i, q2i, store, "covisit"))
    add("Swing", PairsMethod(i2i, q2i, store, "swing"))
    if cfg.minilm:
        minilm = minilm_method(store)
        log["minilm_stored_states"] = minilm.stored_states
        add(MINILM, minilm)

    def trained(name: str, tcfg: TrainConfig) -> Any:
        same_data = tcfg.data == cfg.train.data  # else (a data ablation) train builds its own sources
        res = train(
            tcfg, data_dir, out_dir / "models" / name, pairs_dir, work_dir=work, data=data if same_data else None
        )
        log["train"][name] = {
            "seconds": res.seconds,
            "pairs_per_s": res.pairs_per_s,
            "stage_losses": res.stage_losses,
            "weights": json.loads((res.out_dir / "train.json").read_text()).get("weights"),
        }
        return res

    def scored(model_path: Path, column: str | None = None) -> dict[str, dict[str, float]]:
        method = model_method(model_path, store, device=cfg.train.device, precision=cfg.train.precision)
        if column is not None:
            per_query[column] = {}
        return score_method(method, benchmarks, cfg.n_boot, cfg.seed, per_query.get(column))

    clip_cfg = dataclasses.replace(
        _scaled(cfg.train, cfg.baseline_steps_scale),
        steps_iii=0,
        steps_cre=0,
        fuser=False,
        collaborative=False,
        hard_negatives=False,
        balancing=False,
    )
    if cfg.two_tower:
        clip = trained("content_two_tower", clip_cfg)
        table[TWO_TOWER] = scored(clip.model_path, TWO_TOWER)
    if sail_dir is not None:
        sail_final, sail_content = Path(sail_dir) / "model.safetensors", Path(sail_dir) / "model_stages_1_3.safetensors"
    else:
        res = trained("sail", cfg.train)
        sail_final, sail_content = res.model_path, res.content_model_path
    table[SAIL_CONTENT] = scored(sail_content, SAIL_CONTENT)
    table[SAIL] = scored(sail_final, SAIL)
    comparisons = [(SAIL, c) for c in table if c != SAIL] + [(SAIL_CONTENT, MINILM)]
    paired = paired_differences(per_query, benchmarks, comparisons, cfg.n_boot, cfg.seed)

    ablations: dict[str, dict[str, dict[str, float]]] = {}
    if cfg.ablations:
        for label, change in ABLATIONS.items():
            if not change and cfg.ablation_scale == 1.0:
                ablations[label] = table[SAIL]
                continue
            slug = "abl_" + "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
            res = trained(slug, _scaled(cfg.train, cfg.ablation_scale, **change))
            ablations[label] = scored(res.model_path)

    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "tasks": {t: TASK_LABEL[t] for t in TASKS},
        "columns": list(table),  # column order (the JSON writer sorts keys)
        "ablation_rows": list(ablations),
        "table": table,
        "paired": paired,
        "ablations": ablations,
        "targets": check_targets(table, paired),
        "split_ts": prepared.split_ts.isoformat(),
        "pairs_dir": str(prepared.pairs_dir),
        "eval_config": dataclasses.asdict(cfg),
        "log": log,
        "seconds": time.perf_counter() - t0,
    }
    json_path, md_path = out_dir / "retrieval.json", out_dir / "retrieval.md"
    write_json_atomic(json_path, payload)
    md_path.write_text(render_markdown(table, ablations, payload["targets"], log["benchmarks"], paired))
    return EvalResult(out_dir, json_path, md_path, table, ablations, payload["seconds"], paired)


SAIL, SAIL_CONTENT = "SAIL + CRE", "SAIL stages I-III"
MINILM, TWO_TOWER = "MiniLM (pretrained, text)", "Content two-tower (CLIP-style)"
CONTENT_COLUMNS = (MINILM, TWO_TOWER, SAIL_CONTENT)
"""The columns that see only content: the cold-start row's real peers."""
COLLAB_TASKS = ("i2i_coengagement", "cold_start_i2i", "seq2item")
"""The rows collaborative training is for."""


def _above(paired: dict, a: str, b: str, task: str) -> bool | None:
    cell = paired.get(f"{a} - {b}", {}).get(task)
    return None if cell is None else bool(cell["low"] > 0)


def check_targets(
    table: dict[str, dict[str, dict[str, float]]], paired: dict[str, dict[str, dict[str, float]]]
) -> dict[str, Any]:
    """The retrieval targets, each read from a paired interval (met = the whole interval on the right side of 0):

    - cre_over_content_stages: SAIL + CRE above SAIL stages I-III on each collaborative row;
    - cre_over_minilm: SAIL + CRE above the pretrained MiniLM on each collaborative row;
    - content_stages_keep_minilm: SAIL stages I-III no worse than MiniLM on any row (interval reaches 0 or above);
    - cold_start_over_content: SAIL + CRE above every content column (MiniLM, two-tower, stages I-III) on cold start.
    Targets whose columns were not evaluated are left out.
    """
    out: dict[str, Any] = {}
    for name, other in (("cre_over_content_stages", SAIL_CONTENT), ("cre_over_minilm", MINILM)):
        checks = {t: _above(paired, SAIL, other, t) for t in COLLAB_TASKS}
        checks = {t: v for t, v in checks.items() if v is not None}
        if checks:
            out[name] = {"met": all(checks.values()), "per_task": checks}
    keep = paired.get(f"{SAIL_CONTENT} - {MINILM}", {})
    if keep:
        checks = {t: bool(c["high"] >= 0) for t, c in keep.items()}
        out["content_stages_keep_minilm"] = {"met": all(checks.values()), "per_task": checks}
    cold = {c: _above(paired, SAIL, c, "cold_start_i2i") for c in CONTENT_COLUMNS if c in table}
    cold = {c: v for c, v in cold.items() if v is not None}
    if cold:
        out["cold_start_over_content"] = {"met": all(cold.values()), "per_column": cold}
    return out


def _cell(v: dict[str, float] | None) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v['recall']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def _diff_cell(v: dict[str, float] | None) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"


def render_markdown(table, ablations, targets, counts, paired=None) -> str:
    cols = list(table)
    tasks = [t for t in TASKS if any(t in table[c] for c in cols)]
    lines = ["# Retrieval evaluation (Recall x 100, bootstrap 95% interval)", ""]
    lines.append("| task (queries) | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for t in tasks:
        lines.append(
            f"| {TASK_LABEL[t]} ({counts.get(t, 0)}) | " + " | ".join(_cell(table[c].get(t)) for c in cols) + " |"
        )
    if paired:
        lines += ["", "## Paired differences (same queries; Recall x 100, cluster-bootstrap 95% interval)", ""]
        names = list(paired)
        lines.append("| task | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for t in tasks:
            lines.append(f"| {TASK_LABEL[t]} | " + " | ".join(_diff_cell(paired[n].get(t)) for n in names) + " |")
    if ablations:
        lines += ["", "## Ablations (SAIL + CRE variants)", ""]
        lines.append("| variant | " + " | ".join(TASK_LABEL[t] for t in tasks) + " |")
        lines.append("|---" * (len(tasks) + 1) + "|")
        for v, res in ablations.items():
            lines.append(f"| {v} | " + " | ".join(_cell(res.get(t)) for t in tasks) + " |")
    lines += ["", "## Targets (each from a paired interval)", ""]
    for t, r in targets.items():
        per = r.get("per_task") or r.get("per_column") or {}
        detail = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in per.items())
        lines.append(f"- {t}: {'MET' if r['met'] else 'NOT met'} ({detail})")
    lines += [
        "",
        "ItemCF / Swing cannot score items without training-period pairs (cold-start anchors, unseen queries): "
        "those queries get an empty list (recall 0); the cold-start row is judged against the content columns.",
        "",
    ]
    return "\n".join(lines)
