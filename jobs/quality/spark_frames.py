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
from jobs.common.errors import NoInputError, SchemaError
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


def session_account(spark: SparkSession, lake: Lake, day: dt.date, n_sessions: int) -> dict:
    """Sessionize's conservation account for `day`, checked against two independent counts:
    the events partition's rows and the sessions partition's rows."""
    fs = FS(spark)
    path = Lake.summary(lake.sessions, day)
    account = json.loads(fs.read_text(path)) if fs.exists(path) else {}
    events = _read(spark, fs, lake.events_day(day))
    n_events = events.count() if events is not None else 0
    counts = {k: int(account.get(k, -1)) for k in C.SESSION_ACCOUNT}
    named = counts["session_events_out"] + counts["repeats_removed"] + counts["capped_events"]
    return {
        **counts,
        "events_partition_rows": n_events,
        "sessions_partition_rows": n_sessions,
        "balanced": bool(account)
        and counts["events_in"] == named
        and counts["events_in"] == n_events
        and counts["session_events_out"] == n_sessions,
    }


def sessions_frame(spark: SparkSession, lake: Lake, day: dt.date) -> tuple[DataFrame, dict]:
    """sessions/dt=D with `_ts_in_day` and `_account_balanced`; on each session's first row
    of the day only (null on the others): `_session_length`, `_seq_contiguous` and, for a
    session continuing from an earlier day, `_continues_previous_day`. Plus the account."""
    path = lake.sessions_day(day)
    fs = FS(spark)
    if not fs.exists(path):
        raise NoInputError(f"no sessions for {day}: expected {path} (run sessionize first)")
    s = spark.read.parquet(path)
    account = session_account(spark, lake, day, s.count())
    per = Window.partitionBy("session_id")
    first = F.row_number().over(per.orderBy("seq", "ts")) == 1
    length = F.count(F.lit(1)).over(per)
    continued = F.min("seq").over(per) > 0
    previous_path = lake.sessions_day(day - dt.timedelta(days=1))
    if fs.exists(previous_path):
        earlier = spark.read.parquet(previous_path).select("session_id").distinct()
        s = s.join(earlier.withColumn("_in_previous", F.lit(True)), "session_id", "left")
        links = F.coalesce(F.col("_in_previous"), F.lit(False))
    else:  # nothing to link to (a first day, or one left out by its gate): not judged
        links = F.lit(None).cast("boolean")
    start, end = midnight_utc(day), midnight_utc(day + dt.timedelta(days=1))
    frame = s.select(
        "session_id",
        "user_id",
        "item_id",
        "ts",
        "seq",
        ((F.col("ts") >= F.lit(start)) & (F.col("ts") < F.lit(end))).alias("_ts_in_day"),
        F.lit(account["balanced"]).alias("_account_balanced"),
        F.when(first, length).alias("_session_length"),
        F.when(
            first,
            (F.max("seq").over(per) - F.min("seq").over(per) == length - 1)
            & (F.min("ts").over(per) == F.col("ts")),
        ).alias("_seq_contiguous"),
        F.when(first & continued, links).alias("_continues_previous_day"),
    )
    return frame, account


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
    for name, split in (("train", train), ("test", test)):
        if "item_idx" not in split.columns:
            raise SchemaError(
                f"{lake.split(day, name)}: expected the columns {', '.join(C.DATASET.columns)}"
                f", found {', '.join(c for c in split.columns if c != 'split')} (written "
                "before datasets carried item_idx): run build_datasets for this day again"
            )
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
        "item_idx",
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
