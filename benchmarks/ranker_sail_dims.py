"""The Matryoshka size of the SAIL vector the ranker reads, chosen on the valid days: for each size, the ranking
samples are rebuilt from a finished run's exported features with that prefix (the vector and `user_hist_sim`
both use it) and control and +emb train with the config's [ranker] settings; this records each trainer's
validation score of +emb minus control's (TorchRec: the selected point's mean task AUC, mean over seeds;
LightGBM: the chosen model's mean task AUC on valid). Test metrics are not read.

    python benchmarks/ranker_sail_dims.py --run runs/movielens_v3 --config movielens --dims 16 32 64 0

Writes benchmarks/results/ranker_sail_dims/<config>.json and .md (0: the whole vector).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from benchmarks.ranker_knobs import validation_scores, with_ranker_setting  # noqa: E402
from jobs.pipeline import load_config, ranker_variants_args, ranking_samples_config  # noqa: E402
from recsys.cli import run_train_ranker  # noqa: E402
from recsys.features import TASKS  # noqa: E402
from recsys.samples import run as build_samples  # noqa: E402


def lgbm_validation(work: Path) -> dict[str, float]:
    """{variant: mean over tasks of the chosen LightGBM model's valid AUC}."""
    out = {}
    for d in sorted(p for p in (work / "lgbm").iterdir() if p.is_dir()):
        info = json.loads((d / "train.json").read_text())
        out[d.name] = sum(info[f"{t}_valid_auc"] for t in TASKS) / len(TASKS)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished `sail run` directory (its export and logs)")
    p.add_argument("--config", required=True, help="shipped config (or YAML) whose [ranker] settings to use")
    p.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 0], help="prefix sizes (0: the whole vector)")
    p.add_argument("--work", type=Path, default=Path("/tmp/sail_ranker_sail_dims"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cfg = with_ranker_setting(load_config(args.config), 'variants=["control", "emb"]')
    r = cfg.ranker
    rows = {}
    for dims in args.dims:
        work = args.work / f"dims-{dims}"
        res = build_samples(replace(ranking_samples_config(cfg, args.run, work / "samples", dims), master="local[2]"))
        a = replace(ranker_variants_args(cfg, res.ext_path, work / "ranker"), n_boot=50)
        run_train_ranker(a)
        row = {"embedding_dim": res.embedding_dim}
        if "torchrec" in a.trainers:
            v = validation_scores(work / "ranker")
            row["torchrec"] = {"valid": v, "emb_minus_control": v["emb"] - v["control"]}
        if "lgbm" in a.trainers:
            v = lgbm_validation(work / "ranker")
            row["lgbm"] = {"valid": v, "emb_minus_control": v["emb"] - v["control"]}
        rows[str(dims)] = row
        print(dims, {k: round(x["emb_minus_control"], 4) for k, x in row.items() if isinstance(x, dict)}, flush=True)
    trainers = [t for t in ("torchrec", "lgbm") if t in next(iter(rows.values()))]
    best = max(rows, key=lambda d: sum(rows[d][t]["emb_minus_control"] for t in trainers))
    run_info = json.loads((args.run / "run.json").read_text())
    result = {
        "benchmark": "ranker_sail_dims",
        "config": args.config,
        "ranker": {"residual": r.residual, "seeds": r.seeds, "epochs": r.epochs},
        "samples_run": {"run_dir": str(args.run), "commit": run_info.get("code", {}).get("commit")},
        "sizes": rows,
        "best_on_valid": int(best),
        "machine": describe_machine("torch", "lightgbm"),
    }
    lines = [
        f"# SAIL vector size for the ranker, on the valid days: `{args.config}` (features of `{args.run}`)",
        "",
        "+emb minus control validation score (mean click / finish AUC on the valid days of the chosen model; "
        "TorchRec: mean of the seeds). The vector and the history similarity both use the size. Test metrics "
        "are not read.",
        "",
        "| size | " + " | ".join(trainers) + " | sum |",
        "|---|" + "---|" * (len(trainers) + 1),
    ]
    for d, row in rows.items():
        diffs = [row[t]["emb_minus_control"] for t in trainers]
        name = f"{d} (all {row['embedding_dim']})" if d == "0" else d
        lines.append(f"| {name} | " + " | ".join(f"{x:+.4f}" for x in diffs) + f" | {sum(diffs):+.4f} |")
    lines += ["", f"Best on the valid days: {best} (0: the whole vector)."]
    results = Path(__file__).resolve().parent / "results" / "ranker_sail_dims"
    out = args.out or results / f"{Path(args.config).stem}.json"
    write_results(out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
