"""Mains of `sail train-embedding` and `sail eval-retrieval` (dispatched from `jobs.cli`).

sail train-embedding --data DIR --pairs DIR --out DIR [--model tiny|minilm|cpu_default|FILE] [--steps I,II,III,CRE]
                     [--batch-size B]
                     [--lr F] [--seed N] [--threads N] [--device cpu|cuda|cuda:N|auto] [--precision fp32|bf16]
                     [--no-balancing] [--no-hard-negatives] [--no-fuser] [--no-audio] [--checkpoint-every N]
                     [--work DIR] [--fresh]
sail eval-retrieval [--config NAME] --data DIR --pairs DIR --out DIR [--sail DIR] [same training knobs] [--n-boot N]
                    [--max-queries N] [--no-ablations] [--ablation-scale F] [--no-minilm] [--no-two-tower]

--pairs is a `sail mine-pairs --cutoff ISO | --holdout-frac F` output (train/, heldout/, full/): the only source of
training pairs and of the held-out ground truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from embedding.trainer import TrainConfig

if TYPE_CHECKING:
    from embedding.retrieval_eval import EvalConfig


def _add_train_args(p: argparse.ArgumentParser, base: TrainConfig | None = None) -> None:
    """The training options, their defaults taken from `base` (default: TrainConfig())."""
    d = base or TrainConfig()
    p.add_argument("--data", required=True, type=Path, help="data set directory (generated world or adapter output)")
    p.add_argument(
        "--pairs",
        required=True,
        type=Path,
        help="mined pairs in the period layout (`sail mine-pairs ... --holdout-frac F` or `sail run`'s mine/)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--work", type=Path, default=None, help="cache of the preprocessed catalogue (default OUT/work)")
    p.add_argument("--model", default=d.model, help="tiny | minilm | cpu_default | a JSON ModelConfig file")
    p.add_argument(
        "--steps", default=f"{d.steps_i},{d.steps_ii},{d.steps_iii},{d.steps_cre}", help="steps of stages I,II,III,CRE"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--word-queries",
        type=int,
        default=d.data.word_queries_per_item,
        help="stage I pseudo-queries per item (title / tag words -> item); 0: none",
    )
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N | auto (CUDA when available)")
    p.add_argument(
        "--precision", default=d.precision, choices=("fp32", "bf16"), help="bf16: bfloat16 autocast (weights stay fp32)"
    )
    p.add_argument("--refresh-every", type=int, default=d.refresh_every)
    p.add_argument(
        "--hn-catalogue-pool",
        type=int,
        default=d.hn_catalogue_pool,
        help="items a hard-negative refresh searches: 0 = the whole catalogue; N > 0 = a seeded sample of N items, "
        "new at each refresh (negatives are the hardest within the sample)",
    )
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--no-balancing", action="store_true")
    p.add_argument("--no-hard-negatives", action="store_true")
    p.add_argument("--no-fuser", action="store_true", help="ConcatFusionModel instead of the LLM fuser")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def parse_steps(text: str) -> dict[str, int]:
    """'I,II,III,CRE' step counts -> TrainConfig's steps_i / steps_ii / steps_iii / steps_cre."""
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"--steps needs four comma-separated non-negative integers (stages I,II,III,CRE), got {text!r}"
        )
    steps = [int(p) for p in parts]
    return dict(zip(("steps_i", "steps_ii", "steps_iii", "steps_cre"), steps, strict=True))


def train_config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default: TrainConfig()) with the options' values; settings without an option keep base's."""
    base = base or TrainConfig()
    return dataclasses.replace(
        base,
        model=args.model,
        **parse_steps(args.steps),
        batch_size=args.batch_size,
        data=dataclasses.replace(base.data, word_queries_per_item=args.word_queries),
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
        refresh_every=args.refresh_every,
        hn_catalogue_pool=args.hn_catalogue_pool,
        checkpoint_every=args.checkpoint_every,
        balancing=base.balancing and not args.no_balancing,
        hard_negatives=base.hard_negatives and not args.no_hard_negatives,
        fuser=base.fuser and not args.no_fuser,
        audio=base.audio and not args.no_audio,
        progress=base.progress and not args.no_progress,
    )


def main_train(argv: Sequence[str] | None = None, base: TrainConfig | None = None) -> int:
    """`base`: the training settings the options start from (`sail train-embedding --config NAME` passes the
    run config's, so the command trains what `sail run --config NAME` trains); default TrainConfig()."""
    from embedding.trainer import train

    p = argparse.ArgumentParser(prog="sail train-embedding", description="Staged SAIL training (resumes from OUT).")
    _add_train_args(p, base)
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints in OUT")
    args = p.parse_args(argv)
    res = train(
        train_config_from_args(args, base), args.data, args.out, args.pairs, work_dir=args.work, resume=not args.fresh
    )
    print(
        json.dumps(
            {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(res).items()
                if k not in ("data_summary",)
            },
            indent=2,
            default=str,
        )
    )
    return 0


def main_eval(argv: Sequence[str] | None = None, base: EvalConfig | None = None) -> int:
    """`base`: the settings the options start from (`sail eval-retrieval --config NAME` passes the run config's
    retrieval table, so the command evaluates what `sail run --config NAME` evaluates); default EvalConfig()."""
    from embedding.retrieval_eval import EvalConfig, run_retrieval_eval

    base = base or EvalConfig()
    p = argparse.ArgumentParser(prog="sail eval-retrieval", description="Retrieval table with baselines + ablations.")
    _add_train_args(p, base.train)
    p.add_argument("--sail", type=Path, default=None, help="a `sail train-embedding` output to evaluate as SAIL")
    p.add_argument("--n-boot", type=int, default=base.n_boot)
    p.add_argument("--max-queries", type=int, default=base.max_queries)
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--ablation-scale", type=float, default=base.ablation_scale, help="ablation runs use steps x this")
    p.add_argument("--no-minilm", action="store_true")
    p.add_argument("--no-two-tower", action="store_true", help="no content two-tower column (a second training)")
    args = p.parse_args(argv)
    cfg = dataclasses.replace(
        base,
        train=train_config_from_args(args, base.train),
        n_boot=args.n_boot,
        max_queries=args.max_queries,
        ablations=base.ablations and not args.no_ablations,
        ablation_scale=args.ablation_scale,
        minilm=base.minilm and not args.no_minilm,
        two_tower=base.two_tower and not args.no_two_tower,
    )
    work = args.work or (args.sail / "work" if args.sail is not None else None)
    res = run_retrieval_eval(cfg, args.data, args.pairs, args.out, sail_dir=args.sail, work_dir=work)
    print(res.markdown_path.read_text())
    print(f"results: {res.json_path}")
    return 0
