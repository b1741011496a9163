"""The contracts convert consistently to arrow, polars, Spark and pandas."""

import polars as pl
import pyarrow as pa
import pytest

from core import contracts as K


def test_every_log_table_is_a_contract():
    assert set(K.LOG_TABLES) <= set(K.ALL_TABLES)


@pytest.mark.parametrize("schema", list(K.ALL_TABLES.values()), ids=list(K.ALL_TABLES))
def test_arrow_and_polars_agree(schema):
    arrow = schema.to_arrow()
    assert arrow.names == schema.names
    # an empty arrow table of the contract becomes a polars frame with exactly the polars contract
    df = pl.from_arrow(schema.empty_arrow())
    assert dict(df.schema) == schema.to_polars()


@pytest.mark.parametrize("schema", list(K.ALL_TABLES.values()), ids=list(K.ALL_TABLES))
def test_pandas_dtypes_cover_every_column(schema):
    assert list(schema.to_pandas_dtypes()) == schema.names


def test_spark_struct_matches_contract():
    from pyspark.sql import types as T

    st = K.INTERACTIONS.to_spark()
    assert st.names == K.INTERACTIONS.names
    assert st["ts"].dataType == T.TimestampType()
    assert st["user_id"].dataType == T.LongType()
    assert st["position"].dataType == T.IntegerType()
    assert not st["event_id"].nullable
    items = K.ITEMS.to_spark()
    assert items["frame_paths"].dataType == T.ArrayType(T.StringType(), containsNull=False)
    assert items["ocr_text"].nullable


def test_types_are_the_documented_ones():
    assert K.arrow_type("timestamp") == pa.timestamp("us", tz="UTC")
    assert K.arrow_type("list<float32>") == pa.list_(pa.float32())
    assert K.polars_type("list<int64>") == pl.List(pl.Int64)


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError, match="unknown dtype"):
        K.Column("x", "int128")
    with pytest.raises(ValueError, match="duplicate column"):
        K.TableSchema("t", (K.Column("a", "int64"), K.Column("a", "int64")))
    with pytest.raises(ValueError, match="key columns"):
        K.TableSchema("t", (K.Column("a", "int64"),), key=("b",))
    with pytest.raises(KeyError, match="no column 'nope'"):
        K.ITEMS.column("nope")
