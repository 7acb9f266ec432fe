"""The command line of every task of the nightly DAG, built from one `Night`.

Spark stages: `spark-submit <launch settings> jobs/<job>.py ...` against the configured master;
training and scoring: `python -m gru4rec ...`; the pipeline's own steps: `python -m
jobs.nightly <step> ...`. Secrets never go on a command line: only paths and settings do.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import DATE_TOKEN, PROJECT_ROOT
from jobs.nightly.params import Night

JOBS_DIR = PROJECT_ROOT / "jobs"


def spark_submit_executable() -> str:
    submit = os.environ.get("SPARK_SUBMIT") or shutil.which("spark-submit")
    if submit:
        return submit
    candidate = Path(sys.executable).with_name("spark-submit")
    return str(candidate) if candidate.exists() else "spark-submit"


def spark_submit(night: Night, job: str, *args: str) -> list[str]:
    """`spark-submit` of jobs/<job>.py with the night's launch settings and Spark conf."""
    job_args = ["--lake", night.lake.root]
    for key, value in night.spark.conf.items():
        job_args += ["--conf", f"{key}={value}"]
    script = str(JOBS_DIR / f"{job}.py")
    return [spark_submit_executable(), *night.spark.submit_args(), script, *job_args, *args]


def ingest(night: Night, mapping_file: str | None) -> list[str]:
    args = ["--input", night.raw_input, "--date", night.day]
    if DATE_TOKEN in night.raw_input:
        args += ["--catch-up-days", str(night.datasets.window_days)]
    if night.source_preset:
        args += ["--preset", night.source_preset]
    if mapping_file:
        args += ["--mapping", mapping_file]
    return spark_submit(night, "ingest", *args)


def _verdict_args(night: Night) -> list[str]:
    """Where the gates' verdicts are and which failed days an operator accepted."""
    return [
        "--quality-root", night.lake.quality_root,
        "--accept-days", ",".join(night.accepted_days),
    ]  # fmt: skip


def validate(night: Night, dataset: str) -> list[str]:
    args = [dataset, "--date", night.day, *_verdict_args(night)]
    args += ["--thresholds", json.dumps(night.thresholds.to_dict())]
    if dataset != C.SUITE_DATASETS:
        args += ["--catch-up-days", str(night.datasets.window_days)]
    return spark_submit(night, "validate", *args)


def sessionize(night: Night) -> list[str]:
    s = night.sessionize
    args = [
        "--date", night.day,
        "--catch-up-days", str(night.datasets.window_days),
        "--gap-seconds", str(s.gap_seconds),
        "--lookback-days", str(s.lookback_days),
        "--max-events-per-user-day", str(s.max_events_per_user_day),
        *_verdict_args(night),
    ]  # fmt: skip
    if not s.remove_repeats:
        args.append("--keep-repeats")
    return spark_submit(night, "sessionize", *args)


def build_datasets(night: Night) -> list[str]:
    d = night.datasets
    return spark_submit(
        night,
        "build_datasets",
        "--date", night.day,
        "--window-days", str(d.window_days),
        "--test-days", str(d.test_days),
        "--valid-days", str(d.valid_days),
        "--min-session-length", str(d.min_session_length),
        "--min-item-support", str(d.min_item_support),
        *_verdict_args(night),
    )  # fmt: skip


def popularity(night: Night) -> list[str]:
    return spark_submit(
        night, "popularity", "--date", night.day, "--alpha", str(night.popularity.alpha)
    )


def new_model_dir(night: Night) -> str:
    """A fresh version directory for tonight's model (models are never replaced in place)."""
    return night.lake.new_model_version(night.day)


def train(night: Night, out: str) -> list[str]:
    """GRU4Rec on tonight's train split into the new version `out`; it samples from the
    popularity table beside the split."""
    lake, t = night.lake, night.train
    cmd = [
        sys.executable, "-m", "gru4rec", "train",
        "--train", lake.split(night.day, "train"),
        "--test", lake.split(night.day, "test"),
        "--popularity", lake.popularity(night.day),
        "--params", t.model_params,
        "--set", f"n_epochs={t.epochs}",
        "--device", t.device,
        "--cutoffs", cutoffs(night.scoring.k),
        "--out", out,
    ]  # fmt: skip
    for override in t.model_overrides:
        cmd += ["--set", override]
    return cmd


def cutoffs(k: int) -> str:
    """The report's cutoffs plus k, the one the promotion gate compares at."""
    return ",".join(str(c) for c in sorted({1, 5, 10, 20, k}))


def step(night: Night, name: str, *args: str) -> list[str]:
    """`python -m jobs.nightly <name>` for this night."""
    lake = night.lake
    return [
        sys.executable, "-m", "jobs.nightly", name,
        "--lake", lake.root, "--quality-root", lake.quality_root, "--date", night.day,
        *args,
    ]  # fmt: skip


def evaluate(night: Night, candidate: str) -> list[str]:
    return step(
        night, "evaluate",
        "--candidate", candidate,
        "--margin", str(night.promotion.margin),
        "--k", str(night.scoring.k),
        "--device", night.train.device,
    )  # fmt: skip


def new_scored_dir(night: Night) -> str:
    """A fresh, unreferenced version directory for tonight's scored table."""
    from jobs.nightly.publish import new_version_path

    return str(new_version_path(night.lake, night.day))


def score(night: Night, serving_model: str, out_dir: str) -> list[str]:
    return [
        sys.executable, "-m", "gru4rec", "score",
        "--model", serving_model,
        "--sessions", night.lake.sessions_day(night.day),
        "--out", out_dir,
        "--k", str(night.scoring.k),
        "--device", night.train.device,
    ]  # fmt: skip


def validate_recommendations(night: Night, staged: str) -> list[str]:
    return step(night, "validate-recommendations", "--staged", staged)


def publish(night: Night, staged: str) -> list[str]:
    return step(
        night, "publish", "--staged", staged, "--grace-hours", str(night.publish.grace_hours)
    )


def mapping_file(night: Night) -> str | None:
    """The column mapping as a JSON file ingest reads (None when there is none)."""
    if not night.column_mapping:
        return None
    fd, path = tempfile.mkstemp(prefix="gru4rec-mapping-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(night.column_mapping, f)
    return path
