"""benchmarks/ranker_cold_start: its table reads the evaluation's results and states the verdict."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ranker_cold_start import _row, markdown  # noqa: E402
from recsys.evaluate import evaluate_runs  # noqa: E402


def _runs(tmp_path: Path, cold_boost: float) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    n, users = 1500, np.repeat(np.arange(150), 10)
    cold = rng.random(n) < 0.3
    y = (rng.random(n) < 0.4).astype(np.int64)
    base = 0.5 * y + rng.normal(size=n)
    better = base + np.where(cold, cold_boost, 0.3) * y
    arrays = {"test_label_click": y, "test_label_finish": y, "test_user": users, "test_item": np.arange(n)}
    arrays |= {"test_cold": cold, "test_new": cold & (np.arange(n) % 2 == 0)}
    runs = {}
    for v, s in (("control", base), ("both", better)):
        p = 1 / (1 + np.exp(-s))
        runs[f"torchrec/{v}"] = tmp_path / f"{v}_{cold_boost}.npz"
        np.savez(runs[f"torchrec/{v}"], test_click=p, test_finish=p, **arrays)
    return runs


def test_rows_and_verdict_follow_the_slice_test(tmp_path):
    larger = _row("cold helped", evaluate_runs(_runs(tmp_path, 1.5), n_boot=50), 1.0)
    same = _row("uniform", evaluate_runs(_runs(tmp_path, 0.3), n_boot=50), 1.0)
    assert larger["slice_gain"]["cold"]["low"] > 0
    assert set(larger["auc"]["both"]) == {"all", "cold", "new"}
    md = markdown([larger, same], "samples")
    assert md.count("| cold helped |") == 1 and md.count("| uniform |") == 1
    assert md.rstrip().endswith("Larger on cold-start items (interval of the gain difference above zero): cold helped.")
    assert ("in none of these settings" in markdown([same], "samples")) == (same["slice_gain"]["cold"]["low"] <= 0)
