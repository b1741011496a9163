"""Benchmark: how much of the held-out co-engagement can content that shows the collaborative latent explain, as the
world's users weigh that latent more?

For each value of the response model's `w_collab` (the weight of the user . item collaborative dot product in a
user's utility; `sources.world.response.ResponseParams`), the demo config's world (same seed, same
`collab_in_content` and `quality_in_frames`) is generated, validated and mined (`sail run --until mine`, one run
directory per value), and the co-engagement Recall@50 of vectors built from the world's truth is measured on the
held-out period, as `benchmarks/collab_in_content.py` does:

- topics only: [topics], what a perfect content model that reads no collaborative cue could reach;
- topics + the visible part: [topics | w x (the sound and style latents that audio and frames show)];
- topics + the whole latent: [topics | w x (the item's whole collaborative latent)];

each weight w picked on the benchmark itself (an optimistic bound), and Swing on the same queries. The gap between
the first two rows bounds what collaborative training of a content model can add on co-engagement in that world.

    python benchmarks/world_collab_weight.py [--values 0.9,2,3] [--runs runs/world_collab_weight]

Writes benchmarks/results/world_collab_weight.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "world_collab_weight.json"


def value_row(run_dir: Path, cfg) -> dict:
    import pyarrow.parquet as pq

    from benchmarks.collab_in_content import truth_ceiling
    from benchmarks.retrieval_ceiling import truth_vectors
    from embedding.data import load_pairs
    from embedding.retrieval_eval import (
        EmbeddingMethod,
        EvalConfig,
        K,
        PairsMethod,
        build_benchmarks,
        read_table,
        score_method,
    )
    from embedding.trainer import load_training_data, resolve_model_config
    from jobs.pipeline import embedding_train_config

    tcfg = dataclasses.replace(embedding_train_config(cfg), model="tiny")  # the store only: no model is trained
    prepared = load_pairs(run_dir / "validate", run_dir / "mine")
    data = load_training_data(tcfg, run_dir / "validate", run_dir / "mine", run_dir / "cache",
                              resolve_model_config(tcfg.model, tcfg))  # fmt: skip
    ecfg = EvalConfig(train=tcfg, max_queries=cfg.retrieval.max_queries, n_boot=cfg.retrieval.n_boot)
    b = build_benchmarks(prepared, data.store, ecfg)["i2i_coengagement"]
    ceiling = truth_ceiling(run_dir, data.store, {"i2i_coengagement": b}, ecfg.n_boot)
    truth = pq.read_table(run_dir / "data" / "truth" / "item_truth").to_pydict()
    n = len(data.store)
    topics = [[] for _ in range(n)]
    for i, ts in zip(truth["item_id"], truth["topics"], strict=True):
        r = data.store.index.get(int(i))
        if r is not None:
            topics[r] = list(ts or [])
    zeros = np.zeros(n)
    no_text = lambda qs: np.zeros((len(qs), 1), np.float32)  # noqa: E731 (anchor queries only)
    topic_vecs = truth_vectors(topics, np.ones((n, 1)), zeros, zeros, 0.0, 0.0, 0.0)
    only = score_method(EmbeddingMethod(topic_vecs, no_text), {"t": b}, ecfg.n_boot, 0)["t"]
    i2i = read_table(prepared.table("train", "i2i_pairs"), K.I2I_PAIRS)
    q2i = read_table(prepared.table("train", "q2i_pairs"), K.Q2I_PAIRS)
    swing = score_method(PairsMethod(i2i, q2i, data.store, "swing"), {"t": b}, ecfg.n_boot, 0)["t"]
    return {"queries": len(b), "topics_only": only, "swing": swing, **ceiling}


def markdown(payload: dict) -> str:
    def cell(c: dict) -> str:
        return f"{100 * c['recall']:.1f} [{100 * c['low']:.1f}, {100 * c['high']:.1f}]"

    lines = [
        "# Co-engagement the content could explain, by how much users weigh the collaborative latent",
        "",
        f"Config `{payload['config']}`'s world (collab_in_content {payload['collab_in_content']}), seed "
        f"{payload['seed']}, commit {payload['machine']['code']['commit'][:7]}; held-out co-engagement Recall@50 x 100 "
        "(bootstrap 95% interval) of truth vectors, weights picked on the benchmark itself.",
        "",
        "| w_collab | queries | Swing | topics only | topics + visible part | topics + whole latent "
        "| visible - topics |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["values"]:
        gap = 100 * (r["topics + visible collab"]["recall"] - r["topics_only"]["recall"])
        lines.append(
            f"| {r['w_collab']:g} | {r['queries']} | {cell(r['swing'])} | {cell(r['topics_only'])} | "
            f"{cell(r['topics + visible collab'])} | {cell(r['topics + whole collab'])} | {gap:+.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import jobs.pipeline as P

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="demo")
    p.add_argument("--values", default="0.9,2,3", help="w_collab values (0.9 is the world's default)")
    p.add_argument("--runs", type=Path, default=Path("runs/world_collab_weight"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    base = P.load_config(args.config)
    plain_world = P._world
    rows = []
    for w in (float(x) for x in args.values.split(",") if x):

        def world(d, w=w):
            cfg = plain_world(d)
            return dataclasses.replace(cfg, response=dataclasses.replace(cfg.response, w_collab=w))

        run_dir = args.runs / f"w_{w:g}"
        cfg = dataclasses.replace(base, run_dir=str(run_dir))
        with mock.patch.object(P, "_world", world):
            P.run_pipeline(cfg, until="mine")
        rows.append({"w_collab": w, **value_row(run_dir.resolve(), cfg)})
        print({k: v for k, v in rows[-1].items() if k in ("w_collab", "queries")}, flush=True)
    payload = {
        "benchmark": "world_collab_weight",
        "machine": describe_machine("torch"),
        "config": args.config,
        "seed": base.data.seed,
        "collab_in_content": base.data.collab_in_content,
        "values": rows,
    }
    write_results(args.out, payload, markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
