"""scripts/install_torch_cpu.sh (the torch step of scripts/setup.sh) chooses its pip index without the network:
a stub interpreter records every `python -m pip ...` call and fails unless a given index URL is among its
arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PINS = ["torch==2.13.0+cpu", "fbgemm_gpu-cpu==1.8.0"]
BASE_ARGS = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]

# Records its arguments (one per line, one file per call); succeeds unless STUB_ACCEPT is set and absent from them.
STUB = """#!/usr/bin/env bash
n=$(ls "$STUB_CALLS" | wc -l)
printf '%s\\n' "$@" > "$STUB_CALLS/$n"
[ -z "${STUB_ACCEPT:-}" ] && exit 0
for a in "$@"; do [ "$a" = "$STUB_ACCEPT" ] && exit 0; done
echo "ERROR: No matching distribution found for torch==2.13.0+cpu" >&2
exit 1
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the helper and the real lock, laid out as in the repository, plus the stub interpreter."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install_torch_cpu.sh", tmp_path / "repo" / "scripts")
    shutil.copy(ROOT / "requirements.lock", tmp_path / "repo")
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "calls").mkdir()
    return tmp_path / "repo"


def _run(
    repo: Path, accept: str | None = None, override: str | None = None
) -> tuple[subprocess.CompletedProcess, list]:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "STUB_CALLS": str(repo.parent / "calls")}
    if accept:
        env["STUB_ACCEPT"] = accept
    if override:
        env["SAIL_TORCH_INDEX_URL"] = override
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "install_torch_cpu.sh"), str(repo.parent / "python")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    calls_dir = repo.parent / "calls"
    calls = [(calls_dir / str(i)).read_text().splitlines() for i in range(len(list(calls_dir.iterdir())))]
    return proc, calls


def _assert_exact_cpu_pins(call: list[str]) -> None:
    assert call[: len(BASE_ARGS)] == BASE_ARGS
    assert call[-3:] == ["requirements.lock", *PINS] and call[-4] == "-c"
    assert [a for a in call if a.startswith(("torch", "fbgemm"))] == PINS  # never a bare `torch` a CUDA index serves


def test_the_configured_indexes_come_first_and_the_line_says_so(repo):
    proc, calls = _run(repo)
    assert proc.returncode == 0, proc.stderr
    assert calls == [[*BASE_ARGS, "-c", "requirements.lock", *PINS]]  # no extra index at all
    assert proc.stdout.splitlines() == [
        "setup: torch==2.13.0+cpu and fbgemm_gpu-cpu==1.8.0 installed using the configured pip indexes"
    ]


def test_without_the_cpu_build_on_the_configured_indexes_it_retries_with_the_cpu_index(repo):
    proc, calls = _run(repo, accept=CPU_INDEX)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2
    assert "--extra-index-url" not in calls[0]
    assert calls[1][len(BASE_ARGS) : len(BASE_ARGS) + 2] == ["--extra-index-url", CPU_INDEX]
    for call in calls:
        _assert_exact_cpu_pins(call)
    assert proc.stdout.splitlines() == [
        "setup: torch==2.13.0+cpu did not install from the configured pip indexes; "
        f"retrying with --extra-index-url {CPU_INDEX}",
        f"setup: torch==2.13.0+cpu and fbgemm_gpu-cpu==1.8.0 installed using {CPU_INDEX}",
    ]
    assert "No matching distribution" not in proc.stdout + proc.stderr  # the expected first miss stays quiet


def test_sail_torch_index_url_overrides_and_nothing_else_is_tried(repo):
    mirror = "https://mirror.example.org/whl/cpu"
    proc, calls = _run(repo, accept=mirror, override=mirror)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 1 and calls[0][len(BASE_ARGS) : len(BASE_ARGS) + 2] == ["--extra-index-url", mirror]
    _assert_exact_cpu_pins(calls[0])
    assert proc.stdout.splitlines() == [
        f"setup: torch==2.13.0+cpu and fbgemm_gpu-cpu==1.8.0 installed using SAIL_TORCH_INDEX_URL={mirror}"
    ]

    # When the override's index does not serve them, it fails there: no fallback to another index.
    shutil.rmtree(repo.parent / "calls")
    (repo.parent / "calls").mkdir()
    proc, calls = _run(repo, accept="https://elsewhere.example.org", override=mirror)
    assert proc.returncode == 1 and len(calls) == 1
    assert f"did not install from SAIL_TORCH_INDEX_URL={mirror}" in proc.stderr


def test_when_neither_index_serves_them_it_fails_with_both_errors_and_the_way_out(repo):
    proc, calls = _run(repo, accept="https://nowhere.example.org")
    assert proc.returncode == 1 and len(calls) == 2
    assert "No matching distribution found for torch==2.13.0+cpu" in proc.stderr  # the first attempt's pip output
    assert f"nor from {CPU_INDEX}" in proc.stderr and "Set SAIL_TORCH_INDEX_URL" in proc.stderr
    assert "installed using" not in proc.stdout


@pytest.mark.parametrize("torch_line", ["torch==2.13.0", "torch==2.13.0+cu128", ""])
def test_a_lock_without_the_cpu_torch_pin_is_refused_before_pip_runs(repo, torch_line):
    lock = repo / "requirements.lock"
    lines = [ln for ln in lock.read_text().splitlines() if not ln.startswith("torch==")]
    lock.write_text("\n".join([*lines, torch_line]) + "\n")
    proc, calls = _run(repo)
    assert proc.returncode == 1 and calls == []
    assert "must pin the CPU build of torch" in proc.stderr


def test_setup_installs_torch_only_through_the_helper_and_its_stamp_covers_it():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'bash scripts/install_torch_cpu.sh "$venv/bin/python"' in setup
    assert "scripts/install_torch_cpu.sh | sha256sum" in setup  # editing the helper rebuilds the venv
    pip_lines = [ln for ln in setup.splitlines() if '"${pip[@]}"' in ln]
    assert pip_lines and not any("torch==" in ln.replace("torchrec==", "") or "fbgemm" in ln for ln in pip_lines)
