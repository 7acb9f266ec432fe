from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from pyspark.sql import functions as F

from jobs.common.lake import Lake
from jobs.common.settings import SessionizeSettings
from jobs.sessionize import run_sessionize, sessionize

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def events(spark, rows, with_tiebreak=False):
    """rows: (user, item, seconds after T0[, tiebreak])."""
    data = [(u, i, T0 + dt.timedelta(seconds=s), *rest) for u, i, s, *rest in rows]
    schema = "user_id string, item_id string, ts timestamp"
    if with_tiebreak:
        schema += ", tiebreak long"
    return spark.createDataFrame(data, schema)


def groups(df):
    """[(user, [items in seq order]) per session], sorted: compares sessionizations."""
    rows = df.orderBy("user_id", "session_start", "seq").collect()
    out: dict = {}
    for r in rows:
        out.setdefault((r.user_id, r.session_id), []).append(r.item_id)
    return sorted((u, items) for (u, _), items in out.items())


def test_gap_of_exactly_30_minutes_stays_and_30_01_splits(spark):
    df = events(spark, [("u", "a", 0), ("u", "b", 1800), ("u", "c", 3601)])
    assert groups(sessionize(df)) == [("u", ["a", "b"]), ("u", ["c"])]


def test_configurable_gap(spark):
    df = events(spark, [("u", "a", 0), ("u", "b", 600), ("u", "c", 1201)])
    assert groups(sessionize(df, gap_seconds=600)) == [("u", ["a", "b"]), ("u", ["c"])]


def test_out_of_order_input_is_ordered_by_time(spark):
    df = events(spark, [("u", "c", 120), ("u", "a", 0), ("u", "b", 60)])
    assert groups(sessionize(df)) == [("u", ["a", "b", "c"])]


def test_equal_timestamps_follow_the_tiebreak(spark):
    df = events(spark, [("u", "z", 0, 2), ("u", "y", 0, 1), ("u", "x", 0, 3)], with_tiebreak=True)
    assert groups(sessionize(df)) == [("u", ["y", "z", "x"])]


def test_immediate_repeats_removed_by_default_but_not_across_sessions(spark):
    df = events(
        spark, [("u", "a", 0), ("u", "a", 10), ("u", "b", 20), ("u", "a", 30), ("u", "a", 4000)]
    )
    assert groups(sessionize(df)) == [("u", ["a"]), ("u", ["a", "b", "a"])]
    assert groups(sessionize(df, remove_repeats=False)) == [
        ("u", ["a"]),
        ("u", ["a", "a", "b", "a"]),
    ]


def test_repeats_still_count_as_activity_for_the_gap(spark):
    # a(0) a(1700) b(3400): each gap is under 30 minutes thanks to the repeat.
    df = events(spark, [("u", "a", 0), ("u", "a", 1700), ("u", "b", 3400)])
    assert groups(sessionize(df)) == [("u", ["a", "b"])]


def test_seq_is_zero_based_and_session_id_deterministic(spark):
    df = events(spark, [("u", "a", 0), ("u", "b", 60), ("v", "c", 0)])
    first = sessionize(df).orderBy("user_id", "seq").collect()
    again = sessionize(df.orderBy(F.rand(3))).orderBy("user_id", "seq").collect()
    assert [r.seq for r in first] == [0, 1, 0]
    assert [r.session_id for r in first] == [r.session_id for r in again]
    assert first[0].session_id == first[1].session_id != first[2].session_id
    assert len(first[0].session_id) == 24


def test_users_are_sessionized_separately(spark):
    df = events(spark, [("u", "a", 0), ("v", "b", 10), ("u", "c", 20)])
    assert groups(sessionize(df)) == [("u", ["a", "c"]), ("v", ["b"])]


def test_bot_cap_drops_users_above_it_and_reports_them(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [("bot", str(i), i) for i in range(6)] + [("u", "a", 0), ("u", "b", 5)]
    _write_events(spark, lake, rows)
    day = dt.date(2024, 3, 1)
    summary = run_sessionize(spark, lake, day, SessionizeSettings(max_events_per_user_day=5))
    assert (summary["capped_users"], summary["capped_events"]) == (1, 6)
    got = spark.read.parquet(lake.sessions_day(day)).collect()
    assert sorted((r.user_id, r.item_id) for r in got) == [("u", "a"), ("u", "b")]
    # at the cap: kept
    summary = run_sessionize(spark, lake, day, SessionizeSettings(max_events_per_user_day=6))
    assert summary["capped_users"] == 0 and summary["session_events_out"] == 8


def test_matches_spark_session_window_on_random_events(spark):
    rng = random.Random(11)
    rows = []
    for u in range(40):
        t = rng.randint(0, 86400)
        for _ in range(rng.randint(1, 30)):
            rows.append((f"u{u}", f"i{rng.randint(0, 50)}", t))
            t += rng.choice([0, 5, 60, 900, 1799, 1800, 1801, 2400, 7200, rng.randint(1, 5000)])
    df = events(spark, rows)
    ours = (
        sessionize(df, remove_repeats=False)
        .groupBy("user_id", "session_start")
        .count()
        .select("user_id", F.unix_micros("session_start").alias("start"), "count")
    )
    oracle = (
        df.groupBy("user_id", F.session_window("ts", "30 minutes"))
        .count()
        .select("user_id", F.unix_micros("session_window.start").alias("start"), "count")
    )
    assert sorted(ours.collect()) == sorted(oracle.collect())
    assert ours.count() > 60  # the random data really has many sessions


def _write_events(spark, lake, rows):
    df = events(spark, rows).withColumn("dt", F.date_format("ts", "yyyy-MM-dd"))
    df.write.mode("overwrite").partitionBy("dt").parquet(lake.events)


def test_session_spanning_midnight_keeps_every_event_and_one_id_over_two_nightly_runs(
    spark, tmp_path
):
    """The tail of a session crossing midnight used to be dropped by the second night,
    uncounted: both days together held 2 of its 4 events."""
    lake = Lake(str(tmp_path / "lake"))
    # T0 is 12:00 on 03-01. u: 23:50, 23:55 -> 00:05, 00:10 (one session of 4 events);
    # v starts fresh at 00:40 on 03-02.
    rows = [("u", "a", 42600), ("u", "b", 42900), ("u", "c", 43500), ("u", "d", 43800)]
    rows.append(("v", "e", 45600))
    _write_events(spark, lake, rows)
    day1, day2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    run_sessionize(spark, lake, day1)
    summary = run_sessionize(spark, lake, day2)
    s = spark.read.parquet(lake.sessions)
    d1 = [(r.user_id, r.item_id, r.seq) for r in s.filter(F.col("dt") == F.lit(day1)).collect()]
    d2 = sorted(
        (r.user_id, r.item_id, r.seq) for r in s.filter(F.col("dt") == F.lit(day2)).collect()
    )
    assert sorted(d1) == [("u", "a", 0), ("u", "b", 1)]
    assert d2 == [("u", "c", 2), ("u", "d", 3), ("v", "e", 0)]  # seq counts on past midnight
    u_ids = {r.session_id for r in s.filter(F.col("user_id") == "u").collect()}
    assert len(u_ids) == 1  # one session, one id, in both partitions
    day2_account = summary["days"][str(day2)]
    assert (summary["events_in"], summary["session_events_out"]) == (3, 3)
    assert (day2_account["sessions_continued"], day2_account["sessions_started"]) == (1, 1)
    assert summary["balanced"]
    # Without the lookback, u's after-midnight events would wrongly open a session on 03-02.
    run_sessionize(spark, lake, day2, SessionizeSettings(lookback_days=0))
    d2_nolookback = spark.read.parquet(lake.sessions_day(day2)).collect()
    assert {r.session_id for r in d2_nolookback if r.user_id == "u"} != u_ids


def test_every_summary_balances_events_in_against_named_removals(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    day1, day2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    # u repeats 'a' across midnight (a repeat removed on day 2), bot is heavy on day 1 only
    rows = [("u", "a", 43000), ("u", "a", 43300), ("u", "b", 43400), ("u", "b", 43500)]
    rows += [("bot", f"x{i}", i) for i in range(4)] + [("bot", "y", 86400 + 7200)]
    _write_events(spark, lake, rows)
    cap = SessionizeSettings(max_events_per_user_day=3)
    s1 = run_sessionize(spark, lake, day1, cap)
    s2 = run_sessionize(spark, lake, day2, cap)
    a1, a2 = s1["days"][str(day1)], s2["days"][str(day2)]
    # day 1: u 'a' (1 event), bot's 4 events capped
    assert (a1["events_in"], a1["session_events_out"], a1["capped_events"]) == (5, 1, 4)
    # day 2: u's 'a' is a repeat, 'b' 'b' -> 'b'; the bot is below the cap on day 2: kept
    assert (a2["events_in"], a2["session_events_out"], a2["repeats_removed"]) == (4, 2, 2)
    assert a2["capped_events"] == 0
    for a in (a1, a2):
        assert a["events_in"] == a["session_events_out"] + a["repeats_removed"] + a["capped_events"]
        assert a["balanced"]
    kept = spark.read.parquet(lake.sessions_day(day2)).collect()
    assert sorted((r.user_id, r.item_id, r.seq) for r in kept) == [
        ("bot", "y", 0), ("u", "b", 1)
    ]  # fmt: skip
    # each day's account is written beside the sessions, for the sessions suite
    written = json.loads(Path(Lake.summary(lake.sessions, day2)).read_text())
    assert {k: written[k] for k in a2} == a2


def test_rerun_is_identical_and_leaves_other_days_untouched(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [("u", "a", 0), ("u", "b", 60), ("v", "c", 86400), ("v", "d", 86460)]
    _write_events(spark, lake, rows)
    day1, day2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    run_sessionize(spark, lake, day1)
    run_sessionize(spark, lake, day2)
    before = sorted(spark.read.parquet(lake.sessions).collect())
    run_sessionize(spark, lake, day1)
    after = sorted(spark.read.parquet(lake.sessions).collect())
    assert before == after
    assert {r.dt for r in after} == {day1, day2}


def _crossing_rows(rng, n_users=40, days=4):
    """Random clicks with many sessions crossing midnight, immediate repeats across it and a
    user who is a bot (above the cap) on one day only."""
    rows = []
    for u in range(n_users):
        for d in range(days - 1):  # start shortly before each midnight inside the days
            t = d * 86400 + 43200 - rng.randint(0, 3000)  # T0 is noon
            for _ in range(rng.randint(1, 8)):
                item = rows[-1][1] if rows and rng.random() < 0.2 else f"i{rng.randint(0, 9)}"
                rows.append((f"u{u}", item, t))
                t += rng.choice([0, 60, 600, 1700, 1800, 1801, 4000])
    rows += [("bot", f"i{k % 10}", 86400 + k) for k in range(30)]  # heavy on 03-02 only
    rows += [("bot", "i1", 2 * 86400 + 600), ("bot", "i2", 2 * 86400 + 700)]
    return rows


def test_range_run_equals_day_by_day_runs_on_sessions_crossing_midnight(spark, tmp_path):
    rows = _crossing_rows(random.Random(5))
    a, b = Lake(str(tmp_path / "a")), Lake(str(tmp_path / "b"))
    _write_events(spark, a, rows)
    _write_events(spark, b, rows)
    days = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(4)]
    cap = SessionizeSettings(max_events_per_user_day=20)
    daily = [run_sessionize(spark, a, d, cap) for d in days]
    summary = run_sessionize(spark, b, days[0], cap, last_day=days[-1])
    ra = sorted(spark.read.parquet(a.sessions).collect())
    rb = sorted(spark.read.parquet(b.sessions).collect())
    assert ra == rb and len(ra) == summary["session_events_out"] > 300
    # the cases this test names really occur
    spans = (
        spark.read.parquet(a.sessions)
        .groupBy("session_id")
        .agg(F.countDistinct("dt").alias("days"))
    )
    assert spans.filter(F.col("days") > 1).count() >= 20  # sessions crossing midnight
    assert summary["repeats_removed"] > 0 and summary["capped_events"] == 30
    assert sum(s["sessions_continued"] for s in daily) == summary["sessions_continued"] >= 20
    # nothing lost: every event of the days is in a session or a named removal
    assert summary["events_in"] == len(rows) == sum(s["events_in"] for s in daily)
    assert summary["events_in"] == (
        summary["session_events_out"] + summary["repeats_removed"] + summary["capped_events"]
    )
    for d in days:
        assert summary["days"][str(d)] == daily[days.index(d)]["days"][str(d)]


def test_catch_up_never_sessionizes_a_day_whose_raw_gate_failed_unless_accepted(spark, tmp_path):
    """A later night's catch-up used to sessionize any day with events but no sessions, so a
    day that failed its raw gate reached the training window the next night."""
    from jobs.common.localfs import write_json_atomic
    from jobs.sessionize import main

    lake = Lake(str(tmp_path / "lake"))
    t = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)
    rows = [("u1", "a", t), ("u1", "b", t + dt.timedelta(minutes=1))]
    rows += [(u, i, ts + dt.timedelta(days=1)) for u, i, ts in rows]
    df = spark.createDataFrame(rows, "user_id string, item_id string, ts timestamp")
    df = df.withColumn("event_type", F.lit(None).cast("string"))
    df = df.withColumn("tiebreak", F.lit(None).cast("bigint"))
    df.withColumn("dt", F.date_format("ts", "yyyy-MM-dd")).write.partitionBy("dt").parquet(
        lake.events
    )
    failure = {"suite": "raw_events", "success": False, "failed": ["unparseable timestamps"]}
    write_json_atomic(lake.suite_result("2024-03-01", "raw_events"), failure)
    args = [
        "--lake",
        lake.root,
        "--date",
        "2024-03-02",
        "--catch-up-days",
        "3",
        "--master",
        "local[1]",
    ]
    assert main(args) == 0
    assert spark.read.parquet(lake.sessions_day("2024-03-02")).count() == 2
    assert not (tmp_path / "lake" / "sessions" / "dt=2024-03-01").exists()
    assert main([*args, "--accept-days", "2024-03-01"]) == 0  # an operator accepts the day
    assert spark.read.parquet(lake.sessions_day("2024-03-01")).count() == 2
