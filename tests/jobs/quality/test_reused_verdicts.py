"""A gate reuses the verdict its producing job computed (no second Spark application) only for
exactly the data there now: same files, same thresholds, no earlier day waiting for its own
verdict, a local lake; anything else makes the gate validate again."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

import pytest

from jobs import validate
from jobs.common import contracts as C
from jobs.common.lake import Lake
from jobs.common.settings import QualityThresholds
from jobs.quality.store import QualityGateError
from jobs.quality.versions import data_version

DAY = dt.date(2026, 1, 5)
T = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)


def _sessions(spark, lake: Lake, rows, day=DAY) -> None:
    """events/dt=day from (user, item, ts) rows, sessionized for real (with its account)."""
    from jobs.sessionize import run_sessionize

    events = [(u, i, ts, None, None) for u, i, ts in rows]
    spark.createDataFrame(events, C.EVENTS.ddl).write.mode("overwrite").parquet(
        lake.events_day(day)
    )
    run_sessionize(spark, lake, day)


def _reuse_cli(lake: Lake, capsys, thresholds: str = "{}", catch_up: int = 1) -> bool:
    argv = [C.SUITE_SESSIONS, "--lake", lake.root, "--date", str(DAY), "--reuse-only"]
    argv += ["--thresholds", thresholds, "--catch-up-days", str(catch_up)]
    capsys.readouterr()
    assert validate.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reused"]


def test_a_gate_reuses_the_producers_verdict_only_for_the_same_data(spark, tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    rows = [(f"u{s}", f"i{j}", T + dt.timedelta(minutes=j)) for s in range(10) for j in range(3)]
    _sessions(spark, lake, rows)
    assert not _reuse_cli(lake, capsys)  # nothing judged yet: the gate must validate

    validate.judge_after(spark, lake, C.SUITE_SESSIONS, DAY, 1, "{}")  # the producer's part
    stored = json.loads(Path(lake.suite_result(DAY, C.SUITE_SESSIONS)).read_text())
    assert stored["success"] and stored["judged_in"] == spark.sparkContext.appName
    assert stored["data_version"] == data_version(lake, C.SUITE_SESSIONS, DAY, stored_limits())
    reused = validate.reusable_verdicts(lake, C.SUITE_SESSIONS, DAY, QualityThresholds(), 1)
    assert reused is not None and [r["success"] for r in reused] == [True]
    assert _reuse_cli(lake, capsys)

    # other thresholds: the stored verdict answered another question
    assert not _reuse_cli(lake, capsys, json.dumps({"max_session_events": 2}))
    # an earlier day of the window with sessions but no verdict of its own
    _sessions(spark, lake, [("u1", "i1", T - dt.timedelta(days=2))], DAY - dt.timedelta(2))
    assert not _reuse_cli(lake, capsys, catch_up=3)
    assert _reuse_cli(lake, capsys, catch_up=1)  # outside that window, and not an input
    # the day before is an input (a continued session must link to it): new sessions there
    _sessions(spark, lake, [("u1", "i1", T - dt.timedelta(days=1))], DAY - dt.timedelta(1))
    assert not _reuse_cli(lake, capsys, catch_up=1)
    validate.judge_after(spark, lake, C.SUITE_SESSIONS, DAY, 1, "{}")
    assert _reuse_cli(lake, capsys, catch_up=1)

    # the data rewritten after it was judged (a hole in every session's positions)
    part = Path(lake.sessions_day(DAY))
    kept = spark.read.parquet(str(part)).where("seq != 1").collect()
    spark.createDataFrame(kept, C.SESSIONS.ddl).write.mode("overwrite").parquet(str(part))
    assert not _reuse_cli(lake, capsys)

    # judged again by the producer: the reused verdict is the failure, named
    validate.judge_after(spark, lake, C.SUITE_SESSIONS, DAY, 1, "{}")
    assert _reuse_cli_fails(lake, capsys, "_seq_contiguous")

    # a file touched (same bytes, new modification time) is new data too
    data = next(p for p in part.rglob("*.parquet"))
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert validate.reusable_verdicts(lake, C.SUITE_SESSIONS, DAY, QualityThresholds(), 1) is None


def stored_limits() -> dict:
    return QualityThresholds().to_dict()


def _reuse_cli_fails(lake: Lake, capsys, expectation: str) -> bool:
    argv = [C.SUITE_SESSIONS, "--lake", lake.root, "--date", str(DAY), "--reuse-only"]
    with pytest.raises(QualityGateError, match=expectation):
        validate.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reused"]


def test_a_remote_lake_and_a_validation_that_cannot_run_leave_the_gate_to_validate(
    spark, tmp_path, caplog
):
    remote = Lake("s3a://bucket/lake", str(tmp_path / "quality"))
    assert data_version(remote, C.SUITE_SESSIONS, DAY, stored_limits()) is None
    assert validate.reusable_verdicts(remote, C.SUITE_SESSIONS, DAY, QualityThresholds(), 1) is None

    lake = Lake(str(tmp_path / "lake"))  # no sessions at all: the producer's validation fails
    with caplog.at_level(logging.WARNING, logger="jobs.validate"):
        validate.judge_after(spark, lake, C.SUITE_SESSIONS, DAY, 1, "{}")  # does not raise
    assert "its gate will validate it" in caplog.text and "no sessions" in caplog.text
    assert not Path(lake.suite_result(DAY, C.SUITE_SESSIONS)).exists()


def test_a_version_covers_the_verdicts_code_and_is_none_when_an_input_cannot_be_read(
    tmp_path, monkeypatch
):
    from jobs.quality import versions

    lake = Lake(str(tmp_path / "lake"))
    part = Path(lake.sessions_day(DAY))
    part.mkdir(parents=True)
    (part / "part-0.parquet").write_bytes(b"rows")
    code = tmp_path / "suites.py"
    code.write_text("suite = 1\n")
    monkeypatch.setattr(versions, "_CODE", (code,))
    before = data_version(lake, C.SUITE_SESSIONS, DAY, stored_limits())
    assert before is not None
    code.write_text("suite = 2\n")  # a fixed suite: the old verdict is not this code's
    assert data_version(lake, C.SUITE_SESSIONS, DAY, stored_limits()) not in (None, before)
    (part / "part-1.parquet").symlink_to(tmp_path / "gone")  # being rewritten, say
    assert data_version(lake, C.SUITE_SESSIONS, DAY, stored_limits()) is None


def test_reuse_waits_for_another_writer_of_the_day(tmp_path):
    from jobs.common.locks import DateBusy, DateLease

    lake = Lake(str(tmp_path / "lake"))
    DateLease(lake, DAY).acquire("someone-else")
    argv = [C.SUITE_SESSIONS, "--lake", lake.root, "--date", str(DAY), "--reuse-only"]
    with pytest.raises(DateBusy):
        validate.main(argv)
