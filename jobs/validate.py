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
import os
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.fs import FS
from jobs.common.lake import Lake
from jobs.common.localfs import write_json_atomic
from jobs.common.locks import hold_date
from jobs.common.settings import QualityThresholds
from jobs.common.timeutil import days_before
from jobs.quality import spark_frames, suites
from jobs.quality.store import QualityStore, raise_if_failed
from jobs.quality.verdicts import add_arguments as add_verdict_arguments

log = logging.getLogger("jobs.validate")

DATASETS = (C.SUITE_RAW_EVENTS, C.SUITE_SESSIONS, C.SUITE_DATASETS)


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def _validate_raw(spark, lake, days, store, thresholds, batch: bool) -> list[dict]:
    parts = [spark_frames.raw_events_frame(spark, lake, d) for d in days]
    counts = {str(d): c for d, (_, c) in zip(days, parts, strict=True)}
    # the volume check compares one day with the one before: only for a single day
    previous = None if batch else parts[-1][1]["previous_day_events"]
    suite = suites.raw_events_suite(thresholds, previous)
    extra = {"counts": counts[str(days[-1])], "days": counts}
    return [store.validate(suite, _union([f for f, _ in parts]), "spark", extra=extra)]


def _validate_sessions(spark, lake, days, store, thresholds) -> list[dict]:
    parts = [spark_frames.sessions_frame(spark, lake, d) for d in days]
    frame = _union([f for f, _ in parts])
    accounts = {str(d): a for d, (_, a) in zip(days, parts, strict=True)}
    extra = {"days": [str(d) for d in days], "account": accounts[str(days[-1])]}
    if len(days) > 1:
        extra["accounts"] = accounts
    return [store.validate(suites.sessions_suite(thresholds), frame, "spark", extra=extra)]


def _validate_datasets(spark, lake, day, store, thresholds) -> list[dict]:
    frame, counts = spark_frames.datasets_frame(spark, lake, day)
    out = [store.validate(suites.datasets_suite(thresholds), frame, "spark", extra=counts)]
    frame, n_items = spark_frames.item_index_frame(spark, lake, day)
    out.append(store.validate(suites.item_index_suite(thresholds, n_items), frame, "spark"))
    return out


def run_validate(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    day: dt.date,
    thresholds: QualityThresholds | None = None,
    catch_up: Sequence[dt.date] = (),
) -> list[dict]:
    """Run the suite(s) of `dataset` for `day`; returns their summaries (raises nothing).

    `catch_up`: earlier days (raw_events, sessions) validated in the same batch as `day`, each
    row checked against its own day; their result is recorded under each of them too.
    """
    thresholds = thresholds or QualityThresholds()
    store = QualityStore(lake.quality_day(day))
    days = [*catch_up, day]
    if dataset == C.SUITE_RAW_EVENTS:
        out = _validate_raw(spark, lake, days, store, thresholds, batch=bool(catch_up))
    elif dataset == C.SUITE_SESSIONS:
        out = _validate_sessions(spark, lake, days, store, thresholds)
    elif dataset == C.SUITE_DATASETS:
        out = _validate_datasets(spark, lake, day, store, thresholds)
    else:
        raise ValueError(f"dataset: expected one of {DATASETS}, found {dataset!r}")
    for res, d in ((r, d) for r in out for d in catch_up):  # the batch's result, per day
        summary = {k: v for k, v in res.items() if k != "result"}
        summary["validated_with"] = str(day)
        write_json_atomic(lake.suite_result(d, res["suite"]), summary)
    return out


def catch_up_days(fs: FS, lake: Lake, dataset: str, day: dt.date, n: int) -> list[dt.date]:
    """Earlier days of the window with data of `dataset` but no result of its suite yet."""
    partition = {C.SUITE_RAW_EVENTS: lake.events_day, C.SUITE_SESSIONS: lake.sessions_day}.get(
        dataset
    )
    out = []
    for d in days_before(day, n) if partition else ():
        done = os.path.exists(lake.suite_result(d, dataset))
        if not done and fs.exists(partition(d)):
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
        help="also validate each of the N-1 days before --date whose data exists but has no "
        "result yet (days a first run ingested or sessionized to fill its window)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from jobs.common.spark import get_spark

    thresholds = QualityThresholds.from_dict(json.loads(args.thresholds))
    lake = Lake(args.lake, args.quality_root or "")
    with hold_date(lake, args.date):  # one writer per date
        spark = get_spark(f"validate_{args.dataset}", args.master, dict(args.conf))
        days = catch_up_days(FS(spark), lake, args.dataset, args.date, args.catch_up_days)
        results = run_validate(spark, lake, args.dataset, args.date, thresholds, catch_up=days)
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
