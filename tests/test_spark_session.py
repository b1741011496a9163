"""The shared Spark session works and uses the contracts' types."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import contracts as K


def test_session_round_trips_a_contract_table(spark):
    rows = [(1, datetime(2026, 1, 1, tzinfo=UTC).date(), 2, 5, 1000)]
    df = spark.createDataFrame(rows, schema=K.USER_ACTIVITY.to_spark())
    assert df.schema == K.USER_ACTIVITY.to_spark()
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert df.collect()[0]["sessions"] == 2


def test_a_local_session_logs_errors_only_through_the_shipped_log4j_file(spark):
    from urllib.parse import urlparse

    opts = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    (uri,) = [o.split("=", 1)[1] for o in opts.split() if o.startswith("-Dlog4j2.configurationFile=")]
    props = Path(urlparse(uri).path).read_text()
    assert "rootLogger.level = error" in props
    level = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel().toString()
    assert level == "ERROR"


LOOPBACK = {"tcp": {"0100007F"}, "tcp6": {"0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}}
"""127.0.0.1 as /proc/net/tcp writes it; ::ffff:127.0.0.1 and ::1 as /proc/net/tcp6 does."""


def test_a_local_session_listens_on_loopback_only(spark):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc")
    # the driver's RPC and block manager (by default on the address the host name resolves to) and py4j
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1" and conf.get("spark.driver.bindAddress") == "127.0.0.1"
    from core.machine import listening_sockets

    sockets = listening_sockets([spark.sparkContext._gateway.proc.pid])
    assert len(sockets) >= 2, sockets
    assert all(addr in LOOPBACK[table] for table, addr in sockets), sockets


def test_a_local_session_gets_a_share_of_the_machine_s_memory(spark):
    import os

    from core.spark_session import local_driver_memory

    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    want = local_driver_memory()
    assert want == f"{max(1, min(32, int(0.4 * ram_gb)))}g"
    assert spark.sparkContext.getConf().get("spark.driver.memory") == want
    heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**30
    assert heap > 0.8 * int(want[:-1])  # the JVM was started with it (not Spark's 1 GB default)


RELEASE_SCRIPT = """
import json, os, sys
from core.spark_session import build_spark, spark_released_after, spark_running
from pyspark.core.context import SparkContext

out = {}
with spark_released_after():  # a session the block starts: stopped, and its JVM gone, at the end
    build_spark("release-check", master="local[1]", driver_memory="512m").range(10).count()
    jvm = SparkContext._gateway.proc
out["first_jvm_exit"] = jvm.poll()
out["running_after"] = spark_running()
spark = build_spark("release-check", master="local[1]", driver_memory="512m")  # a fresh JVM works
out["second_jvm_is_new"] = SparkContext._gateway.proc.pid != jvm.pid
with spark_released_after():  # one running before the block: left alone
    out["count"] = spark.range(5).count()
out["kept"] = spark_running() and SparkContext._gateway.proc.poll() is None
print(json.dumps(out))
"""


def test_a_session_a_block_started_is_shut_down_with_its_jvm(tmp_path):
    """`sail run` releases a Spark session a stage started: the JVM exits (its heap goes back to the machine) and the
    next stage starts a fresh one; a session running before (the test suite's) is left running."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    res = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"first_jvm_exit": 0, "running_after": False, "second_jvm_is_new": True, "count": 5, "kept": True}
