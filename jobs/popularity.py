"""Items + popularity: the item index shared by training and scoring, and sampling weights.

Output under `datasets/run=D/`:
- items/:      item_id string, item_idx int (0..n-1), support bigint (train events)
- popularity/: item_idx, item_id, support, weight = support^alpha, cdf (cumulative share, last
  1.0), alpha: the sampling distribution training draws its extra negatives from (the table
  records its own alpha, so what ran is what it says)
item_idx orders items by support (descending), then item_id: deterministic for the same train set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.build_datasets import item_index as build_item_index
from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import NoInputError, SchemaError
from jobs.common.fs import FS, publish_dir, staging, write_summary
from jobs.common.lake import Lake
from jobs.common.locks import hold_date
from jobs.common.settings import PopularitySettings
from jobs.common.spark import get_spark
from jobs.quality.versions import popularity_input_version
from jobs.validate import add_then_validate_arguments, judge_after

log = logging.getLogger("jobs.popularity")


def item_index(train: DataFrame) -> DataFrame:
    """item_id -> item_idx, support: the index the datasets job gave train's events (their
    item_idx column), checked to be one contiguous index; computed by the same rule
    (support desc, item_id asc) for a split written before datasets carried item_idx."""
    if "item_idx" not in train.columns:
        return build_item_index(train)
    items = train.groupBy("item_id", "item_idx").agg(F.count(F.lit(1)).alias("support"))
    row = items.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("item_id").alias("ids"),
        F.countDistinct("item_idx").alias("idx"),
        F.min("item_idx").alias("lo"),
        F.max("item_idx").alias("hi"),
    ).first()
    n = row["rows"]
    if not (row["ids"] == row["idx"] == n and row["lo"] == 0 and row["hi"] == n - 1):
        raise SchemaError(
            f"train's item_idx: expected one contiguous index 0..n-1 with one item_id each, "
            f"found {n} (item_id, item_idx) pairs, {row['ids']} ids, {row['idx']} indices "
            f"ranging {row['lo']}..{row['hi']}"
        )
    return items.select(*C.ITEMS.columns)


def popularity(items_df: DataFrame, alpha: float) -> DataFrame:
    """Sampling weight support^alpha and its cumulative distribution in item_idx order."""
    alpha = PopularitySettings(alpha).alpha  # validated
    weighted = items_df.withColumn("weight", F.pow(F.col("support").cast("double"), F.lit(alpha)))
    running = Window.orderBy("item_idx").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    total = weighted.agg(F.sum("weight")).first()[0]
    return weighted.select(
        "item_idx",
        "item_id",
        "support",
        "weight",
        (F.sum("weight").over(running) / F.lit(total)).alias("cdf"),
        F.lit(float(alpha)).alias("alpha"),
    ).select(*C.POPULARITY.columns)


def run_popularity(
    spark: SparkSession, lake: Lake, day, alpha: float = PopularitySettings.alpha
) -> dict:
    """Build and publish `items/` and `popularity/` of `datasets/run=day`; return the summary."""
    t0 = time.monotonic()
    fs = FS(spark)
    run_dir = lake.datasets_run(day)
    version = popularity_input_version(lake, day, alpha)  # the date is held: it stays so
    train_path = lake.split(day, "train")
    if not fs.exists(train_path):
        raise NoInputError(f"no train split at {train_path}: run build_datasets first")
    train = spark.read.parquet(train_path)
    with staging(fs, run_dir) as stage:
        items = item_index(train).localCheckpoint(eager=True)
        items.coalesce(1).sortWithinPartitions("item_idx").write.parquet(f"{stage}/items")
        popularity(items, alpha).coalesce(1).sortWithinPartitions("item_idx").write.parquet(
            f"{stage}/popularity"
        )
        check = (
            spark.read.parquet(f"{stage}/popularity")
            .agg(
                F.count(F.lit(1)).alias("items"),
                F.sum("support").alias("events"),
                F.max("support").alias("max_support"),
                F.min("support").alias("min_support"),
                F.max("cdf").alias("cdf_last"),
            )
            .first()
        )
        publish_dir(fs, f"{stage}/items", lake.items(day))
        publish_dir(fs, f"{stage}/popularity", lake.popularity(day))
    summary = {
        "job": "popularity",
        "run": str(day),
        "alpha": alpha,
        "items": check["items"],
        "train_events": check["events"],
        "max_support": check["max_support"],
        "min_support": check["min_support"],
        "top_item_share": round(check["max_support"] / check["events"], 6),
        "cdf_last": check["cdf_last"],
        "seconds": round(time.monotonic() - t0, 2),
        "input_version": version,
    }
    write_summary(fs, lake.datasets, f"{day}.popularity", summary)
    return summary


def add_alpha_argument(parser) -> None:
    parser.add_argument(
        "--alpha",
        type=float,
        default=PopularitySettings.alpha,
        help="negative-sampling exponent: 0 uniform, 1 popularity",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.popularity", __doc__.splitlines()[0])
    parser.add_argument("--date", type=parse_date, required=True, help="dataset run date")
    add_alpha_argument(parser)
    parser.add_argument(
        "--quality-root", help="with --then-validate: where quality/dt=D is; default <lake>/quality"
    )
    add_then_validate_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    lake = Lake(args.lake, args.quality_root or "")
    with hold_date(lake, args.date):  # one writer per date
        spark = get_spark("popularity", args.master, dict(args.conf))
        run_popularity(spark, lake, args.date, args.alpha)
        if args.then_validate is not None:  # the datasets gate: splits, then the item index
            judge_after(spark, lake, C.SUITE_DATASETS, args.date, args.then_validate,
                        args.thresholds)  # fmt: skip
    return 0


if __name__ == "__main__":
    run_main(main)
