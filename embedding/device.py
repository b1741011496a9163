"""Where and in which precision the embedding model runs: `resolve_device` turns 'cpu' / 'cuda' / 'cuda:N' / 'auto'
into a device that exists here (or a clear error), `autocast` gives the bfloat16 autocast context for 'bf16' and a
no-op one for 'fp32'. Weights and optimizer state always stay fp32; only forward passes and losses run in bf16.
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
"""Training / inference precision -> the autocast dtype (None: no autocast)."""


def check_device(spec: str) -> str:
    """`spec` itself when it names a supported device kind ('cpu', 'cuda', 'cuda:N', 'auto'), else a ValueError;
    whether that device exists on this machine is `resolve_device`'s question."""
    if spec == "auto":
        return spec
    try:
        kind = torch.device(spec).type
    except RuntimeError as e:
        raise ValueError(f"device {spec!r} is not one of 'cpu', 'cuda', 'cuda:N', 'auto'") from e
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r}: only 'cpu', 'cuda', 'cuda:N' and 'auto' are supported")
    return spec


def resolve_device(spec: str) -> torch.device:
    """'cpu' | 'cuda' | 'cuda:N' | 'auto' -> a torch.device that exists here. Under torchrun a bare 'cuda' (or
    'auto' with CUDA present) means cuda:LOCAL_RANK. Asking for CUDA on a machine without it is an error that says
    so, never a silent fall back to the CPU."""
    if check_device(spec) == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} asked for, but torch {torch.__version__} sees no CUDA device here "
                "(use --device cpu or auto)"
            )
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def check_precision(precision: str) -> str:
    """`precision` itself when it is known, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` on `device` (a no-op context for fp32)."""
    dtype = PRECISIONS[check_precision(precision)]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
