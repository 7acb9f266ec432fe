"""Small files on a local (or mounted) file system, written atomically: a hidden temporary file
beside the target, then one rename, so a reader sees the old file or the new one."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of its own: concurrent writers of one file never share a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
