"""A gate's verdict persists: a day whose raw or sessions gate failed stays out of every later
night (the training window, the baselines trained on it, the scored days) until an operator
accepts it (the `accepted_days` param) or it passes a new validation.

Verdicts are the suite results in `quality/dt=X/` (`raw_events.json`, `sessions.json`);
validate's catch-up never re-validates a day that has a result, so a failure is not forgotten.
Only a day's own result counts: a first night's catch-up validates several days in one batch
and records the batch's result under each, and a failed batch does not name the day at fault,
so it excludes none of them (known gap: such a day is not re-validated on its own yet).
Each consumer lists what it left out, and why, in its summary and so in the run report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import Lake

GATED = (C.SUITE_RAW_EVENTS, C.SUITE_SESSIONS)


def failed_gate(lake: Lake, day, suites: Iterable[str] = GATED) -> str | None:
    """Why `day` is excluded (its first failed gate and the failed expectations), or None."""
    for suite in suites:
        path = Path(lake.suite_result(day, suite))
        try:
            result = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if result.get("validated_with") not in (None, str(day)):
            # A catch-up batch's result, shared by every day of the batch: a failure there
            # does not say which day failed, so it keeps none of them out.
            continue
        if not result.get("success", False):
            failed = "; ".join(result.get("failed") or []) or "no details recorded"
            return f"{suite} gate failed: {failed}"
    return None


def excluded_days(
    lake: Lake, days: Iterable, accepted: Iterable = (), suites: Iterable[str] = GATED
) -> dict[str, str]:
    """{day: reason} of the `days` a failed gate keeps out (accepted days are let in)."""
    accepted = {str(d) for d in accepted}
    out = {}
    for d in days:
        reason = failed_gate(lake, d, suites)
        if reason and str(d) not in accepted:
            out[str(d)] = reason
    return out


def parse_days(value: str) -> list[dt.date]:
    """argparse type: comma-separated YYYY-MM-DD dates ('' = none)."""
    try:
        return [dt.date.fromisoformat(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated dates YYYY-MM-DD, found {value!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser, quality_root: bool = True) -> None:
    if quality_root:
        parser.add_argument(
            "--quality-root",
            help="where quality/dt=D is (a local directory); default <lake>/quality",
        )
    parser.add_argument(
        "--accept-days",
        type=parse_days,
        default=[],
        help="days an operator accepts although a gate failed on them (comma-separated)",
    )
