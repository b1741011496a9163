"""Pick the embedding's knobs on a validation split cut from the training period, never on the held-out days.

A run's mine stage placed the embedding cutoff C (the last `holdout_frac` of the log's days are held out). This
script cuts the training period [first day, C) again, at C_v (the same fraction of its days), and builds a
validation view of the data: every item, and the interactions and searches before C only. It mines that view with
the run's miners (its own period layout) and trains each variant on it: a variant learns from events before C_v and
is scored on [C_v, C). Nothing at or after C is read, so the held-out period stays untouched by knob choices.

    python benchmarks/embedding_validation.py --config movielens [--run-dir DIR] [--variants a,b] [--out FILE]
    python benchmarks/embedding_validation.py --compare A.queries.npz:variant B.queries.npz:variant

Per variant it records the retrieval rows of MiniLM (the start), SAIL stages I-III and SAIL + CRE, the paired
differences CRE - MiniLM, CRE - stages I-III and stages I-III - MiniLM (same queries, cluster-bootstrap intervals),
the training seconds and pairs/s, and the knobs. Results: benchmarks/results/embedding_validation_<config>.json and
its Markdown twin, rewritten after every variant (`pending` lists those still to run), and `<out>.queries.npz`: every
column's per-query recalls with the queries' clusters. `--compare` pairs two such runs on the same split (say, a
config with and one without a modality): SAIL + CRE of A minus B per task, cluster-bootstrap intervals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"

VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "frozen_text": {"model_overrides": {"train_top_layers": 0}},
    "lr_3e-4": {"lr": 3e-4},
    "lr_3e-3": {"lr": 3e-3},
    "pretrained_lr_1": {"pretrained_lr_scale": 1.0},
    "cre_x2": {"steps_scale": {"steps_cre": 2.0}},
    "cre_x0.5": {"steps_scale": {"steps_cre": 0.5}},
    "no_id2item": {"id_weight": 0.0},
    "content_x0.5": {"steps_scale": {"steps_i": 0.5, "steps_ii": 0.5, "steps_iii": 0.5}},
    "content_x0.25": {"steps_scale": {"steps_i": 0.25, "steps_ii": 0.25, "steps_iii": 0.25}},
    "keep_2": {"keep_start_weight": 2.0},
    "keep_10": {"keep_start_weight": 10.0},
    "keep_10_cre_x2": {"keep_start_weight": 10.0, "steps_scale": {"steps_cre": 2.0}},
    "stage_i_only": {"steps_ii": 0, "steps_iii": 0},
    "content_minilm": {"data_overrides": {"content_similarity": "minilm"}},
    "content_minilm_i_only": {"data_overrides": {"content_similarity": "minilm"}, "steps_ii": 0, "steps_iii": 0},
    "content_minilm_cre_x2": {"data_overrides": {"content_similarity": "minilm"}, "steps_scale": {"steps_cre": 2.0}},
    "no_balancing": {"balancing": False},
    "micl_audio_1": {"micl_audio_weight": 1.0},
    "micl_audio_5": {"micl_audio_weight": 5.0},
}
"""Named knob settings: TrainConfig fields, `steps_scale` (stage -> factor on the run's steps) and
`model_overrides` (ModelConfig text-tower fields, written to a model JSON) and `data_overrides` (DataConfig fields)."""


def validation_view(
    run_dir: Path, out: Path, holdout_frac: float, mapping: Any = None, max_rejected_share: float = 0.01
) -> tuple[Path, Any, Any]:
    """`out/data`: the run's validated items plus its interactions and searches before the embedding cutoff C;
    returns (the view, C, the validation cutoff C_v). Items whose content was built from behaviour up to C (user
    tags, e.g. MovieLens') are rebuilt from behaviour before C_v with the run's `mapping` (a `sources.logs.LogsMapping`,
    `jobs.pipeline.logs_mapping`), as the held-out run's items are from behaviour before C."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from core import contracts as K
    from core.io import is_complete, read_table, write_json_atomic, write_table
    from core.timeline import embedding_cutoff
    from jobs.pipeline import run_cutoff
    from mining.mine_pairs import log_time_range

    cutoff = run_cutoff(run_dir)
    src, view = run_dir / "validate", out / "data"
    first, _ = log_time_range(src)
    val_cutoff = embedding_cutoff(first, cutoff - timedelta(microseconds=1), holdout_frac)
    ts = pa.scalar(cutoff, type=pa.timestamp("us", tz="UTC"))
    for name, schema in (("interactions", K.INTERACTIONS), ("searches", K.SEARCHES)):
        if not is_complete(view / name):
            t = read_table(src / name, schema)
            write_table(t.filter(pc.less(t["ts"], ts)), schema, view / name)
    manifest = json.loads((src / "manifest.json").read_text())
    if not is_complete(view / "items"):
        if manifest.get("content_cutoff") and mapping is not None:
            from sources.logs import NegativesMapping, adapt_logs

            items_only = dataclasses.replace(
                mapping, negatives=NegativesMapping()
            )  # sampled negatives: no item content
            again = adapt_logs(
                items_only, out / "readapted", content_cutoff=val_cutoff, max_rejected_share=max_rejected_share
            )
            write_table(read_table(again.out_dir / "items", K.ITEMS), K.ITEMS, view / "items")
        else:
            shutil.copytree(src / "items", view / "items", dirs_exist_ok=True)
    media = dict(manifest.get("media") or {})
    if media.get("root"):
        media["root"] = str((src / media["root"]).resolve())  # the view lives elsewhere: an absolute media root
    manifest.update(media=media, validation_view_of=str(src), embedding_cutoff=cutoff.isoformat())
    if manifest.get("content_cutoff"):
        manifest["content_cutoff"] = val_cutoff.isoformat()
    write_json_atomic(view / "manifest.json", manifest)
    return view, cutoff, val_cutoff


def mine_view(cfg, view: Path, out: Path, val_cutoff) -> Path:
    """The view's pairs in the period layout, cut at the validation cutoff."""
    from jobs.pipeline import mining_config
    from mining.mine_pairs import run_periods

    pairs = out / "pairs"
    meta = pairs / "mining.json"
    if not meta.exists() or json.loads(meta.read_text()).get("cutoff") != val_cutoff.isoformat():
        run_periods(mining_config(cfg, view, pairs), val_cutoff, heldout_top_k=cfg.mining.heldout_top_k)
    return pairs


def variant_config(base, spec: dict[str, Any], out: Path):
    """The TrainConfig of one variant."""
    from embedding.trainer import resolve_model_config

    spec = dict(spec)
    scales = spec.pop("steps_scale", {})
    model_over = spec.pop("model_overrides", {})
    data_over = spec.pop("data_overrides", {})
    if data_over:
        spec["data"] = dataclasses.replace(base.data, **data_over)
    changes = {k: max(1, round(getattr(base, k) * f)) if getattr(base, k) else 0 for k, f in scales.items()}
    cfg = dataclasses.replace(base, **changes, **spec)
    if model_over:
        mc = resolve_model_config(base.model)
        mc = dataclasses.replace(mc, text=dataclasses.replace(mc.text, **model_over))
        path = out / "model.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mc.to_dict()))
        cfg = dataclasses.replace(cfg, model=str(path))
    return cfg


def run(
    config: str,
    run_dir: Path | None,
    names: list[str],
    n_boot: int,
    max_queries: int,
    on_variant: Callable[[dict], None] | None = None,
) -> dict:
    """Every variant in `names`, one after another; `on_variant` gets the payload so far after each (`pending`: the
    variants still to run), so a long sweep leaves its finished rows behind."""
    import torch

    from embedding.data import load_pairs
    from embedding.retrieval_eval import (
        MINILM,
        SAIL,
        SAIL_CONTENT,
        EvalConfig,
        build_benchmarks,
        minilm_method,
        model_method,
        paired_differences,
        score_method,
    )
    from embedding.trainer import load_training_data, resolve_model_config, train
    from jobs.pipeline import embedding_train_config, load_config, logs_mapping, run_pipeline

    cfg = load_config(config, run_dir=str(run_dir) if run_dir else None)
    run_pipeline(cfg, until="mine")
    rd = Path(cfg.run_dir).resolve()
    work = rd / "validation"
    mapping = logs_mapping(cfg) if cfg.data.source != "generated" else None
    view, cutoff, val_cutoff = validation_view(
        rd, work, cfg.embedding.holdout_frac, mapping, cfg.validation.max_rejected_share
    )
    pairs = mine_view(cfg, view, work, val_cutoff)
    prepared = load_pairs(view, pairs)
    base = dataclasses.replace(embedding_train_config(cfg), progress=False)
    torch.set_num_threads(base.threads)
    data = load_training_data(base, view, pairs, work / "cache", resolve_model_config(base.model, base))
    ecfg = EvalConfig(train=base, max_queries=max_queries, n_boot=n_boot)
    bench = {t: b for t, b in build_benchmarks(prepared, data.store, ecfg).items() if t != "i2i_content"}
    per_query: dict[str, dict[str, Any]] = {MINILM: {}}
    minilm = score_method(minilm_method(data.store), bench, n_boot, 0, per_query[MINILM])
    results: dict[str, Any] = {}
    per_query_out = {f"clusters/{t}": b.clusters for t, b in bench.items()}  # the queries' identity, for --compare
    per_query_out |= {f"{MINILM}/{t}": r for t, r in per_query[MINILM].items()}

    def snapshot() -> dict[str, Any]:
        return {
            "config": config,
            "run_dir": str(rd),
            "heldout_cutoff_not_read": cutoff.isoformat(),
            "validation_cutoff": prepared.split_ts.isoformat(),
            "train_config": dataclasses.asdict(base),
            "queries": {t: len(b) for t, b in bench.items()},
            "variants": dict(results),
            "pending": names[len(results) :],
            "per_query": dict(per_query_out),
        }

    for name in names:
        vcfg = variant_config(base, VARIANTS[name], work / "variants" / name)
        t0 = time.perf_counter()
        reuse = data if vcfg.data == base.data else None  # the sources do not depend on the model's text tower
        res = train(vcfg, view, work / "variants" / name, pairs, work_dir=work / "cache", data=reuse)
        seconds = time.perf_counter() - t0
        pq = {MINILM: per_query[MINILM], SAIL_CONTENT: {}, SAIL: {}}
        table = {MINILM: minilm}
        for col, path in ((SAIL_CONTENT, res.content_model_path), (SAIL, res.model_path)):
            table[col] = score_method(model_method(path, data.store), bench, n_boot, 0, pq[col])
        comparisons = [(SAIL, MINILM), (SAIL, SAIL_CONTENT), (SAIL_CONTENT, MINILM)]
        for col in (SAIL_CONTENT, SAIL):
            for task, r in pq[col].items():
                per_query_out[f"{name}/{col}/{task}"] = r
        results[name] = {
            "spec": VARIANTS[name],
            "table": table,
            "paired": paired_differences(pq, bench, comparisons, n_boot, 0),
            "train_seconds": round(seconds, 1),
            "pairs_per_s": round(res.pairs_per_s, 1),
            "steps": res.total_steps,
        }
        print(json.dumps({name: {k: v for k, v in results[name].items() if k == "paired"}}, default=str), flush=True)
        shutil.rmtree(work / "variants" / name / "checkpoints", ignore_errors=True)
        if on_variant is not None:
            on_variant(snapshot())
    return snapshot()


def render(payload: dict) -> str:
    from embedding.retrieval_eval import TASK_LABEL

    lines = [
        f"# Embedding knobs on the validation split ({payload['config']})",
        "",
        f"Trained on events before {payload['validation_cutoff']}, scored on [{payload['validation_cutoff']}, "
        f"{payload['heldout_cutoff_not_read']}); the held-out period from {payload['heldout_cutoff_not_read']} is "
        "not read. Recall x 100; paired differences with cluster-bootstrap 95% intervals.",
        "",
    ]
    tasks = list(payload["queries"])
    head = "| variant | " + " | ".join(
        f"{TASK_LABEL[t]}: CRE / CRE - MiniLM / CRE - I-III / I-III - MiniLM" for t in tasks
    )
    lines += [head + " | train s |", "|---" * (len(tasks) + 2) + "|"]
    for name, r in payload["variants"].items():
        cells = []
        for t in tasks:
            cre = r["table"]["SAIL + CRE"][t]["recall"]
            d = [r["paired"][k][t] for k in ("SAIL + CRE - MiniLM (pretrained, text)",
                                              "SAIL + CRE - SAIL stages I-III",
                                              "SAIL stages I-III - MiniLM (pretrained, text)")]  # fmt: skip
            cells.append(
                f"{100 * cre:.2f} / "
                + " / ".join(f"{100 * c['diff']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]" for c in d)
            )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['train_seconds']} |")
    if payload.get("pending"):
        lines += ["", "Not run yet: " + ", ".join(payload["pending"]) + "."]
    first = next(iter(payload["variants"].values()), None)
    if first is not None:
        m = first["table"]["MiniLM (pretrained, text)"]
        lines += ["", "MiniLM: " + ", ".join(f"{TASK_LABEL[t]} {100 * m[t]['recall']:.2f}" for t in tasks), ""]
    return "\n".join(lines)


def save_per_query(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Every column's per-query recalls and each task's query clusters, written atomically (`--compare` reads it)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


def compare(a: str, b: str, n_boot: int = 500) -> dict[str, dict[str, float]]:
    """SAIL + CRE of run A's variant minus run B's, paired over the same validation queries: `a` and `b` are
    `<result>.queries.npz:<variant>` (two harness runs on the same split, e.g. one config with and one without a
    modality). A ValueError when the two runs' queries differ (another split, another data set)."""
    from core.bootstrap import cluster_bootstrap

    def load(spec: str) -> tuple[dict[str, np.ndarray], str]:
        path, _, variant = spec.rpartition(":")
        if not path:
            raise ValueError(f"{spec!r}: give <file>.queries.npz:<variant>")
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if not any(k.startswith(f"{variant}/") for k in arrays):
            raise ValueError(f"{path}: no variant {variant!r}")
        return arrays, variant

    (qa, va), (qb, vb) = load(a), load(b)
    out = {}
    for key in sorted(k for k in qa if k.startswith("clusters/")):
        task = key.split("/", 1)[1]
        if key not in qb or not np.array_equal(qa[key], qb[key]):
            raise ValueError(f"{a} and {b} were scored on different {task} queries: not paired")
        d = qa[f"{va}/SAIL + CRE/{task}"] - qb[f"{vb}/SAIL + CRE/{task}"]
        iv = cluster_bootstrap(lambda r: float(np.mean(r)), {"r": d}, qa[key], n_boot=n_boot, seed=0)
        out[task] = {"diff": iv.estimate, "low": iv.low, "high": iv.high, "queries": len(d)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="movielens")
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--variants", default="shipped", help=f"comma-separated, from {sorted(VARIANTS)}")
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--max-queries", type=int, default=2000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="no training: SAIL + CRE of A minus B, paired; each <result>.queries.npz:<variant> (--out: a result file)",
    )
    args = p.parse_args(argv)
    if args.compare:
        diffs = compare(*args.compare, n_boot=args.n_boot)
        lines = [f"# SAIL + CRE: {args.compare[0]} minus {args.compare[1]} (Recall x 100, paired, 95% interval)", ""]
        for task, c in diffs.items():
            interval = f"{100 * c['diff']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
            lines.append(f"- {task}: {interval} ({c['queries']} queries)")
        if args.out is not None:
            payload = {"a": args.compare[0], "b": args.compare[1], "n_boot": args.n_boot, "sail_cre_a_minus_b": diffs}
            write_results(args.out, {"machine": describe_machine("torch"), **payload}, "\n".join(lines) + "\n")
        else:
            print("\n".join(lines))
        return 0
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    out = args.out or RESULTS / f"embedding_validation_{args.config}.json"

    def save(payload: dict) -> None:  # after every variant: a stopped sweep keeps its finished rows
        payload = dict(payload)
        save_per_query(out.with_suffix(".queries.npz"), payload.pop("per_query"))
        write_results(out, {"machine": describe_machine("torch", "transformers"), **payload}, render(payload))

    run(args.config, args.run_dir, names, args.n_boot, args.max_queries, on_variant=save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
