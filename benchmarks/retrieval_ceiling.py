"""How far can any item embedding go on the retrieval table's co-engagement and q2i rows of a generated world?

The generated world keeps its hidden truth (`truth/item_truth`: each item's topics, collaborative latent and
quality). This probe builds item vectors from that truth, which no trained model can know better, and scores them
on the same held-out benchmarks as `sail eval-retrieval`:

- co-engagement i2i Recall@50: truth vectors [topics | w_c * collaborative latent | w_q * quality |
  w_p * train-period popularity], over a small weight grid. The best cell is picked on the benchmark itself, so
  it is an optimistic ceiling for single-vector inner-product retrieval in this world.
- co-engagement i2i Recall@50 of learned collaborative vectors, which need no content at all: the truncated SVD
  of the train-period user x item positive matrix (SAIL's id2item target, d_id dims) and the truncated SVD of the
  items' positive-PMI co-occurrence matrix (over users; the best of PPMI_DIMS, picked on the benchmark); and, as
  a reference that is not a single vector, the full user-level co-occurrence cosine between every two items.
- q2i Recall@50: the search engine's own lexical rule (items ranked by how many distinct query words their title
  and tags contain, ties broken by train-period popularity), which is how the world's results were produced.

ItemCF / Swing and the run's SAIL models are scored on the same queries in the same run.

    python benchmarks/retrieval_ceiling.py --run-dir runs/demo [--config demo]

Writes benchmarks/results/retrieval_ceiling.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "retrieval_ceiling.json"
GRID = {"collab": (0.0, 0.2, 0.4, 0.6, 1.0), "quality": (0.0, 0.2), "popularity": (0.0, 0.1, 0.2, 0.3)}
PPMI_DIMS = (64, 128, 256)
_WORD = re.compile(r"[a-z0-9]+")


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def truth_vectors(
    topics: list[list[int]],
    collab: np.ndarray,
    quality: np.ndarray,
    popularity: np.ndarray,
    w_collab: float,
    w_quality: float,
    w_popularity: float,
) -> np.ndarray:
    """(N, T + D + 2) item vectors from the world's truth, one row per item.

    topics: per item its topic ids (primary first, weight 1; the others 0.5), the block L2-normalised (zero for an
    item without topics); collab: (N, D) collaborative latents, L2-normalised then scaled by w_collab; quality and
    popularity: (N,) standardised over the items, scaled by their weights.
    """
    n = len(topics)
    n_topics = 1 + max((t for ts in topics for t in ts), default=-1)
    block = np.zeros((n, max(n_topics, 1)), np.float64)
    for i, ts in enumerate(topics):
        for j, t in enumerate(ts):
            block[i, t] = 1.0 if j == 0 else 0.5
    block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    c = np.asarray(collab, np.float64)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    extra = np.stack([w_quality * _standardise(np.asarray(quality, np.float64)),
                      w_popularity * _standardise(np.asarray(popularity, np.float64))], axis=1)  # fmt: skip
    return np.hstack([block, w_collab * c, extra]).astype(np.float32)


def ppmi_svd_vectors(binary, dim: int, seed: int = 0) -> np.ndarray:
    """(N, dim) item vectors: truncated SVD (factors U * sqrt(S)) of the positive PMI of the item co-occurrence
    counts C = B^T B (diagonal zeroed) of a (U, N) 0/1 user x item matrix; PPMI_ij = max(0, log(C_ij * sum(C) /
    (c_i * c_j))) with c_i the row sums of C, 0 where C_ij = 0."""
    import scipy.sparse as sp

    from embedding.data import svd_factors

    c = sp.csr_matrix(binary, dtype=np.float64)
    c = (c.T @ c).tocoo()
    keep = c.row != c.col
    rows, cols, vals = c.row[keep], c.col[keep], c.data[keep]
    n = binary.shape[1]
    marg = np.bincount(rows, weights=vals, minlength=n)
    pmi = np.log(vals * vals.sum() / (marg[rows] * marg[cols]))
    pos = pmi > 0
    return svd_factors(sp.csr_matrix((pmi[pos], (rows[pos], cols[pos])), shape=(n, n)), dim, seed)


def cooccurrence_cosine_retrieve(binary, anchors: np.ndarray, k: int) -> list[list[int]]:
    """Per anchor item, the k other items with the highest cosine between their user sets (columns of the 0/1 user x
    item matrix `binary`); ties: lower item row first."""
    import scipy.sparse as sp

    b = sp.csc_matrix(binary, dtype=np.float64)
    norms = np.sqrt(np.asarray(b.multiply(b).sum(0)).ravel())
    out = []
    for a in np.asarray(anchors).tolist():
        co = np.asarray((b.T @ b[:, a]).todense()).ravel()
        s = co / np.maximum(norms * norms[a], 1e-12)
        s[a] = -np.inf
        out.append(np.argsort(-s, kind="stable")[:k].tolist())
    return out


def lexical_retrieve(queries: list[str], item_words: list[set[str]], popularity: np.ndarray, k: int) -> list[list[int]]:
    """Per query, the k items with the most distinct query words in their title / tags (ties: more popular first,
    then lower row)."""
    vocab: dict[str, list[int]] = {}
    for i, words in enumerate(item_words):
        for w in words:
            vocab.setdefault(w, []).append(i)
    pop = np.asarray(popularity, np.float64)
    tie = (pop - pop.min()) / max(pop.max() - pop.min(), 1e-12) * 0.5  # < 1: never outranks one more word
    out = []
    for q in queries:
        score = tie.copy()
        for w in set(_WORD.findall(q.lower())):
            score[vocab.get(w, [])] += 1.0
        out.append(np.argsort(-score, kind="stable")[:k].tolist())
    return out


def item_words(text_rows: list[dict]) -> list[set[str]]:
    """Lower-cased words of each item's title and tags."""
    return [
        set(_WORD.findall(str(r.get("title") or "").lower()))
        | set(_WORD.findall(" ".join(r.get("tags") or []).lower()))
        for r in text_rows
    ]


def _cell(r: dict) -> str:
    return f"{100 * r['recall']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# Retrieval ceiling of the generated world (Recall x 100, bootstrap 95% interval)",
        "",
        "| method | i2i co-engagement R@50 | q2i R@50 |",
        "|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {_cell(r['i2i_coengagement']) if 'i2i_coengagement' in r else '-'} | "
                     f"{_cell(r['q2i']) if 'q2i' in r else '-'} |")  # fmt: skip
    best = result["truth_grid_best"]
    lines += [
        "",
        f"Truth vectors: best of {len(result['truth_grid'])} weight settings picked on the benchmark itself "
        f"(collab {best['collab']}, quality {best['quality']}, popularity {best['popularity']}).",
        f"Co-engagement target (best baseline + 5 points): {result['coengagement_target']:.1f}; "
        f"the truth-vector ceiling is {result['coengagement_ceiling']:.1f}.",
    ]
    if "ppmi_dims" in result:
        dims = result["ppmi_dims"]
        lines.append(
            f"Item PPMI SVD at d = {' / '.join(dims)}: {' / '.join(f'{r:.1f}' for r in dims.values())} "
            "(the best is the row above, picked on the benchmark itself)."
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import polars as pl
    import scipy.sparse as sp

    from benchmarks.cre_fit import run_embedding_data
    from embedding.data import id2item_source, positive_matrix, svd_item_id_table
    from embedding.retrieval_eval import (
        EmbeddingMethod,
        EvalConfig,
        K,
        PairsMethod,
        build_benchmarks,
        model_method,
        per_query_recall,
        read_table,
        score_method,
    )
    from jobs.pipeline import embedding_train_config, load_config
    from mining.mine_pairs import scan_contract_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a finished `sail run` directory of a generated world")
    p.add_argument("--config", default="demo", help="the run's config (its embedding and retrieval sections)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    tcfg = embedding_train_config(cfg)
    truth_dir = args.run_dir / "data" / "truth" / "item_truth"
    if not truth_dir.exists():
        raise SystemExit(f"{args.run_dir}: needs data/truth/item_truth (a generated-world run)")
    store, prepared = run_embedding_data(args.run_dir, tcfg)
    ecfg = EvalConfig(train=tcfg, max_queries=cfg.retrieval.max_queries, n_boot=cfg.retrieval.n_boot)
    bench = {t: b for t, b in build_benchmarks(prepared, store, ecfg).items() if t in ("i2i_coengagement", "q2i")}

    truth = read_table(truth_dir, K.ITEM_TRUTH).to_pydict()
    n = len(store)
    topics, collab, quality = [[] for _ in range(n)], np.zeros((n, len(truth["collab_latent"][0]))), np.zeros(n)
    for i, ts, c, q in zip(truth["item_id"], truth["topics"], truth["collab_latent"], truth["quality"], strict=True):
        r = store.index.get(int(i))
        if r is not None:
            topics[r], collab[r], quality[r] = list(ts or []), c, q
    counts = (
        scan_contract_table(prepared.data_dir / "interactions", K.INTERACTIONS)
        .filter(pl.col("ts") < prepared.split_ts)  # train-period popularity
        .group_by("item_id")
        .agg(pl.len().alias("n"))
        .collect()
    )
    popularity = np.zeros(n)
    for i, c in zip(counts["item_id"].to_list(), counts["n"].to_list(), strict=True):
        if int(i) in store.index:
            popularity[store.index[int(i)]] = np.log1p(c)

    def score(method, tasks=("i2i_coengagement", "q2i")) -> dict:
        return score_method(method, {t: bench[t] for t in tasks}, ecfg.n_boot, ecfg.seed)

    rows: dict[str, dict] = {}
    i2i = read_table(prepared.table("train", "i2i_pairs"), K.I2I_PAIRS)
    q2i = read_table(prepared.table("train", "q2i_pairs"), K.Q2I_PAIRS)
    for miner, name in (("covisit", "ItemCF (covisit)"), ("swing", "Swing")):
        rows[name] = score(PairsMethod(i2i, q2i, store, miner))
    for name, file in (("SAIL stages I-III", "model_stages_1_3.safetensors"), ("SAIL + CRE", "model.safetensors")):
        rows[name] = score(model_method(args.run_dir / "train_embedding" / file, store))
    print({k: round(100 * v["i2i_coengagement"]["recall"], 1) for k, v in rows.items()}, flush=True)

    b = bench["i2i_coengagement"]
    no_text = lambda qs: np.zeros((len(qs), 1), np.float32)  # noqa: E731 (anchor queries only)
    grid = []
    for wc, wq, wp in itertools.product(GRID["collab"], GRID["quality"], GRID["popularity"]):
        vecs = truth_vectors(topics, collab, quality, popularity, wc, wq, wp)
        r = float(per_query_recall(EmbeddingMethod(vecs, no_text).retrieve(b), b).mean())
        grid.append({"collab": wc, "quality": wq, "popularity": wp, "recall": round(100 * r, 2)})
    best = max(grid, key=lambda g: g["recall"])
    topic_only = next(g for g in grid if g["collab"] == g["quality"] == g["popularity"] == 0)
    vecs = truth_vectors(topics, collab, quality, popularity, best["collab"], best["quality"], best["popularity"])
    rows["truth: topics only"] = score(
        EmbeddingMethod(truth_vectors(topics, collab, quality, popularity, 0, 0, 0), no_text), ("i2i_coengagement",)
    )
    rows["truth: best weights"] = score(EmbeddingMethod(vecs, no_text), ("i2i_coengagement",))

    # learned collaborative vectors (no content): SAIL's id2item target and item PPMI-SVD; the full cosine for scale
    _, items, m = positive_matrix(prepared.data_dir / "interactions", prepared.positive, prepared.split_ts)
    id_table = svd_item_id_table(items, m, tcfg.data.id_dim, tcfg.seed)  # what the trainer's id2item task uses
    rows[f"collaborative: user x item SVD (d={id_table.dim}, SAIL's id2item target)"] = score(
        EmbeddingMethod(id2item_source(id_table, store)[1], no_text), ("i2i_coengagement",)
    )
    col_row = np.array([store.index.get(int(i), -1) for i in items.tolist()])  # matrix column -> store row
    coo = m.tocoo()
    keep = col_row[coo.col] >= 0
    binary = sp.csr_matrix(
        (np.ones(int(keep.sum())), (coo.row[keep], col_row[coo.col[keep]])), shape=(m.shape[0], n)
    )  # (users, N) 0/1 over store rows
    ppmi_vecs = {d: EmbeddingMethod(ppmi_svd_vectors(binary, d, tcfg.seed), no_text) for d in PPMI_DIMS}
    ppmi = {d: float(per_query_recall(method.retrieve(b), b).mean()) for d, method in ppmi_vecs.items()}
    best_dim = max(ppmi, key=ppmi.get)
    rows[f"collaborative: item PPMI SVD (d={best_dim})"] = score(ppmi_vecs[best_dim], ("i2i_coengagement",))

    class Cosine:
        def retrieve(self, bm):
            return cooccurrence_cosine_retrieve(binary, bm.anchors, bm.k)

    rows["user co-occurrence cosine (all items, not one vector)"] = score(Cosine(), ("i2i_coengagement",))

    class Lexical:
        def retrieve(self, bm):
            return lexical_retrieve(bm.texts, item_words(store.text_rows), popularity, bm.k)

    rows["lexical (the engine's rule)"] = score(Lexical(), ("q2i",))
    baseline = max(rows[c]["i2i_coengagement"]["recall"] for c in ("ItemCF (covisit)", "Swing"))
    result = {
        "benchmark": "retrieval_ceiling",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine("torch"),
        "run_dir": str(args.run_dir),
        "config": args.config,
        "queries": {t: len(bm) for t, bm in bench.items()},
        "rows": rows,
        "truth_grid": grid,
        "truth_grid_best": best,
        "truth_topics_only": topic_only["recall"],
        "coengagement_target": 100 * baseline + 5,
        "coengagement_ceiling": 100 * rows["truth: best weights"]["i2i_coengagement"]["recall"],
        "ppmi_dims": {str(d): round(100 * r, 2) for d, r in ppmi.items()},
    }
    write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
