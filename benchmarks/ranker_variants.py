"""The ranker stage of a shipped config, re-run on the ranking samples of an earlier `sail run`: every variant
(placebo included), the model chosen on the valid days, each TorchRec seed's own test AUC next to the seeds' mean.

The samples (and the SAIL features in them) are the earlier run's; the ranker settings, its code and the
evaluation are this commit's. Both commits are recorded.

    python benchmarks/ranker_variants.py --run runs/movielens --config movielens \
        [--work /tmp/sail_ranker_variants] [--out benchmarks/results/ranker_variants/movielens.json]

Writes the JSON (and .md beside it): the config's ranker section, the samples' run and commit, the table of
`recsys.evaluate.evaluate_runs` (`results`), and per trainer and variant the click AUC minus control on all, cold
and new test impressions, the cold / new slice-gain tests and the per-seed test AUCs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from benchmarks.ranker_knobs import with_ranker_setting  # noqa: E402
from core.metrics import auc  # noqa: E402
from jobs.pipeline import load_config, ranker_variants_args  # noqa: E402
from recsys.cli import run_train_ranker  # noqa: E402
from recsys.evaluate import load_scores  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ranker_variants"
SLICES = ("all", "cold", "new")


def seed_aucs(work: Path, key: str, task: str = "click") -> list[dict]:
    """Test AUC of each TorchRec seed's own model of `key` ("torchrec/<variant>"): the variant directory holds seed
    0, `seed-<k>/` the others."""
    base = work / key
    out = []
    for d in [base, *sorted(base.glob("seed-*"))]:
        s = load_scores(d / "scores.npz")
        info = json.loads((d / "train.json").read_text())
        out.append(
            {
                "seed": info["config"]["seed"],
                "selected_epoch": info["selected_epoch"],
                "test_auc": auc(s[f"label_{task}"], s[task]),
            }
        )
    return out


def summarise(results: dict, work: Path, trainers: list[str], variants: list[str]) -> dict:
    """Per trainer and treatment variant: click AUC minus control (all / cold / new) and the slice-gain tests."""
    out: dict = {}
    for t in trainers:
        for v in variants:
            key = f"{t}/{v}"
            row: dict = {"auc": {sl: results["models"][key][sl]["click"]["auc"] for sl in SLICES}}
            row["selection"] = results.get("selection", {}).get(key, {})
            if v != "control":
                diff = results["differences"][f"{key}-control"]
                row["minus_control"] = {sl: diff[sl]["click"]["auc"] for sl in SLICES}
                gains = results["slice_gains"][f"{key}-control"]
                row["slice_gain"] = {sl: gains[sl]["click"] for sl in ("cold", "new") if sl in gains}
            if t == "torchrec":
                row["seeds"] = seed_aucs(work, key)
            out[key] = row
    return out


def _iv(m: dict) -> str:
    return f"{m['value']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]"


def markdown(result: dict) -> str:
    src = result["samples_run"]
    lines = [
        f"# Ranker variants on `{result['samples']}` ({result['config']} ranker settings"
        + "".join(f", {c}" for c in result.get("changed", []))
        + ")",
        "",
        f"Samples and SAIL features: run `{src['run_dir']}` at commit {str(src['commit'])[:7]}; ranker, evaluation: "
        f"commit {str(result['machine']['code']['commit'])[:7]}. Click AUC on the test period; intervals: paired "
        "user-level bootstrap 95%. Cold: items with no impression in the ranker's training window; new: created "
        "in the test window. Slice gain: the gain on the slice minus the gain on all other impressions.",
        "",
        "| trainer | variant | AUC all | minus control: all | cold | new | cold gain - other | chosen on valid | "
        "per-seed test AUC |",
        "|" + "---|" * 9,
    ]
    for key, row in result["summary"].items():
        t, v = key.split("/")
        diff = row.get("minus_control")
        cells = [_iv(diff[sl]) for sl in SLICES] if diff else ["—"] * 3
        gain = _iv(row["slice_gain"]["cold"]) if row.get("slice_gain", {}).get("cold") else "—"
        sel = row["selection"]
        chosen = (
            ", ".join(f"s{m['seed']}: epoch {m['selected_epoch']}/{m['epochs_trained']}" for m in sel["members"])
            if "members" in sel
            else (
                f"epoch {sel['selected_epoch']}/{sel['epochs_trained']}"
                if "selected_epoch" in sel
                else ", ".join(f"{k.removesuffix('_best_iteration')} {n} rounds" for k, n in sel.items())
            )
        )
        seeds = ", ".join(f"{s['test_auc']:.4f}" for s in row.get("seeds", [])) or "—"
        lines.append(
            f"| {t} | {v} | {row['auc']['all']['value']:.4f} | {' | '.join(cells)} | {gain} | {chosen} | {seeds} |"
        )
    lines += ["", f"Trained and evaluated in {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished `sail run` directory (its ranking samples)")
    p.add_argument("--config", required=True, help="shipped config (or YAML) whose [ranker] settings to use")
    p.add_argument("--work", type=Path, default=Path("/tmp/sail_ranker_variants"))
    p.add_argument("--out", type=Path, default=None, help="default: results/ranker_variants/<config>.json")
    p.add_argument("--set", action="append", default=[], help="a [ranker] setting key=value (JSON value) to change")
    args = p.parse_args(argv)
    cfg = load_config(args.config, run_dir=str(args.work / "unused"))
    for assignment in args.set:
        cfg = with_ranker_setting(cfg, assignment)
    r = cfg.ranker
    samples = args.run / "ranking_samples" / "ranking_samples_ext"
    if not samples.is_dir():
        p.error(f"{samples} not found: --run must be a finished `sail run` directory")
    run_info = json.loads((args.run / "run.json").read_text())
    a = ranker_variants_args(cfg, samples, args.work)
    info = describe_machine("torch", "lightgbm")
    t0 = time.perf_counter()
    res = run_train_ranker(a)
    seconds = time.perf_counter() - t0
    results = json.loads(res.results_json.read_text())
    result = {
        "benchmark": "ranker_variants",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "config": args.config,
        "ranker": dataclasses.asdict(r),
        "changed": args.set,
        "samples": str(samples),
        "samples_run": {"run_dir": str(args.run), "commit": run_info.get("code", {}).get("commit")},
        "seconds": seconds,
        "summary": summarise(results, args.work, list(r.trainers), list(r.variants)),
        "results": results,
    }
    write_results(args.out or RESULTS / f"{Path(args.config).stem}.json", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
