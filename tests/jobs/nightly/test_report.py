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
