from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from jobs.common.errors import ConfigError, SchemaError
from jobs.ingest import Window, normalize, quarantined, valid_events
from jobs.sources import PRESETS, SourceMapping

WIDE = Window(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
M = SourceMapping(user_col="u", item_col="i", ts_col="t")


def micros(*args) -> int:
    """Epoch microseconds of a UTC datetime, computed with the standard library."""
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 1_000_000


def tagged(spark, rows, mapping=M, window=WIDE, schema="u string, i string, t string"):
    df = normalize(spark.createDataFrame(rows, schema), mapping, window)
    return df.withColumn("ts_us", F.unix_micros("ts"))


def test_timestamps_in_seconds_millis_micros_and_iso_parse_to_the_same_instant(spark):
    rows = [
        ("a", "1", "1396860669"),
        ("b", "1", "1396860669000"),
        ("c", "1", "1396860669000000"),
        ("d", "1", "2014-04-07T08:51:09Z"),
        ("e", "1", "2014-04-07 10:51:09+02:00"),
        ("f", "1", "2014-04-07 08:51:09"),  # no zone: UTC
    ]
    got = {r.user_id: r.ts_us for r in tagged(spark, rows).collect()}
    assert got == dict.fromkeys("abcdef", micros(2014, 4, 7, 8, 51, 9))


def test_decimal_seconds_keep_their_milliseconds(spark):
    got = tagged(spark, [("a", "1", "1396860669.277")]).first().ts_us
    assert got == micros(2014, 4, 7, 8, 51, 9) + 277_000


def test_explicit_units_override_magnitude(spark):
    mapping = SourceMapping(user_col="u", item_col="i", ts_col="t", ts_unit="ms")
    got = tagged(spark, [("a", "1", "1396860669277")], mapping).first().ts_us
    assert got == micros(2014, 4, 7, 8, 51, 9) + 277_000


def test_typed_parquet_columns(spark):
    df = spark.createDataFrame(
        [(7, 42, dt.datetime(2020, 5, 1, 12, 0, tzinfo=dt.UTC))], "u long, i long, t timestamp"
    )
    row = normalize(df, M, WIDE).withColumn("ts_us", F.unix_micros("ts")).first()
    assert (row.user_id, row.item_id, row.status) == ("7", "42", "ok")
    assert row.ts_us == micros(2020, 5, 1, 12, 0)


def test_bad_rows_get_the_first_applicable_reason(spark):
    rows = [
        ("a", "1", "1396860669"),
        (None, "1", "1396860669"),
        ("  ", "1", "1396860669"),
        ("b", None, "1396860669"),
        ("c", "1", None),
        ("d", "1", "yesterday"),
        ("e", "1", "0"),  # 1970: outside the sane window
        (None, None, "garbage"),
    ]
    got = [r.status for r in tagged(spark, rows).collect()]
    assert got == [
        "ok",
        "null_user_id",
        "null_user_id",
        "null_item_id",
        "null_ts",
        "unparseable_ts",
        "ts_out_of_window",
        "null_user_id",
    ]


def test_quarantine_keeps_the_raw_row_and_files_it_by_date(spark):
    window = Window(dt.datetime(2014, 4, 7, tzinfo=dt.UTC), dt.datetime(2014, 4, 9, tzinfo=dt.UTC))
    rows = [("", "1", "1396860669"), ("d", "1", "nope")]
    q = quarantined(tagged(spark, rows, window=window), window, "2014-04-08").collect()
    by_reason = {r.reason: r for r in q}
    assert by_reason["null_user_id"].dt == "2014-04-07"  # its own (known) date
    assert by_reason["unparseable_ts"].dt == "2014-04-08"  # no date: the run's last date
    assert '"t":"nope"' in by_reason["unparseable_ts"].raw


def test_exact_duplicates_are_dropped_but_near_duplicates_kept(spark):
    rows = [
        ("a", "1", "1396860669"),
        ("a", "1", "1396860669"),
        ("a", "1", "1396860670"),
        ("a", "2", "1396860669"),
    ]
    assert valid_events(tagged(spark, rows)).count() == 3


def test_event_type_filter_is_counted_not_quarantined(spark):
    mapping = SourceMapping(
        user_col="u", item_col="i", ts_col="t", event_type_col="e", keep_event_types=("pv",)
    )
    rows = [("a", "1", "1396860669", "pv"), ("a", "1", "1396860669", "buy"), ("a", "1", "1", None)]
    got = [
        r.status
        for r in tagged(
            spark, rows, mapping, schema="u string, i string, t string, e string"
        ).collect()
    ]
    assert got == ["ok", "filtered_event_type", "filtered_event_type"]


def test_tiebreak_parsed_and_bad_tiebreak_quarantined(spark):
    mapping = SourceMapping(user_col="u", item_col="i", ts_col="t", tiebreak_col="s")
    rows = [("a", "1", "1396860669", "3"), ("a", "1", "1396860669", "x")]
    got = tagged(spark, rows, mapping, schema="u string, i string, t string, s string").collect()
    assert [(r.tiebreak, r.status) for r in got] == [(3, "ok"), (None, "unparseable_tiebreak")]


def test_missing_columns_error_names_expected_and_found(spark):
    df = spark.createDataFrame([("a", "1")], "user string, item string")
    with pytest.raises(SchemaError) as err:
        normalize(df, SourceMapping(user_col="user", item_col="item", ts_col="time"), WIDE)
    assert "['time']" in str(err.value)
    assert "['user', 'item']" in str(err.value)


def test_mapping_validation():
    with pytest.raises(ConfigError, match="csv_columns"):
        SourceMapping(header=False)
    with pytest.raises(ConfigError, match="unknown mapping keys"):
        PRESETS["rsc15"].override(user_column="x")
    with pytest.raises(ConfigError, match="ts_unit"):
        SourceMapping(ts_unit="minutes")


def test_cli_reports_a_missing_column_in_one_line(tmp_path, capsys):
    import subprocess
    import sys

    src = tmp_path / "in.csv"
    src.write_text("user,item\na,1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.ingest",
            "--input",
            str(src),
            "--lake",
            str(tmp_path / "l"),
            "--user-col",
            "user",
            "--item-col",
            "item",
            "--ts-col",
            "time",
            "--master",
            "local[1]",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2
    assert "SchemaError: input lacks column(s) ['time']" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_window_edges_are_utc_whatever_the_local_time_zone(spark, monkeypatch):
    import time

    from jobs.ingest import resolve_window

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        window = resolve_window(M, dt.date(2014, 4, 7), dt.date(2014, 4, 7))
        rows = [
            ("a", "1", "2014-04-06T23:59:59Z"),
            ("b", "1", "2014-04-07T00:00:00Z"),
            ("c", "1", "2014-04-07T23:59:59Z"),
            ("d", "1", "2014-04-08T00:00:00Z"),
        ]
        got = [r.status for r in tagged(spark, rows, window=window).collect()]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert got == ["ts_out_of_window", "ok", "ok", "ts_out_of_window"]


def test_bad_window_option_is_a_clear_error():
    with pytest.raises(ConfigError, match="expected an ISO date"):
        SourceMapping(min_ts="yesterday")


def test_null_text_control_characters_and_long_ids_are_quarantined_with_reasons(spark):
    mapping = SourceMapping(user_col="u", item_col="i", ts_col="t", max_id_length=8)
    rows = [
        ("a", "1", "1396860669"),
        ("null", "1", "1396860669"),
        ("NaN", "1", "1396860669"),
        ("a\tb", "1", "1396860669"),
        ("a", "None", "1396860669"),
        ("a", "x\x00y", "1396860669"),
        ("a", "123456789", "1396860669"),  # 9 characters, the limit is 8
        ("b", "12345678", "1396860669"),  # exactly at the limit: kept
        ("nullable", "2", "1396860669"),  # a real id that merely contains "null": kept
    ]
    got = [r.status for r in tagged(spark, rows, mapping).collect()]
    assert got == [
        "ok",
        "null_user_id",
        "null_user_id",
        "malformed_user_id",
        "null_item_id",
        "malformed_item_id",
        "malformed_item_id",
        "ok",
        "ok",
    ]


def test_one_odd_id_among_many_is_quarantined_and_the_raw_gate_judges_the_share(spark, tmp_path):
    """A single "null" / control-character id row no longer fails the night: ingest
    quarantines it, the published events hold none, and the raw suite passes on the share."""
    from jobs.common.lake import Lake
    from jobs.common.settings import QualityThresholds
    from jobs.ingest import run_ingest
    from jobs.validate import run_validate

    src = tmp_path / "raw.csv"
    lines = ["u,i,t"] + [f"u{n % 40},i{n % 13},{1396860000 + n * 7}" for n in range(400)]
    lines += ["null,i1,1396860100", 'u1,"a\x01b",1396860200']
    src.write_text("\n".join(lines) + "\n")
    lake = Lake(str(tmp_path / "lake"))
    s = run_ingest(spark, str(src), lake, M, dt.date(2014, 4, 7), dt.date(2014, 4, 7))
    assert s["quarantined"] == {"null_user_id": 1, "malformed_item_id": 1}
    events = spark.read.parquet(lake.events_day(dt.date(2014, 4, 7)))
    odd = F.col("user_id").isin("null") | F.col("item_id").rlike("[\\x00-\\x1f]")
    assert events.count() == 400 and events.filter(odd).count() == 0
    (result,) = run_validate(spark, lake, "raw_events", dt.date(2014, 4, 7), QualityThresholds())
    assert result["success"], result["failed"]


def test_range_ingest_writes_every_rejected_row_even_outside_the_valid_span(spark, tmp_path):
    """Without --date/--start/--end the run's dates were the valid events' span: a rejected
    row dated elsewhere was counted but never written."""
    from jobs.common.lake import Lake
    from jobs.ingest import run_ingest

    src = tmp_path / "raw.csv"
    src.write_text(
        "u,i,t\n"
        "a,1,2014-04-07T10:00:00Z\n"
        "a,2,2014-04-07T10:01:00Z\n"
        ",3,2014-04-09T12:00:00Z\n"  # rejected, dated two days after the last valid event
        "b,,2014-04-05T12:00:00Z\n"  # rejected, dated before the first valid event
        "c,4,garbage\n"  # rejected, no date: filed under the run's last date
    )
    lake = Lake(str(tmp_path / "lake"))
    kept = lake.events_day("2014-04-06")  # an earlier run's day, between the outliers
    spark.range(1).write.parquet(kept)
    s = run_ingest(spark, str(src), lake, M)
    assert spark.read.parquet(kept).count() == 1  # a rejected outlier never widens the run
    assert s["quarantined_total"] == 3
    q = spark.read.parquet(lake.quarantine).collect()
    assert len(q) == s["quarantined_total"]
    assert {(r.reason, str(r.dt)) for r in q} == {
        ("null_user_id", "2014-04-09"),
        ("null_item_id", "2014-04-05"),
        ("unparseable_ts", "2014-04-07"),  # no date: the run's last date
    }
    assert s["dates"] == ["2014-04-07", "2014-04-07"]  # the run owns its valid span only
