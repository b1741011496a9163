"""The ranking-samples engine benchmark: its agreement verdict and its table, on hand-made records."""

from __future__ import annotations

from benchmarks import ranking_samples as bench
from benchmarks.machine import dir_bytes


def _ok(engine: str, sim_sum: float, rows=None) -> dict:
    return {"run_dir": "/r/medium", "engine": engine, "status": "ok", "seconds": 10.0, "process_seconds": 12.0,
            "peak_rss_mb": 3000, "peak_local_dir_mb": 100, "rows": rows or {"train": 5, "valid": 3, "test": 4},
            "embedding_dim": 64, "with_vector": 12, "with_hist_sim": 10, "hist_sim_sum": sim_sum}  # fmt: skip


def test_agreement_needs_equal_counts_and_similarity_sums():
    assert "agree" in bench.agreement([_ok("lookup", 4.0), _ok("join", 4.0 + 1e-9)])["/r/medium"]
    assert "DIFFER" in bench.agreement([_ok("lookup", 4.0), _ok("join", 4.1)])["/r/medium"]
    moved = _ok("join", 4.0, rows={"train": 6, "valid": 2, "test": 4})
    assert "DIFFER" in bench.agreement([_ok("lookup", 4.0), moved])["/r/medium"]
    failed = {"run_dir": "/r/medium", "engine": "join", "status": "failed", "process_seconds": 99.0,
              "peak_rss_mb": 9000, "peak_local_dir_mb": 28000, "error": "No space left on device"}  # fmt: skip
    assert "1 engine(s) finished" in bench.agreement([_ok("lookup", 4.0), failed])["/r/medium"]


def test_markdown_shows_each_build_and_the_failure_with_its_error():
    failed = {"run_dir": "/r/medium", "engine": "join", "status": "failed", "process_seconds": 99.0,
              "peak_rss_mb": 9000, "peak_local_dir_mb": 28000, "error": "No space left on device"}  # fmt: skip
    runs = [_ok("lookup", 4.0), failed]
    result = {"machine": {"code": {"commit": "abc", "dirty": False}, "cores": 2, "ram_gib": 23.5}, "config": "large",
              "runs": runs, "agreement": bench.agreement(runs)}  # fmt: skip
    md = bench.to_markdown(result)
    assert "| medium | lookup | ok | 10.0 | 3,000 | 100 | 5 / 3 / 4 | 12 | 4.000 |" in md
    assert "| medium | join | failed after 99.0 s | | 9,000 | 28,000 | No space left on device |" in md
    assert "Commit abc;" in md


def test_dir_bytes_counts_every_file_below(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    assert dir_bytes(tmp_path) == 8
