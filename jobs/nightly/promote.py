"""The promotion gate: is tonight's model good enough to replace the live one?

Both models are evaluated on tonight's test split restricted to the items both of them know (so
they rank the same next-item events; test events whose item only one model knows would favour
it), by the model library's own CLI (`python -m gru4rec evaluate --known-by ...`). Tonight's
model is promoted unless its Recall@k (k = the recommendations served) is worse than the live
model's by more than `margin` (relative, default 5%), or worse than the best baseline by more
than `baseline_margin` (the floor, relative, default 5%; 1 turns it off).

The floor reads the baselines (POP, S-POP, Item-KNN, V-SKNN, STAN) that the train run evaluated
beside the candidate on the same test split, with the same item index and protocol
(`metrics.json`); a candidate without them fails the floor (nothing shows it is good enough).
It applies on every night, the first one too: a first night whose candidate fails it has no
serving model, so D's recommendations are not scored or published (the DAG's score, validation
and publish tasks are skipped, downstream readers keep seeing no table for D), and the decision,
the run report and the model asset event say why. A night whose candidate is not promoted is
`flagged`.

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


class NoServingModel(NoInputError):
    """D has a decision, and it is that no model serves D (a first night below the floor)."""


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


def baseline_floor(metrics: dict | None, metric: str, margin: float) -> dict:
    """Tonight's model against the best baseline of its own train run: a record with
    `passed`, `reason` and the numbers it compared."""
    out: dict = {"metric": metric, "margin": margin}
    if margin >= 1:
        return {**out, "passed": True, "reason": "no baseline floor (baseline_margin 1)"}
    if metrics is None or metric not in metrics:
        return {
            **out,
            "passed": False,
            "reason": f"baseline floor: no {metric} of the candidate on the test split "
            f"(expected it in the model's metrics.json)",
        }
    scored = {
        name: float(values[metric])
        for name, values in (metrics.get("baselines") or {}).items()
        if isinstance(values, dict) and values.get(metric) is not None
    }
    candidate = float(metrics[metric])
    if not scored:
        return {
            **out,
            "candidate": candidate,
            "passed": False,
            "reason": f"baseline floor: no baseline {metric} beside the candidate's (expected "
            f"the train run's baselines in metrics.json; was it trained with --no-baselines?)",
        }
    best = max(sorted(scored), key=scored.__getitem__)
    floor = scored[best] * (1 - margin)
    passed = candidate >= floor
    if passed:
        reason = (
            f"{metric} {candidate:.4f} >= {floor:.4f} (best baseline {best} "
            f"{scored[best]:.4f} minus {margin:.0%})"
        )
    else:
        reason = (
            f"{metric} {candidate:.4f} is worse than the best baseline {best}'s "
            f"{scored[best]:.4f} by more than {margin:.0%} (floor {floor:.4f}) on the test split"
        )
    return {
        **out,
        "candidate": candidate,
        "best_baseline": best,
        "baseline": scored[best],
        "baselines": scored,
        "floor": floor,
        "passed": passed,
        "reason": reason,
    }


def _candidate_metrics(lake: Lake, candidate: str) -> dict | None:
    path = Path(lake.model_named(candidate), "metrics.json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise NoInputError(f"{path}: expected the train run's JSON metrics ({exc})") from None


FRESH = "fresh-"  # version id prefix of a serving model refreshed on D (never a candidate)


def model_versions(lake: Lake, day: str) -> list[str]:
    """Names (`run=D/v=<id>`) of D's complete candidate versions, oldest first."""
    run = Path(lake.model_run(day))
    done = [
        p.name
        for p in run.glob(f"{MODEL_VERSION}=*")
        if (p / C.MODEL_FILE).exists() and not p.name.startswith(f"{MODEL_VERSION}={FRESH}")
    ]
    return [f"{run.name}/{v}" for v in sorted(done)]


def refreshed_model_name(lake: Lake, day: str, serving: str) -> str | None:
    """The version refreshed on D from `serving`, when D has one that is complete."""
    record = Path(lake.refresh_record(day))
    if not record.exists():
        return None
    refresh = json.loads(record.read_text())
    if refresh.get("from") != serving:  # a later decision of D serves another model
        return None
    if not Path(lake.model_named(refresh["model"]), C.MODEL_FILE).exists():
        log.warning("%s names %s, which no longer exists", record, refresh["model"])
        return None
    return refresh["model"]


def scoring_model_name(lake: Lake, day: str) -> str:
    """The exact model version that scores D: the serving model, refreshed on D's sessions
    when the night did that."""
    serving = serving_model_name(lake, day)
    return refreshed_model_name(lake, day, serving) or serving


def scoring_model(lake: Lake, day: str) -> str:
    return lake.model_named(scoring_model_name(lake, day))


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
    """The model version that scored the latest date before `day` (its serving model, or
    that refreshed on its sessions), if it still exists."""
    root = Path(lake.models)
    runs = [(d, p) for p in root.glob("run=*") if (d := date_of_partition(p.name))]
    earlier = sorted((d, p) for d, p in runs if str(d) < day)
    for d, path in reversed(earlier):
        record = path / DECISION
        if record.exists():
            serving = json.loads(record.read_text())["serving_model"]
            if serving is None:  # a first night whose candidate failed the floor
                continue
            serving = refreshed_model_name(lake, str(d), serving) or serving
            if Path(lake.model_named(serving), C.MODEL_FILE).exists():
                return serving
            log.warning("%s serves %s, which no longer exists", path.name, serving)
    return None


def serving_model_name(lake: Lake, day: str) -> str:
    """The exact model version that scores `day` (the promotion gate's decision)."""
    record = Path(lake.model_run(day)) / DECISION
    if not record.exists():
        raise NoInputError(f"no promotion decision for {day}: expected {record}")
    decision = json.loads(record.read_text())
    if decision["serving_model"] is None:
        raise NoServingModel(
            f"no model serves {day}: there is no live model and tonight's was not promoted "
            f"({decision['reason']})"
        )
    return decision["serving_model"]


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
    baseline_margin: float = PromotionSettings.baseline_margin,
) -> dict:
    """Decide for date `day` on `candidate` (a model version of D; default: D's newest),
    record it and move `live.json` forward; returns the decision."""
    settings = PromotionSettings(margin, baseline_margin)  # validated
    margin = settings.margin
    if k < 1:
        raise ConfigError(f"k: expected an integer >= 1, found {k}")
    metric = PromotionSettings.metric(k)
    candidate = candidate_for(lake, day, candidate)
    incumbent = incumbent_for(lake, day)
    beats_live, live_reason, comparison = _judge(lake, day, candidate, incumbent, k, margin, device)
    floor = baseline_floor(_candidate_metrics(lake, candidate), metric, settings.baseline_margin)
    promoted = beats_live and floor["passed"]
    if promoted:
        reason = f"{live_reason}; {floor['reason']}"
    elif not floor["passed"]:
        keeps = "the live model keeps serving" if incumbent else "no model serves this date"
        reason = f"{floor['reason']}; {keeps}"
    else:
        reason = live_reason
    record: dict = {
        "date": day,
        "candidate": candidate,
        "incumbent": incumbent,
        "margin": margin,
        "baseline_margin": settings.baseline_margin,
        "metric": metric,
        **({"comparison": comparison} if comparison is not None else {}),
        "live_check": {"passed": beats_live, "reason": live_reason},
        "floor": floor,
        "promoted": promoted,
        "flagged": not promoted,
        "reason": reason,
        "serving_model": candidate if promoted else incumbent,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    record["live_updated"] = move_live(lake, record) if record["serving_model"] else False
    write_json_atomic(Path(lake.model_run(day)) / DECISION, record)
    log.info(
        "promotion gate for %s: %s (%s); serving %s",
        day,
        "PROMOTED" if promoted else ("KEPT the live model" if incumbent else "NOT PROMOTED"),
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


def record_refresh(lake: Lake, day: str, model_dir: str) -> dict:
    """Record that `model_dir` (a `fresh-` version of D, warm-started from D's serving model
    on D's sessions) scores D, and point `live.json` at it."""
    serving = serving_model_name(lake, day)
    name = lake.model_name(str(Path(model_dir).resolve()))
    if not name.startswith(f"{run_partition(day)}/{MODEL_VERSION}={FRESH}"):
        raise ConfigError(f"--model: expected a {FRESH} version of {day}, found {model_dir}")
    metrics_path = Path(model_dir, "metrics.json")
    if not Path(model_dir, C.MODEL_FILE).exists() or not metrics_path.exists():
        raise NoInputError(f"no refreshed model at {model_dir}: expected model.pt, metrics.json")
    metrics = json.loads(metrics_path.read_text())
    warm = metrics.get("warm_start") or {}
    if Path(warm.get("from", "")).parent.resolve() != Path(lake.model_named(serving)).resolve():
        raise ConfigError(
            f"{model_dir}: expected a warm start from {day}'s serving model {serving}, found "
            f"one from {warm.get('from')}"
        )
    record = {
        "date": day,
        "from": serving,
        "model": name,
        "new_items": warm.get("new_items"),
        "sessions_trained": warm.get("sessions_trained"),
        "events_trained": warm.get("events_trained"),
        # the day's events of new items rarer than min_item_support: not trained, no row
        "new_items_too_rare": warm.get("new_items_too_rare"),
        "events_of_rare_new_items_dropped": warm.get("events_of_rare_new_items_dropped"),
        # and those left in sessions of fewer than 2 trainable events
        "events_of_short_sessions_dropped": warm.get("events_of_short_sessions_dropped"),
        "train_seconds": metrics.get("train_seconds"),
        "refreshed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    pointer = {"date": day, "serving_model": name, "decided_at": record["refreshed_at"]}
    record["live_updated"] = move_live(lake, pointer)
    write_json_atomic(Path(lake.refresh_record(day)), record)
    log.info("%s is scored by %s, %s refreshed on its sessions", day, name, serving)
    return record
