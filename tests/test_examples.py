"""The committed own-logs example (examples/shop.yaml on examples/shop/) through `sail run`, and a bad mapping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from jobs.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shop.yaml"


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("shop") / "run"
    rc = main(["run", "--config", str(EXAMPLE), "--run-dir", str(run_dir)])
    assert rc == 0
    return run_dir


def test_the_example_runs_every_applicable_stage(shop_run, capsys):
    from jobs.pipeline import STAGES

    for name in (s.name for s in STAGES):
        meta = json.loads((shop_run / name / "stage.json").read_text())
        assert (shop_run / name / "_SUCCESS").exists(), name
        assert meta["skipped"] == ("[ab] enabled is false" if name == "ab" else None), name
    summary = json.loads((shop_run / "report" / "summary.json").read_text())
    assert summary["data_source"]["label"] == (
        "real logs: shop (AUC against sampled negatives: 4 per positive, popularity^0.75)"
    )
    html = (shop_run / "report" / "report.html").read_text()
    assert "simulated world" not in html and "against sampled negatives" in html
    # the photos reached the embedding's items; ids went through the id map
    manifest = json.loads((shop_run / "validate" / "manifest.json").read_text())
    assert manifest["media"]["mode"] == "files" and manifest["negatives"]["short"] == 0
    items = pl.read_parquet(shop_run / "validate" / "items" / "*.parquet")
    assert items.get_column("cover_path").is_not_null().sum() == 124
    id_map = pl.read_parquet(shop_run / "data" / "id_map" / "items" / "*.parquet")
    assert id_map.height == 180 and id_map.get_column("source_id").str.starts_with("0").all()


def test_a_bad_mapping_names_file_and_column_and_writes_nothing(tmp_path, capsys):
    shutil.copytree(EXAMPLE.parent / "shop", tmp_path / "shop")
    config = tmp_path / "shop.yaml"
    config.write_text(
        EXAMPLE.read_text().replace("item: article_id\n      time: t_dat", "item: sku\n      time: t_dat")
    )
    run_dir = tmp_path / "run"
    rc = main(["run", "--config", str(config), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (
        f"sail: error: {tmp_path / 'shop' / 'transactions.csv'}: missing column(s) 'sku' ([data.logs.interactions] "
        "item); its columns: ['t_dat', 'customer_id', 'article_id', 'price']"
    )
    assert not run_dir.exists()
