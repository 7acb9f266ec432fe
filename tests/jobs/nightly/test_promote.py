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


def _model(lake, day, serving=None):
    d = Path(lake.model_run(day))
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"x")
    if serving:
        (d / "promotion.json").write_text(json.dumps({"serving_model": serving}))
    return d


def test_gate_keeps_the_live_model_when_tonight_is_worse(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    models = tmp_path / "models"
    _model(lake, "2026-01-01", serving="run=2026-01-01")
    _model(lake, "2026-01-02")
    calls = []

    def fake_compare(candidate, incumbent, test, k, device):
        calls.append((Path(candidate).name, Path(incumbent).name, Path(test).name, k))
        return {
            "common_item_events": 100,
            "candidate": {"recall@20": 0.40},
            "incumbent": {"recall@20": 0.50},
        }

    monkeypatch.setattr(promote, "compare", fake_compare)
    record = promote.gate(lake, "2026-01-02", margin=0.05, k=20)
    assert calls == [("run=2026-01-02", "run=2026-01-01", "test", 20)]
    assert not record["promoted"] and record["serving_model"] == "run=2026-01-01"
    assert "worse than the live model" in record["reason"]
    saved = json.loads((models / "run=2026-01-02" / "promotion.json").read_text())
    assert saved["serving_model"] == "run=2026-01-01" and saved["incumbent"] == "run=2026-01-01"
    live = json.loads((models / "live.json").read_text())
    assert live == {k: saved[k] for k in ("date", "serving_model", "decided_at")}

    # The next night's incumbent is what served the 2nd (still the 1st's model).
    _model(lake, "2026-01-03")
    assert promote.incumbent_for(lake, "2026-01-03") == "run=2026-01-01"

    # A backfill of an older date decides for itself but never moves live.json back.
    _model(lake, "2025-12-31")
    old = promote.gate(lake, "2025-12-31", margin=0.05, k=20)
    assert old["promoted"] and old["reason"] == "no live model yet" and not old["live_updated"]
    assert json.loads((models / "live.json").read_text())["date"] == "2026-01-02"


def test_gate_promotes_within_the_margin_and_skips_vanished_incumbents(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path))
    models = tmp_path / "models"
    _model(lake, "2026-01-01", serving="run=2026-01-01")
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
    assert record["promoted"] and record["serving_model"] == "run=2026-01-02"
    (models / "run=2026-01-01" / "model.pt").unlink()
    _model(lake, "2026-01-03")
    assert promote.incumbent_for(lake, "2026-01-03") == "run=2026-01-02"
    with pytest.raises(Exception, match="margin"):
        promote.gate(lake, "2026-01-03", margin=1.5, k=20)


def test_the_gate_metric_follows_k(tmp_path, monkeypatch):
    """With k = 10 the gate compares Recall@10, not a hard-coded Recall@20."""
    lake = Lake(str(tmp_path))
    _model(lake, "2026-01-01", serving="run=2026-01-01")
    _model(lake, "2026-01-02")
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
