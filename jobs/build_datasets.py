"""Build datasets: sessions of a training window -> filtered, time-split train/valid/test.

Output `datasets/run=D/{train,train_tr,valid,test}/` with session_id, user_id, item_id, ts, seq.
- Filter: drop sessions shorter than 2 and items with support below 5, repeated until stable.
- Split: test = sessions starting in the last `test_days` of the window; train = events before
  that split time (sessions straddling it are truncated, then length-1 sessions dropped).
  valid / train_tr repeat the same split inside train. Test (valid) keeps only items known to
  train (train_tr), then sessions of length >= 2. (GRU4REC_REFERENCE.md, preprocessing.)
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import ConfigError, NoInputError
from jobs.common.lake import FS, Lake, publish_dir, staging_path, write_summary
from jobs.common.spark import get_spark

log = logging.getLogger("jobs.build_datasets")

DATASET_COLUMNS = ["session_id", "user_id", "item_id", "ts", "seq"]
SPLITS = ("train", "train_tr", "valid", "test")


@dataclass(frozen=True)
class DatasetConfig:
    """What the filter and the split keep; defaults are the published benchmarks' settings."""

    window_days: int = 30
    test_days: int = 1
    valid_days: int = 1
    min_session_length: int = 2
    min_item_support: int = 5
    max_passes: int = 100

    def __post_init__(self) -> None:
        if self.test_days < 1 or self.valid_days < 1:
            raise ConfigError(f"test_days and valid_days must be >= 1, found {self}")
        if self.window_days <= self.test_days + self.valid_days:
            raise ConfigError(
                f"window_days ({self.window_days}) must exceed test_days + valid_days "
                f"({self.test_days + self.valid_days}) to leave data to train on"
            )
        if self.min_session_length < 1 or self.min_item_support < 1:
            raise ConfigError(f"minimum lengths and supports must be >= 1, found {self}")


def filter_pass(df: DataFrame, min_session_length: int, min_item_support: int) -> DataFrame:
    """One pass: drop rare items, then the sessions that became too short."""
    items = df.groupBy("item_id").count().filter(F.col("count") >= min_item_support)
    df = df.join(F.broadcast(items.select("item_id")), "item_id", "left_semi")
    sessions = df.groupBy("session_id").count().filter(F.col("count") >= min_session_length)
    return df.join(sessions.select("session_id"), "session_id", "left_semi")


def filter_until_stable(
    df: DataFrame, min_session_length: int = 2, min_item_support: int = 5, max_passes: int = 100
) -> tuple[DataFrame, int]:
    """Repeat `filter_pass` until no row is dropped; return the result and the passes taken.

    Each pass is materialized with localCheckpoint: it cuts the lineage, which otherwise grows
    with every pass until the driver runs out of memory planning it.
    """
    rows = df.count()
    for passes in range(1, max_passes + 1):
        nxt = filter_pass(df, min_session_length, min_item_support).localCheckpoint(eager=True)
        nxt_rows = nxt.count()
        df = nxt
        if nxt_rows == rows:
            return df, passes
        rows = nxt_rows
    raise ConfigError(f"filtering did not converge within {max_passes} passes")


def with_session_start(df: DataFrame) -> DataFrame:
    return df.withColumn("session_start", F.min("ts").over(Window.partitionBy("session_id")))


def renumber(df: DataFrame) -> DataFrame:
    """Recompute the 0-based seq after events were removed; keep only dataset columns."""
    w = Window.partitionBy("session_id").orderBy("ts", "seq")
    return df.withColumn("seq", F.row_number().over(w) - 1).select(*DATASET_COLUMNS)


def drop_short_sessions(df: DataFrame, min_length: int) -> DataFrame:
    lengths = df.groupBy("session_id").count().filter(F.col("count") >= min_length)
    return df.join(lengths.select("session_id"), "session_id", "left_semi")


def time_split(
    df: DataFrame, split_time: dt.datetime, min_session_length: int = 2
) -> tuple[DataFrame, DataFrame]:
    """(train, test): test = sessions starting at/after `split_time`, restricted to train items.

    `df` needs session_start. Train = events before split_time, then sessions of length >= 2.
    """
    split = F.lit(split_time)
    train = drop_short_sessions(df.filter(F.col("ts") < split), min_session_length)
    test = df.filter(F.col("session_start") >= split)
    test = test.join(F.broadcast(train.select("item_id").distinct()), "item_id", "left_semi")
    test = drop_short_sessions(test, min_session_length)
    return train, test


def read_sessions(
    spark: SparkSession, lake: Lake, day: dt.date, window_days: int
) -> tuple[DataFrame, list[str]]:
    """Sessions of the window ending on `day`; returns them and the list of missing days."""
    fs = FS(spark)
    days = [day - dt.timedelta(days=i) for i in range(window_days - 1, -1, -1)]
    present = [d for d in days if fs.exists(f"{lake.sessions}/dt={d}")]
    missing = [str(d) for d in days if d not in present]
    if not present:
        raise NoInputError(f"no sessions in the window {days[0]}..{day} under {lake.sessions}")
    paths = [f"{lake.sessions}/dt={d}" for d in present]
    df = spark.read.option("basePath", lake.sessions).parquet(*paths).drop("dt")
    return df, missing


def _stats(df: DataFrame) -> dict:
    """Events, sessions (rows with seq 0: one per session), distinct items, time span."""
    row = df.agg(
        F.count(F.lit(1)).alias("events"),
        F.sum((F.col("seq") == 0).cast("long")).alias("sessions"),
        F.countDistinct("item_id").alias("items"),
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
    ).first()
    out = {k: (str(v) if isinstance(v, dt.datetime) else v) for k, v in row.asDict().items()}
    out["sessions"] = out["sessions"] or 0
    return out


def run_build_datasets(
    spark: SparkSession, lake: Lake, day: dt.date, cfg: DatasetConfig = DatasetConfig()
) -> dict:
    """Build and publish `datasets/run=day`; return the summary."""
    t0 = time.monotonic()
    fs = FS(spark)
    sessions, missing = read_sessions(spark, lake, day, cfg.window_days)
    if missing:
        log.warning("window %s days missing: %s", len(missing), ", ".join(missing))
    stats_in = _stats(sessions)
    # Partition by session once: every later per-session aggregate, join and window then
    # runs without another shuffle of the events (checkpoints keep the partitioning).
    parts = int(spark.conf.get("spark.sql.shuffle.partitions"))
    filtered, passes = filter_until_stable(
        sessions.select(*DATASET_COLUMNS).repartition(parts, "session_id"),
        cfg.min_session_length,
        cfg.min_item_support,
        cfg.max_passes,
    )
    filtered = with_session_start(filtered)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    test_split = end - dt.timedelta(days=cfg.test_days)
    valid_split = test_split - dt.timedelta(days=cfg.valid_days)
    train, test = time_split(filtered, test_split, cfg.min_session_length)
    train = train.localCheckpoint(eager=True)
    train_tr, valid = time_split(with_session_start(train), valid_split, cfg.min_session_length)

    stage = staging_path(lake.path("datasets"))
    outputs = {"train": train, "train_tr": train_tr, "valid": valid, "test": test}
    for name, df in outputs.items():
        renumber(df).sortWithinPartitions("session_id", "seq").write.parquet(f"{stage}/{name}")
    out_stats = {name: _stats(spark.read.parquet(f"{stage}/{name}")) for name in SPLITS}
    for name in ("train", "test"):
        if out_stats[name]["events"] == 0:
            fs.delete(stage)
            raise NoInputError(
                f"the {name} split for {day} is empty after filtering "
                f"({stats_in['events']} session events in the window): "
                "widen --window-days or check the input"
            )
    publish_dir(fs, stage, lake.datasets(str(day)))
    summary = {
        "job": "build_datasets",
        "run": str(day),
        "config": cfg.__dict__,
        "window": [str(day - dt.timedelta(days=cfg.window_days - 1)), str(day)],
        "missing_days": missing,
        "input": stats_in,
        "filter_passes": passes,
        "test_split_time": str(test_split),
        "valid_split_time": str(valid_split),
        "splits": out_stats,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_summary(fs, lake.path("datasets"), str(day), summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.build_datasets", __doc__.splitlines()[0])
    parser.add_argument("--date", type=parse_date, required=True, help="last day of the window")
    defaults = DatasetConfig()
    parser.add_argument("--window-days", type=int, default=defaults.window_days)
    parser.add_argument("--test-days", type=int, default=defaults.test_days)
    parser.add_argument("--valid-days", type=int, default=defaults.valid_days)
    parser.add_argument("--min-session-length", type=int, default=defaults.min_session_length)
    parser.add_argument("--min-item-support", type=int, default=defaults.min_item_support)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    cfg = DatasetConfig(
        window_days=args.window_days,
        test_days=args.test_days,
        valid_days=args.valid_days,
        min_session_length=args.min_session_length,
        min_item_support=args.min_item_support,
    )
    spark = get_spark("build_datasets", args.master, dict(args.conf))
    run_build_datasets(spark, Lake(args.lake), args.date, cfg)
    return 0


if __name__ == "__main__":
    run_main(main)
