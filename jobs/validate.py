"""Validate: run a dataset's Great Expectations suite on Spark; the DAG's quality gates.

    python -m jobs.validate raw_events --date D       events/dt=D (+ its quarantine share)
    python -m jobs.validate sessions   --date D       sessions/dt=D
    python -m jobs.validate datasets   --date D       datasets/run=D: splits, then item index

Each suite's result is written to `<quality-root>/dt=D/<suite>.json` and rendered into the day's
Data Docs (`<quality-root>/dt=D/data_docs/index.html`). A failing suite exits with status 2 and
one line naming every failing expectation (the DAG turns that into a failure without retries).
The derived columns (`_...`) each suite expects are computed next to the data, by Spark
(`jobs/quality/spark_frames.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence

from pyspark.sql import SparkSession

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.fs import FS
from jobs.common.lake import Lake
from jobs.common.locks import hold_date, hold_dates
from jobs.common.settings import QualityThresholds
from jobs.common.timeutil import days_before
from jobs.quality import spark_frames, suites
from jobs.quality.store import QualityStore, raise_if_failed
from jobs.quality.verdicts import add_arguments as add_verdict_arguments
from jobs.quality.verdicts import own_result

log = logging.getLogger("jobs.validate")

DATASETS = (C.SUITE_RAW_EVENTS, C.SUITE_SESSIONS, C.SUITE_DATASETS)


def _validate_raw(spark, lake, day, store, thresholds) -> list[dict]:
    frame, counts = spark_frames.raw_events_frame(spark, lake, day)
    suite = suites.raw_events_suite(thresholds, counts["previous_day_events"])
    return [store.validate(suite, frame, "spark", extra={"counts": counts})]


def _validate_sessions(spark, lake, day, store, thresholds) -> list[dict]:
    frame, account = spark_frames.sessions_frame(spark, lake, day)
    extra = {"days": [str(day)], "account": account}
    return [store.validate(suites.sessions_suite(thresholds), frame, "spark", extra=extra)]


def _validate_datasets(spark, lake, day, store, thresholds) -> list[dict]:
    frame, counts = spark_frames.datasets_frame(spark, lake, day)
    out = [store.validate(suites.datasets_suite(thresholds), frame, "spark", extra=counts)]
    frame, n_items = spark_frames.item_index_frame(spark, lake, day)
    out.append(store.validate(suites.item_index_suite(thresholds, n_items), frame, "spark"))
    return out


VALIDATORS = {
    C.SUITE_RAW_EVENTS: _validate_raw,
    C.SUITE_SESSIONS: _validate_sessions,
    C.SUITE_DATASETS: _validate_datasets,
}


def run_validate(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    day: dt.date,
    thresholds: QualityThresholds | None = None,
    catch_up: Sequence[dt.date] = (),
) -> list[dict]:
    """Run the suite(s) of `dataset` for `day`; returns their summaries (raises nothing).

    `catch_up`: earlier days (raw_events, sessions) validated too, each on its own, with its
    own result in its own `quality/dt=X/`: a table-level expectation (row count, volume
    against the day before, an empty day) holds per day, which a batch of days would hide.
    A catch-up day that fails is logged and its verdict kept (later nights leave it out);
    only `day`'s results are returned, so only they decide tonight's gate.
    """
    thresholds = thresholds or QualityThresholds()
    if dataset not in VALIDATORS:
        raise ValueError(f"dataset: expected one of {DATASETS}, found {dataset!r}")
    validator = VALIDATORS[dataset]
    for d in catch_up:
        for res in validator(spark, lake, d, QualityStore(lake.quality_day(d)), thresholds):
            if not res["success"]:
                log.warning(
                    "catch-up day %s failed suite %s (it stays out of later nights until it "
                    "is re-delivered and passes, or accepted): %s",
                    d, res["suite"], "; ".join(res["failed"]),
                )  # fmt: skip
    return validator(spark, lake, day, QualityStore(lake.quality_day(day)), thresholds)


def catch_up_days(fs: FS, lake: Lake, dataset: str, day: dt.date, n: int) -> list[dt.date]:
    """Earlier days of the window with data of `dataset` but no result of their own yet. A
    day ingest touched counts as data for raw_events even without events (every row
    rejected): it fails its gate rather than going unjudged."""
    if dataset == C.SUITE_RAW_EVENTS:
        paths = (lake.events_day, lake.quarantine_day, lake.delivery_record)
    elif dataset == C.SUITE_SESSIONS:
        paths = (lake.sessions_day,)
    else:
        paths = ()
    out = []
    for d in days_before(day, n) if paths else ():
        if own_result(lake, d, dataset) is None and any(fs.exists(p(d)) for p in paths):
            out.append(d)
    if out:
        log.info("also validating %s of %s", dataset, ", ".join(map(str, out)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.validate", __doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--date", type=parse_date, required=True)
    add_verdict_arguments(parser)
    parser.add_argument(
        "--thresholds", default="{}", help="JSON object overriding QualityThresholds fields"
    )
    parser.add_argument(
        "--catch-up-days",
        type=int,
        default=0,
        help="also validate, each on its own, every one of the N-1 days before --date whose "
        "data exists but has no result (days a first run ingested or sessionized to fill its "
        "window, days re-ingested or sessionized again); only --date's result decides the exit",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from jobs.common.spark import get_spark

    thresholds = QualityThresholds.from_dict(json.loads(args.thresholds))
    lake = Lake(args.lake, args.quality_root or "")
    with hold_date(lake, args.date):  # one writer per date
        spark = get_spark(f"validate_{args.dataset}", args.master, dict(args.conf))
        days = catch_up_days(FS(spark), lake, args.dataset, args.date, args.catch_up_days)
        with hold_dates(lake, days, keep=False):  # their verdicts: one writer each, too
            results = run_validate(spark, lake, args.dataset, args.date, thresholds, days)
    if args.date in args.accept_days and not all(r["success"] for r in results):
        log.warning(
            "%s failed on %s, which an operator accepted (--accept-days): the run goes on",
            args.dataset, args.date,
        )  # fmt: skip
        return 0
    raise_if_failed(*results)
    return 0


if __name__ == "__main__":
    run_main(main)
