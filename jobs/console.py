"""Console scripts (`pyproject.toml` [project.scripts]): each runs a job's `main` the way
`python -m jobs.<job>` does, through `run_main` (an expected failure exits 2 with one line
naming the job, not a traceback)."""

from __future__ import annotations

import importlib
import os


def _run(module: str) -> None:
    from jobs.common.cli import run_main

    run_main(importlib.import_module(module).main)


def ingest() -> None:
    _run("jobs.ingest")


def sessionize() -> None:
    _run("jobs.sessionize")


def build_datasets() -> None:
    _run("jobs.build_datasets")


def popularity() -> None:
    _run("jobs.popularity")


def validate() -> None:
    _run("jobs.validate")


def run_all() -> None:
    _run("jobs.run_all")


def nightly() -> None:
    _run("jobs.nightly.steps")


def _script(module: str) -> None:
    """A command whose `main` handles its own errors (as its `python -m` does)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    raise SystemExit(importlib.import_module(module).main())


def backtest() -> None:
    _script("jobs.nightly.backtest")


def demo() -> None:
    _script("jobs.dev.demo")
