"""Is the +both ranker's gain larger on cold-start items? The TorchRec control and +both variants trained under a
few settings on one run's ranking samples, each evaluated with the slice-gain test.

For every setting, `recsys.cli.run_variants` trains control and +both (TorchRec, 1 thread) on the same samples and
evaluates them; the table reports the click AUC of each, the +both - control gain on all / cold / new test
impressions, and `slice_gains` (gain on the slice - gain on the other impressions, same user resamples).
Settings: the pipeline's default (DCNv2 + DLRM dots interaction, 2 epochs), item-id dropout 0.2 (the OOV row that
cold items use is trained; the model learns to rank without the item id), 4 epochs (the id tables trained
further), and the other interactions: DCNv2 only (2 and 4 epochs) and DLRM dots only. The dots give the control an
explicit target-item x history-bag similarity, learned from ids, next to the one the +both variant reads from SAIL.

    python benchmarks/ranker_cold_start.py --samples runs/demo/ranking_samples/ranking_samples_ext \
        [--work /tmp/cold] [--n-boot 200]

Writes benchmarks/results/ranker_cold_start.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from recsys.cli import run_variants  # noqa: E402
from recsys.model import RankerConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "default (DCNv2 + dots, 2 epochs)": {},
    "item-id dropout 0.2": {"item_id_dropout": 0.2},
    "4 epochs": {"epochs": 4},
    "DCNv2 only": {"ranker": RankerConfig(embedding_dim=16, interaction="dcn")},
    "DCNv2 only, 4 epochs": {"ranker": RankerConfig(embedding_dim=16, interaction="dcn"), "epochs": 4},
    "DLRM dots only": {"ranker": RankerConfig(embedding_dim=16, interaction="dot")},
}


def _row(name: str, res: dict, seconds: float) -> dict:
    models, diff = res["models"], res["differences"]["torchrec/both-control"]
    gains = res["slice_gains"]["torchrec/both-control"]
    return {
        "setting": name,
        "seconds": round(seconds, 1),
        "auc": {
            v: {sl: models[f"torchrec/{v}"][sl]["click"]["auc"] for sl in ("all", "cold", "new")}
            for v in ("control", "both")
        },
        "gain": {sl: diff[sl]["click"]["auc"] for sl in ("all", "cold", "new")},
        "slice_gain": {sl: gains[sl]["click"] for sl in ("cold", "new")},
    }


def control_vs_both(
    name: str, samples: Path, work: Path, train_kwargs: dict, n_boot: int, started: float | None = None
) -> dict:
    """Trains TorchRec control and +both on `samples` and returns their table row (`_row`); its seconds count from
    `started` (a `time.perf_counter()` value; default: now)."""
    t0 = time.perf_counter() if started is None else started
    res = run_variants(samples, work, ["control", "both"], ["torchrec"], train_kwargs, {}, n_boot)
    row = _row(name, json.loads(res.results_json.read_text()), time.perf_counter() - t0)
    print(f"{name}: done in {row['seconds']} s", flush=True)
    return row


def _iv(m: dict, sign: bool = True) -> str:
    f = "+.4f" if sign else ".4f"
    return f"{m['value']:{f}} [{m['low']:{f}}, {m['high']:{f}}]"


def markdown(rows: list[dict], samples: str) -> str:
    lines = [
        "# Is the +both ranker's gain larger on cold-start items?",
        "",
        f"TorchRec control and +both, click AUC on the test period of `{samples}` (user-level bootstrap 95% "
        "intervals). Cold: items with no impression in the ranker's training window; new: items created in the "
        "test window.",
        "",
        "| setting | control AUC all / cold / new | +both AUC all / cold / new | gain all | gain cold | "
        "gain new | cold gain - other gain | new gain - other gain |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        a = {
            v: " / ".join(f"{r['auc'][v][sl]['value']:.4f}" for sl in ("all", "cold", "new"))
            for v in ("control", "both")
        }
        g, s = r["gain"], r["slice_gain"]
        lines.append(
            f"| {r['setting']} | {a['control']} | {a['both']} | {_iv(g['all'])} | {_iv(g['cold'])} | "
            f"{_iv(g['new'])} | {_iv(s['cold'])} | {_iv(s['new'])} |"
        )
    larger = [r["setting"] for r in rows if r["slice_gain"]["cold"]["low"] > 0]
    lines += [
        "",
        "Larger on cold-start items (interval of the gain difference above zero): "
        + (", ".join(larger) if larger else "in none of these settings")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=Path, required=True, help="ranking_samples_ext of a `sail run`")
    p.add_argument("--work", type=Path, default=Path("/tmp/sail_cold_start"))
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "ranker_cold_start.json")
    args = p.parse_args(argv)
    info = describe_machine("torch")
    rows = []
    for i, (name, extra) in enumerate(SETTINGS.items()):
        kw = {"ranker": RankerConfig(embedding_dim=16), "threads": 1, "seed": 0, **extra}
        rows.append(control_vs_both(name, args.samples, args.work / f"s{i}", kw, args.n_boot))
    result = {
        "benchmark": "ranker_cold_start",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "samples": str(args.samples),
        "n_boot": args.n_boot,
        "rows": rows,
    }
    write_results(args.out, result, markdown(rows, str(args.samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
