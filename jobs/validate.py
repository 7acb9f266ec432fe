"""Validate: run a dataset's Great Expectations suite on Spark; the DAG's quality gates.

    python -m jobs.validate raw_events --date D       events/dt=D (+ its quarantine share)
    python -m jobs.validate sessions   --date D       sessions/dt=D
    python -m jobs.validate datasets   --date D       datasets/run=D: splits, then item index

Each suite's result is written to `<quality-root>/dt=D/<suite>.json` and rendered into the day's
Data Docs (`<quality-root>/dt=D/data_docs/index.html`); the run report is refreshed. A failing
suite exits with status 2 and one line naming every failing expectation (the DAG turns that
into a failure without retries). The derived columns (`_...`) each suite expects are computed
here, next to the data, by Spark: nothing is collected to the driver but counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs import quality
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import NoInputError
from jobs.common.lake import FS, Lake
from jobs.common.localfs import write_json_atomic
from jobs.common.timeutil import days_before, midnight_utc

log = logging.getLogger("jobs.validate")

DATASETS = ("raw_events", "sessions", "datasets")
EVENT_SCHEMA = "user_id string, item_id string, ts timestamp, event_type string, tiebreak bigint"


def _read(spark: SparkSession, fs: FS, path: str, schema: str | None = None) -> DataFrame | None:
    if fs.exists(path):
        return spark.read.parquet(path)
    return spark.createDataFrame([], schema) if schema else None


def raw_events_frame(spark: SparkSession, lake: Lake, day: dt.date) -> tuple[DataFrame, dict]:
    """events/dt=D with `_ts_in_day` and `_quarantine_share`; plus the counts used."""
    fs = FS(spark)
    events = _read(spark, fs, f"{lake.events}/dt={day}", EVENT_SCHEMA)
    quarantined = _read(spark, fs, f"{lake.quarantine}/dt={day}")
    n_events = events.count()
    n_quarantined = quarantined.count() if quarantined is not None else 0
    total = n_events + n_quarantined
    share = n_quarantined / total if total else 1.0
    prev_path = f"{lake.events}/dt={day - dt.timedelta(days=1)}"
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
    path = f"{lake.sessions}/dt={day}"
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
    run = lake.datasets(str(day))
    summary_path = lake.path("datasets", "_summaries", f"{day}.json")
    if not fs.exists(f"{run}/train") or not fs.exists(summary_path):
        raise NoInputError(f"no datasets for {day}: expected {run} (run build_datasets first)")
    summary = json.loads(fs.read_text(summary_path))
    split_time = dt.datetime.fromisoformat(summary["test_split_time"])
    test_days = int(summary["config"]["test_days"])
    train = spark.read.parquet(f"{run}/train").withColumn("split", F.lit("train"))
    test = spark.read.parquet(f"{run}/test").withColumn("split", F.lit("test"))
    train_items = train.select("item_id").distinct().withColumn("_known", F.lit(True))
    # Coverage: the test window's session events (before any filtering) whose item train knows.
    window_days = [day - dt.timedelta(days=i) for i in range(test_days)]
    paths = [f"{lake.sessions}/dt={d}" for d in window_days if fs.exists(f"{lake.sessions}/dt={d}")]
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
    run = lake.datasets(str(day))
    if not fs.exists(f"{run}/items") or not fs.exists(f"{run}/popularity"):
        raise NoInputError(f"no item index for {day}: expected {run}/items (run popularity first)")
    pop_summary = json.loads(
        fs.read_text(lake.path("datasets", "_summaries", f"{day}.popularity.json"))
    )
    alpha = float(pop_summary["alpha"])
    train_counts = (
        spark.read.parquet(f"{run}/train").groupBy("item_id").agg(F.count(F.lit(1)).alias("_n"))
    )
    n_train_items = train_counts.count()
    items = spark.read.parquet(f"{run}/items")
    pop = spark.read.parquet(f"{run}/popularity")
    order = Window.orderBy("item_idx")
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


def run_validate(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    day: dt.date,
    quality_root: str,
    thresholds: quality.Thresholds | None = None,
    catch_up: Sequence[dt.date] = (),
) -> list[dict]:
    """Run the suite(s) of `dataset` for `day`; returns their summaries (raises nothing).

    `catch_up`: earlier days (raw_events, sessions) validated in the same batch as `day`, each
    row checked against its own day; their result is recorded under each of them too.
    """
    thresholds = thresholds or quality.Thresholds()
    store = quality.QualityStore(f"{quality_root.rstrip('/')}/dt={day}")
    days = [*catch_up, day]
    out = []
    if dataset == "raw_events":
        parts = [raw_events_frame(spark, lake, d) for d in days]
        frame = parts[0][0]
        for f, _ in parts[1:]:
            frame = frame.unionByName(f)
        previous = parts[-1][1]["previous_day_events"] if not catch_up else None
        counts = {str(d): c for d, (_, c) in zip(days, parts, strict=True)}
        suite = quality.raw_events_suite(thresholds, previous)
        extra = {"counts": counts[str(day)], "days": counts}
        out.append(store.validate(suite, frame, "spark", extra=extra))
    elif dataset == "sessions":
        frame = sessions_frame(spark, lake, days[0])
        for d in days[1:]:
            frame = frame.unionByName(sessions_frame(spark, lake, d))
        extra = {"days": [str(d) for d in days]}
        out.append(store.validate(quality.sessions_suite(thresholds), frame, "spark", extra=extra))
    elif dataset == "datasets":
        frame, counts = datasets_frame(spark, lake, day)
        out.append(store.validate(quality.datasets_suite(thresholds), frame, "spark", extra=counts))
        frame, n_items = item_index_frame(spark, lake, day)
        out.append(store.validate(quality.item_index_suite(thresholds, n_items), frame, "spark"))
    else:
        raise ValueError(f"dataset: expected one of {DATASETS}, found {dataset!r}")
    for res, d in ((r, d) for r in out for d in catch_up):  # the batch's result, per day
        summary = {k: v for k, v in res.items() if k != "result"}
        summary["validated_with"] = str(day)
        write_json_atomic(
            quality.QualityStore.results_dir(quality_root, d) / f"{res['suite']}.json", summary
        )
    return out


def catch_up_days(
    fs: FS, lake: Lake, dataset: str, day: dt.date, n: int, quality_root: str
) -> list[dt.date]:
    """Earlier days of the window with data of `dataset` but no result of its suite yet."""
    root = {"raw_events": lake.events, "sessions": lake.sessions}.get(dataset)
    out = []
    for d in days_before(day, n) if root else ():
        done = os.path.exists(f"{quality_root}/dt={d}/{dataset}.json")
        if not done and fs.exists(f"{root}/dt={d}"):
            out.append(d)
    if out:
        log.info("also validating %s of %s", dataset, ", ".join(map(str, out)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.validate", __doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--date", type=parse_date, required=True)
    parser.add_argument(
        "--quality-root", help="where quality/dt=D goes (a local directory); default <lake>/quality"
    )
    parser.add_argument(
        "--thresholds", default="{}", help="JSON object overriding quality.Thresholds fields"
    )
    parser.add_argument(
        "--catch-up-days",
        type=int,
        default=0,
        help="also validate each of the N-1 days before --date whose data exists but has no "
        "result yet (days a first run ingested or sessionized to fill its window)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from jobs.common.spark import get_spark

    thresholds = quality.Thresholds.from_dict(json.loads(args.thresholds))
    quality_root = args.quality_root or Lake(args.lake).path("quality")
    spark = get_spark(f"validate_{args.dataset}", args.master, dict(args.conf))
    lake = Lake(args.lake)
    days = catch_up_days(FS(spark), lake, args.dataset, args.date, args.catch_up_days, quality_root)
    results = run_validate(
        spark, lake, args.dataset, args.date, quality_root, thresholds, catch_up=days
    )
    from jobs.report import write_run_report

    for day in [*days, args.date]:
        write_run_report(args.lake, quality_root, str(day))
    quality.raise_if_failed(*results)
    return 0


if __name__ == "__main__":
    run_main(main)
