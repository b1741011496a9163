"""Streams chunks of several tables into `core.io.write_table` at once.

The day-by-day simulation produces chunks of several tables together, while `write_table` consumes one table's
stream in a single call. `TableStreams` runs one `write_table` per table in a writer thread fed through a bounded
queue, so memory holds at most a few chunks per table and every table is still written atomically: if the
producer fails, each writer's stream raises, and `write_table` discards its temporary directory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from core.contracts import TableSchema
from core.io import write_table

_END = object()
_ABORT = object()


class GenerationAborted(RuntimeError):
    """Raised inside a writer's stream when the producer failed; the table is not written."""


class TableStreams:
    """Context manager: `put(name, chunk)` appends a chunk to table `name`; all tables complete on exit."""

    def __init__(self, tables: dict[str, tuple[TableSchema, Path]], max_pending: int = 3):
        self._tables = tables
        self._queues = {name: queue.Queue(maxsize=max_pending) for name in tables}
        self._threads: dict[str, threading.Thread] = {}
        self._errors: dict[str, BaseException] = {}
        self.rows: dict[str, int] = {}

    def _stream(self, name: str) -> Iterator[pa.Table]:
        q = self._queues[name]
        while True:
            item = q.get()
            if item is _END:
                return
            if item is _ABORT:
                raise GenerationAborted(f"generation failed; table {name!r} discarded")
            yield item

    def _run(self, name: str) -> None:
        schema, path = self._tables[name]
        try:
            self.rows[name] = write_table(self._stream(name), schema, path)
        except BaseException as exc:  # reported by put() / __exit__ in the producer thread
            self._errors[name] = exc

    def __enter__(self) -> TableStreams:
        for name in self._tables:
            t = threading.Thread(target=self._run, args=(name,), name=f"write-{name}", daemon=True)
            t.start()
            self._threads[name] = t
        return self

    def put(self, name: str, chunk: pa.Table | None) -> None:
        if chunk is None or chunk.num_rows == 0:
            return
        while True:
            if name in self._errors:
                raise RuntimeError(f"writer of table {name!r} failed: {self._errors[name]}") from self._errors[name]
            try:
                self._queues[name].put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def _send(self, name: str, token: object) -> None:
        while self._threads[name].is_alive():
            try:
                self._queues[name].put(token, timeout=0.5)
                return
            except queue.Full:
                continue

    def __exit__(self, exc_type, exc, tb) -> None:
        token = _END if exc_type is None else _ABORT
        for name in self._tables:
            self._send(name, token)
        for t in self._threads.values():
            t.join()
        if exc_type is None:
            errors = {k: v for k, v in self._errors.items() if not isinstance(v, GenerationAborted)}
            if errors:
                name, err = next(iter(errors.items()))
                raise RuntimeError(f"writer of table {name!r} failed: {err}") from err
