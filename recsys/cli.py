"""Entry points of the ranking stage (wired into `sail` by jobs.cli; also `python -m recsys.cli SUBCOMMAND`).

sail build-ranking-data --data DIR --out DIR [--item-features DIR | --standin] [--recent-len L] ...
sail train-ranker --samples DIR --out DIR [--variant control|emb|sid|both|all] [--trainer torchrec|lgbm|all] ...

`train-ranker` runs under torchrun unchanged (`torchrun --nproc_per_node 2 -m recsys.cli train-ranker ...`):
every rank trains, rank 0 evaluates and writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.features import VARIANTS


def main_build_ranking_data(argv: Sequence[str]) -> int:
    from recsys.samples import SamplesConfig, run
    from recsys.standin import STANDIN_VERSION, write_standin_features

    p = argparse.ArgumentParser(prog="sail build-ranking-data", description="Point-in-time ranking samples (Spark).")
    p.add_argument("--data", required=True, type=Path, help="data set directory (interactions/, items/)")
    p.add_argument("--out", required=True, type=Path)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--item-features", type=Path, default=None, help="ITEM_FEATURES table (the SAIL export)")
    src.add_argument(
        "--standin",
        action="store_true",
        help=f"build and use the content-only TF-IDF stand-in features ({STANDIN_VERSION}) instead of SAIL's",
    )
    p.add_argument("--model-version", default=None, help="feature rows of this version (default: the latest)")
    p.add_argument("--recent-len", type=int, default=10)
    p.add_argument("--valid-days", type=int, default=3)
    p.add_argument("--test-days", type=int, default=4)
    p.add_argument("--master", default="local[2]", help="Spark master ('' leaves it to spark-submit)")
    args = p.parse_args(argv)
    features = args.item_features
    if args.standin:
        features = args.out / "item_features_standin"
        write_standin_features(args.data, features)
    res = run(
        SamplesConfig(
            data_dir=args.data,
            out_dir=args.out,
            item_features_dir=features,
            model_version=args.model_version,
            recent_len=args.recent_len,
            valid_days=args.valid_days,
            test_days=args.test_days,
            master=args.master or None,
        )
    )
    summary = {
        "samples": str(res.ext_path),
        "core": str(res.core_path),
        "rows": res.rows,
        "valid_start": str(res.valid_start),
        "test_start": str(res.test_start),
        "feature_version": res.model_version,
        "embedding_dim": res.embedding_dim,
    }
    print(json.dumps(summary, indent=2))
    return 0


@dataclass(frozen=True)
class VariantsResult:
    results_json: Path | None
    results_md: Path | None
    runs: dict[str, Path]  # "trainer/variant" -> scores.npz


def run_variants(
    samples_dir: Path,
    out_dir: Path,
    variants: Sequence[str],
    trainers: Sequence[str],
    train_kwargs: dict,
    lgbm_kwargs: dict,
    n_boot: int = 500,
    note: str = "",
) -> VariantsResult:
    """Trains every (trainer, variant) the same way; rank 0 evaluates them side by side."""
    from recsys.distributed import init_distributed, shutdown
    from recsys.lgbm import LgbmConfig, train_lgbm
    from recsys.train import TrainConfig, train_ranker

    env = init_distributed()
    runs: dict[str, Path] = {}
    try:
        for v in variants:
            if "torchrec" in trainers:
                res = train_ranker(
                    TrainConfig(samples_dir=samples_dir, out_dir=out_dir / "torchrec" / v, variant=v, **train_kwargs)
                )
                runs[f"torchrec/{v}"] = out_dir / "torchrec" / v / "scores.npz"
                if env.rank == 0:
                    print(f"torchrec/{v}: {res.steps} steps, {res.examples_per_s:.0f} examples/s", flush=True)
        if env.rank == 0 and "lgbm" in trainers:
            for v in variants:
                runs[f"lgbm/{v}"] = train_lgbm(
                    LgbmConfig(samples_dir=samples_dir, out_dir=out_dir / "lgbm" / v, variant=v, **lgbm_kwargs)
                )
                print(f"lgbm/{v}: done", flush=True)
    finally:
        rank = env.rank
        shutdown(env)
    if rank != 0:
        return VariantsResult(None, None, runs)
    from jobs.io import write_json_atomic
    from recsys.evaluate import evaluate_runs, markdown_table

    results = evaluate_runs(runs, n_boot=n_boot, title="## Ranker: test-period metrics", note=note)
    write_json_atomic(out_dir / "results.json", results)
    md = out_dir / "results.md"
    md.write_text(markdown_table(results))
    return VariantsResult(out_dir / "results.json", md, runs)


def main_train_ranker(argv: Sequence[str]) -> int:
    from recsys.model import INTERACTION_ARCHES, RankerConfig

    p = argparse.ArgumentParser(prog="sail train-ranker", description="Train and evaluate ranker variants.")
    p.add_argument("--samples", required=True, type=Path, help="ranking_samples_ext table directory")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    p.add_argument("--trainer", choices=["torchrec", "lgbm", "all"], default="all")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2048, help="global batch (split across torchrun ranks)")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument(
        "--interaction",
        choices=INTERACTION_ARCHES,
        default="dcn_dot",
        help="TorchRec interaction: DCNv2 + DLRM dots (default), DCNv2, or DLRM pairwise dots",
    )
    p.add_argument("--sparse-lr", type=float, default=0.05)
    p.add_argument("--dense-lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument(
        "--item-id-dropout", type=float, default=0.0, help="share of train rows whose item id becomes the OOV row"
    )
    p.add_argument("--max-train-rows", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--note", default="", help="a line for the report (e.g. which item features were used)")
    args = p.parse_args(argv)
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    trainers = ["torchrec", "lgbm"] if args.trainer == "all" else [args.trainer]
    train_kwargs = {
        "ranker": RankerConfig(embedding_dim=args.embedding_dim, interaction=args.interaction),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "sparse_lr": args.sparse_lr,
        "dense_lr": args.dense_lr,
        "threads": args.threads,
        "ckpt_every": args.ckpt_every,
        "max_train_rows": args.max_train_rows,
        "seed": args.seed,
        "item_id_dropout": args.item_id_dropout,
    }
    lgbm_kwargs = {"threads": args.threads, "seed": args.seed, "max_train_rows": args.max_train_rows}
    res = run_variants(args.samples, args.out, variants, trainers, train_kwargs, lgbm_kwargs, args.n_boot, args.note)
    if res.results_md is not None:
        print(res.results_md.read_text())
        print(f"results: {res.results_json}")
    return 0


COMMANDS = {"build-ranking-data": main_build_ranking_data, "train-ranker": main_train_ranker}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m recsys.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
