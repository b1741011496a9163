"""The machine description every benchmark records beside its figures, and the resident memory of a process tree
(a stage's peak memory, sampled while it runs)."""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import threading
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


def ram_bytes() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def describe_machine(*packages: str, **extra: Any) -> dict[str, Any]:
    """CPU (model, family, SIMD extensions), cores, RAM, Python, platform, load average now, `packages`' versions,
    and the code's git commit (`code_version`)."""
    out: dict[str, Any] = {
        "code": code_version(),
        **cpu_info(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram_bytes() / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }
    for name in packages:
        out[name] = getattr(importlib.import_module(name), "__version__", "unknown")
    out.update(extra)
    return out


def tree_rss(pid: int | None = None) -> int:
    """Resident memory (bytes) of a process (default: this one) and all its descendants, e.g. a Spark JVM or
    torchrun ranks; psutil when installed, else /proc."""
    pid = os.getpid() if pid is None else pid
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:  # the process has just exited
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


def _proc_tree_rss(pid: int) -> int:
    pids, frontier = {pid}, [pid]
    while frontier:
        cur = frontier.pop()
        try:
            kids = Path(f"/proc/{cur}/task/{cur}/children").read_text().split()
        except OSError:
            kids = []
        for k in map(int, kids):
            if k not in pids:
                pids.add(k)
                frontier.append(k)
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakRss:
    """`with PeakRss() as m: ...` then `m.peak`: the largest `tree_rss` of this process seen while the block ran,
    sampled every `every` seconds by a background thread (and once at the start and the end)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_rss())

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def listening_sockets(pids: list[int]) -> list[tuple[str, str]]:
    """(table, address) of every listening TCP socket the processes hold, from Linux's /proc: table "tcp" or "tcp6",
    the address as /proc/net writes it (127.0.0.1 is "0100007F"; ::ffff:127.0.0.1 "0000000000000000FFFF00000100007F").
    Used to check that a server (Spark's driver, torchrun's store, gloo) listens on loopback only."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # the process has exited
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                out.append((table, f[1].split(":")[0]))
    return out
