"""Small files on a local (or mounted) file system, written atomically: a hidden temporary file
beside the target, then one rename, so a reader sees the old file or the new one."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_text_atomic(
    path: str | os.PathLike, text: str, mode: int | None = None, encoding: str | None = None
) -> Path:
    """`mode` (e.g. 0o600 for a file holding a secret): the file is created with it, so it is
    never readable by others, not even before a chmod."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of its own: concurrent writers of one file never share a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    if mode is None:
        tmp.write_text(text, encoding=encoding)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
