"""benchmarks/mine_pairs --data: an existing data set mined by an engine, the counts taken from its mining.json."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_mining_spark import COVISIT_ROWS, Q2I_ROWS, make_dataset  # noqa: E402

from benchmarks.mine_pairs import main  # noqa: E402


def test_data_mode_mines_the_given_data_set_with_each_run_recorded(tmp_path):
    from mining.mine_pairs import run
    from mining.mining_config import MiningConfig

    data = make_dataset(tmp_path, COVISIT_ROWS, Q2I_ROWS)
    ref = run(MiningConfig(data_dir=str(data), out_dir=str(tmp_path / "ref"), engine="polars")).counts["pairs"]
    assert ref["i2i"]["covisit"] > 0 and ref["q2i"] > 0
    out = tmp_path / "result.json"
    assert main(["--data", str(data), "--engines", "polars", "--repeat", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["interactions"] == len(COVISIT_ROWS) and r["data"] == str(data)
    assert [(x["engine"], x["run"]) for x in r["runs"]] == [("polars", 1), ("polars", 2)]
    for x in r["runs"]:
        assert x["pairs"] == ref and x["wall_s"] >= x["mine_s"] > 0  # the job's own counts, default config
    assert r["best_wall_s"]["polars"] == min(x["wall_s"] for x in r["runs"])


def test_data_mode_refuses_a_directory_without_the_tables(tmp_path):
    with pytest.raises(SystemExit, match="no interactions/ table"):
        main(["--data", str(tmp_path), "--engines", "polars", "--out", str(tmp_path / "r.json")])
