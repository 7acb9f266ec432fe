"""Filesystem operations through Hadoop's FileSystem API, so local paths, HDFS and object stores
all work the same; and the staging -> publish step every job uses."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from jobs.common.lake import Lake

log = logging.getLogger(__name__)


class FS:
    """Thin wrapper over org.apache.hadoop.fs.FileSystem for one SparkSession."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _p(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str):
        return self._p(path).getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._p(path)))

    def delete(self, path: str) -> None:
        if self.exists(path):
            self._fs(path).delete(self._p(path), True)

    def mkdirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._p(path))

    def rename(self, src: str, dst: str) -> None:
        if not self._fs(src).rename(self._p(src), self._p(dst)):
            raise OSError(f"rename failed: {src} -> {dst}")

    def list_dirs(self, path: str) -> list[str]:
        """Names of the sub-directories of `path` (empty if it does not exist)."""
        if not self.exists(path):
            return []
        return sorted(
            s.getPath().getName()
            for s in self._fs(path).listStatus(self._p(path))
            if s.isDirectory()
        )

    def matches(self, path: str) -> bool:
        """True when `path` (a file, a directory or a glob) names anything."""
        return bool(self._fs(path).globStatus(self._p(path)))

    def fingerprint(self, path: str) -> dict:
        """What a delivery is: its data files (a file, a directory read recursively, or a
        glob), each by full path, length and modification time, as Spark would read them
        (names starting with '_' or '.' are left out); {'files': 0, ...} when nothing matches.
        A file rewritten with the same bytes counts as a new delivery (content hashes of
        large deliveries would cost a full read every night)."""
        entries = []
        for status in self._fs(path).globStatus(self._p(path)) or []:
            if status.isDirectory():
                it = self._fs(path).listFiles(status.getPath(), True)
                base = status.getPath().toUri().getPath().rstrip("/")
                while it.hasNext():
                    f = it.next()
                    full = f.getPath().toUri().getPath()
                    hidden = any(p[:1] in ("_", ".") for p in full[len(base) + 1 :].split("/"))
                    if not hidden:
                        entries.append((str(f.getPath()), f.getLen(), f.getModificationTime()))
            elif status.getPath().getName()[:1] not in ("_", "."):
                p = status.getPath()
                entries.append((str(p), status.getLen(), status.getModificationTime()))
        entries = sorted((name, int(n), int(mtime)) for name, n, mtime in entries)
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
        return {"files": len(entries), "bytes": sum(e[1] for e in entries), "sha256": digest}

    def write_text(self, path: str, text: str) -> None:
        """Write a small text file atomically: to a hidden temp file, then rename over."""
        tmp = f"{path.rsplit('/', 1)[0]}/.{uuid.uuid4().hex}.tmp"
        fs = self._fs(tmp)
        fs.setWriteChecksum(False)  # no .crc sidecar beside a file people and tools read
        try:
            out = fs.create(self._p(tmp), True)
            try:
                out.write(bytearray(text.encode("utf-8")))
            finally:
                out.close()
        finally:
            fs.setWriteChecksum(True)
        self.delete(path)
        self.rename(tmp, path)

    def read_text(self, path: str) -> str:
        stream = self._fs(path).open(self._p(path))
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8")
            )
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()


def staging_path(final_root: str) -> str:
    """A fresh staging directory beside `final_root`; readers of `final_root` never see it."""
    return f"{final_root.rstrip('/')}/_staging/{uuid.uuid4().hex}"


@contextmanager
def staging(fs: FS, final_root: str) -> Iterator[str]:
    """A fresh staging directory, removed on exit whatever happens.

    After a publish only the emptied directory is left; after a failure the partial output is
    too, and retried nightly runs would otherwise pile such copies up under `_staging/`.
    """
    path = staging_path(final_root)
    try:
        yield path
    finally:
        fs.delete(path)


def publish_dir(fs: FS, staged: str, final: str) -> None:
    """Replace `final` by `staged`. Readers see the old or the new directory, never a mix.

    Two renames: the old copy moves aside (to `_trash`), then the new one moves in. Hadoop file
    systems have no atomic replace of a non-empty directory, so between the renames `final` is
    absent: a reader then finds no such partition (Spark reads the dataset without it, a path
    reader gets "not found") but never a partial or mixed one. If the second rename fails the
    old copy is moved back; a process killed between the renames leaves the partition absent
    and the old copy under `_trash`, and the step's rerun publishes it again (a rerun of the
    same night, or the next night's catch-up of an absent day). Only the nightly lake's own
    datasets use this; the published recommendations swap a link atomically instead.
    """
    parent = final.rstrip("/").rsplit("/", 1)[0]
    fs.mkdirs(parent)
    trash = None
    if fs.exists(final):
        trash = f"{parent}/_trash/{uuid.uuid4().hex}"
        fs.mkdirs(trash.rsplit("/", 1)[0])
        fs.rename(final, trash)
    try:
        fs.rename(staged, final)
    except Exception:
        if trash and not fs.exists(final):
            fs.rename(trash, final)  # put the old copy back: the partition is never lost
        raise
    if trash:
        fs.delete(trash)


def publish_partitions(
    fs: FS, staged_root: str, final_root: str, column: str, values: Iterable[str]
) -> list[str]:
    """Publish each `column=value` partition written under `staged_root` into `final_root`.

    Every value in `values` is this run's responsibility: a partition the run produced replaces
    the old one, and an old partition the run produced nothing for is removed (so a rerun leaves
    exactly what the run computed). Partitions outside `values` are never touched.
    """
    produced = set(fs.list_dirs(staged_root))
    published = []
    for value in sorted(set(values)):
        name = f"{column}={value}"
        if name in produced:
            publish_dir(fs, f"{staged_root}/{name}", f"{final_root}/{name}")
            published.append(value)
        else:
            fs.delete(f"{final_root}/{name}")
    return published


def write_summary(fs: FS, dataset_root: str, key: str, summary: dict) -> str:
    """Write a job's JSON summary beside its output (`<dataset>/_summaries/<key>.json`)."""
    path = Lake.summary(dataset_root, key)
    fs.mkdirs(path.rsplit("/", 1)[0])
    fs.write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    log.info("summary %s: %s", path, json.dumps(summary, sort_keys=True, default=str))
    return path
