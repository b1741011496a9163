"""The one place a SparkSession is built (entry points and the test fixture call it; transforms never do)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_java() -> None:
    """Raises RuntimeError with what to do when no Java 17+ is available for PySpark 4."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not os.path.exists(java):
        raise RuntimeError(
            "Java 17 or newer is required by PySpark 4 and was not found; install openjdk-17 or set JAVA_HOME"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError) as exc:
        raise RuntimeError(f"could not read the Java version from {java!r}: {out.strip()!r}") from exc
    if major < 17:
        raise RuntimeError(f"Java {major} found at {java}; PySpark 4 needs Java 17 or newer (set JAVA_HOME)")


def local_shuffle_partitions() -> int:
    """Shuffle partitions of a local session when none are given: a few per core. Spark's default of 200 means
    hundreds of tiny tasks on a laptop; cluster runs (master from spark-submit) keep Spark's or their own."""
    return 4 * (os.cpu_count() or 2)


def local_driver_memory() -> str:
    """The JVM heap of a local session when none is given: 40% of this machine's memory, 1 to 32 GB. In local mode
    every task runs in the driver, and with Spark's default of 1 GB all but a sliver of a large join spills to local
    disk (the large world's ranking samples took 19 minutes at 1 GB)."""
    from core.machine import ram_bytes

    return f"{max(1, min(32, int(0.4 * ram_bytes() / 2**30)))}g"


def build_spark(
    app_name: str = "sail",
    master: str | None = "local[*]",
    shuffle_partitions: int | None = None,
    ui: bool = False,
    driver_memory: str | None = None,
):
    """A SparkSession with adaptive query execution on and UTC as the session time zone.

    `master=None` leaves the master to `spark-submit` (cluster runs); `local[*]` is the single-machine default. A
    local session gets `local_driver_memory()` unless `driver_memory` says otherwise, and listens on loopback only.
    """
    check_java()
    # Python workers must run this interpreter (the venv's), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    builder = (
        builder.config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.skewJoin.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", str(ui).lower())
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if shuffle_partitions is None and master and master.startswith("local"):
        shuffle_partitions = local_shuffle_partitions()
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    local = bool(master) and master.startswith("local")
    if driver_memory is None and local:
        driver_memory = local_driver_memory()
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    if local or (master and master.startswith("spark://") and master[8:].split(":")[0] in ("127.0.0.1", "localhost")):
        # local mode or a cluster on this machine (scripts/spark-cluster.sh): the driver's RPC and block manager
        # listen on loopback only (by default they bind to the address the host name resolves to)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    if local:  # cluster runs keep their own logging and JVM set-up
        log4j = Path(__file__).with_name("log4j2.properties")
        # The throughput collector: a local job is batch work in one JVM on a few cores, where G1's concurrent
        # marking competes with the tasks (pair mining at 20M events: about 5% faster, benchmarks/mine_pairs.py).
        opts = f"-Dlog4j2.configurationFile={log4j.as_uri()} -XX:+UseParallelGC"
        builder = builder.config("spark.driver.extraJavaOptions", opts)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_running() -> bool:
    """Whether this process has a live SparkContext (without importing PySpark when nothing did)."""
    core = sys.modules.get("pyspark.core.context")
    return core is not None and core.SparkContext._active_spark_context is not None


def release_spark(timeout_s: float = 60.0) -> None:
    """Stops this process's SparkContext and shuts down the JVM PySpark started for it.

    `SparkSession.stop()` alone leaves the JVM running, with the heap it grew to (a local session's 40% of the
    memory once a large job has filled it), for the rest of the process; the next session would reuse it. Here the
    JVM is told to exit (PySpark's gateway exits when its stdin closes), so the memory goes back to the machine and
    the next `build_spark` starts a fresh one. A JVM this process did not start (spark-submit's) is left alone.
    """
    from pyspark.core.context import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is None or proc is None:  # no JVM of ours (spark-submit launched this driver)
        return
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def spark_released_after() -> Iterator[None]:
    """Releases (`release_spark`) a Spark session the block started, whether it succeeded or failed; a session that
    was running before the block is left running (the test suite's shared one, a caller's own)."""
    before = spark_running()
    try:
        yield
    finally:
        if not before and spark_running():
            release_spark()
