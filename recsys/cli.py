"""Entry points of the ranking stage (wired into `sail` by jobs.cli; also `python -m recsys.cli SUBCOMMAND`).

sail build-ranking-data --data DIR --out DIR [--item-features DIR | --standin] [--recent-len L] ...
sail train-ranker --samples DIR --out DIR [--variant control|emb|sid|both|placebo|all|V1,V2,...]
                  [--trainer torchrec|lgbm|all] ...

`train-ranker` runs under torchrun unchanged (`torchrun --nproc_per_node 2 -m recsys.cli train-ranker ...`):
every rank trains, rank 0 evaluates and writes results.json, results.md and runs.json (which scores file each
evaluated model's row was computed from, relative to --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io import write_json_atomic, write_npz_atomic
from recsys.features import VARIANTS


def main_build_ranking_data(argv: Sequence[str]) -> int:
    from recsys.samples import SAIL_ENGINES, SamplesConfig, run
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
    p.add_argument(
        "--train-start",
        type=dt.date.fromisoformat,
        default=None,
        help="first day of the train split, YYYY-MM-DD (`sail run` uses the embedding cutoff's day, in "
        "mine/mining.json); earlier impressions only feed counters and recent items (default: the log's first day)",
    )
    p.add_argument(
        "--embedding-prefix",
        type=int,
        default=None,
        help="carry the first N dims of each SAIL vector, re-normalised (`sail run`: [ranker] sail_dims)",
    )
    p.add_argument(
        "--sail-engine",
        choices=SAIL_ENGINES,
        default="lookup",
        help="lookup: feature rows broadcast and looked up per batch; join: the plain Spark join (reference)",
    )
    p.add_argument("--shuffle-partitions", type=int, default=8)
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
            train_start=args.train_start,
            embedding_prefix=args.embedding_prefix,
            master=args.master or None,
            shuffle_partitions=args.shuffle_partitions,
            sail_engine=args.sail_engine,
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
        "train_start": None if res.train_start is None else str(res.train_start),
    }
    print(json.dumps(summary, indent=2))
    return 0


AVERAGED = ("valid_click", "valid_finish", "test_click", "test_finish")
"""The probability arrays of a scores.npz that a seed ensemble averages; every other array must agree."""


def average_scores(members: Sequence[Path], out_dir: Path) -> Path:
    """Writes `out_dir/scores.npz` with the mean probabilities of the members' scores.npz (the same rows in the
    same order; labels, users, items and slices are checked equal) and `out_dir/train.json` naming the members
    and the epoch each chose; returns the scores path."""
    loaded = [dict(np.load(m)) for m in members]
    first = loaded[0]
    for m, other in zip(members[1:], loaded[1:], strict=True):
        if set(other) != set(first):
            raise ValueError(f"{m} holds arrays {sorted(other)}, {members[0]} holds {sorted(first)}")
        for key in set(first) - set(AVERAGED):
            if not np.array_equal(first[key], other[key]):
                raise ValueError(f"{m}: array {key!r} differs from {members[0]}'s: not the same rows")
    arrays = {**first, **{k: np.mean([x[k] for x in loaded], axis=0) for k in AVERAGED if k in first}}
    write_npz_atomic(out_dir / "scores.npz", arrays)
    info = []
    for m in members:
        t = json.loads((m.parent / "train.json").read_text())
        info.append(
            {
                "dir": m.parent.name,
                "seed": t["config"]["seed"],
                "selected_epoch": t["selected_epoch"],
                "epochs_trained": t["epochs_trained"],
            }
        )
    write_json_atomic(out_dir / "train.json", {"members": info})
    return out_dir / "scores.npz"


RUNS_FILE = "runs.json"
"""run_variants' record in its out_dir: "trainer/variant" -> the evaluated scores.npz, relative to out_dir."""


def read_runs(out_dir: Path) -> dict[str, Path]:
    """The runs a finished `run_variants` (or `train-ranker`) in `out_dir` evaluated (its runs.json)."""
    return {k: out_dir / p for k, p in json.loads((out_dir / RUNS_FILE).read_text()).items()}


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
    seeds: int = 1,
    residual: bool = False,
) -> VariantsResult:
    """Trains every (trainer, variant) the same way; rank 0 evaluates them side by side.

    seeds > 1: every TorchRec variant trains that many models (seeds `seed`, `seed + 1`, ...; the first in the
    variant's directory, the others in `seed-<k>/` below it) and is evaluated on their averaged probabilities
    (`ensemble/scores.npz`): one model's result also carries the luck of its initialisation and data order, which
    on the demo moves test AUC by about as much as the features under test. LightGBM is deterministic.

    residual: every variant but control is trained as a residual on control's logits (control of the same seed;
    see recsys.train), so control trains first and must be among the variants. With the TorchRec item-id dropout
    (`item_id_dropout` in train_kwargs) control learns to rank an item it has no id for from its other features,
    and a dropped row of a variant takes control's logits for an unknown item as its base: the correction learns
    only what its own features add for such items."""
    from recsys.distributed import init_distributed, shutdown
    from recsys.lgbm import LgbmConfig, train_lgbm
    from recsys.train import TrainConfig, train_ranker

    if residual:
        if "control" not in variants:
            raise ValueError(f"residual variants are trained on control's logits: add control to {list(variants)}")
        variants = ["control", *(v for v in variants if v != "control")]

    def member_dir(trainer: str, v: str, k: int) -> Path:
        return out_dir / trainer / v if k == 0 else out_dir / trainer / v / f"seed-{k}"

    def residual_kwargs(trainer: str, v: str, k: int) -> dict:
        if not residual:
            return {}
        if v == "control":
            return {"save_logits": True}
        return {"base_dir": member_dir(trainer, "control", k)}

    env = init_distributed()
    runs: dict[str, Path] = {}
    try:
        for v in variants:
            if "torchrec" in trainers:
                base, members = out_dir / "torchrec" / v, []
                for k in range(seeds):
                    vdir = member_dir("torchrec", v, k)
                    kw = {**train_kwargs, "seed": train_kwargs.get("seed", 0) + k, **residual_kwargs("torchrec", v, k)}
                    res = train_ranker(TrainConfig(samples_dir=samples_dir, out_dir=vdir, variant=v, **kw))
                    members.append(vdir / "scores.npz")
                    if env.rank == 0:
                        print(
                            f"torchrec/{v} seed {kw['seed']}: {res.steps} steps, {res.examples_per_s:.0f} examples/s",
                            flush=True,
                        )
                if env.rank == 0:
                    runs[f"torchrec/{v}"] = members[0] if seeds == 1 else average_scores(members, base / "ensemble")
        if env.rank == 0 and "lgbm" in trainers:
            for v in variants:
                kw = {**lgbm_kwargs, **residual_kwargs("lgbm", v, 0)}
                runs[f"lgbm/{v}"] = train_lgbm(
                    LgbmConfig(samples_dir=samples_dir, out_dir=out_dir / "lgbm" / v, variant=v, **kw)
                )
                print(f"lgbm/{v}: done", flush=True)
    finally:
        rank = env.rank
        shutdown(env)
    if rank != 0:
        return VariantsResult(None, None, runs)
    from recsys.evaluate import evaluate_runs, markdown_table

    results = evaluate_runs(runs, n_boot=n_boot, title="## Ranker: test-period metrics", note=note)
    write_json_atomic(out_dir / "results.json", results)
    write_json_atomic(out_dir / RUNS_FILE, {k: str(p.relative_to(out_dir)) for k, p in runs.items()})
    md = out_dir / "results.md"
    md.write_text(markdown_table(results))
    return VariantsResult(out_dir / "results.json", md, runs)


def _variant_list(text: str) -> tuple[str, ...]:
    """'all' or comma-separated variant names -> the variants, in the order given."""
    if text == "all":
        return tuple(VARIANTS)
    names = tuple(v.strip() for v in text.split(","))
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"variants must be 'all' or comma-separated names of {list(VARIANTS)}")
    return names


@dataclass(frozen=True)
class TrainRankerArgs:
    """`sail train-ranker`'s options as run_variants' arguments."""

    samples: Path
    out: Path
    variants: tuple[str, ...]
    trainers: tuple[str, ...]
    train_kwargs: dict  # recsys.train.TrainConfig fields (besides samples_dir, out_dir and variant)
    lgbm_kwargs: dict  # recsys.lgbm.LgbmConfig fields (idem)
    n_boot: int
    note: str
    seeds: int
    table: bool = True  # print the results table at the end
    residual: bool = False  # variants trained on control's logits (run_variants)


def parse_train_ranker(argv: Sequence[str]) -> TrainRankerArgs:
    from recsys.model import INTERACTION_ARCHES, RankerConfig

    p = argparse.ArgumentParser(prog="sail train-ranker", description="Train and evaluate ranker variants.")
    p.add_argument("--samples", required=True, type=Path, help="ranking_samples_ext table directory")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--variant",
        type=_variant_list,
        default="all",
        help=f"one of {list(VARIANTS)}, several separated by commas, or all",
    )
    p.add_argument("--trainer", choices=["torchrec", "lgbm", "all"], default="all")
    p.add_argument("--epochs", type=int, default=2, help="TorchRec: at most this many (the best on valid is kept)")
    p.add_argument("--seeds", type=int, default=1, help="TorchRec: models per variant, probabilities averaged")
    p.add_argument(
        "--patience", type=int, default=1, help="TorchRec: validation points without a better valid AUC, then stop"
    )
    p.add_argument("--evals-per-epoch", type=int, default=1, help="TorchRec: validation points per epoch")
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
    p.add_argument("--lgbm-threads", type=int, default=None, help="LightGBM threads (default: --threads)")
    p.add_argument("--sid-levels", type=int, default=3, help="semantic-ID levels the sid variants use")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument(
        "--item-id-dropout", type=float, default=0.0, help="share of train rows whose item id becomes the OOV row"
    )
    p.add_argument(
        "--sail-dropout",
        type=float,
        default=0.0,
        help="share of train rows whose SAIL vector and semantic IDs are hidden (as an item without them)",
    )
    p.add_argument(
        "--residual",
        action="store_true",
        help="train every variant but control on top of control's logits (epoch 0 = control, chosen on valid)",
    )
    p.add_argument("--max-train-rows", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--note", default="", help="a line for the report (e.g. which item features were used)")
    p.add_argument("--no-table", action="store_true", help="print only where the results are, not their table")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    train_kwargs = {
        "ranker": RankerConfig(embedding_dim=args.embedding_dim, interaction=args.interaction),
        "epochs": args.epochs,
        "patience": args.patience,
        "evals_per_epoch": args.evals_per_epoch,
        "batch_size": args.batch_size,
        "sparse_lr": args.sparse_lr,
        "dense_lr": args.dense_lr,
        "threads": args.threads,
        "ckpt_every": args.ckpt_every,
        "max_train_rows": args.max_train_rows,
        "sid_levels": args.sid_levels,
        "seed": args.seed,
        "item_id_dropout": args.item_id_dropout,
        "sail_dropout": args.sail_dropout,
    }
    lgbm_kwargs = {
        "threads": args.threads if args.lgbm_threads is None else args.lgbm_threads,
        "seed": args.seed,
        "max_train_rows": args.max_train_rows,
        "sid_levels": args.sid_levels,
    }
    return TrainRankerArgs(
        samples=args.samples,
        out=args.out,
        variants=args.variant,
        trainers=("torchrec", "lgbm") if args.trainer == "all" else (args.trainer,),
        train_kwargs=train_kwargs,
        lgbm_kwargs=lgbm_kwargs,
        n_boot=args.n_boot,
        note=args.note,
        seeds=args.seeds,
        table=not args.no_table,
        residual=args.residual,
    )


def train_ranker_argv(a: TrainRankerArgs) -> list[str]:
    """The `train-ranker` options that parse back into `a` (parse_train_ranker); a setting without an option (a
    RankerConfig other than its embedding_dim and interaction, a trainer setting not listed) is refused."""
    from recsys.model import RankerConfig

    kw, lg = dict(a.train_kwargs), dict(a.lgbm_kwargs)
    ranker = kw.pop("ranker", RankerConfig())
    plain = RankerConfig(embedding_dim=ranker.embedding_dim, interaction=ranker.interaction)
    if ranker != plain:
        raise ValueError(f"train-ranker has options for the ranker's embedding_dim and interaction only: {ranker}")
    options = {
        "epochs": "--epochs",
        "patience": "--patience",
        "evals_per_epoch": "--evals-per-epoch",
        "batch_size": "--batch-size",
        "sparse_lr": "--sparse-lr",
        "dense_lr": "--dense-lr",
        "threads": "--threads",
        "ckpt_every": "--ckpt-every",
        "max_train_rows": "--max-train-rows",
        "sid_levels": "--sid-levels",
        "seed": "--seed",
        "item_id_dropout": "--item-id-dropout",
        "sail_dropout": "--sail-dropout",
    }
    unknown = sorted(set(kw) - set(options))
    if unknown:
        raise ValueError(f"train-ranker has no option for {unknown}")
    for key in ("seed", "max_train_rows", "sid_levels"):  # one option each, for both trainers
        if key in lg and kw.setdefault(key, lg[key]) != lg.pop(key):
            raise ValueError(f"train-ranker sets LightGBM's {key} to TorchRec's: {a}")
    lgbm_threads = lg.pop("threads", None)
    if lg:
        raise ValueError(f"train-ranker has no option for LightGBM's {sorted(lg)}")
    trainers = set(a.trainers)
    if not trainers or not trainers <= {"torchrec", "lgbm"}:
        raise ValueError(f"trainers must be torchrec and / or lgbm, got {a.trainers}")
    argv = ["--samples", str(a.samples), "--out", str(a.out), "--variant", ",".join(a.variants)]
    argv += ["--trainer", "all" if len(trainers) == 2 else trainers.pop()]
    argv += ["--embedding-dim", str(ranker.embedding_dim), "--interaction", ranker.interaction]
    for key, value in kw.items():
        if value is not None:
            argv += [options[key], repr(value) if isinstance(value, float) else str(value)]
    if lgbm_threads is not None:
        argv += ["--lgbm-threads", str(lgbm_threads)]
    argv += ["--seeds", str(a.seeds), "--n-boot", str(a.n_boot), "--note", a.note]
    argv += ["--residual"] if a.residual else []
    return argv if a.table else [*argv, "--no-table"]


def run_train_ranker(a: TrainRankerArgs) -> VariantsResult:
    """`run_variants` with the arguments `a` holds."""
    return run_variants(
        a.samples,
        a.out,
        list(a.variants),
        list(a.trainers),
        a.train_kwargs,
        a.lgbm_kwargs,
        a.n_boot,
        a.note,
        a.seeds,
        a.residual,
    )


def main_train_ranker(argv: Sequence[str]) -> int:
    a = parse_train_ranker(argv)
    res = run_train_ranker(a)
    if res.results_md is not None:
        if a.table:
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
