"""Dose-response: does collaborative training pay off more as the content carries more of the collaborative latent?

For each value of the world knob `data.collab_in_content` (default 0 / 0.25 / 0.5 / 0.75; 0 is the negative
control: no modality shows the collaborative latent), the demo config is run with that value and the same seed, up
to the ranker (`sail run --until ranker`, one run directory per value). Per value it reports:

- retrieval on the held-out period (the run's own table): SAIL stages I-III and SAIL + CRE on co-engagement,
  cold-start i2i and seq2item, with the paired CRE - stages I-III interval, and the best content column (MiniLM,
  stages I-III) on cold start;
- the without-audio ablation: SAIL + CRE retrained with every item's audio dropped (everything else equal), paired
  with the full model on the same queries: how much of the gain the background sounds carry;
- the retrieval ceiling: co-engagement Recall@50 of vectors built from the world's truth, [topics | w x (the part
  of the collaborative latent that audio and frames show)] and [topics | w x (the whole latent)], the weight w
  picked on the benchmark itself (an optimistic bound, as in benchmarks/retrieval_ceiling.py);
- the ranker: TorchRec +both - control click AUC on cold items (no impression in the ranker's training window) and
  on the others, and the difference of the two gains with its user-level interval (`slice_gains`).

    python benchmarks/collab_in_content.py [--config demo] [--values 0,0.25,0.5,0.75] [--runs runs/collab_in_content]
        [--reuse 0.5=runs/demo]

Only what the table reads is run: the TorchRec control and +both rankers (no LightGBM, no +emb / +sid), no A/B.
`--reuse VALUE=RUN_DIR` takes a finished run of the same config at that knob value (the demo's own run, say)
instead of running it again; its config must equal the one this script would run, apart from the ranker grid.

Writes benchmarks/results/collab_in_content.json (one entry per value) and .md after each value, so a stopped
sweep keeps the values it finished (the .md names the ones not measured). A sweep may span several invocations: the
rows already in the file for other values are kept when their runs were made by the same code (the stage code hash
of `jobs.pipeline.code_hash`), and dropped, with a message, when not. Reports whatever comes out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "collab_in_content.json"
CEILING_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
TASKS = ("i2i_coengagement", "cold_start_i2i", "seq2item")


def truth_ceiling(run_dir: Path, store, bench, n_boot: int) -> dict[str, Any]:
    """Co-engagement Recall@50 of truth vectors: topics plus (the content-visible | the whole) collaborative latent,
    each at the best weight of CEILING_WEIGHTS (picked on the benchmark: an optimistic bound)."""
    import pyarrow.parquet as pq

    from benchmarks.retrieval_ceiling import truth_vectors
    from embedding.retrieval_eval import EmbeddingMethod, per_query_recall, score_method

    truth = pq.read_table(run_dir / "data" / "truth" / "item_truth").to_pydict()
    signals = pq.read_table(run_dir / "data" / "truth" / "item_signals").to_pydict()
    rho = json.loads((run_dir / "run.json").read_text())["config"]["data"]["collab_in_content"]
    n = len(store)
    dim = len(truth["collab_latent"][0])
    topics, whole, visible = [[] for _ in range(n)], np.zeros((n, dim)), np.zeros((n, dim))
    for i, ts, c in zip(truth["item_id"], truth["topics"], truth["collab_latent"], strict=True):
        r = store.index.get(int(i))
        if r is not None:
            topics[r], whole[r] = list(ts or []), c
    for i, s, a in zip(signals["item_id"], signals["sound_latent"], signals["style_latent"], strict=True):
        r = store.index.get(int(i))
        if r is not None:
            visible[r] = np.sqrt(rho / 2) * (np.asarray(s) + np.asarray(a))
    b = bench["i2i_coengagement"]
    zeros = np.zeros(n)
    no_text = lambda qs: np.zeros((len(qs), 1), np.float32)  # noqa: E731 (anchor queries only)
    out: dict[str, Any] = {}
    for name, latent in (("topics + visible collab", visible), ("topics + whole collab", whole)):
        if not np.any(latent):
            latent = np.ones_like(latent)  # rho = 0: nothing visible; a constant block changes no ranking
        methods = {
            w: EmbeddingMethod(truth_vectors(topics, latent, zeros, zeros, w, 0, 0), no_text) for w in CEILING_WEIGHTS
        }
        recall = {w: float(per_query_recall(m.retrieve(b), b).mean()) for w, m in methods.items()}
        best = max(recall, key=recall.get)
        cell = score_method(methods[best], {"i2i_coengagement": b}, n_boot, 0)["i2i_coengagement"]
        out[name] = {**cell, "weight": best}
    return out


def without_audio(run_dir: Path, cfg, store_data, bench, n_boot: int) -> dict[str, Any]:
    """SAIL + CRE retrained with every item's audio dropped, scored and paired with the run's SAIL + CRE."""
    from embedding.retrieval_eval import model_method, paired_differences, score_method
    from embedding.trainer import train
    from jobs.pipeline import embedding_train_config

    tcfg = dataclasses.replace(embedding_train_config(cfg), audio=False)  # progress as configured
    out_dir = run_dir / "ablations" / "without_audio"
    res = train(tcfg, run_dir / "validate", out_dir, run_dir / "mine", work_dir=out_dir / "work", data=store_data)
    per_query: dict[str, dict] = {"SAIL + CRE": {}, "w/o audio": {}}
    full = score_method(model_method(run_dir / "train_embedding" / "model.safetensors", store_data.store), bench,
                        n_boot, 0, per_query["SAIL + CRE"])  # fmt: skip
    ablated = score_method(model_method(res.model_path, store_data.store), bench, n_boot, 0, per_query["w/o audio"])
    paired = paired_differences(per_query, bench, [("SAIL + CRE", "w/o audio")], n_boot, 0)["SAIL + CRE - w/o audio"]
    return {"full": full, "without_audio": ablated, "full_minus_without_audio": paired}


def value_row(value: float, run_dir: Path, cfg) -> dict[str, Any]:
    """Everything the table reports for one knob value (its run finished up to the ranker)."""
    from embedding.data import load_pairs
    from embedding.retrieval_eval import EvalConfig, build_benchmarks
    from embedding.trainer import load_training_data, resolve_model_config
    from jobs.pipeline import embedding_train_config

    retrieval = json.loads((run_dir / "eval_retrieval" / "retrieval.json").read_text())
    ranker = json.loads((run_dir / "ranker" / "results.json").read_text())
    tcfg = embedding_train_config(cfg)
    prepared = load_pairs(run_dir / "validate", run_dir / "mine")
    data = load_training_data(tcfg, run_dir / "validate", run_dir / "mine", run_dir / "ablations" / "cache",
                              resolve_model_config(tcfg.model, tcfg))  # fmt: skip
    ecfg = EvalConfig(train=tcfg, max_queries=cfg.retrieval.max_queries, n_boot=cfg.retrieval.n_boot)
    bench = {t: b for t, b in build_benchmarks(prepared, data.store, ecfg).items() if t in TASKS}
    table, paired = retrieval["table"], retrieval["paired"]
    key = "torchrec/both-control"
    gains = ranker.get("slice_gains", {}).get(key, {}).get("cold", {}).get("click")
    diff_all = ranker.get("differences", {}).get(key, {}).get("all", {}).get("click", {}).get("auc")
    sizes = {sl: ranker["models"]["torchrec/control"].get(sl, {}).get("click", {}).get("n") for sl in ("all", "cold")}
    return {
        "collab_in_content": value,
        "run_dir": str(run_dir),
        "code": json.loads((run_dir / "run.json").read_text())["code"],
        "retrieval": {c: {t: table[c].get(t) for t in TASKS} for c in table if c != "ItemCF (covisit)"},
        "cre_minus_content_stages": paired.get("SAIL + CRE - SAIL stages I-III", {}),
        "cre_minus_minilm": paired.get("SAIL + CRE - MiniLM (pretrained, text)", {}),
        "targets": retrieval.get("targets", {}),
        "without_audio": without_audio(run_dir, cfg, data, bench, cfg.retrieval.n_boot),
        "ceiling": truth_ceiling(run_dir, data.store, bench, cfg.retrieval.n_boot),
        "ranker_click_auc_gain_all": diff_all,
        "ranker_cold_slice_gain": gains,
        "ranker_test_impressions": sizes,
    }


def _iv(c: dict | None, scale: float = 100.0, key: str = "diff") -> str:
    if not c:
        return "n/a"
    return f"{scale * c[key]:+.1f} [{scale * c['low']:+.1f}, {scale * c['high']:+.1f}]"


def markdown(payload: dict) -> str:
    lines = [
        "# Dose-response: collaborative signal visible in content (data.collab_in_content)",
        "",
        f"Config `{payload['config']}` at each knob value, same seed; held-out retrieval (Recall x 100, paired "
        "cluster-bootstrap 95% intervals) and the TorchRec ranker's click AUC gains (user-level intervals). "
        "0 is the negative control.",
        "",
        "| knob | co-eng. I-III / CRE | CRE - I-III | cold I-III / CRE | CRE - I-III | seq2item I-III / CRE | "
        "CRE - I-III | CRE - w/o audio (co-eng.) | ceiling: visible / whole | ranker gain all | cold gain - other |",
        "|" + "---|" * 11,
    ]
    rows = payload["values"]
    for r in rows:
        t, p = r["retrieval"], r["cre_minus_content_stages"]
        cells = [f"{r['collab_in_content']:g}"]
        for task in TASKS:
            a, b = t["SAIL stages I-III"][task], t["SAIL + CRE"][task]
            cells += [f"{100 * a['recall']:.1f} / {100 * b['recall']:.1f}", _iv(p.get(task))]
        cells.append(_iv(r["without_audio"]["full_minus_without_audio"].get("i2i_coengagement")))
        c = r["ceiling"]
        cells.append(
            f"{100 * c['topics + visible collab']['recall']:.1f} / {100 * c['topics + whole collab']['recall']:.1f}"
        )
        g, d = r["ranker_cold_slice_gain"], r["ranker_click_auc_gain_all"]
        cells.append("n/a" if not d else f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
        cells.append("n/a" if not g else f"{g['value']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    missing = [v for v in payload.get("values_requested", []) if v not in {r["collab_in_content"] for r in rows}]
    if missing:
        done = ", ".join(f"{v:g}" for v in missing)
        lines += ["", f"Not measured yet: {done} (the file is written after each value)."]
    made = {}
    for r in rows:
        code = r.get("code") or {}
        label = f"commit {str(code.get('commit', '?'))[:7]}" + (" (uncommitted changes)" if code.get("dirty") else "")
        made.setdefault(label, []).append(f"{r['collab_in_content']:g}")
    if made:
        lines += ["", "Runs made at " + "; ".join(f"{k}: {', '.join(v)}" for k, v in made.items()) + "."]
    lines += [
        "",
        "Cold (ranker): test impressions of items with no impression in the ranker's training window. Ceiling: truth "
        "vectors (topics + the collaborative latent's content-visible part / all of it), weight picked on the "
        "benchmark itself.",
        "",
    ]
    return "\n".join(lines)


def _row_code_hash(row: dict) -> str | None:
    """The stage code hash a row's run was made with (older rows: read from the run's run.json, if still there)."""
    if "code" in row:
        return row["code"].get("hash")
    try:
        return json.loads((Path(row["run_dir"]) / "run.json").read_text())["code"]["hash"]
    except (OSError, KeyError, ValueError):
        return None


def kept_rows(previous: dict | None, measuring: list[float], code: str) -> tuple[list[dict], list[float]]:
    """The rows of an earlier invocation's payload to keep beside this one's: those of values not measured now whose
    runs were made by code `code`. Returns them and the values that earlier invocation requested."""
    if not previous:
        return [], []
    kept = []
    for row in previous.get("values", []):
        v = row["collab_in_content"]
        if v in measuring:
            continue
        if _row_code_hash(row) == code:
            kept.append(row)
        else:
            print(f"collab_in_content {v:g}: dropped, its run was made by other code ({row.get('run_dir')})")
    return kept, [float(v) for v in previous.get("values_requested", [])]


def _check_reused(run_dir: Path, cfg) -> None:
    """A reused run must be of this config (ranker grid and A/B aside) and have reached the ranker."""
    recorded = json.loads((run_dir / "run.json").read_text())["config"]
    want = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    for section in ("data", "mining", "embedding", "retrieval", "features"):
        if recorded.get(section) != want.get(section):
            raise SystemExit(f"--reuse {run_dir}: its [{section}] differs from the {cfg.name} config at this value")
    if not (run_dir / "ranker" / "results.json").exists():
        raise SystemExit(f"--reuse {run_dir}: no ranker/results.json (run it up to the ranker first)")


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import code_hash, load_config, run_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="demo")
    p.add_argument("--values", default="0,0.25,0.5,0.75")
    p.add_argument("--runs", type=Path, default=Path("runs/collab_in_content"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--reuse", action="append", default=[], metavar="VALUE=RUN_DIR",
                   help="a finished run of the same config at this knob value")  # fmt: skip
    args = p.parse_args(argv)
    base = load_config(args.config)
    reuse = {float(k): Path(d) for k, d in (x.split("=", 1) for x in args.reuse)}
    values = [float(x) for x in args.values.split(",") if x]
    previous = json.loads(args.out.read_text()) if args.out.exists() else None
    if previous is not None and previous.get("config") != args.config:
        previous = None
    kept, requested = kept_rows(previous, values, code_hash())
    requested = sorted(set(requested) | set(values))
    rows: list[dict] = []
    for v in values:
        run_dir = reuse.get(v, args.runs / f"rho_{v:g}")
        cfg = dataclasses.replace(base, run_dir=str(run_dir), data=dataclasses.replace(base.data, collab_in_content=v))
        if v in reuse:
            _check_reused(run_dir, cfg)
        else:
            cfg = dataclasses.replace(
                cfg,
                ranker=dataclasses.replace(cfg.ranker, variants=("control", "both"), trainers=("torchrec",)),
                ab=dataclasses.replace(cfg.ab, enabled=False),
            )
            run_pipeline(cfg, until="ranker")
        rows.append(value_row(v, run_dir.resolve(), cfg))
        print(json.dumps({"collab_in_content": v, "cre_minus_content_stages": rows[-1]["cre_minus_content_stages"],
                          "ranker_cold_slice_gain": rows[-1]["ranker_cold_slice_gain"]}), flush=True)  # fmt: skip
        payload = {
            "benchmark": "collab_in_content",
            "machine": describe_machine("torch", "torchrec"),
            "config": args.config,
            "base_config": dataclasses.asdict(base),
            "values_requested": requested,
            "values": sorted(kept + rows, key=lambda r: r["collab_in_content"]),
        }
        write_results(args.out, payload, markdown(payload))  # after each value: a stopped sweep keeps what it did
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
