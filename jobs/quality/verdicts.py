"""A gate's verdict persists: a day whose raw or sessions gate failed stays out of every later
night (the training window, the baselines trained on it, the scored days) until an operator
accepts it (the `accepted_days` param) or it passes a new validation.

Verdicts are the suite results in `quality/dt=X/` (`raw_events.json`, `sessions.json`);
validate's catch-up never re-validates a day that has a result, so a failure is not forgotten.
A verdict ends only when the data it judged is replaced: ingest re-ingesting a day (a
re-delivery) supersedes both of its verdicts, sessionize republishing a day supersedes its
sessions verdict; a superseded verdict is kept under `quality/dt=X/superseded/` and the next
validation of the new data decides.
Only a day's own result counts: validate judges every day on its own (catch-up days too);
a result an older version recorded for a batch of days (`validated_with` another day)
excludes none of them.
Each consumer lists what it left out, and why, in its summary and so in the run report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import Lake

log = logging.getLogger("jobs.quality.verdicts")

GATED = (C.SUITE_RAW_EVENTS, C.SUITE_SESSIONS)


def supersede(lake: Lake, day, suites: Iterable[str], why: str) -> list[str]:
    """End the verdicts of `suites` on `day` because their data was replaced (`why`): each
    result moves to `quality/dt=X/superseded/<utc stamp>-<suite>.json`, so the next
    validation decides and the old verdict stays readable. Returns the suites superseded."""
    done = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for suite in suites:
        path = Path(lake.suite_result(day, suite))
        if not path.exists():
            continue
        target = path.parent / "superseded" / f"{stamp}-{os.getpid()}-{suite}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another writer moved it first
            continue
        done.append(suite)
    if done:
        log.info("%s: verdicts %s superseded (%s)", day, ", ".join(done), why)
    return done


def own_result(lake: Lake, day, suite: str) -> dict | None:
    """`day`'s result of `suite`, if it has one of its own: not one an older version recorded
    for a catch-up batch of days (shared by every day of the batch, it judged no day alone)."""
    try:
        result = json.loads(Path(lake.suite_result(day, suite)).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return result if result.get("validated_with") in (None, str(day)) else None


def failed_gate(lake: Lake, day, suites: Iterable[str] = GATED) -> str | None:
    """Why `day` is excluded (its first failed gate and the failed expectations), or None."""
    for suite in suites:
        result = own_result(lake, day, suite)
        if result is not None and not result.get("success", False):
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
