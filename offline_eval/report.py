"""The run report: `summary.json` checked against a JSON Schema, one self-contained `report.html` and `summary.md`.

    paths = write_run_report(summary, out_dir, title="SAIL pipeline run 'demo'")

`summary` holds the run's sections (documented field by field in docs/REPORT.md; the schema is the packaged
`offline_eval/summary.schema.json`, JSON Schema draft 2020-12): `schema_version`, `run` and `data` always; the
`retrieval`, `ranker`, `ab`, `headline` and `reference` sections when their stage ran (null or absent
otherwise). `ab` is `ab_result_to_dict(ABResult)` (plus `ope_result_to_dict` per arm under `ab.ope`). With
`ranker_scores` ({"trainer/variant": scores.npz}) the report adds `ranker_calibration`, computed from the test
scores with `core.metrics.calibration`.

`data_source` names where the figures come from; `describe_data_source(manifest)` builds it from the data set's
manifest (`<run_dir>/validate/manifest.json`) and `data_source_label` gives its one-line `label`, which the page
and the Markdown show at the top. The manifest fields it reads:

    dataset      "generated" (sources.world.generate), "movielens" (sources.movielens), "logs" (a user's own
                 logs mapped by a config), or another name; "generated" is the generated world, every other
                 value real logs
    name         optional: the data set's name ("movielens", "shop"); default: `dataset`
    impressions  optional: how the ranking impressions arose: "simulated" (the generated world's simulated
                 users), "logged" (real impressions, or logged non-engaged events, only), "sampled" (every
                 negative sampled: positive-only logs), "logged+sampled"; default: "simulated" for dataset
                 "generated", "logged" otherwise (movielens and unknown data sets)
    negatives    optional: null, or how negatives were sampled: {"per_positive": k, "sampler": "uniform" |
                 "popularity", "alpha": popularity exponent, "seed": int, "sampled": negative rows sampled,
                 "short": positives that got fewer than k negatives, "positives": positives sampled for}

Only the generated world's report carries the simulated-world disclaimer. A report on real logs says its figures
come from the named logs, and where ranking impressions include sampled negatives the ranker's tables and
figures say that their AUC and GAUC are measured against sampled negatives.

The HTML has no external resource: figures are matplotlib PNGs inlined as base64 `data:` URIs, styles are
inline, and every piece of text is escaped. A section without data is left out with a one-line note. Each file is
written through a temporary file and an atomic rename (`core.io`), so a crash leaves the previous file or the
new one, never half of one.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from core.bootstrap import Interval
from core.io import write_json_atomic, write_text_atomic
from offline_eval import report_plots as plots
from offline_eval.ab_sim import ABResult
from offline_eval.ope import OPEResult

SCHEMA_RESOURCE = "summary.schema.json"
SCHEMA_VERSION = 1
CALIBRATION_BUCKETS = 10  # quantile buckets of the calibration tables computed from ranker scores
VARIANT_ORDER = ("control", "emb", "sid", "both", "placebo")
TASK_ORDER = ("click", "finish")
RANKER_METRICS = ("auc", "gauc_impressions", "gauc_positives", "ne")
SIMULATED_NOTE = (
    "Every A/B and ranking figure in this report comes from a simulated world (generated users, items and a "
    "user-response model) measured offline; none is the result of an online test."
)
GENERATED = "generated world"  # data_source.kind of dataset "generated"
REAL_LOGS = "real logs"  # data_source.kind of every other dataset
IMPRESSIONS = ("simulated", "logged", "sampled", "logged+sampled")  # values of data_source.impressions
INFERRED_IMPRESSIONS = {"generated": "simulated", "movielens": "logged"}  # manifests without `impressions`


@dataclass(frozen=True)
class ReportPaths:
    html: Path  # report.html: the self-contained page
    summary_json: Path  # summary.json: the validated summary (plus ranker_calibration when computed)
    markdown: Path  # summary.md: the short Markdown summary


# ------------------------------------------------------------------------------------------ summary sections


def interval_to_dict(iv: Interval) -> dict[str, Any]:
    """{value, low, high, level, n_boot, n_failed} of a bootstrap interval."""
    return {
        "value": iv.estimate,
        "low": iv.low,
        "high": iv.high,
        "level": iv.level,
        "n_boot": iv.n_boot,
        "n_failed": iv.n_failed,
    }


def ab_result_to_dict(res: ABResult) -> dict[str, Any]:
    """The JSON-ready `ab` section: arms (users, metrics as intervals), lifts per treatment arm and metric
    (relative lift vs the first arm, a fraction), the daily rows and the ABConfig."""
    return {
        "control": res.arms[0].name,
        "config": dataclasses.asdict(res.config),
        "arms": [
            {"name": a.name, "users": int(a.users), "metrics": {m: interval_to_dict(iv) for m, iv in a.metrics.items()}}
            for a in res.arms
        ],
        "lifts": {arm: {m: interval_to_dict(iv) for m, iv in per.items()} for arm, per in res.lifts.items()},
        "daily": to_jsonable(res.daily.to_dicts()),
    }


def ope_result_to_dict(res: OPEResult) -> dict[str, Any]:
    """One arm's entry of `ab.ope`: IPS, SNIPS, DR and the logged click rate as intervals, and the ESS."""
    return {
        "ips": interval_to_dict(res.ips),
        "snips": interval_to_dict(res.snips),
        "dr": interval_to_dict(res.dr),
        "logged_ctr": interval_to_dict(res.logged_ctr),
        "effective_sample_size": res.effective_sample_size,
    }


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: paths become strings, numpy scalars and arrays Python numbers and lists, tuples lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def describe_data_source(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The summary's `data_source` ({kind, dataset, name, impressions, negatives, label}) from a data set
    manifest; `name`, `impressions` and `negatives` are inferred where an older manifest lacks them."""
    manifest = manifest or {}
    dataset = str(manifest.get("dataset") or "unknown")
    impressions = manifest.get("impressions") or INFERRED_IMPRESSIONS.get(dataset, "logged")
    if impressions not in IMPRESSIONS:
        raise ValueError(f"manifest impressions must be one of {', '.join(IMPRESSIONS)}; got {impressions!r}")
    negatives = manifest.get("negatives")
    source = {
        "kind": GENERATED if dataset == "generated" else REAL_LOGS,
        "dataset": dataset,
        "name": str(manifest.get("name") or dataset),
        "impressions": impressions,
        "negatives": to_jsonable(negatives) if negatives else None,
    }
    return {**source, "label": data_source_label(source)}


def sampled_negatives_phrase(source: Mapping[str, Any]) -> str | None:
    """'against sampled negatives' or 'against logged and sampled negatives' where the ranking impressions
    include sampled negatives, else None."""
    return {"sampled": "against sampled negatives", "logged+sampled": "against logged and sampled negatives"}.get(
        source.get("impressions")
    )


def _sampling_text(negatives: Mapping[str, Any] | None) -> str:
    """'4 per positive, popularity^0.75' (or '' without a sampling record)."""
    if not negatives:
        return ""
    parts = [f"{negatives['per_positive']} per positive"] if negatives.get("per_positive") is not None else []
    sampler, alpha = negatives.get("sampler"), negatives.get("alpha")
    if sampler == "popularity" and _is_num(alpha):
        parts.append(f"popularity^{alpha:g}")
    elif sampler:
        parts.append(str(sampler))
    return ", ".join(parts)


def data_source_label(source: Mapping[str, Any]) -> str:
    """One line naming the data source, e.g. 'generated world (simulated users and impressions)', 'real logs:
    shop (AUC against sampled negatives: 4 per positive, popularity^0.75)', 'real logs: movielens (logged
    impressions)'."""
    if source["kind"] == GENERATED:
        return "generated world (simulated users and impressions)"
    phrase = sampled_negatives_phrase(source)
    if phrase is None:
        detail = f"{source['impressions']} impressions"
    else:
        sampling = _sampling_text(source.get("negatives"))
        detail = f"AUC {phrase}" + (f": {sampling}" if sampling else "")
    return f"{REAL_LOGS}: {source['name']} ({detail})"


def compute_ranker_calibration(
    scores: Mapping[str, str | os.PathLike], n_buckets: int = CALIBRATION_BUCKETS
) -> dict[str, dict[str, Any]]:
    """{"trainer/variant": {task: calibration table}} from each model's test scores (quantile buckets)."""
    from core.metrics import calibration
    from recsys.evaluate import load_scores

    out: dict[str, dict[str, Any]] = {}
    for name, path in scores.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"ranker_scores[{name!r}]: no scores file at {path}")
        s = load_scores(path)
        out[name] = {}
        for task in [t for t in TASK_ORDER if t in s and f"label_{t}" in s]:
            cal = calibration(s[f"label_{task}"], s[task], n_buckets=n_buckets, strategy="quantile")
            out[name][task] = {
                "strategy": cal.strategy,
                "n_buckets": n_buckets,
                "ratio": None if math.isnan(cal.ratio) else cal.ratio,
                "ece": cal.ece,
                "buckets": cal.to_rows(),
            }
    return out


# -------------------------------------------------------------------------------------------------- the schema


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The packaged JSON Schema of summary.json (draft 2020-12)."""
    return json.loads(resources.files("offline_eval").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))


def _json_path(parts: Iterable[str | int]) -> str:
    out = "summary"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            out += f".{p}"
        else:
            out += f"[{json.dumps(p)}]"
    return out


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


def validate_summary(summary: Mapping[str, Any]) -> None:
    """Raises ValueError naming each failing path (e.g. `summary.headline[0].value`) when `summary` does not
    match the schema."""
    errors = sorted(_validator().iter_errors(summary), key=lambda e: list(map(str, e.path)))
    problems: list[str] = []
    for e in errors:
        parts = list(e.absolute_path)
        if e.validator == "required" and isinstance(e.instance, dict):
            lines = [
                f"{_json_path([*parts, k])}: required but missing" for k in e.validator_value if k not in e.instance
            ]
        else:
            msg = e.message if len(e.message) <= 200 else e.message[:200] + "..."
            lines = [f"{_json_path(parts)}: {msg}"]
        problems += [line for line in lines if line not in problems]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(f"the run summary does not match offline_eval/{SCHEMA_RESOURCE}:\n  " + "\n  ".join(shown))


# ---------------------------------------------------------------------------------------------- formatting


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def fmt_num(v: Any) -> str:
    """A number for people: 4 significant digits, thousands separators for large values, n/a for None / NaN."""
    if not _is_num(v) or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None or _is_num(v) else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.4g}"


def fmt_pct(v: Any) -> str:
    """A fraction as a signed percentage (0.0123 -> +1.23%)."""
    return f"{100 * v:+.2f}%" if _is_num(v) and math.isfinite(v) else "n/a"


def fmt_interval(cell: Mapping[str, Any] | None, fmt: Callable[[Any], str] = fmt_num, key: str = "value") -> str:
    """'value [low, high]' of an interval object."""
    if not cell:
        return "n/a"
    return f"{fmt(cell.get(key))} [{fmt(cell.get('low'))}, {fmt(cell.get('high'))}]"


def _fmt_diff(v: Any) -> str:
    return f"{v:+.4f}" if _is_num(v) and math.isfinite(v) else "n/a"


def _fmt_metric(v: Any) -> str:
    return f"{v:.4f}" if _is_num(v) and math.isfinite(v) else "n/a"


def fmt_headline(h: Mapping[str, Any]) -> tuple[str, str]:
    """(value, '[low, high]' or 'n/a') of a headline figure, its unit written once: lifts ('%') and AUC differences
    ('AUC') signed, with 2 and 4 decimals; '%' follows every number, another unit only the value."""
    unit = h.get("unit") or ""

    def num(v: Any) -> str:
        if unit == "%":
            return f"{v:+.2f}%" if _is_num(v) and math.isfinite(v) else "n/a"
        return _fmt_diff(v) if unit == "AUC" else fmt_num(v)

    value = num(h.get("value"))
    if value != "n/a" and unit not in ("", "%"):
        value += f" {unit}"
    low, high = h.get("low"), h.get("high")
    interval = f"[{num(low)}, {num(high)}]" if low is not None and high is not None else "n/a"
    return value, interval


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


# -------------------------------------------------------------------------------------- section data helpers


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in order if n in names] + [n for n in names if n not in order]


def ranker_layout(ranker: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Trainers (in order of appearance), each trainer's variants (control, emb, sid, both, then others) and
    the tasks present."""
    models = ranker["models"]
    trainers = list(dict.fromkeys(name.split("/")[0] for name in models))
    variants = {t: _ordered((n.split("/")[1] for n in models if n.split("/")[0] == t), VARIANT_ORDER) for t in trainers}
    tasks = _ordered((task for m in models.values() for sl in m.values() for task in sl), TASK_ORDER)
    return trainers, variants, tasks


def _calibration_pairs(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """trainer -> {variant: per-task tables} for the control and +both models that have calibration tables."""
    out: dict[str, dict[str, Any]] = {}
    for name, per_task in (summary.get("ranker_calibration") or {}).items():
        trainer, variant = name.split("/")
        if variant in ("control", "both") and per_task:
            out.setdefault(trainer, {})[variant] = per_task
    return {t: {v: pair[v] for v in _ordered(pair, VARIANT_ORDER)} for t, pair in out.items()}


def summary_data_source(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's `data_source`, or the one inferred from `data.dataset` when an older summary has none."""
    return dict(summary.get("data_source") or describe_data_source({"dataset": summary["data"].get("dataset")}))


def source_notes(source: Mapping[str, Any]) -> list[str]:
    """The notes under the title: where every figure comes from and, for sampled negatives, what AUC means."""
    if source["kind"] == GENERATED:
        return [SIMULATED_NOTE]
    notes = [
        f"Every retrieval and ranking figure in this report comes from the real logs {source['name']!r}, measured "
        "offline; none is the result of an online test."
    ]
    sampling = _sampling_text(source.get("negatives"))
    sampling = f" ({sampling})" if sampling else ""
    if source["impressions"] == "sampled":
        notes.append(
            f"Every negative in the ranking impressions was sampled{sampling}: the ranker's AUC and GAUC are measured "
            "against sampled negatives, not against items users were shown and passed over."
        )
    elif source["impressions"] == "logged+sampled":
        notes.append(
            f"The ranking impressions add sampled negatives{sampling} to the logged ones: the ranker's AUC and GAUC "
            "are measured against logged and sampled negatives."
        )
    return notes


def _against(source: Mapping[str, Any], sep: str = ", ") -> str:
    """', against sampled negatives' (with `sep`) where the ranking impressions include sampled negatives."""
    phrase = sampled_negatives_phrase(source)
    return f"{sep}{phrase}" if phrase else ""


def _headline_source(h: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    """A headline figure's source column; a ranker figure says when its AUC is against sampled negatives."""
    against = sampled_negatives_phrase(source) if h["source"] == "ranker" else None
    notes = [n for n in (h.get("note"), against) if n]
    return h["source"] + (f" ({'; '.join(notes)})" if notes else "")


# ------------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:74em;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.omitted{color:#777;font-style:italic}
.source{font-weight:600}
.headline{display:flex;gap:1.5em;flex-wrap:wrap}
.headline>div{flex:1 1 24em;border:1px solid #ccc;border-radius:6px;padding:.4em 1em}
.headline .ours{background:#eef6ff}.headline .paper{background:#f6f6f6}
nav a{margin-right:1em}
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int | None = None) -> str:
    """An HTML table; every cell is escaped. Columns from `numeric_from` on are right-aligned."""

    def cell(j: int, v: Any) -> str:
        cls = ' class="n"' if numeric_from is not None and j >= numeric_from else ""
        return f"<td{cls}>{_esc(v)}</td>"

    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(j, v) for j, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items)
    return f"<table><tbody>{rows}</tbody></table>"


def _figure(png: bytes, section: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}" data-section="{_esc(section)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _p(text: str, cls: str | None = None) -> str:
    return f'<p class="{cls}">{_esc(text)}</p>' if cls else f"<p>{_esc(text)}</p>"


def _headline_html(summary: Mapping[str, Any], source: Mapping[str, Any]) -> str | None:
    headline, reference = summary.get("headline"), summary.get("reference")
    if not headline and not reference:
        return None
    if headline:
        rows = [(h["name"], *fmt_headline(h), _headline_source(h, source)) for h in headline]
        ours = _table(["figure", "value", "95% interval", "source"], rows)
    else:
        ours = _p("This run printed no headline figures.", "omitted")
    if source["kind"] == GENERATED:
        heading = "This run: simulated world, offline"
        measured = "Measured offline in a generated world with a simulated user-response model; not an online test."
        ours_from = "a generated world and a simulated response model"
    else:
        heading = f"This run: real logs ({source['name']}), offline"
        measured = f"Measured offline on the real logs {source['name']!r}; not an online test." + (
            f" Ranker AUC figures are measured {sampled_negatives_phrase(source)}."
            if sampled_negatives_phrase(source)
            else ""
        )
        ours_from = f"offline measurements on the real logs {source['name']!r}"
    parts = ['<div class="ours">', f"<h3>{_esc(heading)}</h3>", ours, _p(measured), "</div>"]
    if reference:
        labels = {"paper_lt7_lift_pct": "LT7 lift (online A/B)", "paper_auc_gain_pct": "ranking AUC gain (online)"}
        rows = [(labels.get(k, k), f"{v:+g}%") for k, v in reference.items()]
        parts += [
            '<div class="paper"><h3>SAIL-Embedding paper, for scale</h3>',
            _table(["figure", "reported"], rows),
            _p(
                "The paper's figures come from online A/B tests on a production platform with real users. They are "
                f"quoted only for scale: this run's figures come from {ours_from}, so the two are not comparable "
                "measurements."
            ),
            "</div>",
        ]
    return '<div class="headline">' + "".join(parts) + "</div>"


def _data_source_rows(source: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = [("data source", source["label"]), ("ranking impressions", source["impressions"])]
    negatives = source.get("negatives")
    if negatives:
        rows.append(("sampled negatives", ", ".join(f"{k} {fmt_num(v)}" for k, v in negatives.items())))
    return rows


def _data_html(data: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    keys = (
        "dataset", "size", "seed", "log_start", "log_end", "users", "items", "cold_start_items",
        "click_rate", "finish_rate", "like_rate", "search_click_rate",
    )  # fmt: skip
    overview = [(k, fmt_num(data[k]) if _is_num(data[k]) or data[k] is None else data[k]) for k in keys if k in data]
    rejected = data.get("rejected") or {}
    rows = [
        (table, n, sum(v for v in (rejected.get(table) or {}).values() if _is_num(v)))
        for table, n in data["rows"].items()
    ]
    out = [
        _kv_table([*_data_source_rows(source), *overview]),
        "<h3>Rows kept and quarantined per table</h3>",
        _table(["table", "rows kept", "rows quarantined"], rows, numeric_from=1),
        "<h3>Lifetime proxies from the logs</h3>",
        _p("LTw of a user active on day t0 = active days in t0..t0+w-1 (fully observed windows only)."),
        _kv_table((k, fmt_num(v)) for k, v in data["lifetime"].items()),
    ]
    if data.get("mining"):
        out += ["<h3>Mined pairs</h3>", _kv_table((k, json.dumps(v)) for k, v in data["mining"].items())]
    return "".join(out)


def _retrieval_html(retrieval: Mapping[str, Any]) -> str:
    table = retrieval["table"]
    methods = [m for m in retrieval.get("columns") or list(table) if m in table]
    labels = retrieval.get("tasks") or {}
    tasks = _ordered((t for m in methods for t in table[m]), list(labels))
    counts = (retrieval.get("log") or {}).get("benchmarks") or {}

    def recall_cell(c: Mapping[str, Any] | None) -> str:
        return fmt_interval(c, lambda v: f"{100 * v:.1f}" if _is_num(v) else "n/a", key="recall")

    def task_label(t: str) -> str:
        return f"{labels.get(t, t)} ({counts[t]} queries)" if t in counts else labels.get(t, t)

    out = [
        _p(
            "Recall x 100 on the held-out period"
            + (f" (split at {retrieval['split_ts']})" if retrieval.get("split_ts") else "")
            + ", with 95% bootstrap intervals over queries."
        ),
        _figure(plots.plot_recall(retrieval), "retrieval", "Recall@K per task and method, with 95% intervals"),
        _table(["task", *methods], ([task_label(t), *(recall_cell(table[m].get(t)) for m in methods)] for t in tasks)),
    ]
    ablations = retrieval.get("ablations") or {}
    if ablations:
        out += [
            "<h3>Ablations (SAIL + CRE variants)</h3>",
            _table(
                ["variant", *(labels.get(t, t) for t in tasks)],
                ([v, *(recall_cell(res.get(t)) for t in tasks)] for v, res in ablations.items()),
            ),
        ]
    targets = retrieval.get("targets") or {}
    if targets:
        rows = [
            (
                labels.get(t, t),
                "met" if r.get("met") else "not met",
                ", ".join(f"{k}: {v}" for k, v in r.get("per_baseline", {}).items()),
            )
            for t, r in targets.items()
        ]
        out += ["<h3>Targets</h3>", _table(["task", "SAIL + CRE target", "per baseline"], rows)]
    return "".join(out)


SLICE_DEFINITIONS = (
    "Slices (n: their test impressions): all; cold = impressions of items with no impression in the ranker's "
    "training window; new = impressions of items created on or after the test window's first day."
)


def _comparisons(differences: Mapping[str, Any], trainer: str, variants: Sequence[str]) -> list[str]:
    """The trainer's comparisons ('both-control', ...) in the order of their treatment variant."""
    names = [name.split("/", 1)[1] for name in differences if name.split("/", 1)[0] == trainer]
    rank = {v: j for j, v in enumerate(variants)}
    return sorted(names, key=lambda c: rank.get(c.rpartition("-")[0], len(rank)))


def _ranker_html(ranker: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    models = ranker["models"]
    trainers, variants, tasks = ranker_layout(ranker)
    against = _against(source)
    out = [_p(ranker["note"], "note")] if ranker.get("note") else []
    if against:  # the note on how the negatives arose
        out.append(_p(source_notes(source)[-1], "note"))
    out.append(_p("Test-period metrics with 95% user-level bootstrap intervals; NE: lower is better."))
    out.append(_p(SLICE_DEFINITIONS))
    for t in trainers:
        out.append(
            _figure(
                plots.plot_ranker_auc(models, t, variants[t], tasks),
                "ranker",
                f"{t}: AUC and GAUC (impression-weighted) per variant on all test items{against}, with 95% intervals",
            )
        )
        out.append(
            _figure(
                plots.plot_cold_start(models, t, variants[t], tasks),
                "ranker",
                f"{t}: AUC on all, cold and new items per variant{against}",
            )
        )
        comparisons = _comparisons(ranker.get("differences") or {}, t, variants[t])
        if comparisons:
            out.append(
                _figure(
                    plots.plot_ranker_differences(ranker["differences"], t, comparisons, tasks),
                    "ranker",
                    f"{t}: paired AUC and GAUC (impression-weighted) differences, treatment - control, on all test "
                    f"items{against}, with 95% intervals",
                )
            )
    rows = []
    for sl in plots.SLICE_LABEL:
        for task in tasks:
            for t in trainers:
                for v in variants[t]:
                    m = models[f"{t}/{v}"].get(sl, {}).get(task)
                    if m:
                        rows.append(
                            [sl, task, t, plots.variant_label(v), fmt_num(m.get("n"))]
                            + [fmt_interval(m.get(k), _fmt_metric) for k in RANKER_METRICS]
                        )
    out.append(f"<h3>Metrics per slice, task and model{_esc(_against(source, ': AUC and GAUC '))}</h3>")
    out.append(_table(["slice", "task", "trainer", "variant", "n", "AUC", "GAUC (imp.)", "GAUC (pos.)", "NE"], rows, 4))
    diffs = ranker.get("differences") or {}
    if diffs:
        rows = []
        for name, cmp in diffs.items():
            trainer, comparison = name.split("/")
            for sl in plots.SLICE_LABEL:
                for task in tasks:
                    m = cmp.get(sl, {}).get(task)
                    if m:
                        rows.append(
                            [sl, task, trainer, plots.comparison_label(comparison)]
                            + [fmt_interval(m.get(k), _fmt_diff) for k in RANKER_METRICS]
                        )
        out += [
            f"<h3>Paired differences, treatment - control{_esc(_against(source, ': AUC and GAUC '))}</h3>",
            _p("Same impressions for both models; paired user-level bootstrap 95% intervals."),
            _table(["slice", "task", "trainer", "comparison", "AUC", "GAUC (imp.)", "GAUC (pos.)", "NE"], rows, 4),
        ]
    return "".join(out)


def _calibration_html(summary: Mapping[str, Any], tasks: Sequence[str] | None, source: Mapping[str, Any]) -> str | None:
    pairs = _calibration_pairs(summary)
    if not pairs:
        return None
    out = [
        _p(
            f"Test scores in {CALIBRATION_BUCKETS} quantile buckets: mean predicted probability against the observed "
            "rate per bucket (core.metrics.calibration). Ratio = sum(p) / sum(y); ECE = count-weighted "
            "mean |predicted - observed|."
        )
    ]
    if sampled_negatives_phrase(source):
        out.append(
            _p(
                "The test impressions include sampled negatives: observed rates follow the sampling ratio, not a "
                "real engagement rate.",
                "note",
            )
        )
    rows = []
    for trainer, tables in pairs.items():
        present = _ordered((task for per in tables.values() for task in per), tasks or TASK_ORDER)
        out.append(
            _figure(
                plots.plot_calibration(tables, trainer, present),
                "calibration",
                f"{trainer}: calibration of " + " vs ".join(plots.variant_label(v) for v in tables),
            )
        )
        rows += [
            [
                trainer,
                plots.variant_label(v),
                task,
                fmt_num(cal.get("ratio")),
                fmt_num(cal.get("ece")),
                len(cal["buckets"]),
            ]
            for v, per in tables.items()
            for task, cal in per.items()
        ]
    out.append(_table(["trainer", "variant", "task", "ratio", "ECE", "buckets"], rows, 3))
    return "".join(out)


def _ab_html(ab: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    cfg = ab["config"]
    control = ab.get("control") or ab["arms"][0]["name"]
    metrics = list(dict.fromkeys(m for a in ab["arms"] for m in a["metrics"]))
    out = [
        _p(
            f"{cfg['days']} simulated days after a warm start at the end of the log; users assigned by a salted hash "
            f"(salt {cfg['salt']!r}); control arm {control!r}; {cfg['n_boot']} user-level bootstrap resamples per "
            "interval. Lifts are treatment / control - 1 with a two-sample user bootstrap interval."
        ),
        _p(
            SIMULATED_NOTE
            if source["kind"] == GENERATED
            else f"The A/B figures come from a simulated user-response model, not from the logs {source['name']!r}.",
            "note",
        ),
    ]
    if any(ab["lifts"].values()):
        out.append(_figure(plots.plot_ab_lifts(ab), "ab", "Relative lift vs control per metric, with 95% intervals"))
    if ab["daily"]:
        out.append(
            _figure(
                plots.plot_ab_daily(ab), "ab", "DAU share and cumulative active days per assigned user, by day and arm"
            )
        )
    out.append("<h3>Arms</h3>")
    out.append(
        _table(
            ["arm", "users", *(plots.METRIC_LABEL.get(m, m) for m in metrics)],
            (
                [a["name"], fmt_num(a["users"]), *(fmt_interval(a["metrics"].get(m)) for m in metrics)]
                for a in ab["arms"]
            ),
            numeric_from=1,
        )
    )
    rows = [
        [
            arm,
            plots.METRIC_LABEL.get(m, m),
            fmt_interval(iv, fmt_pct),
            "yes" if iv["low"] > 0 or iv["high"] < 0 else "no",
        ]
        for arm, per in ab["lifts"].items()
        for m, iv in per.items()
    ]
    out += [
        f"<h3>Lifts vs {_esc(control)}</h3>",
        _table(["arm", "metric", "lift (95% interval)", "interval excludes 0"], rows, 2),
    ]
    if ab.get("ope"):
        rows = [
            [
                arm,
                *(fmt_interval(e.get(k)) for k in ("ips", "snips", "dr", "logged_ctr")),
                fmt_num(e.get("effective_sample_size")),
            ]
            for arm, e in ab["ope"].items()
        ]
        out += [
            "<h3>Off-policy estimates of the slot-0 click rate (logged feed)</h3>",
            _table(["arm", "IPS", "SNIPS", "DR", "logged policy", "effective sample size"], rows, 1),
        ]
    aa = ab.get("aa_check")
    if aa:
        metric = aa.get("metric", "the metric")
        out.append(
            _p(
                f"A/A check: {fmt_num(aa['significant'])} of {fmt_num(aa['runs'])} A/A runs had a 95% lift interval "
                f"for {metric} excluding zero (false-positive rate {fmt_num(aa['false_positive_rate'])}; nominal 0.05)."
            )
        )
    return "".join(out)


def _run_html(run: Mapping[str, Any]) -> str:
    timings = run["timings"]
    total = sum(timings.values())
    rows = [(stage, f"{s:.1f}", f"{100 * s / total:.0f}%" if total > 0 else "n/a") for stage, s in timings.items()]
    rows.append(("total", f"{total:.1f}", "100%" if total > 0 else "n/a"))
    machine = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in run["machine"].items()]
    return "".join(
        [
            "<h3>Stage timings</h3>" if timings else "",
            _table(["stage", "seconds", "share"], rows, numeric_from=1)
            if timings
            else _p("No stage timings.", "omitted"),
            "<h3>Machine</h3>",
            _kv_table(machine),
        ]
    )


def _section(anchor: str, heading: str, body: str | None, absent: str) -> str:
    inner = body if body is not None else _p(absent, "omitted")
    return f'<section id="{anchor}"><h2>{_esc(heading)}</h2>{inner}</section>'


def render_html(summary: Mapping[str, Any], title: str) -> str:
    """The self-contained report page of a validated summary."""
    run = summary["run"]
    source = summary_data_source(summary)
    tasks = ranker_layout(summary["ranker"])[2] if summary.get("ranker") else None
    sections = [
        ("headline", "Headline", _headline_html(summary, source), "No headline figures in this run's summary."),
        ("data", "Data", _data_html(summary["data"], source), ""),
        (
            "retrieval",
            "Retrieval",
            _retrieval_html(summary["retrieval"]) if summary.get("retrieval") else None,
            "Retrieval: not run in this pipeline run (no retrieval section in the summary).",
        ),
        (
            "ranker",
            ("Ranker" + _against(source, ": AUC and GAUC ")) if summary.get("ranker") else "Ranker",
            _ranker_html(summary["ranker"], source) if summary.get("ranker") else None,
            "Ranker: not run in this pipeline run (no ranker section in the summary).",
        ),
        (
            "calibration",
            "Ranker calibration: control vs +both",
            _calibration_html(summary, tasks, source),
            "Calibration: no ranker scores given (ranker_scores), so no calibration tables.",
        ),
        (
            "ab",
            "Offline A/B simulation",
            _ab_html(summary["ab"], source) if summary.get("ab") else None,
            "A/B simulation: not run in this pipeline run (no ab section in the summary).",
        ),
        ("run", "Run: timings and machine", _run_html(run), ""),
    ]
    nav = "".join(f'<a href="#{a}">{_esc(h)}</a>' for a, h, _, _ in sections)
    body = "".join(_section(*s) for s in sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<h1>{_esc(title)}</h1>"
        + _p(f"Run {run['name']!r}, finished {run['finished']}. Summary schema version {summary['schema_version']}.")
        + _p(f"Data source: {source['label']}.", "source")
        + "".join(_p(note, "note") for note in source_notes(source))
        + f"<nav>{nav}</nav>{body}</body></html>\n"
    )


# -------------------------------------------------------------------------------------------------- Markdown


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md, r)) + " |" for r in rows]


def render_markdown(summary: Mapping[str, Any], title: str) -> str:
    """A short summary: headline figures, the A/B lifts, the ranker's +both vs control difference, timings."""
    run = summary["run"]
    source = summary_data_source(summary)
    lines = [
        f"# {_md(title)}",
        "",
        f"Run `{_md(run['name'])}`, finished {run['finished']}.",
        "",
        f"Data source: {_md(source['label'])}.",
        "",
        *(f"> {_md(note)}" for note in source_notes(source)),
        "",
    ]
    lines += ["## Headline", ""]
    if summary.get("headline"):
        rows = [[h["name"], *fmt_headline(h), _headline_source(h, source)] for h in summary["headline"]]
        lines += _md_table(["figure", "value", "95% interval", "source"], rows)
    else:
        lines.append("No headline figures in this run.")
    ref = summary.get("reference")
    if ref:
        lines += [
            "",
            f"For scale only: the SAIL-Embedding paper reports LT7 {ref['paper_lt7_lift_pct']:+g}% and AUC "
            f"{ref['paper_auc_gain_pct']:+g}% from online A/B tests; the figures above come from "
            + ("a simulated world." if source["kind"] == GENERATED else f"the real logs {source['name']!r}, offline."),
        ]
    ab = summary.get("ab")
    lines += ["", "## A/B lifts vs " + _md(ab.get("control") or ab["arms"][0]["name"]) if ab else "## A/B lifts", ""]
    if ab:
        rows = [[arm, m, fmt_interval(iv, fmt_pct)] for arm, per in ab["lifts"].items() for m, iv in per.items()]
        lines += _md_table(["arm", "metric", "lift (95% interval)"], rows)
    else:
        lines.append("Not run.")
    lines += ["", "## Ranker: +both vs control (all test items)" + _against(source, ", AUC "), ""]
    diffs = (summary.get("ranker") or {}).get("differences") or {}
    both = {name.split("/")[0]: cmp for name, cmp in diffs.items() if name.split("/")[1] == "both-control"}
    if both:
        rows = []
        for trainer, cmp in both.items():
            for task, m in cmp.get("all", {}).items():
                auc = m.get("auc") or {}
                rel = auc["value"] / auc["control"] if _is_num(auc.get("control")) and auc.get("control") else None
                rows.append(
                    [
                        trainer,
                        task,
                        fmt_interval(auc, _fmt_diff),
                        fmt_pct(rel),
                        fmt_interval(m.get("gauc_impressions"), _fmt_diff),
                    ]
                )
        lines += _md_table(
            ["trainer", "task", "AUC diff (95% interval)", "AUC diff / control AUC", "GAUC (imp.) diff"], rows
        )
    else:
        lines.append("No +both vs control comparison in this run.")
    lines += ["", "## Timings (seconds)", ""]
    timings = run["timings"]
    lines += _md_table(
        ["stage", "seconds"],
        [[k, f"{v:.1f}"] for k, v in timings.items()] + [["total", f"{sum(timings.values()):.1f}"]],
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- writing


def write_run_report(summary: Mapping[str, Any], out_dir: str | os.PathLike, title: str) -> ReportPaths:
    """Validates `summary` against the schema (ValueError naming the failing paths), adds `data_source` (inferred
    from `data.dataset`) when absent and `ranker_calibration` from `ranker_scores` when given, and writes
    report.html, summary.md and summary.json into `out_dir`."""
    doc = to_jsonable(summary)
    validate_summary(doc)
    if not doc.get("data_source"):  # an older summary: the source inferred from data.dataset
        doc["data_source"] = summary_data_source(doc)
        validate_summary(doc)
    if doc.get("ranker_scores") and not doc.get("ranker_calibration"):
        doc["ranker_calibration"] = compute_ranker_calibration(doc["ranker_scores"])
        validate_summary(doc)
    out = Path(out_dir)
    paths = ReportPaths(html=out / "report.html", summary_json=out / "summary.json", markdown=out / "summary.md")
    page, markdown = render_html(doc, title), render_markdown(doc, title)  # render all before replacing any file
    write_text_atomic(paths.html, page)
    write_text_atomic(paths.markdown, markdown)
    write_json_atomic(paths.summary_json, doc)
    return paths


__all__ = [
    "ReportPaths",
    "ab_result_to_dict",
    "compute_ranker_calibration",
    "data_source_label",
    "describe_data_source",
    "interval_to_dict",
    "load_schema",
    "ope_result_to_dict",
    "render_html",
    "render_markdown",
    "sampled_negatives_phrase",
    "source_notes",
    "summary_data_source",
    "to_jsonable",
    "validate_summary",
    "write_run_report",
]
