"""Output directories that appear whole: written under a staging name, then renamed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class RunDir:
    """Write into `<out>.staging`, then replace `<out>` with it in two renames."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.stage = self.out.with_name(f".{self.out.name}.staging-{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.stage, self.out)
        shutil.rmtree(old, ignore_errors=True)
