"""The DAG file: imports cleanly, looks nothing up while parsed, and has the shape, pools,
retries and assets the design promises. Also the command lines and failure classes of
`jobs.nightly`, which every task runs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.nightly import DataFailure, InfraFailure, Nightly, run

ROOT = Path(__file__).resolve().parents[2]
ORDER = [
    "ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
    "popularity", "validate_datasets", "train", "evaluate", "score",
    "validate_recommendations", "publish",
]  # fmt: skip
QUALITY_GATES = {
    "validate_raw",
    "validate_sessions",
    "validate_datasets",
    "validate_recommendations",
}
SPARK_TASKS = {"ingest", "sessionize", "build_datasets", "popularity"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """Parse dags/ the way the dag-processor does, with connection and Variable look-ups
    made to fail loudly."""
    code = f"""
import os, sys
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
from airflow.sdk import BaseHook, Variable
def forbidden(*a, **k):
    raise AssertionError("looked up a connection or Variable while parsing")
Variable.get = staticmethod(forbidden)
BaseHook.get_connection = classmethod(forbidden)
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder={str(ROOT / "dags")!r})
print("ERRORS", bag.import_errors)
print("DAGS", sorted(bag.dag_ids))
"""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_dag_imports_without_errors_or_lookups(dagbag):
    assert "ERRORS {}" in dagbag
    assert "DAGS ['gru4rec_nightly']" in dagbag


@pytest.fixture(scope="module")
def dag():
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    import importlib

    module = importlib.import_module("dags.gru4rec_nightly")
    return module.nightly


def test_task_order_is_the_designed_chain(dag):
    assert sorted(dag.task_ids) == sorted(ORDER)
    for a, b in zip(ORDER, ORDER[1:], strict=False):
        assert dag.get_task(b).upstream_task_ids == {a}, b
    assert dag.get_task("publish").downstream_task_ids == set()


def test_quality_gates_never_retry_and_infrastructure_retries_with_backoff(dag):
    for task_id in ORDER:
        task = dag.get_task(task_id)
        if task_id in QUALITY_GATES:
            assert task.retries == 0, task_id
        else:
            assert task.retries >= 1 and task.retry_exponential_backoff, task_id
            assert task.retry_delay >= dt.timedelta(minutes=1)


def test_pools_and_gpu_queue(dag):
    for task_id in SPARK_TASKS:
        assert dag.get_task(task_id).pool == "spark"
    train = dag.get_task("train")
    assert train.pool == "gpu" and train.queue == "gpu"
    assert dag.get_task("score").pool == "gpu"


def test_assets_schedule_and_docs(dag):
    def outlets(task_id):
        return {a.name for a in dag.get_task(task_id).outlets}

    assert outlets("validate_sessions") == {"gru4rec_sessions"}
    assert outlets("evaluate") == {"gru4rec_model"}
    assert outlets("publish") == {"gru4rec_recommendations"}
    assert dag.max_active_runs == 1 and not dag.catchup
    assert "promotion" in dag.doc_md.lower() and "backfill" in dag.doc_md
    # Nightly; the data interval is the 24 hours before the run, so D is the previous day
    # (the end-to-end test checks the dates it processes).
    import attrs

    timetable = attrs.asdict(dag.timetable)
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert timetable["expression"] == "0 3 * * *"
    assert timetable["interval"] == dt.timedelta(days=1)
    for name in ("lake", "raw_input", "source_preset", "column_mapping", "window_days",
                 "test_days", "model_params", "epochs", "spark_master", "device",
                 "promotion_margin"):  # fmt: skip
        assert name in dag.params, name


def test_commands_follow_the_params(tmp_path):
    night = Nightly.from_params(
        {"lake": str(tmp_path), "spark_master": "spark://h:7077", "spark_conf": {"a.b": "1"},
         "column_mapping": {"user_col": "visitor"}, "source_preset": "", "epochs": 3,
         "device": "cuda"},
        "2026-01-05",
    )  # fmt: skip
    ingest = night.ingest_cmd("/tmp/m.json")
    assert ingest[1:3] == ["--master", "spark://h:7077"]
    assert "--conf" in ingest and "a.b=1" in ingest
    assert ingest[ingest.index("--input") + 1] == f"{tmp_path}/raw/dt={{ds}}"
    assert ingest[ingest.index("--mapping") + 1] == "/tmp/m.json" and "--preset" not in ingest
    assert ingest[ingest.index("--catch-up-days") + 1] == "30"
    assert any(Path(a).name == "ingest.py" for a in ingest)
    train = night.train_cmd()
    assert "n_epochs=3" in train and train[train.index("--device") + 1] == "cuda"
    assert train[train.index("--out") + 1] == f"{tmp_path}/models/run=2026-01-05"
    mapping = night.mapping_file()
    assert Path(mapping).read_text() == '{"user_col": "visitor"}'
    os.unlink(mapping)
    with pytest.raises(DataFailure, match="window_days"):
        Nightly.from_params({"window_days": 1, "test_days": 1}, "2026-01-05")
    with pytest.raises(DataFailure, match="unknown params"):
        Nightly.from_params({"lake_root": "x"}, "2026-01-05")


def test_exit_status_2_is_a_data_failure_anything_else_retries():
    lines = []
    with pytest.raises(DataFailure, match="expected 3 columns, found 2"):
        run(
            [sys.executable, "-c",
             "import sys; print('x ERROR jobs: SchemaError: expected 3 columns, found 2', "
             "file=sys.stderr); sys.exit(2)"],
            echo=lines.append,
        )  # fmt: skip
    with pytest.raises(InfraFailure, match="exited with 137"):
        run([sys.executable, "-c", "import sys; sys.exit(137)"], echo=lines.append)
    assert run([sys.executable, "-c", "print('{\"a\": 1}')"], echo=lines.append).strip() == (
        '{"a": 1}'
    )
