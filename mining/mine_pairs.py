"""`sail mine-pairs`: mine i2i (co-visitation, Swing), q2i and seq2item pairs with Spark or polars.

    sail mine-pairs --engine spark|polars --data DIR --out DIR [--split-ts ISO] [knobs...]
    sail mine-pairs ... --cutoff ISO | --holdout-frac F        the period layout training and evaluation read
    spark-submit mining/mine_pairs.py --data DIR --out DIR [...]            (same arguments)

`run_periods(cfg, cutoff)` mines everything the embedding stages read, split at the embedding cutoff: the training
period's i2i and q2i pairs (`train/`), the held-out period's co-visitation pairs (`heldout/`, the retrieval table's
ground truth) and the whole log's seq2item samples split at the cutoff (`full/`); see its docstring.

`run(cfg)` (one period, `cfg.ts_from` / `cfg.ts_until`, the tables in `cfg.tables`) reads `<data>/interactions/` and
`<data>/searches/`, and writes `<out>/i2i_pairs/`, `<out>/q2i_pairs/`,
`<out>/seq2item/` (each atomically, with `_SUCCESS`) and `<out>/mining.json` (input rows, rejected rows by
reason, positives, pairs per miner, seq2item samples per split, the mined date range, the split time, and the
wall seconds of each phase: input_checks (polars; Spark observes the same counts during its first pass over each
table, in positives and q2i), positives, swing_edges (Spark), i2i, q2i, seq2item, counts (Spark)).

Spark master: `--master` when given; otherwise `local[*]` when run directly (or through `sail`), and whatever
`spark-submit --master ...` says when launched by spark-submit (detected by the PYSPARK_GATEWAY_PORT variable
spark-submit sets). On a cluster, ship the packages with `--py-files` (a zip of them, see docs/CLUSTER.md) and use
paths every executor can reach.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `spark-submit mining/mine_pairs.py`: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from datetime import time as dtime  # noqa: E402
from typing import Any  # noqa: E402

from core import contracts as K  # noqa: E402
from core.io import write_json_atomic  # noqa: E402
from mining.mining_config import (  # noqa: E402
    INTERACTION_REJECT_REASONS,
    SEARCH_REJECT_REASONS,
    CovisitConfig,
    MiningConfig,
    PositiveConfig,
    Q2IConfig,
    Seq2ItemConfig,
    SwingConfig,
)

OUTPUTS = {"i2i_pairs": K.I2I_PAIRS, "q2i_pairs": K.Q2I_PAIRS, "seq2item": K.SEQ2ITEM}


@dataclass
class MiningResult:
    out_dir: Path
    paths: dict[str, Path]  # table name -> directory (i2i_pairs, q2i_pairs, seq2item) and "mining.json"
    counts: dict[str, Any] = field(default_factory=dict)  # the content of mining.json
    seconds: float = 0.0


def resolve_split_ts(cfg: Seq2ItemConfig, last_day: date | None) -> datetime:
    """cfg.split_ts (as UTC) when set, else midnight UTC starting the last `eval_days` days of the log."""
    if cfg.split_ts is not None:
        ts = cfg.split_ts
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if last_day is None:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.combine(last_day - timedelta(days=cfg.eval_days - 1), dtime(0), tzinfo=UTC)


def _stats(rows: list[tuple[str | None, int, Any, Any]]) -> tuple[int, dict[str, int], date | None, date | None]:
    """(reason, count, min_ts, max_ts) per reason -> input rows, rejected by reason, first and last valid day."""
    total = sum(r[1] for r in rows)
    rejected = {r[0]: int(r[1]) for r in rows if r[0] is not None}
    valid = [r for r in rows if r[0] is None and r[1] > 0]
    lo = valid[0][2].astimezone(UTC).date() if valid else None
    hi = valid[0][3].astimezone(UTC).date() if valid else None
    return int(total), dict(sorted(rejected.items())), lo, hi


def period_dates(date_from: date | None, date_to: date | None, cfg: MiningConfig) -> tuple[date | None, date | None]:
    """The log's first and last valid day, clipped to the run's period [ts_from, ts_until)."""
    if cfg.ts_from is not None and date_from is not None:
        date_from = max(date_from, cfg.ts_from.astimezone(UTC).date())
    if cfg.ts_until is not None and date_to is not None:
        date_to = min(date_to, (cfg.ts_until.astimezone(UTC) - timedelta(microseconds=1)).date())
    return date_from, date_to


def run(cfg: MiningConfig, spark=None) -> MiningResult:
    """Mines every pair table with `cfg.engine`; `spark`: an existing session to use (default: build one)."""
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = _run_spark(cfg, spark) if cfg.engine == "spark" else _run_polars(cfg)
    seconds = time.perf_counter() - t0
    counts = {"engine": cfg.engine, "seconds": round(seconds, 3), **counts, "config": _config_json(cfg)}
    paths = {name: out / name for name in OUTPUTS if name in cfg.tables}
    paths["mining.json"] = out / "mining.json"
    write_json_atomic(paths["mining.json"], counts)
    return MiningResult(out_dir=out, paths=paths, counts=counts, seconds=seconds)


PERIOD_TABLES: dict[str, tuple[str, ...]] = {
    "train": ("i2i_pairs", "q2i_pairs"),
    "heldout": ("i2i_pairs",),
    "full": ("seq2item",),
}
"""The period layout of `run_periods`: what each sub-directory holds."""


@dataclass
class PeriodsResult:
    out_dir: Path
    cutoff: datetime
    periods: dict[str, MiningResult]  # train / heldout / full
    counts: dict[str, Any] = field(default_factory=dict)  # the content of <out>/mining.json
    seconds: float = 0.0


def run_periods(cfg: MiningConfig, cutoff: datetime, heldout_top_k: int = 50, spark=None) -> PeriodsResult:
    """Everything embedding training and retrieval evaluation read, mined once with `cfg.engine`:

        <out>/train/     i2i_pairs (cfg.miners), q2i_pairs   events before `cutoff` (what models train on)
        <out>/heldout/   i2i_pairs (co-visitation, top `heldout_top_k`)   events at or after `cutoff` (ground truth)
        <out>/full/      seq2item: the whole log, split at `cutoff` (train: targets before it, history before the
                         target; eval: targets at or after it)
        <out>/mining.json   the cutoff, the engine, each period's counts and the configuration

    One Spark session serves the three runs.
    """
    t0 = time.perf_counter()
    cutoff = cutoff.astimezone(UTC)
    out = Path(cfg.out_dir)
    own = cfg.engine == "spark" and spark is None
    if own:
        from core.spark_session import build_spark

        spark = build_spark(
            app_name="sail-mine-pairs",
            master=cfg.master,
            shuffle_partitions=cfg.shuffle_partitions,
            driver_memory=cfg.driver_memory,
        )
    held = replace(
        cfg,
        miners=("covisit",),
        covisit=replace(cfg.covisit, top_k=heldout_top_k),
    )
    runs = {
        "train": replace(cfg, ts_until=cutoff),
        "heldout": replace(held, ts_from=cutoff),
        "full": replace(cfg, seq2item=replace(cfg.seq2item, split_ts=cutoff)),
    }
    try:
        periods = {
            name: run(replace(c, out_dir=str(out / name), tables=PERIOD_TABLES[name]), spark)
            for name, c in runs.items()
        }
    finally:
        if own:
            spark.stop()
    seconds = time.perf_counter() - t0
    counts = {
        "engine": cfg.engine,
        "seconds": round(seconds, 3),
        "cutoff": cutoff.isoformat(),
        "heldout_top_k": heldout_top_k,
        "input_rows": periods["full"].counts["input_rows"],
        "rejected": periods["full"].counts["rejected"],
        "periods": {
            name: {k: r.counts[k] for k in ("positive_events", "pairs", "date_from", "date_to", "seconds")}
            for name, r in periods.items()
        },
        "config": _config_json(cfg),
    }
    write_json_atomic(out / "mining.json", counts)
    return PeriodsResult(out_dir=out, cutoff=cutoff, periods=periods, counts=counts, seconds=seconds)


def log_time_range(data_dir: str | os.PathLike) -> tuple[datetime, datetime]:
    """(first, last) ts of the interactions of a data set (rows with a ts). Raises ValueError, naming the table,
    when it holds no timestamped row."""
    import polars as pl

    path = Path(data_dir) / "interactions"
    lo, hi = (
        scan_contract_table(path, K.INTERACTIONS)
        .select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
        .collect()
        .row(0)
    )
    if lo is None:
        raise ValueError(f"{path}: no interaction with a timestamp; cannot place the embedding cutoff")
    return lo.astimezone(UTC), hi.astimezone(UTC)


class _Phases:
    """Wall seconds per phase of a mining run (`mining.json`'s phase_seconds): `with phases("i2i"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)


def _config_json(cfg: MiningConfig) -> dict[str, Any]:
    d = asdict(cfg)
    if cfg.seq2item.split_ts is not None:
        d["seq2item"]["split_ts"] = cfg.seq2item.split_ts.isoformat()
    for k in ("ts_from", "ts_until"):
        if d[k] is not None:
            d[k] = d[k].isoformat()
    return d


def _summary(
    interactions: tuple[int, dict[str, int]],
    searches: tuple[int, dict[str, int]],
    positives: int,
    i2i: dict[str, int],
    q2i: int,
    seq: dict[str, int],
    date_from: date | None,
    date_to: date | None,
    split_ts: datetime,
) -> dict[str, Any]:
    return {
        "input_rows": {"interactions": interactions[0], "searches": searches[0]},
        "rejected": {"interactions": interactions[1], "searches": searches[1]},
        "positive_events": positives,
        "pairs": {"i2i": i2i, "q2i": q2i, "seq2item": {"train": seq.get("train", 0), "eval": seq.get("eval", 0)}},
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "split_ts": split_ts.isoformat(),
    }


# ------------------------------------------------------------------------------------------------------------
# Spark
# ------------------------------------------------------------------------------------------------------------


def _observed(m: dict[str, Any], reasons: Iterable[str]) -> tuple[int, dict[str, int], date | None, date | None]:
    """`mining_spark.input_metrics` as observed -> what `_stats` gives from rows per reason."""
    rows = [(r, m[r], None, None) for r in reasons if m[r]]
    return _stats([*rows, (None, m["rows"] - sum(r[1] for r in rows), m["ts_min"], m["ts_max"])])


def _run_spark(cfg: MiningConfig, spark=None) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import Observation

    from core.spark_io import read_contract_table, write_contract_table
    from core.spark_session import build_spark
    from mining import mining_spark as M

    own = spark is None
    t0 = time.perf_counter()
    if own:
        spark = build_spark(
            app_name="sail-mine-pairs",
            master=cfg.master,
            shuffle_partitions=cfg.shuffle_partitions,
            driver_memory=cfg.driver_memory,
        )
    start_s = time.perf_counter() - t0
    data, out = Path(cfg.data_dir), Path(cfg.out_dir)
    phases = _Phases()
    try:
        # Given: the logs, checked against their contracts (a missing column fails here, naming it). Rows and date
        # range per rejection reason are observed during each table's first pass: no scan of their own
        checked_inter = Observation("interactions")
        checked_srch = Observation("searches")
        inter = (
            read_contract_table(spark, data / "interactions", K.INTERACTIONS)
            .transform(M.flag_interaction_rejects)
            .observe(checked_inter, *M.input_metrics(INTERACTION_REJECT_REASONS))
        )
        srch = (
            read_contract_table(spark, data / "searches", K.SEARCHES)
            .transform(M.flag_search_rejects)
            .observe(checked_srch, *M.input_metrics(SEARCH_REJECT_REASONS))
        )

        # When: positives of the period mined by each miner (positives cached: three consumers)
        with phases("positives"):
            pos = (
                inter.transform(M.drop_rejected)
                .transform(M.within_period, cfg.ts_from, cfg.ts_until)
                .transform(M.select_positive_events, cfg.positive)
            )
            pos = pos.persist(StorageLevel.MEMORY_AND_DISK)
            n_pos = pos.count()
            n_inter, rej_inter, date_from, date_to = _observed(checked_inter.get, INTERACTION_REJECT_REASONS)
        date_from, date_to = period_dates(date_from, date_to, cfg)
        split_ts = resolve_split_ts(cfg.seq2item, date_to)
        want = set(cfg.tables)
        nf = cfg.output_files
        edges = None
        per_miner: dict[str, int] = {}
        if "i2i_pairs" in want:
            if "swing" in cfg.miners:
                with phases("swing_edges"):
                    # the capped edges feed two branches of Swing's plan (shared items, user weights): cached and
                    # materialised before those branches read them, so they are capped once
                    edges = pos.transform(M.cap_user_items, cfg.swing).persist(StorageLevel.MEMORY_AND_DISK)
                    edges.count()

            def mine(m: str):
                if m == "covisit":
                    return pos.transform(M.mine_covisit, cfg.covisit)
                return edges.transform(M.swing_pairs, cfg.swing)

            parts = [
                mine(m).transform(
                    M.top_k_pairs, (cfg.covisit if m == "covisit" else cfg.swing).top_k, m, date_from, date_to
                )
                for m in cfg.miners
            ]
            if parts:
                i2i = parts[0]
                for p in parts[1:]:
                    i2i = i2i.unionByName(p)
            else:
                i2i = spark.createDataFrame([], K.I2I_PAIRS.to_spark())
            with phases("i2i"):
                write_contract_table(
                    i2i, K.I2I_PAIRS, out / "i2i_pairs", num_files=nf, sort_within=("miner", "anchor_item_id")
                )
        n_q2i = 0
        if "q2i_pairs" in want:
            with phases("q2i"):
                q2i = (
                    srch.transform(M.drop_rejected)
                    .transform(M.within_period, cfg.ts_from, cfg.ts_until)
                    .transform(M.mine_q2i, cfg.q2i)
                )
                write_contract_table(q2i, K.Q2I_PAIRS, out / "q2i_pairs", num_files=nf, sort_within=("query",))
        else:  # the search table's checks are still observed (one pass, nothing written)
            srch.count()
        n_srch, rej_srch, _, _ = _observed(checked_srch.get, SEARCH_REJECT_REASONS)
        if "seq2item" in want:
            with phases("seq2item"):
                seq = pos.transform(M.build_seq2item, cfg.seq2item, split_ts)
                write_contract_table(
                    seq, K.SEQ2ITEM, out / "seq2item", num_files=nf, sort_within=("user_id", "target_ts")
                )
        for df in (pos, edges):
            if df is not None:
                df.unpersist()

        # Then: counts read back from the written tables (parquet metadata and one small aggregate each)
        with phases("counts"):
            per_split: dict[str, int] = {}
            if "i2i_pairs" in want:
                per_miner = {m: 0 for m in cfg.miners}
                for r in spark.read.parquet(str(out / "i2i_pairs")).groupBy("miner").count().collect():
                    per_miner[r[0]] = int(r[1])
            if "q2i_pairs" in want:
                n_q2i = spark.read.parquet(str(out / "q2i_pairs")).count()
            if "seq2item" in want:
                rows = spark.read.parquet(str(out / "seq2item")).groupBy("split").count().collect()
                per_split = {r[0]: int(r[1]) for r in rows}
    finally:
        if own:
            spark.stop()
    summary = _summary(
        (n_inter, rej_inter), (n_srch, rej_srch), n_pos, per_miner, n_q2i, per_split, date_from, date_to, split_ts
    )
    return {**summary, "phase_seconds": phases.seconds, "spark_start_s": round(start_s, 3)}


# ------------------------------------------------------------------------------------------------------------
# polars
# ------------------------------------------------------------------------------------------------------------


def scan_contract_table(path: str | os.PathLike, schema: K.TableSchema):
    """A polars LazyFrame of a contract table: every file's columns are checked (SchemaError naming column and
    file), then exactly the contract's columns are selected and cast (naive timestamps are read as UTC)."""
    import polars as pl
    import pyarrow.parquet as pq

    from core.io import check_columns, table_files

    files = table_files(path)
    for f in files:
        check_columns(pq.read_schema(f), schema, str(f))
    lf = pl.scan_parquet([str(f) for f in files])
    have = lf.collect_schema()
    cols = []
    for c in schema:
        e, want = pl.col(c.name), K.polars_type(c.dtype)
        if c.dtype == "timestamp":
            got = have[c.name]
            if isinstance(got, pl.Datetime) and got.time_zone is None:
                e = e.dt.replace_time_zone("UTC")
        cols.append(e.cast(want).alias(c.name))
    return lf.select(cols)


def _write_polars(lf, schema: K.TableSchema, path: Path) -> int:
    import polars as pl

    from core.io import write_table

    df = lf.collect(engine="streaming")
    return write_table(df.to_arrow(compat_level=pl.CompatLevel.oldest()), schema, path)


def _run_polars(cfg: MiningConfig) -> dict[str, Any]:
    import polars as pl

    from mining import mining_polars as M

    data, out = Path(cfg.data_dir), Path(cfg.out_dir)
    phases = _Phases()
    inter = scan_contract_table(data / "interactions", K.INTERACTIONS).pipe(M.flag_interaction_rejects)
    srch = scan_contract_table(data / "searches", K.SEARCHES).pipe(M.flag_search_rejects)

    def stats(lf):
        rows = (
            lf.group_by(M.REJECT)
            .agg(pl.len(), pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
            .collect()
            .rows()
        )
        return _stats(rows)

    with phases("input_checks"):
        n_inter, rej_inter, date_from, date_to = stats(inter)
        n_srch, rej_srch, _, _ = stats(srch)
    date_from, date_to = period_dates(date_from, date_to, cfg)
    split_ts = resolve_split_ts(cfg.seq2item, date_to)
    want = set(cfg.tables)

    # positives are materialised once (three consumers), like the Spark cache
    with phases("positives"):
        pos = (
            inter.pipe(M.drop_rejected)
            .pipe(M.within_period, cfg.ts_from, cfg.ts_until)
            .pipe(M.select_positive_events, cfg.positive)
            .collect(engine="streaming")
        )
    n_pos = pos.height
    pos_lf = pos.lazy()
    per_miner: dict[str, int] = {}
    if "i2i_pairs" in want:
        parts = []
        with phases("i2i"):
            for m in cfg.miners:
                mc = cfg.covisit if m == "covisit" else cfg.swing
                mine = M.mine_covisit if m == "covisit" else M.mine_swing
                df = (
                    pos_lf.pipe(mine, mc)
                    .pipe(M.top_k_pairs, mc.top_k, m, date_from, date_to)
                    .collect(engine="streaming")
                )
                per_miner[m] = df.height
                parts.append(df)
            i2i = pl.concat(parts) if parts else pl.DataFrame(schema=K.I2I_PAIRS.to_polars())
            _write_polars(i2i.lazy(), K.I2I_PAIRS, out / "i2i_pairs")
    n_q2i = 0
    if "q2i_pairs" in want:
        with phases("q2i"):
            q2i = srch.pipe(M.drop_rejected).pipe(M.within_period, cfg.ts_from, cfg.ts_until).pipe(M.mine_q2i, cfg.q2i)
            n_q2i = _write_polars(q2i, K.Q2I_PAIRS, out / "q2i_pairs")
    per_split: dict[str, int] = {}
    if "seq2item" in want:
        with phases("seq2item"):
            seq = pos_lf.pipe(M.build_seq2item, cfg.seq2item, split_ts).collect(engine="streaming")
            per_split = {k: int(v) for k, v in seq.group_by("split").len().rows()}
            _write_polars(seq.lazy(), K.SEQ2ITEM, out / "seq2item")
    summary = _summary(
        (n_inter, rej_inter), (n_srch, rej_srch), n_pos, per_miner, n_q2i, per_split, date_from, date_to, split_ts
    )
    return {**summary, "phase_seconds": phases.seconds}


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _parse_ts(s: str) -> datetime:
    ts = datetime.fromisoformat(s)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sail mine-pairs", description="Mine i2i / q2i / seq2item pairs from the logs.")
    d_pos, d_cov, d_sw, d_q, d_seq = PositiveConfig(), CovisitConfig(), SwingConfig(), Q2IConfig(), Seq2ItemConfig()
    p.add_argument("--engine", choices=["spark", "polars"], default="spark")
    p.add_argument("--data", required=True, help="data set directory with interactions/ and searches/")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split-ts", type=_parse_ts, default=None, help="seq2item train/eval split time (ISO, UTC)")
    p.add_argument(
        "--cutoff",
        type=_parse_ts,
        default=None,
        help="embedding cutoff (ISO, UTC): write the period layout train/ heldout/ full/ that training and "
        "evaluation read (`sail train-embedding --pairs`)",
    )
    p.add_argument(
        "--holdout-frac",
        type=float,
        default=None,
        help="like --cutoff, placed at midnight UTC before the last round(days * F) days of the log",
    )
    p.add_argument("--heldout-top-k", type=int, default=50, help="held-out co-visitation pairs per anchor")
    p.add_argument("--eval-days", type=int, default=d_seq.eval_days, help="without --split-ts: last N days are eval")
    p.add_argument("--miners", default="covisit,swing", help="comma-separated i2i miners")
    p.add_argument("--top-k", type=int, default=d_cov.top_k, help="i2i pairs per anchor item (both miners)")
    p.add_argument("--min-watch-ms", type=int, default=d_pos.min_watch_ms)
    p.add_argument("--positive-threshold", type=float, default=d_pos.threshold)
    p.add_argument("--session-gap-s", type=int, default=d_cov.session_gap_s)
    p.add_argument("--window", type=int, default=d_cov.window)
    p.add_argument("--max-gap-s", type=int, default=d_cov.max_gap_s)
    p.add_argument("--decay-tau-s", type=float, default=d_cov.decay_tau_s)
    p.add_argument("--alpha", type=float, default=d_sw.alpha)
    p.add_argument("--max-items-per-user", type=int, default=d_sw.max_items_per_user)
    p.add_argument("--max-users-per-item", type=int, default=d_sw.max_users_per_item)
    p.add_argument("--seed", type=int, default=d_sw.seed)
    p.add_argument("--min-clicks", type=int, default=d_q.min_clicks)
    p.add_argument("--history-len", type=int, default=d_seq.history_len)
    p.add_argument("--min-history", type=int, default=d_seq.min_history)
    p.add_argument("--max-samples-per-user", type=int, default=d_seq.max_samples_per_user)
    p.add_argument("--master", default=None, help="Spark master (default: local[*], or spark-submit's)")
    p.add_argument("--shuffle-partitions", type=int, default=None)
    p.add_argument("--driver-memory", default=None)
    p.add_argument("--output-files", type=int, default=None, help="files per output table (Spark)")
    return p


def config_from_args(args: argparse.Namespace) -> MiningConfig:
    master = args.master
    if master is None and not os.environ.get("PYSPARK_GATEWAY_PORT"):
        master = "local[*]"
    return MiningConfig(
        data_dir=args.data,
        out_dir=args.out,
        engine=args.engine,
        positive=replace(PositiveConfig(), min_watch_ms=args.min_watch_ms, threshold=args.positive_threshold),
        covisit=CovisitConfig(
            session_gap_s=args.session_gap_s,
            window=args.window,
            max_gap_s=args.max_gap_s,
            decay_tau_s=args.decay_tau_s,
            top_k=args.top_k,
        ),
        swing=SwingConfig(
            alpha=args.alpha,
            max_items_per_user=args.max_items_per_user,
            max_users_per_item=args.max_users_per_item,
            seed=args.seed,
            top_k=args.top_k,
        ),
        q2i=Q2IConfig(min_clicks=args.min_clicks),
        seq2item=Seq2ItemConfig(
            history_len=args.history_len,
            min_history=args.min_history,
            max_samples_per_user=args.max_samples_per_user,
            split_ts=args.split_ts,
            eval_days=args.eval_days,
        ),
        miners=tuple(m.strip() for m in args.miners.split(",") if m.strip()),
        master=master,
        shuffle_partitions=args.shuffle_partitions,
        driver_memory=args.driver_memory,
        output_files=args.output_files,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = config_from_args(args)
    if args.cutoff is not None or args.holdout_frac is not None:
        from core.timeline import embedding_cutoff

        if args.cutoff is not None and args.holdout_frac is not None:
            raise SystemExit("sail mine-pairs: give --cutoff or --holdout-frac, not both")
        cutoff = args.cutoff or embedding_cutoff(*log_time_range(cfg.data_dir), args.holdout_frac)
        per = run_periods(cfg, cutoff, heldout_top_k=args.heldout_top_k)
        c = per.counts
        keys = ("engine", "seconds", "cutoff", "input_rows", "rejected", "periods")
        print(json.dumps({k: c[k] for k in keys}, indent=2))
        print(f"outputs: {per.out_dir} (train/, heldout/, full/)")
        return 0
    res = run(cfg)
    c = res.counts
    print(
        json.dumps(
            {k: c[k] for k in ("engine", "seconds", "input_rows", "rejected", "positive_events", "pairs", "split_ts")},
            indent=2,
        )
    )
    print(f"outputs: {res.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
