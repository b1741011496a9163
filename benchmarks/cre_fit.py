"""Does CRE fit the co-engagement pairs it trains on? Recall@50 of the training period's co-visitation pairs with
a run's stage I-III model and with its final (CRE) model.

For up to --anchors anchor items of the train-period `covisit` i2i pairs (the CRE source), the share of each
anchor's mined positives among its 50 nearest catalogue items (itself excluded) by each model's vectors. A model
that learned the collaborative pairs ranks them near the top; the held-out co-engagement Recall@50 of the
retrieval table can only follow from here.

    python benchmarks/cre_fit.py --run-dir runs/demo [--config demo] [--anchors 1000]

Writes benchmarks/results/cre_fit.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine  # noqa: E402
from embedding.data import ItemStore, PreparedData, load_pairs  # noqa: E402
from embedding.retrieval_eval import K, model_method, read_table, search_excluding  # noqa: E402
from embedding.trainer import TrainConfig, load_training_data, resolve_model_config  # noqa: E402
from jobs.pipeline import embedding_train_config, load_config  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "cre_fit.json"
MODELS = {"SAIL stages I-III": "model_stages_1_3.safetensors", "SAIL + CRE": "model.safetensors"}


def run_embedding_data(run_dir: Path, tcfg: TrainConfig) -> tuple[ItemStore, PreparedData]:
    """The item store and the mined pairs of a finished `sail run`: the mine stage's output and the embedding
    stage's own catalogue cache (`work/train_embedding-*/cache`), so nothing is mined or preprocessed again."""
    works = sorted(glob.glob(str(run_dir / "work" / "train_embedding-*")))
    if not works:
        raise SystemExit(f"{run_dir}: no work/train_embedding-* directory (run `sail run` first)")
    work, data_dir, pairs = Path(works[-1]) / "cache", run_dir / "validate", run_dir / "mine"
    store = load_training_data(tcfg, data_dir, pairs, work, resolve_model_config(tcfg.model, tcfg)).store
    return store, load_pairs(data_dir, pairs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a finished `sail run` directory")
    p.add_argument("--config", default="demo", help="the run's config (its embedding section)")
    p.add_argument("--anchors", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    store, prepared = run_embedding_data(args.run_dir, embedding_train_config(load_config(args.config)))
    pairs = read_table(prepared.table("train", "i2i_pairs"), K.I2I_PAIRS)
    cov = pairs.filter(pc.equal(pairs["miner"], "covisit"))
    positives: dict[int, set[int]] = {}
    for a, i in zip(cov["anchor_item_id"].to_pylist(), cov["item_id"].to_pylist(), strict=True):
        if a in store.index and i in store.index:
            positives.setdefault(store.index[a], set()).add(store.index[i])
    keys = np.array(sorted(positives))
    anchors = np.sort(np.random.default_rng(args.seed).choice(keys, min(args.anchors, keys.size), replace=False))
    recall = {}
    for name, file in MODELS.items():
        m = model_method(args.run_dir / "train_embedding" / file, store)
        got = search_excluding(m.item_vecs, m.item_vecs[anchors], 50, [{int(a)} for a in anchors])
        per = [len(set(g) & positives[int(a)]) / len(positives[int(a)]) for a, g in zip(anchors, got, strict=True)]
        recall[name] = round(100 * float(np.mean(per)), 2)
        print(f"{name}: train-period covisit Recall@50 {recall[name]}", flush=True)
    result = {
        "benchmark": "cre_fit",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine("torch"),
        "run_dir": str(args.run_dir),
        "config": args.config,
        "anchors": int(anchors.size),
        "positives_per_anchor": round(float(np.mean([len(positives[int(a)]) for a in anchors])), 2),
        "train_covisit_recall_at_50": recall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
