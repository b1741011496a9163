"""The staged trainer on a CUDA device: every stage (I, II, III with faiss-mined hard negatives, CRE) runs on the
GPU in bf16 autocast and in fp32, with the CPU in fp32 as the peer in the same process, on the same prepared data.
Per run it records whether it completed, the stage probe losses at each stage's start and end, the final loss,
wall seconds and training pairs/s; then a bf16 run killed part-way resumes on the GPU, and the trained model's
item embeddings on the GPU (fp32, bf16) are compared with the CPU's. Results: a JSON file and its Markdown twin.

    python benchmarks/embedding_cuda_check.py --world DIR [--pairs DIR] [--work DIR] [--id-table PARQUET]
        [--steps 40,15,15,30] [--batch-size 32] [--devices cuda,cpu] [--out FILE]

`--pairs` may hold the world's pairs mined on another machine (`sail mine-pairs --holdout-frac 0.5`), `--work` its
preprocessed catalogue, and `--id-table` the collaborative item vectors (item_id, embedding), so that no mining or
fitting runs here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from benchmarks.machine import describe_machine, write_results  # noqa: E402


def _losses(metrics: Path) -> list[float]:
    from embedding.trainer import read_metrics

    return [r["loss"] for r in read_metrics(metrics)]


def run_one(cfg, world: Path, work: Path, out: Path, data) -> dict:
    from embedding.trainer import train

    t0 = time.perf_counter()
    res = train(cfg, world, out, work_dir=work, data=data)
    losses = _losses(res.metrics_path)
    return {
        "device": cfg.device,
        "precision": cfg.precision,
        "completed": res.completed,
        "steps": res.steps_done,
        "seconds": time.perf_counter() - t0,
        "train_pairs_per_s": res.pairs_per_s,
        "first_loss": losses[0],
        "final_loss": res.final_loss,
        "all_losses_finite": bool(np.isfinite(losses).all()),
        "probes": {s: {k: p[k]["loss"] for k in ("start", "end") if k in p} for s, p in res.probes.items()},
        "probe_fell_in_every_stage": all(p["end"]["loss"] < p["start"]["loss"] for p in res.probes.values()),
        "model_path": str(res.model_path),
    }


def markdown(out: dict) -> str:
    m = out["machine"]
    lines = [
        "# The staged embedding trainer on CUDA",
        "",
        f"Machine: {m.get('gpu') or 'no GPU'}; {m['cpu']}, {m['cores']} cores; torch {m['torch']}. "
        f"Model `{out['config']['model']}`, steps {out['config']['steps']}, batch {out['config']['batch_size']}.",
        "",
        "| device | precision | completed | steps | seconds | train pairs/s | first loss | final loss "
        "| probe fell in every stage |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["runs"]:
        lines.append(
            f"| {r['device']} | {r['precision']} | {r['completed']} | {r['steps']} | {r['seconds']:.1f} "
            f"| {r['train_pairs_per_s']:.0f} | {r['first_loss']:.3f} | {r['final_loss']:.3f} "
            f"| {r['probe_fell_in_every_stage']} |"
        )
    lines += ["", "Stage probe losses (start -> end):", ""]
    for r in out["runs"]:
        parts = ", ".join(f"{s} {p['start']:.3f} -> {p['end']:.3f}" for s, p in r["probes"].items())
        lines.append(f"- {r['device']} {r['precision']}: {parts}")
    if "resume" in out:
        rs = out["resume"]
        lines += [
            "",
            f"Resume on {rs['device']} in {rs['precision']}: killed after step {rs['killed_after']}, resumed to "
            f"step {rs['steps']}; largest difference of a step's loss from the unbroken run: "
            f"{rs['max_loss_diff']:.2e}.",
        ]
    if "embeddings" in out:
        lines += ["", "Item embeddings of the trained bf16 model against the CPU's (fp32), cosine per item:", ""]
        for k, v in out["embeddings"].items():
            lines.append(f"- {k}: min {v['min_cosine']:.5f}, mean {v['mean_cosine']:.5f}")
    return "\n".join(lines) + "\n"


def mine_world(world: Path, out: Path, holdout_frac: float = 0.5) -> Path:
    """The world's pairs in the period layout (polars), unless `out` already holds them."""
    from core.timeline import embedding_cutoff
    from mining.mine_pairs import log_time_range, run_periods
    from mining.mining_config import MiningConfig

    if not (out / "mining.json").exists():
        cfg = MiningConfig(data_dir=str(world), out_dir=str(out), engine="polars")
        run_periods(cfg, embedding_cutoff(*log_time_range(world), holdout_frac))
    return out


def main(argv: list[str] | None = None) -> None:
    from embedding.cli import parse_steps
    from embedding.data import load_item_id_table
    from embedding.trainer import TrainConfig, load_training_data, resolve_model_config

    p = argparse.ArgumentParser()
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="catalogue cache (default: OUT's folder/work)")
    p.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="mined pairs in the period layout (default: mined here with polars at holdout fraction 0.5)",
    )
    p.add_argument("--id-table", type=Path, default=None, help="item_id / embedding parquet for id2item")
    p.add_argument("--steps", default="40,15,15,30")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", default="tiny")
    p.add_argument("--devices", default="cuda,cpu", help="the first is checked in bf16 and fp32, the rest in fp32")
    p.add_argument("--runs", type=Path, default=Path("runs/embedding_cuda_check"))
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embedding_cuda_check.json")
    args = p.parse_args(argv)
    steps = parse_steps(args.steps)
    devices = [d for d in args.devices.split(",") if d]
    work = args.work or args.runs / "work"
    base = TrainConfig(
        model=args.model,
        **steps,
        batch_size=args.batch_size,
        refresh_every=10,
        checkpoint_every=10,
        warmup_steps=5,
        progress=False,
        threads=min(8, os.cpu_count() or 1),
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = describe_machine("torch", "transformers", "faiss", gpu=gpu)
    torch.set_num_threads(base.threads)
    id_table = load_item_id_table(args.id_table) if args.id_table else None
    pairs = args.pairs or mine_world(args.world, args.runs / "pairs")
    data = load_training_data(base, args.world, pairs, work, resolve_model_config(base.model, base), id_table=id_table)
    plan = [(devices[0], "bf16"), (devices[0], "fp32")] + [(d, "fp32") for d in devices[1:]]
    runs = []
    for dev, prec in plan:
        cfg = dataclasses.replace(base, device=dev, precision=prec)
        r = run_one(cfg, args.world, work, args.runs / f"{dev.replace(':', '_')}_{prec}", data)
        print(json.dumps({k: v for k, v in r.items() if k != "probes"}), flush=True)
        runs.append(r)
    config = {"model": base.model, "steps": list(steps.values()), "batch_size": base.batch_size}
    out = {"machine": info, "config": config, "runs": runs}

    # a killed bf16 run on the first device resumes to the end
    dev, total = devices[0], sum(steps.values())
    cfg = dataclasses.replace(base, device=dev, precision="bf16")
    kill_at = total // 2 + 3
    resumed_dir = args.runs / "resumed"
    from embedding.trainer import train

    train(dataclasses.replace(cfg, stop_after=kill_at), args.world, resumed_dir, work_dir=work, data=data)
    res = train(cfg, args.world, resumed_dir, work_dir=work, data=data)
    la, lb = _losses(Path(runs[0]["model_path"]).parent / "metrics.jsonl"), _losses(res.metrics_path)
    out["resume"] = {
        "device": dev,
        "precision": "bf16",
        "killed_after": kill_at,
        "steps": res.steps_done,
        "completed": res.completed,
        "max_loss_diff": float(np.max(np.abs(np.asarray(la) - np.asarray(lb)))) if len(la) == len(lb) else float("inf"),
    }

    # the trained bf16 model's item embeddings: GPU fp32 / bf16 against the CPU
    from core import contracts as K
    from core.io import read_table
    from embedding.infer import ItemEncoder

    items = read_table(args.world / "items", K.ITEMS).slice(0, 256)
    media = args.world / "media"
    ref = ItemEncoder.from_checkpoint(runs[0]["model_path"], media, batch_size=64).embed_items(items)
    d = max(ref)
    out["embeddings"] = {}
    for dev_, prec in ((devices[0], "fp32"), (devices[0], "bf16")):
        enc = ItemEncoder.from_checkpoint(runs[0]["model_path"], media, 64, device=dev_, precision=prec)
        cos = (enc.embed_items(items)[d] * ref[d]).sum(1)
        out["embeddings"][f"{dev_} {prec}"] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    info["load_average_at_end"] = list(os.getloadavg())
    write_results(args.out, out, markdown(out))


if __name__ == "__main__":
    main()
