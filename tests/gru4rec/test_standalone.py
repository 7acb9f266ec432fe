"""The model library stands alone: nothing in gru4rec/ imports the pipeline (jobs/), so it can
be installed, read and tested without Spark, Great Expectations or Airflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "gru4rec").glob("*.py") if p.stem != "__main__")

BLOCK_JOBS = """
import importlib, importlib.abc, sys

class NoPipeline(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jobs" or name.startswith("jobs."):
            raise ImportError(f"gru4rec imported the pipeline: {name}")
        return None

sys.meta_path.insert(0, NoPipeline())
for name in sys.argv[1:]:
    importlib.import_module("gru4rec." + name if name != "gru4rec" else name)
from gru4rec.cli import main
try:
    main(["--help"])
except SystemExit as exc:
    assert exc.code == 0
print("ok", len(sys.argv) - 1)
"""


def test_every_module_imports_with_the_pipeline_unimportable():
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_JOBS, "gru4rec", *MODULES],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"ok {len(MODULES) + 1}" in out.stdout
    assert {"cli", "score", "train", "checkpoint", "errors"} <= set(MODULES)


def test_no_import_of_jobs_anywhere_in_the_source():
    """Also the lazy imports inside functions, which importing the modules does not run."""
    offenders = []
    for path in sorted((ROOT / "gru4rec").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "jobs"]
    assert offenders == []
