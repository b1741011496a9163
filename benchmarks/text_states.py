"""Benchmark: a catalogue pass of the `minilm` model with its frozen text states read from disk, against the same
pass computing them, same run.

    python benchmarks/text_states.py --data runs/demo/validate [--items 2000] [--threads 2]
        [--out benchmarks/results/text_states.json]

Takes the first --items ITEMS rows of a validated data set and the `minilm` model at its pretrained start. Times, in
this order: (1) a catalogue pass that computes the frozen lower text layers (the tower's in-memory cache starts
empty, as in every catalogue pass before the stored states); (2) writing the stored states once
(`embedding.text_states.build_text_states`: the frozen layers over every distinct text, as the trainer does at its
start); (3) a pass of a fresh model that reads them. Checks that the two passes give the same vectors (fp16 states
in both, so up to the rounding of the batch they were computed in) and reports items/s, the build's texts/s and
the stored size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.machine import describe_machine, dir_bytes, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "text_states.json"


def main(argv: list[str] | None = None) -> int:
    import torch

    from core import contracts as K
    from core.io import read_table
    from embedding.config import ModelConfig
    from embedding.data import build_item_store, default_media_root
    from embedding.infer import embed_item_inputs
    from embedding.model import build_model
    from embedding.preprocess import build_text, build_tokenizer
    from embedding.text_states import build_text_states

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a validated data set (the validate stage's output)")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.minilm()
    pre = cfg.preprocess
    items = read_table(args.data / "items", K.ITEMS).slice(0, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_item_store(items, default_media_root(args.data), pre)
        inputs = store.inputs(range(len(store)))
        tok = build_tokenizer(cfg.text)

        def model():
            torch.manual_seed(0)
            return build_model(cfg).eval()

        def catalogue_pass(m) -> tuple[np.ndarray, float]:
            t0 = time.perf_counter()
            out = embed_item_inputs(m, inputs, tok, pre, "item", args.batch)[cfg.embed_dim]
            return out, time.perf_counter() - t0

        computing, t_computing = catalogue_pass(model())
        reader = model()
        t0 = time.perf_counter()
        states = build_text_states(reader.text_tower, tok, [build_text(r) for r in store.text_rows],
                                   pre.max_text_tokens, tmp, args.batch)  # fmt: skip
        t_build = time.perf_counter() - t0
        reading, t_reading = catalogue_pass(reader)
        n, texts = len(store), len(states)
        result = {
            "benchmark": "text_states",
            "machine": describe_machine("torch"),
            "data": str(args.data),
            "items": n,
            "texts": texts,
            "tokens": states.meta["tokens"],
            "threads": args.threads,
            "batch": args.batch,
            "computing_s": round(t_computing, 2),
            "build_s": round(t_build, 2),
            "reading_s": round(t_reading, 2),
            "computing_items_per_s": round(n / t_computing, 1),
            "reading_items_per_s": round(n / t_reading, 1),
            "build_texts_per_s": round(texts / t_build, 1),
            "speedup": round(t_computing / t_reading, 2),
            "stored_bytes": dir_bytes(states.path),
            "max_abs_diff": float(np.abs(computing - reading).max()),
            "stored_hits": states.hits,
        }
    if result["max_abs_diff"] > 2e-3:
        raise SystemExit(f"the passes differ by {result['max_abs_diff']:.2e} (> 2e-3): {result}")
    md = "\n".join([
        "# A catalogue pass reading stored frozen text states (`embedding.text_states`)",
        "",
        f"`minilm` model at its pretrained start, {n} items ({texts} distinct texts, {result['tokens']} tokens) of "
        f"`{args.data}`, batch {args.batch}, {args.threads} threads, commit {result['machine']['code']['commit'][:7]}.",
        "",
        "| | seconds | items/s |",
        "|---|---|---|",
        f"| pass computing the frozen layers | {t_computing:.1f} | {result['computing_items_per_s']} |",
        f"| writing the states once | {t_build:.1f} | {result['build_texts_per_s']} texts/s |",
        f"| pass reading them | {t_reading:.1f} | {result['reading_items_per_s']} |",
        "",
        f"Speed-up of a pass: {result['speedup']}x; stored: {result['stored_bytes'] / 2**20:.1f} MiB; largest "
        f"difference between the two passes' vectors: {result['max_abs_diff']:.1e}.",
        "",
    ])  # fmt: skip
    write_results(args.out, result, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
