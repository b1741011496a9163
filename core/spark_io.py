"""Reading and writing contract tables with Spark (the single-machine side is `core.io`).

`read_contract_table` reads a table directory of parquet and checks it against its contract: a missing column or
an incompatible type is a `SchemaError` naming the column and the path. Rows are not filtered here (null ids and
the like are counted and rejected by the mining transforms).

`write_contract_table` selects exactly the contract's columns, writes them to a temporary sibling directory and
renames it into place, with a `_SUCCESS` marker, so a reader never sees half a table. The rename goes through
Hadoop's FileSystem API, so it works on a local disk and on HDFS alike (object stores without atomic rename
need a committer instead).
"""

from __future__ import annotations

import os
import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.contracts import TableSchema
from core.io import SUCCESS, SchemaError

# actual Spark type -> contract types it may be cast to without loss of meaning
_WIDENS: dict[type, tuple[type, ...]] = {
    T.ByteType: (T.ShortType, T.IntegerType, T.LongType),
    T.ShortType: (T.IntegerType, T.LongType),
    T.IntegerType: (T.LongType,),
    T.FloatType: (T.DoubleType,),
    T.TimestampNTZType: (T.TimestampType,),  # a naive parquet timestamp is read as UTC (the session zone)
}


def _compatible(actual: T.DataType, expected: T.DataType) -> bool:
    if isinstance(actual, T.ArrayType) and isinstance(expected, T.ArrayType):
        return _compatible(actual.elementType, expected.elementType)
    if type(actual) is type(expected) or isinstance(actual, T.NullType):
        return True
    return type(expected) in _WIDENS.get(type(actual), ())


def _cast_target(dtype: T.DataType) -> T.DataType:
    # casts to non-nullable array elements are refused by Spark; nullability is not what the cast is for
    if isinstance(dtype, T.ArrayType):
        return T.ArrayType(_cast_target(dtype.elementType), containsNull=True)
    return dtype


def check_contract_columns(df: DataFrame, schema: TableSchema, source: str) -> None:
    """Raises SchemaError when a contract column is missing from `df` or has an incompatible type."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [c.name for c in schema if c.name not in fields]
    if missing:
        raise SchemaError(
            f"{source}: table {schema.name!r} is missing column(s) {missing}; found columns {sorted(fields)}"
        )
    for f in schema.to_spark().fields:
        got = fields[f.name]
        if not _compatible(got, f.dataType):
            raise SchemaError(
                f"{source}: column {f.name!r} of table {schema.name!r} has Spark type {got.simpleString()}, "
                f"expected {f.dataType.simpleString()} (contract dtype {schema.column(f.name).dtype})"
            )


def conform(df: DataFrame, schema: TableSchema, source: str = "<dataframe>") -> DataFrame:
    """Checks `df` against the contract and selects exactly its columns, in order, cast to its types."""
    check_contract_columns(df, schema, source)
    return df.select([F.col(f.name).cast(_cast_target(f.dataType)).alias(f.name) for f in schema.to_spark().fields])


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def read_contract_table(spark: SparkSession, path: str | os.PathLike, schema: TableSchema) -> DataFrame:
    """Reads a contract table directory (parquet) and conforms it; raises SchemaError / FileNotFoundError."""
    path = str(path)
    if _is_local(path):
        local = path.removeprefix("file://")
        if not os.path.exists(local):
            raise FileNotFoundError(f"table {schema.name!r} not found: {path}")
        if os.path.isdir(local) and not os.path.exists(os.path.join(local, SUCCESS)):
            raise FileNotFoundError(f"{path} has no {SUCCESS} marker: it is incomplete (a writer failed or is running)")
    df = spark.read.parquet(path)
    return conform(df, schema, source=path)


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p, jvm


def write_contract_table(
    df: DataFrame,
    schema: TableSchema,
    path: str | os.PathLike,
    *,
    num_files: int | None = None,
    sort_within: tuple[str, ...] = (),
) -> str:
    """Writes `df`'s contract columns as parquet to `path` atomically (temporary dir, rename, `_SUCCESS`).

    num_files: repartition into this many files first (None: as the plan gives them, AQE-coalesced).
    sort_within: sort rows within each file by these columns (readability, better compression).
    An existing table at `path` is replaced only once the new one is complete.
    """
    path = str(path).rstrip("/")
    out = conform(df, schema, source=f"writer of {path}")
    if num_files:
        out = out.repartition(num_files)
    if sort_within:
        out = out.sortWithinPartitions(*sort_within)
    parent, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    spark = df.sparkSession
    fs, tmp_p, jvm = _fs(spark, tmp)
    try:
        out.write.mode("errorifexists").parquet(tmp)
        marker = jvm.org.apache.hadoop.fs.Path(tmp, SUCCESS)
        if not fs.exists(marker):  # Spark writes it unless mapreduce.fileoutputcommitter.marksuccessfuljobs=false
            fs.create(marker).close()
        final = jvm.org.apache.hadoop.fs.Path(path)
        old = None
        if fs.exists(final):
            old = jvm.org.apache.hadoop.fs.Path(f"{parent}/.{name}.old-{uuid.uuid4().hex[:8]}")
            if not fs.rename(final, old):
                raise OSError(f"could not move the previous table {path} aside")
        if not fs.rename(tmp_p, final):
            raise OSError(f"could not rename {tmp} to {path}")
        if old is not None:
            fs.delete(old, True)
    except BaseException:
        fs.delete(tmp_p, True)
        raise
    return path
