"""Does the SAIL embedding carry item quality once titles show it, and is the ranker's gain then larger on new items?

    .venv/bin/python benchmarks/quality_in_content.py RUN_DIR [RUN_DIR ...] [--out PATH_WITHOUT_SUFFIX]

Each RUN_DIR is a finished `sail run` on a generated world (the `data`, `embed` and `ranker` stages; e.g. the demo
and the same config with `data.quality_in_content: 0.9`). Per run it reports:

- how much of the world's item quality (`truth/item_truth`, never read by the pipeline) a linear probe recovers
  from the SAIL item embedding and, for comparison, from a TF-IDF of the titles: 5-fold cross-validated R^2 of a
  ridge regression (alpha chosen inside each fold);
- the TorchRec +both - control click AUC gain overall, on cold and new items, and the slice gain minus the
  gain elsewhere with its interval (`ranker/results.json`'s `slice_gains`).

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = np.logspace(-3, 3, 13)


def probe_r2(x, y: np.ndarray, seed: int = 0) -> float:
    """Mean 5-fold cross-validated R^2 of a ridge regression of y on x."""
    folds = KFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(RidgeCV(alphas=ALPHAS), x, y, cv=folds, scoring="r2").mean())


def run_row(run: Path) -> dict:
    cfg = json.loads((run / "run.json").read_text())["config"]
    quality = pl.read_parquet(run / "data" / "truth" / "item_truth").select("item_id", "quality")
    emb = pl.read_parquet(run / "embed" / "item_embeddings").select("item_id", "embedding", "model_version")
    emb = emb.join(quality, on="item_id").sort("item_id")
    items = pl.read_parquet(run / "data" / "items").select("item_id", "title").join(quality, on="item_id")
    items = items.sort("item_id")
    ranker = json.loads((run / "ranker" / "results.json").read_text())
    key = "torchrec/both-control"
    if key not in ranker.get("slice_gains", {}):
        raise SystemExit(f"{run}: ranker/results.json has no {key} slice gains (train torchrec control and both)")
    gains = ranker["slice_gains"][key]
    overall = ranker["differences"][key]["all"]["click"]["auc"]
    return {
        "run": str(run),
        "config": cfg["name"],
        "quality_in_content": cfg["data"].get("quality_in_content", 0.0),
        "model_version": emb["model_version"][0],
        "items": emb.height,
        "quality_r2_sail_embedding": round(
            probe_r2(np.stack(emb["embedding"].to_list()), emb["quality"].to_numpy()), 4
        ),
        "quality_r2_title_tfidf": round(
            probe_r2(TfidfVectorizer().fit_transform(items["title"].to_list()), items["quality"].to_numpy()), 4
        ),
        "click_auc_gain_all": overall,
        "slice_gains_click": {s: gains[s]["click"] for s in ("cold", "new")},
    }


def markdown(rows: list[dict]) -> str:
    def iv(d: dict) -> str:
        return f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

    out = [
        "# Item quality in titles: does the SAIL embedding carry it, and does the ranker gain more on new items?",
        "",
        "Quality R^2: 5-fold cross-validated ridge probe of the world's item quality. Gains: TorchRec +both - control"
        " test click AUC; slice difference = gain on the slice - gain elsewhere (user-level bootstrap 95% interval).",
        "",
        "| run (config) | quality_in_content | quality R^2 from SAIL embedding | from title TF-IDF |"
        " click AUC gain, all | cold: gain / difference | new: gain / difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, u = r["slice_gains_click"]["cold"], r["slice_gains_click"]["new"]
        out.append(
            f"| `{r['run']}` ({r['config']}) | {r['quality_in_content']} | {r['quality_r2_sail_embedding']:.3f} |"
            f" {r['quality_r2_title_tfidf']:.3f} | {iv(r['click_auc_gain_all'])} |"
            f" {c['gain_in_slice']:+.4f} / {iv(c)} | {u['gain_in_slice']:+.4f} / {iv(u)} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished `sail run` directories")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality_in_content"))
    args = p.parse_args(argv)
    rows = [run_row(r) for r in args.runs]
    Path(args.out + ".json").write_text(json.dumps({"benchmark": "quality_in_content", "runs": rows}, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
