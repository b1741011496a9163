"""Named, seeded random streams.

Every random draw of the world comes from `stream(seed, name, *keys)`: a numpy Generator seeded by the master
seed, a stable code for the stream's name and optional integer keys (a day, an item id). Streams are
independent of each other, so e.g. the catalogue can be rebuilt without simulating the log, and one item's
media can be rendered without rendering any other item.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """The Generator for stream `name` (optionally keyed by non-negative integers) of world `seed`."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be non-negative, got seed={seed} keys={keys}")
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), *(int(k) for k in keys)])
