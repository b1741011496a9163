"""The machine description every benchmark records beside its figures."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(*packages: str, **extra: Any) -> dict[str, Any]:
    """Cores, RAM, CPU model, Python, platform, load average now, and the versions of `packages`."""
    out: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }
    for name in packages:
        out[name] = getattr(importlib.import_module(name), "__version__", "unknown")
    out.update(extra)
    return out
