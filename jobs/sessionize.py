"""Sessionize: normalized events -> session events of one day (30-minute inactivity rule).

Output `sessions/dt=D/`: session_id, user_id, item_id, ts, seq. The partition of an event is the
UTC date of the event itself, so no event is ever held back or dropped: a session that runs past
midnight has its events in both days' partitions under ONE session_id, with seq counting on
from where the earlier day stopped (0-based over the whole session). Processing D reads D plus
`lookback_days` before it, so activity that continues a session started before midnight keeps
that session's id and positions. Later days are never read, so rerunning D gives identical
output, and a range run equals one run per day (continuity is followed back `lookback_days`
days: a session active without a gap for longer than that is counted in the summary as
`sessions_reaching_lookback`, the one case where the two could differ).

Every summary carries a conservation account per day, checked by the sessions suite:
    events_in = session_events_out + repeats_removed + capped_events

A lookback day whose raw gate failed (and that no operator accepted) is not read: nothing of a
refused day shapes another day's sessions. Each day's summary records the `inputs` it was built
from (every day read, with the `ingest_id` of its delivery record); a later night's catch-up
sessionizes again any window day whose inputs changed (a day re-ingested after a re-delivery,
or a lookback day whose verdict changed), and republishing a day supersedes its sessions
verdict, so the next validation judges the new sessions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import ConfigError, NoInputError, SessionAccountError
from jobs.common.fs import FS, publish_partitions, staging, write_summary
from jobs.common.lake import DT, Lake
from jobs.common.locks import hold_dates
from jobs.common.settings import SessionizeSettings
from jobs.common.spark import get_spark
from jobs.common.timeutil import days_before, midnight_utc
from jobs.quality.verdicts import add_arguments as add_verdict_arguments
from jobs.quality.verdicts import excluded_days, supersede
from jobs.validate import add_then_validate_arguments, judge_after

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


def annotate(
    events_df: DataFrame,
    gap_seconds: int = SessionizeSettings.gap_seconds,
    remove_repeats: bool = SessionizeSettings.remove_repeats,
) -> DataFrame:
    """Every input event with its session and `_repeat` (an immediate repeat that sessionizing
    removes); the kept events carry their `seq`. One window spec, so one shuffle and sort.

    Returns user_id, item_id, ts, session_start, seq, _repeat.
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
    # A repeat still counts as activity for the gap (measured above); it never starts a session.
    repeat = F.lit(False)
    if remove_repeats:
        same = (F.lag("item_id").over(by_user) == F.col("item_id")) & ~F.col("_new")
        repeat = F.coalesce(same, F.lit(False))
    df = df.withColumn("_repeat", repeat)
    # seq = the number of kept events since the session's first one.
    df = df.withColumn("_kept", F.sum((~F.col("_repeat")).cast("long")).over(running))
    df = df.withColumn("_first", F.max(F.when(F.col("_new"), F.col("_kept"))).over(running))
    return df.select(
        "user_id",
        "item_id",
        "ts",
        F.timestamp_micros("_start_us").alias("session_start"),
        (F.col("_kept") - F.col("_first")).cast("int").alias("seq"),
        "_repeat",
    )


def sessionize(
    events_df: DataFrame,
    gap_seconds: int = SessionizeSettings.gap_seconds,
    remove_repeats: bool = SessionizeSettings.remove_repeats,
) -> DataFrame:
    """Assign sessions per user: a gap of MORE than `gap_seconds` starts a new one.

    Input needs user_id, item_id, ts (and optionally tiebreak). Returns session_id, user_id,
    item_id, ts, seq, session_start. Repeats are removed after the gaps are measured, so a
    repeated click still counts as activity.
    """
    df = annotate(events_df, gap_seconds, remove_repeats)
    return df.filter(~F.col("_repeat")).drop("_repeat").withColumn("session_id", session_id_col())


def heavy_user_days(events_df: DataFrame, max_events_per_day: int) -> DataFrame:
    """(user_id, _d) of each user and UTC day with more than `max_events_per_day` events
    (bots): the cap is judged per day, so a day's verdict never depends on another day."""
    per_day = events_df.groupBy("user_id", F.to_date("ts").alias("_d")).count()
    return per_day.filter(F.col("count") > max_events_per_day).select("user_id", "_d")


def events_of_days(sessions_df: DataFrame, first: dt.date, last: dt.date) -> DataFrame:
    """The session events that happened in [first, last] (UTC), with their own date as `dt`."""
    day = F.to_date("ts")
    return sessions_df.filter(day.between(F.lit(first), F.lit(last))).withColumn(
        DT, F.date_format(day, "yyyy-MM-dd")
    )


def days_to_read(
    fs: FS, lake: Lake, first: dt.date, last: dt.date, lookback_days: int, accepted=()
) -> list[dt.date]:
    """The days whose events sessionizing [first, last] reads: those of the range and of the
    `lookback_days` before it that have events, less the lookback days a failed raw gate
    keeps out; `last` itself must be present."""
    n = (last - first).days + lookback_days
    wanted = [last - dt.timedelta(days=i) for i in range(n, -1, -1)]
    present = [d for d in wanted if fs.exists(lake.events_day(d))]
    if not present or present[-1] != last:
        raise NoInputError(f"no events for {last}: expected {lake.events_day(last)}")
    lookback = [d for d in present if d < first]
    refused = excluded_days(lake, lookback, accepted, suites=(C.SUITE_RAW_EVENTS,))
    for d, why in sorted(refused.items()):
        log.warning("lookback day %s not read: %s", d, why)
    return [d for d in present if str(d) not in refused]


def read_events(spark: SparkSession, lake: Lake, days: Sequence[dt.date]) -> DataFrame:
    """The events of `days`."""
    paths = [lake.events_day(d) for d in days]
    return spark.read.option("basePath", lake.events).parquet(*paths).drop(DT)


def ingest_ids(fs: FS, lake: Lake, days: Sequence[dt.date]) -> dict[str, str]:
    """{day: the ingest_id of its delivery record ('unrecorded' when it has none)}."""
    from jobs.ingest import read_delivery

    out = {}
    for d in days:
        record = read_delivery(fs, lake, d) or {}
        out[str(d)] = str(record.get("ingest_id") or "unrecorded")
    return out


def inputs_of(read: dict[str, str], day: dt.date, lookback_days: int) -> dict[str, str]:
    """The part of `read` ({day: ingest_id}) that day `day`'s sessions depend on."""
    lo = str(day - dt.timedelta(days=lookback_days))
    return {d: i for d, i in read.items() if lo <= d <= str(day)}


def current_inputs(fs: FS, lake: Lake, day: dt.date, lookback_days: int, accepted=()) -> dict:
    """What sessionizing `day` alone would read now, as {day: ingest_id}."""
    return ingest_ids(fs, lake, days_to_read(fs, lake, day, day, lookback_days, accepted))


def recorded_inputs(fs: FS, lake: Lake, day: dt.date) -> dict | None:
    """The inputs `day`'s published sessions were built from (None: unknown, e.g. written
    by an older version)."""
    path = Lake.summary(lake.sessions, day)
    if not fs.exists(path):
        return None
    try:
        return json.loads(fs.read_text(path)).get("inputs")
    except ValueError:
        return None


def flag_heavy_users(events: DataFrame, max_events_per_user_day: int) -> tuple[DataFrame, int]:
    """Events with `_capped` (the user is above the daily cap on the event's day; 0: no cap),
    and how many user-days are capped in the read window."""
    if not max_events_per_user_day:
        return events.withColumn("_capped", F.lit(False)), 0
    heavy = heavy_user_days(events, max_events_per_user_day).localCheckpoint(eager=True)
    n_heavy = heavy.count()
    if not n_heavy:  # usually none: skip the join
        return events.withColumn("_capped", F.lit(False)), 0
    flagged = events.withColumn("_d", F.to_date("ts")).join(
        F.broadcast(heavy.withColumn("_capped", F.lit(True))), ["user_id", "_d"], "left"
    )
    capped = F.coalesce(F.col("_capped"), F.lit(False))
    return flagged.withColumn("_capped", capped).drop("_d"), n_heavy


def day_accounts(annotated: DataFrame, staged: DataFrame) -> dict[str, dict]:
    """Per day: what came in, what each named removal took, and what went out.

    `annotated` holds every input event of the run's days (`_capped`, `_repeat`, `dt`);
    `staged` is the written output read back, so the account compares two real counts.
    """
    ins = annotated.groupBy(DT).agg(
        F.count(F.lit(1)).alias("events_in"),
        F.sum(F.col("_capped").cast("long")).alias("capped_events"),
        F.countDistinct(F.when(F.col("_capped"), F.col("user_id"))).alias("capped_users"),
        F.sum(F.col("_repeat").cast("long")).alias("repeats_removed"),
    )
    outs = staged.groupBy(DT).agg(
        F.count(F.lit(1)).alias("session_events_out"),
        F.countDistinct("session_id").alias("sessions_out"),
        F.countDistinct(F.when(F.col("seq") == 0, F.col("session_id"))).alias("sessions_started"),
        F.countDistinct("user_id").alias("users_out"),
        F.max("seq").alias("max_seq"),
    )
    accounts = {}
    for row in ins.join(outs, DT, "left").collect():
        a = {k: (v or 0) for k, v in row.asDict().items() if k not in (DT, "max_seq")}
        a["sessions_continued"] = a["sessions_out"] - a["sessions_started"]
        a["longest_session"] = (row["max_seq"] + 1) if row["max_seq"] is not None else 0
        a["balanced"] = a["events_in"] == (
            a["session_events_out"] + a["repeats_removed"] + a["capped_events"]
        )
        accounts[str(row[DT])] = a
    return accounts


def sessions_reaching(every: DataFrame, horizon: dt.datetime, gap_seconds: int) -> int:
    """Sessions that start within one gap of the first instant read: they may have begun
    before it, unseen (a run per day could then give them another id than a range run)."""
    near = F.col("session_start") < F.lit(horizon + dt.timedelta(seconds=gap_seconds))
    return every.filter(near).select("session_id").distinct().count()


def run_sessionize(
    spark: SparkSession,
    lake: Lake,
    day: dt.date,
    settings: SessionizeSettings | None = None,
    last_day: dt.date | None = None,
    accepted_days=(),
) -> dict:
    """Sessionize `day` (or every day of [day, last_day] in one pass) and publish each
    `sessions/dt=...`; return the summary (with `days`: each day's account, also written
    to `sessions/_summaries/<day>.json` for the sessions suite).

    A range gives the same partitions as one run per day: boundaries depend only on the gap
    to the previous event, and the lookback provides those of the range's first day.
    """
    t0 = time.monotonic()
    settings = settings or SessionizeSettings()
    fs = FS(spark)
    last = last_day or day
    if last < day:
        raise ConfigError(f"last_day {last} is before day {day}")
    read_days = days_to_read(fs, lake, day, last, settings.lookback_days, accepted_days)
    read = ingest_ids(fs, lake, read_days)
    events = read_events(spark, lake, read_days)
    flagged, heavy_user_days_n = flag_heavy_users(events, settings.max_events_per_user_day)
    kept = flagged.filter(~F.col("_capped"))
    annotated = annotate(kept, settings.gap_seconds, settings.remove_repeats)
    annotated = annotated.withColumn("session_id", session_id_col())
    # The capped events of the run's days rejoin the account (they are not in any session).
    capped = flagged.filter(F.col("_capped")).select(
        "user_id",
        "item_id",
        "ts",
        F.lit(None).cast("timestamp").alias("session_start"),
        F.lit(None).cast("int").alias("seq"),
        F.lit(False).alias("_repeat"),
        F.lit(None).cast("string").alias("session_id"),
        "_capped",
    )
    every = events_of_days(
        annotated.withColumn("_capped", F.lit(False)).unionByName(capped), day, last
    ).persist(StorageLevel.MEMORY_AND_DISK)
    horizon = midnight_utc(day - dt.timedelta(days=settings.lookback_days))
    days = [str(day + dt.timedelta(days=i)) for i in range((last - day).days + 1)]
    try:
        with staging(fs, lake.sessions) as stage:
            out = every.filter(~F.col("_capped") & ~F.col("_repeat"))
            out.select(*SESSION_COLUMNS, DT).write.partitionBy(DT).parquet(stage)
            staged = spark.read.parquet(stage)
            accounts = day_accounts(every, staged)
            reaching = sessions_reaching(every, horizon, settings.gap_seconds)
            unbalanced = sorted(d for d, a in accounts.items() if not a["balanced"])
            if unbalanced:  # never published: the account names what went missing
                raise SessionAccountError(
                    f"sessionize lost events: events in != session events out + repeats "
                    f"removed + capped on {unbalanced}: "
                    + "; ".join(f"{d}: {accounts[d]}" for d in unbalanced)
                )
            publish_partitions(fs, stage, lake.sessions, DT, days)
    finally:
        every.unpersist()
    for d in days:  # new sessions: their earlier verdict no longer applies
        supersede(lake, d, (C.SUITE_SESSIONS,), "sessions republished")
    totals = {
        k: sum(a[k] for a in accounts.values())
        for k in (*C.SESSION_ACCOUNT, "sessions_out", "sessions_started", "sessions_continued")
    }
    summary = {
        "job": "sessionize",
        "dates": [days[0], days[-1]],
        **dataclasses.asdict(settings),
        **totals,
        "users_out": sum(a["users_out"] for a in accounts.values()),
        "capped_users": sum(a["capped_users"] for a in accounts.values()),
        "capped_user_days": heavy_user_days_n,
        "longest_session": max((a["longest_session"] for a in accounts.values()), default=0),
        "sessions_reaching_lookback": reaching,
        "balanced": True,
        "read_days": read,
        "days": accounts,
        "seconds": round(time.monotonic() - t0, 2),
    }
    for d in days:  # each day's own account, for the sessions suite of that day
        account = accounts.get(d, dict.fromkeys(C.SESSION_ACCOUNT, 0) | {"balanced": True})
        write_summary(
            fs,
            lake.sessions,
            d,
            {
                "job": "sessionize",
                "date": d,
                "run": summary["dates"],
                **dataclasses.asdict(settings),
                **account,
                "inputs": inputs_of(read, dt.date.fromisoformat(d), settings.lookback_days),
            },
        )
    if len(days) > 1:
        write_summary(fs, lake.sessions, f"{days[0]}_{days[-1]}", summary)
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
    add_then_validate_arguments(parser)
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
    catch_up = catch_up_days(
        FS(spark), lake, args.date, args.catch_up_days, settings.lookback_days, args.accept_days
    )
    with hold_dates(lake, catch_up, keep=False):  # the caught-up days: one writer each, too
        for d in catch_up:
            run_sessionize(spark, lake, d, settings, d, args.accept_days)
    run_sessionize(spark, lake, args.date, settings, args.until, args.accept_days)
    if args.then_validate is not None:
        judge_after(spark, lake, C.SUITE_SESSIONS, args.date, args.then_validate, args.thresholds)
    return 0


def catch_up_days(
    fs: FS, lake: Lake, day: dt.date, n: int, lookback_days: int, accepted=()
) -> list[dt.date]:
    """Days of the n-day window before `day` to sessionize, oldest first: those with events
    but no sessions yet, and those whose sessions were built from other inputs than they would
    be now (re-ingested, or a lookback day's verdict changed). A day whose raw gate failed is
    left alone: its verdict stands until it is re-delivered and passes, or an operator
    accepts it (--accept-days)."""
    candidates = [d for d in days_before(day, n) if fs.exists(lake.events_day(d))]
    refused = excluded_days(lake, candidates, accepted, suites=(C.SUITE_RAW_EVENTS,))
    for d, why in sorted(refused.items()):
        log.warning("not catching up %s: %s", d, why)
    new, stale = [], []
    for d in candidates:
        if str(d) in refused:
            continue
        if not fs.exists(lake.sessions_day(d)):
            new.append(d)
            continue
        # unknown inputs (written by an older version, or killed before its summary): redo
        if recorded_inputs(fs, lake, d) != current_inputs(fs, lake, d, lookback_days, accepted):
            stale.append(d)
    if new:
        log.info("catching up %d days without sessions: %s", len(new), ", ".join(map(str, new)))
    if stale:
        log.info(
            "sessionizing again %d days whose inputs changed (re-ingested, or a lookback "
            "day's verdict changed): %s", len(stale), ", ".join(map(str, stale)),
        )  # fmt: skip
    return sorted(new + stale)


if __name__ == "__main__":
    run_main(main)
