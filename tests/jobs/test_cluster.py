"""The jobs run unchanged through spark-submit on a real standalone cluster (master + worker on
127.0.0.1): nothing is tied to local mode. Outputs are read back with pyarrow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from tests.jobs.reference import sessionize_pd

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_worker(ui_port: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
                state = json.load(r)
            if state.get("aliveworkers", 0) >= 1:
                return state
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError("the standalone worker did not register with the master")


@pytest.fixture
def cluster(tmp_path):
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    port, ui, wui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    cls = str(home / "bin" / "spark-class")
    logs = open(tmp_path / "cluster.log", "w")  # noqa: SIM115 - closed in the teardown
    procs = [
        subprocess.Popen(
            [
                cls,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    cls,
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "2",
                    "--memory",
                    "2g",
                    "--webui-port",
                    str(wui),
                    url,
                ],
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait_for_worker(ui)
        yield {"url": url, "ui": ui, "env": env, "home": home}
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        logs.close()
    assert all(p.poll() is not None for p in procs)  # both processes we started are gone


def test_each_job_through_spark_submit_on_a_standalone_cluster(
    cluster, shared_data, tmp_path, monkeypatch
):
    """The commands come from jobs.nightly.commands, as the DAG's Spark tasks build them,
    pointed at the cluster by params only; the DAG's datasets quality gate (GX on Spark) runs
    there too, and every driver gets the heap the params asked for."""
    from jobs.common.lake import Lake
    from jobs.dev.embedded import quick_jvm
    from jobs.nightly import commands
    from jobs.nightly.params import Night
    from jobs.nightly.runner import run

    lake = tmp_path / "lake"
    src = shared_data / "taobao_sample" / "UserBehavior.csv"
    monkeypatch.setenv("SPARK_SUBMIT", str(cluster["home"] / "bin" / "spark-submit"))
    # the master, the driver's address and JVM options are the deployment's (run conf cannot
    # set them): the embedded default's for short applications, for executors too
    monkeypatch.setenv("GRU4REC_SPARK_MASTER", cluster["url"])
    deployment = json.loads(quick_jvm()["GRU4REC_SPARK_CONF"])
    deployment["spark.driver.host"] = "127.0.0.1"
    deployment["spark.executor.extraJavaOptions"] = "-XX:TieredStopAtLevel=1"
    monkeypatch.setenv("GRU4REC_SPARK_CONF", json.dumps(deployment))
    night = Night.from_params(
        {
            "lake": str(lake),
            "driver_memory": "1536m",
            "window_days": 9,
            # 815 users' histories over 55k items: on the test day only ~5% of the events
            # are items train has seen (at full scale far more); relax that gate here.
            "quality_thresholds": {"min_test_coverage": 0.01},
            "spark_conf": {"spark.executor.memory": "1g", "spark.sql.shuffle.partitions": "4"},
        },
        "2017-12-03",
    )
    env = cluster["env"]
    week = ["--date", "2017-11-25", "--until", "2017-12-03"]
    steps = [
        ("ingest", commands.spark_submit(night, "ingest", "--input", str(src), "--preset",
                                         "taobao")),
        ("sessionize", commands.spark_submit(night, "sessionize", *week)),
        ("build_datasets", commands.build_datasets(night)),  # and popularity, same application
        ("validate_datasets", commands.validate(night, "datasets")),
    ]  # fmt: skip
    lines: list[str] = []
    for name, cmd in steps:
        assert cmd[:3] == [os.environ["SPARK_SUBMIT"], "--master", cluster["url"]], name
        run(cmd, env, echo=lines.append)
    heaps = [ln for ln in lines if "spark.driver.memory=1536m, driver JVM max heap" in ln]
    assert len(heaps) == len(steps), lines[-20:]  # every driver, not the 1 GiB default
    assert all(int(ln.split("max heap ")[1].split()[0]) > 1100 for ln in heaps), heaps

    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['ui']}/json/", timeout=5) as r:
        apps = json.load(r)["completedapps"]
    # Each job really ran as an application on this cluster.
    assert sorted(a["name"] for a in apps) == sorted(name for name, _ in steps)
    for suite in ("datasets", "item_index"):
        res = json.loads(Path(Lake(str(lake)).suite_result("2017-12-03", suite)).read_text())
        assert res["success"], (suite, res["failed"])

    cols = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    raw = pd.read_csv(src, header=None, names=cols, dtype=str)
    ts = raw.timestamp.astype(np.int64)
    keep = (raw.behavior_type == "pv") & (ts >= 1511568000) & (ts < 1512345600)
    ev = pd.DataFrame({"user_id": raw.user_id, "item_id": raw.item_id, "ts_us": ts * 1_000_000})[
        keep
    ].drop_duplicates()
    events = ds.dataset(lake / "events", format="parquet", partitioning="hive").to_table()
    sessions = ds.dataset(lake / "sessions", format="parquet", partitioning="hive").to_table()
    assert events.num_rows == len(ev)
    ref = sessionize_pd(ev)
    assert sessions.num_rows == len(ref)
    assert (
        len(set(sessions.column("session_id").to_pylist()))
        == ref.groupby(["user_id", "start_us"]).ngroups
    )
    items = ds.dataset(lake / "datasets" / "run=2017-12-03" / "items", format="parquet")
    assert items.count_rows() > 0
    assert commands.popularity_reused(night)  # built by build_datasets: the task has no work
