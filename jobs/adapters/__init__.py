"""Adapters that map external data sets into the log contracts (same layout as a generated world).

`adapt_movielens` / `AdaptResult` are imported lazily so `python -m jobs.adapters.movielens` runs cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from jobs.adapters.movielens import AdaptResult, adapt_movielens

__all__ = ["AdaptResult", "adapt_movielens"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from jobs.adapters import movielens

        return getattr(movielens, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
