"""Running one step of the nightly DAG as a process, and what its exit status means.

Exit status 2 means the data or the configuration is wrong (a failed quality suite, a missing
column, an empty split): `DataFailure`, which the DAG turns into a failure without retries;
anything else (a killed JVM, a lost node, out of memory) is an `InfraFailure`, retried with
backoff. The error line the step logged is the failure's message.

Nothing a step starts outlives its task: the step runs under `jobs.nightly.reaper` as the
leader of its own process group. The group is terminated (SIGTERM, then SIGKILL after
`KILL_GRACE_S`) when the task is interrupted (Airflow's execution timeout, SIGINT or SIGTERM on
"mark failed" or a worker shutdown, any exception) and, by the reaper, when the task's process
dies without cleaning up (SIGKILL): then the reaper's stdin, a pipe from the task, closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from jobs.common.errors import PipelineError
from jobs.common.lake import PROJECT_ROOT

KILL_GRACE_S = 10.0  # between SIGTERM and SIGKILL: Spark and torch shut down cleanly in it

# "2026-01-05 10:00:00,000 ERROR jobs: QualityGateError: ..." (run_main / the gru4rec CLI)
OUR_ERROR = re.compile(r" ERROR (?:jobs|gru4rec)[\w.]*: ")


# Spark's own redaction pattern (spark.redaction.regex) plus a few more credential words.
SECRET_KEY = re.compile(r"(?i)secret|password|passwd|token|credential|access[._-]?key|auth")


def redact(cmd: Sequence[str]) -> list[str]:
    """The command with the value of every secret-looking KEY=VALUE setting hidden."""
    out = []
    for arg in cmd:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}=***" if sep and SECRET_KEY.search(key) else arg)
    return out


class DataFailure(PipelineError):
    """Exit status 2: bad data or configuration. Retrying cannot help (a step that runs
    another step exits 2 in turn)."""


class InfraFailure(Exception):
    """Any other failure of a step: worth retrying."""


def step_env(master: str) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    if master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Same lake, same outputs: MKL (torch's CPU matrix products) may otherwise pick fewer
    # threads on a loaded machine, which changes float sums in the last bits and can swap two
    # near-tied items of a rerun's recommendations.
    env.setdefault("MKL_DYNAMIC", "FALSE")
    env.setdefault("OMP_DYNAMIC", "FALSE")
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env["PYTHONPATH"]) if p)
    return env


def run(cmd: Sequence[str], env: dict | None = None, echo=print) -> str:
    """Run one step; stream its output into the task log; return its stdout.

    Raises DataFailure (exit 2) or InfraFailure (any other non-zero exit), with the step's
    last error lines in the message.
    """
    echo("$ " + " ".join(redact(cmd)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.nightly.reaper", str(KILL_GRACE_S), "--", *cmd],
        stdin=subprocess.PIPE,  # never written: its end-of-file tells the reaper we are gone
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or step_env("local"),
        cwd=PROJECT_ROOT,
        start_new_session=True,  # its own process group, which terminate() ends as a whole
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
    out = []
    with _terminated_on_interrupt(proc):
        t.start()
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
        raise DataFailure(f"{step_name(cmd)}: {reason}")
    raise InfraFailure(f"{step_name(cmd)} exited with {rc}: {reason}")


def step_name(cmd: Sequence[str]) -> str:
    """The step as people call it: the job a spark-submit runs (`build_datasets`), the module
    and subcommand of `python -m` (`gru4rec train`), else the program and its first
    arguments."""
    for arg in cmd:
        if arg.endswith(".py") and "=" not in arg:
            return Path(arg).stem
    if "-m" in cmd[:-1]:
        i = list(cmd).index("-m")
        sub = cmd[i + 2] if len(cmd) > i + 2 and not cmd[i + 2].startswith("-") else ""
        return f"{cmd[i + 1]} {sub}".strip()
    return " ".join([Path(cmd[0]).name, *cmd[1:3]])


def terminate(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """End the step's whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


@contextlib.contextmanager
def _terminated_on_interrupt(proc: subprocess.Popen):
    """While the step runs: on SIGTERM (the previous handler, e.g. Airflow's, runs after) or
    any exception (a timeout, KeyboardInterrupt on SIGINT) its process group is terminated."""
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if installed else None

    def on_term(signum, frame):
        terminate(proc)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default (or a handler set from C): exit
            raise SystemExit(128 + signum)

    if installed:
        signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except BaseException:
        terminate(proc)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if proc.stdin:
            proc.stdin.close()


def last_json(stdout: str) -> dict:
    """The JSON object a CLI printed last."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{") :])
