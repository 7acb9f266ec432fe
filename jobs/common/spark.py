"""One place that builds a SparkSession with the settings every job relies on."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

# Settings the jobs' correctness depends on (see STACK_NOTES): UTC everywhere, Parquet timestamps
# readable by every engine, and overwrites that never touch other partitions.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.ansi.enabled": "true",
}

# Defaults sized for a small machine; any of them can be overridden with --conf or spark-submit.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.parquet.compression.codec": "zstd",
}


def get_spark(
    app_name: str, master: str | None = None, conf: dict[str, str] | None = None
) -> SparkSession:
    """Return the active SparkSession or build one; under spark-submit the submitted master wins."""
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("PIPELINE_SPARK_MASTER")
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ and "spark.master" not in (conf or {}):
        builder = builder.master("local[*]")
    for key, value in {**DEFAULT_CONF, **(conf or {}), **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("PIPELINE_SPARK_LOG_LEVEL", "WARN"))
    for key, value in REQUIRED_CONF.items():  # an already running session gets them too
        spark.conf.set(key, value)
    return spark
