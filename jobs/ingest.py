"""Ingest: raw clickstream (CSV or Parquet, any column names) -> normalized events + quarantine.

Normalized events (`events/dt=D/`, D = the event's UTC date):
    user_id string, item_id string, ts timestamp (UTC), event_type string (nullable),
    tiebreak bigint (nullable)
Quarantine (`quarantine/dt=D/`): reason, raw (the source row as JSON), user_id, item_id, ts.

A run owns a date range [start, end]: it replaces exactly those dates' partitions. Rejected rows
are filed under their own event date when it is known and inside the range, otherwise under the
range's last date, so every rejected row lands in exactly one partition of this run.

Every ingested date gets a delivery record (`events/_summaries/<date>.delivery.json`): the
input, its fingerprint (files, sizes, modification times) and a fresh `ingest_id`. With a
per-day input (`{ds}`), a later night compares each window day's delivery with its record:
a day whose delivery changed (a re-delivery) is ingested again, and re-ingesting a day
supersedes its quality verdicts, so the next validation judges the new data and a day a gate
refused comes back once its re-delivery passes. Sessionize sees the new `ingest_id` and
sessionizes the day (and the days whose lookback read it) again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import NoInputError, SchemaError
from jobs.common.fs import FS, publish_partitions, staging, write_summary
from jobs.common.lake import DATE_TOKEN, DT, Lake
from jobs.common.localfs import write_json_atomic
from jobs.common.locks import hold_dates
from jobs.common.spark import get_spark
from jobs.common.timeutil import days_before, midnight_utc, utc
from jobs.quality.verdicts import GATED, supersede
from jobs.sources import (
    PRESETS,
    SourceMapping,
    add_mapping_arguments,
    mapping_from_args,
)
from jobs.validate import add_then_validate_arguments, judge_after

log = logging.getLogger("jobs.ingest")

EVENT_COLUMNS = C.EVENTS.columns

# Quarantine reasons, checked in this order (a row gets the first that applies). A null id
# includes the text exporters write for a missing value (`C.NULL_TOKENS`: "null", "None",
# "nan", ...); a malformed id has a control character or is longer than the mapping allows.
REASONS = (
    "null_user_id",
    "malformed_user_id",
    "null_item_id",
    "malformed_item_id",
    "null_ts",
    "unparseable_ts",
    "unparseable_tiebreak",
    "ts_out_of_window",
)
FILTERED = "filtered_event_type"  # dropped on purpose, counted, not quarantined
OK = "ok"


@dataclass(frozen=True)
class Window:
    """Half-open UTC time window [start, end) of timezone-aware datetimes."""

    start: dt.datetime
    end: dt.datetime


def read_raw(spark: SparkSession, path: str, mapping: SourceMapping) -> DataFrame:
    """Read the source as-is: CSV columns all as strings (parsing is ours), Parquet as typed."""
    try:
        if mapping.format == "parquet":
            return spark.read.parquet(path)
        reader = spark.read.option("sep", mapping.sep).option("header", mapping.header)
        reader = reader.option("mode", "PERMISSIVE").option("inferSchema", False)
        if not mapping.header:
            schema = T.StructType([T.StructField(c, T.StringType()) for c in mapping.csv_columns])
            reader = reader.schema(schema)
        return reader.csv(path)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise NoInputError(f"input not found: {path}") from None
        raise SchemaError(
            f"input {path}: expected {mapping.format} the mapping can read, found: "
            f"{str(exc).splitlines()[0]}"
        ) from None


def check_columns(raw_df: DataFrame, mapping: SourceMapping) -> None:
    """Fail with both lists named when the mapping's columns are not in the input."""
    found = raw_df.columns
    missing = [c for c in mapping.required_columns if c not in found]
    if missing:
        raise SchemaError(
            f"input lacks column(s) {missing}: the mapping expects {mapping.required_columns}, "
            f"the input has {found}"
        )


_NULL_TOKENS_LOWER = sorted({t.lower() for t in C.NULL_TOKENS})


def _clean_id(col: Column) -> Column:
    """Ids as trimmed strings; empty strings and null tokens ("null", "None", ...) are missing."""
    s = F.trim(col.cast("string"))
    return F.when(F.lower(s).isin(_NULL_TOKENS_LOWER), F.lit(None)).otherwise(s)


def _malformed_id(col: Column, max_length: int) -> Column:
    """True for a (non-null) id with a control character or over `max_length` characters."""
    return F.coalesce(col.rlike(C.CONTROL_CHARS) | (F.length(col) > max_length), F.lit(False))


def with_parsed_ts(df: DataFrame, col: str, unit: str, out: str = "ts") -> DataFrame:
    """Add `out`: the raw timestamp column `col` as TIMESTAMP (UTC), null where unparseable.

    Integers are converted exactly; decimals (e.g. seconds with millisecond fractions) are
    rounded to the microsecond. `auto` tells s, ms and us apart by magnitude: a value of 1e11 or
    more cannot be seconds (year 5138) and is taken as ms, 1e14 or more as us. The string is
    trimmed and cast once, in its own projection: inlined, the casts would be repeated for
    every branch that uses them, which made parsing several times slower.
    """
    dtype = df.schema[col].dataType
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType | T.DateType):
        return df.withColumn(out, F.col(f"`{col}`").cast("timestamp"))
    s = F.trim(F.col(f"`{col}`").cast("string"))
    if unit == "iso":
        return df.withColumn(out, F.try_to_timestamp(s))
    staged = df.select(
        "*",
        s.alias("_ts_s"),
        s.try_cast("bigint").alias("_ts_l"),
        s.try_cast("double").alias("_ts_d"),
    )
    as_long, as_double = F.col("_ts_l"), F.col("_ts_d")
    factor: Column
    if unit == "auto":
        mag = F.abs(as_double)
        factor = F.when(mag >= 1e14, F.lit(1)).when(mag >= 1e11, F.lit(1000)).otherwise(1_000_000)
    else:
        factor = F.lit({"s": 1_000_000, "ms": 1000, "us": 1}[unit])
    micros = F.when(as_long.isNotNull(), F.try_multiply(as_long, factor)).otherwise(
        F.round(as_double * factor).try_cast("bigint")
    )
    ts = F.timestamp_micros(micros)
    if unit == "auto":
        ts = F.when(as_double.isNotNull(), ts).otherwise(F.try_to_timestamp(F.col("_ts_s")))
    return staged.withColumn(out, ts).drop("_ts_s", "_ts_l", "_ts_d")


def normalize(raw_df: DataFrame, mapping: SourceMapping, window: Window) -> DataFrame:
    """Map source columns onto the event schema and tag every row with a `status`.

    status is `ok`, `filtered_event_type`, or the quarantine reason. Pure: no I/O.
    """
    check_columns(raw_df, mapping)
    ts_raw = F.col(f"`{mapping.ts_col}`")
    event_type = (
        _clean_id(F.col(f"`{mapping.event_type_col}`"))
        if mapping.event_type_col
        else F.lit(None).cast("string")
    )
    if mapping.tiebreak_col:
        tb_raw = F.col(f"`{mapping.tiebreak_col}`")
        tiebreak = F.trim(tb_raw.cast("string")).try_cast("bigint")
        bad_tiebreak = tb_raw.isNotNull() & tiebreak.isNull()
    else:
        tiebreak = F.lit(None).cast("bigint")
        bad_tiebreak = F.lit(False)

    df = raw_df.select(
        *[F.col(f"`{c}`").alias(f"_raw_{i}") for i, c in enumerate(raw_df.columns)],
        _clean_id(F.col(f"`{mapping.user_col}`")).alias("user_id"),
        _clean_id(F.col(f"`{mapping.item_col}`")).alias("item_id"),
        ts_raw.alias("_ts_raw"),
        ts_raw.isNull().alias("_ts_null"),
        event_type.alias("event_type"),
        tiebreak.alias("tiebreak"),
        bad_tiebreak.alias("_bad_tiebreak"),
    )
    df = with_parsed_ts(df, "_ts_raw", mapping.ts_unit)
    # Unwanted event types are filtered before any quality check: they are not our data, and
    # their dirt must not inflate the quarantine.
    if mapping.keep_event_types is not None:
        keep = list(mapping.keep_event_types)
        status = F.when(~F.coalesce(F.col("event_type").isin(keep), F.lit(False)), FILTERED)
    else:
        status = F.when(F.lit(False), FILTERED)
    status = (
        status.when(F.col("user_id").isNull(), "null_user_id")
        .when(_malformed_id(F.col("user_id"), mapping.max_id_length), "malformed_user_id")
        .when(F.col("item_id").isNull(), "null_item_id")
        .when(_malformed_id(F.col("item_id"), mapping.max_id_length), "malformed_item_id")
        .when(F.col("_ts_null"), "null_ts")
        .when(F.col("ts").isNull(), "unparseable_ts")
        .when(F.col("_bad_tiebreak"), "unparseable_tiebreak")
        .when(
            (F.col("ts") < F.lit(window.start)) | (F.col("ts") >= F.lit(window.end)),
            "ts_out_of_window",
        )
    )
    df = df.withColumn("status", status.otherwise(OK))
    # The source row as JSON, for rejected rows only (building it for every row costs dearly).
    raw_struct = F.struct(*[F.col(f"_raw_{i}").alias(c) for i, c in enumerate(raw_df.columns)])
    raw_json = F.when(~F.col("status").isin(OK, FILTERED), F.to_json(raw_struct))
    return df.select(*EVENT_COLUMNS, raw_json.alias("raw"), "status")


def valid_events(tagged_df: DataFrame) -> DataFrame:
    """The accepted rows in the event schema, exact duplicates removed, with their `dt`."""
    return (
        tagged_df.filter(F.col("status") == OK)
        .select(*EVENT_COLUMNS)
        .dropDuplicates(EVENT_COLUMNS)
        .withColumn(DT, F.date_format("ts", "yyyy-MM-dd"))
    )


def quarantined(tagged_df: DataFrame, window: Window, fallback_dt: str) -> DataFrame:
    """Rejected rows with their reason, filed under their event date or `fallback_dt`."""
    in_window = (F.col("ts") >= F.lit(window.start)) & (F.col("ts") < F.lit(window.end))
    return tagged_df.filter(~F.col("status").isin(OK, FILTERED)).select(
        F.col("status").alias("reason"),
        *C.QUARANTINE.columns[1:],
        F.when(in_window, F.date_format("ts", "yyyy-MM-dd"))
        .otherwise(F.lit(fallback_dt))
        .alias(DT),
    )


def resolve_window(
    mapping: SourceMapping,
    start: dt.date | None,
    end: dt.date | None,
) -> Window:
    """The time window a run accepts: its date range intersected with the mapping's sane window."""
    lo, hi = utc(mapping.min_ts), utc(mapping.max_ts)
    if start is not None:
        lo = max(lo, midnight_utc(start))
    if end is not None:
        hi = min(hi, midnight_utc(end + dt.timedelta(days=1)))
    return Window(lo, hi)


def _dates(first: dt.date, last: dt.date) -> list[str]:
    return [str(first + dt.timedelta(days=i)) for i in range((last - first).days + 1)]


def _date_span(tagged: DataFrame, window: Window) -> tuple[dt.date, dt.date]:
    """First and last date of the accepted rows (none: the window's last day)."""
    span = (
        tagged.filter(F.col("status") == OK)
        .agg(F.min(F.to_date("ts")).alias("lo"), F.max(F.to_date("ts")).alias("hi"))
        .first()
    )
    if span["lo"] is None:  # nothing valid: file everything under the window's last day
        fallback = (window.end - dt.timedelta(microseconds=1)).date()
        return fallback, fallback
    return span["lo"], span["hi"]


def _counts_summary(counts: dict, events_out: int) -> dict:
    """Rows in, events out and every removal by reason: the summary's counts."""
    rows_in = sum(counts.values())
    quarantined = sum(counts.get(r, 0) for r in REASONS)
    return {
        "rows_in": rows_in,
        "events_out": events_out,
        "duplicates_dropped": counts.get(OK, 0) - events_out,
        "filtered_event_type": counts.get(FILTERED, 0),
        "quarantined": {r: counts[r] for r in REASONS if counts.get(r)},
        "quarantined_total": quarantined,
        "quarantine_share": round(quarantined / rows_in, 6),
    }


def run_ingest(
    spark: SparkSession,
    input_path: str,
    lake: Lake,
    mapping: SourceMapping,
    start: dt.date | None = None,
    end: dt.date | None = None,
    extra: dict | None = None,
) -> dict:
    """Ingest `input_path` for dates [start, end] (default: every date found); return a summary
    (with `extra` merged in)."""
    t0 = time.monotonic()
    fs = FS(spark)
    fingerprint = fs.fingerprint(input_path)  # before reading: a later change counts as new
    raw_df = read_raw(spark, input_path, mapping)
    window = resolve_window(mapping, start, end)
    # One pass over the raw input: every row, tagged, to a staging Parquet. Counting and the
    # two outputs then read that columnar copy instead of re-parsing or caching the source.
    with (
        staging(fs, lake.events) as tagged_stage,
        staging(fs, lake.events) as events_stage,
        staging(fs, lake.quarantine) as quarantine_stage,
    ):
        normalize(raw_df, mapping, window).write.parquet(tagged_stage)
        tagged = spark.read.parquet(tagged_stage)
        counts = {r["status"]: r["count"] for r in tagged.groupBy("status").count().collect()}
        rows_in = sum(counts.values())
        log.info("parsed and tagged %d rows: %.1f s", rows_in, time.monotonic() - t0)
        if rows_in == 0:
            raise NoInputError(f"input {input_path} has no rows")
        if start is None or end is None:
            lo, hi = _date_span(tagged, window)
            start, end = start or lo, end or hi
        dates = _dates(start, end)

        valid_events(tagged).write.partitionBy(DT).parquet(events_stage)
        log.info("wrote events: %.1f s", time.monotonic() - t0)
        quarantined(tagged, window, dates[-1]).write.partitionBy(DT).parquet(quarantine_stage)
        # every row rejected: the stage holds no Parquet file to read back
        events_out = spark.read.parquet(events_stage).count() if fs.list_dirs(events_stage) else 0
        publish_partitions(fs, events_stage, lake.events, DT, dates)
        # A rejected row dated outside the run's dates (a whole-file run's dates are its valid
        # events' span) is written too: its partition is published where produced, and no
        # partition outside the run's dates is ever deleted.
        produced = [p.partition("=")[2] for p in fs.list_dirs(quarantine_stage)]
        publish_partitions(fs, quarantine_stage, lake.quarantine, DT, [*dates, *produced])

    summary = {
        "job": "ingest",
        "input": input_path,
        "dates": [dates[0], dates[-1]],
        "window": [str(window.start), str(window.end)],
        **_counts_summary(counts, events_out),
        "seconds": round(time.monotonic() - t0, 2),
        **(extra or {}),
    }
    key = dates[0] if len(dates) == 1 else f"{dates[0]}_{dates[-1]}"
    write_summary(fs, lake.events, key, summary)
    record_delivery(fs, lake, dates, input_path, fingerprint)
    return summary


def record_delivery(fs: FS, lake: Lake, dates: list[str], input_path: str, fingerprint: dict):
    """Each date's delivery record; the data of these dates is new, so their verdicts end."""
    ingest_id = uuid.uuid4().hex
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for d in dates:
        supersede(lake, d, GATED, f"re-ingested from {input_path}")
        record = {
            "date": d,
            "input": input_path,
            "fingerprint": fingerprint,
            "ingest_id": ingest_id,
            "ingested_at": stamp,
        }
        fs.write_text(lake.delivery_record(d), json.dumps(record, indent=2, sort_keys=True) + "\n")


def refuse_delivery(fs: FS, lake: Lake, day, input_path: str, exc: Exception) -> str:
    """A caught-up day whose delivery could not be ingested (empty, unreadable, columns
    missing): its raw gate fails with the reason, so every later night leaves it out until it
    is re-delivered (its fingerprint is recorded: the same delivery is not retried) or
    accepted. Whatever was ingested before stays as it was. Returns the reason."""
    reason = f"the delivery {input_path} could not be ingested: {str(exc).splitlines()[0]}"
    log.error("%s: %s", day, reason)
    previous = read_delivery(fs, lake, day) or {}
    supersede(lake, day, GATED, "its re-delivery could not be ingested")
    verdict = {
        "suite": C.SUITE_RAW_EVENTS,
        "success": False,
        "failed": [reason],
        "statistics": {"evaluated_expectations": 0, "successful_expectations": 0},
        "date": str(day),
    }
    write_json_atomic(lake.suite_result(day, C.SUITE_RAW_EVENTS), verdict)
    record = {
        "date": str(day),
        "input": input_path,
        "fingerprint": fs.fingerprint(input_path),
        "ingest_id": previous.get("ingest_id"),  # the events on disk are still those
        "refused": reason,
        "refused_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    fs.write_text(lake.delivery_record(day), json.dumps(record, indent=2, sort_keys=True) + "\n")
    return reason


def read_delivery(fs: FS, lake: Lake, day) -> dict | None:
    """`day`'s delivery record, or None (never ingested, or ingested before records existed)."""
    path = lake.delivery_record(day)
    if not fs.exists(path):
        return None
    try:
        return json.loads(fs.read_text(path))
    except ValueError:
        log.warning("unreadable delivery record %s: treated as absent", path)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.ingest", __doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        required=True,
        help="raw file, directory or glob; '{ds}' in it stands for the date (one delivery a "
        "day, e.g. raw/dt={ds}/), and then --date is required",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="column mapping of a known source"
    )
    parser.add_argument("--mapping", help="JSON file with SourceMapping keys (over the preset)")
    parser.add_argument("--date", type=parse_date, help="ingest exactly this UTC date")
    parser.add_argument("--start", type=parse_date, help="first date of the range (with --end)")
    parser.add_argument("--end", type=parse_date, help="last date of the range (inclusive)")
    parser.add_argument(
        "--catch-up-days",
        type=int,
        default=0,
        help="with a '{ds}' input: also ingest each of the N-1 days before --date that was "
        "never ingested and has a delivery (a first run fills its training window), or whose "
        "delivery changed since it was ingested (a re-delivery)",
    )
    parser.add_argument(
        "--quality-root",
        help="where quality/dt=D is (its verdicts end when a day is re-ingested); "
        "default <lake>/quality",
    )
    add_mapping_arguments(parser)
    add_then_validate_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.date and (args.start or args.end):
        parser.error("give --date or --start/--end, not both")
    mapping = mapping_from_args(args)
    lake = Lake(args.lake, args.quality_root or "")
    first, last = args.date or args.start, args.date or args.end
    days = _dates(first, last) if first and last else []  # a whole-file range: not locked
    with hold_dates(lake, days):  # one writer per date
        code = _main(args, lake, mapping, parser)
        if args.then_validate is not None and args.date:
            spark = get_spark("ingest", args.master, dict(args.conf))  # the running session
            judge_after(spark, lake, C.SUITE_RAW_EVENTS, args.date, args.then_validate,
                        args.thresholds)  # fmt: skip
        return code


def _main(args, lake: Lake, mapping: SourceMapping, parser) -> int:
    spark = get_spark("ingest", args.master, dict(args.conf))
    if DATE_TOKEN not in args.input:
        run_ingest(spark, args.input, lake, mapping, args.date or args.start, args.date or args.end)
        return 0
    if not args.date:
        parser.error(f"an --input with {DATE_TOKEN} needs --date")
    fs = FS(spark)
    days = catch_up_days(fs, lake, args.input, args.date, args.catch_up_days)
    redelivered = [str(d) for d in days if read_delivery(fs, lake, d) is not None]
    refused = {}
    with hold_dates(lake, days, keep=False):  # the caught-up days: one writer each, too
        for day in days:
            try:
                run_ingest(spark, delivery(args.input, day), lake, mapping, day, day)
            except (NoInputError, SchemaError) as exc:
                # An old day's bad delivery must not stop tonight: its raw gate fails instead.
                refused[str(day)] = refuse_delivery(fs, lake, day, delivery(args.input, day), exc)
    extra = {
        "caught_up_days": [str(d) for d in days],
        "redelivered_days": redelivered,
        "refused_deliveries": refused,
    }
    run_ingest(spark, delivery(args.input, args.date), lake, mapping, args.date, args.date, extra)
    return 0


def delivery(template: str, day: dt.date) -> str:
    """The raw path of `day`'s delivery (`{ds}` replaced by YYYY-MM-DD)."""
    return template.replace(DATE_TOKEN, str(day))


def catch_up_days(fs: FS, lake: Lake, template: str, day: dt.date, n: int) -> list[dt.date]:
    """Days of the n-day window before `day` to ingest, oldest first: those never ingested (no
    record, events or quarantine partition) whose delivery exists, and those whose delivery is not
    the one their record says was ingested (re-delivered). A day without a record (ingested
    by an older version, or killed before its record was written) is ingested once more."""
    new, redelivered = [], []
    for d in days_before(day, n):
        path = delivery(template, d)
        if not fs.matches(path):
            continue
        record = read_delivery(fs, lake, d)
        done = fs.exists(lake.events_day(d)) or fs.exists(lake.quarantine_day(d))
        if record is None and not done:
            new.append(d)
        elif record is None or record.get("fingerprint") != fs.fingerprint(path):
            redelivered.append(d)
    if new:
        log.info("catching up %d never-ingested days: %s", len(new), ", ".join(map(str, new)))
    if redelivered:
        log.info(
            "ingesting again %d days whose delivery changed since it was ingested (or that "
            "have no delivery record): %s", len(redelivered), ", ".join(map(str, redelivered)),
        )  # fmt: skip
    return sorted(new + redelivered)


if __name__ == "__main__":
    run_main(main)
