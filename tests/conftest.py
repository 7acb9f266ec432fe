"""Shared fixtures: ONE local SparkSession per test run, and the real samples' location."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keep every Spark endpoint on loopback (local mode and the standalone-cluster test alike).
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# `./dev.sh test` runs the suite on pytest-xdist workers. Each worker (and every step it starts:
# spark-submit's Python, Airflow's tasks, training) gets its share of the cores for torch's
# CPU threads: with MKL_DYNAMIC=FALSE (gru4rec), two processes that each spin on every core
# run ~25x slower. Set before anything imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if "PYTEST_XDIST_WORKER" in os.environ:
    import __main__

    # An xdist worker's __main__ (execnet's bootstrap) has neither a file nor a spec: pyspark's
    # Connect package, which Great Expectations imports, takes such a process for a doctest
    # run and calls sys.exit(0) on import. Give it the file a script's __main__ has.
    if getattr(__main__, "__spec__", None) is None and not hasattr(__main__, "__file__"):
        __main__.__file__ = "pytest-xdist-worker"
if _WORKERS > 1:
    _threads = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)


def pytest_collection_modifyitems(config, items):
    """Under xdist (`./dev.sh test`: `--dist loadscope`, one module per work unit, so a
    module-scoped set-up such as a night of the DAG runs once): the modules with slow tests
    start first, so the longest ones run side by side rather than one after the other."""
    slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow)  # stable: a module stays in order


@pytest.fixture(scope="session", autouse=True)
def deployment_roots(tmp_path_factory):
    """The test deployment's roots (GRU4REC_ROOTS): the pytest temporary tree and the
    project's var/; every path a test gives a night lies under them."""
    roots = [str(tmp_path_factory.getbasetemp().resolve()), str(ROOT / "var")]
    os.environ["GRU4REC_ROOTS"] = json.dumps(roots)
    return roots


@pytest.fixture(scope="session")
def spark():
    from jobs.common.spark import get_spark
    from jobs.dev.embedded import quick_jvm

    # the embedded default's driver JVM settings (quick JIT, the class-data-sharing archive)
    java = json.loads(quick_jvm()["GRU4REC_SPARK_CONF"])
    session = get_spark(
        "tests",
        "local[2]",
        {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g", **java},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real samples expected at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
