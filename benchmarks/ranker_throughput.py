"""Training throughput (examples/s) of the TorchRec ranker vs a plain PyTorch nn.EmbeddingBag model of the same shape.

Both models are the recsys ranker's arches (DenseArch, InteractionArch with a low-rank DCN, OverArch with two task
towers) over the same 6 sparse features (5 single ids + a multi-hot bag of up to 10 ids sharing the first table,
tables of up to 100k rows, dim 32); only the sparse side differs:
- torchrec: EmbeddingBagCollection sharded by DistributedModelParallel in one process (gloo, table-wise),
  tables updated in the backward by the fused row-wise Adagrad; dense arches with Adam;
- plain: one nn.EmbeddingBag(mode="mean", sparse=True) per table, updated by torch.optim.Adagrad on the sparse
  gradients; dense arches with Adam.
The same pre-built batches feed both. Two options take the comparison apart:
- `--arch dlrm` swaps the DCNv2 interaction for TorchRec's DLRM `InteractionArch` (pairwise dot products; the
  ranker's `interaction="dot"`), a lighter dense side over the same tables; `--arch dcn_dot` uses both side by side
  (the pipeline's default ranker since 2026-11-29); the default `dcn` is the DCNv2 alone;
- `--part sparse` times only the sparse arch (lookup, backward and table update; no dense arches, no Adam).
On a shared machine the load changes by the second, so the two models
alternate in short blocks (`--block` steps of plain, then of torchrec, ...) and each block is timed; the figure
is the median over blocks of examples / s, and the speedup the ratio of the medians (also reported: the median of
the per-block ratios, each pair of blocks run back to back). The ratio also moves from one process to the next
(allocator and memory layout), so `--repeat N` runs the comparison N times, each in a fresh interpreter, and
reports every run's speedup, their median and range.

    python benchmarks/ranker_throughput.py [--threads 1] [--batch-size 2048] [--block 5] [--rounds 12]
                                           [--arch dcn|dlrm|dcn_dot] [--part all|sparse] [--repeat N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine  # noqa: E402
from recsys.distributed import dense_parameters, init_distributed, init_tables, shard_model, shutdown
from recsys.features import FeatureSpec
from recsys.model import RankerBatch, RankerConfig, RankerTrain, SailRanker, build_ranker

FEATURES = ("item_id", "user_recent_items", "user_id", "author_id", "category", "hour")
ROWS = {"item_id": 100_000, "user_id": 100_000, "author_id": 20_000, "category": 1_000, "hour": 25}
RESULTS = Path(__file__).parent / "results" / "ranker_throughput.json"
CFG = {"embedding_dim": 32, "dense_layers": (64,), "cross_layers": 2, "cross_rank": 16, "over_layers": (64, 32)}
TARGET = 1.3
ARCHES = {  # --arch -> (RankerConfig.interaction, what the result file calls it)
    "dcn": ("dcn", "DCNv2 (LowRankCrossNet)"),
    "dlrm": ("dot", "DLRM pairwise dot products"),
    "dcn_dot": ("dcn_dot", "DCNv2 (LowRankCrossNet) + DLRM pairwise dot products"),
}


class _Spec(FeatureSpec):
    """The benchmark's 6 features (5 tables: the bag shares the item table)."""

    @property
    def sparse_features(self) -> tuple[str, ...]:
        return FEATURES

    @property
    def dense_features(self) -> tuple[str, ...]:
        return tuple(f"d{i}" for i in range(8))


SPEC = _Spec(variant="control", sid_levels=0, use_embedding=False)


class PlainSparseArch(nn.Module):
    """nn.EmbeddingBag per table with sparse gradients; same output as SparseArch: (B, F, D)."""

    def __init__(self, rows: dict[str, int], dim: int) -> None:
        super().__init__()
        self.bags = nn.ModuleDict(
            {t: nn.EmbeddingBag(n, dim, mode="mean", sparse=True) for t, n in rows.items() if t != "user_recent_items"}
        )

    def forward(self, kjt) -> torch.Tensor:
        """kjt: KeyedJaggedTensor of FEATURES -> (B, F, D)."""
        out = []
        for f, jt in kjt.to_dict().items():
            table = "item_id" if f == "user_recent_items" else f
            out.append(self.bags[table](jt.values(), jt.offsets()[:-1]))
        return torch.stack(out, dim=1)  # (B, F, D)


def make_batches(n: int, batch_size: int, zipf: float = 0.0, seed: int = 0) -> list[RankerBatch]:
    """Random batches; ids uniform over each table (zipf = 0) or Zipf-distributed with that exponent (> 1)."""
    from torchrec import KeyedJaggedTensor

    rng = np.random.default_rng(seed)

    def ids(rows: int, size: int) -> np.ndarray:
        return (rng.zipf(zipf, size) - 1) % rows if zipf > 0 else rng.integers(0, rows, size)

    batches = []
    for _ in range(n):
        values, lengths = [], []
        for f in FEATURES:
            if f == "user_recent_items":
                ln = rng.integers(0, 11, batch_size)
                values.append(ids(ROWS["item_id"], int(ln.sum())))
            else:
                ln = np.ones(batch_size, dtype=np.int64)
                values.append(ids(ROWS[f], batch_size))
            lengths.append(ln)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(FEATURES),
            values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int64)),
        )
        batches.append(
            RankerBatch(
                dense=torch.randn(batch_size, 8),
                sparse=kjt,
                content=None,
                labels=torch.from_numpy(rng.integers(0, 2, (batch_size, 2)).astype(np.float32)),
            )
        )
    return batches


def _time(step, batches: list[RankerBatch]) -> float:
    """Examples / s of running `step` over `batches`."""
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def build_model(cfg: RankerConfig, arch: str) -> SailRanker:
    """The ranker over the benchmark's features, tables on "meta"; arch "dlrm" takes the DLRM dot interaction."""
    torch.manual_seed(0)
    rows = {**ROWS, "user_recent_items": ROWS["item_id"]}
    return build_ranker(replace(cfg, interaction=ARCHES[arch][0]), SPEC, rows, 8, device="meta")


def build_torchrec(cfg: RankerConfig, env, arch: str = "dcn", part: str = "all"):
    dmp = shard_model(RankerTrain(build_model(cfg, arch)), env, sparse_lr=0.05)
    init_tables(dmp, 0)
    if part == "sparse":  # the tables are updated by the fused optimizer inside the backward
        sparse_arch = dmp.module.model.sparse_arch

        def sparse_step(b: RankerBatch) -> None:
            sparse_arch(b.sparse).mean().backward()

        return sparse_step
    opt = torch.optim.Adam(dense_parameters(dmp), lr=1e-3)

    def step(b: RankerBatch) -> None:
        loss, _ = dmp(b)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def build_plain(cfg: RankerConfig, arch: str = "dcn", part: str = "all"):
    model = build_model(cfg, arch)
    model.sparse_arch = PlainSparseArch(ROWS, cfg.embedding_dim)
    train = RankerTrain(model)
    sparse = list(model.sparse_arch.parameters())
    sparse_opt = torch.optim.Adagrad(sparse, lr=0.05)
    if part == "sparse":

        def sparse_step(b: RankerBatch) -> None:
            sparse_opt.zero_grad()
            model.sparse_arch(b.sparse).mean().backward()
            sparse_opt.step()

        return sparse_step
    ids = {id(p) for p in sparse}
    dense_opt = torch.optim.Adam([p for p in train.parameters() if id(p) not in ids], lr=1e-3)

    def step(b: RankerBatch) -> None:
        loss, _ = train(b)
        sparse_opt.zero_grad()
        dense_opt.zero_grad()
        loss.backward()
        sparse_opt.step()
        dense_opt.step()

    return step


def machine() -> dict:
    return describe_machine("torch")


def measure(args: argparse.Namespace) -> dict:
    """One comparison in this process: each model's examples / s per block, the medians and the speedup."""
    torch.set_num_threads(args.threads)
    cfg = RankerConfig(**CFG)
    batches = make_batches(max(args.warmup, args.block * 4), args.batch_size, args.zipf)
    env = init_distributed()
    try:
        steps = {
            "plain": build_plain(cfg, args.arch, args.part),
            "torchrec": build_torchrec(cfg, env, args.arch, args.part),
        }
        for step in steps.values():
            _time(step, batches[: args.warmup])
        rates: dict[str, list[float]] = {k: [] for k in steps}
        for r in range(args.rounds):
            block = batches[(r % 4) * args.block : (r % 4 + 1) * args.block]
            for name, step in steps.items():
                rates[name].append(_time(step, block))
            print(f"block {r}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()) + " examples/s", flush=True)
    finally:
        shutdown(env)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "examples_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
        "median_examples_per_s": {k: round(v) for k, v in med.items()},
        "speedup_torchrec_over_plain": round(med["torchrec"] / med["plain"], 3),
        "median_paired_block_speedup": round(
            statistics.median(t / p for t, p in zip(rates["torchrec"], rates["plain"], strict=True)), 3
        ),
    }


def _measure_in_fresh_process(args: argparse.Namespace, i: int) -> dict:
    """One comparison in a new interpreter (memory layout and allocator state differ from run to run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--repeat", "1", "--out", str(out)]
        for name in ("threads", "batch_size", "block", "warmup", "rounds", "zipf", "arch", "part"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        print(f"run {i + 1}/{args.repeat} in a fresh process", flush=True)
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())["runs"][0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--block", type=int, default=5, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    p.add_argument("--rounds", type=int, default=12, help="blocks per model, alternating")
    p.add_argument("--zipf", type=float, default=0.0, help="id distribution: 0 uniform, > 1 Zipf exponent")
    p.add_argument("--arch", choices=tuple(ARCHES), default="dcn", help="interaction: DCNv2, DLRM dots or both")
    p.add_argument("--part", choices=("all", "sparse"), default="all", help="time the whole step or the sparse arch")
    p.add_argument("--repeat", type=int, default=1, help="comparisons, each in a fresh process when more than one")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    info = machine()
    fresh = args.repeat > 1
    runs = [_measure_in_fresh_process(args, i) if fresh else measure(args) for i in range(args.repeat)]
    speedups = [r["speedup_torchrec_over_plain"] for r in runs]
    result = {
        "benchmark": "ranker_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**info, "load_average_at_end": list(os.getloadavg())},
        "setup": {
            "threads": args.threads,
            "batch_size": args.batch_size,
            "steps_per_block": args.block,
            "blocks_per_model": args.rounds,
            "runs": args.repeat,
            "tables": ROWS,
            "features": list(FEATURES),
            "embedding_dim": CFG["embedding_dim"],
            "id_distribution": "uniform" if args.zipf <= 0 else f"zipf({args.zipf})",
            "interaction": ARCHES[args.arch][1],
            "timed": {"all": "whole training step", "sparse": "sparse arch only (lookup, backward, table update)"}[
                args.part
            ],
            "torchrec": "DistributedModelParallel, 1 process (gloo), table-wise, fused row-wise Adagrad; Adam dense",
            "plain": "nn.EmbeddingBag(sparse=True) + torch.optim.Adagrad; Adam dense",
        },
        "runs": runs,
        "median_examples_per_s": {
            k: round(statistics.median(r["median_examples_per_s"][k] for r in runs)) for k in ("plain", "torchrec")
        },
        "speedup_torchrec_over_plain": round(statistics.median(speedups), 3),
        "speedup_range": [min(speedups), max(speedups)],
        "target_speedup": TARGET,
        "runs_at_or_above_target": sum(x >= TARGET for x in speedups),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(result["median_examples_per_s"]),
        "speedup",
        result["speedup_torchrec_over_plain"],
        f"(runs: {', '.join(f'{x:.3f}' for x in speedups)})",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
