"""Sessionize: normalized events -> sessions of one day (30-minute inactivity rule).

Output `sessions/dt=D/`: session_id, user_id, item_id, ts, seq (0-based). A session belongs to
the UTC date of its first event. Processing D reads D plus `lookback_days` before it, so activity
that continues a session started before midnight is recognised as such instead of opening a
new session on D. Later days are never read, so rerunning D always gives identical output;
a session that runs past midnight keeps the events its start day holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import ConfigError, NoInputError
from jobs.common.fs import FS, publish_partitions, staging, write_summary
from jobs.common.lake import DT, Lake
from jobs.common.locks import hold_dates
from jobs.common.settings import SessionizeSettings
from jobs.common.spark import get_spark
from jobs.common.timeutil import days_before
from jobs.quality.verdicts import add_arguments as add_verdict_arguments
from jobs.quality.verdicts import excluded_days

log = logging.getLogger("jobs.sessionize")

SESSION_COLUMNS = C.SESSIONS.columns


def _event_order(df: DataFrame) -> list:
    """Time, then the source's tie-break, then item id: a total order, so reruns agree."""
    order = [F.col("ts").asc()]
    if "tiebreak" in df.columns:
        order.append(F.col("tiebreak").asc_nulls_first())
    order.append(F.col("item_id").asc())
    return order


def session_id_col(user_col: str = "user_id", start_col: str = "session_start") -> F.Column:
    """Deterministic id from the user and the session's first timestamp (96 bits of SHA-256)."""
    key = F.concat_ws("|", F.col(user_col), F.unix_micros(F.col(start_col)).cast("string"))
    return F.substring(F.sha2(key, 256), 1, 24)


def sessionize(
    events_df: DataFrame,
    gap_seconds: int = SessionizeSettings.gap_seconds,
    remove_repeats: bool = SessionizeSettings.remove_repeats,
) -> DataFrame:
    """Assign sessions per user: a gap of MORE than `gap_seconds` starts a new one.

    Input needs user_id, item_id, ts (and optionally tiebreak). Returns session_id, user_id,
    item_id, ts, seq, session_start. Repeats are removed after the gaps are measured, so a
    repeated click still counts as activity. Every window shares one partitioning and order,
    so the events are shuffled and sorted once.
    """
    if gap_seconds <= 0:
        raise ConfigError(f"gap_seconds must be positive, found {gap_seconds}")
    by_user = Window.partitionBy("user_id").orderBy(*_event_order(events_df))
    running = by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ts_us = F.unix_micros("ts")
    prev_us = F.lag(ts_us).over(by_user)
    df = events_df.withColumn(
        "_new", prev_us.isNull() | (ts_us - prev_us > gap_seconds * 1_000_000)
    )
    df = df.withColumn("_start_us", F.max(F.when(F.col("_new"), ts_us)).over(running))
    if remove_repeats:
        same = (F.lag("item_id").over(by_user) == F.col("item_id")) & ~F.col("_new")
        df = df.withColumn("_repeat", F.coalesce(same, F.lit(False)))
        df = df.filter(~F.col("_repeat"))  # never drops a session's first event
    # seq = position among the kept events since the session's first one.
    df = df.withColumn("_rn", F.row_number().over(by_user))
    df = df.withColumn("_first_rn", F.max(F.when(F.col("_new"), F.col("_rn"))).over(running))
    return df.select(
        "user_id",
        "item_id",
        "ts",
        F.timestamp_micros("_start_us").alias("session_start"),
        (F.col("_rn") - F.col("_first_rn")).cast("int").alias("seq"),
    ).withColumn("session_id", session_id_col())


def heavy_users(events_df: DataFrame, max_events_per_day: int) -> DataFrame:
    """user_id of users with more than `max_events_per_day` events on any day (bots)."""
    per_day = events_df.groupBy("user_id", F.to_date("ts").alias("_d")).count()
    return per_day.filter(F.col("count") > max_events_per_day).select("user_id").distinct()


def sessions_starting_in(sessions_df: DataFrame, first: dt.date, last: dt.date) -> DataFrame:
    """Keep the sessions whose first event falls in [first, last] (UTC), with their `dt`."""
    start_day = F.to_date("session_start")
    return sessions_df.filter(start_day.between(F.lit(first), F.lit(last))).select(
        *SESSION_COLUMNS, F.date_format(start_day, "yyyy-MM-dd").alias(DT)
    )


def read_events(
    spark: SparkSession, lake: Lake, first: dt.date, last: dt.date, lookback_days: int
) -> DataFrame:
    """Events of [first, last] and the `lookback_days` before; `last` itself must be present."""
    fs = FS(spark)
    n = (last - first).days + lookback_days
    wanted = [last - dt.timedelta(days=i) for i in range(n, -1, -1)]
    paths = [lake.events_day(d) for d in wanted if fs.exists(lake.events_day(d))]
    if not paths or paths[-1] != lake.events_day(last):
        raise NoInputError(f"no events for {last}: expected {lake.events_day(last)}")
    return spark.read.option("basePath", lake.events).parquet(*paths).drop(DT)


def drop_heavy_users(
    events: DataFrame, events_in: DataFrame, max_events_per_user_day: int
) -> tuple[DataFrame, dict]:
    """Events without the users above the daily cap (0: no cap), and what that removed of D."""
    capped = {"events": 0, "users": 0}
    if not max_events_per_user_day:
        return events, capped
    heavy = heavy_users(events, max_events_per_user_day).localCheckpoint(eager=True)
    if not heavy.count():  # usually none: skip the joins and the extra scan
        return events, capped
    capped = (
        events_in.join(F.broadcast(heavy), "user_id", "left_semi")
        .agg(F.count(F.lit(1)).alias("events"), F.countDistinct("user_id").alias("users"))
        .first()
        .asDict()
    )
    log.warning("dropped %s users above %s events a day", capped["users"], max_events_per_user_day)
    return events.join(F.broadcast(heavy), "user_id", "left_anti"), capped


def run_sessionize(
    spark: SparkSession,
    lake: Lake,
    day: dt.date,
    settings: SessionizeSettings | None = None,
    last_day: dt.date | None = None,
) -> dict:
    """Sessionize `day` (or every day of [day, last_day] in one pass) and publish each
    `sessions/dt=...`; return the summary.

    A range gives the same partitions as one run per day: boundaries depend only on the gap
    to the previous event, which the lookback provides for the range's first day.
    """
    t0 = time.monotonic()
    settings = settings or SessionizeSettings()
    fs = FS(spark)
    last = last_day or day
    if last < day:
        raise ConfigError(f"last_day {last} is before day {day}")
    events = read_events(spark, lake, day, last, settings.lookback_days)
    events_in = events.filter(F.to_date("ts").between(F.lit(day), F.lit(last)))
    kept, capped = drop_heavy_users(events, events_in, settings.max_events_per_user_day)
    sessions = sessionize(kept, settings.gap_seconds, settings.remove_repeats)
    sessions = sessions_starting_in(sessions, day, last)
    days = [str(day + dt.timedelta(days=i)) for i in range((last - day).days + 1)]
    with staging(fs, lake.sessions) as stage:
        sessions.write.partitionBy(DT).parquet(stage)
        events_in_count = events_in.count()
        out = (
            spark.read.parquet(stage)
            .agg(
                F.count(F.lit(1)).alias("events"),
                F.sum((F.col("seq") == 0).cast("long")).alias("sessions"),
                F.countDistinct("user_id").alias("users"),
                F.max("seq").alias("max_seq"),
            )
            .first()
        )
        publish_partitions(fs, stage, lake.sessions, DT, days)
    summary = {
        "job": "sessionize",
        "dates": [days[0], days[-1]],
        **dataclasses.asdict(settings),
        "events_in": events_in_count,
        "users_out": out["users"],
        "capped_users": capped["users"],
        "capped_events": capped["events"],
        "session_events_out": out["events"],
        "sessions_out": out["sessions"] or 0,
        "longest_session": (out["max_seq"] + 1) if out["max_seq"] is not None else 0,
        "seconds": round(time.monotonic() - t0, 2),
    }
    key = days[0] if len(days) == 1 else f"{days[0]}_{days[-1]}"
    write_summary(fs, lake.sessions, key, summary)
    return summary


def add_settings_arguments(parser) -> None:
    """The sessionize settings as options, their defaults from SessionizeSettings."""
    d = SessionizeSettings()
    parser.add_argument("--gap-seconds", type=int, default=d.gap_seconds, help="inactivity gap")
    parser.add_argument(
        "--lookback-days",
        type=int,
        default=d.lookback_days,
        help="days read before --date for continuity",
    )
    parser.add_argument(
        "--keep-repeats",
        action="store_true",
        default=not d.remove_repeats,
        help="keep immediate repeats (i, i, j); by default they collapse to (i, j)",
    )
    parser.add_argument(
        "--max-events-per-user-day",
        type=int,
        default=d.max_events_per_user_day,
        help="drop users above this many events in a day (bots); 0 disables",
    )


def settings_from_args(args) -> SessionizeSettings:
    return SessionizeSettings(
        gap_seconds=args.gap_seconds,
        lookback_days=args.lookback_days,
        remove_repeats=not args.keep_repeats,
        max_events_per_user_day=args.max_events_per_user_day,
    )


def build_parser():
    parser = base_parser("python -m jobs.sessionize", __doc__.splitlines()[0])
    parser.add_argument("--date", type=parse_date, required=True, help="day to sessionize")
    parser.add_argument(
        "--until", type=parse_date, help="also sessionize every day up to this one (backfill)"
    )
    add_verdict_arguments(parser)
    parser.add_argument(
        "--catch-up-days",
        type=int,
        default=0,
        help="also sessionize each of the N-1 days before --date that has events but no "
        "sessions yet (a first run fills its training window)",
    )
    add_settings_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(args)
    lake = Lake(args.lake, args.quality_root or "")
    until = args.until or args.date
    days = [args.date + dt.timedelta(days=i) for i in range((until - args.date).days + 1)]
    with hold_dates(lake, days):  # one writer per date
        return _main(args, lake, settings)


def _main(args, lake: Lake, settings) -> int:
    spark = get_spark("sessionize", args.master, dict(args.conf))
    fs = FS(spark)
    catch_up = [
        d
        for d in days_before(args.date, args.catch_up_days)
        if fs.exists(lake.events_day(d)) and not fs.exists(lake.sessions_day(d))
    ]
    # A day whose raw gate failed is not sessionized by a later night's catch-up: its verdict
    # stands until an operator accepts the day (--accept-days).
    refused = excluded_days(lake, catch_up, args.accept_days, suites=(C.SUITE_RAW_EVENTS,))
    for d, why in sorted(refused.items()):
        log.warning("not catching up %s: %s", d, why)
    catch_up = [d for d in catch_up if str(d) not in refused]
    if catch_up:
        log.info("catching up %d days without sessions: %s", len(catch_up), catch_up)
    # One run per day, as the nightly runs do: a range run would keep the events after midnight
    # of sessions spanning it, which a per-day run never reads, and the partitions would differ.
    ranges = [(d, d) for d in catch_up] + [(args.date, args.until)]
    for first, last in ranges:
        run_sessionize(spark, lake, first, settings, last_day=last)
    return 0


if __name__ == "__main__":
    run_main(main)
