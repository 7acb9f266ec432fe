"""One writer per date: a lease on date D that every job writing D's outputs holds.

The lease is a small JSON file, `<lake>/_locks/dt=D.json` (owner, since, heartbeat),
read and changed only under an exclusive `flock` of `dt=D.lock` beside it, so two processes
never both take it. Its owner is the nightly DAG run (`GRU4REC_RUN_OWNER`, set by the DAG for
its steps: the lease spans the whole run, from its first task to its teardown) or, for a job
started by hand, `cli:<host>:<pid>` (held for that job only).

- A job of another owner is refused while the lease is live, with a message naming the holder:
  `DateBusy`, exit status 75 (temporary failure), which the DAG retries with backoff.
- Stale-lock recovery: a hand-started job's lease whose process is gone (same host) is taken
  over at once; any lease whose heartbeat is older than `GRU4REC_LOCK_STALE_MINUTES`
  (default 60; heartbeats come every minute while a step runs and whenever a task of the run
  starts) belongs to a run that died; the next writer takes it over and logs that it did.

Locks need a POSIX file system shared by every writer: the lake's own `_locks/` when the lake
is a local path, else `GRU4REC_LOCK_DIR` (which also overrides it; default
`<project>/var/locks`). `flock` on NFS needs a lock manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from jobs.common.errors import PipelineError
from jobs.common.lake import PROJECT_ROOT, Lake, dt_partition
from jobs.common.localfs import write_json_atomic

log = logging.getLogger("jobs.locks")

OWNER_ENV = "GRU4REC_RUN_OWNER"
LOCK_DIR_ENV = "GRU4REC_LOCK_DIR"
STALE_ENV = "GRU4REC_LOCK_STALE_MINUTES"
HEARTBEAT_S = 60.0
BUSY_EXIT = 75  # EX_TEMPFAIL: the date is busy now; retrying later can succeed


class DateBusy(PipelineError):
    """Another run or job holds the date's lease."""

    exit_code = BUSY_EXIT


def stale_seconds() -> float:
    raw = os.environ.get(STALE_ENV) or "60"
    try:
        minutes = float(raw)
    except ValueError:
        raise PipelineError(f"{STALE_ENV}: expected minutes as a number, found {raw!r}") from None
    return minutes * 60.0


def lock_root(lake: Lake) -> Path:
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    if "://" in lake.root:
        return PROJECT_ROOT / "var" / "locks"
    return Path(lake.root) / "_locks"


def default_owner() -> str:
    return os.environ.get(OWNER_ENV) or f"cli:{socket.gethostname()}:{os.getpid()}"


class DateLease:
    """The lease of one date in one lake."""

    def __init__(self, lake: Lake, day) -> None:
        root = lock_root(lake)
        self.day = str(day)
        self.path = root / f"{dt_partition(day)}.json"
        self._lock = root / f"{dt_partition(day)}.lock"

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released on close, or when the process dies
            yield

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self, owner: str, stale_s: float | None = None) -> bool:
        """Take (or refresh) the lease for `owner`; True if it was newly taken. Raises
        DateBusy when another owner's lease is live."""
        stale_s = stale_seconds() if stale_s is None else stale_s
        now = time.time()
        with self._exclusive():
            held = self.holder()
            if held and held.get("owner") != owner:
                idle = now - float(held.get("heartbeat", 0))
                if idle < stale_s and not _dead_local_job(held.get("owner", "")):
                    raise DateBusy(
                        f"date {self.day} is being written by {held['owner']} (since "
                        f"{_utc(held.get('since'))}, last active {idle:.0f} s ago): one writer "
                        f"per date; this one ({owner}) stops and can be retried once it is done"
                    )
                log.warning(
                    "taking over the stale lease of %s from %s (idle %.0f s > %.0f s)",
                    self.day, held["owner"], idle, stale_s,
                )  # fmt: skip
                held = None
            new = held is None
            lease = {
                "date": self.day,
                "owner": owner,
                "since": now if new else held.get("since", now),
                "heartbeat": now,
            }
            write_json_atomic(self.path, lease)
            return new

    def release(self, owner: str) -> bool:
        """Give the lease up if `owner` holds it; True if it did."""
        with self._exclusive():
            held = self.holder()
            if not held or held.get("owner") != owner:
                return False
            self.path.unlink(missing_ok=True)
            return True


def _dead_local_job(owner: str) -> bool:
    """A job started by hand on this host whose process is gone (killed, out of memory)."""
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind != "cli" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _utc(ts) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))


@contextlib.contextmanager
def hold_dates(
    lake: Lake, days, owner: str | None = None, keep: bool | None = None
) -> Iterator[None]:
    """`hold_date` for each of `days` (in date order, so two holders never deadlock)."""
    with contextlib.ExitStack() as stack:
        for d in sorted({str(d) for d in days}):
            stack.enter_context(hold_date(lake, d, owner, keep))
        yield


@contextlib.contextmanager
def hold_date(
    lake: Lake, day, owner: str | None = None, keep: bool | None = None
) -> Iterator[DateLease]:
    """Hold D's lease while the block runs, with a heartbeat. A lease owned by a DAG run
    (`GRU4REC_RUN_OWNER`) outlives the block: the run's teardown releases it. `keep=False`
    (for the earlier days a night catches up, which no teardown knows): the lease is released
    when the block ends, if the block took it (a lease the owner already held stays)."""
    owner = owner or default_owner()
    lease = DateLease(lake, day)
    taken = lease.acquire(owner)
    keep = bool(os.environ.get(OWNER_ENV)) if keep is None else (keep or not taken)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                lease.acquire(owner)

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield lease
    finally:
        stop.set()
        t.join()  # a beat in flight must not re-create the lease after the release
        if not keep:
            lease.release(owner)
