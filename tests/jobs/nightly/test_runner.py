"""The step runner: exit statuses become DataFailure / InfraFailure, and nothing a step starts
outlives its task, whether the task is killed with SIGKILL, stopped with SIGTERM ("mark
failed", a worker shutdown) or interrupted by its execution timeout. Real processes, real
signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.nightly import runner

ROOT = Path(__file__).resolve().parents[3]

# A step that starts a grandchild (as spark-submit starts a JVM and the JVM a Python driver),
# records both pids, then works for a long time.
STEP = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
print("ready", flush=True)
time.sleep(300)
"""

# The task: runs the step through the runner. `term`: an Airflow-like SIGTERM handler that
# only records the signal (as the task runner's, which calls on_kill and returns); `timeout`:
# an alarm that raises in the middle of the step, as Airflow's execution_timeout does.
TASK = """
import signal, sys
from jobs.nightly import runner
mode, pids = sys.argv[1], sys.argv[2]
if mode == "term":
    signal.signal(signal.SIGTERM, lambda *_: print("task: on_kill", flush=True))
if mode == "timeout":
    def expire(*_):
        raise TimeoutError("execution_timeout")
    signal.signal(signal.SIGALRM, expire)
try:
    runner.run([sys.executable, "-c", sys.argv[3], pids],
               echo=lambda line: print(line, flush=True))
except Exception as exc:
    print(f"task: {type(exc).__name__}: {exc}", flush=True)
    sys.exit(1)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def start_task(tmp_path, mode: str) -> tuple[subprocess.Popen, list[int]]:
    pids = tmp_path / "pids"
    task = subprocess.Popen(
        [sys.executable, "-c", TASK, mode, str(pids), STEP],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for line in task.stdout:
        if line.strip() == "ready":
            break
    step_pids = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in step_pids)
    return task, step_pids


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture
def cleanup_pids():
    started: list[int] = []
    yield started
    for p in started:  # never leave a sleeper behind, even when a test fails
        if alive(p):
            os.kill(p, signal.SIGKILL)


def test_a_task_killed_with_sigkill_takes_its_step_processes_with_it(tmp_path, cleanup_pids):
    task, step = start_task(tmp_path, "plain")
    cleanup_pids += step
    task.kill()  # SIGKILL: no handler, no finally, nothing in the task runs
    task.wait(timeout=10)
    assert wait_gone(step) == []


def test_a_task_stopped_with_sigterm_terminates_the_step_and_fails(tmp_path, cleanup_pids):
    task, step = start_task(tmp_path, "term")
    cleanup_pids += step
    task.send_signal(signal.SIGTERM)
    rest = task.communicate(timeout=60)[0]
    assert wait_gone(step) == []
    assert "task: on_kill" in rest  # the task's own handler still ran after ours
    assert "task: InfraFailure" in rest and task.returncode == 1


def test_a_task_timeout_terminates_the_step_and_raises_the_timeout(tmp_path, cleanup_pids):
    pids = tmp_path / "pids"
    task = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import signal; signal.alarm(3)\n{TASK}",
            "timeout",
            str(pids),
            STEP,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out = task.communicate(timeout=60)[0]
    step = [int(p) for p in pids.read_text().split()]
    cleanup_pids += step
    assert "task: TimeoutError: execution_timeout" in out
    assert wait_gone(step) == []


def test_exit_statuses_map_to_data_and_infra_failures():
    quiet = {"echo": lambda line: None}
    assert runner.run(["bash", "-c", "echo out; echo err >&2"], **quiet) == "out\n"
    with pytest.raises(runner.DataFailure, match="bash -c .*: QualityGateError: bad day"):
        runner.run(
            ["bash", "-c", "echo '2026 ERROR jobs: QualityGateError: bad day' >&2; exit 2"], **quiet
        )
    with pytest.raises(runner.InfraFailure, match="exited with 137"):
        runner.run(["bash", "-c", "kill -9 $$"], **quiet)


def test_a_failure_names_the_step_as_people_call_it():
    assert (
        runner.step_name(
            [
                "/x/spark-submit",
                "--master",
                "local[*]",
                "--conf",
                "a=b.py",
                "/repo/jobs/build_datasets.py",
                "--date",
                "D",
            ]
        )
        == "build_datasets"
    )
    assert runner.step_name(["/v/python", "-m", "gru4rec", "train", "--train", "t"]) == (
        "gru4rec train"
    )
    assert runner.step_name(["/v/python", "-m", "jobs.validate", "--lake", "L"]) == (
        "jobs.validate"
    )
    assert runner.step_name(["bash", "-c", "exit 2"]) == "bash -c exit 2"
