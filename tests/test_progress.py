"""Progress off a terminal: plain periodic lines, never carriage-return redraws."""

from __future__ import annotations

import io

from core.progress import PlainProgress, progress


def test_plain_progress_writes_whole_lines_at_most_every_interval_and_the_last_one(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("core.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    bar = PlainProgress(6, desc="train-embedding", every_s=30, stream=out)
    bar.set_description("stage I")
    for step, t in enumerate([1, 2, 31, 32, 62, 63]):  # the clock when each step ends
        now[0] = float(t)
        bar.set_postfix(loss=f"{1.0 / (step + 1):.3f}")
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # t = 1, 2: quiet; 31: a line; 32: quiet; 62: a line; 63: the last step, always written
    heads = [ln.split(",")[0] for ln in lines]
    assert heads == [f"train-embedding: {n}/6 steps ({p}%)" for n, p in ((3, 50), (5, 83), (6, 100))]
    assert lines[0] == "train-embedding: 3/6 steps (50%), 0.10 steps/s, stage I, loss=0.333"
    assert lines[-1].endswith("stage I, loss=0.167")


def test_disabled_progress_writes_nothing_and_a_pipe_gets_plain_lines():
    out = io.StringIO()
    bar = PlainProgress(2, disable=True, stream=out)
    bar.update(2)
    assert out.getvalue() == ""
    assert isinstance(progress(3), PlainProgress)  # pytest captures stderr: not a terminal


def test_progress_counts_its_unit():
    out = io.StringIO()
    bar = PlainProgress(10, desc="batch-embed", stream=out, unit="items")
    bar.update(10)
    assert out.getvalue().startswith("batch-embed: 10/10 items (100%), ")
    assert " items/s" in out.getvalue()
