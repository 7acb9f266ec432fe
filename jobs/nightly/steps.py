"""The pipeline's own steps of the nightly DAG, one process each (`python -m jobs.nightly`):

    evaluate                  --lake L --date D [--candidate DIR] [--margin 0.05]
                              [--baseline-margin 0.05] [--k 20]  the promotion gate
    refreshed                 --lake L --date D --model DIR    the refreshed model scores D
    validate-recommendations  --lake L --date D --staged DIR   the scored table's quality gate
    publish                   --lake L --date D --staged DIR [--grace-hours 24]
                                                               the atomic swap of dt=D
    report                    --lake L --date D                refresh the run report

Each refreshes the night's run report; expected failures exit 2 with one line (`run_main`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

from jobs.common.cli import HelpFormatter
from jobs.common.lake import Lake
from jobs.common.localfs import write_json_atomic
from jobs.common.settings import (
    PromotionSettings,
    PublishSettings,
    ScoringSettings,
    TrainSettings,
)


def _lake(args) -> Lake:
    return Lake(args.lake, args.quality_root or "")


def cmd_evaluate(args) -> int:
    from jobs.nightly.promote import gate

    lake = _lake(args)
    try:
        decision = gate(
            lake, args.date, args.margin, args.k, args.device, args.candidate,
            args.baseline_margin,
        )  # fmt: skip
        write_json_atomic(lake.promotion_record(args.date), decision)
    finally:
        cmd_report(args)
    print(json.dumps(decision, indent=2, default=str))
    return 0


def cmd_refreshed(args) -> int:
    from jobs.nightly.promote import record_refresh

    try:
        record = record_refresh(_lake(args), args.date, args.model)
    finally:
        cmd_report(args)
    print(json.dumps(record, indent=2, default=str))
    return 0


def cmd_validate_recommendations(args) -> int:
    from jobs.nightly.promote import scoring_model
    from jobs.nightly.publish import mark_validated
    from jobs.quality.recommendations import validate_scored
    from jobs.quality.store import QualityGateError, QualityStore

    lake = _lake(args)
    store = QualityStore(lake.quality_day(args.date))
    try:
        model = scoring_model(lake, args.date)
        result = validate_scored(args.staged, model, lake.sessions_day(args.date), store=store)
        mark_validated(args.staged, args.date, result["results"])  # reached on a pass only
    except QualityGateError as exc:
        raise QualityGateError(f"{exc} (Data Docs: {store.docs_index})") from None
    finally:
        cmd_report(args)
    print(json.dumps(result["counts"]))
    return 0


def cmd_publish(args) -> int:
    from jobs.nightly.publish import publish_staged

    lake = _lake(args)
    try:
        result = publish_staged(lake, args.date, args.staged, args.grace_hours * 3600.0)
        result["published_at"] = dt.datetime.now(dt.UTC).isoformat()
        write_json_atomic(lake.publish_record(args.date), result)
    finally:
        cmd_report(args)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_report(args) -> int:
    from jobs.nightly.report import write_run_report

    write_run_report(_lake(args), args.date)
    return 0


STEPS = {
    "evaluate": cmd_evaluate,
    "refreshed": cmd_refreshed,
    "validate-recommendations": cmd_validate_recommendations,
    "publish": cmd_publish,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.nightly", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--lake", required=True, help="the lake root (a local path)")
    parser.add_argument(
        "--quality-root", default=None, help="where quality/dt=D is; default <lake>/quality"
    )
    parser.add_argument(
        "--date",
        required=True,
        type=lambda s: str(dt.date.fromisoformat(s)),
        help="the night's date D (YYYY-MM-DD)",
    )
    parser.add_argument(
        "--margin", type=float, default=PromotionSettings.margin, help="promotion margin"
    )
    parser.add_argument(
        "--baseline-margin",
        type=float,
        default=PromotionSettings.baseline_margin,
        help="evaluate: Recall@k tonight's model may lose to the best baseline (1 = no floor)",
    )
    parser.add_argument(
        "--k", type=int, default=ScoringSettings.k, help="recommendations per session"
    )
    parser.add_argument(
        "--device", default=TrainSettings.device, help="torch device: cpu, cuda, cuda:N or auto"
    )
    parser.add_argument("--staged", help="the scored, unpublished version directory")
    parser.add_argument("--model", help="refreshed: the serving model refreshed on D")
    parser.add_argument(
        "--candidate",
        help="evaluate: the model version of the date to judge (default: its newest)",
    )
    parser.add_argument(
        "--grace-hours",
        type=float,
        default=PublishSettings.grace_hours,
        help="publish: keep a replaced version this long for readers still on it",
    )
    args = parser.parse_args(argv)
    if args.step in ("validate-recommendations", "publish") and not args.staged:
        parser.error(f"{args.step} needs --staged")
    if args.step == "refreshed" and not args.model:
        parser.error("refreshed needs --model")
    if args.staged:
        args.staged = str(Path(args.staged))
    if args.step == "report":  # reads the records, refreshes the report: no lease needed
        return STEPS[args.step](args)
    from jobs.common.locks import hold_date

    with hold_date(_lake(args), args.date):  # one writer per date
        return STEPS[args.step](args)
