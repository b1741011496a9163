"""Media references never escape the media root."""

import os

import pytest

from core.media import UnsafeMediaPath, media_ref_problem, read_media, resolve_media_path


@pytest.mark.parametrize(
    "ref, problem",
    [
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x.png", "absolute path"),
        ("C:/x.png", "absolute path"),
        ("../secret.png", "'..' component"),
        ("items/../../secret.png", "'..' component"),
        ("items\\..\\..\\x.png", "'..' component"),
        ("", "empty or padded path"),
        (" items/a.png", "empty or padded path"),
        ("a\x00.png", "NUL byte in path"),
    ],
)
def test_unsafe_references_are_named(ref, problem):
    assert media_ref_problem(ref) == problem
    with pytest.raises(UnsafeMediaPath, match="rejected"):
        resolve_media_path("/tmp", ref)


def test_plain_relative_references_resolve_under_the_root(tmp_path):
    (tmp_path / "items").mkdir()
    (tmp_path / "items" / "a.png").write_bytes(b"png")
    assert media_ref_problem("items/a.png") is None
    assert media_ref_problem(None) is None
    assert resolve_media_path(tmp_path, "items/a.png") == (tmp_path / "items" / "a.png").resolve()
    assert read_media(tmp_path, "items/a.png") == b"png"


def test_symlink_escape_is_rejected_and_never_opened(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.png")
    with pytest.raises(UnsafeMediaPath, match="outside the media root"):
        read_media(root, "link.png")


def test_missing_file_names_the_reference(tmp_path):
    with pytest.raises(FileNotFoundError, match="'items/none.png' not found"):
        read_media(tmp_path, "items/none.png")


def test_media_store_files_and_on_demand_agree(tmp_path):
    """An on-demand store renders the same bytes the tiny world wrote as files."""
    import json

    from core.media import MediaStore
    from sources.world import WorldConfig, generate_world, render_from_config

    cfg = WorldConfig.for_size("tiny", seed=3, n_items=40, n_users=20, days=2)
    generate_world(cfg, tmp_path / "w")
    files = MediaStore.from_data_dir(tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    on_demand = MediaStore("on_demand", world_config=manifest["config"], renderer=render_from_config)
    import polars as pl

    from core import contracts as K
    from core.io import read_table

    items = pl.from_arrow(read_table(tmp_path / "w" / "items", K.ITEMS)).head(3)
    for row in items.iter_rows(named=True):
        for ref in [row["cover_path"], row["audio_path"], *row["frame_paths"]]:
            assert on_demand.read(ref) == files.read(ref)
    with pytest.raises(UnsafeMediaPath):
        on_demand.read("../x.png")
    with pytest.raises(FileNotFoundError, match="no media"):
        MediaStore("none").read("items/1.png")
