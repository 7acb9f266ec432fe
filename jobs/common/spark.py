"""One place that builds a SparkSession with the settings every job relies on."""

from __future__ import annotations

import logging
import os

from pyspark.sql import SparkSession

from jobs.common.settings import SparkSettings, deployment_spark_conf

log = logging.getLogger("jobs.spark")

# Settings the jobs' correctness depends on (see STACK_NOTES): UTC everywhere, Parquet timestamps
# readable by every engine, and overwrites that never touch other partitions.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.ansi.enabled": "true",
}

# Defaults sized for a small machine; any of them can be overridden with --conf or spark-submit.
# Launch-time settings (the driver's memory) are not here: under spark-submit the driver JVM is
# already running when this code builds the session (SparkSettings.submit_args passes them).
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.parquet.compression.codec": "zstd",
}


def get_spark(
    app_name: str, master: str | None = None, conf: dict[str, str] | None = None
) -> SparkSession:
    """Return the active SparkSession or build one; under spark-submit the submitted master wins."""
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("PIPELINE_SPARK_MASTER")
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master:
        builder = builder.master(master)
    elif not under_submit and "spark.master" not in (conf or {}):
        builder = builder.master("local[*]")
    launch = {} if under_submit else {"spark.driver.memory": SparkSettings.driver_memory}
    # The deployment's settings reach a spark-submit in a properties file; a job started as a
    # plain process reads them from the environment (below its own --conf).
    deployment = {} if under_submit else deployment_spark_conf()
    defaults = DEFAULT_CONF
    if under_submit:  # what spark-submit was given (properties file, --conf) beats our defaults
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # attach to spark-submit's JVM (getOrCreate does too)
        submitted = SparkConf()  # its spark.* properties: the submitted settings
        defaults = {k: v for k, v in DEFAULT_CONF.items() if not submitted.contains(k)}
    merged = {**defaults, **launch, **deployment, **(conf or {}), **REQUIRED_CONF}
    for key, value in merged.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("PIPELINE_SPARK_LOG_LEVEL", "WARN"))
    for key, value in REQUIRED_CONF.items():  # an already running session gets them too
        spark.conf.set(key, value)
    log_driver(spark)
    return spark


def log_driver(spark: SparkSession) -> None:
    """The driver's effective memory setting and heap: what the JVM really got."""
    sc = spark.sparkContext
    heap = sc._jvm.java.lang.Runtime.getRuntime().maxMemory()
    log.info(
        "spark %s on %s: spark.driver.memory=%s, driver JVM max heap %d MiB",
        spark.version,
        sc.master,
        sc.getConf().get("spark.driver.memory", "(default 1g)"),
        heap // (1024 * 1024),
    )
