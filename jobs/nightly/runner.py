"""Running one step of the nightly DAG as a process, and what its exit status means.

Exit status 2 means the data or the configuration is wrong (a failed quality suite, a missing
column, an empty split): `DataFailure`, which the DAG turns into a failure without retries;
anything else (a killed JVM, a lost node, out of memory) is an `InfraFailure`, retried with
backoff. The error line the step logged is the failure's message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from jobs.common.errors import PipelineError
from jobs.common.lake import PROJECT_ROOT

# "2026-01-05 10:00:00,000 ERROR jobs: QualityGateError: ..." (run_main / the gru4rec CLI)
OUR_ERROR = re.compile(r" ERROR (?:jobs|gru4rec)[\w.]*: ")


class DataFailure(PipelineError):
    """Exit status 2: bad data or configuration. Retrying cannot help (a step that runs
    another step exits 2 in turn)."""


class InfraFailure(Exception):
    """Any other failure of a step: worth retrying."""


def step_env(master: str) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    if master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env["PYTHONPATH"]) if p)
    return env


def run(cmd: Sequence[str], env: dict | None = None, echo=print) -> str:
    """Run one step; stream its output into the task log; return its stdout.

    Raises DataFailure (exit 2) or InfraFailure (any other non-zero exit), with the step's
    last error lines in the message.
    """
    echo("$ " + " ".join(cmd))
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or step_env("local"),
        cwd=PROJECT_ROOT,
    )
    tail: deque[str] = deque(maxlen=40)
    ours: list[str] = []  # error lines of this project's loggers (Spark logs a lot after them)

    def pump_err() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if OUR_ERROR.search(line):
                ours.append(line)
            echo(line)

    t = threading.Thread(target=pump_err, daemon=True)
    t.start()
    out = []
    for line in proc.stdout:  # spark-submit forwards the Python driver's stderr here
        out.append(line)
        if OUR_ERROR.search(line):
            ours.append(line.rstrip("\n"))
        echo(line.rstrip("\n"))
    rc = proc.wait()
    t.join()
    if rc == 0:
        return "".join(out)
    others = [ln for ln in tail if " ERROR " in ln or "Error" in ln or "error:" in ln]
    reason = (ours or others or list(tail)[-3:] or ["no output"])[-1]
    # The one-line message after "ERROR <logger>: " is what people need to read.
    reason = OUR_ERROR.split(reason, maxsplit=1)[-1] if OUR_ERROR.search(reason) else reason
    if rc == 2:
        raise DataFailure(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}: {reason}")
    raise InfraFailure(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited with {rc}: {reason}")


def last_json(stdout: str) -> dict:
    """The JSON object a CLI printed last."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{") :])
