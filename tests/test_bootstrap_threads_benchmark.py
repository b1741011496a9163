"""The bootstrap-threads benchmark on a hand-made ranker directory: timings per thread count, one interval."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import bootstrap_threads


def _scores(path, y, users, cold, click):
    path.mkdir(parents=True)
    np.savez(path / "scores.npz", test_label_click=y, test_user=users, test_cold=cold, test_click=click)


def test_every_thread_count_gives_the_same_intervals(tmp_path, monkeypatch):
    import core.bootstrap as cb

    monkeypatch.setattr(cb, "FAST_PATH_THREADS", cb.FAST_PATH_THREADS)  # the script sets it; restore afterwards
    rng = np.random.default_rng(0)
    n = 600
    users, cold = rng.integers(0, 50, n), rng.random(n) < 0.3
    y = (rng.random(n) < 0.3).astype(np.float32)
    base = rng.normal(size=n) + y
    _scores(tmp_path / "torchrec" / "control", y, users, cold, base.astype(np.float32))
    _scores(tmp_path / "torchrec" / "both", y, users, cold, (base + 0.5 * y * cold).astype(np.float32))
    out = tmp_path / "r.json"
    bootstrap_threads.main(["--ranker", str(tmp_path), "--threads", "1,3", "--n-boot", "20", "--out", str(out)])
    res = json.loads(out.read_text())
    assert [r["threads"] for r in res["timings"]] == [1, 3] and res["identical_intervals"] is True
    low, high = res["cold_gain_minus_other"][1:]
    assert low <= res["cold_gain_minus_other"][0] <= high and res["test_rows"] == n
    assert "| 3 |" in out.with_suffix(".md").read_text()
