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
