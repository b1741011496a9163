"""Media references: resolve them safely inside the catalogue's media root.

A catalogue row names its cover, frames and audio by paths relative to the data set's media root. A reference
that is absolute, contains a `..` component, holds U+FFFD (bytes that were not valid UTF-8, replaced on read), or
resolves (through symlinks) outside the root is rejected with `UnsafeMediaPath` and never opened. Validation drops
such a reference from its item (the item and its events are kept).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
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
    if "\ufffd" in ref:
        return "bytes that are not valid UTF-8"
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


Renderer = Callable[[int, dict], dict]  # (item id, world config as in the manifest) -> {cover, frames, audio}

_ON_DEMAND_REF = re.compile(r"^items/\d+/(?P<item>\d+)/(?P<name>cover\.png|frame_(?P<k>\d+)\.png|audio\.wav)$")


class MediaStore:
    """Reads an item's media by reference, from files under the media root or rendered on demand.

    Built from a data set's manifest: mode "files" reads under `media.root`; "on_demand" (the `large` generated
    world, whose media are too many to store) renders them from the world's seed with the data source's `renderer`
    (the world's `sources.world.render_from_config`); "none" (e.g. MovieLens) has no media, and every read raises
    FileNotFoundError. Unsafe references raise UnsafeMediaPath in every mode.
    """

    def __init__(
        self,
        mode: str,
        root: Path | None = None,
        world_config: dict | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        if mode not in ("files", "on_demand", "none"):
            raise ValueError(f"unknown media mode {mode!r}; expected 'files', 'on_demand' or 'none'")
        if mode == "files" and root is None:
            raise ValueError("media mode 'files' needs a media root")
        if mode == "on_demand" and world_config is None:
            raise ValueError("media mode 'on_demand' needs the generated world's config (manifest 'config')")
        if mode == "on_demand" and renderer is None:
            raise ValueError("media mode 'on_demand' needs a renderer (e.g. sources.world.render_from_config)")
        self.mode, self.root, self._world_config, self._renderer = mode, root, world_config, renderer
        self._cache: tuple[int, dict] | None = None  # last rendered item: frames and audio share one render

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, renderer: Renderer | None = None) -> MediaStore:
        """The store described by `<data_dir>/manifest.json` (a relative media root is relative to data_dir);
        `renderer` renders the media of an "on_demand" data set."""
        from core.io import read_dataset_manifest

        data_dir = Path(data_dir)
        manifest = read_dataset_manifest(data_dir)
        if manifest is None:
            raise FileNotFoundError(f"{data_dir / 'manifest.json'} not found: the media store is described there")
        media = manifest.get("media") or {}
        mode = media.get("mode") or "none"
        root = data_dir / media["root"] if media.get("root") else None
        return cls(mode, root, manifest.get("config") if mode == "on_demand" else None, renderer)

    def read(self, ref: str) -> bytes:
        """The bytes behind `ref`; FileNotFoundError when absent, UnsafeMediaPath when unsafe."""
        problem = media_ref_problem(ref)
        if problem:
            raise UnsafeMediaPath(f"media reference {ref!r} rejected: {problem}")
        if self.mode == "files":
            return read_media(self.root, ref)
        if self.mode == "none":
            raise FileNotFoundError(f"media reference {ref!r}: this data set has no media")
        m = _ON_DEMAND_REF.match(ref)
        if not m:
            raise FileNotFoundError(f"media reference {ref!r} is not a generated-world media path")
        media = self._render(int(m["item"]))
        if m["name"] == "cover.png":
            return media["cover"]
        if m["name"] == "audio.wav":
            return media["audio"]
        k = int(m["k"])
        if k >= len(media["frames"]):
            raise FileNotFoundError(f"media reference {ref!r}: item has {len(media['frames'])} frames")
        return media["frames"][k]

    def _render(self, item_id: int) -> dict:
        if self._cache is None or self._cache[0] != item_id:
            self._cache = (item_id, self._renderer(item_id, self._world_config))
        return self._cache[1]
