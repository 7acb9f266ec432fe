"""Run one step so that nothing it starts outlives its task: `python -m jobs.nightly.reaper
GRACE -- CMD...`.

The step runner starts this as the leader of a new process group (its own session) and keeps
the write end of its stdin. The reaper runs CMD as its child in the same group and passes on
its exit status. The whole group (spark-submit's JVM, its Python driver and workers, the torch
process and anything they start) is terminated, SIGTERM first and SIGKILL after GRACE
seconds, when:
- the runner terminates the group (task timeout, "mark failed", an exception in the task), or
- the runner goes away without a word, even killed with SIGKILL: its end of the pipe closes
  and the reaper sees end-of-file on stdin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def terminate_group(pgid: int, proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM to the group, then SIGKILL to whatever is left after `grace` seconds (or as
    soon as `proc`, the group's main process, has exited)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while proc is not None and _alive(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m jobs.nightly.reaper GRACE -- CMD...", file=sys.stderr)
        return 2
    grace, cmd = float(argv[0]), argv[2:]
    pgid = os.getpgrp()
    stop = threading.Event()  # set by the watcher thread
    signalled = []  # set by the signal handlers: a plain list, no lock a handler could block on

    # The handlers only raise the flag: the main loop does the terminating (and the reaper
    # ignores the group-wide SIGTERM it sends itself).
    signal.signal(signal.SIGTERM, lambda *_: signalled.append(1))
    signal.signal(signal.SIGINT, lambda *_: signalled.append(1))
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def watch_parent() -> None:
        try:  # the raw descriptor: a buffered read would block the interpreter's exit
            while os.read(0, 4096):
                pass  # end-of-file: the runner is gone
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    while _alive(child) and not signalled and not stop.is_set():
        time.sleep(0.1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _alive(child):
        terminate_group(pgid, child, grace)  # ends with SIGKILL, the reaper included
    else:  # the step is done: anything it left behind in the group goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    rc = child.wait()
    return 128 - rc if rc < 0 else rc  # killed by signal N: 128 + N, as a shell reports it


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without waiting for the watcher thread, blocked reading stdin
