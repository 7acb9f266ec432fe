"""A short Spark application that loads the classes a nightly job's driver loads (a session,
Parquet written and read, a shuffle, a window): run once with `-XX:ArchiveClassesAtExit` to
build the class-data-sharing archive `jobs.dev.embedded.class_archive` describes."""

from __future__ import annotations

import sys
import tempfile

from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs.common.spark import get_spark


def main() -> int:
    spark = get_spark("jvm_warmup")
    with tempfile.TemporaryDirectory() as tmp:
        frame = spark.range(1000).select(
            (F.col("id") % 7).alias("user"), F.col("id").alias("ts"), F.lit("x").alias("item")
        )
        order = Window.partitionBy("user").orderBy("ts")
        frame = frame.withColumn("seq", F.row_number().over(order))
        frame.write.partitionBy("user").parquet(f"{tmp}/out")
        spark.read.parquet(f"{tmp}/out").groupBy("user").agg(F.count("*")).collect()
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
