"""Media references: resolve them safely inside the catalogue's media root.

A catalogue row names its cover, frames and audio by paths relative to the data set's media root. A reference
that is absolute, contains a `..` component, or resolves (through symlinks) outside the root is rejected with
`UnsafeMediaPath` and never opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeMediaPath(ValueError):
    """A media reference points outside the media root (absolute path, `..`, or a symlink escape)."""


def media_ref_problem(ref: str | None) -> str | None:
    """The lexical reason a reference is unsafe, or None when it is a plain relative path.

    This check never touches the file system, so validation can run it on every catalogue row.
    """
    if ref is None:
        return None
    if ref == "" or ref.strip() != ref:
        return "empty or padded path"
    if "\x00" in ref:
        return "NUL byte in path"
    if ref.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(ref):
        return "absolute path"
    parts = PurePosixPath(ref.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' component"
    return None


def resolve_media_path(root: str | os.PathLike, ref: str) -> Path:
    """The absolute path of `ref` under `root`; raises UnsafeMediaPath instead of escaping the root."""
    problem = media_ref_problem(ref)
    if problem:
        raise UnsafeMediaPath(f"media reference {ref!r} rejected: {problem} (media root {root})")
    root_real = Path(root).resolve()
    candidate = (root_real / ref).resolve()
    if not candidate.is_relative_to(root_real):
        raise UnsafeMediaPath(f"media reference {ref!r} resolves to {candidate}, outside the media root {root_real}")
    return candidate


def read_media(root: str | os.PathLike, ref: str) -> bytes:
    """The bytes of a media file under `root` (FileNotFoundError names the reference when it is absent)."""
    path = resolve_media_path(root, ref)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"media reference {ref!r} not found under {root}") from exc
