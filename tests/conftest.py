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
    from core.spark_session import build_spark

    session = build_spark(app_name="sail-tests", master="local[2]", shuffle_partitions=4, ui=False)
    yield session
    session.stop()


TINY_HOLDOUT_FRAC = 0.5
"""The embedding cutoff of the tiny test world's mined pairs (the smoke config's)."""


@pytest.fixture(scope="session")
def tiny_world_and_work(tmp_path_factory):
    """The tiny generated world (seed 7), a cache directory for preprocessing, and its pairs mined (polars) at the
    smoke config's embedding cutoff in the period layout; made once per run."""
    from core.timeline import embedding_cutoff
    from mining.mine_pairs import log_time_range, run_periods
    from mining.mining_config import CovisitConfig, MiningConfig, Q2IConfig, SwingConfig
    from sources.world import WorldConfig, generate_world

    base = tmp_path_factory.mktemp("sail_tiny")
    world, work, pairs = base / "world", base / "work", base / "pairs"
    generate_world(WorldConfig.for_size("tiny", seed=7), world)
    cfg = MiningConfig(
        data_dir=str(world),
        out_dir=str(pairs),
        engine="polars",
        covisit=CovisitConfig(top_k=50),
        swing=SwingConfig(top_k=50),
        q2i=Q2IConfig(min_clicks=1),
    )
    run_periods(cfg, embedding_cutoff(*log_time_range(world), TINY_HOLDOUT_FRAC))
    return world, work, pairs


@pytest.fixture(scope="module")
def interpreted_stages(spark):
    """For a module of tiny Spark inputs: skip whole-stage code generation (compiling each new plan costs more
    than running it); the setting is restored after the module."""
    key = "spark.sql.codegen.wholeStage"
    old = spark.conf.get(key)
    spark.conf.set(key, "false")
    yield
    spark.conf.set(key, old)
