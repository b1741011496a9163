"""Fault injection for resume tests: a process kills itself (SIGKILL, no clean-up) right after a given step."""

from __future__ import annotations

import os
import signal

EMBEDDING_FAULT_ENV = "SAIL_FAULT_KILL_EMBEDDING_AFTER_STEP"  # the embedding trainer's global step
RANKER_FAULT_ENV = "SAIL_FAULT_KILL_AFTER_STEP"  # the ranker trainer's global step


def kill_after_step(env: str, step: int) -> None:
    """SIGKILLs this process when the environment variable `env` equals `step`."""
    at = os.environ.get(env)
    if at is not None and step == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
