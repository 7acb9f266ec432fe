"""The DAG file: imports cleanly, looks nothing up while parsed, and has the shape, pools,
queues, retries, params and assets the design promises."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.nightly.params import PARAMS

ROOT = Path(__file__).resolve().parents[2]
ORDER = [
    "ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
    "popularity", "validate_datasets", "train", "evaluate", "refresh", "score",
    "validate_recommendations", "publish",
]  # fmt: skip
LEASE = ("hold_date", "release_date")
SPARK_TASKS = {
    "ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
    "popularity", "validate_datasets",
}  # fmt: skip
TORCH_TASKS = {"train", "evaluate", "refresh", "score"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """Parse dags/ the way the dag-processor does, with connection and Variable look-ups
    made to fail loudly."""
    code = f"""
import os, sys
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
from airflow.sdk import BaseHook, Variable
def forbidden(*a, **k):
    raise AssertionError("looked up a connection or Variable while parsing")
Variable.get = staticmethod(forbidden)
BaseHook.get_connection = classmethod(forbidden)
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder={str(ROOT / "dags")!r})
print("ERRORS", bag.import_errors)
print("DAGS", sorted(bag.dag_ids))
"""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_dag_imports_without_errors_or_lookups(dagbag):
    assert "ERRORS {}" in dagbag
    assert "DAGS ['gru4rec_nightly']" in dagbag


@pytest.fixture(scope="module")
def dag():
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    import importlib

    module = importlib.import_module("dags.gru4rec_nightly")
    return module.nightly


def test_task_order_is_the_designed_chain(dag):
    assert sorted(dag.task_ids) == sorted([*ORDER, *LEASE])
    for a, b in zip(ORDER, ORDER[1:], strict=False):
        assert dag.get_task(b).upstream_task_ids == {a}, b
    # The run holds D's lease from a setup before ingest to a teardown after publish, which
    # runs whatever failed and does not decide the run's state.
    hold, release = (dag.get_task(t) for t in LEASE)
    assert hold.is_setup and dag.get_task("ingest").upstream_task_ids == {"hold_date"}
    assert release.is_teardown and release.upstream_task_ids == {"hold_date", "publish"}
    assert dag.get_task("publish").downstream_task_ids == {"release_date"}


def test_a_failed_gate_never_retries_and_infrastructure_retries_with_backoff(dag):
    """Every task retries what retrying can fix (a gate too: a crashed JVM, a window day
    another run is writing); a data failure (exit 2, e.g. a failed expectation) is an
    AirflowFailException, which Airflow never retries."""
    import importlib

    from airflow.sdk.exceptions import AirflowFailException

    for task_id in ORDER:
        task = dag.get_task(task_id)
        assert task.retries >= 1 and task.retry_exponential_backoff, task_id
        assert task.retry_delay >= dt.timedelta(minutes=1)
    module = importlib.import_module("dags.gru4rec_nightly")
    with pytest.raises(AirflowFailException, match="data quality / input failure"):
        module._run([sys.executable, "-c", "import sys; sys.exit(2)"])
    with pytest.raises(Exception) as busy:  # exit 75, a busy date: an ordinary, retried error
        module._run([sys.executable, "-c", "import sys; sys.exit(75)"])
    assert not isinstance(busy.value, AirflowFailException)


def test_spark_tasks_hold_the_spark_pool_and_torch_tasks_go_to_the_gpu_queue(dag):
    for task_id in ORDER:
        task = dag.get_task(task_id)
        if task_id in SPARK_TASKS:
            assert task.pool == "spark", task_id
        if task_id in TORCH_TASKS:
            assert (task.pool, task.queue) == ("gpu", "gpu"), task_id
        if task_id not in TORCH_TASKS:
            assert task.queue != "gpu", task_id  # CPU work stays off the GPU workers


def test_assets_schedule_and_docs(dag):
    def outlets(task_id):
        return {a.name for a in dag.get_task(task_id).outlets}

    assert outlets("validate_sessions") == {"gru4rec_sessions"}
    assert outlets("evaluate") == {"gru4rec_model"}
    assert outlets("publish") == {"gru4rec_recommendations"}
    assert dag.max_active_runs == 1 and not dag.catchup
    assert "promotion" in dag.doc_md.lower() and "backfill" in dag.doc_md
    # Nightly; the data interval is the 24 hours before the run, so D is the previous day
    # (the end-to-end test checks the dates it processes).
    import attrs

    timetable = attrs.asdict(dag.timetable)
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert timetable["expression"] == "0 3 * * *"
    assert timetable["interval"] == dt.timedelta(days=1)
    assert set(dag.params) == set(PARAMS)
    for name in ("gap_seconds", "lookback_days", "remove_repeats", "max_events_per_user_day",
                 "k", "alpha", "window_days", "driver_memory"):  # fmt: skip
        assert name in dag.params, name
    assert dag.params["gap_seconds"] == 1800 and dag.params["max_events_per_user_day"] == 10_000


def test_score_runs_after_a_skipped_refresh_but_not_after_a_failed_one(dag):
    """refresh_before_scoring off skips the refresh task; scoring still runs then (the
    serving model scores D), but never after a failed refresh or gate."""
    assert dag.get_task("score").trigger_rule == "none_failed"
    assert dag.get_task("refresh").upstream_task_ids == {"evaluate"}


def test_every_task_alerts_people_when_it_fails_for_good(dag):
    from jobs.nightly.alerts import NightAlert

    for task in dag.tasks:
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(isinstance(c, NightAlert) for c in callbacks), task.task_id


def test_an_unscheduled_deployment_processes_the_day_before_the_logical_date(dag, monkeypatch):
    """GRU4REC_SCHEDULE=none (runs triggered through the REST API): no schedule, and D is the
    day before the logical date, the same D a scheduled run of that date processes."""
    import sys
    import types

    module = sys.modules["dags.gru4rec_nightly"]
    monkeypatch.setenv("GRU4REC_RUN_OWNER", "test")  # _night sets it: restored afterwards
    monkeypatch.setenv("GRU4REC_SCHEDULE", "none")
    assert module._schedule() is None
    monkeypatch.setenv("GRU4REC_SCHEDULE", "30 1 * * *")
    assert attrs_of(module._schedule())["expression"] == "30 1 * * *"

    def night(start, end, logical, run_after=None):
        ctx = {"data_interval_start": start, "data_interval_end": end, "logical_date": logical,
               "params": dict(dag.params), "dag": dag, "run_id": "manual__x",
               "dag_run": types.SimpleNamespace(run_after=run_after)}  # fmt: skip
        if logical is None:  # a run triggered with no logical date: none of these keys
            ctx = {k: v for k, v in ctx.items() if k not in ("logical_date", "data_interval_start",
                                                             "data_interval_end")}  # fmt: skip
        return module._night(ctx).day

    at = dt.datetime(2014, 4, 7, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    assert night(at - day, at, at) == "2014-04-06"  # the cron timetable's interval
    assert night(at, at, at) == "2014-04-06"  # no schedule: an interval of no length
    assert night(None, None, at) == "2014-04-06"
    assert night(None, None, None, run_after=at + dt.timedelta(hours=5)) == "2014-04-06"
    monkeypatch.setenv("GRU4REC_SCHEDULE", "")
    with pytest.raises(ValueError):  # an empty value is not "no schedule"
        module._schedule()


def attrs_of(timetable) -> dict:
    import attrs

    return attrs.asdict(timetable)
