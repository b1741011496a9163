"""benchmarks/run_all: the per-stage median table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_all import markdown, summarise  # noqa: E402


def test_median_min_max_per_stage_and_for_the_whole_process():
    runs = [{"data": 3.0, "mine": 10.0}, {"data": 1.0, "mine": 30.0}, {"data": 2.0, "mine": 20.0}]
    table = summarise(runs, walls=[40.0, 50.0, 45.0])
    assert table["data"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert table["mine"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert table["whole run (process)"] == {"median": 45.0, "min": 40.0, "max": 50.0}
    machine = {"cpu": "x", "cores": 2, "ram_gib": 24, "load_average_at_start": [0.5], "load_average_at_end": [1.0]}
    md = markdown("smoke", table, 3, machine)
    assert "median of 3 run(s)" in md and "| mine | 20.0 | 10.0 | 30.0 |" in md
