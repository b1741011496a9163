"""The shared Spark session works and uses the contracts' types."""

from datetime import UTC, datetime

from jobs import contracts as K


def test_session_round_trips_a_contract_table(spark):
    rows = [(1, datetime(2026, 1, 1, tzinfo=UTC).date(), 2, 5, 1000)]
    df = spark.createDataFrame(rows, schema=K.USER_ACTIVITY.to_spark())
    assert df.schema == K.USER_ACTIVITY.to_spark()
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert df.collect()[0]["sessions"] == 2
