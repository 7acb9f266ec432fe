"""The derived columns (`_...`) each Spark-side suite checks, computed next to the data.

Nothing is collected to the driver but counts; `QualityStore.validate` materializes each frame
once before Great Expectations computes its metrics.
"""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common import contracts as C
from jobs.common.errors import NoInputError
from jobs.common.fs import FS
from jobs.common.lake import Lake
from jobs.common.timeutil import midnight_utc


def _read(spark: SparkSession, fs: FS, path: str, schema: str | None = None) -> DataFrame | None:
    if fs.exists(path):
        return spark.read.parquet(path)
    return spark.createDataFrame([], schema) if schema else None


def raw_events_frame(spark: SparkSession, lake: Lake, day: dt.date) -> tuple[DataFrame, dict]:
    """events/dt=D with `_ts_in_day` and `_quarantine_share`; plus the counts used."""
    fs = FS(spark)
    events = _read(spark, fs, lake.events_day(day), C.EVENTS.ddl)
    quarantined = _read(spark, fs, lake.quarantine_day(day))
    n_events = events.count()
    n_quarantined = quarantined.count() if quarantined is not None else 0
    total = n_events + n_quarantined
    share = n_quarantined / total if total else 1.0
    prev_path = lake.events_day(day - dt.timedelta(days=1))
    previous = spark.read.parquet(prev_path).count() if fs.exists(prev_path) else None
    frame = events.select(
        "user_id",
        "item_id",
        "ts",
        (F.to_date("ts") == F.lit(day)).alias("_ts_in_day"),
        F.lit(share).cast("double").alias("_quarantine_share"),
    )
    counts = {
        "events": n_events,
        "quarantined": n_quarantined,
        "quarantine_share": round(share, 6),
        "previous_day_events": previous,
    }
    return frame, counts


def sessions_frame(spark: SparkSession, lake: Lake, day: dt.date) -> DataFrame:
    """sessions/dt=D with `_ts_not_before_day`; `_starts_on_day`, `_session_length` and
    `_seq_contiguous` on each session's first row (null on the others)."""
    path = lake.sessions_day(day)
    fs = FS(spark)
    if not fs.exists(path):
        raise NoInputError(f"no sessions for {day}: expected {path} (run sessionize first)")
    s = spark.read.parquet(path)
    per = Window.partitionBy("session_id")
    first = F.col("seq") == 0
    length = F.count(F.lit(1)).over(per)
    return s.select(
        "session_id",
        "user_id",
        "item_id",
        "ts",
        "seq",
        (F.col("ts") >= F.lit(midnight_utc(day))).alias("_ts_not_before_day"),
        F.when(first, F.to_date(F.min("ts").over(per)) == F.lit(day)).alias("_starts_on_day"),
        F.when(first, length).alias("_session_length"),
        F.when(
            first, (F.max("seq").over(per) == length - 1) & (F.min("ts").over(per) == F.col("ts"))
        ).alias("_seq_contiguous"),
    )


def datasets_frame(spark: SparkSession, lake: Lake, day: dt.date) -> tuple[DataFrame, dict]:
    """train + test with the derived columns of `quality.datasets_suite`."""
    fs = FS(spark)
    run = lake.datasets_run(day)
    summary_path = lake.datasets_summary(day)
    if not fs.exists(lake.split(day, "train")) or not fs.exists(summary_path):
        raise NoInputError(f"no datasets for {day}: expected {run} (run build_datasets first)")
    summary = json.loads(fs.read_text(summary_path))
    split_time = dt.datetime.fromisoformat(summary["test_split_time"])
    test_days = int(summary["config"]["test_days"])
    train = spark.read.parquet(lake.split(day, "train")).withColumn("split", F.lit("train"))
    test = spark.read.parquet(lake.split(day, "test")).withColumn("split", F.lit("test"))
    train_items = train.select("item_id").distinct().withColumn("_known", F.lit(True))
    # Coverage: the test window's session events (before any filtering) whose item train knows.
    window_days = [day - dt.timedelta(days=i) for i in range(test_days)]
    paths = [lake.sessions_day(d) for d in window_days if fs.exists(lake.sessions_day(d))]
    coverage = 0.0
    if paths:
        raw_test = spark.read.parquet(*paths).select("item_id")
        row = (
            raw_test.join(train_items, "item_id", "left")
            .agg(F.count(F.lit(1)).alias("n"), F.count("_known").alias("known"))
            .first()
        )
        coverage = row["known"] / row["n"] if row["n"] else 0.0
    both = train.unionByName(test)
    per = Window.partitionBy("split", "session_id").orderBy("seq")
    split_ts = F.lit(split_time).cast("timestamp")
    frame = both.join(train_items, "item_id", "left").select(
        "session_id",
        "item_id",
        "ts",
        "seq",
        "split",
        F.when(
            F.row_number().over(per) == 1,
            F.count(F.lit(1)).over(Window.partitionBy("split", "session_id")),
        ).alias("_session_length"),
        F.coalesce(F.col("_known"), F.lit(False)).alias("_item_in_train"),
        F.when(F.col("split") == "train", F.col("ts") < split_ts)
        .otherwise(F.col("ts") >= split_ts)
        .alias("_split_order"),
        F.lit(coverage).cast("double").alias("_test_coverage"),
    )
    return frame, {"test_coverage": round(coverage, 6), "test_split_time": str(split_time)}


def item_index_frame(spark: SparkSession, lake: Lake, day: dt.date) -> tuple[DataFrame, int]:
    """items + popularity with `_support_matches`, `_weight_ok`, `_cdf_step`; and the number
    of distinct training items."""
    fs = FS(spark)
    if not fs.exists(lake.items(day)) or not fs.exists(lake.popularity(day)):
        raise NoInputError(
            f"no item index for {day}: expected {lake.items(day)} (run popularity first)"
        )
    alpha = float(json.loads(fs.read_text(lake.popularity_summary(day)))["alpha"])
    train_counts = (
        spark.read.parquet(lake.split(day, "train"))
        .groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("_n"))
    )
    n_train_items = train_counts.count()
    items = spark.read.parquet(lake.items(day))
    pop = spark.read.parquet(lake.popularity(day))
    if "alpha" not in pop.columns:  # a table from before tables recorded it: fails the suite
        pop = pop.withColumn("alpha", F.lit(None).cast("double"))
    order = Window.orderBy("item_idx")
    # the table's own alpha must be the one the job was asked for (the summary's)
    expected_weight = F.pow(F.col("support").cast("double"), F.lit(alpha))
    frame = (
        items.alias("i")
        .join(pop.alias("p"), "item_idx", "full_outer")
        .join(train_counts.alias("t"), F.col("i.item_id") == F.col("t.item_id"), "left")
        .select(
            F.coalesce("i.item_id", "p.item_id").alias("item_id"),
            "item_idx",
            F.col("i.support").alias("support"),
            F.col("p.weight").alias("weight"),
            F.col("p.cdf").alias("cdf"),
            F.coalesce(F.col("p.alpha") == F.lit(alpha), F.lit(False)).alias("_alpha_matches"),
            (
                (F.col("i.support") == F.col("t._n"))
                & (F.col("p.support") == F.col("i.support"))
                & (F.col("p.item_id") == F.col("i.item_id"))
            ).alias("_support_matches"),
        )
        .withColumn(
            "_weight_ok",
            (F.col("weight") > 0)
            & (F.abs(F.col("weight") - expected_weight) <= F.lit(1e-9) * F.col("weight")),
        )
        .withColumn("_cdf_step", F.col("cdf") - F.coalesce(F.lag("cdf").over(order), F.lit(0.0)))
    )
    return frame, n_train_items
