"""Atomic, idempotent publish of one date's recommendations by a symlink swap (local file
systems).

`<root>/dt=D` is a symbolic link to an immutable version directory
`<root>/_versions/dt=D/<version>/`. A run writes and validates a new version, then replaces the
link with `os.replace` (one atomic rename): readers see the old table or the new one, never a
mix or nothing. A process killed while writing leaves only an unreferenced version directory
(removed by the next run); killed during the swap, the link still points at a complete table.
Parquet readers (pyarrow, pandas, DuckDB, Spark) follow the link; `_versions` starts with an
underscore, so partition discovery ignores it.

Only a validated version is published: the gate writes `_validation.json` into the version on
success only, with the size and SHA-256 of every file it validated; publish re-hashes the files
and refuses a version whose marker is missing, names another date or does not match its
content. Replaced versions stay readable for a grace period (default 24 hours, param
`publish_grace_hours`): a reader that resolved the old version before the swap reads it to the
end. Cleanup collects a non-current version once it has been unreferenced that long (since its
replacement, or since its last write for a version that was never published).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.errors import ConfigError
from jobs.common.lake import Lake, dt_partition
from jobs.common.localfs import write_json_atomic

log = logging.getLogger("jobs.publish")
VALIDATED = "_validation.json"  # written into a scored version once its gate passed
RETIRED = ".retired"  # <versions>/.<version>.retired: when that version was replaced
DEFAULT_GRACE_S = 24 * 3600.0


def new_version_path(lake: Lake, day) -> Path:
    """A fresh, unreferenced version directory of D's recommendations (not created: the
    scorer creates it whole)."""
    return Path(lake.recommendations_versions(day)) / uuid.uuid4().hex[:12]


def current_version(root: str | Path, partition: str) -> Path | None:
    link = Path(root) / partition
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def publish(
    root: str | Path, partition: str, version_dir: Path, grace_s: float = DEFAULT_GRACE_S
) -> Path:
    """Point `<root>/<partition>` at `version_dir` atomically; the version it replaces is
    retired (kept `grace_s` seconds for readers), older unreferenced versions collected."""
    root = Path(root)
    link = root / partition
    if link.exists() and not link.is_symlink():
        raise FileExistsError(
            f"{link} is a real directory: expected a link managed by this publisher"
        )
    previous = current_version(root, partition)
    target = os.path.relpath(version_dir, root)
    tmp = root / f".{partition}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp, target_is_directory=True)
    if previous is not None and previous != Path(version_dir).resolve():
        # Before the swap: a crash right after it must not leave the old version undated.
        _tombstone(previous).touch()  # its grace period starts now
    os.replace(tmp, link)  # the atomic step
    _fsync_dir(root)
    cleanup(root, partition, grace_s)
    return link


def _tombstone(version: Path) -> Path:
    return version.parent / f".{version.name}{RETIRED}"


def _unreferenced_since(version: Path) -> float:
    """When `version` stopped being needed: its replacement, or its last write if it was never
    published (a killed or concurrent run's; the newest mtime of it and its files)."""
    stone = _tombstone(version)
    if stone.exists():
        return stone.stat().st_mtime
    times = [version.lstat().st_mtime]
    if version.is_dir():
        times += [f.lstat().st_mtime for f in version.iterdir()]
    return max(times)


def cleanup(
    root: str | Path, partition: str, grace_s: float = DEFAULT_GRACE_S, now: float | None = None
) -> list[str]:
    """Remove versions the link has not pointed at for `grace_s` seconds (replaced ones, and
    ones left by killed runs); returns the names removed. The current version is never
    removed, nor one unreferenced for less than `grace_s` (readers may still be on it, or a
    concurrent run may still be writing it)."""
    root = Path(root)
    now = time.time() if now is None else now
    keep = current_version(root, partition)
    versions = root / "_versions" / partition
    removed = []
    if versions.is_dir():
        for v in sorted(versions.iterdir()):
            if not v.is_dir() or v.is_symlink():  # tombstones
                continue
            if keep is not None and v.resolve() == keep:
                _tombstone(v).unlink(missing_ok=True)  # published again: not retired
                continue
            if now - _unreferenced_since(v) >= grace_s:
                shutil.rmtree(v, ignore_errors=True)
                _tombstone(v).unlink(missing_ok=True)
                removed.append(v.name)
        for stone in versions.glob(f".*{RETIRED}"):  # of versions removed by hand
            if not (versions / stone.name[1 : -len(RETIRED)]).exists():
                stone.unlink(missing_ok=True)
    for tmp in root.glob(f".{partition}.link-*"):  # a killed swap's link, once it is stale
        if now - tmp.lstat().st_mtime >= min(grace_s, 3600.0):
            tmp.unlink(missing_ok=True)
    if removed:
        log.info("collected %d replaced version(s) of %s: %s", len(removed), partition, removed)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def content_digest(version: str | Path) -> dict[str, dict]:
    """Size and SHA-256 of every file of a version but the validation marker."""
    out = {}
    for f in sorted(Path(version).rglob("*")):
        if f.is_file() and f.name != VALIDATED:
            h = hashlib.sha256()
            with open(f, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    h.update(block)
            out[str(f.relative_to(version))] = {"bytes": f.stat().st_size, "sha256": h.hexdigest()}
    return out


def mark_validated(staged: str | Path, day: str, results) -> Path:
    """Record that the gate passed on `staged`, tied to its content (call on success only)."""
    staged = Path(staged)
    marker = {
        "success": True,
        "date": str(day),
        "version": staged.name,
        "validated_at": time.time(),
        "files": content_digest(staged),
        "results": results,
    }
    return write_json_atomic(staged / VALIDATED, marker)


def check_validated(lake: Lake, day: str, staged: str | Path) -> Path:
    """`staged` as a resolved version of `day` whose passed validation matches its content;
    a ConfigError that says what is wrong otherwise."""
    staged = Path(staged)
    versions = Path(lake.recommendations_versions(day)).resolve()
    if staged.is_symlink() or staged.resolve().parent != versions or not staged.is_dir():
        raise ConfigError(
            f"--staged: expected a version directory of {day} under {versions}, found {staged}"
        )
    staged = staged.resolve()
    marker_path = staged / VALIDATED
    if not marker_path.exists():
        raise ConfigError(
            f"{staged} was not validated: expected {VALIDATED} in it (written only when the "
            "recommendations gate passes)"
        )
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{marker_path} is not a validation record: {exc}") from None
    if not isinstance(marker, dict) or marker.get("success") is not True:
        raise ConfigError(f"{staged} was not validated: {marker_path} does not record a pass")
    if marker.get("date") != str(day) or marker.get("version") != staged.name:
        raise ConfigError(
            f"{marker_path} validated version {marker.get('version')!r} of "
            f"{marker.get('date')!r}: expected version {staged.name!r} of {day}"
        )
    now = content_digest(staged)
    then = marker.get("files") or {}
    if now != then:
        changed = sorted(n for n in set(now) | set(then) if now.get(n) != then.get(n))
        raise ConfigError(
            f"{staged} changed since it was validated: {changed} differ from what the gate "
            "checked; validate it again"
        )
    return staged


def publish_staged(
    lake: Lake, day: str, staged: str | Path, grace_s: float = DEFAULT_GRACE_S
) -> dict:
    """Point `recommendations/dt=D` at the validated `staged` version; returns the record."""
    staged = check_validated(lake, day, staged)
    summary = json.loads((staged / C.SCORED_SUMMARY).read_text())
    link = publish(lake.recommendations, dt_partition(day), staged, grace_s)
    record = {**summary, "path": str(link), "version": staged.name}
    log.info("published %s: %s", link, record)
    return record
