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

from pyspark.sql import SparkSession

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.fs import FS
from jobs.common.lake import Lake
from jobs.common.locks import hold_date, hold_dates
from jobs.common.settings import QualityThresholds
from jobs.common.timeutil import days_before
from jobs.quality import spark_frames, suites, versions
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

    def store(d: dt.date) -> QualityStore:
        # what the verdict is computed from, taken before reading: a later change is new data
        version = versions.data_version(lake, dataset, d, thresholds.to_dict())
        judged_in = spark.sparkContext.appName
        return QualityStore(lake.quality_day(d), {"data_version": version, "judged_in": judged_in})

    for d in catch_up:
        for res in validator(spark, lake, d, store(d), thresholds):
            if not res["success"]:
                log.warning(
                    "catch-up day %s failed suite %s (it stays out of later nights until it "
                    "is re-delivered and passes, or accepted): %s",
                    d, res["suite"], "; ".join(res["failed"]),
                )  # fmt: skip
    return validator(spark, lake, day, store(day), thresholds)


def judge_after(spark: SparkSession, lake: Lake, dataset: str, day: dt.date, catch_up: int,
                thresholds: str) -> None:  # fmt: skip
    """The gate's validation of a job's output, in the job's own Spark application (`--then-
    validate`): the gate task then reuses the verdicts (`--reuse-only`) instead of starting
    a JVM to judge the same data. It decides nothing here: a failed suite is the gate task's
    to report, and a validation that cannot run (a lock, a crash) is only logged, since the
    gate task then validates on its own."""
    try:
        limits = QualityThresholds.from_dict(json.loads(thresholds))
        results = _judge(spark, lake, dataset, day, limits, catch_up)
        log.info(
            "validated %s of %s for its gate: %s", dataset, day,
            ", ".join(f"{r['suite']} {'passed' if r['success'] else 'FAILED'}" for r in results),
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the gate validates on its own then
        log.warning("%s of %s not validated after the job (%s: %s); its gate will validate it",
                    dataset, day, type(exc).__name__, exc)  # fmt: skip


def add_then_validate_arguments(parser) -> None:
    """A producing job's `--then-validate N` and `--thresholds` (see `judge_after`)."""
    parser.add_argument(
        "--then-validate",
        type=int,
        metavar="N",
        help="after the job, run its quality gate's validation of --date in this Spark "
        "application (and of the N-1 days before it with data but no verdict), so the gate "
        "task can reuse the verdicts; the job's exit status does not depend on them",
    )
    parser.add_argument(
        "--thresholds", default="{}", help="with --then-validate: JSON QualityThresholds fields"
    )


class _LocalFS:
    """FS.exists for a local lake, without a JVM."""

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.exists(path)


def reusable_verdicts(
    lake: Lake, dataset: str, day: dt.date, thresholds: QualityThresholds, catch_up: int
) -> list[dict] | None:
    """`day`'s stored results of `dataset` when they judged exactly the data there now (same
    files, thresholds and suites: `jobs.quality.versions`) and no earlier day of the window
    waits for a verdict; else None (the gate validates)."""
    if not lake.is_local:
        return None
    if catch_up_days(_LocalFS(), lake, dataset, day, catch_up):
        return None
    version = versions.data_version(lake, dataset, day, thresholds.to_dict())
    results = [own_result(lake, day, suite) for suite in versions.SUITES[dataset]]
    if version is None or any(r is None or r.get("data_version") != version for r in results):
        return None
    return results


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
    parser.add_argument("--date", type=parse_date, required=True, help="the day to validate")
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
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="start no Spark: apply the verdicts the producing job stored for exactly the "
        'data there now, and print {"reused": true}; print {"reused": false} and exit 0 when '
        "there are none (then run without this flag)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    thresholds = QualityThresholds.from_dict(json.loads(args.thresholds))
    lake = Lake(args.lake, args.quality_root or "")
    if args.reuse_only:
        with hold_date(lake, args.date):  # as a validation would: no other writer of D now
            results = reusable_verdicts(
                lake, args.dataset, args.date, thresholds, args.catch_up_days
            )
        print(json.dumps({"reused": results is not None}), flush=True)
        if results is None:
            log.info("no stored verdict of %s for exactly this data: validating", args.dataset)
            return 0
        for r in results:
            log.info("suite %s: %s, judged in %s on the same data (reused)", r["suite"],
                     "passed" if r["success"] else "FAILED", r.get("judged_in"))  # fmt: skip
    else:
        results = _validate(args, lake, thresholds)
    if args.date in args.accept_days and not all(r["success"] for r in results):
        log.warning(
            "%s failed on %s, which an operator accepted (--accept-days): the run goes on",
            args.dataset, args.date,
        )  # fmt: skip
        return 0
    raise_if_failed(*results)
    return 0


def _validate(args, lake: Lake, thresholds: QualityThresholds) -> list[dict]:
    from jobs.common.spark import get_spark

    with hold_date(lake, args.date):  # one writer per date
        spark = get_spark(f"validate_{args.dataset}", args.master, dict(args.conf))
        return _judge(spark, lake, args.dataset, args.date, thresholds, args.catch_up_days)


def _judge(spark, lake, dataset, day, thresholds, catch_up: int) -> list[dict]:
    """`day` and the catch-up days among the `catch_up` - 1 before it (each held while judged)."""
    days = catch_up_days(FS(spark), lake, dataset, day, catch_up)
    with hold_dates(lake, days, keep=False):  # their verdicts: one writer each, too
        return run_validate(spark, lake, dataset, day, thresholds, days)


if __name__ == "__main__":
    run_main(main)
