"""Ranker evaluation when a task's test labels hold one class only (MovieLens: every rating is a click)."""

import numpy as np

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
        test_unseen=np.zeros(n, bool),
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
    assert "unseen" in res["undefined"]  # no unseen items at all
    assert set(res["differences"]["lgbm/both-control"]["all"]) == {"finish"}
    md = markdown_table(res)
    assert "| all | click | all | all | — | not reported: all 400 test labels are positive" in md
