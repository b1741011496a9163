"""Test-period evaluation of ranker scores: AUC, GAUC (both weightings), NE with user-level bootstrap intervals,
paired differences against control, on all items and on the cold-start slices, and whether the gain is larger on
a cold-start slice than on the other impressions (`slice_gains`). JSON + a Markdown table.

Every model (TorchRec variants, LightGBM variants) writes `scores.npz` with the same arrays
(`test_click`, `test_finish`, `test_label_click`, `test_label_finish`, `test_user`, `test_item`, `test_cold`,
`test_new`),
so they are evaluated by the same code. The metric definitions are core.metrics'; the intervals are
core.bootstrap's cluster bootstrap over users.

Slices: "all"; "cold": test impressions of items with no impression in the ranker's training window (their item-id
rows never trained: `Encoded.cold`); "new": items created within the test window (`Encoded.new`, mostly a subset
of cold). Both are reported with their sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.bootstrap import (
    Interval,
    PairedDiff,
    cluster_bootstrap,
    gauc_bootstrap,
    paired_bootstrap_diff,
    paired_gauc_diff,
    slice_gain_difference,
)
from core.metrics import auc, normalized_entropy
from recsys.features import TASKS

METRICS = ("auc", "gauc_impressions", "gauc_positives", "ne")
SLICES = ("all", "cold", "new")


def load_scores(path: str | Path, split: str = "test") -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k.removeprefix(f"{split}_"): z[k] for k in z.files if k.startswith(f"{split}_")}


def _slice(s: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    if name == "all":
        return s
    mask = s[name].astype(bool)
    return {k: v[mask] for k, v in s.items()}


def _interval(iv: Interval) -> dict[str, float]:
    return {"value": iv.estimate, "low": iv.low, "high": iv.high, "n_boot": iv.n_boot, "n_failed": iv.n_failed}


def _diff(pd: PairedDiff) -> dict[str, float]:
    return {"control": pd.metric_a, "treatment": pd.metric_b, **_interval(pd.diff), "p_value": pd.p_value}


def metric_intervals(labels: np.ndarray, probs: np.ndarray, users: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUC, GAUC (impressions / positives weighting) and NE, each with a user-level 95% bootstrap interval."""
    out: dict[str, Any] = {"n": int(labels.size), "positives": int(labels.sum())}
    out["auc"] = _interval(cluster_bootstrap(auc, {"labels": labels, "scores": probs}, users, n_boot, seed))
    for w in ("impressions", "positives"):
        out[f"gauc_{w}"] = _interval(gauc_bootstrap(labels, probs, users, w, n_boot=n_boot, seed=seed))
    out["ne"] = _interval(
        cluster_bootstrap(normalized_entropy, {"labels": labels, "probs": probs}, users, n_boot, seed)
    )
    return out


def paired_differences(
    labels: np.ndarray, control: np.ndarray, treatment: np.ndarray, users: np.ndarray, n_boot: int, seed: int
) -> dict:
    """treatment - control for every metric on the same impressions (paired user-level bootstrap)."""
    out = {"auc": _diff(paired_bootstrap_diff(auc, labels, control, treatment, users, n_boot, seed))}
    for w in ("impressions", "positives"):
        out[f"gauc_{w}"] = _diff(paired_gauc_diff(labels, control, treatment, users, w, n_boot=n_boot, seed=seed))
    out["ne"] = _diff(paired_bootstrap_diff(normalized_entropy, labels, control, treatment, users, n_boot, seed))
    return out


def single_class(labels: np.ndarray, users: np.ndarray | None = None) -> str | None:
    """Why AUC / GAUC / NE are undefined on these labels (empty, or one class only; with `users`, also when no
    user has both classes, which leaves GAUC undefined); None when they are defined."""
    if labels.size == 0:
        return "no test impressions"
    pos = int(np.sum(labels))
    if pos in (0, labels.size):
        return f"all {labels.size} test labels are {'positive' if pos else 'negative'}: AUC, GAUC and NE are undefined"
    if users is not None:
        _, inverse = np.unique(users, return_inverse=True)
        per_user = np.bincount(inverse, weights=labels.astype(float))
        sizes = np.bincount(inverse)
        if not np.any((per_user > 0) & (per_user < sizes)):
            return f"none of the {sizes.size} users has both a positive and a negative label: GAUC is undefined"
    return None


def evaluate_model(scores: dict[str, np.ndarray], n_boot: int = 500, seed: int = 0) -> dict:
    """{slice: {task: metric intervals}} of one model's test scores; a (slice, task) whose labels hold one class
    only (e.g. MovieLens clicks: every rating is a watch) is left out (see `undefined_metrics`)."""
    res: dict[str, Any] = {}
    for sl in SLICES:
        s = _slice(scores, sl)
        res[sl] = {
            t: metric_intervals(s[f"label_{t}"], s[t], s["user"], n_boot, seed)
            for t in TASKS
            if single_class(s[f"label_{t}"], s["user"]) is None
        }
    return res


def undefined_metrics(scores: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """{slice: {task: reason}} for the (slice, task) pairs evaluate_model leaves out."""
    out: dict[str, dict[str, str]] = {}
    for sl in SLICES:
        s = _slice(scores, sl)
        for t in TASKS:
            why = single_class(s[f"label_{t}"], s["user"])
            if why is not None:
                out.setdefault(sl, {})[t] = why
    return out


def compare(control: dict[str, np.ndarray], treatment: dict[str, np.ndarray], n_boot: int = 500, seed: int = 0) -> dict:
    """{slice: {task: paired differences}}; the two score sets must cover the same impressions in the same order."""
    for k in ("user", "item", "label_click"):
        if not np.array_equal(control[k], treatment[k]):
            raise ValueError(f"control and treatment scores are not on the same impressions ({k} differs)")
    res: dict[str, Any] = {}
    for sl in SLICES:
        c, t = _slice(control, sl), _slice(treatment, sl)
        res[sl] = {
            task: paired_differences(c[f"label_{task}"], c[task], t[task], c["user"], n_boot, seed)
            for task in TASKS
            if single_class(c[f"label_{task}"], c["user"]) is None
        }
    return res


def slice_gains(
    control: dict[str, np.ndarray], treatment: dict[str, np.ndarray], n_boot: int = 500, seed: int = 0
) -> dict:
    """{slice: {task: ...}} for the cold and new slices: treatment's AUC gain over control on the slice's
    impressions minus its gain on every other impression, with a user-level bootstrap interval ("is the gain
    larger on cold-start items?"). Left out where either side's labels hold one class."""
    res: dict[str, Any] = {}
    for sl in SLICES[1:]:
        inside = control[sl].astype(bool)
        for task in TASKS:
            y = control[f"label_{task}"]
            users = control["user"]
            if single_class(y[inside], users[inside]) or single_class(y[~inside], users[~inside]):
                continue
            pd = slice_gain_difference(y, control[task], treatment[task], inside, control["user"], n_boot, seed)
            res.setdefault(sl, {})[task] = {
                "gain_in_slice": pd.metric_b,
                "gain_elsewhere": pd.metric_a,
                **_interval(pd.diff),
                "p_value": pd.p_value,
            }
    return res


def _fmt(m: dict) -> str:
    return f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"


def _fmt_diff(m: dict) -> str:
    return f"{m['value']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]"


def markdown_table(results: dict) -> str:
    """Markdown: one row per (slice, task, trainer, variant), one column per metric; then the paired differences."""
    lines = [f"{results.get('title', 'Ranker results')}", ""]
    if results.get("note"):
        lines += [f"> {results['note']}", ""]
    head = "| slice | task | trainer | variant | n | AUC | GAUC (imp.) | GAUC (pos.) | NE |"
    lines += [head, "|" + "---|" * 9]
    models = results["models"]
    for sl in SLICES:
        for task in TASKS:
            for name, res in models.items():
                trainer, variant = name.split("/")
                m = res.get(sl, {}).get(task)
                if not m:
                    continue
                cells = " | ".join(_fmt(m[k]) for k in METRICS)
                lines.append(f"| {sl} | {task} | {trainer} | {variant} | {m['n']} | {cells} |")
    for sl, tasks in results.get("undefined", {}).items():
        for task, why in tasks.items():
            lines.append(f"| {sl} | {task} | all | all | — | not reported: {why} | | | |")
    if results.get("selection"):
        lines += ["", "Model selection on the valid days (test metrics come from the chosen model only)", ""]
        lines += ["| trainer | variant | chosen on valid |", "|---|---|---|"]
        for name, sel in results["selection"].items():
            trainer, variant = name.split("/")
            lines.append(f"| {trainer} | {variant} | {_selection_text(sel)} |")
    lines += ["", "Paired differences treatment - control (user-level bootstrap 95% interval; NE: lower is better)", ""]
    lines += ["| slice | task | trainer | comparison | AUC | GAUC (imp.) | GAUC (pos.) | NE |", "|" + "---|" * 8]
    for name, cmp in results.get("differences", {}).items():
        trainer, comparison = name.split("/")
        for sl in SLICES:
            for task in TASKS:
                m = cmp.get(sl, {}).get(task)
                if m:
                    cells = " | ".join(_fmt_diff(m[k]) for k in METRICS)
                    lines.append(f"| {sl} | {task} | {trainer} | {comparison} | {cells} |")
    if results.get("slice_gains"):
        lines += [
            "",
            "Is the AUC gain larger inside the slice? gain on the slice's impressions - gain on all other impressions",
            "(same user-level resamples for both gains; an interval above zero: larger inside the slice)",
            "",
            "| slice | task | trainer | comparison | gain in slice | gain elsewhere | difference |",
            "|" + "---|" * 7,
        ]
        for name, by_slice in results["slice_gains"].items():
            trainer, comparison = name.split("/")
            for sl, tasks in by_slice.items():
                for task, m in tasks.items():
                    lines.append(
                        f"| {sl} | {task} | {trainer} | {comparison} | {m['gain_in_slice']:+.4f} | "
                        f"{m['gain_elsewhere']:+.4f} | {_fmt_diff(m)} |"
                    )
    return "\n".join(lines) + "\n"


def model_selection(train_json: Path) -> dict[str, Any]:
    """What the valid split chose for one trained model (from its train.json): the TorchRec epoch (of those
    trained) or the LightGBM boosting rounds per task; {} when the file is absent."""
    if not train_json.exists():
        return {}
    info = json.loads(train_json.read_text())
    if "members" in info:  # a seed ensemble (recsys.cli.average_scores)
        return {"members": info["members"]}
    if "selected_epoch" in info:
        return {"selected_epoch": info["selected_epoch"], "epochs_trained": info["epochs_trained"]}
    return {k: v for k, v in info.items() if k.endswith("_best_iteration")}


def _selection_text(sel: dict[str, Any]) -> str:
    if "members" in sel:
        return "mean of " + ", ".join(
            f"seed {m['seed']}: epoch {m['selected_epoch']} of {m['epochs_trained']}" for m in sel["members"]
        )
    if "selected_epoch" in sel:
        return f"epoch {sel['selected_epoch']} of {sel['epochs_trained']}"
    return ", ".join(f"{k.removesuffix('_best_iteration')} {v} rounds" for k, v in sel.items()) or "—"


def evaluate_runs(
    runs: dict[str, Path], n_boot: int = 500, seed: int = 0, title: str = "", note: str = ""
) -> dict[str, Any]:
    """runs: {"trainer/variant": scores.npz}. Evaluates each and compares every treatment variant with the
    same trainer's control."""
    scores = {name: load_scores(p) for name, p in runs.items()}
    results: dict[str, Any] = {"title": title, "note": note, "n_boot": n_boot, "models": {}, "differences": {}}
    for name, s in scores.items():
        results["models"][name] = evaluate_model(s, n_boot, seed)
    results["selection"] = {name: model_selection(p.parent / "train.json") for name, p in runs.items()}
    undefined = undefined_metrics(next(iter(scores.values()))) if scores else {}
    if undefined:  # the same labels for every model
        results["undefined"] = undefined
    for name, s in scores.items():
        trainer, variant = name.split("/")
        control = scores.get(f"{trainer}/control")
        if variant != "control" and control is not None:
            results["differences"][f"{trainer}/{variant}-control"] = compare(control, s, n_boot, seed)
            results.setdefault("slice_gains", {})[f"{trainer}/{variant}-control"] = slice_gains(
                control, s, n_boot, seed
            )
    return results


__all__ = ["compare", "evaluate_model", "evaluate_runs", "load_scores", "markdown_table", "slice_gains"]
