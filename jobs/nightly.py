"""What each task of the nightly DAG runs: configuration, command lines and the Python steps.

The DAG (`dags/gru4rec_nightly.py`) only orchestrates; every task calls one function here that
starts one process: `spark-submit jobs/<job>.py ...` for the Spark stages, `python -m gru4rec
...` for training and scoring, `python -m jobs.nightly <step>` for the promotion gate, the
recommendations' quality gate and the publish. Heavy libraries are never imported by the
Airflow worker itself.

Failures are classified by exit status: 2 means the data or the configuration is wrong (a
failed quality suite, a missing column, an empty split): `DataFailure`, which the DAG turns into
a failure without retries; anything else (a killed JVM, a lost node, out of memory) is an
`InfraFailure` and retried with backoff.

    python -m jobs.nightly evaluate                 --lake L --date D [--margin 0.05]
    python -m jobs.nightly validate-recommendations --lake L --date D --staged DIR
    python -m jobs.nightly publish                  --lake L --date D --staged DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from jobs.common.localfs import write_json_atomic

JOBS_DIR = Path(__file__).resolve().parent
# "2026-01-05 10:00:00,000 ERROR jobs: QualityGateError: ..." (run_main / the gru4rec CLI)
OUR_ERROR = re.compile(r" ERROR (?:jobs|gru4rec)[\w.]*: ")
PROJECT_ROOT = JOBS_DIR.parent


class DataFailure(Exception):
    """Exit status 2: bad data or configuration. Retrying cannot help."""


class InfraFailure(Exception):
    """Any other failure of a step: worth retrying."""


def _env_json(name: str, default):
    value = os.environ.get(name)
    return json.loads(value) if value else default


def default_params() -> dict:
    """The DAG's params and their defaults; each default can be set by an environment variable
    of the deployment (GRU4REC_<NAME>), so a real deployment changes configuration, not code."""
    lake = os.environ.get("GRU4REC_LAKE", str(PROJECT_ROOT / "var" / "lake"))
    return {
        "lake": lake,
        "quality_root": os.environ.get("GRU4REC_QUALITY_ROOT", ""),
        "raw_input": os.environ.get("GRU4REC_RAW_INPUT", "{lake}/raw/dt={ds}"),
        "source_preset": os.environ.get("GRU4REC_SOURCE_PRESET", "synthetic"),
        "column_mapping": _env_json("GRU4REC_COLUMN_MAPPING", {}),
        "window_days": int(os.environ.get("GRU4REC_WINDOW_DAYS", 30)),
        "test_days": int(os.environ.get("GRU4REC_TEST_DAYS", 1)),
        "valid_days": int(os.environ.get("GRU4REC_VALID_DAYS", 1)),
        "alpha": float(os.environ.get("GRU4REC_ALPHA", 0.5)),
        "model_params": os.environ.get("GRU4REC_MODEL_PARAMS", "rsc15"),
        "epochs": int(os.environ.get("GRU4REC_EPOCHS", 10)),
        "model_overrides": _env_json("GRU4REC_MODEL_OVERRIDES", []),
        "spark_master": os.environ.get("GRU4REC_SPARK_MASTER", "local[*]"),
        "spark_conf": _env_json("GRU4REC_SPARK_CONF", {}),
        "device": os.environ.get("GRU4REC_DEVICE", "auto"),
        "promotion_margin": float(os.environ.get("GRU4REC_PROMOTION_MARGIN", 0.05)),
        "quality_thresholds": _env_json("GRU4REC_QUALITY_THRESHOLDS", {}),
        "k": int(os.environ.get("GRU4REC_K", 20)),
    }


@dataclasses.dataclass(frozen=True)
class Nightly:
    """One night's configuration: the params resolved for date `day` (the day processed)."""

    day: str
    lake: str
    quality_root: str
    raw_input: str
    source_preset: str
    column_mapping: dict
    window_days: int
    test_days: int
    valid_days: int
    alpha: float
    model_params: str
    epochs: int
    model_overrides: tuple
    spark_master: str
    spark_conf: dict
    device: str
    promotion_margin: float
    quality_thresholds: dict
    k: int

    @classmethod
    def from_params(cls, params: dict, day: str | dt.date) -> Nightly:
        p = {**default_params(), **{k: v for k, v in params.items() if v is not None}}
        unknown = sorted(set(p) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise DataFailure(f"unknown params {unknown}")
        day = str(dt.date.fromisoformat(str(day)))
        lake = str(p["lake"]).rstrip("/")
        if "://" not in lake:
            lake = str(Path(lake).expanduser().resolve())
        quality_root = p["quality_root"] or f"{lake}/quality"
        raw_input = str(p["raw_input"]).replace("{lake}", lake)
        if p["window_days"] < p["test_days"] + 1:
            raise DataFailure(
                f"window_days ({p['window_days']}) must exceed test_days ({p['test_days']})"
            )
        if p["epochs"] < 1:
            raise DataFailure(f"epochs: expected >= 1, found {p['epochs']}")
        p.update(
            day=day,
            lake=lake,
            quality_root=quality_root,
            raw_input=raw_input,
            model_overrides=tuple(p["model_overrides"]),
        )
        return cls(**p)

    # -- paths --------------------------------------------------------------------------
    @property
    def datasets(self) -> str:
        return f"{self.lake}/datasets/run={self.day}"

    @property
    def models(self) -> str:
        return f"{self.lake}/models"

    @property
    def model_dir(self) -> str:
        return f"{self.models}/run={self.day}"

    @property
    def sessions(self) -> str:
        return f"{self.lake}/sessions/dt={self.day}"

    @property
    def recommendations(self) -> str:
        return f"{self.lake}/recommendations"

    @property
    def quality_dir(self) -> str:
        return f"{self.quality_root}/dt={self.day}"

    def serving_model(self) -> str:
        """The model directory that scores tonight (the promotion gate's decision)."""
        record = Path(self.model_dir) / "promotion.json"
        if not record.exists():
            raise DataFailure(f"no promotion decision for {self.day}: expected {record}")
        return f"{self.models}/{json.loads(record.read_text())['serving_model']}"

    # -- command lines ------------------------------------------------------------------
    def _common_job_args(self) -> list[str]:
        args = ["--lake", self.lake]
        for key, value in self.spark_conf.items():
            args += ["--conf", f"{key}={value}"]
        return args

    def spark_submit(self, job: str, *args: str) -> list[str]:
        """`spark-submit` of jobs/<job>.py against the configured master."""
        submit = os.environ.get("SPARK_SUBMIT") or shutil.which("spark-submit")
        if not submit:
            candidate = Path(sys.executable).with_name("spark-submit")
            submit = str(candidate) if candidate.exists() else "spark-submit"
        cmd = [submit, "--master", self.spark_master]
        for key, value in self.spark_conf.items():
            cmd += ["--conf", f"{key}={value}"]
        return [*cmd, str(JOBS_DIR / f"{job}.py"), *self._common_job_args(), *args]

    def ingest_cmd(self, mapping_file: str | None) -> list[str]:
        args = ["--input", self.raw_input, "--date", self.day]
        if "{ds}" in self.raw_input:
            args += ["--catch-up-days", str(self.window_days)]
        if self.source_preset:
            args += ["--preset", self.source_preset]
        if mapping_file:
            args += ["--mapping", mapping_file]
        return self.spark_submit("ingest", *args)

    def validate_cmd(self, dataset: str) -> list[str]:
        args = [dataset, "--date", self.day, "--quality-root", self.quality_root]
        args += ["--thresholds", json.dumps(self.quality_thresholds)]
        if dataset != "datasets":
            args += ["--catch-up-days", str(self.window_days)]
        return self.spark_submit("validate", *args)

    def sessionize_cmd(self) -> list[str]:
        return self.spark_submit(
            "sessionize", "--date", self.day, "--catch-up-days", str(self.window_days)
        )

    def build_datasets_cmd(self) -> list[str]:
        return self.spark_submit(
            "build_datasets",
            "--date", self.day,
            "--window-days", str(self.window_days),
            "--test-days", str(self.test_days),
            "--valid-days", str(self.valid_days),
        )  # fmt: skip

    def popularity_cmd(self) -> list[str]:
        return self.spark_submit("popularity", "--date", self.day, "--alpha", str(self.alpha))

    def train_cmd(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "gru4rec", "train",
            "--train", f"{self.datasets}/train",
            "--test", f"{self.datasets}/test",
            "--params", self.model_params,
            "--set", f"n_epochs={self.epochs}",
            "--device", self.device,
            "--out", self.model_dir,
        ]  # fmt: skip
        for override in self.model_overrides:
            cmd += ["--set", override]
        return cmd

    def _step(self, name: str, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "jobs.nightly", name,
            "--lake", self.lake, "--quality-root", self.quality_root, "--date", self.day,
            *args,
        ]  # fmt: skip

    def evaluate_cmd(self) -> list[str]:
        return self._step(
            "evaluate", "--margin", str(self.promotion_margin), "--device", self.device
        )

    def score_cmd(self) -> list[str]:
        return [
            sys.executable, "-m", "gru4rec", "score",
            "--model", self.serving_model(),
            "--sessions", self.sessions,
            "--out", self.recommendations,
            "--date", self.day,
            "--k", str(self.k),
            "--device", self.device,
            "--no-publish",
        ]  # fmt: skip

    def validate_recommendations_cmd(self, staged: str) -> list[str]:
        return self._step("validate-recommendations", "--staged", staged)

    def publish_cmd(self, staged: str) -> list[str]:
        return self._step("publish", "--staged", staged)

    def mapping_file(self) -> str | None:
        """The column mapping as a JSON file ingest reads (None when there is none)."""
        if not self.column_mapping:
            return None
        fd, path = tempfile.mkstemp(prefix="gru4rec-mapping-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.column_mapping, f)
        return path


# -- running a step -----------------------------------------------------------------------
def step_env(master: str) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    if master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env["PYTHONPATH"]) if p)
    return env


def run(cmd: Sequence[str], env: dict | None = None, echo=print) -> str:
    """Run one step; stream its output into the task log; return its stdout.

    Raises DataFailure (exit 2) or InfraFailure (any other non-zero exit), with the step's
    last error lines in the message.
    """
    echo("$ " + " ".join(cmd))
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or step_env("local"),
        cwd=PROJECT_ROOT,
    )
    tail: deque[str] = deque(maxlen=40)
    ours: list[str] = []  # error lines of this project's loggers (Spark logs a lot after them)

    def pump_err() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if OUR_ERROR.search(line):
                ours.append(line)
            echo(line)

    t = threading.Thread(target=pump_err, daemon=True)
    t.start()
    out = []
    for line in proc.stdout:  # spark-submit forwards the Python driver's stderr here
        out.append(line)
        if OUR_ERROR.search(line):
            ours.append(line.rstrip("\n"))
        echo(line.rstrip("\n"))
    rc = proc.wait()
    t.join()
    if rc == 0:
        return "".join(out)
    others = [ln for ln in tail if " ERROR " in ln or "Error" in ln or "error:" in ln]
    reason = (ours or others or list(tail)[-3:] or ["no output"])[-1]
    # The one-line message after "ERROR <logger>: " is what people need to read.
    reason = OUR_ERROR.split(reason, maxsplit=1)[-1] if OUR_ERROR.search(reason) else reason
    if rc == 2:
        raise DataFailure(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}: {reason}")
    raise InfraFailure(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited with {rc}: {reason}")


def last_json(stdout: str) -> dict:
    """The JSON object a CLI printed last."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{") :])


# -- the Python steps ---------------------------------------------------------------------
# (heavy imports stay inside the steps: the DAG imports this module while parsing)
def _report(args) -> None:
    from jobs.report import write_run_report

    write_run_report(args.lake, args.quality_root, args.date)


def cmd_evaluate(args) -> int:
    from gru4rec.promote import gate

    lake = Path(args.lake)
    test = lake / "datasets" / f"run={args.date}" / "test"
    decision = gate(lake / "models", args.date, test, args.margin, args.device)
    write_json_atomic(Path(args.quality_root) / f"dt={args.date}" / "promotion.json", decision)
    _report(args)
    print(json.dumps(decision, indent=2, default=str))
    return 0


def cmd_validate_recommendations(args) -> int:
    from gru4rec.score import ValidationError, validate_staged
    from jobs.quality import QualityGateError, QualityStore

    cfg = Nightly.from_params({"lake": args.lake, "quality_root": args.quality_root}, args.date)
    store = QualityStore(cfg.quality_dir)
    try:
        validate_staged(args.staged, cfg.serving_model(), cfg.sessions, store=store)
    except ValidationError as exc:
        raise QualityGateError(f"{exc} (Data Docs: {store.docs_index})") from None
    finally:
        _report(args)
    return 0


def cmd_publish(args) -> int:
    from gru4rec.score import publish_staged

    staged = Path(args.staged)
    summary = json.loads((staged / "_summary.json").read_text())
    result = publish_staged(Path(args.lake) / "recommendations", args.date, staged, summary)
    result["published_at"] = dt.datetime.now(dt.UTC).isoformat()
    write_json_atomic(Path(args.quality_root) / f"dt={args.date}" / "publish.json", result)
    _report(args)
    print(json.dumps(result, indent=2, default=str))
    return 0


STEPS = {
    "evaluate": cmd_evaluate,
    "validate-recommendations": cmd_validate_recommendations,
    "publish": cmd_publish,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.nightly", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--lake", required=True)
    parser.add_argument("--quality-root", default=None)
    parser.add_argument("--date", required=True, type=lambda s: str(dt.date.fromisoformat(s)))
    parser.add_argument("--margin", type=float, default=0.05, help="promotion margin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--staged", help="the scored, unpublished version directory")
    args = parser.parse_args(argv)
    args.quality_root = args.quality_root or f"{args.lake.rstrip('/')}/quality"
    if args.step != "evaluate" and not args.staged:
        parser.error(f"{args.step} needs --staged")
    return STEPS[args.step](args)


if __name__ == "__main__":
    from jobs.common.cli import run_main

    run_main(main)
