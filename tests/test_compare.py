"""`sail report compare`: numeric differences between two summaries."""

import json

import pytest

from jobs.cli import main
from offline_eval.compare import compare_summaries, find_summary, flatten


def test_flatten_and_compare_hand_case():
    a = {"rows": {"items": 100, "users": 10}, "lifetime": {"lt7_mean": 4.0}, "dataset": "generated", "only_a": 1}
    b = {"rows": {"items": 110, "users": 10}, "lifetime": {"lt7_mean": 5.0}, "dataset": "movielens", "flag": True}
    assert flatten(a)["lifetime.lt7_mean"] == 4.0
    rows = {r["key"]: r for r in compare_summaries(a, b)}
    assert rows["rows.items"]["diff"] == 10 and rows["rows.items"]["rel"] == pytest.approx(0.10)
    assert rows["lifetime.lt7_mean"]["rel"] == pytest.approx(0.25)
    assert rows["rows.users"]["diff"] == 0  # numbers are always listed, even when equal
    assert rows["dataset"]["a"] == "generated" and rows["dataset"]["b"] == "movielens"
    assert rows["only_a"]["b"] == "(absent)" and rows["flag"]["a"] == "(absent)"


def test_cli_reads_run_directories(tmp_path, capsys):
    for name, lt in (("a", 4.0), ("b", 4.4)):
        (tmp_path / name / "report").mkdir(parents=True)
        (tmp_path / name / "report" / "summary.json").write_text(json.dumps({"lifetime": {"lt7_mean": lt}}))
    assert main(["report", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| lifetime.lt7_mean | 4 | 4.4 | 0.4 | +10.00% |" in out
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        find_summary(tmp_path / "missing")
    assert main(["report", "compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
