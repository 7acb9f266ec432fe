"""A real deployment, started here (jobs/dev/stack.py): PostgreSQL as Airflow's metadata DB,
Redis as the Celery broker, the scheduler, dag-processor and API server, two Celery workers
(queue `default`, queue `gpu`) and a Spark standalone cluster as the DAG's `spark_master`.

A night of `gru4rec_nightly` on a real sample (RSC15 clicks, one delivery a day) is triggered
through the authenticated REST API and polled to success. The API's task instances say where
each task ran; the Spark applications are read from the cluster's master; the published
recommendations are read back by an independent reader (DuckDB). Then a headless Chromium
(no network but loopback) logs into the UI and screenshots the DAG's grid
(`var/test-artifacts/airflow_grid.png`). At the end everything started is stopped by process
id, and no secret appears on a command line or in a log.
"""

from __future__ import annotations

import re
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from jobs.common.lake import Lake
from jobs.dev.stack import Stack, StackError, _start_time
from tests.dags.test_nightly_e2e import CONF, D1, _deliveries
from tests.webdriver import Browser

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.deploy]

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
DAG = "gru4rec_nightly"
RUN = "deploy-2014-04-07"
SPARK_TASKS = {"ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
               "popularity", "validate_datasets"}  # fmt: skip
GPU_TASKS = {"train", "evaluate", "refresh", "score"}
# the night's settings; the driver's heap is set by the run and must reach each driver JVM
RUN_CONF = {**CONF, "driver_memory": "1536m"}


def _poll(stack: Stack, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stack.rest("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN}")
        if run["state"] in ("success", "failed"):
            return run
        dead = [s.name for s in stack.services if not s.alive()]
        if dead:
            raise StackError(f"{dead} exited during the run")
        time.sleep(5)
    raise TimeoutError(f"{RUN} still {run['state']} after {timeout:.0f} s")


def _task_log(stack: Stack, task_id: str) -> str:
    logs = stack.home / "logs" / f"dag_id={DAG}" / f"run_id={RUN}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("attempt=*.log")))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("deploy")
    lake = root / "lake"
    _deliveries(shared_data, lake / "raw")
    stack = Stack(root / "stack", lake)
    t0 = time.monotonic()
    stack.start()
    state = {"stack": stack, "lake": lake, "started_s": time.monotonic() - t0}
    try:
        token = stack.token()
        # nothing without a token, and a wrong password gets none
        with pytest.raises(StackError, match="HTTP 401"):
            stack.rest("GET", f"/api/v2/dags/{DAG}", token=None)
        with pytest.raises(StackError, match="HTTP 401"):
            stack.token(password="not-the-password")
        stack.rest("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False}, token=token)
        t1 = time.monotonic()
        created = stack.rest(
            "POST",
            f"/api/v2/dags/{DAG}/dagRuns",
            {"dag_run_id": RUN, "logical_date": "2014-04-07T00:00:00Z", "conf": RUN_CONF},
            token=token,
        )
        state["created"] = created
        state["run"] = _poll(stack, 900)
        state["night_s"] = time.monotonic() - t1
        tis = stack.rest("GET", f"/api/v2/dags/{DAG}/dagRuns/{RUN}/taskInstances")
        state["tis"] = {t["task_id"]: t for t in tis["task_instances"]}
        state["spark"] = stack.spark_state()
        print(f"deployment: started in {state['started_s']:.0f} s, night in "
              f"{state['night_s']:.0f} s")  # fmt: skip
        yield state
    finally:
        stack.stop()


def _check_success(d: dict) -> None:
    failed = {
        k: t["state"] for k, t in d["tis"].items() if t["state"] not in ("success", "skipped")
    }
    tails = {k: _task_log(d["stack"], k)[-3000:] for k in failed}
    assert d["run"]["state"] == "success", (failed, tails)


def test_a_night_triggered_through_the_rest_api_succeeds(deployment):
    _check_success(deployment)
    created = deployment["created"]
    assert created["run_type"] == "manual" and created["conf"] == RUN_CONF
    tis = deployment["tis"]
    assert {k for k, t in tis.items() if t["state"] == "success"} >= (
        SPARK_TASKS | {"train", "evaluate", "score", "publish", "validate_recommendations"}
    )
    assert tis["refresh"]["state"] == "skipped"  # refresh_before_scoring off in RUN_CONF


def test_torch_tasks_ran_on_the_gpu_queue_worker_and_spark_tasks_on_the_other(deployment):
    _check_success(deployment)
    tis = deployment["tis"]
    for task_id in GPU_TASKS - {"refresh"}:
        assert (tis[task_id]["queue"], tis[task_id]["hostname"]) == ("gpu", "worker-gpu"), task_id
        assert tis[task_id]["pool"] == "gpu"
    for task_id in SPARK_TASKS:
        assert (tis[task_id]["queue"], tis[task_id]["hostname"]) == (
            "default",
            "worker-default",
        ), task_id
        assert tis[task_id]["pool"] == "spark"


def test_spark_tasks_ran_on_the_standalone_cluster_with_the_runs_driver_heap(deployment):
    _check_success(deployment)
    stack = deployment["stack"]
    apps = sorted(a["name"] for a in deployment["spark"]["completedapps"])
    # each Spark stage is an application on the cluster; the gates reused the verdicts their
    # producing jobs computed in-application, and popularity reused build_datasets' tables
    assert apps == ["build_datasets", "ingest", "sessionize"], apps
    assert all(a["state"] == "FINISHED" for a in deployment["spark"]["completedapps"])
    for task_id in ("ingest", "sessionize", "build_datasets"):
        log = _task_log(stack, task_id)
        assert f"--master {stack.spark_master}" in log, task_id
        heap = re.search(r"spark\.driver\.memory=1536m, driver JVM max heap (\d+) MiB", log)
        assert heap and int(heap.group(1)) > 1100, (task_id, log[-2000:])  # not the 1 GiB default


def test_recommendations_read_back_by_an_independent_reader(deployment):
    _check_success(deployment)
    lake = Lake(str(deployment["lake"]))
    part = lake.recommendations_day(D1)
    got = duckdb.sql(
        f"select count(*), count(distinct session_id), min(rank), max(rank) "
        f"from read_parquet('{part}/*.parquet')"
    ).fetchall()[0]
    sessions = pd.read_parquet(lake.sessions_day(D1))["session_id"].nunique()
    assert got == (20 * sessions, sessions, 1, 20)
    assert sessions > 100


def test_the_ui_shows_the_runs_success_in_a_real_browser(deployment, tmp_path):
    _check_success(deployment)
    stack = deployment["stack"]
    with Browser(tmp_path / "browser") as b:
        b.get(f"{stack.api_url}/dags/{DAG}")
        b.wait("return document.querySelector('input[type=password]')", what="the login form")
        assert "/auth/login" in b.url  # not in without logging in
        b.type(b.find("input[name=username]"), "admin")
        b.type(b.find("input[type=password]"), stack.admin_password)
        b.click(b.find("button[type=submit]"))
        cells = b.wait(
            "const c = document.querySelectorAll(`[data-testid^='grid-${arguments[0]}-']`);"
            "return c.length == arguments[1] && Array.from(c, x => x.dataset.testid);",
            60,
            "the grid's task cells",
            RUN,
            len(deployment["tis"]),
        )
        assert sorted(c.removeprefix(f"grid-{RUN}-") for c in cells) == sorted(deployment["tis"])
        # the run's state badge says success
        badge = "[data-testid='state-badge'][aria-label='success']"
        b.wait(f'return document.querySelector("{badge}")', 30, "the run's success badge")
        time.sleep(1)  # let the charts settle for the picture
        shot = b.screenshot(ARTIFACTS / "airflow_grid.png")
        # every cell's badge: success cells share the success colour (green) and check mark
        colours = b.js(
            "return Object.fromEntries(Array.from("
            "  document.querySelectorAll(`[data-testid^='grid-${arguments[0]}-']`), a => {"
            "    const s = a.querySelector('[data-testid=task-state-badge]');"
            "    return [a.dataset.testid.slice(arguments[0].length + 6),"
            "            [getComputedStyle(s).backgroundColor, s.innerHTML]]; }));",
            RUN,
        )
        by_state: dict[str, set] = {}
        for task_id, (colour, svg) in colours.items():
            by_state.setdefault(deployment["tis"][task_id]["state"], set()).add(colour)
            if deployment["tis"][task_id]["state"] == "success":
                assert "M20 6 9 17l-5-5" in svg, task_id  # the check mark
        assert len(by_state["success"]) == 1, by_state
        r, g, bl = map(int, re.findall(r"\d+", next(iter(by_state["success"])))[:3])
        assert g > r and g > bl, by_state  # green
        assert by_state["success"] != by_state.get("skipped"), by_state
        # the run's own page: its badge, and each task instance's row with its state
        b.get(f"{stack.api_url}/dags/{DAG}/runs/{RUN}")
        rows = b.wait(
            "const r = Array.from(document.querySelectorAll('tbody tr'),"
            "  x => Array.from(x.cells, c => c.innerText.trim()));"
            "return r.length == arguments[0] && r;",
            60,
            "the run page's task instance table",
            len(deployment["tis"]),
        )
        b.screenshot(ARTIFACTS / "airflow_run.png")
        header = b.js("return document.querySelector('[data-testid=state-badge]').innerText")
        assert header.strip() == "Success", header
        shown = {r[1]: r[3] for r in rows}
        assert shown == {k: t["state"].capitalize() for k, t in deployment["tis"].items()}
    assert shot.stat().st_size > 10_000


def test_everything_started_is_stopped_by_process_id_and_no_secret_leaked(deployment):
    stack = deployment["stack"]
    started = [(s.name, s.pid, s.started) for s in stack.services]
    assert {n for n, _, _ in started} >= {
        "postgres", "redis", "spark-master", "spark-worker", "api-server", "scheduler",
        "dag-processor", "worker-default", "worker-gpu",
    }  # fmt: skip
    secrets = [s.encode() for s in stack.secret_values()]
    # no secret on the command line of any process of the stack's sessions (the servers,
    # what they started: Celery's pool, Spark's executors, task runners)
    members = {pid: _start_time(pid) for s in stack.services for pid in s.members()}
    assert len(members) > len(started)  # the servers' own children are among them
    leaks = []
    for pid in members:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        leaks += [(pid, cmdline[:200]) for s in secrets if s in cmdline]
    assert not leaks, leaks
    pg_dir = stack._pg_dir
    killed = stack.stop()
    assert pg_dir is not None and not pg_dir.exists()  # the database's private folder
    assert not killed, f"had to be killed: {killed}"
    for name, pid, start in started:
        assert _start_time(pid) != start, f"{name} (pid {pid}) is still running"
    outlived = [pid for pid, start in members.items() if _start_time(pid) == start]
    assert not outlived, f"processes of the stack outlived it: {outlived}"
    # no secret in any file the stack or the night wrote (logs, Spark's executor output, the
    # lake's reports), but the two private files that hold them on purpose
    holders = {stack.root / "redis" / "redis.conf", stack.home / "passwords.json"}
    for path in holders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [*stack.root.rglob("*"), *deployment["lake"].rglob("*")]:
        if path.is_file() and path not in holders and path.stat().st_size < 50_000_000:
            data = path.read_bytes()
            assert not [s for s in secrets if s in data], path
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{stack.api_url}/api/v2/monitor/health", timeout=3)
