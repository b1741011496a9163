"""Embedding throughput: training pairs/s (one staged-trainer step = collate + forward + backward + AdamW on B item
pairs, the i2i path) and inference items/s (eval-mode forward, batch loop), per model config, device, precision,
torch threads and batch size. Items come from the tiny generated world (preprocessed once, outside the timings).
The simpler peer runs in the same process: the packaged MiniLM text encoder alone, forward only (no grad,
mean-pooled, the retrieval table's MiniLM column), items/s over the same items at each thread count; with
`--no-peer` it is left out. Results go to a JSON file (default benchmarks/results/embedding_throughput.json) and its
Markdown twin, with a machine description (CPU, cores, GPU, load average at the start and end, torch version).

    .venv/bin/python benchmarks/embedding_throughput.py [--world DIR] [--steps 6] [--batch-sizes 16] [--items 128]
        [--models tiny,minilm,cpu_default] [--devices cpu] [--precisions fp32] [--cpu-precisions fp32] [--threads 1,2]
        [--text-dir DIR --no-pretrained-weights] [--no-peer] [--out FILE]

On a CUDA machine (`--devices cpu,cuda --precisions fp32,bf16`) every CUDA step ends with a synchronize, so the
clock reads finished work; CPU rows run in the same process as the simpler peer. `--text-dir` points the
cpu_default text tower at another local MiniLM directory; with `--no-pretrained-weights` only its config and
tokenizer are read and the weights are random (same shapes, same work per step), for machines where the packaged
weights are not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from benchmarks.machine import describe_machine, write_results  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_config(name: str, text_dir: str | None):
    from embedding.trainer import TrainConfig, resolve_model_config

    mcfg = resolve_model_config(name, TrainConfig(model=name))
    if text_dir is not None and mcfg.text.load_dir is not None:
        mcfg = dataclasses.replace(mcfg, text=dataclasses.replace(mcfg.text, load_dir=text_dir))
    return mcfg


def text_weights(mcfg, pretrained: bool) -> str:
    """What the text tower's weights were: a tiny random tower, a loaded checkpoint, or its architecture only."""
    from embedding.config import MINILM_SENTINEL

    if mcfg.text.load_dir is None:
        return "tiny random tower"
    name = "packaged MiniLM" if mcfg.text.load_dir == MINILM_SENTINEL else Path(mcfg.text.load_dir).name
    return f"loaded ({name})" if pretrained else "random, same architecture"


def bench(
    model_name: str,
    device: str,
    precision: str,
    threads: int,
    store,
    steps: int,
    batch: int,
    n_items: int,
    text_dir: str | None = None,
    pretrained: bool = True,
) -> dict:
    from embedding.device import autocast, resolve_device
    from embedding.infer import embed_item_inputs
    from embedding.model import build_embedding_model
    from embedding.preprocess import build_tokenizer, collate_items
    from embedding.trainer import SailTrain, TrainBatch, TrainConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = resolve_device(device)
    cfg = TrainConfig(model=model_name)
    mcfg = model_config(model_name, text_dir)
    model = build_embedding_model(mcfg, load_weights=pretrained)
    tok = build_tokenizer(mcfg.text)
    wrapper = SailTrain(model, ["i2i"], None, cfg).to(dev)
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    times = []
    for s in range(steps + 1):  # step 0 warms caches (frozen text tower), allocators and kernels, not timed
        rows = rng.choice(len(store), size=2 * batch, replace=len(store) < 2 * batch)
        _sync(dev)
        t0 = time.perf_counter()
        b = TrainBatch(
            source="i2i",
            kind="item",
            target=collate_items(store.inputs(rows[:batch]), tok, mcfg.preprocess),
            query=collate_items(store.inputs(rows[batch:]), tok, mcfg.preprocess),
        ).to(dev)
        with autocast(dev, precision):
            loss, _ = wrapper(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(dev)
        if s:
            times.append(time.perf_counter() - t0)
    if not np.isfinite(float(loss.detach())):
        raise RuntimeError(f"{model_name} on {device} in {precision}: the training loss is not finite")
    inputs = store.inputs(range(min(n_items, len(store))))
    embed_item_inputs(model, inputs[:16], tok, mcfg.preprocess, "item", 16, precision)  # warm-up
    for m in model.modules():  # a frozen text tower's state cache, filled by the training steps: a catalogue
        if hasattr(m, "_cache"):  # embedded in a new process starts empty, so the timing starts empty too
            m._cache.clear()
    t0 = time.perf_counter()
    embed_item_inputs(model, inputs, tok, mcfg.preprocess, "item", 64, precision)  # ends with .cpu(): synchronised
    infer_s = time.perf_counter() - t0
    return {
        "model": model_name,
        "device": str(dev),
        "precision": precision,
        "threads": threads,
        "batch_pairs": batch,
        "train_pairs_per_s": batch * len(times) / sum(times),
        "infer_items_per_s": len(inputs) / infer_s,
        "infer_items": len(inputs),
        "text_weights": text_weights(mcfg, pretrained),
    }


def minilm_peer(store, threads: int, n_items: int) -> dict:
    """The simpler peer: the packaged MiniLM, frozen, forward only (eval, no grad), mean-pooled item text; the
    model is loaded and warmed up before the clock starts."""
    from embedding.preprocess import build_text
    from embedding.towers import minilm_sentence_encoder

    torch.set_num_threads(threads)
    n = min(n_items, len(store))
    texts = [build_text(r) for r in store.text_rows[:n]]
    encode = minilm_sentence_encoder(batch_size=64)
    encode(texts[:8])  # warm-up
    t0 = time.perf_counter()
    vecs = encode(texts)
    infer_s = time.perf_counter() - t0
    assert len(vecs) == n
    return {
        "model": "MiniLM forward-only (peer)",
        "device": "cpu",
        "precision": "fp32",
        "threads": threads,
        "batch_pairs": 0,
        "train_pairs_per_s": float("nan"),
        "infer_items_per_s": n / infer_s,
        "infer_items": n,
        "text_weights": "loaded (packaged MiniLM), no training",
    }


def markdown(out: dict) -> str:
    m = out["machine"]
    lines = [
        "# Embedding throughput",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores{', ' + m['gpu'] if m.get('gpu') else ''}; torch {m['torch']}.",
        "",
        "| model | device | precision | threads | batch | train pairs/s | infer items/s | text weights |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out["results"]:
        train = "-" if r["batch_pairs"] == 0 else f"{r['train_pairs_per_s']:.1f}"
        lines.append(
            f"| {r['model']} | {r['device']} | {r['precision']} | {r['threads']} | {r['batch_pairs'] or '-'} "
            f"| {train} | {r['infer_items_per_s']:.1f} | {r['text_weights']} |"
        )
    return "\n".join(lines) + "\n"


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=Path, default=None, help="a generated world (default: the tiny one, made here)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-sizes", type=_csv(int), default=[16])
    p.add_argument("--items", type=int, default=128)
    p.add_argument("--models", type=_csv(str), default=["tiny", "minilm", "cpu_default"])
    p.add_argument("--devices", type=_csv(str), default=["cpu"])
    p.add_argument("--precisions", type=_csv(str), default=["fp32"], help="precisions of the CUDA rows")
    p.add_argument("--cpu-precisions", type=_csv(str), default=["fp32"], help="of the CPU rows (bf16 is slow on CPUs)")
    p.add_argument("--threads", type=_csv(int), default=[1, 2], help="CPU rows: each count; CUDA rows: the first")
    p.add_argument("--text-dir", default=None, help="local MiniLM directory for the cpu_default text tower")
    p.add_argument("--no-pretrained-weights", action="store_true", help="random text-tower weights (same shapes)")
    p.add_argument("--no-peer", action="store_true", help="leave out the MiniLM forward-only peer rows")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embedding_throughput.json")
    args = p.parse_args(argv)
    from core import contracts as K
    from core.io import read_table
    from embedding.config import ModelConfig
    from embedding.data import build_item_store

    world = args.world
    if world is None:
        from sources.world import WorldConfig, generate_world

        world = Path(tempfile.mkdtemp()) / "tiny"
        generate_world(WorldConfig.for_size("tiny", seed=7), world)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = describe_machine("torch", "transformers", "faiss", gpu=gpu)
    items = read_table(world / "items", K.ITEMS).slice(0, max(args.items, 2 * max(args.batch_sizes)))
    store = build_item_store(items, world / "media", ModelConfig.tiny().preprocess)
    results = []
    pretrained = not args.no_pretrained_weights
    for m in args.models:
        for dev in args.devices:
            for prec in args.cpu_precisions if dev == "cpu" else args.precisions:
                for t in args.threads if dev == "cpu" else args.threads[:1]:
                    for b in args.batch_sizes:
                        r = bench(m, dev, prec, t, store, args.steps, b, args.items, args.text_dir, pretrained)
                        print(r, flush=True)
                        results.append(r)
    if not args.no_peer:
        for t in args.threads:
            r = minilm_peer(store, t, args.items)
            print(r, flush=True)
            results.append(r)
    info["load_average_at_end"] = list(os.getloadavg())
    out = {"machine": info, "results": results, "note": "shared machine: other jobs may run concurrently; see load"}
    write_results(args.out, out, markdown(out))


if __name__ == "__main__":
    main()
