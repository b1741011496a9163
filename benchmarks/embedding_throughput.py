"""Embedding throughput on this machine: training pairs/s (one staged-trainer step = forward + backward + AdamW on B
item pairs, the i2i path) and inference items/s (eval-mode forward, batch loop), for the tiny and cpu_default
model configs at torch threads 1 and 2. Items come from the tiny generated world (preprocessed once, outside the
timings). Results go to benchmarks/results/embedding_throughput.json with a machine description (CPU, cores, load
average at the start and end, torch version), because the machine is shared and load changes the figures.

    .venv/bin/python benchmarks/embedding_throughput.py [--world DIR] [--steps 6] [--batch-size 16] [--items 128]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def machine() -> dict:
    try:
        from benchmarks.machine import describe_machine
    except ImportError:  # run as a script from another directory
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks.machine import describe_machine
    return describe_machine("torch", "transformers", "faiss")


def bench(model_name: str, threads: int, store, steps: int, batch: int, n_items: int) -> dict:
    from embedding.infer import embed_item_inputs
    from embedding.preprocess import build_tokenizer, collate_items
    from embedding.trainer import SailTrain, TrainBatch, TrainConfig, build_embedding_model, resolve_model_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TrainConfig(model=model_name)
    mcfg = resolve_model_config(model_name, cfg)
    model = build_embedding_model(mcfg)
    tok = build_tokenizer(mcfg.text)
    wrapper = SailTrain(model, ["i2i"], None, cfg)
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    times = []
    for s in range(steps + 1):  # step 0 warms caches (frozen text tower) and allocators, not timed
        rows = rng.choice(len(store), size=2 * batch, replace=False)
        t0 = time.perf_counter()
        b = TrainBatch(
            source="i2i",
            kind="item",
            target=collate_items(store.inputs(rows[:batch]), tok, mcfg.preprocess),
            query=collate_items(store.inputs(rows[batch:]), tok, mcfg.preprocess),
        )
        loss, _ = wrapper(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s:
            times.append(time.perf_counter() - t0)
    inputs = store.inputs(range(min(n_items, len(store))))
    embed_item_inputs(model, inputs[:16], tok, mcfg.preprocess, "item", 16)  # warm-up
    t0 = time.perf_counter()
    embed_item_inputs(model, inputs, tok, mcfg.preprocess, "item", 64)
    infer_s = time.perf_counter() - t0
    return {
        "model": model_name,
        "threads": threads,
        "batch_pairs": batch,
        "train_pairs_per_s": batch * len(times) / sum(times),
        "infer_items_per_s": len(inputs) / infer_s,
        "infer_items": len(inputs),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=Path, default=None)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--items", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embedding_throughput.json")
    args = p.parse_args()
    from embedding.config import ModelConfig
    from embedding.data import build_item_store
    from jobs import contracts as K
    from jobs.io import read_table

    world = args.world
    if world is None:
        from offline_eval.world import WorldConfig, generate_world

        world = Path(tempfile.mkdtemp()) / "tiny"
        generate_world(WorldConfig.for_size("tiny", seed=7), world)
    info = machine()
    items = read_table(world / "items", K.ITEMS).slice(0, max(args.items, 2 * args.batch_size))
    store = build_item_store(items, world / "media", ModelConfig.tiny().preprocess)
    results = [
        bench(m, t, store, args.steps, args.batch_size, args.items) for m in ("tiny", "cpu_default") for t in (1, 2)
    ]
    info["load_average_at_end"] = list(os.getloadavg())
    out = {"machine": info, "results": results, "note": "shared machine: other jobs ran concurrently; see load_avg"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
