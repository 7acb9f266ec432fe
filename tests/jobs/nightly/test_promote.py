"""The promotion gate's decision, its records, and the live pointer that never moves back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common.lake import Lake
from jobs.nightly import promote


def test_decide_margin_is_relative():
    m = "recall@20"
    assert promote.decide(0.30, None, 0.05, m)[0]
    assert promote.decide(0.4751, 0.5, 0.05, m)[0]  # floor 0.475
    promoted, reason = promote.decide(0.4749, 0.5, 0.05, m)
    assert not promoted and "0.4749" in reason and "0.5000" in reason and "5%" in reason
    assert promote.decide(0.5, 0.5, 0.0, m)[0]
    assert not promote.decide(0.4999, 0.5, 0.0, m)[0]


def _metrics(recall: float, **baselines: float) -> dict:
    """A train run's metrics.json: the candidate's and its baselines' Recall@20."""
    return {
        "recall@20": recall,
        "baselines": {name: {"recall@20": r, "mrr@20": r / 2} for name, r in baselines.items()},
    }


GOOD = _metrics(0.5, pop=0.2, stan=0.45)  # above the floor


def _model(lake, day, serving=None, version="a", weights=b"x", metrics=GOOD):
    """A model version of `day` (and, with `serving`, a decision naming what served it)."""
    d = Path(lake.model_version(day, version))
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(weights)
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if serving:
        (Path(lake.model_run(day)) / "promotion.json").write_text(
            json.dumps({"serving_model": serving})
        )
    return f"run={day}/v={version}"


def test_gate_keeps_the_live_model_when_tonight_is_worse(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    models = tmp_path / "models"
    _model(lake, "2026-01-01", serving="run=2026-01-01/v=a")
    _model(lake, "2026-01-02")
    calls = []

    def fake_compare(candidate, incumbent, test, k, device):
        calls.append((lake.model_name(candidate), lake.model_name(incumbent), Path(test).name, k))
        return {
            "common_item_events": 100,
            "candidate": {"recall@20": 0.40},
            "incumbent": {"recall@20": 0.50},
        }

    monkeypatch.setattr(promote, "compare", fake_compare)
    record = promote.gate(lake, "2026-01-02", margin=0.05, k=20)
    assert calls == [("run=2026-01-02/v=a", "run=2026-01-01/v=a", "test", 20)]
    assert not record["promoted"] and record["serving_model"] == "run=2026-01-01/v=a"
    assert "worse than the live model" in record["reason"]
    saved = json.loads((models / "run=2026-01-02" / "promotion.json").read_text())
    assert (
        saved["serving_model"] == "run=2026-01-01/v=a"
        and saved["incumbent"] == "run=2026-01-01/v=a"
    )
    live = json.loads((models / "live.json").read_text())
    assert live == {k: saved[k] for k in ("date", "serving_model", "decided_at")}

    # The next night's incumbent is what served the 2nd (still the 1st's model).
    _model(lake, "2026-01-03")
    assert promote.incumbent_for(lake, "2026-01-03") == "run=2026-01-01/v=a"

    # A backfill of an older date decides for itself but never moves live.json back.
    _model(lake, "2025-12-31")
    old = promote.gate(lake, "2025-12-31", margin=0.05, k=20)
    assert old["promoted"] and old["reason"].startswith("no live model yet;")
    assert not old["live_updated"]
    assert json.loads((models / "live.json").read_text())["date"] == "2026-01-02"


def test_gate_promotes_within_the_margin_and_skips_vanished_incumbents(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    models = tmp_path / "models"
    _model(lake, "2026-01-01", serving="run=2026-01-01/v=a")
    _model(lake, "2026-01-02")
    monkeypatch.setattr(
        promote,
        "compare",
        lambda *a, **k: {
            "common_item_events": 10,
            "candidate": {"recall@20": 0.48},
            "incumbent": {"recall@20": 0.50},
        },
    )
    record = promote.gate(lake, "2026-01-02", margin=0.05, k=20)
    assert record["promoted"] and record["serving_model"] == "run=2026-01-02/v=a"
    (models / "run=2026-01-01" / "v=a" / "model.pt").unlink()
    _model(lake, "2026-01-03")
    assert promote.incumbent_for(lake, "2026-01-03") == "run=2026-01-02/v=a"
    with pytest.raises(Exception, match="margin"):
        promote.gate(lake, "2026-01-03", margin=1.5, k=20)


def test_the_gate_metric_follows_k(tmp_path, monkeypatch):
    """With k = 10 the gate compares Recall@10, not a hard-coded Recall@20."""
    lake = Lake(str(tmp_path))
    _model(lake, "2026-01-01", serving="run=2026-01-01/v=a")
    floor_ok = {"recall@10": 0.2, "baselines": {"stan": {"recall@10": 0.1}}}
    _model(lake, "2026-01-02", metrics=floor_ok)
    monkeypatch.setattr(
        promote,
        "compare",
        lambda *a, **k: {
            "common_item_events": 10,
            # better at 20, much worse at 10: only a gate at k = 10 keeps the live model
            "candidate": {"recall@10": 0.20, "recall@20": 0.60},
            "incumbent": {"recall@10": 0.40, "recall@20": 0.50},
        },
    )
    record = promote.gate(lake, "2026-01-02", margin=0.05, k=10)
    assert record["metric"] == "recall@10"
    assert not record["promoted"] and "recall@10 0.2000" in record["reason"]


def test_a_rerun_makes_a_new_version_and_later_dates_keep_serving_the_old_one(
    tmp_path, monkeypatch
):
    """Models are immutable versions: rerunning D trains a new version of D; a later date
    whose decision served D's model still serves the same weights."""
    lake = Lake(str(tmp_path))
    better = {
        "common_item_events": 10,
        "candidate": {"recall@20": 0.6},
        "incumbent": {"recall@20": 0.5},
    }
    monkeypatch.setattr(promote, "compare", lambda *a, **k: better)
    _model(lake, "2026-01-01", version="20260101T000000Z-aaaaaa", weights=b"first")
    first = promote.gate(lake, "2026-01-01", margin=0.05, k=20)
    assert first["serving_model"] == "run=2026-01-01/v=20260101T000000Z-aaaaaa"
    worse = {
        "common_item_events": 10,
        "candidate": {"recall@20": 0.1},
        "incumbent": {"recall@20": 0.5},
    }
    monkeypatch.setattr(promote, "compare", lambda *a, **k: worse)
    _model(lake, "2026-01-02")
    second = promote.gate(lake, "2026-01-02", margin=0.05, k=20)
    assert not second["promoted"] and second["serving_model"] == first["serving_model"]
    # the rerun of the 1st: a newer version next to the old one, which stays untouched
    rerun_dir = Path(lake.new_model_version("2026-01-01"))
    rerun_dir.mkdir()
    (rerun_dir / "model.pt").write_bytes(b"retrained")
    rerun = promote.gate(lake, "2026-01-01", margin=0.05, k=20)
    assert rerun["candidate"] == lake.model_name(str(rerun_dir)) != first["candidate"]
    assert promote.model_versions(lake, "2026-01-01") == [first["candidate"], rerun["candidate"]]
    served = Path(lake.model_named(promote.serving_model_name(lake, "2026-01-02")), "model.pt")
    assert served.read_bytes() == b"first"
    assert Path(promote.serving_model(lake, "2026-01-02"), "model.pt").read_bytes() == b"first"
    # a candidate that is not a version of the date is refused
    with pytest.raises(Exception, match="expected a model version of 2026-01-02"):
        promote.gate(lake, "2026-01-02", 0.05, 20, candidate=str(rerun_dir))


LIVE_WRITER = """
import json, sys, time
from pathlib import Path
from jobs.common.lake import Lake
from jobs.nightly import promote
lake, days = Lake(sys.argv[1]), sys.argv[2].split(",")
while not Path(sys.argv[1], "go").exists():  # both start together
    time.sleep(0.001)
for day in days:
    promote.move_live(lake, {"date": day, "serving_model": f"run={day}/v=a", "decided_at": "t"})
"""


def test_concurrent_gates_never_move_the_live_pointer_backwards(tmp_path):
    """Two real processes decide interleaved dates; live.json ends on the latest date, and
    a reader never sees it move back or read a partial file."""
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[3]
    lake = Lake(str(tmp_path))
    import datetime as dt

    days = [str(dt.date(2000, 1, 1) + dt.timedelta(days=i)) for i in range(3000)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LIVE_WRITER, str(tmp_path), ",".join(part)], env=env, cwd=root
        )
        for part in (days[::2], days[1::2])  # interleaved dates, both forward
    ]
    time.sleep(1)
    (tmp_path / "go").touch()
    seen = []
    live = Path(lake.live_pointer)
    while any(p.poll() is None for p in procs):
        if live.exists():
            seen.append(json.loads(live.read_text())["date"])  # never a partial file
    assert all(p.wait() == 0 for p in procs)
    final = json.loads(live.read_text())
    assert final["date"] == max(days) and final["serving_model"] == f"run={max(days)}/v=a"
    assert seen == sorted(seen), "live.json moved backwards"


def test_baseline_floor_against_hand_numbers():
    m = "recall@20"
    ok = promote.baseline_floor(_metrics(0.4941, pop=0.2, stan=0.52, vsknn=0.51), m, 0.05)
    assert ok["passed"] and ok["best_baseline"] == "stan" and ok["floor"] == pytest.approx(0.494)
    low = promote.baseline_floor(_metrics(0.4939, pop=0.2, stan=0.52, vsknn=0.51), m, 0.05)
    assert not low["passed"] and "stan" in low["reason"] and "0.5200" in low["reason"]
    assert promote.baseline_floor(_metrics(0.52, stan=0.52), m, 0.0)["passed"]
    assert not promote.baseline_floor(_metrics(0.5199, stan=0.52), m, 0.0)["passed"]
    # 1 turns the floor off; without baselines (or without the metric) nothing shows the
    # candidate is good enough, so it fails
    assert promote.baseline_floor(_metrics(0.01, stan=0.9), m, 1.0)["passed"]
    bare = promote.baseline_floor({"recall@20": 0.5}, m, 0.05)
    assert not bare["passed"] and "no baseline recall@20" in bare["reason"]
    assert not promote.baseline_floor(None, m, 0.05)["passed"]
    assert not promote.baseline_floor(_metrics(0.5, stan=0.1), "recall@10", 0.05)["passed"]


def test_a_candidate_that_beats_the_live_model_but_not_the_floor_is_not_promoted(
    tmp_path, monkeypatch
):
    lake = Lake(str(tmp_path))
    _model(lake, "2026-01-01", serving="run=2026-01-01/v=a")
    _model(lake, "2026-01-02", metrics=_metrics(0.40, pop=0.2, stan=0.50))
    monkeypatch.setattr(
        promote,
        "compare",
        lambda *a, **k: {
            "common_item_events": 10,
            "candidate": {"recall@20": 0.60},  # much better than the live model
            "incumbent": {"recall@20": 0.50},
        },
    )
    record = promote.gate(lake, "2026-01-02", margin=0.05, k=20, baseline_margin=0.05)
    assert record["live_check"]["passed"] and not record["floor"]["passed"]
    assert not record["promoted"] and record["flagged"]
    assert record["serving_model"] == "run=2026-01-01/v=a"
    assert "best baseline stan" in record["reason"]
    assert "live model keeps serving" in record["reason"]
    saved = json.loads((tmp_path / "models" / "run=2026-01-02" / "promotion.json").read_text())
    assert saved["floor"]["best_baseline"] == "stan" and saved["floor"]["baseline"] == 0.5
    # the same candidate with a looser floor is promoted
    looser = promote.gate(lake, "2026-01-02", margin=0.05, k=20, baseline_margin=0.25)
    assert looser["promoted"] and not looser["flagged"]


def test_a_first_night_below_the_floor_serves_nothing_and_the_next_good_night_does(
    tmp_path, monkeypatch
):
    lake = Lake(str(tmp_path))
    live = tmp_path / "models" / "live.json"
    _model(lake, "2026-01-01", metrics=_metrics(0.30, pop=0.2, stan=0.50))
    first = promote.gate(lake, "2026-01-01", margin=0.05, k=20)
    assert not first["promoted"] and first["serving_model"] is None and first["flagged"]
    assert "no model serves this date" in first["reason"] and not first["live_updated"]
    assert not live.exists()
    with pytest.raises(promote.NoServingModel, match="no model serves 2026-01-01"):
        promote.serving_model(lake, "2026-01-01")
    # the next night has no incumbent either, and a candidate above the floor is promoted
    _model(lake, "2026-01-02")
    assert promote.incumbent_for(lake, "2026-01-02") is None
    second = promote.gate(lake, "2026-01-02", margin=0.05, k=20)
    assert second["promoted"] and second["serving_model"] == "run=2026-01-02/v=a"
    assert json.loads(live.read_text())["serving_model"] == "run=2026-01-02/v=a"


def _fresh(lake, day, from_dir: str, version="fresh-b") -> str:
    d = Path(lake.model_version(day, version))
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"refreshed")
    warm = {"from": f"{from_dir}/model.pt", "new_items": 3, "events_trained": 40}
    (d / "metrics.json").write_text(json.dumps({"warm_start": warm, "train_seconds": 1.0}))
    return str(d)


def test_the_refreshed_model_scores_the_date_and_is_the_next_incumbent(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    _model(lake, "2026-01-01")
    first = promote.gate(lake, "2026-01-01", margin=0.05, k=20)
    serving = first["serving_model"]
    assert promote.scoring_model_name(lake, "2026-01-01") == serving  # not refreshed (yet)
    # a refresh must be a fresh- version of the date, warm-started from its serving model
    with pytest.raises(Exception, match="expected a fresh- version"):
        promote.record_refresh(lake, "2026-01-01", lake.model_named(serving))
    stranger = _fresh(lake, "2026-01-01", str(tmp_path / "elsewhere"), version="fresh-x")
    with pytest.raises(Exception, match="expected a warm start from 2026-01-01's serving"):
        promote.record_refresh(lake, "2026-01-01", stranger)
    fresh = _fresh(lake, "2026-01-01", lake.model_named(serving))
    record = promote.record_refresh(lake, "2026-01-01", fresh)
    assert record["from"] == serving and record["model"] == "run=2026-01-01/v=fresh-b"
    assert record["new_items"] == 3 and record["live_updated"]
    assert promote.scoring_model_name(lake, "2026-01-01") == record["model"]
    assert (
        json.loads((tmp_path / "models" / "live.json").read_text())["serving_model"]
        == (record["model"])
    )
    # the fresh version is never taken for the date's candidate, and is the next incumbent
    assert promote.model_versions(lake, "2026-01-01") == [serving]
    assert promote.candidate_for(lake, "2026-01-01") == serving
    assert promote.incumbent_for(lake, "2026-01-02") == record["model"]
    # a later decision of the date that serves another model ignores the old refresh
    (Path(lake.model_run("2026-01-01")) / "promotion.json").write_text(
        json.dumps({"serving_model": "run=2026-01-01/v=zzz"})
    )
    assert promote.scoring_model_name(lake, "2026-01-01") == "run=2026-01-01/v=zzz"
