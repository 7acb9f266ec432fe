"""Fault injection: every step of a nightly run, killed with SIGKILL at a random point inside
it and then retried, leaves the lake as a clean run leaves it.

One night (a first run: it catches up its window) runs step by step through the DAG's own
command lines (`jobs.nightly.commands`), each as a real process group, the way the DAG's
tasks start them. The lake is snapshotted after every step. Then, for each step in turn:
the lake before it is restored, the step is started and its whole process group killed with
SIGKILL after a random share of its clean duration, the step is retried as the DAG retries it
(a training or scoring retry writes a new version), and the outputs of that step are compared
with the clean run's: the same rows in every partition and table, the same verdicts, the same
model metrics and promotion decision, the same published recommendations. Each step being a
function of the lake before it, equal outputs step by step mean an equal final lake.
Compared without what differs between any two runs by design: timings, wall-clock stamps,
ingest ids, version ids and `generated_at`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from jobs.common import contracts as C
from jobs.common.lake import PROJECT_ROOT
from jobs.dev.embedded import quick_jvm
from jobs.dev.synth import SynthConfig, generate, write_daily_csv
from jobs.nightly import commands
from jobs.nightly.params import Night
from jobs.nightly.runner import step_env

# In the default run (CI): a clean night plus fourteen killed-and-retried steps, ~5 minutes on a
# 2-core machine. Alone: `./dev.sh test -m faults tests/faults`.
pytestmark = [pytest.mark.slow, pytest.mark.faults]

DAY = dt.date(2026, 1, 3)
STEPS = [
    "ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
    "popularity", "validate_datasets", "train", "evaluate", "refresh", "refreshed", "score",
    "validate_recommendations", "publish",
]  # fmt: skip
VOLATILE = {
    "seconds", "wall_seconds", "train_seconds", "seconds_per_epoch", "events_per_second",
    "ingest_id", "ingested_at", "decided_at", "published_at", "data_docs",
    "staged", "path", "validated_at", "generated_at", "model_version",
    # what this attempt had left to do (a killed attempt may have caught up some days)
    "caught_up_days", "redelivered_days",
    # which application judged a day (the producer or the gate) and its files' mtimes
    "data_version", "judged_in",
}  # fmt: skip


class Driver:
    """The DAG's glue between tasks, for one night: what each step's command is."""

    def __init__(self, night: Night) -> None:
        self.night = night
        self.model: str | None = None
        self.fresh: str | None = None
        self.staged: str | None = None

    def gate_suite(self, step: str) -> str | None:
        """The dataset of a Spark-side gate step (None for other steps)."""
        if step not in ("validate_raw", "validate_sessions", "validate_datasets"):
            return None
        return {"validate_raw": C.SUITE_RAW_EVENTS}.get(step, step.removeprefix("validate_"))

    def command(self, step: str) -> list[str]:
        n = self.night
        if step == "ingest":
            return commands.ingest(n, None)
        if self.gate_suite(step):  # the gate's own Spark validation (what a retry may run)
            return commands.validate(n, self.gate_suite(step))
        if step == "train":  # a retry trains into a new version, as the DAG's task does
            self.model = commands.new_model_dir(n)
            return commands.train(n, self.model)
        if step == "evaluate":
            return commands.evaluate(n, self.model)
        if step == "refresh":  # the DAG's refresh task: a warm start, then its record
            from jobs.nightly.promote import serving_model_name

            self.fresh = commands.new_refresh_dir(n)
            return commands.refresh(n, serving_model_name(n.lake, n.day), self.fresh)
        if step == "refreshed":
            return commands.refreshed(n, self.fresh)
        if step == "score":
            from jobs.nightly.promote import scoring_model

            self.staged = commands.new_scored_dir(n)
            return commands.score(n, scoring_model(n.lake, n.day), self.staged)
        if step == "validate_recommendations":
            return commands.validate_recommendations(n, self.staged)
        if step == "publish":
            return commands.publish(n, self.staged)
        return getattr(commands, step)(n)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**step_env("local"), "PIPELINE_SPARK_LOG_LEVEL": "ERROR"}
    env.pop("GRU4REC_RUN_OWNER", None)
    out = log.open("a")
    return subprocess.Popen(
        cmd, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _run_step(driver: Driver, step: str, log: Path, cmd: list[str] | None = None) -> float:
    t0 = time.monotonic()
    proc = _start(cmd or driver.command(step), log)
    rc = proc.wait()
    assert rc == 0, f"{step} exited {rc}; see {log}:\n" + log.read_text()[-3000:]
    return time.monotonic() - t0


# -- what a step leaves, compared ------------------------------------------------------------
def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _rows(path: Path, drop=("generated_at", "model_version")) -> str:
    """A digest of a Parquet table's rows, in any order and file layout."""
    table = pads.dataset(str(path), format="parquet").to_table()
    table = table.drop_columns([c for c in drop if c in table.column_names])
    rows = sorted(json.dumps(r, default=str, sort_keys=True) for r in table.to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest() + f" ({len(rows)} rows)"


def _partitions(root: Path) -> dict:
    return {p.name: _rows(p) for p in sorted(root.glob("dt=*"))} if root.exists() else {}


def _jsons(root: Path, pattern: str) -> dict:
    return {
        str(p.relative_to(root)): _clean(json.loads(p.read_text()))
        for p in sorted(root.glob(pattern))
        if "superseded" not in p.parts
    }


def _verdicts(lake_dir: Path, suite: str) -> dict:
    out = {}
    for p in sorted((lake_dir / "quality").glob(f"dt=*/{suite}.json")):
        r = json.loads(p.read_text())
        out[p.parent.name] = (r["success"], r["failed"], r["statistics"])
    return out


def _model_outcome(night: Night, model: str) -> dict:
    metrics = json.loads((Path(model) / "metrics.json").read_text())
    keep = {k: v for k, v in metrics.items() if k.startswith(("recall@", "mrr@"))}
    return {
        "metrics": keep,
        "losses": [e["loss"] for e in metrics["epochs"]],
        "n_items": metrics["n_items"],
        "item_fingerprint": metrics["item_fingerprint"],
    }


def outputs(step: str, driver: Driver) -> dict:
    """What `step` wrote that later steps read, or that users see."""
    n = driver.night
    lake = Path(n.lake.root)
    if step == "ingest":
        return {
            "events": _partitions(lake / "events"),
            "quarantine": _partitions(lake / "quarantine"),
            "summaries": _jsons(lake / "events" / "_summaries", "*.json"),
        }
    if step == "sessionize":
        summaries = _jsons(lake / "sessions" / "_summaries", "*.json")
        for s in summaries.values():
            s.pop("inputs", None)  # ingest ids; the days read are in read_days' keys
            if "read_days" in s:
                s["read_days"] = sorted(s["read_days"])
        return {"sessions": _partitions(lake / "sessions"), "summaries": summaries}
    if step.startswith("validate_") and step != "validate_recommendations":
        suites = {
            "validate_raw": [C.SUITE_RAW_EVENTS],
            "validate_sessions": [C.SUITE_SESSIONS],
            "validate_datasets": [C.SUITE_DATASETS, "item_index"],
        }[step]
        return {s: _verdicts(lake, s) for s in suites}
    if step == "build_datasets":
        run = Path(n.lake.datasets_run(n.day))
        # the splits, and (built in the same application, --then-popularity) items/ and
        # popularity/, which the splits' directory also holds
        splits = {p.name: _rows(p) for p in sorted(run.iterdir()) if p.is_dir()}
        assert {"items", "popularity"} <= set(splits), sorted(splits)
        return {
            "splits": splits,
            "summary": _clean(json.loads(Path(n.lake.datasets_summary(n.day)).read_text())),
        }
    if step == "popularity":
        return {
            "items": _rows(Path(n.lake.items(n.day))),
            "popularity": _rows(Path(n.lake.popularity(n.day))),
        }
    if step == "train":
        return _model_outcome(n, driver.model)
    if step == "evaluate":
        decision = json.loads(Path(n.lake.promotion_record(n.day)).read_text())
        return _clean(
            {k: v for k, v in decision.items() if k not in ("candidate", "serving_model")}
        )
    if step == "refresh":
        return _model_outcome(n, driver.fresh)
    if step == "refreshed":
        record = json.loads(Path(n.lake.refresh_record(n.day)).read_text())
        return _clean({k: v for k, v in record.items() if k not in ("model", "refreshed_at")})
    if step in ("score", "validate_recommendations"):
        staged = Path(driver.staged)
        marker = staged / "_validation.json"
        return {"rows": _rows(staged), "validated": marker.exists()}
    if step == "publish":
        published = Path(n.lake.recommendations_day(n.day))
        return {"rows": _rows(published.resolve()), "record": _jsons(published.parent, "*.json")}
    raise AssertionError(step)


# -- the clean night, then each step killed ---------------------------------------------------
@pytest.fixture(scope="module")
def clean_night(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    settings = {
        "GRU4REC_ROOTS": json.dumps([str(base)]),
        "GRU4REC_PRIVATE_DIR": str(base / "private"),
        **quick_jvm(),  # the deployment's JVM setting for short applications
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    cfg = SynthConfig(events=12_000, items=400, days=3, start=dt.date(2026, 1, 1))
    write_daily_csv(generate(cfg), str(base / "lake" / "raw"))
    params = {
        "lake": str(base / "lake"),
        "window_days": 3,
        "epochs": 1,
        "baseline_margin": 1.0,  # one epoch is no model for the floor; this suite is about kills
        "min_item_support": 2,
        "device": "cpu",
        "spark_conf": {"spark.sql.shuffle.partitions": "2"},
    }
    night = Night.from_params(params, DAY)
    driver = Driver(night)
    log = base / "clean.log"
    snapshots, durations, expected = {}, {}, {}
    lake = Path(night.lake.root)
    for step in STEPS:
        snapshots[step] = base / f"before-{step}"
        shutil.copytree(lake, snapshots[step], symlinks=True)
        suite = driver.gate_suite(step)
        if suite:  # as the DAG does: the verdict the producer stored for this data, reused
            _run_step(driver, step, log, commands.reuse_verdict(night, suite))
            tail = log.read_text().rsplit('{"reused": ', 1)[-1]
            assert tail.startswith("true"), f"{step}: the producer's verdict was not reused"
            reused = outputs(step, driver)
        # the step's own run (a gate: its Spark validation, what the kill test below retries)
        durations[step] = _run_step(driver, step, log)
        expected[step] = outputs(step, driver)
        if suite:  # the gate judges the data as its producer did
            assert expected[step] == reused, f"{step}: the reused verdict is not the gate's"
    yield base, night, driver, snapshots, durations, expected
    for key, value in saved.items():  # the rest of the run keeps its own deployment roots
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _restore(snapshot: Path, lake: Path) -> None:
    shutil.rmtree(lake)
    shutil.copytree(snapshot, lake, symlinks=True)


@pytest.mark.parametrize("step", STEPS)
def test_a_step_killed_mid_way_and_retried_leaves_what_a_clean_run_leaves(clean_night, step):
    base, night, clean_driver, snapshots, durations, expected = clean_night
    lake = Path(night.lake.root)
    rng = random.Random(f"{step}-{DAY}")
    log = base / f"killed-{step}.log"
    delay = rng.uniform(0.3, 0.7) * durations[step]
    for _ in range(4):  # a short step may end before the kill: start again, kill earlier
        _restore(snapshots[step], lake)
        driver = Driver(night)
        driver.model, driver.staged = clean_driver.model, clean_driver.staged
        driver.fresh = clean_driver.fresh
        proc = _start(driver.command(step), log)
        time.sleep(delay)
        if proc.poll() is None:
            break
        delay /= 3
    assert proc.poll() is None, f"{step} always finished before the kill: nothing was killed"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while not _group_gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_gone(proc.pid), f"{step}: processes of the killed step are still running"
    # The retry: the same task again (a new model or scored version where the task makes one).
    _run_step(driver, step, log)
    got = outputs(step, driver)
    assert got == expected[step], f"{step}: a killed and retried step left other outputs"
    if step == "publish":  # exactly one published version, complete, readable
        assert Path(night.lake.recommendations_day(night.day)).resolve().is_dir()


def test_the_clean_night_published_recommendations(clean_night):
    """The comparison above is only worth something if the clean night did the whole job."""
    _, night, _, _, _, expected = clean_night
    assert " (0 rows)" not in expected["publish"]["rows"]
    assert all(v[0] for v in expected["validate_raw"][C.SUITE_RAW_EVENTS].values())
    assert len(expected["validate_raw"][C.SUITE_RAW_EVENTS]) == 3  # D and its caught-up days
    assert (
        expected["score"]["validated"] is False
        and expected["validate_recommendations"]["validated"]
    )
