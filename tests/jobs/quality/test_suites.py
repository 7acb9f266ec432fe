"""Each Spark-side suite passes a clean dataset and names the rule a dirty one breaks; results
and Data Docs land in the day's quality directory."""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import pytest

from jobs.common import contracts as C
from jobs.common.lake import Lake
from jobs.common.settings import QualityThresholds
from jobs.quality import suites
from jobs.quality.spark_frames import item_index_frame, raw_events_frame, sessions_frame
from jobs.quality.store import QualityGateError, QualityStore, raise_if_failed

DAY = dt.date(2026, 1, 5)
T = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)


def _write(spark, rows, schema, path):
    spark.createDataFrame(rows, schema).write.mode("overwrite").parquet(str(path))


@pytest.fixture(params=["spark", "pandas"])
def store(request, tmp_path):
    """A day's store whose Spark frames GX judges on Spark (large days) or, collected, on
    pandas (small days, `LOCAL_MAX_ROWS`): every test holds under both engines."""
    store = QualityStore(Lake(str(tmp_path)).quality_day(DAY))
    limit = 0 if request.param == "spark" else None
    store.validate = functools.partial(store.validate, local_max_rows=limit)
    store.engine = request.param
    return store


def test_both_engines_name_the_same_failures_on_a_dirty_and_an_empty_day(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [(f"u{i}", f"i{i % 7}", T + dt.timedelta(minutes=i), None, None) for i in range(40)]
    rows[1] = ("u1", "null", T, None, None)
    rows[2] = ("u\t2", "x" * 300, T - dt.timedelta(days=1), None, None)
    _write(spark, rows, C.EVENTS.ddl, lake.events_day(DAY))
    _write(spark, [("unparseable_ts", "{}")] * 9, "reason string, raw string",
           lake.quarantine_day(DAY))  # fmt: skip
    empty = DAY + dt.timedelta(days=1)
    _write(spark, [], C.EVENTS.ddl, lake.events_day(empty))
    dirty: list = []
    for day in (DAY, empty):
        frame, counts = raw_events_frame(spark, lake, day)
        got = {}
        for engine, limit in (("spark", 0), ("pandas", None)):
            store = QualityStore(Lake(str(tmp_path / engine)).quality_day(day))
            suite = suites.raw_events_suite(QualityThresholds(), counts["previous_day_events"])
            got[engine] = store.validate(suite, frame, "spark", local_max_rows=limit)
            assert got[engine]["engine"] == engine
        assert not got["spark"]["success"] and not got["pandas"]["success"]
        assert got["spark"]["failed"] == got["pandas"]["failed"], day
        assert got["spark"]["statistics"] == got["pandas"]["statistics"], day
        dirty = got["spark"]["failed"] if day == DAY else dirty
    failed = " ".join(got["spark"]["failed"])  # the empty day
    assert "expect_table_row_count_to_be_between(table)" in failed
    # One day's store judged again on the other engine, back and forth (a rerun after the
    # day grew or shrank), each time by a new process's store: the last result stands.
    frame, counts = raw_events_frame(spark, lake, DAY)
    for engine, limit in (("spark", 0), ("pandas", None), ("spark", 0), ("pandas", None)):
        store = QualityStore(Lake(str(tmp_path / "switching")).quality_day(DAY))
        suite = suites.raw_events_suite(QualityThresholds(), counts["previous_day_events"])
        res = store.validate(suite, frame, "spark", local_max_rows=limit)
        assert res["engine"] == engine and not res["success"]
        # another suite of the day on Spark after it (GX rebuilds the Spark data source)
        other = suites.raw_events_suite(QualityThresholds(), counts["previous_day_events"])
        store.validate(other, frame, "spark", name="raw_events_again", local_max_rows=0)
        saved = json.loads((store.root / "raw_events.json").read_text())
        assert saved["engine"] == engine and saved["failed"] == dirty


def test_raw_events_suite_catches_quarantine_surge_and_text_nulls(spark, tmp_path, store):
    lake = Lake(str(tmp_path / "lake"))
    schema = C.EVENTS.ddl
    rows = [(f"u{i}", f"i{i % 7}", T + dt.timedelta(minutes=i), None, None) for i in range(40)]
    _write(spark, rows, schema, lake.events_day(DAY))
    _write(
        spark,
        [("unparseable_ts", "{}")],
        "reason string, raw string",
        lake.quarantine_day(DAY),
    )
    frame, counts = raw_events_frame(spark, lake, DAY)
    assert counts["quarantine_share"] == pytest.approx(1 / 41, abs=1e-6)
    ok = store.validate(suites.raw_events_suite(QualityThresholds()), frame, "spark")
    assert ok["success"], ok["failed"]
    assert ok["engine"] == store.engine
    assert json.loads((store.root / "raw_events.json").read_text())["success"]
    assert store.docs_index.exists()

    rows[3] = ("u3", "null", T, None, None)
    _write(spark, rows, schema, lake.events_day(DAY))
    frame, _ = raw_events_frame(spark, lake, DAY)
    strict = QualityThresholds(max_quarantine_share=0.01)
    bad = store.validate(suites.raw_events_suite(strict, previous_day_events=1000), frame, "spark")
    failed = " ".join(bad["failed"])
    assert not bad["success"]
    assert "expect_column_max_to_be_between(_quarantine_share)" in failed
    assert "expect_column_values_to_not_be_in_set(item_id)" in failed
    assert "expect_table_row_count_to_be_between(table)" in failed  # 40 < 20% of 1000
    with pytest.raises(QualityGateError, match="_quarantine_share"):
        raise_if_failed(bad)


def _sessionized(spark, lake, rows, day=DAY):
    """events/dt=day from (user, item, ts) rows, sessionized for real (with its account)."""
    from jobs.sessionize import run_sessionize

    events = [(u, i, ts, None, None) for u, i, ts in rows]
    by_day: dict = {}
    for r in events:
        by_day.setdefault(r[2].date(), []).append(r)
    for d, part in by_day.items():
        _write(spark, part, C.EVENTS.ddl, lake.events_day(d))
    for d in sorted(by_day):
        run_sessionize(spark, lake, d)
    return spark.read.parquet(lake.sessions_day(day)).collect()


def _sessions_result(spark, lake, store, day=DAY):
    frame, account = sessions_frame(spark, lake, day)
    return store.validate(suites.sessions_suite(QualityThresholds()), frame, "spark"), account


def test_sessions_suite_catches_broken_ids_positions_and_single_event_days(spark, tmp_path, store):
    lake = Lake(str(tmp_path / "lake"))
    rows = [(f"u{s}", f"i{j}", T + dt.timedelta(minutes=j)) for s in range(10) for j in range(3)]
    good = [tuple(r[c] for c in C.SESSIONS.columns) for r in _sessionized(spark, lake, rows)]
    ok, account = _sessions_result(spark, lake, store)
    assert ok["success"], ok["failed"]
    assert account["balanced"] and account["events_in"] == 30

    bad = [r for r in good if r[4] != 1]  # a hole in every session's positions
    bad[0] = ("NOT-A-HASH", *bad[0][1:])
    _write(spark, bad, C.SESSIONS.ddl, lake.sessions_day(DAY))
    res, _ = _sessions_result(spark, lake, store)
    failed = " ".join(res["failed"])
    assert "match_regex(session_id)" in failed and "_seq_contiguous" in failed
    assert "_account_balanced" in failed  # 10 events went missing from the partition

    lake2 = Lake(str(tmp_path / "singles"))
    _sessionized(spark, lake2, [(f"u{s}", "i1", T) for s in range(30)])
    res, _ = _sessions_result(spark, lake2, store)
    assert [f for f in res["failed"] if "_session_length" in f], res["failed"]
    assert not [f for f in res["failed"] if "_account_balanced" in f]


def test_sessions_suite_fails_when_the_conservation_account_does_not_balance(
    spark, tmp_path, store
):
    lake = Lake(str(tmp_path / "lake"))
    rows = [(f"u{s}", f"i{j}", T + dt.timedelta(minutes=j)) for s in range(10) for j in range(3)]
    kept = _sessionized(spark, lake, rows)
    lost = [tuple(r[c] for c in C.SESSIONS.columns) for r in kept if r.user_id != "u0"]
    _write(spark, lost, C.SESSIONS.ddl, lake.sessions_day(DAY))  # one whole session lost
    res, account = _sessions_result(spark, lake, store)
    assert [f for f in res["failed"] if "_account_balanced" in f] == res["failed"] != []
    assert (account["sessions_partition_rows"], account["session_events_out"]) == (27, 30)
    # without an account (sessionize's summary missing), the day does not pass either
    Path(Lake.summary(lake.sessions, DAY)).unlink()
    _write(spark, [tuple(r[c] for c in C.SESSIONS.columns) for r in kept], C.SESSIONS.ddl,
           lake.sessions_day(DAY))  # fmt: skip
    res, account = _sessions_result(spark, lake, store)
    assert not account["balanced"] and "_account_balanced" in " ".join(res["failed"])


def test_sessions_suite_checks_a_continued_session_links_to_the_day_before(spark, tmp_path, store):
    lake = Lake(str(tmp_path / "lake"))
    midnight = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    rows = [("u", "a", midnight - dt.timedelta(minutes=5)), ("u", "b", midnight)]
    rows += [("u", "c", midnight + dt.timedelta(minutes=5))]
    rows += [(f"v{s}", f"i{j}", T + dt.timedelta(minutes=j)) for s in range(5) for j in range(3)]
    kept = _sessionized(spark, lake, rows)
    assert sorted(r.seq for r in kept if r.user_id == "u") == [1, 2]  # continued
    ok, _ = _sessions_result(spark, lake, store)
    assert ok["success"], ok["failed"]
    # the day before loses the session that D continues: D's continuation links to nothing
    previous = lake.sessions_day(DAY - dt.timedelta(days=1))
    _write(spark, [("0" * 24, "w", "z", midnight - dt.timedelta(hours=3), 0)], C.SESSIONS.ddl,
           previous)  # fmt: skip
    res, _ = _sessions_result(spark, lake, store)
    assert [f for f in res["failed"] if "_continues_previous_day" in f], res["failed"]


def test_item_index_suite_catches_a_cdf_that_does_not_sum_to_one(spark, tmp_path, store):
    lake = Lake(str(tmp_path / "lake"))
    train = [(f"s{i}", f"i{i % 3}", T, i) for i in range(9)]  # i0, i1, i2: 3 events each
    _write(spark, train, "session_id string, item_id string, ts timestamp, seq int",
           lake.split(DAY, "train"))  # fmt: skip
    items = [("i0", 0, 3), ("i1", 1, 3), ("i2", 2, 3)]
    _write(spark, items, C.ITEMS.ddl, lake.items(DAY))
    w = 3**0.5
    pop = [(i, f"i{i}", 3, w, (i + 1) / 3, 0.5) for i in range(3)]
    schema = C.POPULARITY.ddl
    _write(spark, pop, schema, lake.popularity(DAY))
    summary = Path(lake.popularity_summary(DAY))
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"alpha": 0.5}))
    frame, n = item_index_frame(spark, lake, DAY)
    assert n == 3
    ok = store.validate(suites.item_index_suite(QualityThresholds(), n), frame, "spark")
    assert ok["success"], ok["failed"]

    pop[2] = (2, "i2", 3, w, 0.9, 0.5)
    _write(spark, pop, schema, lake.popularity(DAY))
    frame, n = item_index_frame(spark, lake, DAY)
    res = store.validate(suites.item_index_suite(QualityThresholds(), n), frame, "spark")
    assert any("expect_column_max_to_be_between(cdf)" in f for f in res["failed"]), res["failed"]

    # a table built with another alpha than the job was asked for describes nothing that ran
    pop = [(i, f"i{i}", 3, w, (i + 1) / 3, 0.3) for i in range(3)]
    _write(spark, pop, schema, lake.popularity(DAY))
    frame, n = item_index_frame(spark, lake, DAY)
    res = store.validate(suites.item_index_suite(QualityThresholds(), n), frame, "spark")
    assert [f for f in res["failed"] if "_alpha_matches" in f], res["failed"]
