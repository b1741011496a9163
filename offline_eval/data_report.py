"""The data report: what the validated data set holds, written as `summary.json` and a self-contained HTML page.

This is the report of the stages that exist so far (data and validation); the offline A/B report extends it.
"""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from core import contracts as K
from core.io import read_table, write_json_atomic
from offline_eval.lifetime import summarise_lt


def _read(path: Path, schema: K.TableSchema) -> pl.DataFrame:
    return pl.from_arrow(read_table(path, schema))


def summarise_dataset(valid_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts, engagement rates, cold-start share and LT proxies of a validated data set."""
    valid_dir = Path(valid_dir)
    manifest = json.loads((valid_dir / "manifest.json").read_text())
    validation = json.loads((valid_dir / "validation.json").read_text())
    items = _read(valid_dir / "items", K.ITEMS)
    imps = _read(valid_dir / "interactions", K.INTERACTIONS)
    searches = _read(valid_dir / "searches", K.SEARCHES)
    activity = _read(valid_dir / "user_activity", K.USER_ACTIVITY)

    log_start = imps["ts"].min() if imps.height else None
    cold = items.filter(pl.col("created_ts") > log_start).height if log_start is not None else 0
    rate = lambda col: float(imps[col].mean()) if imps.height else float("nan")  # noqa: E731
    return {
        "dataset": manifest.get("dataset"),
        "size": manifest.get("size"),
        "seed": manifest.get("seed"),
        "log_start": str(log_start) if log_start is not None else None,
        "log_end": str(imps["ts"].max()) if imps.height else None,
        "rows": {name: int(t["rows_ok"]) for name, t in validation["tables"].items()},
        "rejected": {name: t["rejected"] for name, t in validation["tables"].items()},
        "repaired": {name: t.get("repaired") or {} for name, t in validation["tables"].items()},
        "users": int(imps["user_id"].n_unique()) if imps.height else 0,
        "items": items.height,
        "cold_start_items": cold,
        "click_rate": rate("clicked"),
        "finish_rate": rate("finished"),
        "like_rate": rate("liked"),
        "search_click_rate": float(searches["clicked"].mean()) if searches.height else None,
        "lifetime": summarise_lt(activity),
    }


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(summary: dict[str, Any], title: str) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else v  # noqa: E731
    overview = [
        (k, fmt(summary[k]))
        for k in ("dataset", "size", "seed", "log_start", "log_end", "users", "items", "cold_start_items")
    ]
    rates = [(k, fmt(summary[k])) for k in ("click_rate", "finish_rate", "like_rate", "search_click_rate")]
    lt = [(k, fmt(v)) for k, v in summary["lifetime"].items()]
    rows = [(k, v) for k, v in summary["rows"].items()]
    rejected = [(k, v or "none") for k, v in summary["rejected"].items()]
    repaired = [(k, v or "none") for k, v in (summary.get("repaired") or {}).items()]
    mining = summary.get("mining")
    mining_html = f"<h2>Mined pairs</h2>{_table(list(mining.items()))}" if mining else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1.5em}}
th,td{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Generated {html.escape(summary["generated"])}. Stages run so far: data, validate, mine, report.</p>
<h2>Data set</h2>{_table(overview)}
<h2>Rows kept after validation</h2>{_table(rows)}
<h2>Rows quarantined, by reason</h2>{_table(rejected)}
<h2>Values repaired in kept rows (media references dropped, text bytes replaced)</h2>{_table(repaired)}
<h2>Engagement</h2>{_table(rates)}
{mining_html}
<h2>Lifetime proxies from the logs</h2>
<p>LT<sub>w</sub> of a user active on day t0 = active days in t0..t0+w-1 (only fully observed windows).</p>
{_table(lt)}
</body></html>
"""


def summarise_mining(mining_json: Path) -> dict[str, Any]:
    """The pair counts of the mining stage (`mine/mining.json`): per period when it wrote the period layout (the
    pipeline's mine stage), else of the one run."""
    m = json.loads(mining_json.read_text())
    if "periods" in m:
        per = m["periods"]
        return {
            "engine": m.get("engine"),
            "cutoff": m.get("cutoff"),
            "positive_events_before_cutoff": per.get("train", {}).get("positive_events"),
            "positive_events_from_cutoff": per.get("heldout", {}).get("positive_events"),
            "train_i2i_pairs": per.get("train", {}).get("pairs", {}).get("i2i", {}),
            "train_q2i_pairs": per.get("train", {}).get("pairs", {}).get("q2i"),
            "heldout_i2i_pairs": per.get("heldout", {}).get("pairs", {}).get("i2i", {}),
            "seq2item_samples": per.get("full", {}).get("pairs", {}).get("seq2item", {}),
            "seconds": m.get("seconds"),
        }
    return {
        "engine": m.get("engine"),
        "positive_events": m.get("positive_events"),
        "i2i_pairs": m.get("pairs", {}).get("i2i", {}),
        "q2i_pairs": m.get("pairs", {}).get("q2i"),
        "seq2item_samples": m.get("pairs", {}).get("seq2item", {}),
        "split_ts": m.get("split_ts"),
    }


def write_data_report(
    valid_dir: str | os.PathLike, out_dir: str | os.PathLike, title: str, mining_json: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Writes `summary.json` and `report.html` into `out_dir`; returns the summary."""
    out_dir = Path(out_dir)
    summary = summarise_dataset(valid_dir)
    if mining_json is not None:
        summary["mining"] = summarise_mining(Path(mining_json))
    summary["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json_atomic(out_dir / "summary.json", summary)
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(render_html(summary, title))
    tmp.replace(out_dir / "report.html")
    return summary
