"""The embedded default: a SQLite-backed Airflow home with this project's DAG, local Spark,
CPU or GPU torch, local files. Used by the demo and by the end-to-end tests; the same commands
work by hand (see README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.common.lake import PROJECT_ROOT

DAG_ID = "gru4rec_nightly"
POOLS = {"spark": (1, "one Spark application at a time"), "gpu": (1, "one torch process")}


def airflow_env(home: str | Path, lake: str | Path, extra: dict | None = None) -> dict:
    """Environment for the airflow CLI: its home, this project's dags/, our lake."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(Path(home).resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GRU4REC_LAKE": str(Path(lake).resolve()),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    env.update(extra or {})
    return env


def quick_jvm() -> dict:
    """Deployment settings for small inputs: the driver JVM's quick (C1-only) JIT suits short
    Spark applications. A JVM option is the deployment's to set (GRU4REC_SPARK_CONF), never a
    run's."""
    return {
        "GRU4REC_SPARK_CONF": json.dumps(
            {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}
        )
    }


def airflow(
    args: list[str], env: dict, log=None, check: bool = True
) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    out = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"$ airflow {' '.join(args)}\n{out.stdout}\n")
    if check and out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-30:])
        raise RuntimeError(f"airflow {' '.join(args)} exited with {out.returncode}:\n{tail}")
    return out


def prepare(env: dict, log=None) -> None:
    """Metadata DB (SQLite under AIRFLOW_HOME), pools, and the DAG serialized into it."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(["db", "migrate"], env, log)
    for name, (slots, description) in POOLS.items():
        airflow(["pools", "set", name, str(slots), description], env, log)
    airflow(["dags", "reserialize"], env, log)


def dags_test(env: dict, logical_date: str, conf: dict | None = None, log=None):
    """`airflow dags test` of the nightly DAG for one logical date (processing the day before).
    Returns the completed process (returncode 0 when the run succeeded)."""
    args = ["dags", "test", DAG_ID, logical_date]
    if conf:
        args += ["-c", json.dumps(conf)]
    return airflow(args, env, log, check=False)
