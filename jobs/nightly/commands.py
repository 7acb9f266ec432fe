"""The command line of every task of the nightly DAG, built from one `Night`.

Spark stages: `spark-submit <launch settings> jobs/<job>.py ...` against the configured master;
training and scoring: `python -m gru4rec ...`; the pipeline's own steps: `python -m
jobs.nightly <step> ...`. Secrets never go on a command line: only paths and settings do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.errors import ConfigError
from jobs.common.lake import DATE_TOKEN, PROJECT_ROOT
from jobs.common.settings import deployment_spark_conf
from jobs.nightly.params import Night
from jobs.quality.verdicts import excluded_days

JOBS_DIR = PROJECT_ROOT / "jobs"


def spark_submit_executable() -> str:
    submit = os.environ.get("SPARK_SUBMIT") or shutil.which("spark-submit")
    if submit:
        return submit
    candidate = Path(sys.executable).with_name("spark-submit")
    return str(candidate) if candidate.exists() else "spark-submit"


def spark_submit(night: Night, job: str, *args: str) -> list[str]:
    """`spark-submit` of jobs/<job>.py with the night's launch settings and Spark conf.

    The run's (allow-listed, plain) settings go on the command line; the deployment's own
    (`GRU4REC_SPARK_CONF`, which may hold credentials) in a private properties file."""
    job_args = ["--lake", night.lake.root]
    for key, value in night.spark.conf.items():
        job_args += ["--conf", f"{key}={value}"]
    script = str(JOBS_DIR / f"{job}.py")
    deployment = deployment_properties(deployment_spark_conf())
    props = ["--properties-file", deployment, "--load-spark-defaults"] if deployment else []
    submit = [spark_submit_executable(), *night.spark.submit_args(), *props]
    return [*submit, script, *job_args, *args]


def _private_dir() -> Path:
    """A directory only this user can read: `$GRU4REC_PRIVATE_DIR`, else one under the temp
    directory; refused when another user owns it or others can read it."""
    root = Path(
        os.environ.get("GRU4REC_PRIVATE_DIR")
        or Path(tempfile.gettempdir()) / f"gru4rec-{os.getuid()}"
    )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.lstat()
    if not root.is_dir() or root.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{root}: expected a directory owned by uid {os.getuid()} with mode 0700 for the "
            f"deployment's Spark settings, found uid {st.st_uid} mode {oct(st.st_mode & 0o777)}"
        )
    return root


def deployment_properties(conf: dict[str, str]) -> str | None:
    """A spark-submit properties file (mode 0600, named by its content) holding `conf`; None
    when there is nothing to pass. Written once and reused, so no task leaves one behind."""
    if not conf:
        return None
    lines = "".join(f"{k} {_escape_property(v)}\n" for k, v in sorted(conf.items()))
    name = hashlib.sha256(lines.encode()).hexdigest()[:20]
    path = _private_dir() / f"spark-{name}.conf"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".spark-", suffix=".conf")
        with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600
            f.write(lines)
        os.replace(tmp, path)
    return str(path)


def _escape_property(value: str) -> str:
    """A value as java.util.Properties reads it back verbatim."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return ("\\" + out) if out[:1] in (" ", "\t") else out


def ingest(night: Night, mapping_file: str | None) -> list[str]:
    args = ["--input", night.raw_input, "--date", night.day]
    args += ["--quality-root", night.lake.quality_root]
    if DATE_TOKEN in night.raw_input:
        args += ["--catch-up-days", str(night.datasets.window_days)]
    if night.source_preset:
        args += ["--preset", night.source_preset]
    if mapping_file:
        args += ["--mapping", mapping_file]
    args += then_validate(night, C.SUITE_RAW_EVENTS)
    return spark_submit(night, "ingest", *args)


def _verdict_args(night: Night) -> list[str]:
    """Where the gates' verdicts are and which failed days an operator accepted."""
    return [
        "--quality-root", night.lake.quality_root,
        "--accept-days", ",".join(night.accepted_days),
    ]  # fmt: skip


def _gate_catch_up(night: Night, dataset: str) -> int:
    return 0 if dataset == C.SUITE_DATASETS else night.datasets.window_days


def then_validate(night: Night, dataset: str) -> list[str]:
    """A producing job's arguments to run `dataset`'s gate validation in its own Spark
    application, so the gate task reuses the verdict instead of starting another JVM."""
    return [
        "--then-validate", str(_gate_catch_up(night, dataset)),
        "--thresholds", json.dumps(night.thresholds.to_dict()),
    ]  # fmt: skip


def _gate_args(night: Night, dataset: str) -> list[str]:
    args = [dataset, "--date", night.day, *_verdict_args(night)]
    args += ["--thresholds", json.dumps(night.thresholds.to_dict())]
    if dataset != C.SUITE_DATASETS:
        args += ["--catch-up-days", str(_gate_catch_up(night, dataset))]
    return args


def validate(night: Night, dataset: str) -> list[str]:
    return spark_submit(night, "validate", *_gate_args(night, dataset))


def reuse_verdict(night: Night, dataset: str) -> list[str]:
    """The gate without Spark: the verdicts the producing job stored for exactly the data
    there now (`python -m jobs.validate --reuse-only`; it prints whether there were any)."""
    lake = ["--lake", night.lake.root]
    return [
        sys.executable,
        "-m",
        "jobs.validate",
        *lake,
        *_gate_args(night, dataset),
        "--reuse-only",
    ]


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
    args += then_validate(night, C.SUITE_SESSIONS)
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
        "--then-popularity", str(night.popularity.alpha),
        *then_validate(night, C.SUITE_DATASETS),
    )  # fmt: skip


def popularity_reused(night: Night) -> bool:
    """build_datasets (`--then-popularity`) built items/ and popularity/ from exactly the
    train split there now with tonight's alpha: the popularity task has nothing to do."""
    from jobs.quality.versions import popularity_reusable

    return popularity_reusable(night.lake, dt.date.fromisoformat(night.day),
                               night.popularity.alpha)  # fmt: skip


def popularity(night: Night) -> list[str]:
    return spark_submit(
        night, "popularity", "--date", night.day, "--alpha", str(night.popularity.alpha),
        "--quality-root", night.lake.quality_root, *then_validate(night, C.SUITE_DATASETS),
    )  # fmt: skip


def new_model_dir(night: Night) -> str:
    """A fresh version directory for tonight's model (models are never replaced in place)."""
    return night.lake.new_model_version(night.day)


def train_plan(night: Night) -> dict:
    """Full or incremental tonight, and why: incremental warm-starts the model serving the
    night before, unless there is none, or it is `full_every - 1` warm starts from its full
    training (then tonight retrains fully)."""
    from jobs.nightly.promote import incumbent_for

    t = night.train
    if t.mode == "full":
        return {"mode": "full", "reason": "train_mode is full"}
    incumbent = incumbent_for(night.lake, night.day)
    if incumbent is None:
        return {"mode": "full", "reason": "no serving model to warm-start from"}
    lineage = _lineage(night, incumbent)
    done = int(lineage.get("warm_starts", 0))  # a refresh on a day counts as a warm start
    if done + 1 >= t.full_every:
        return {
            "mode": "full",
            "reason": f"full retrain every {t.full_every} nights: the serving model "
            f"{incumbent} is {done} warm start(s) from its full training",
        }
    return {
        "mode": "incremental",
        "warm_start": incumbent,
        "epochs": t.warm_epochs,  # on the sessions the serving model has not seen
        "reason": f"warm start {done + 1} of {t.full_every - 1} from {incumbent}",
    }


def _lineage(night: Night, model_name: str) -> dict:
    """A model's lineage as its metrics.json records it ({} when it records none)."""
    path = Path(night.lake.model_named(model_name), "metrics.json")
    try:
        return json.loads(path.read_text()).get("lineage") or {}
    except (OSError, ValueError):
        return {}


def new_refresh_dir(night: Night) -> str:
    from jobs.nightly.promote import FRESH

    return night.lake.new_model_version(night.day, FRESH)


def window_sessions(night: Night) -> list[str]:
    """The session tables of D's window (D included), but days a failed gate keeps out."""
    day = dt.date.fromisoformat(night.day)
    days = [str(day - dt.timedelta(days=i)) for i in range(night.datasets.window_days)]
    out = excluded_days(night.lake, days, night.accepted_days)
    return [night.lake.sessions_day(d) for d in days if d not in out]


def refresh(night: Night, serving: str, out: str) -> list[str]:
    """The serving model (a record name) warm-started on D's sessions into `out`: the model
    that scores D has seen D. New items get rows when D's window index lists them or they
    have min_item_support events in D's window (D included)."""
    lake, t = night.lake, night.train
    cmd = [
        sys.executable, "-m", "gru4rec", "train",
        "--train", lake.sessions_day(night.day),
        # the window's item index: its items get rows whatever their count on D alone
        "--items", lake.items(night.day),
        "--warm-start", lake.model_named(serving),
        "--popularity", lake.popularity(night.day),
        "--params", t.model_params,
        "--warm-epochs", str(t.warm_epochs),
        "--min-new-item-support", str(night.datasets.min_item_support),
        # a new item's support is counted over D's window, as the datasets' filter counts it
        "--support-from", *window_sessions(night),
        "--device", t.device,
        "--no-baselines",
        "--out", out,
    ]  # fmt: skip
    for override in t.model_overrides:
        cmd += ["--set", override]
    return cmd


def train(night: Night, out: str, plan: dict | None = None) -> list[str]:
    """GRU4Rec on tonight's train split into the new version `out`; it samples from the
    popularity table beside the split. With an incremental `plan`, warm-started from the
    serving model (a full training when the CLI refuses its checkpoint, with the reason)."""
    lake, t = night.lake, night.train
    cmd = [
        sys.executable, "-m", "gru4rec", "train",
        "--train", lake.split(night.day, "train"),
        "--test", lake.split(night.day, "test"),
        "--popularity", lake.popularity(night.day),
        "--params", t.model_params,
        "--set", f"n_epochs={t.epochs}",  # a full training's (at most, with selection)
        "--device", t.device,
        "--cutoffs", cutoffs(night.scoring.k),
        "--out", out,
    ]  # fmt: skip
    for override in t.model_overrides:
        cmd += ["--set", override]
    if plan and plan["mode"] == "incremental":
        # a refused warm start falls back to a full training of `epochs`, not `warm_epochs`
        cmd += ["--warm-start", lake.model_named(plan["warm_start"]), "--fallback-full"]
        cmd += ["--warm-epochs", str(plan["epochs"])]
        cmd += ["--min-new-item-support", str(night.datasets.min_item_support)]
    if t.select_epochs and t.epochs > 1:  # a full training (or a refused warm start's)
        splits = [lake.split(night.day, "train_tr"), lake.split(night.day, "valid")]
        cmd += ["--select-epochs", *splits, "--select-by", night.metric]
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
        "--baseline-margin", str(night.promotion.baseline_margin),
        "--k", str(night.scoring.k),
        "--device", night.train.device,
    )  # fmt: skip


def refreshed(night: Night, model_dir: str) -> list[str]:
    """Record that the refreshed `model_dir` scores D (and point live.json at it)."""
    return step(night, "refreshed", "--model", model_dir)


def new_scored_dir(night: Night) -> str:
    """A fresh, unreferenced version directory for tonight's scored table."""
    from jobs.nightly.publish import new_version_path

    return str(new_version_path(night.lake, night.day))


def score(night: Night, serving_model: str, out_dir: str) -> list[str]:
    # A session continuing from the day before is scored after all its events, unless a
    # failed gate keeps that day out of every later night.
    before = dt.date.fromisoformat(night.day) - dt.timedelta(days=1)
    context = []
    if not excluded_days(night.lake, [before], night.accepted_days):
        context = ["--context", night.lake.sessions_day(before)]
    return [
        sys.executable, "-m", "gru4rec", "score",
        "--model", serving_model,
        "--sessions", night.lake.sessions_day(night.day),
        *context,
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
