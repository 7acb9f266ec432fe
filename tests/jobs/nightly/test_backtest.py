"""The backtest's glue: which steps a night runs, the next-day metric, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jobs.common.lake import Lake
from jobs.nightly import backtest
from jobs.nightly.params import Night

DAY = "2026-01-05"


def _sessions(path: Path, rows: list[tuple]) -> Path:
    path.mkdir(parents=True)
    frame = pd.DataFrame(rows, columns=["session_id", "user_id", "item_id", "ts", "seq"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame.to_parquet(path / "part-0.parquet", index=False)
    return path


def test_next_day_hits_against_a_hand_count(tmp_path):
    """a: last session of D is s2 (not s1); its first click of D+1 (x, the earlier of two
    sessions) is at rank 5 of s2: a hit. b: y is at rank 25 of s3: a hit at k = 30 only.
    c has no session on D+1 and d none on D: neither counts."""
    day = _sessions(tmp_path / "d", [
        ("s1", "a", "i1", "2026-01-05 10:00", 0), ("s2", "a", "i2", "2026-01-05 12:00", 0),
        ("s3", "b", "i3", "2026-01-05 09:00", 0), ("s4", "c", "i4", "2026-01-05 09:00", 0),
    ])  # fmt: skip
    nxt = _sessions(tmp_path / "n", [
        ("t1", "a", "x", "2026-01-06 08:00", 0), ("t1", "a", "z", "2026-01-06 08:01", 1),
        ("t2", "a", "w", "2026-01-06 18:00", 0), ("t3", "b", "y", "2026-01-06 07:00", 0),
        ("t4", "d", "x", "2026-01-06 07:00", 0),
    ])  # fmt: skip
    recs = []
    for sid, user in (("s1", "a"), ("s2", "a"), ("s3", "b"), ("s4", "c")):
        items = [f"f{r}" for r in range(1, 31)]
        if sid == "s2":
            items[4] = "x"
        if sid == "s1":
            items[0] = "y"
        if sid == "s3":
            items[24] = "y"
        recs += [(sid, user, r, item) for r, item in enumerate(items, 1)]
    path = tmp_path / "recs.parquet"
    pd.DataFrame(recs, columns=["session_id", "user_id", "rank", "item_id"]).to_parquet(path)
    assert backtest.next_day_hits(path, day, nxt, k=20) == {"users": 2, "hits": 1, "share": 0.5}
    assert backtest.next_day_hits(path, day, nxt, k=30)["hits"] == 2


def _decided(lake: Lake, serving: str | None) -> None:
    run = Path(lake.model_run(DAY))
    (run / "v=a").mkdir(parents=True)
    (run / "v=a" / "model.pt").write_bytes(b"x")
    (run / "promotion.json").write_text(json.dumps({"serving_model": serving, "reason": "r"}))


@pytest.mark.parametrize("refresh", [True, False])
def test_a_night_runs_the_dags_steps_and_skips_what_the_dag_skips(tmp_path, refresh):
    night = Night.from_params({"lake": str(tmp_path), "refresh_before_scoring": refresh}, DAY)
    nr = backtest.NightRun(night)
    for step in ("sessionize", "build_datasets", "popularity"):  # before any decision
        (cmd,) = nr.commands(step)
        assert any(a.endswith(f"{step}.py") for a in cmd), step
    (gate,) = nr.commands("validate_raw")
    assert any(a.endswith("validate.py") for a in gate) and "raw_events" in gate
    nr.model = nr.commands("train")[0][-1]  # --out
    assert nr.plan["mode"] == "full" and "--candidate" in nr.commands("evaluate")[0]
    _decided(night.lake, None)  # a first night below the floor: nothing serves D
    for step in ("refresh", "score", "validate_recommendations", "publish"):
        assert nr.commands(step) == [], step
    (Path(night.lake.model_run(DAY)) / "promotion.json").write_text(
        json.dumps({"serving_model": f"run={DAY}/v=a", "reason": "r"})
    )
    fresh = nr.commands("refresh")
    assert len(fresh) == (2 if refresh else 0)
    if refresh:
        assert "--warm-start" in fresh[0] and fresh[1][3] == "refreshed"
    scores = nr.commands("score")
    assert len(scores) == (2 if refresh else 1)  # with the refresh: D without it, on the side
    assert nr.staged and nr.staged in scores[-1]
    assert nr.commands("publish")[0][-3] == nr.staged


def test_the_report_has_a_row_per_night_and_its_plots(tmp_path):
    rows = [
        {"date": f"2026-01-0{d}", "gru4rec_recall@20": 0.3 + d / 100, "stan_recall@20": 0.4,
         "gru4rec_mrr@20": 0.1, "train_seconds": 10.0 - d, "night_seconds": 60.0,
         "next_day_hit": 0.2, "next_day_hit_unrefreshed": 0.1, "promoted": d > 3,
         "reason": "<b>x</b>"}
        for d in (3, 4, 5)
    ]  # fmt: skip
    backtest.write_rows(tmp_path, rows)
    page = backtest.write_report(tmp_path, rows, {"train_mode": "incremental"}).read_text()
    assert page.count("<tr>") == 4 and "&lt;b&gt;x&lt;/b&gt;" in page
    for png in ("recall.png", "mrr.png", "cost.png", "next_day.png"):
        with Image.open(tmp_path / png) as im:
            assert im.format == "PNG"
    assert len(pd.read_csv(tmp_path / "nights.csv")) == 3
    assert json.loads((tmp_path / "nights.json").read_text())[2]["promoted"] is True
