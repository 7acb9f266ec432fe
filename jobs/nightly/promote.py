"""The promotion gate: is tonight's model good enough to replace the live one?

Both models are evaluated on tonight's test split restricted to the items both of them know (so
they rank the same next-item events; test events whose item only one model knows would favour
it), by the model library's own CLI (`python -m gru4rec evaluate --known-by ...`). Tonight's
model is promoted unless its Recall@k (k = the recommendations served) is worse than the live
model's by more than `margin` (relative, default 5%).

Records:
- `models/run=D/promotion.json`: the decision of date D, with `serving_model` (the run
  directory name that scores D). The incumbent of D is the serving model of the latest earlier
  date, so a rerun or backfill of D decides the same way whatever later dates did.
- `models/live.json`: the serving model of the latest date decided (written atomically). A
  backfill of an older date records its own decision but never moves `live.json` back in time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import tempfile
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.errors import ConfigError, NoInputError
from jobs.common.lake import Lake, date_of_partition, run_partition
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


def incumbent_for(lake: Lake, day: str) -> str | None:
    """The run directory name serving the latest date before `day`, if it still exists."""
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


def serving_model(lake: Lake, day: str) -> str:
    """The model directory that scores `day` (the promotion gate's decision)."""
    record = Path(lake.model_run(day)) / DECISION
    if not record.exists():
        raise NoInputError(f"no promotion decision for {day}: expected {record}")
    return lake.model_named(json.loads(record.read_text())["serving_model"])


def _judge(lake: Lake, day: str, incumbent: str | None, k: int, margin: float, device: str):
    """(promoted, reason, comparison or None)."""
    metric = PromotionSettings.metric(k)
    if incumbent is None or incumbent == run_partition(day):
        return (*decide(0.0, None, margin, metric), None)
    result = compare(
        lake.model_run(day), lake.model_named(incumbent), lake.split(day, "test"), k, device
    )
    if result["common_item_events"] == 0:
        return True, "no test event has an item the live model knows", result
    return (
        *decide(result["candidate"][metric], result["incumbent"][metric], margin, metric),
        result,
    )


def gate(lake: Lake, day: str, margin: float, k: int, device: str = "auto") -> dict:
    """Decide for date `day`, record it and move `live.json` forward; returns the decision."""
    margin = PromotionSettings(margin).margin  # validated
    if k < 1:
        raise ConfigError(f"k: expected an integer >= 1, found {k}")
    candidate = run_partition(day)
    if not Path(lake.model_run(day), C.MODEL_FILE).exists():
        raise NoInputError(f"no model for {day}: expected {lake.model_run(day)}/{C.MODEL_FILE}")
    incumbent = incumbent_for(lake, day)
    promoted, reason, comparison = _judge(lake, day, incumbent, k, margin, device)
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
    live_path = Path(lake.live_pointer)
    live = json.loads(live_path.read_text()) if live_path.exists() else None
    record["live_updated"] = live is None or live["date"] <= day
    if record["live_updated"]:
        pointer = {key: record[key] for key in ("date", "serving_model", "decided_at")}
        write_json_atomic(live_path, pointer)
    else:
        log.info("backfill of %s: live.json stays on %s's decision", day, live["date"])
    write_json_atomic(Path(lake.model_run(day)) / DECISION, record)
    log.info(
        "promotion gate for %s: %s (%s); serving %s",
        day,
        "PROMOTED" if promoted else "KEPT the live model",
        reason,
        record["serving_model"],
    )
    return record
