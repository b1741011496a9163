"""Fault injection: one finished `sail run --config smoke` per test session, copied for each test that damages it."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_done(tmp_path_factory, spark) -> Path:
    """A finished smoke run (every stage); tests must not change it: use `smoke_copy`."""
    from jobs.cli import main

    run_dir = tmp_path_factory.mktemp("faults_smoke") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", "--config", "smoke", "--run-dir", str(run_dir)]) == 0, out.getvalue()
    return run_dir


@pytest.fixture
def smoke_copy(smoke_done, tmp_path) -> Path:
    """A private copy of the finished smoke run, at another path (a moved run directory)."""
    dst = tmp_path / "moved_run"
    shutil.copytree(smoke_done, dst, symlinks=True)
    return dst
