"""Options every job shares and the wrapper that turns expected failures into one clear line."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Sequence

from jobs.common.errors import PipelineError
from jobs.common.lake import default_root

log = logging.getLogger("jobs")


def parse_date(value: str) -> dt.date:
    """argparse type for YYYY-MM-DD dates."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, found {value!r}") from None


def parse_conf(value: str) -> tuple[str, str]:
    """argparse type for KEY=VALUE Spark settings."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {value!r}")
    return key.strip(), val.strip()


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--lake",
        default=default_root(),
        help="lake root (local path or any Hadoop URI); default GRU4REC_LAKE, else var/lake",
    )
    parser.add_argument(
        "--master",
        default=None,
        help="Spark master URL (local[*], spark://host:7077, k8s://..., yarn); "
        "default: the one spark-submit was given, else local[*]",
    )
    parser.add_argument(
        "--conf",
        action="append",
        type=parse_conf,
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return parser


def run_main(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> None:
    """Run a job's main; expected failures exit 2 with a one-line error, not a bare traceback."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=False
    )
    start = time.monotonic()
    try:
        code = main(argv)
    except PipelineError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(getattr(exc, "exit_code", 2))  # 2: bad data or config; DateBusy: 75
    log.info("finished in %.1f s", time.monotonic() - start)
    sys.exit(code)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    # Libraries' chatter (py4j's socket traffic, Great Expectations' ~200 lines of
    # registration and config notes per validation) would bury the job's own lines; their
    # warnings and errors still show. --log-level DEBUG shows everything.
    if logging.getLevelName(level) != logging.DEBUG:
        for noisy in ("py4j", "great_expectations"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
