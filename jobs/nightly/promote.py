"""The promotion gate: is tonight's model good enough to replace the live one?

Both models are evaluated on tonight's test split restricted to the items both of them know (so
they rank the same next-item events; test events whose item only one model knows would favour
it), by the model library's own CLI (`python -m gru4rec evaluate --known-by ...`). Tonight's
model is promoted unless its Recall@k (k = the recommendations served) is worse than the live
model's by more than `margin` (relative, default 5%).

Models are immutable versions: each training run of D writes a new `models/run=D/v=<id>/`,
and records name models by that exact version (`run=D/v=<id>`), so a rerun of D never changes
the weights another date serves.

Records:
- `models/run=D/promotion.json`: the decision of date D, with `candidate` (the version trained
  for D) and `serving_model` (the version that scores D). The incumbent of D is the serving
  model of the latest earlier date, so a rerun or backfill of D decides the same way whatever
  later dates did.
- `models/live.json`: the serving model of the latest date decided, read-compared-written
  under an exclusive lock (`models/.live.lock`) and replaced atomically. A backfill of an older
  date records its own decision but never moves `live.json` back in time.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import sys
import tempfile
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.errors import ConfigError, NoInputError
from jobs.common.lake import MODEL_VERSION, Lake, date_of_partition, run_partition
from jobs.common.localfs import write_json_atomic
from jobs.common.settings import PromotionSettings

log = logging.getLogger("jobs.promote")

DECISION = "promotion.json"


def evaluate_cmd(model: str, test: str, known_by: str, k: int, device: str, out: str) -> list[str]:
    """The model library's evaluation of `model` on the events whose items `known_by` knows."""
    from jobs.nightly.commands import cutoffs

    return [
        sys.executable, "-m", "gru4rec", "evaluate",
        "--model", model, "--test", test, "--known-by", known_by,
        "--cutoffs", cutoffs(k), "--device", device, "--out", out,
    ]  # fmt: skip


def compare(candidate: str, incumbent: str, test_path: str, k: int, device: str) -> dict:
    """Evaluate both models (run directories) on the test events whose items both know."""
    from jobs.nightly.runner import run

    out: dict = {"test": str(test_path)}
    with tempfile.TemporaryDirectory(prefix="gru4rec-compare-") as tmp:
        for name, model, other in (
            ("candidate", candidate, incumbent),
            ("incumbent", incumbent, candidate),
        ):
            metrics_dir = f"{tmp}/{name}"
            run(evaluate_cmd(model, test_path, other, k, device, metrics_dir), echo=log.info)
            result = json.loads(Path(metrics_dir, "metrics.json").read_text())
            out["test_events"] = result["test_events"]
            out["common_item_events"] = result["common_item_events"]
            out["evaluated_sessions"] = result.get("test_sessions", 0)
            out[name] = {key: v for key, v in result.items() if "@" in key}
            out[f"{name}_model"] = str(model)
    return out


def decide(
    candidate_metric: float, incumbent_metric: float | None, margin: float, metric: str
) -> tuple:
    """(promoted, reason)."""
    if incumbent_metric is None:
        return True, "no live model yet"
    floor = incumbent_metric * (1 - margin)
    if candidate_metric >= floor:
        return True, (
            f"{metric} {candidate_metric:.4f} >= {floor:.4f} (live {incumbent_metric:.4f} "
            f"minus {margin:.0%})"
        )
    return False, (
        f"{metric} {candidate_metric:.4f} is worse than the live model's {incumbent_metric:.4f} "
        f"by more than {margin:.0%} (floor {floor:.4f}) on the same test events"
    )


def model_versions(lake: Lake, day: str) -> list[str]:
    """Names (`run=D/v=<id>`) of D's complete model versions, oldest first."""
    run = Path(lake.model_run(day))
    done = [p.name for p in run.glob(f"{MODEL_VERSION}=*") if (p / C.MODEL_FILE).exists()]
    return [f"{run.name}/{v}" for v in sorted(done)]


def candidate_for(lake: Lake, day: str, candidate: str | None = None) -> str:
    """The name of D's candidate: `candidate` (a model directory, which must be a version of
    D), else D's newest complete version."""
    if candidate is None:
        versions = model_versions(lake, day)
        if not versions:
            raise NoInputError(
                f"no model for {day}: expected a version {lake.model_run(day)}/v=<id>/ "
                f"with {C.MODEL_FILE}"
            )
        return versions[-1]
    try:
        name = lake.model_name(str(Path(candidate).resolve()))
    except ValueError:
        name = ""
    if not name.startswith(f"{run_partition(day)}/{MODEL_VERSION}="):
        raise ConfigError(
            f"--candidate: expected a model version of {day} under {lake.model_run(day)}, "
            f"found {candidate}"
        )
    if not Path(lake.model_named(name), C.MODEL_FILE).exists():
        raise NoInputError(f"no model at {candidate}: expected {C.MODEL_FILE} in it")
    return name


def tonights_model(lake: Lake, day: str) -> str | None:
    """The directory of the model trained for D that the gate judged (else D's newest
    version; None when D has none): what the run report and the demo show."""
    record = Path(lake.model_run(day)) / DECISION
    if record.exists():
        return lake.model_named(json.loads(record.read_text())["candidate"])
    versions = model_versions(lake, day)
    return lake.model_named(versions[-1]) if versions else None


def incumbent_for(lake: Lake, day: str) -> str | None:
    """The model version serving the latest date before `day`, if it still exists."""
    root = Path(lake.models)
    runs = [(d, p) for p in root.glob("run=*") if (d := date_of_partition(p.name))]
    earlier = sorted((d, p) for d, p in runs if str(d) < day)
    for _, path in reversed(earlier):
        record = path / DECISION
        if record.exists():
            serving = json.loads(record.read_text())["serving_model"]
            if Path(lake.model_named(serving), C.MODEL_FILE).exists():
                return serving
            log.warning("%s serves %s, which no longer exists", path.name, serving)
    return None


def serving_model_name(lake: Lake, day: str) -> str:
    """The exact model version that scores `day` (the promotion gate's decision)."""
    record = Path(lake.model_run(day)) / DECISION
    if not record.exists():
        raise NoInputError(f"no promotion decision for {day}: expected {record}")
    return json.loads(record.read_text())["serving_model"]


def serving_model(lake: Lake, day: str) -> str:
    """The model directory that scores `day`."""
    return lake.model_named(serving_model_name(lake, day))


def _judge(
    lake: Lake, day: str, candidate: str, incumbent: str | None, k: int, margin: float, device
):
    """(promoted, reason, comparison or None)."""
    metric = PromotionSettings.metric(k)
    if incumbent is None:
        return (*decide(0.0, None, margin, metric), None)
    if incumbent == candidate:
        return True, "the candidate is the live model", None
    result = compare(
        lake.model_named(candidate),
        lake.model_named(incumbent),
        lake.split(day, "test"),
        k,
        device,
    )
    if result["common_item_events"] == 0:
        return True, "no test event has an item the live model knows", result
    return (
        *decide(result["candidate"][metric], result["incumbent"][metric], margin, metric),
        result,
    )


def gate(
    lake: Lake,
    day: str,
    margin: float,
    k: int,
    device: str = "auto",
    candidate: str | None = None,
) -> dict:
    """Decide for date `day` on `candidate` (a model version of D; default: D's newest),
    record it and move `live.json` forward; returns the decision."""
    margin = PromotionSettings(margin).margin  # validated
    if k < 1:
        raise ConfigError(f"k: expected an integer >= 1, found {k}")
    candidate = candidate_for(lake, day, candidate)
    incumbent = incumbent_for(lake, day)
    promoted, reason, comparison = _judge(lake, day, candidate, incumbent, k, margin, device)
    record: dict = {
        "date": day,
        "candidate": candidate,
        "incumbent": incumbent,
        "margin": margin,
        "metric": PromotionSettings.metric(k),
        **({"comparison": comparison} if comparison is not None else {}),
        "promoted": promoted,
        "reason": reason,
        "serving_model": candidate if promoted else incumbent,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    record["live_updated"] = move_live(lake, record)
    write_json_atomic(Path(lake.model_run(day)) / DECISION, record)
    log.info(
        "promotion gate for %s: %s (%s); serving %s",
        day,
        "PROMOTED" if promoted else "KEPT the live model",
        reason,
        record["serving_model"],
    )
    return record


def move_live(lake: Lake, record: dict) -> bool:
    """Point `live.json` at `record`'s serving model unless a later date's decision is already
    live; read, compare and write under an exclusive lock, so concurrent gates never move it
    backwards. Returns whether it moved."""
    live_path = Path(lake.live_pointer)
    live_path.parent.mkdir(parents=True, exist_ok=True)
    with open(live_path.with_name(".live.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when the process dies
        live = json.loads(live_path.read_text()) if live_path.exists() else None
        if live is not None and live["date"] > record["date"]:
            log.info(
                "backfill of %s: live.json stays on %s's decision", record["date"], live["date"]
            )
            return False
        pointer = {key: record[key] for key in ("date", "serving_model", "decided_at")}
        write_json_atomic(live_path, pointer)
        return True
