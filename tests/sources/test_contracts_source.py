"""`data.source: contracts`: a folder already in the contracts enters a run as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl

from jobs.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "smoke.yaml"


def _config(tmp_path: Path, folder: str) -> Path:
    text = SMOKE.read_text().replace(
        "  source: generated\n  size: tiny\n  seed: 7\n", f"  source: contracts\n  contracts_dir: {folder}\n"
    )
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_a_contracts_folder_runs_through_validate_with_its_media(tiny_world_and_work, tmp_path):
    world, _, _ = tiny_world_and_work
    shutil.copytree(world, tmp_path / "tables")
    run_dir = tmp_path / "run"
    rc = main(["run", "--config", str(_config(tmp_path, "tables")), "--run-dir", str(run_dir), "--until", "validate"])
    assert rc == 0
    for table in ("items", "interactions"):
        got = pl.read_parquet(run_dir / "validate" / table / "*.parquet")
        assert got.height == pl.read_parquet(world / table / "*.parquet").height
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    assert manifest["media"]["root"] == str((tmp_path / "tables" / "media").resolve())
    assert manifest["dataset"] == "generated" and manifest["impressions"] == "simulated"


def test_a_folder_without_a_table_is_refused_naming_it(tiny_world_and_work, tmp_path, capsys):
    world, _, _ = tiny_world_and_work
    shutil.copytree(world, tmp_path / "tables", ignore=shutil.ignore_patterns("searches"))
    rc = main(
        ["run", "--config", str(_config(tmp_path, "tables")), "--run-dir", str(tmp_path / "r"), "--until", "data"]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert f"[data] contracts_dir {(tmp_path / 'tables').resolve()}: no ['searches'] table folder(s)" in err
