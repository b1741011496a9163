"""The Feast repository of a run answers wherever the run directory is moved: the `export` stage's and `sail export`'s.

Each test queries a moved repository through Feast's own `get_historical_features` / `get_online_features` and
through `get_historical_item_features` (every entity row back, nulls for a row timed before its item's feature
row), compares with the offline parquet table the export wrote, and greps the repository for absolute paths.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contracts import ITEM_FEATURES
from core.io import read_table
from export.export_features import get_historical_item_features, read_current

pytestmark = pytest.mark.spark


def files_mentioning(repo: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every file of `repo` outside the parquet tables whose bytes contain a needle."""
    hits = []
    for path in sorted(p for p in repo.rglob("*") if p.is_file() and p.suffix != ".parquet"):
        data = path.read_bytes()
        hits += [(str(path.relative_to(repo)), n) for n in needles if n.encode() in data]
    return hits


def assert_answers(repo: Path) -> None:
    """Feast on `repo` returns the vectors and codes of its offline table, online and point-in-time."""
    import feast

    current = read_current(repo)
    view, version, levels = current["feature_view"], current["version"], current["levels"]
    table = read_table(repo / "offline" / view, ITEM_FEATURES).to_pandas().sort_values("item_id")
    # Given four items with features and a fifth asked about one day before its own feature row
    picked = table.iloc[[0, len(table) // 3, len(table) // 2, len(table) - 2, len(table) - 1]].reset_index(drop=True)
    ts = pd.to_datetime(picked["event_timestamp"], utc=True)
    entity_df = pd.DataFrame(
        {
            "item_id": picked["item_id"].astype("int64"),
            "event_timestamp": list(ts[:4] + pd.Timedelta(days=1)) + [ts[4] - pd.Timedelta(days=1)],
        }
    )
    refs = [f"{view}:embedding", *[f"{view}:sid_{i}" for i in range(1, levels + 1)], f"{view}:model_version"]
    store = feast.FeatureStore(repo_path=str(repo))

    # When Feast's own offline retrieval is asked for the four rows that have features
    got = store.get_historical_features(entity_df=entity_df.iloc[:4], features=refs).to_df()
    got = got.set_index("item_id").loc[picked["item_id"][:4]]
    # Then the vectors and codes are the parquet's
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(got["embedding"].iloc[i], np.float32), picked["embedding"][i])
        assert [int(got[f"sid_{j}"].iloc[i]) for j in range(1, levels + 1)] == list(picked["semantic_ids"][i])
        assert got["model_version"].iloc[i] == version

    # When all five rows go through the offline read helper: five rows out, in order, the early one with nulls
    hist = get_historical_item_features(repo, entity_df)
    assert len(hist) == 5 and hist["item_id"].tolist() == entity_df["item_id"].tolist()
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(hist["embedding"][i], np.float32), picked["embedding"][i])
        assert [hist[f"sid_{j}"][i] for j in range(1, levels + 1)] == list(picked["semantic_ids"][i])
        assert hist["model_version"][i] == version
    assert hist["embedding"][4] is None and hist["model_version"][4] is None
    assert all(pd.isna(hist[f"sid_{j}"][4]) for j in range(1, levels + 1))

    # When Feast's online store is asked for the five items and an unknown one
    ids = [*picked["item_id"].astype(int).tolist(), -1]
    online = store.get_online_features(features=refs, entity_rows=[{"item_id": i} for i in ids]).to_dict()
    for i in range(5):
        np.testing.assert_array_equal(np.asarray(online["embedding"][i], np.float32), picked["embedding"][i])
        assert [online[f"sid_{j}"][i] for j in range(1, levels + 1)] == list(picked["semantic_ids"][i])
    assert online["embedding"][5] is None


def test_the_export_stage_repository_answers_in_a_moved_run(smoke_done, smoke_copy):
    repo = smoke_copy / "export" / "feature_repo"
    meta = json.loads((smoke_copy / "export" / "stage.json").read_text())["metrics"]
    # No file names the stage's temporary folder or the run directory the repository was written in
    assert files_mentioning(repo, [".export.tmp-", str(smoke_done)]) == []
    assert json.loads((repo / "versions" / f"{meta['feature_view']}.json").read_text())["offline_dir"] == (
        f"offline/{meta['feature_view']}"
    )
    assert_answers(repo)
    # The stage's own check ran on a copy at another path and saw the early row come back with nulls
    check = meta["check"]
    assert check["ok"] and check["checked_at"] == "a copy of the repository at another path"
    assert check["offline_retrieval_rows_in"] == check["offline_retrieval_rows_out"] == 2 * check["sample"]
    assert check["offline_retrieval_early_not_null"] == 0


def test_a_repository_written_by_sail_export_answers_after_a_move(smoke_copy, tmp_path):
    from jobs.cli import main

    # Given `sail export` writing a new repository from the run's ITEM_FEATURES
    written = tmp_path / "written"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            [
                "export",
                "--features",
                str(smoke_copy / "embed" / "item_features"),
                "--repo",
                str(written / "feature_repo"),
                "--check-sample",
                "20",
            ]
        )
    assert rc == 0 and json.loads(out.getvalue())["check_ok"], out.getvalue()
    # When the repository is moved
    moved = tmp_path / "elsewhere" / "repo"
    moved.parent.mkdir()
    shutil.move(written / "feature_repo", moved)
    # Then it names no absolute path of where it was written, and Feast answers from the new place
    assert files_mentioning(moved, [str(written), str(smoke_copy)]) == []
    assert_answers(moved)
