"""The Spark master of `sail run` ([spark] master) and scripts/spark-cluster.sh: the setting is checked at load and
left out of every stage's hash; the script refuses bad arguments; on a 2-worker standalone cluster the Spark stages
write the same rows as on local[*] (slow; pair scores to 1e-9 relative, as Spark against polars)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from jobs import pipeline
from jobs.cli import main
from jobs.pipeline import STAGES, SparkSection, load_config, mining_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "spark-cluster.sh"
SMOKE = Path(pipeline.__file__).parent / "configs" / "smoke.yaml"
BASH = shutil.which("bash") or "/bin/bash"


def _smoke_with_master(tmp_path: Path, master: object, **sections: dict) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["spark"] = {"master": master}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------ the setting


def test_the_default_master_is_local():
    assert load_config("smoke").spark.master == "local[*]"


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "spark://127.0.0.1:7077", "spark://head:7077"])
def test_a_local_or_standalone_master_is_accepted_and_reaches_mining(tmp_path, master):
    cfg = load_config(str(_smoke_with_master(tmp_path, master)))
    assert cfg.spark.master == master
    assert mining_config(cfg, "d", "o").master == master


@pytest.mark.parametrize(
    "master, says",
    [
        ("yarn", "'yarn'"),
        ("local[0]", "'local[0]'"),
        ("spark://127.0.0.1", "'spark://127.0.0.1'"),
        ("spark://127.0.0.1:70777", "'spark://127.0.0.1:70777'"),
        ("", "''"),
    ],
)
def test_a_bad_master_exits_2_naming_file_section_and_key(tmp_path, capsys, master, says):
    config = _smoke_with_master(tmp_path, master)
    rc = main(["run", "--config", str(config), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [
        f"sail: error: {config} [spark]: master must be local, local[N], local[*] or spark://host:port, got {says}"
    ]
    assert not (tmp_path / "run").exists()


def test_a_master_that_is_not_a_string_is_refused(tmp_path):
    config = _smoke_with_master(tmp_path, 7077)
    with pytest.raises(ValueError, match=r"\[spark\]: master must be a string, got 7077"):
        load_config(str(config))


def test_no_stage_hashes_the_master():
    # the outputs are the same on any master (the slow test below checks it), so a new master reruns nothing
    local = load_config("smoke")
    cluster = replace(local, spark=SparkSection(master="spark://127.0.0.1:7077"))
    for stage in STAGES:
        assert stage.settings(local) == stage.settings(cluster), stage.name


# ------------------------------------------------------------------------------------------------ the script


def _script(*args: str, env: dict[str, str] | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    if state is not None:
        full["SAIL_SPARK_CLUSTER_DIR"] = str(state)
    full.setdefault("PYSPARK_PYTHON", sys.executable)
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120)


@pytest.mark.parametrize(
    "args, says",
    [
        ((), "missing command (start, stop or status)"),
        (("restart",), "unknown command 'restart' (start, stop or status)"),
        (("start", "--workers", "0"), "--workers must be an integer in [1, 64], got '0'"),
        (("start", "--cores", "two"), "--cores must be an integer in [1, 1024], got 'two'"),
        (("start", "--memory", "1x"), "--memory must be an amount like 512m or 1g, got '1x'"),
        (("start", "--port", "70000"), "--port must be an integer in [1, 65535], got '70000'"),
        (("start", "--port"), "--port needs a value"),
        (("start", "--port", "7077", "--ui-port", "7077"), "--port and --ui-port must differ (both 7077)"),
        (("start", "--verbose"), "unknown option '--verbose'"),
        (("stop", "--workers", "2"), "--workers applies to start only"),
    ],
)
def test_the_script_refuses_bad_arguments_with_exit_2(tmp_path, args, says):
    res = _script(*args, state=tmp_path / "state")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"spark-cluster: {says}"
    assert not (tmp_path / "state").exists()


def test_status_and_stop_with_nothing_running(tmp_path):
    res = _script("status", state=tmp_path / "state")
    assert (res.returncode, res.stdout.strip()) == (1, f"spark-cluster: not running (state: {tmp_path / 'state'})")
    res = _script("stop", state=tmp_path / "state")
    assert (res.returncode, res.stdout.strip()) == (0, "spark-cluster: stopped 0 process(es)")


def test_start_without_java_or_pyspark_says_what_is_missing(tmp_path):
    # Given a PATH with the shell tools the script uses and no java
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "basename", "cat", "sed", "grep", "tr", "sort", "seq", "sleep", "rm", "mkdir", "tail"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    res = _script("start", env={"PATH": str(bin_dir), "JAVA_HOME": ""}, state=tmp_path / "state")
    assert res.returncode == 3
    assert "Java 17 or newer is required and was not found" in res.stderr
    # Given a Python without PySpark
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    res = _script("start", env={"PYSPARK_PYTHON": str(fake)}, state=tmp_path / "state")
    assert res.returncode == 3
    assert res.stderr.strip() == f"spark-cluster: PySpark is not installed for {fake} (set PYSPARK_PYTHON to the " + (
        "project's venv Python)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_on_a_taken_port_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _script("start", "--port", str(port), "--ui-port", str(_free_port()), state=tmp_path / "state")
    assert res.returncode == 1
    assert res.stderr.strip() == f"spark-cluster: port {port} on 127.0.0.1 is taken (choose another with --port)"


# ------------------------------------------------------------------------------------------------ on a cluster


def _assert_same_rows(a: Path, b: Path) -> None:
    """Tables `a` and `b` hold the same rows in any order; float columns to 1e-9 relative (a Spark sum's order
    follows the partitioning, which differs between local[*] and a cluster; tests/test_mining_parity.py does the
    same for Spark against polars). Tables without float columns must be exactly equal."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    ta, tb = (pl.from_arrow(pq.read_table(p)) for p in (a, b))
    assert sorted(ta.columns) == sorted(tb.columns) and ta.height == tb.height
    floats = [c for c, t in ta.schema.items() if t in (pl.Float32, pl.Float64)]
    if not floats:
        cols = sorted(ta.columns)
        assert sorted(map(repr, ta.select(cols).rows())) == sorted(map(repr, tb.select(cols).rows()))
        return
    keys = sorted(c for c in ta.columns if c not in floats)
    ta, tb = ta.sort(keys), tb.sort(keys)
    assert ta.select(keys).equals(tb.select(keys))
    for c in floats:
        assert np.allclose(ta[c].to_numpy(), tb[c].to_numpy(), rtol=1e-9, atol=0, equal_nan=True), c


def _sail_run(config: Path, run_dir: Path, until: str, timeout: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_LOCAL_IP": "127.0.0.1"}
    argv = [sys.executable, "-m", "jobs.cli", "run", "--config", str(config), "--run-dir", str(run_dir)]
    res = subprocess.run([*argv, "--until", until], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def _listening(pids: set[int]) -> list[str]:
    """The local addresses the processes `pids` listen on (`ss -ltnp`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            found.append(line.split()[3])
    return found


TABLES = (
    "mine/train/i2i_pairs",
    "mine/train/q2i_pairs",
    "mine/heldout/i2i_pairs",
    "mine/full/seq2item",
    "ranking_samples/ranking_samples",
    "ranking_samples/ranking_samples_ext",
)


@pytest.mark.slow
def test_the_spark_stages_write_the_same_rows_on_a_standalone_cluster(tmp_path):
    # Given the smoke config with its mining on Spark (retrieval off: it runs no Spark), run on local[*]
    spark_smoke = {"mining": {"engine": "spark"}, "retrieval": {"enabled": False}}
    (tmp_path / "l").mkdir()
    local = _smoke_with_master(tmp_path / "l", "local[*]", **spark_smoke)
    _sail_run(local, tmp_path / "local", "ranking_samples", timeout=900)
    # and a 2-worker standalone cluster on loopback
    state, port, ui_port = tmp_path / "cluster", _free_port(), _free_port()
    try:
        res = _script(
            "start", "--workers", "2", "--cores", "1", "--memory", "1g", "--port", str(port), "--ui-port",
            str(ui_port), state=state,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        url = f"spark://127.0.0.1:{port}"
        assert res.stdout.strip().splitlines()[-1] == url
        assert _script("status", state=state).returncode == 0
        pids = {int(p.read_text()) for p in (state / "run").glob("*.pid")}
        assert len(pids) == 3
        # When the same config runs with the cluster as its master
        (tmp_path / "c").mkdir()
        cluster = _smoke_with_master(tmp_path / "c", url, **spark_smoke)
        _sail_run(cluster, tmp_path / "cluster-run", "ranking_samples", timeout=1500)
        # Then both Spark stages ran on the cluster, and the master and the workers listen on loopback only
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=10) as r:
            master = json.load(r)
        assert master["aliveworkers"] == 2
        apps = {a["name"] for a in master["completedapps"]}
        assert {"sail-mine-pairs", "sail-ranking-samples"} <= apps
        if shutil.which("ss"):
            addresses = _listening(pids)
            assert addresses and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses
    finally:
        stopped = _script("stop", state=state)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "spark-cluster: stopped 3 process(es)"
    assert not list((state / "run").glob("*.pid"))
    # and the mined pairs and the ranking samples hold the same rows (pair scores to 1e-9 relative)
    for table in TABLES:
        _assert_same_rows(tmp_path / "local" / table, tmp_path / "cluster-run" / table)
    # and the local config over the cluster's run directory finds every stage up to date (the master is not hashed)
    out = _sail_run(local, tmp_path / "cluster-run", "ranking_samples", timeout=300)
    assert "running" not in out and out.count("up to date, skipped") == 8, out
