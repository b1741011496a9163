"""Two-process torchrun training (gloo) on the tiny world writes a checkpoint and a model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_trains_and_checkpoints(tiny_world_and_work, tmp_path):
    world, work, pairs = tiny_world_and_work
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "dist"
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "embedding.distributed",
        "--data",
        str(world),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--work",
        str(work),
        "--steps",
        "2,1,1,2",
        "--batch-size",
        "8",
        "--refresh-every",
        "1",
        "--checkpoint-every",
        "3",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).resolve().parents[2]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: 6/6 steps" in proc.stdout
    assert (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "step-0000006" / "state.safetensors").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
