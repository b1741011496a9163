"""torchrun entry for multi-process SAIL training (gloo on CPU; NCCL with `--device cuda`, one GPU per rank).

    torchrun --nproc_per_node 2 -m embedding.distributed --data DIR --pairs DIR --out DIR [sail train-embedding options]
             [--train-config FILE]

`--train-config FILE` (a `TrainConfig.to_dict()` JSON, e.g. what `sail run` writes for `embedding.nproc` > 1) gives
every setting, options included, their values; an option given as well overrides the file's value.

Every rank builds the same model and draws the same batches (same seeds); rank r trains on rows r::world of each
batch, and `DistributedDataParallel` (wrapping the loss module `SailTrain`, find_unused_parameters since each batch
uses one source's temperature) averages the gradients, so all ranks stay identical. Rank 0 prepares the data
(mining, catalogue preprocessing) while the others wait at a barrier and then read its caches; only rank 0 writes
checkpoints, the metrics log and the final model. In-batch negatives are those of the rank's shard (no all-gather).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedding.trainer import TrainConfig


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """(TrainConfig, the parsed options): the options' defaults are `--train-config`'s settings when it is given."""
    from embedding.cli import _add_train_args, train_config_from_args
    from embedding.trainer import TrainConfig

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--train-config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    base = TrainConfig.from_dict(json.loads(known.train_config.read_text())) if known.train_config else None
    p = argparse.ArgumentParser(prog="python -m embedding.distributed", description="torchrun SAIL training")
    _add_train_args(p, base)
    p.add_argument(
        "--train-config", type=Path, default=None, help="a TrainConfig JSON: the settings the options start from"
    )
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--backend", default=None, help="gloo | nccl (default: nccl when --device is CUDA, else gloo)")
    args = p.parse_args(argv)
    return train_config_from_args(args, base), args


def main(argv: Sequence[str] | None = None) -> int:
    import torch.distributed as dist

    from embedding.device import resolve_device
    from embedding.trainer import train

    cfg, args = parse_args(argv)
    backend = args.backend or ("nccl" if resolve_device(cfg.device).type == "cuda" else "gloo")
    if "RANK" not in os.environ:  # plain `python -m embedding.distributed`: a world of one
        os.environ.update(
            {
                "RANK": "0",
                "WORLD_SIZE": "1",
                "LOCAL_RANK": "0",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": os.environ.get("MASTER_PORT", "29531"),
            }
        )
    dist.init_process_group(backend)
    try:
        res = train(cfg, args.data, args.out, args.pairs, work_dir=args.work, resume=not args.fresh)
        if dist.get_rank() == 0:
            print(
                f"rank 0: {res.steps_done}/{res.total_steps} steps, model {res.model_path}, "
                f"checkpoint {res.checkpoint_dir}"
            )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
