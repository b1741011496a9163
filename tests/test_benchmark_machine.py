"""The benchmarks' child-process measurement: output, exit code, wall time and sampled peaks."""

from __future__ import annotations

import sys

from benchmarks.machine import dir_bytes, run_measured

CHILD = """
import sys, time
block = bytearray(200 * 2**20)  # 200 MB resident while it sleeps
for i in range(0, len(block), 4096):
    block[i] = 1
open(sys.argv[1], "wb").write(b"x" * 5000)
time.sleep(1.0)
print("done")
print("warned", file=sys.stderr)
sys.exit(3)
"""


def test_run_measured_reports_output_exit_code_and_peaks(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    run = run_measured(
        [sys.executable, "-c", CHILD, str(target / "f")], every=0.1, sample={"disk": lambda: dir_bytes(target)}
    )
    assert (run.returncode, run.stdout.strip(), run.stderr.strip()) == (3, "done", "warned")
    assert run.seconds >= 1.0 and run.peak_rss >= 200 * 2**20 and run.peaks == {"disk": 5000}
    merged = run_measured([sys.executable, "-c", CHILD, str(target / "g")], merge_stderr=True)
    assert sorted(merged.stdout.split()) == ["done", "warned"] and merged.stderr == ""
