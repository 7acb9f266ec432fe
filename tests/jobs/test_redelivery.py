"""A failed gate's verdict holds across nights until the day is re-delivered and passes.

Three consecutive nights drive the real job mains, in this process, with the exact arguments
the DAG's tasks get (`jobs.nightly.commands`), on a lake in a temporary directory:

    night of D3: the delivery of D3 has 80% unparseable timestamps -> validate_raw fails
    night of D4: D3 stays out (not sessionized, not read as D4's lookback, not in the window)
    D3 is re-delivered (a good file)
    night of D5: D3 is re-ingested, validated again (passes), sessionized; D4, whose lookback
                 now reads D3, is sessionized again; D5's window holds D3's events
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import build_datasets, ingest, sessionize, validate
from jobs.common import contracts as C
from jobs.common.errors import PipelineError
from jobs.common.fs import FS
from jobs.nightly import commands
from jobs.nightly.params import Night
from jobs.quality.verdicts import excluded_days

DAYS = [dt.date(2026, 1, d) for d in range(1, 6)]
ITEMS = [f"i{k}" for k in range(8)]


def _rows(day: dt.date) -> list[tuple[str, str, str]]:
    """(user, item, epoch ms) of one day's delivery: 30 users with two sessions of 4 events,
    plus a night owl whose session runs from 23:55 across midnight into the next day."""
    t0 = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    rows = []
    for u in range(30):
        for start_h in (2, 10):
            for k in range(4):
                ts = t0 + dt.timedelta(hours=start_h, minutes=k + u % 7)
                rows.append((f"u{u}", ITEMS[(u + k) % len(ITEMS)], ts))
    for minutes in (2, 5):  # the tail of yesterday's 23:55 session
        rows.append(("owl", ITEMS[minutes % 8], t0 + dt.timedelta(minutes=minutes)))
    for minutes in (23 * 60 + 55, 23 * 60 + 58):
        rows.append(("owl", ITEMS[minutes % 8], t0 + dt.timedelta(minutes=minutes)))
    return [(u, i, str(int(ts.timestamp() * 1000))) for u, i, ts in rows]


def _deliver(raw: Path, day: dt.date, bad_share: float = 0.0, empty: bool = False) -> None:
    rows = [] if empty else _rows(day)
    n_bad = int(len(rows) * bad_share)
    rows = [(u, i, "not-a-time" if k < n_bad else ts) for k, (u, i, ts) in enumerate(rows)]
    path = raw / f"dt={day}" / "clicks.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "user_id,item_id,timestamp,event_type\n"
        + "".join(f"{u},{i},{t},view\n" for u, i, t in rows)
    )
    os.replace(tmp, path)


def _job_args(cmd: list[str]) -> list[str]:
    """The job's own arguments: what follows jobs/<job>.py on the spark-submit line."""
    script = next(k for k, a in enumerate(cmd) if a.endswith(".py"))
    return cmd[script + 1 :]


def _night(root: Path, day: dt.date) -> Night:
    params = {
        "lake": str(root / "lake"),
        "window_days": 5,
        "min_item_support": 1,
        "accepted_days": [],
    }
    return Night.from_params(params, day)


def _run_night(night: Night) -> None:
    """The Spark stages of one night in DAG order; a failed gate raises and stops it."""
    ingest.main(_job_args(commands.ingest(night, None)))
    validate.main(_job_args(commands.validate(night, C.SUITE_RAW_EVENTS)))
    sessionize.main(_job_args(commands.sessionize(night)))
    validate.main(_job_args(commands.validate(night, C.SUITE_SESSIONS)))
    build_datasets.main(_job_args(commands.build_datasets(night)))


def _verdict(lake, day, suite) -> dict | None:
    path = Path(lake.suite_result(day, suite))
    return json.loads(path.read_text()) if path.exists() else None


def _days_in(spark, path) -> set[str]:
    df = spark.read.parquet(path).select(F.date_format("ts", "yyyy-MM-dd").alias("d"))
    return {r.d for r in df.distinct().collect()}


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRU4REC_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("GRU4REC_PRIVATE_DIR", str(tmp_path / "private"))
    return tmp_path


def test_a_refused_day_comes_back_only_after_its_redelivery_passes(spark, deployment):
    raw = deployment / "lake" / "raw"
    d1, d2, d3, d4, d5 = DAYS
    for d in (d1, d2, d4, d5):
        _deliver(raw, d)
    _deliver(raw, d3, bad_share=0.8)

    # Night of D3 (the first night: D1 and D2 are caught up, each validated on its own).
    night3 = _night(deployment, d3)
    lake = night3.lake
    ingest.main(_job_args(commands.ingest(night3, None)))
    with pytest.raises(PipelineError, match="_quarantine_share"):
        validate.main(_job_args(commands.validate(night3, C.SUITE_RAW_EVENTS)))
    assert _verdict(lake, d3, C.SUITE_RAW_EVENTS)["success"] is False
    for d in (d1, d2):  # their own results, not a batch's
        v = _verdict(lake, d, C.SUITE_RAW_EVENTS)
        assert v["success"] is True and v["counts"]["events"] == len(_rows(d))
    first_record = json.loads(FS(spark).read_text(lake.delivery_record(d3)))

    # Night of D4: D3's failure is remembered everywhere.
    night4 = _night(deployment, d4)
    _run_night(night4)
    assert not Path(lake.sessions_day(d3)).exists()  # never sessionized
    d4_summary = json.loads(Path(lake.summary(lake.sessions, d4)).read_text())
    assert str(d3) not in d4_summary["inputs"]  # nor read as D4's lookback
    owl = spark.read.parquet(lake.sessions_day(d4)).filter("user_id = 'owl'")
    assert sorted(r.seq for r in owl.collect()) == [
        0,
        0,
        1,
        1,
    ]  # two sessions: no continuation from D3
    run4 = json.loads(Path(lake.summary(lake.datasets, d4)).read_text())
    assert list(run4["excluded_days"]) == [str(d3)]
    assert "raw_events gate failed" in run4["excluded_days"][str(d3)]
    assert str(d3) not in _days_in(spark, lake.split(d4, "train"))
    assert _days_in(spark, lake.split(d4, "train")) == {str(d1), str(d2)}

    # D3 is re-delivered: a good file.
    _deliver(raw, d3)

    # Night of D5: D3 re-ingested, re-validated, sessionized; D4 sessionized again.
    night5 = _night(deployment, d5)
    _run_night(night5)
    record = json.loads(FS(spark).read_text(lake.delivery_record(d3)))
    assert record["ingest_id"] != first_record["ingest_id"]
    assert record["fingerprint"] != first_record["fingerprint"]
    ing5 = json.loads(Path(lake.summary(lake.events, d5)).read_text())
    assert ing5["redelivered_days"] == [str(d3)]
    assert spark.read.parquet(lake.events_day(d3)).count() == len(_rows(d3))
    v3 = _verdict(lake, d3, C.SUITE_RAW_EVENTS)
    assert v3["success"] is True and v3["counts"]["quarantined"] == 0
    superseded = list((Path(lake.quality_day(d3)) / "superseded").glob("*-raw_events.json"))
    assert len(superseded) == 1 and json.loads(superseded[0].read_text())["success"] is False
    assert _verdict(lake, d3, C.SUITE_SESSIONS)["success"] is True
    # D4's sessions now continue the owl's session from D3, and were validated again.
    owl = spark.read.parquet(lake.sessions_day(d4)).filter("user_id = 'owl'")
    assert sorted(r.seq for r in owl.collect()) == [0, 1, 2, 3]
    d4_summary = json.loads(Path(lake.summary(lake.sessions, d4)).read_text())
    assert d4_summary["inputs"][str(d3)] == record["ingest_id"]
    assert list((Path(lake.quality_day(d4)) / "superseded").glob("*-sessions.json"))
    assert _verdict(lake, d4, C.SUITE_SESSIONS)["success"] is True
    run5 = json.loads(Path(lake.summary(lake.datasets, d5)).read_text())
    assert run5["excluded_days"] == {}
    assert excluded_days(lake, DAYS) == {}
    assert str(d3) in _days_in(spark, lake.split(d5, "train"))

    # The next night, with nothing re-delivered, ingests and sessionizes no window day again.
    fs, d6 = FS(spark), d5 + dt.timedelta(days=1)
    lookback = night5.sessionize.lookback_days
    assert ingest.catch_up_days(fs, lake, night5.raw_input, d6, 6) == []
    assert sessionize.catch_up_days(fs, lake, d6, 6, lookback) == []
    assert validate.catch_up_days(fs, lake, C.SUITE_RAW_EVENTS, d6, 6) == []
    assert validate.catch_up_days(fs, lake, C.SUITE_SESSIONS, d6, 6) == []
    os.utime(raw / f"dt={d2}" / "clicks.csv")  # rewritten, same bytes: a new delivery
    assert ingest.catch_up_days(fs, lake, night5.raw_input, d6, 6) == [d2]


def test_a_failing_catch_up_day_gets_its_own_verdict_and_does_not_fail_tonight(spark, deployment):
    """A first night's catch-up used to validate its days as one batch: an empty or truncated
    day hid among good ones (row count and volume are table-level), a bad one failed tonight."""
    raw = deployment / "lake" / "raw"
    d1, d2, d3 = DAYS[:3]
    _deliver(raw, d1)
    _deliver(raw, d2, bad_share=0.8)
    _deliver(raw, d3)
    night = _night(deployment, d3)
    ingest.main(_job_args(commands.ingest(night, None)))
    assert validate.main(_job_args(commands.validate(night, C.SUITE_RAW_EVENTS))) == 0
    lake = night.lake
    assert _verdict(lake, d1, C.SUITE_RAW_EVENTS)["success"] is True
    v2 = _verdict(lake, d2, C.SUITE_RAW_EVENTS)
    assert v2["success"] is False and "validated_with" not in v2
    assert v2["counts"]["quarantine_share"] >= 0.79
    assert list(excluded_days(lake, DAYS[:3])) == [str(d2)]


def test_a_caught_up_day_another_run_is_writing_is_not_touched(spark, deployment):
    from jobs.common.locks import DateBusy, DateLease

    raw = deployment / "lake" / "raw"
    d1, d2 = DAYS[:2]
    _deliver(raw, d1)
    _deliver(raw, d2)
    night = _night(deployment, d2)
    lake = night.lake
    other = DateLease(lake, d1)
    other.acquire("airflow:gru4rec_nightly:backfill-of-d1")
    with pytest.raises(DateBusy, match="backfill-of-d1"):
        ingest.main(_job_args(commands.ingest(night, None)))
    assert not Path(lake.events_day(d1)).exists() and not Path(lake.events_day(d2)).exists()
    assert other.release("airflow:gru4rec_nightly:backfill-of-d1")
    assert ingest.main(_job_args(commands.ingest(night, None))) == 0
    assert Path(lake.events_day(d1)).exists() and DateLease(lake, d1).holder() is None


def test_a_redelivery_all_dirt_or_empty_fails_its_gate_and_never_stops_tonight(spark, deployment):
    """A re-delivery whose every row is rejected left no events: validate never judged the day,
    and its old sessions stayed in use. An empty one stopped every later night's ingest."""
    raw = deployment / "lake" / "raw"
    d1, d2, d3, d4 = DAYS[:4]
    for d in (d1, d2, d3):
        _deliver(raw, d)
    night3 = _night(deployment, d3)
    lake = night3.lake
    ingest.main(_job_args(commands.ingest(night3, None)))
    assert validate.main(_job_args(commands.validate(night3, C.SUITE_RAW_EVENTS))) == 0
    assert excluded_days(lake, DAYS) == {}

    _deliver(raw, d1, bad_share=1.0)  # every timestamp unparseable
    _deliver(raw, d2, empty=True)  # a header and no rows
    _deliver(raw, d4)
    night4 = _night(deployment, d4)
    assert ingest.main(_job_args(commands.ingest(night4, None))) == 0  # tonight goes on
    ing4 = json.loads(Path(lake.summary(lake.events, d4)).read_text())
    assert ing4["redelivered_days"] == [str(d1), str(d2)]
    assert list(ing4["refused_deliveries"]) == [str(d2)]
    assert "has no rows" in ing4["refused_deliveries"][str(d2)]
    assert not Path(lake.events_day(d1)).exists()  # every row of d1 is quarantined now
    assert spark.read.parquet(lake.quarantine_day(d1)).count() == len(_rows(d1))
    assert spark.read.parquet(lake.events_day(d2)).count() == len(_rows(d2))  # kept as it was
    assert validate.main(_job_args(commands.validate(night4, C.SUITE_RAW_EVENTS))) == 0
    v1 = _verdict(lake, d1, C.SUITE_RAW_EVENTS)
    assert v1["success"] is False and v1["counts"]["events"] == 0
    v2 = _verdict(lake, d2, C.SUITE_RAW_EVENTS)
    assert v2["success"] is False and "could not be ingested" in v2["failed"][0]
    assert sorted(excluded_days(lake, DAYS)) == [str(d1), str(d2)]
    # The refused delivery is not retried every night; a new one is.
    fs, d5 = FS(spark), DAYS[4]
    assert ingest.catch_up_days(fs, lake, night4.raw_input, d5, 5) == []
    _deliver(raw, d2)
    assert ingest.catch_up_days(fs, lake, night4.raw_input, d5, 5) == [d2]
