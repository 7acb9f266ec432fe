"""What a suite's verdict was computed from, so a gate can reuse a verdict instead of judging
the same data again.

The producing Spark job (ingest, sessionize, and build_datasets after the popularity table)
runs its gate's validation in its own Spark application right after it publishes; every
result records the `data_version` of what it judged: each file the suite reads (size and
modification time, in nanoseconds), the thresholds and the suites' code. The gate task then
reuses the stored verdict without starting a JVM when the version is still the same, and
validates again otherwise (data rewritten since, other thresholds, a new suite, a result from
before versions existed).

Only a local (or mounted) lake has versions: on a Hadoop URI every gate validates again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import Lake

# The suites each gate's dataset writes (a `datasets` gate judges the splits and the index).
SUITES = {
    C.SUITE_RAW_EVENTS: (C.SUITE_RAW_EVENTS,),
    C.SUITE_SESSIONS: (C.SUITE_SESSIONS,),
    C.SUITE_DATASETS: (C.SUITE_DATASETS, C.SUITE_ITEM_INDEX),
}

# The code that defines a verdict: a changed suite, derived column, validator, store or
# contract is a new verdict, and so are other Great Expectations and pyspark versions.
_HERE = Path(__file__).resolve().parent
_CODE = (
    *(_HERE / n for n in ("suites.py", "spark_frames.py", "store.py", "versions.py")),
    _HERE.parent / "validate.py",
    _HERE.parent / "common" / "contracts.py",
)
_LIBRARIES = ("great_expectations", "pyspark")


def _code_version() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = [hashlib.sha256(p.read_bytes()).hexdigest() for p in _CODE]
    for lib in _LIBRARIES:
        try:
            out.append(f"{lib}=={version(lib)}")
        except PackageNotFoundError:
            out.append(f"{lib} not installed")
    return out


def suite_inputs(lake: Lake, dataset: str, day: dt.date) -> list[str]:
    """Every path the suite(s) of `dataset` read for `day` (jobs/quality/spark_frames.py)."""
    before = day - dt.timedelta(days=1)
    if dataset == C.SUITE_RAW_EVENTS:
        return [lake.events_day(day), lake.quarantine_day(day), lake.events_day(before)]
    if dataset == C.SUITE_SESSIONS:
        return [
            lake.sessions_day(day),
            Lake.summary(lake.sessions, day),
            lake.events_day(day),
            lake.sessions_day(before),
        ]
    if dataset == C.SUITE_DATASETS:
        paths = [lake.datasets_run(day), lake.datasets_summary(day), lake.popularity_summary(day)]
        try:  # the test window's sessions (its coverage expectation)
            summary = json.loads(Path(lake.datasets_summary(day)).read_text())
            test_days = int(summary["config"]["test_days"])
        except (OSError, ValueError, KeyError, TypeError):
            test_days = 0  # no summary: the suite fails on that, and the version says so
        paths += [lake.sessions_day(day - dt.timedelta(days=i)) for i in range(test_days)]
        return paths
    raise ValueError(f"dataset: expected one of {sorted(SUITES)}, found {dataset!r}")


def _files(path: str) -> list:
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [path, st.st_size, st.st_mtime_ns]
    if not p.is_dir():
        return [path, "absent"]
    entries = [path]

    def unreadable(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(p, onerror=unreadable, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            entries.append([os.path.relpath(full, p), st.st_size, st.st_mtime_ns])
    return entries


def data_version(lake: Lake, dataset: str, day: dt.date, thresholds: dict) -> str | None:
    """A digest of what `dataset`'s verdict for `day` depends on; None on a non-local lake or
    when an input cannot be read now (e.g. a day being republished): never reused then."""
    if not lake.is_local:
        return None
    try:
        state = {
            "dataset": dataset,
            "day": str(day),
            "thresholds": thresholds,
            "code": _code_version(),
            "inputs": [_files(p) for p in suite_inputs(lake, dataset, day)],
        }
    except OSError:
        return None
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def popularity_input_version(lake: Lake, day: dt.date, alpha: float) -> str | None:
    """A digest of what `items/` and `popularity/` of `day` are computed from: the train
    split's files, alpha and the code (jobs/popularity.py, jobs/build_datasets.py); None on a
    non-local lake or an unreadable split."""
    if not lake.is_local:
        return None
    code = [_HERE.parent / "popularity.py", _HERE.parent / "build_datasets.py"]
    try:
        state = {
            "day": str(day),
            "alpha": float(alpha),
            "code": [hashlib.sha256(p.read_bytes()).hexdigest() for p in code],
            "train": _files(lake.split(day, "train")),
        }
    except OSError:
        return None
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def popularity_reusable(lake: Lake, day: dt.date, alpha: float) -> bool:
    """Whether `items/` and `popularity/` of `day` were built (by build_datasets'
    `--then-popularity`, or an earlier run) from exactly the train split there now with this
    alpha: then the popularity task has nothing to do and starts no JVM."""
    version = popularity_input_version(lake, day, alpha)
    if version is None:
        return False
    try:
        summary = json.loads(Path(lake.popularity_summary(day)).read_text())
    except (OSError, ValueError):
        return False
    return (
        summary.get("input_version") == version
        and Path(lake.items(day)).is_dir()
        and Path(lake.popularity(day)).is_dir()
    )
