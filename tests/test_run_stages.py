"""benchmarks/run_stages.py reads a stage that ran by its own command from GNU `/usr/bin/time -v` output."""

from benchmarks.run_stages import parse_time_v

TIME_V = """results: /work/runs/large-eval/retrieval.json
\tCommand being timed: "python -m jobs.cli eval-retrieval --config large --out /tmp/x"
\tUser time (seconds): 1646.36
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:18:15.61
\tMaximum resident set size (kbytes): 8409888
\tExit status: 0
"""


def test_time_v_gives_wall_seconds_peak_memory_and_the_command():
    got = parse_time_v(TIME_V)
    assert got == {
        "seconds": 4695.6,  # 1 h 18 min 15.61 s
        "peak_rss_mb": 8213,  # 8,409,888 kB / 1024
        "command": "python -m jobs.cli eval-retrieval --config large --out /tmp/x",
        "exit_status": 0,
    }
    assert parse_time_v(TIME_V.replace("1:18:15.61", "18:15.61"))["seconds"] == 1095.6
