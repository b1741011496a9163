"""`sail report compare A B`: the numeric differences between two runs' `summary.json`.

Each argument is a run directory (its `report/summary.json` is read), a report directory or a summary file.
Nested keys are flattened with dots (`lifetime.lt7_mean`); every number present in either summary is listed
with A, B, B - A and (B - A) / |A|; keys present in only one summary are listed as such, and non-numeric values
that differ are shown as they are.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def find_summary(path: str | Path) -> Path:
    """The summary.json behind a run directory, a report directory or a file path."""
    p = Path(path)
    for candidate in (p, p / "summary.json", p / "report" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no summary.json at {p} (looked for {p}/summary.json and {p}/report/summary.json)")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept whole."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def compare_summaries(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per flattened key whose value differs or is numeric: key, a, b, diff, rel (None when undefined)."""
    fa, fb = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if _is_number(va) and _is_number(vb):
            diff = vb - va
            rel = diff / abs(va) if va not in (0, 0.0) and not math.isnan(va) else None
            rows.append({"key": key, "a": va, "b": vb, "diff": diff, "rel": rel})
        elif key not in fa or key not in fb or va != vb:
            rows.append(
                {
                    "key": key,
                    "a": va if key in fa else "(absent)",
                    "b": vb if key in fb else "(absent)",
                    "diff": None,
                    "rel": None,
                }
            )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render(rows: list[dict[str, Any]], a_name: str, b_name: str) -> str:
    lines = [f"| key | A: {a_name} | B: {b_name} | B - A | (B - A) / abs(A) |", "|---|---|---|---|---|"]
    for r in rows:
        rel = f"{r['rel']:+.2%}" if r["rel"] is not None else ""
        lines.append(f"| {r['key']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} | {rel} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sail report compare", description="Diff two runs' summary.json.")
    p.add_argument("a", help="run directory, report directory or summary.json of run A")
    p.add_argument("b", help="the same for run B")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    args = p.parse_args(argv)
    pa, pb = find_summary(args.a), find_summary(args.b)
    rows = compare_summaries(json.loads(pa.read_text()), json.loads(pb.read_text()))
    print(json.dumps(rows, indent=2, default=str) if args.json else render(rows, str(pa), str(pb)))
    return 0
