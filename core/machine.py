"""The machine description every benchmark records beside its figures."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any

# the vector extensions that decide which kernels torch, fbgemm and faiss pick (figures differ across them)
SIMD_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
)


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """CPU model name, "family F model M" and the SIMD extensions present, from /proc/cpuinfo (or `text`).

    Two machines with the same model name can differ in generation (and in AVX-512), which moves kernel timings
    by large factors: the result files record both so that figures from different days can be compared.
    """
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if ":" not in line:
            if first:  # the first processor's block is enough
                break
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        first.setdefault(key, value)
    flags = set((first.get("flags") or first.get("Features") or "").split())
    out: dict[str, Any] = {"cpu": first.get("model name") or platform.processor() or platform.machine()}
    if "cpu family" in first and "model" in first:
        out["cpu_family_model"] = f"family {first['cpu family']} model {first['model']}"
    out["cpu_simd"] = [f for f in SIMD_FLAGS if f in flags]
    return out


def code_version() -> dict[str, Any]:
    """The project's git commit and whether the working tree had uncommitted changes (None where git or the
    repository is absent, e.g. an installed copy)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def describe_machine(*packages: str, **extra: Any) -> dict[str, Any]:
    """CPU (model, family, SIMD extensions), cores, RAM, Python, platform, load average now, `packages`' versions,
    and the code's git commit (`code_version`)."""
    out: dict[str, Any] = {
        "code": code_version(),
        **cpu_info(),
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
