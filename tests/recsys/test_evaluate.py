"""Ranker evaluation when a task's test labels hold one class only (MovieLens: every rating is a click)."""

import numpy as np
import pytest

from recsys.evaluate import evaluate_runs, markdown_table


def _scores(path, rng, shift):
    n = 400
    finish = (rng.random(n) < 0.4).astype(np.int64)
    np.savez(
        path,
        test_click=rng.random(n),
        test_finish=np.clip(0.4 + shift * (finish - 0.4) + 0.1 * rng.normal(size=n), 0.01, 0.99),
        test_label_click=np.ones(n, np.int64),  # one class: AUC / GAUC / NE undefined
        test_label_finish=finish,
        test_user=np.repeat(np.arange(40), 10),
        test_item=np.arange(n),
        test_cold=np.arange(n) % 3 == 0,
        test_new=np.zeros(n, bool),
    )
    return path


def test_a_single_class_task_is_reported_as_undefined_and_the_rest_is_evaluated(tmp_path):
    rng = np.random.default_rng(0)
    runs = {
        "lgbm/control": _scores(tmp_path / "c.npz", rng, 0.2),
        "lgbm/both": _scores(tmp_path / "b.npz", rng, 0.5),
    }
    res = evaluate_runs(runs, n_boot=50)
    assert set(res["models"]["lgbm/both"]["all"]) == {"finish"}
    assert 0.5 < res["models"]["lgbm/both"]["all"]["finish"]["auc"]["value"] <= 1.0
    assert "all 400 test labels are positive" in res["undefined"]["all"]["click"]
    assert "new" in res["undefined"]  # no new items at all
    assert set(res["differences"]["lgbm/both-control"]["all"]) == {"finish"}
    md = markdown_table(res)
    assert "| all | click | all | all | — | not reported: all 400 test labels are positive" in md


def test_slice_gains_report_whether_the_gain_is_larger_on_cold_items(tmp_path):
    from core.metrics import auc

    rng = np.random.default_rng(1)
    n, users = 2000, np.repeat(np.arange(200), 10)
    cold = rng.random(n) < 0.3
    y = (rng.random(n) < 0.4).astype(np.int64)
    base = 0.5 * y + rng.normal(size=n)
    arrays = {"test_label_click": y, "test_label_finish": y, "test_user": users, "test_item": np.arange(n)}
    arrays |= {"test_cold": cold, "test_new": cold & (np.arange(n) % 2 == 0)}
    better = base + np.where(cold, 1.0, 0.1) * y  # the treatment helps cold rows far more
    base, better = 1 / (1 + np.exp(-base)), 1 / (1 + np.exp(-better))  # probabilities (NE needs them)
    for name, s in (("control", base), ("both", better)):
        np.savez(tmp_path / f"{name}.npz", test_click=s, test_finish=s, **arrays)
    runs = {f"torchrec/{v}": tmp_path / f"{v}.npz" for v in ("control", "both")}
    res = evaluate_runs(runs, n_boot=100)
    g = res["slice_gains"]["torchrec/both-control"]["cold"]["click"]
    want_in = auc(y[cold], better[cold]) - auc(y[cold], base[cold])
    want_out = auc(y[~cold], better[~cold]) - auc(y[~cold], base[~cold])
    assert g["gain_in_slice"] == pytest.approx(want_in, abs=1e-12)
    assert g["gain_elsewhere"] == pytest.approx(want_out, abs=1e-12)
    assert g["value"] == pytest.approx(want_in - want_out, abs=1e-12) and g["low"] > 0
    assert set(res["slice_gains"]["torchrec/both-control"]) == {"cold", "new"}
    assert f"| cold | click | torchrec | both-control | {want_in:+.4f} | {want_out:+.4f} |" in markdown_table(res)
