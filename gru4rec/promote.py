"""The promotion gate: is tonight's model good enough to replace the live one?

Both models are evaluated on tonight's test split restricted to the items both of them know (so
they rank the same next-item events; test events whose item only one model knows would favour
it). Tonight's model is promoted unless its Recall@20 is worse than the live model's by more
than `margin` (relative, default 5%).

Records, under the models root (`<lake>/models`):
- `run=D/promotion.json`: the decision of date D, with `serving_model` (the run directory name
  that scores D). The incumbent of D is the serving model of the latest earlier date, so a
  rerun or backfill of D decides the same way whatever later dates did.
- `live.json`: the serving model of the latest date decided (written atomically). A backfill of
  an older date records its own decision but never moves `live.json` back in time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np

from jobs.common.errors import ConfigError, NoInputError
from jobs.common.localfs import write_json_atomic

log = logging.getLogger("gru4rec.promote")

DECISION = "promotion.json"
LIVE = "live.json"
METRIC = "recall@20"


def compare(
    candidate: str | Path,
    incumbent: str | Path,
    test_path: str | Path,
    device: str = "auto",
    cutoffs: tuple[int, ...] = (1, 5, 10, 20),
    ties: str = "conservative",
) -> dict:
    """Evaluate both checkpoints on the test events whose items both know."""
    from gru4rec import checkpoint as ckpt
    from gru4rec.data import build_sessions, read_events
    from gru4rec.evaluate import evaluate_model
    from gru4rec.train import resolve_device

    frame = read_events(test_path)
    models = {"candidate": ckpt.Checkpoint(candidate), "incumbent": ckpt.Checkpoint(incumbent)}
    ids = frame["item_id"].to_numpy(dtype=object)
    common = np.ones(len(frame), dtype=bool)
    for loaded in models.values():
        common &= loaded.item_map.lookup(ids) >= 0
    shared = frame[common]
    out: dict = {
        "test": str(test_path),
        "test_events": int(len(frame)),
        "common_item_events": int(common.sum()),
    }
    for name, loaded in models.items():
        model = loaded.model(resolve_device(device))
        data = build_sessions(shared, loaded.item_map, f"test ({name})")
        out[name] = evaluate_model(model, data, cutoffs, ties)
        out[f"{name}_model"] = str(loaded.path.parent)
        out["evaluated_sessions"] = data.n_sessions
    return out


def decide(candidate_metric: float, incumbent_metric: float | None, margin: float) -> tuple:
    """(promoted, reason)."""
    if incumbent_metric is None:
        return True, "no live model yet"
    floor = incumbent_metric * (1 - margin)
    if candidate_metric >= floor:
        return True, (
            f"{METRIC} {candidate_metric:.4f} >= {floor:.4f} (live {incumbent_metric:.4f} "
            f"minus {margin:.0%})"
        )
    return False, (
        f"{METRIC} {candidate_metric:.4f} is worse than the live model's {incumbent_metric:.4f} "
        f"by more than {margin:.0%} (floor {floor:.4f}) on the same test events"
    )


def _date_of(run_name: str) -> str | None:
    if not run_name.startswith("run="):
        return None
    try:
        return str(dt.date.fromisoformat(run_name[4:]))
    except ValueError:
        return None


def incumbent_for(models_root: str | Path, day: str) -> str | None:
    """The run directory name serving the latest date before `day`, if it still exists."""
    root = Path(models_root)
    earlier = sorted((d, p) for p in root.glob("run=*") if (d := _date_of(p.name)) and d < day)
    for _, path in reversed(earlier):
        record = path / DECISION
        if record.exists():
            serving = json.loads(record.read_text())["serving_model"]
            if (root / serving / "model.pt").exists():
                return serving
            log.warning("%s serves %s, which no longer exists", path.name, serving)
    return None


def gate(
    models_root: str | Path,
    day: str,
    test_path: str | Path,
    margin: float = 0.05,
    device: str = "auto",
) -> dict:
    """Decide for date `day`, record it and move `live.json` forward; returns the decision."""
    if not 0 <= margin < 1:
        raise ConfigError(f"margin: expected a fraction in [0, 1), found {margin}")
    root = Path(models_root)
    candidate = f"run={day}"
    if not (root / candidate / "model.pt").exists():
        raise NoInputError(f"no model for {day}: expected {root / candidate}/model.pt")
    incumbent = incumbent_for(root, day)
    record: dict = {
        "date": day,
        "candidate": candidate,
        "incumbent": incumbent,
        "margin": margin,
        "metric": METRIC,
    }
    if incumbent is None or incumbent == candidate:
        promoted, reason = decide(0.0, None, margin)
    else:
        result = compare(root / candidate, root / incumbent, test_path, device)
        record["comparison"] = result
        if result["common_item_events"] == 0:
            promoted, reason = True, "no test event has an item the live model knows"
        else:
            promoted, reason = decide(
                result["candidate"][METRIC], result["incumbent"][METRIC], margin
            )
    record.update(
        promoted=promoted,
        reason=reason,
        serving_model=candidate if promoted else incumbent,
        decided_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    live_path = root / LIVE
    live = json.loads(live_path.read_text()) if live_path.exists() else None
    if live is None or live["date"] <= day:
        live_record = {k: record[k] for k in ("date", "serving_model", "decided_at")}
        write_json_atomic(live_path, live_record)
        record["live_updated"] = True
    else:
        record["live_updated"] = False
        log.info("backfill of %s: live.json stays on %s's decision", day, live["date"])
    write_json_atomic(root / candidate / DECISION, record)
    log.info(
        "promotion gate for %s: %s (%s); serving %s",
        day,
        "PROMOTED" if promoted else "KEPT the live model",
        reason,
        record["serving_model"],
    )
    return record
