"""Ranker knobs chosen on the valid days only: each setting's TorchRec validation score per variant, minus control's.

    python benchmarks/ranker_knobs.py --run runs/movielens_v3 --config movielens \\
        --set sail_dropout=0.3 --set sail_dropout=0.5 --set sid_levels=1 --set sid_levels=2

For the config's [ranker] section and then for each `--set key=value` on top of it, the ranker stage re-runs on
the run's ranking samples (`benchmarks/ranker_variants.py`'s path, every variant and seed) and this records, per
variant, the mean over seeds of the selected epoch's validation score (mean of the click and finish AUCs on the
valid days) and its difference from control. Test metrics are not read: a knob is picked on these numbers.
Writes benchmarks/results/ranker_knobs/<config>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from jobs.pipeline import _build, load_config, ranker_variants_args  # noqa: E402
from recsys.cli import run_train_ranker  # noqa: E402


def validation_scores(work: Path) -> dict[str, float]:
    """{variant: mean over its seeds of the best epoch's validation score} from a ranker work directory."""
    out = {}
    for variant_dir in sorted(p for p in (work / "torchrec").iterdir() if p.is_dir()):
        scores = [
            max(e["score"] for e in json.loads(f.read_text()).values())
            for f in sorted(variant_dir.rglob("checkpoints/validation.json"))
        ]
        out[variant_dir.name] = sum(scores) / len(scores)
    return out


def with_ranker_setting(cfg, assignment: str):
    """The run config with one [ranker] setting `key=value` (a JSON value) changed, range-checked."""
    key, _, value = assignment.partition("=")
    ranker = dataclasses.asdict(cfg.ranker) | {key: json.loads(value)}
    return dataclasses.replace(cfg, ranker=_build(type(cfg.ranker), ranker, "--set [ranker]"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished `sail run` directory (its ranking samples)")
    p.add_argument("--config", required=True, help="shipped config (or YAML) whose [ranker] settings are the base")
    p.add_argument("--set", action="append", default=[], help="a [ranker] setting key=value (JSON value) to try")
    p.add_argument("--work", type=Path, default=Path("/tmp/sail_ranker_knobs"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    base = load_config(args.config)
    samples = args.run / "ranking_samples" / "ranking_samples_ext"
    settings = {"base": base, **{s: with_ranker_setting(base, s) for s in args.set}}
    rows = {}
    for name, cfg in settings.items():
        work = args.work / name.replace("=", "-")
        a = ranker_variants_args(cfg, samples, work)
        run_train_ranker(dataclasses.replace(a, trainers=("torchrec",)))
        scores = validation_scores(work)
        rows[name] = {"valid": scores, "minus_control": {k: v - scores["control"] for k, v in scores.items()}}
        print(name, {k: round(v, 4) for k, v in rows[name]["minus_control"].items()}, flush=True)
    run_info = json.loads((args.run / "run.json").read_text())
    result = {
        "benchmark": "ranker_knobs",
        "config": args.config,
        "ranker": dataclasses.asdict(base.ranker),
        "samples_run": {"run_dir": str(args.run), "commit": run_info.get("code", {}).get("commit")},
        "settings": rows,
        "machine": describe_machine("torch"),
    }
    variants = list(next(iter(rows.values()))["valid"])
    lines = [
        f"# Ranker knobs on the valid days: `{args.config}` (samples of `{args.run}`)",
        "",
        "TorchRec validation score (mean click / finish AUC on the valid days, best epoch, mean of the seeds), "
        "variant minus control. Test metrics are not read here.",
        "",
        "| setting | control | " + " | ".join(v for v in variants if v != "control") + " |",
        "|---|---|" + "---|" * (len(variants) - 1),
    ]
    for name, row in rows.items():
        diffs = " | ".join(f"{row['minus_control'][v]:+.4f}" for v in variants if v != "control")
        lines.append(f"| {name} | {row['valid']['control']:.4f} | {diffs} |")
    out = args.out or Path(__file__).resolve().parent / "results" / "ranker_knobs" / f"{Path(args.config).stem}.json"
    write_results(out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
