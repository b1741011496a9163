"""`sail`: the one console entry point. Each subcommand is a `main(argv)` so tests can call it.

sail run --config demo|smoke|movielens|large|FILE [--run-dir DIR] [--until STAGE]
sail generate --size tiny|small|medium|large [--seed N] --out DIR
sail adapt-movielens [--src DIR] --out DIR [--session-gap-s S] [--positive-rating R] [--content-cutoff ISO]
sail validate --data DIR --out DIR [--max-rejected-share F] [--clock-skew-s S]
sail mine-pairs --engine spark|polars --data DIR --out DIR [--holdout-frac F | --cutoff ISO | --split-ts ISO] [...]
sail embed --items DIR --out DIR --model-version V [--engine spark|local] [--embedder MODULE:FACTORY] [...]
sail build-sids --embeddings DIR --out DIR [--levels L] [--codebook-size K] [--seed N]
sail build-ann --embeddings DIR --out DIR [--kind hnsw|ivf|flat] [--ef-search N]
sail export --features DIR --repo DIR [--version V] [--overwrite] [--check-sample N]
sail train-embedding [--config NAME] --data DIR --pairs DIR --out DIR [--model tiny|minilm] [--steps I,II,III,CRE]
                     [--device cpu|cuda|cuda:N|auto] [--precision fp32|bf16] [...]
sail eval-retrieval [--config NAME] --data DIR --pairs DIR --out DIR [--sail DIR] [--no-two-tower] [...]
sail report compare RUN_A RUN_B [--json]
sail build-ranking-data --data DIR --out DIR [--item-features DIR | --standin]
sail train-ranker --samples DIR --out DIR --variant control|emb|sid|both|placebo|all --trainer torchrec|lgbm|all

`sail COMMAND -h` prints a command's options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path


def _fail(msg: str) -> int:
    print(f"sail: error: {msg}", file=sys.stderr)
    return 2


def main_run(argv: Sequence[str]) -> int:
    from jobs.pipeline import SHIPPED_CONFIGS, STAGES, check_run_dir, load_config, run_pipeline
    from offline_eval.report import fmt_headline

    p = argparse.ArgumentParser(prog="sail run", description="Run (or resume) every pipeline stage.")
    p.add_argument("--config", default="demo", help=f"a shipped config {SHIPPED_CONFIGS} or a YAML file")
    p.add_argument("--run-dir", default=None, help="override the config's run_dir")
    p.add_argument(
        "--until",
        default=None,
        choices=[s.name for s in STAGES],
        help="stop after this stage (the later stages keep whatever they hold; a full run resumes from here)",
    )
    args = p.parse_args(argv)
    cfg = load_config(args.config, run_dir=args.run_dir)
    check_run_dir(cfg.run_dir)  # an unwritable run directory: one line now, not a traceback from the first stage
    res = run_pipeline(cfg, until=args.until)
    if args.until is not None:
        print(f"run directory: {res.run_dir} (stopped after {args.until})")
        return 0
    summary = json.loads((res.report_path.parent / "summary.json").read_text())
    data = summary["data"]
    print(f"run directory: {res.run_dir}")
    if summary.get("data_source"):
        print(f"data source: {summary['data_source']['label']}")
    print(
        f"data: {data['users']} users, {data['items']} items, {data['rows']['interactions']} interactions, "
        f"LT7 mean {data['lifetime']['lt7_mean']:.3f}"
    )
    for stage, why in summary["run"].get("notes", {}).items():
        print(f"{stage}: not run ({why})")
    for h in summary["headline"]:
        value, interval = fmt_headline(h)
        print(f"{h['name']}: {value}" + (f" {interval}" if interval != "n/a" else ""))
    print(f"report: {res.report_path}")
    return 0


def main_generate(argv: Sequence[str]) -> int:
    from sources.world import SIZES, WorldConfig, generate_world

    p = argparse.ArgumentParser(prog="sail generate", description="Write the generated short-video world.")
    p.add_argument("--size", choices=list(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    res = generate_world(WorldConfig.for_size(args.size, seed=args.seed), args.out, progress=True)
    print(json.dumps({"out": str(args.out), "seconds": round(res.seconds, 2), "counts": res.counts}, indent=2))
    return 0


def main_adapt_movielens(argv: Sequence[str]) -> int:
    """`sail adapt-movielens`: the shipped MovieLens mapping (`sources.logs.MOVIELENS`) through `adapt_logs`."""
    import dataclasses

    from jobs.pipeline import default_movielens_dir
    from sources.logs import MOVIELENS, PositivesMapping, adapt_logs

    p = argparse.ArgumentParser(prog="sail adapt-movielens", description="Map MovieLens into the contracts.")
    p.add_argument("--src", type=Path, default=None, help="MovieLens folder (default: $SAIL_MOVIELENS_DIR or shared)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--session-gap-s", type=int, default=MOVIELENS.session_gap_s, help="a new session after this gap")
    p.add_argument(
        "--positive-rating",
        type=float,
        default=MOVIELENS.positives.rating_threshold,
        help="lowest rating that counts as engaged",
    )
    p.add_argument(
        "--content-cutoff",
        type=datetime.fromisoformat,
        default=None,
        help="use only user tags written before this time (ISO, UTC; e.g. the embedding cutoff)",
    )
    args = p.parse_args(argv)
    if args.session_gap_s < 1:
        p.error(f"--session-gap-s must be >= 1, got {args.session_gap_s}")
    cutoff = args.content_cutoff
    if cutoff is not None and cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=UTC)
    mapping = dataclasses.replace(
        MOVIELENS,
        root=str((args.src or default_movielens_dir()).resolve()),
        session_gap_s=args.session_gap_s,
        positives=PositivesMapping(rating_threshold=args.positive_rating),
    )
    res = adapt_logs(mapping, args.out, content_cutoff=cutoff, echo=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"out": str(args.out), "counts": res.counts}, indent=2, default=str))
    return 0


def main_validate(argv: Sequence[str]) -> int:
    from sources.validate import ValidationConfig, validate_dataset

    p = argparse.ArgumentParser(prog="sail validate", description="Validate a data set; quarantine bad rows.")
    p.add_argument("--data", required=True, type=Path, help="data set directory (one folder per log table)")
    p.add_argument("--out", required=True, type=Path, help="where clean tables and quarantine/ are written")
    p.add_argument("--max-rejected-share", type=float, default=0.01)
    p.add_argument("--clock-skew-s", type=int, default=300)
    p.add_argument(
        "--batch-rows", type=int, default=ValidationConfig.batch_rows, help="rows of an event table judged at once"
    )
    args = p.parse_args(argv)
    res = validate_dataset(
        args.data,
        args.out,
        ValidationConfig(
            max_rejected_share=args.max_rejected_share, clock_skew_s=args.clock_skew_s, batch_rows=args.batch_rows
        ),
    )
    for name, r in res.tables.items():
        repaired = f"; repaired {r.repaired}" if r.repaired else ""
        print(f"{name}: {r.rows_ok}/{r.rows_in} kept; rejected {r.rejected or 'none'}{repaired}")
    return 0


def _lazy(target: str) -> Callable[[Sequence[str]], int]:
    """A subcommand implemented as `main(argv)` in another module, imported only when it runs."""

    def run(argv: Sequence[str]) -> int:
        import importlib

        module, _, fn = target.partition(":")
        return int(getattr(importlib.import_module(module), fn)(list(argv)) or 0)

    return run


def _from_run_config(argv: Sequence[str], main: Callable[..., int], base_of: str, sections: str, does: str) -> int:
    """`main(rest, base=...)` with the defaults of `jobs.pipeline.<base_of>(run config)` when `--config NAME|FILE` is
    given, else `main(argv)` with the command's own defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):
        print(
            f"--config NAME|FILE: a run config (shipped name or YAML) whose {sections} settings are the defaults of "
            f"the options below: the command then {does} what `sail run --config` {does}"
        )
    if known.config is None:
        return main(rest)
    from jobs import pipeline

    return main(rest, base=getattr(pipeline, base_of)(pipeline.load_config(known.config, run_dir=".")))


def main_train_embedding(argv: Sequence[str]) -> int:
    """`sail train-embedding [--config NAME|FILE] ...`: with --config, the options start from that run config's
    [embedding] settings (`jobs.pipeline.embedding_train_config`), so the command trains what `sail run` trains."""
    from embedding.cli import main_train

    return _from_run_config(argv, main_train, "embedding_train_config", "[embedding]", "trains")


def main_eval_retrieval(argv: Sequence[str]) -> int:
    """`sail eval-retrieval [--config NAME|FILE] ...`: with --config, the options start from that run config's
    retrieval table (`jobs.pipeline.retrieval_eval_config`: [retrieval] and [embedding], no ablations), so the
    command evaluates what `sail run --config` evaluates."""
    from embedding.cli import main_eval

    return _from_run_config(argv, main_eval, "retrieval_eval_config", "[retrieval] and [embedding]", "evaluates")


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": main_run,
    "generate": main_generate,
    "adapt-movielens": main_adapt_movielens,
    "validate": main_validate,
    "mine-pairs": _lazy("mining.mine_pairs:main"),
    "embed": _lazy("embedding.batch_infer:main"),
    "build-sids": _lazy("embedding.semantic_ids:main"),
    "build-ann": _lazy("embedding.ann:main"),
    "export": _lazy("export.export_features:main"),
    "train-embedding": main_train_embedding,
    "eval-retrieval": main_eval_retrieval,
    "build-ranking-data": _lazy("recsys.cli:main_build_ranking_data"),
    "train-ranker": _lazy("recsys.cli:main_train_ranker"),
}


def main_report(argv: Sequence[str]) -> int:
    """`sail report compare A B`."""
    if not argv or argv[0] != "compare":
        return _fail("usage: sail report compare RUN_A RUN_B [--json]")
    from offline_eval.compare import main as compare

    return compare(argv[1:])


COMMANDS["report"] = main_report


def _not_import_chatter(record: logging.LogRecord) -> bool:
    """False for fbgemm_gpu's "Successfully loaded: '<lib>.so'" lines (14 of them, on the root logger, at import)."""
    return not (
        record.levelno <= logging.INFO
        and "fbgemm_gpu" in record.pathname
        and record.getMessage().startswith("Successfully loaded")
    )


OWN_LOGGERS = ("sail", "jobs", "embedding", "recsys", "offline_eval")


def _for_console(record: logging.LogRecord) -> bool:
    """The console shows this project's lines and other libraries' warnings; a stage's log file keeps everything.

    Dropped from the console: other libraries' INFO lines (Feast's registry refreshes, fbgemm's TBE arguments,
    TorchRec's planner statistics) and deprecation notices that libraries raise at import or first use.
    """
    if record.name.split(".")[0] in OWN_LOGGERS or record.levelno >= logging.ERROR:
        return True
    if record.levelno < logging.WARNING:
        return False
    if record.name == "py.warnings":
        return not any(kind in record.getMessage() for kind in ("DeprecationWarning:", "FutureWarning:"))
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else _fail(f"unknown command {argv[0]!r}")
    root = logging.getLogger()
    had = list(root.handlers)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy, level in (
        ("faiss.loader", logging.WARNING),  # import chatter: faiss probing CPU-specific builds
        ("torch.fx._symbolic_trace", logging.ERROR),  # an API note on is_fx_tracing, raised inside TorchRec
    ):
        logging.getLogger(noisy).setLevel(level)
    if _not_import_chatter not in root.filters:  # fbgemm_gpu logs on the root logger: filter there, for every handler
        root.addFilter(_not_import_chatter)
    console = [h for h in root.handlers if h not in had]
    if console:  # the console is ours (not a host's, such as a test runner's): keep it to what users need
        logging.captureWarnings(True)  # library warnings become "py.warnings" records: kept in the stage logs
        for handler in console:
            handler.addFilter(_for_console)
    from core.io import SchemaError
    from core.media import UnsafeMediaPath
    from jobs.pipeline import RunDirLocked, StageFailed
    from sources.validate import TooManyRejectedError

    try:
        return COMMANDS[argv[0]](argv[1:])
    except (SchemaError, TooManyRejectedError, UnsafeMediaPath, FileNotFoundError, ValueError, RunDirLocked) as exc:
        return _fail(str(exc))
    except StageFailed as exc:  # its traceback is already logged (console and stage log): one line, not a second copy
        print(f"sail: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
