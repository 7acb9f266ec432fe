"""The run report opens with its verdict and what changed since the night before, then the
details (quarantine by reason as a table); it is rendered from a packaged Jinja2 template
with every value escaped."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.common.lake import Lake
from jobs.nightly.report import write_run_report


def _write(path: str, value: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value))


def _night(lake: Lake, day: str, rows_in: int, quarantined: dict, sessions: int) -> None:
    total = sum(quarantined.values())
    _write(Lake.summary(lake.events, day), {
        "rows_in": rows_in, "events_out": rows_in - total, "duplicates_dropped": 0,
        "quarantined": quarantined, "quarantined_total": total,
        "quarantine_share": round(total / rows_in, 6),
    })  # fmt: skip
    _write(Lake.summary(lake.sessions, day), {"sessions_out": sessions, "balanced": True})


def test_the_report_leads_with_its_verdict_and_the_change_since_the_night_before(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-01-01", 1000, {"bad_timestamp": 10}, 200)
    _write(lake.suite_result("2026-01-01", "raw_events"), {"success": True, "failed": []})
    write_run_report(lake, "2026-01-01")
    first = Path(lake.run_report("2026-01-01")).read_text()
    assert "Nothing published" in first and "has not reached the promotion gate" in first
    assert "no report of it" in first  # no night before this one

    evil = "<script>alert(1)</script>"
    _night(lake, "2026-01-02", 1250, {"bad_timestamp": 50, evil: 25}, 150)
    _write(lake.suite_result("2026-01-02", "raw_events"), {
        "success": False, "failed": ["expect_column_values_to_not_be_null(user_id)"],
        "statistics": {"successful_expectations": 9, "evaluated_expectations": 10},
    })  # fmt: skip
    page = Path(write_run_report(lake, "2026-01-02")).read_text()
    # the verdict comes first and names the failing gate and expectation
    verdict = page.index("Nothing published")
    assert verdict < page.index("Data quality") < page.index("Quarantine by reason")
    assert "the quality gate &#39;raw_events&#39; failed: expect_column_values_to_not_be_null" \
        in page  # fmt: skip
    # then what changed since 2026-01-01: volume +25%, quarantine share 1.00% -> 6.00%,
    # sessions -25%
    assert "Compared with 2026-01-01" in page
    assert "<td>raw rows</td><td>1,000</td><td>1,250</td><td>+25.0%</td>" in page
    assert "<td>quarantine share</td><td>1.00%</td><td>6.00%</td><td>+5.00 points</td>" in page
    assert "<td>sessions</td><td>200</td><td>150</td><td>-25.0%</td>" in page
    # quarantine by reason is a table, largest first, every value escaped
    assert "<td>bad_timestamp</td><td>50</td><td>4.00%</td>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.index("bad_timestamp</td><td>50") < page.index("&lt;script&gt;")
    state = json.loads(Path(lake.run_state("2026-01-02")).read_text())
    assert (
        state["previous"]["figures"]["raw rows"] == 1000 and "previous" not in (state["previous"])
    )


def test_a_published_night_says_so_first(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-01-03", 500, {}, 90)
    _write(lake.publish_record("2026-01-03"), {
        "sessions": 90, "rows": 1800, "model_version": "v-1", "path": "p", "published_at": "t",
        "fallback_sessions": 0,
    })  # fmt: skip
    page = Path(write_run_report(lake, "2026-01-03")).read_text()
    assert page.index("Recommendations published") < page.index("Data quality")
    assert "90 sessions, 1800 rows, scored by v-1" in page and "nothing quarantined" in page


def test_the_trends_page_has_a_row_and_a_point_per_night_and_working_links(tmp_path):
    """quality/index.html, refreshed with every run report: one row per night (newest
    first) with quarantine share by reason, gate verdicts, metrics against the best
    baseline, the decision; a chart per measure with a point per night; links that exist."""
    import re

    lake = Lake(str(tmp_path / "lake"))
    quality = Path(lake.quality_root)
    for i, day in enumerate(("2026-01-01", "2026-01-02", "2026-01-03")):
        _night(lake, day, 1000 + 100 * i, {"bad_timestamp": 10 * (i + 1), "empty_user": 5}, 200)
        _write(lake.suite_result(day, "raw_events"), {"success": i != 2, "failed": []})
        run = Path(lake.model_run(day)) / "v=1"
        _write(str(run / "metrics.json"), {
            "recall@20": 0.3 + i / 100, "mrr@20": 0.1, "train_seconds": 12.5,
            "baselines": {"pop": {"recall@20": 0.1, "mrr@20": 0.05},
                          "stan": {"recall@20": 0.35, "mrr@20": 0.08}},
        })  # fmt: skip
        (run / "model.pt").write_bytes(b"")  # a complete version
        (quality / f"dt={day}" / "data_docs").mkdir(parents=True, exist_ok=True)
        (quality / f"dt={day}" / "data_docs" / "index.html").write_text("docs")
        write_run_report(lake, day)
    page = (quality / "index.html").read_text()
    assert page.count("<tr><td>2026-01-") == 3
    assert page.index("<tr><td>2026-01-03") < page.index("<tr><td>2026-01-01")  # newest first
    assert "failed: raw_events" in page and "1 passed" in page
    assert "<th>bad_timestamp</th><th>empty_user</th>" in page
    # night 1: 15 of 1,000 rows quarantined, 10 for a bad timestamp, 5 for an empty user
    assert "<td>1.50%</td>\n<td>1.00%</td><td>0.50%</td>" in page
    assert "<td>stan</td>\n<td>0.3500</td>" in page
    for title in ("Volume", "Quarantine share", "Sessions", "Recall@20", "MRR@20", "Seconds"):
        assert f"<figcaption>{title}</figcaption>" in page
    recall = page.split("<figcaption>Recall@20</figcaption>")[1].split("</figure>")[0]
    assert recall.count("<circle") == 6  # GRU4Rec and the best baseline, three nights each
    for link in re.findall(r'href="([^"]+)"', page):  # every link leads to a file
        assert (quality / link).is_file(), link


def test_a_rerun_that_fails_its_gate_does_not_claim_a_publish_or_an_acceptance(tmp_path):
    """D was published by an earlier run; tonight's rerun of D fails a gate. The verdict
    says nothing new was published and that the earlier version stays; only a day an
    operator accepted reads as published despite its failed gate."""
    lake = Lake(str(tmp_path / "lake"))
    day = "2026-01-04"
    _night(lake, day, 500, {}, 90)
    _write(lake.publish_record(day), {"sessions": 90, "rows": 1800, "model_version": "v-1",
                                      "published_at": "2026-01-05T03:40:00"})  # fmt: skip
    _write(lake.suite_result(day, "sessions"), {"success": False, "failed": ["x(sessions)"]})
    page = Path(write_run_report(lake, day)).read_text()
    verdict = page.split('class="verdict"')[1].split("</p>")[0]
    assert "Nothing published" in verdict and "the quality gate &#39;sessions&#39;" in verdict
    assert "published earlier, at 2026-01-05T03:40:00, stays" in verdict
    assert "accepted" not in verdict
    _write(lake.datasets_summary(day), {"accepted_days": [day], "splits": {}})
    page = Path(write_run_report(lake, day)).read_text()
    verdict = page.split('class="verdict"')[1].split("</p>")[0]
    assert "Recommendations published" in verdict and "accepted by an operator" in verdict


def test_the_night_is_timed_only_from_its_own_live_lease(tmp_path, monkeypatch):
    import time

    from jobs.common.locks import OWNER_ENV, DateLease

    lake = Lake(str(tmp_path / "lake"))
    day = "2026-01-04"
    _night(lake, day, 500, {}, 90)
    lease = DateLease(lake, day)
    lease.acquire("airflow:other-run")
    monkeypatch.setenv(OWNER_ENV, "airflow:this-run")
    write_run_report(lake, day)
    assert json.loads(Path(lake.run_state(day)).read_text())["timing"] is None  # not ours
    lease.release("airflow:other-run")
    lease.acquire("airflow:this-run")
    time.sleep(0.2)
    write_run_report(lake, day)
    timing = json.loads(Path(lake.run_state(day)).read_text())["timing"]
    assert 0.2 <= timing["seconds"] < 60
    lease.release("airflow:this-run")
    write_run_report(lake, day)  # after the run: what the last report recorded stays
    assert json.loads(Path(lake.run_state(day)).read_text())["timing"] == timing


def test_a_gate_refreshes_each_days_report_on_its_own_and_the_trends_page_once(tmp_path):
    from jobs.nightly.report import write_run_reports

    lake = Lake(str(tmp_path / "lake"))
    for day in ("2026-01-01", "2026-01-02"):
        _night(lake, day, 500, {}, 90)
        _write(lake.suite_result(day, "sessions"), {"success": True, "failed": []})
    Path(lake.run_report("2026-01-01")).mkdir(parents=True)  # this day's report cannot be written
    write_run_reports(lake, ["2025-12-31", "2026-01-01", "2026-01-02"])  # 12-31: no data
    assert Path(lake.run_report("2026-01-02")).is_file()
    assert not Path(lake.quality_day("2025-12-31")).exists()
    page = (Path(lake.quality_root) / "index.html").read_text()
    assert "<tr><td>2026-01-02</td>" in page and "<tr><td>2026-01-01</td>" in page
