"""The shared Spark session works and uses the contracts' types."""

from datetime import UTC, datetime

from core import contracts as K


def test_session_round_trips_a_contract_table(spark):
    rows = [(1, datetime(2026, 1, 1, tzinfo=UTC).date(), 2, 5, 1000)]
    df = spark.createDataFrame(rows, schema=K.USER_ACTIVITY.to_spark())
    assert df.schema == K.USER_ACTIVITY.to_spark()
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert df.collect()[0]["sessions"] == 2


def test_a_local_session_logs_errors_only_through_the_shipped_log4j_file(spark):
    from pathlib import Path
    from urllib.parse import urlparse

    opts = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    (uri,) = [o.split("=", 1)[1] for o in opts.split() if o.startswith("-Dlog4j2.configurationFile=")]
    props = Path(urlparse(uri).path).read_text()
    assert "rootLogger.level = error" in props
    level = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel().toString()
    assert level == "ERROR"
