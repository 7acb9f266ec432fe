"""Options every job shares and the wrapper that turns expected failures into one clear line."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their paragraphs; an option's default is shown once, and only when
    it says something (never on a required option, never "None", "[]" or "False", never
    twice when the help already states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        quiet = (
            action.required
            or default is None
            or default is False
            or default in ([], (), "", argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        )
        return text if quiet else f"{text} (default: {default})".lstrip()


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=HelpFormatter,
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
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="how much the job logs (DEBUG also shows Spark's and Great Expectations' notes)",
    )
    return parser


def run_main(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> None:
    """Run a job's main; expected failures exit 2 with a one-line error, not a bare traceback."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=False
    )
    start = time.monotonic()
    job = (getattr(main, "__module__", "") or "").removeprefix("jobs.") or "job"
    if job == "__main__":  # run as a script (spark-submit jobs/<job>.py)
        job = Path(sys.argv[0]).stem
    try:
        code = main(argv)
    except PipelineError as exc:
        log.error("%s failed: %s: %s", job, type(exc).__name__, exc)
        sys.exit(getattr(exc, "exit_code", 2))  # 2: bad data or config; DateBusy: 75
    log.info("%s finished in %.1f s", job, time.monotonic() - start)
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
