"""Run ingest -> sessionize (every day of the window) -> build_datasets -> popularity in one
Spark application: the batch path the nightly DAG takes, for demos, backfills and benchmarks."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence

from jobs.build_datasets import add_window_arguments, run_build_datasets
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.lake import Lake
from jobs.common.settings import DatasetSettings, PopularitySettings, SessionizeSettings
from jobs.common.spark import get_spark
from jobs.ingest import run_ingest
from jobs.popularity import add_alpha_argument, run_popularity
from jobs.sessionize import add_settings_arguments, run_sessionize, settings_from_args
from jobs.sources import PRESETS, load_mapping

log = logging.getLogger("jobs.run_all")


def run_all(
    spark,
    input_path: str,
    lake: Lake,
    mapping,
    day: dt.date,
    cfg: DatasetSettings,
    alpha: float = PopularitySettings.alpha,
    sessionize: SessionizeSettings | None = None,
) -> dict:
    """Every stage for the window ending on `day`; returns {stage: summary} with timings."""
    first = day - dt.timedelta(days=cfg.window_days - 1)
    out: dict = {}
    t = time.monotonic()
    out["ingest"] = run_ingest(spark, input_path, lake, mapping, first, day)
    out["ingest"]["wall_seconds"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    out["sessionize"] = run_sessionize(spark, lake, first, sessionize, last_day=day)
    out["sessionize"]["wall_seconds"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    out["build_datasets"] = run_build_datasets(spark, lake, day, cfg)
    out["build_datasets"]["wall_seconds"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    out["popularity"] = run_popularity(spark, lake, day, alpha)
    out["popularity"]["wall_seconds"] = round(time.monotonic() - t, 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.run_all", __doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="the raw clickstream: a file or directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a known source's column mapping")
    parser.add_argument("--mapping", help="JSON file with SourceMapping keys")
    parser.add_argument("--date", type=parse_date, required=True, help="last day of the window")
    add_window_arguments(parser)
    add_alpha_argument(parser)
    add_settings_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    cfg = DatasetSettings(
        window_days=args.window_days, test_days=args.test_days, valid_days=args.valid_days
    )
    spark = get_spark("run_all", args.master, dict(args.conf))
    result = run_all(
        spark,
        args.input,
        Lake(args.lake),
        load_mapping(args.preset, args.mapping),
        args.date,
        cfg,
        args.alpha,
        settings_from_args(args),
    )
    log.info("stages: %s", json.dumps(result, default=str)[:2000])
    return 0


if __name__ == "__main__":
    run_main(main)
