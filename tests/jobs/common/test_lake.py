"""The lake layout: every path of DESIGN.md's lake from one place, for local paths and URIs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs.common.lake import Lake, date_of_partition

ROOT = Path(__file__).resolve().parents[3]


def test_paths_of_one_night():
    lake = Lake("/data/lake/")
    d = "2026-01-05"
    assert lake.events_day(d) == "/data/lake/events/dt=2026-01-05"
    assert lake.quarantine_day(d) == "/data/lake/quarantine/dt=2026-01-05"
    assert lake.sessions_day(d) == "/data/lake/sessions/dt=2026-01-05"
    assert lake.split(d, "train") == "/data/lake/datasets/run=2026-01-05/train"
    assert lake.items(d) == "/data/lake/datasets/run=2026-01-05/items"
    assert lake.popularity(d) == "/data/lake/datasets/run=2026-01-05/popularity"
    assert lake.popularity_summary(d) == "/data/lake/datasets/_summaries/2026-01-05.popularity.json"
    assert lake.model_run(d) == "/data/lake/models/run=2026-01-05"
    assert lake.live_pointer == "/data/lake/models/live.json"
    assert lake.recommendations_day(d) == "/data/lake/recommendations/dt=2026-01-05"
    assert lake.recommendations_versions(d) == "/data/lake/recommendations/_versions/dt=2026-01-05"
    assert lake.suite_result(d, "sessions") == "/data/lake/quality/dt=2026-01-05/sessions.json"
    assert Lake("/l", "/reports").run_report(d) == "/reports/dt=2026-01-05/report.html"
    assert lake.expand("{lake}/raw/dt={ds}") == "/data/lake/raw/dt={ds}"


def test_uris_stay_uris_and_local_roots_become_absolute(tmp_path, monkeypatch):
    s3 = Lake.resolved("s3a://bucket/lake/")
    assert s3.sessions_day("2026-01-05") == "s3a://bucket/lake/sessions/dt=2026-01-05"
    assert not s3.is_local
    monkeypatch.chdir(tmp_path)
    assert Lake.resolved("rel/lake").root == str(tmp_path / "rel" / "lake")


def test_names_that_would_leave_the_models_root_are_refused():
    lake = Lake("/l")
    assert lake.model_named("run=2026-01-05") == "/l/models/run=2026-01-05"
    for bad in ("../../etc", "run=2026-01-05/../../x", "live.json", "run=yesterday"):
        with pytest.raises(ValueError, match="model name"):
            lake.model_named(bad)
    with pytest.raises(ValueError, match="split"):
        lake.split("2026-01-05", "../train")
    assert date_of_partition("dt=2026-01-05").isoformat() == "2026-01-05"
    assert date_of_partition("_versions") is None


def test_no_other_module_builds_partition_paths():
    """`dt=` / `run=` appear in code (not docs) only in the layout module."""
    offenders = []
    for path in sorted([*ROOT.glob("jobs/**/*.py"), *ROOT.glob("dags/*.py")]):
        if path.name == "lake.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if "dt=" in text or "run=" in text:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_model_versions_are_named_exactly_and_nothing_else_is_accepted():
    lake = Lake("/l")
    v = lake.new_model_version("2026-01-05")
    assert v.startswith("/l/models/run=2026-01-05/v=") and v != lake.new_model_version("2026-01-05")
    name = lake.model_name(v)
    assert name == v.removeprefix("/l/models/") and lake.model_named(name) == v
    for bad in ("run=2026-01-05/v=../x", "run=2026-01-05/v=a/b", "run=2026-01-05/x=a"):
        with pytest.raises(ValueError, match="model name"):
            lake.model_named(bad)
    with pytest.raises(ValueError, match="model name"):
        lake.model_name("/l/datasets/run=2026-01-05")
