"""Progress for long loops: a tqdm bar on a terminal, plain periodic lines anywhere else (a stage log, CI).

A bar redrawn with carriage returns turns a log file into thousands of fragments; off a terminal `progress` writes
one line per `every_s` seconds (and the last one) instead, e.g.

    train-embedding: 240/690 steps (35%), 1.3 steps/s, stage CRE, loss=5.102, src=covisit_i2i
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class PlainProgress:
    """The part of tqdm's interface the project uses (update, set_description, set_postfix, close), as lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", every_s: float = 30.0,
                 stream: TextIO | None = None, disable: bool = False, unit: str = "steps"):  # fmt: skip
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every_s, self.disable = every_s, disable
        self.stream = stream if stream is not None else sys.stderr
        self.stage = ""
        self.postfix = ""
        self._start_n, self._t0 = initial, time.monotonic()
        self._last = self._t0

    def set_description(self, stage: str) -> None:
        self.stage = stage

    def set_postfix(self, **kv: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kv.items())

    def line(self) -> str:
        rate = (self.n - self._start_n) / max(time.monotonic() - self._t0, 1e-9)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}", f"{rate:.2f} {self.unit}/s"]
        parts += [p for p in (self.stage, self.postfix) if p]
        return ", ".join(parts)

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if not self.disable and (now - self._last >= self.every_s or self.n >= self.total):
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        pass


def progress(
    total: int, initial: int = 0, desc: str = "", disable: bool = False, every_s: float = 30.0, unit: str = "steps"
):
    """A tqdm bar when stderr is a terminal, else `PlainProgress` lines every `every_s` seconds (counting `unit`)."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True, unit=unit)
    return PlainProgress(total, initial, desc, every_s=every_s, disable=disable, unit=unit)
