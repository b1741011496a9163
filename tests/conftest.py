"""Shared fixtures: one local Spark session per test run (Spark's start-up costs seconds)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def spark():
    """A `local[2]` SparkSession with few shuffle partitions and the UI off, stopped at the end of the run."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("Java 17+ is required for the Spark tests (PySpark 4); run scripts/setup.sh for the check")
    from jobs.spark_session import build_spark

    session = build_spark(app_name="sail-tests", master="local[2]", shuffle_partitions=4, ui=False)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_world_and_work(tmp_path_factory):
    """The tiny generated world (seed 7) and a cache directory for mining / preprocessing, made once per run."""
    from offline_eval.world import WorldConfig, generate_world

    base = tmp_path_factory.mktemp("sail_tiny")
    world, work = base / "world", base / "work"
    generate_world(WorldConfig.for_size("tiny", seed=7), world)
    return world, work


@pytest.fixture(scope="module")
def interpreted_stages(spark):
    """For a module of tiny Spark inputs: skip whole-stage code generation (compiling each new plan costs more
    than running it); the setting is restored after the module."""
    key = "spark.sql.codegen.wholeStage"
    old = spark.conf.get(key)
    spark.conf.set(key, "false")
    yield
    spark.conf.set(key, old)
