"""One writer per date: the lease refuses a second writer with a clear message (real
processes, a real job CLI), is re-entrant for its owner, survives nothing it should not (a
killed holder's lease goes stale and is taken over), and a DAG run's lease outlives its steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.common.lake import Lake
from jobs.common.locks import BUSY_EXIT, OWNER_ENV, DateBusy, DateLease, hold_date
from jobs.nightly import runner

ROOT = Path(__file__).resolve().parents[3]
DAY = "2026-01-05"
HOLDER = """
import sys, time
from jobs.common.lake import Lake
from jobs.common.locks import hold_date
with hold_date(Lake(sys.argv[1]), sys.argv[2]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def start_holder(lake: Path, seconds: float, **env) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lake), DAY, str(seconds)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env(**env),
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_writer_of_the_date_is_refused_naming_the_holder(tmp_path):
    lake = tmp_path / "lake"
    holder = start_holder(lake, 60)
    try:
        job = subprocess.run(
            [sys.executable, "-m", "jobs.popularity", "--lake", str(lake), "--date", DAY],
            capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120,
        )  # fmt: skip
        assert job.returncode == BUSY_EXIT, job.stderr[-2000:]
        assert f"DateBusy: date {DAY} is being written by cli:" in job.stderr
        assert f":{holder.pid} (since" in job.stderr and "Traceback" not in job.stderr
        # The nightly runner takes a busy date for a temporary failure: retried, not failed.
        with pytest.raises(runner.InfraFailure, match="exited with 75"):
            runner.run(
                [sys.executable, "-m", "jobs.nightly", "evaluate", "--lake", str(lake),
                 "--date", DAY],
                env=_env(), echo=lambda line: None,
            )  # fmt: skip
        assert not Path(Lake(str(lake)).model_run(DAY), "promotion.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # another date is free all along
    assert DateLease(Lake(str(lake)), "2026-01-06").acquire("someone")


def test_a_finished_holder_releases_and_a_killed_one_goes_stale(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    holder = start_holder(Path(lake.root), 0.1)
    holder.wait(timeout=30)
    assert DateLease(lake, DAY).holder() is None  # released at the end of its block
    holder = start_holder(Path(lake.root), 60)
    os.kill(holder.pid, signal.SIGKILL)  # no chance to release: the lease file stays
    holder.wait()
    lease = DateLease(lake, DAY)
    assert lease.holder()["owner"].endswith(f":{holder.pid}")
    assert lease.acquire("next")  # a dead hand-started job on this host: taken over at once
    # a run that died (no process to check): refused while fresh, taken over once stale
    assert lease.release("next") and lease.acquire("airflow:gru4rec_nightly:died")
    with pytest.raises(DateBusy):
        lease.acquire("next")
    monkeypatch.setenv("GRU4REC_LOCK_STALE_MINUTES", "0.01")  # 0.6 s without a heartbeat
    time.sleep(1.0)
    assert lease.acquire("next")  # stale: taken over
    assert lease.holder()["owner"] == "next"


def test_a_run_owner_keeps_its_lease_across_steps_until_released(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv(OWNER_ENV, "airflow:gru4rec_nightly:run-1")
    with hold_date(lake, DAY):
        pass
    with hold_date(lake, DAY):  # the run's next step: re-entrant
        pass
    lease = DateLease(lake, DAY)
    held = lease.holder()
    assert held["owner"] == "airflow:gru4rec_nightly:run-1"  # held between steps
    with pytest.raises(DateBusy, match="airflow:gru4rec_nightly:run-1"):
        lease.acquire("airflow:gru4rec_nightly:backfill-2")
    assert not lease.release("airflow:gru4rec_nightly:backfill-2")  # not its lease
    assert lease.release("airflow:gru4rec_nightly:run-1")
    assert lease.acquire("airflow:gru4rec_nightly:backfill-2")
    assert json.loads(lease.path.read_text())["owner"].endswith("backfill-2")


def test_a_caught_up_day_is_held_for_the_block_only_and_never_released_from_its_owner(
    tmp_path, monkeypatch
):
    """The earlier days a night catches up are leased too (keep=False): no teardown knows
    them, so the block releases what it took, and only that."""
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv(OWNER_ENV, "airflow:gru4rec_nightly:run-1")
    lease = DateLease(lake, DAY)
    with hold_date(lake, DAY, keep=False):
        assert lease.holder()["owner"] == "airflow:gru4rec_nightly:run-1"
        with pytest.raises(DateBusy, match="run-1"):
            lease.acquire("airflow:gru4rec_nightly:backfill-2")
    assert lease.holder() is None  # released at the end of the block, despite the run owner
    with hold_date(lake, DAY):  # the run's own date: kept until its teardown
        with hold_date(lake, DAY, keep=False):  # caught up by a later step of the same run
            pass
        assert lease.holder()["owner"] == "airflow:gru4rec_nightly:run-1"
    assert lease.holder()["owner"] == "airflow:gru4rec_nightly:run-1"
