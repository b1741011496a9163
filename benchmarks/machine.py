"""What every benchmark records beside its figures: the machine description (lives in `core.machine`), the
writer of a result file with its Markdown twin, and a child process's wall time and peak memory."""

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.machine import describe_machine, tree_rss

__all__ = ["Measured", "describe_machine", "dir_bytes", "run_measured", "write_results"]


def dir_bytes(path: Path) -> int:
    """Bytes of the files under `path` (files may vanish while it is walked, e.g. a Spark spill directory)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str  # "" when merged into stdout
    seconds: float  # wall time, process start included
    peak_rss: int  # bytes: the child and all its descendants (a Spark JVM, worker processes), sampled
    peaks: dict[str, int] = field(default_factory=dict)  # the peak of each extra sampled quantity


def run_measured(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    merge_stderr: bool = False,
    every: float = 0.2,
    sample: Mapping[str, Callable[[], int]] | None = None,
) -> Measured:
    """Runs `cmd` to its end, sampling every `every` seconds the resident memory of its process tree and each of
    `sample`'s quantities (e.g. a directory's size); returns its output, wall seconds and the peaks."""
    extra = dict(sample or {})
    peaks = {"rss": 0, **{k: 0 for k in extra}}
    stderr = subprocess.STDOUT if merge_stderr else subprocess.PIPE
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            peaks["rss"] = max(peaks["rss"], tree_rss(proc.pid))
            for k, fn in extra.items():
                peaks[k] = max(peaks[k], fn())
            done.wait(every)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    th.join()
    rss = peaks.pop("rss")
    return Measured(proc.returncode, out, err or "", seconds, rss, peaks)


def write_results(out: Path, result: dict, markdown: str) -> None:
    """`result` as JSON at `out`, `markdown` beside it (same name, .md), and the Markdown printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
