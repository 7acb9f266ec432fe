"""Atomic, idempotent publish of one date's recommendations by a symlink swap (local file
systems).

`<root>/dt=D` is a symbolic link to an immutable version directory
`<root>/_versions/dt=D/<version>/`. A run writes and validates a new version, then replaces the
link with `os.replace` (one atomic rename): readers see the old table or the new one, never a
mix or nothing. A process killed while writing leaves only an unreferenced version directory
(removed by the next run); killed during the swap, the link still points at a complete table.
Parquet readers (pyarrow, pandas, DuckDB, Spark) follow the link; `_versions` starts with an
underscore, so partition discovery ignores it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.errors import ConfigError
from jobs.common.lake import Lake, dt_partition

log = logging.getLogger("jobs.publish")
VALIDATED = "_validation.json"  # written beside a scored table once its gate passed


def new_version_path(lake: Lake, day) -> Path:
    """A fresh, unreferenced version directory of D's recommendations (not created: the
    scorer creates it whole)."""
    return Path(lake.recommendations_versions(day)) / uuid.uuid4().hex[:12]


def current_version(root: str | Path, partition: str) -> Path | None:
    link = Path(root) / partition
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def publish(root: str | Path, partition: str, version_dir: Path) -> Path:
    """Point `<root>/<partition>` at `version_dir` atomically; drop unreferenced versions."""
    root = Path(root)
    link = root / partition
    if link.exists() and not link.is_symlink():
        raise FileExistsError(
            f"{link} is a real directory: expected a link managed by this publisher"
        )
    target = os.path.relpath(version_dir, root)
    tmp = root / f".{partition}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)  # the atomic step
    _fsync_dir(root)
    cleanup(root, partition)
    return link


def cleanup(root: str | Path, partition: str) -> None:
    """Remove versions the link does not point at (left by replaced or killed runs)."""
    root = Path(root)
    keep = current_version(root, partition)
    versions = root / "_versions" / partition
    if versions.is_dir():
        for v in versions.iterdir():
            if keep is None or v.resolve() != keep:
                shutil.rmtree(v, ignore_errors=True)
    for tmp in root.glob(f".{partition}.link-*"):
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_validated(staged: str | Path, results) -> None:
    """Record that the gate passed on `staged` (readers skip names starting with "_")."""
    Path(staged, VALIDATED).write_text(json.dumps(results, default=str))


def publish_staged(lake: Lake, day: str, staged: str | Path) -> dict:
    """Point `recommendations/dt=D` at the validated `staged` version; returns the record."""
    staged = Path(staged)
    versions = Path(lake.recommendations_versions(day)).resolve()
    if staged.resolve().parent != versions:
        raise ConfigError(f"--staged: expected a version of {day} under {versions}, found {staged}")
    if not (staged / VALIDATED).exists():
        raise ConfigError(f"{staged} was not validated: expected {VALIDATED} beside it")
    summary = json.loads((staged / C.SCORED_SUMMARY).read_text())
    link = publish(lake.recommendations, dt_partition(day), staged)
    record = {**summary, "path": str(link), "version": staged.name}
    log.info("published %s: %s", link, record)
    return record
