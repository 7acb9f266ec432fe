"""How a raw clickstream maps onto the normalized event schema, and presets for known sources."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal, get_args

from jobs.common.errors import ConfigError
from jobs.common.timeutil import utc

TsUnit = Literal["auto", "s", "ms", "us", "iso"]
Format = Literal["csv", "parquet"]


@dataclass(frozen=True)
class SourceMapping:
    """Which raw columns hold the user, item and time, and how to read the file."""

    format: Format = "csv"
    header: bool = True
    sep: str = ","
    # Names for the columns of a header-less CSV, in file order.
    csv_columns: tuple[str, ...] | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    ts_col: str = "ts"
    # auto: integers/decimals are epoch s, ms or us by magnitude; other strings are ISO 8601.
    ts_unit: TsUnit = "auto"
    event_type_col: str | None = None
    # Orders events with equal timestamps (e.g. trivago's `step`); compared numerically.
    tiebreak_col: str | None = None
    # Keep only these event types (e.g. Taobao page views); None keeps all.
    keep_event_types: tuple[str, ...] | None = None
    # Sane window for timestamps, ISO dates/times in UTC, [min_ts, max_ts). Rows outside it are
    # quarantined: clock-skewed devices and replayed logs are real dirt.
    min_ts: str = "2000-01-01"
    max_ts: str = "2100-01-01"
    # Longer ids are quarantined (`malformed_*_id`): a whole record or JSON blob in the id
    # column means a broken mapping or a mis-split row.
    max_id_length: int = 256
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.format not in get_args(Format):
            raise ConfigError(f"format must be one of {get_args(Format)}, found {self.format!r}")
        if self.ts_unit not in get_args(TsUnit):
            raise ConfigError(f"ts_unit must be one of {get_args(TsUnit)}, found {self.ts_unit!r}")
        if not self.header and self.format == "csv" and not self.csv_columns:
            raise ConfigError("a CSV without header needs csv_columns (the column names in order)")
        for name in ("user_col", "item_col", "ts_col"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name a column")
        ok_len = isinstance(self.max_id_length, int) and not isinstance(self.max_id_length, bool)
        if not ok_len or self.max_id_length < 1:
            raise ConfigError(
                f"max_id_length must be a positive integer, found {self.max_id_length!r}"
            )
        if utc(self.min_ts) >= utc(self.max_ts):
            raise ConfigError(f"min_ts must be before max_ts, found {self.min_ts}..{self.max_ts}")

    @property
    def required_columns(self) -> list[str]:
        cols = [self.user_col, self.item_col, self.ts_col]
        cols += [c for c in (self.event_type_col, self.tiebreak_col) if c]
        return cols

    def override(self, **changes: object) -> SourceMapping:
        """A copy with the non-None `changes` applied (unknown keys fail with their names)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown mapping keys {unknown}; expected some of {sorted(known)}")
        given = {k: _tuple_if_list(v) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)


def _tuple_if_list(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


PRESETS: dict[str, SourceMapping] = {
    # RecSys Challenge 2015 as prepared by session-rec (the rsc15 sample): TSV, epoch seconds
    # with millisecond decimals. There is no user id, so the session id stands in for the user.
    "rsc15": SourceMapping(
        sep="\t",
        user_col="SessionId",
        item_col="ItemId",
        ts_col="Time",
        ts_unit="s",
        description="YOOCHOOSE clicks, session-rec TSV (SessionId, ItemId, Time)",
    ),
    # The original yoochoose-clicks.dat: no header, ISO timestamps.
    "yoochoose": SourceMapping(
        header=False,
        csv_columns=("session_id", "timestamp", "item_id", "category"),
        user_col="session_id",
        item_col="item_id",
        ts_col="timestamp",
        ts_unit="iso",
        description="YOOCHOOSE raw yoochoose-clicks.dat (session_id,timestamp,item_id,category)",
    ),
    # Taobao UserBehavior.csv: no header, epoch seconds; the dataset covers 2017-11-25..12-03
    # and has outlier rows far outside it, which the window quarantines.
    "taobao": SourceMapping(
        header=False,
        csv_columns=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
        user_col="user_id",
        item_col="item_id",
        ts_col="timestamp",
        ts_unit="s",
        event_type_col="behavior_type",
        keep_event_types=("pv",),
        min_ts="2017-11-25",
        max_ts="2017-12-04",
        description="Taobao UserBehavior (page views only)",
    ),
    # The project's own synthetic clickstream (jobs.synth): epoch milliseconds, told apart by
    # magnitude, plus a few rows with timestamp 0 that the default sane window rejects.
    "synthetic": SourceMapping(
        user_col="user_id",
        item_col="item_id",
        ts_col="timestamp",
        ts_unit="auto",
        event_type_col="event_type",
        description="jobs.synth demo clickstream",
    ),
    # trivago RecSys Challenge 2019 item events: many events share a second; `step` orders them.
    "trivago": SourceMapping(
        user_col="user_id",
        item_col="item_id",
        ts_col="timestamp",
        ts_unit="s",
        event_type_col="action_type",
        tiebreak_col="step",
        description="trivago RecSys Challenge 2019 item events",
    ),
}


def load_mapping(preset: str | None, mapping_file: str | None) -> SourceMapping:
    """The preset (or the default mapping), with a JSON mapping file's keys applied on top."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    mapping = PRESETS[preset] if preset else SourceMapping()
    if mapping_file:
        try:
            with open(mapping_file, encoding="utf-8") as fh:
                changes = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read mapping file {mapping_file}: {exc}") from exc
        if not isinstance(changes, dict):
            raise ConfigError(f"mapping file {mapping_file} must hold a JSON object")
        mapping = mapping.override(**changes)
    return mapping


def add_mapping_arguments(parser) -> None:
    """The mapping's fields as command-line overrides (they win over a preset and a file)."""
    group = parser.add_argument_group("mapping overrides (win over --preset and --mapping)")
    group.add_argument("--format", choices=["csv", "parquet"], help="the delivery's file format")
    group.add_argument("--sep", help="CSV field separator, e.g. ',' or '\\t'")
    group.add_argument(
        "--no-header",
        dest="header",
        action="store_const",
        const=False,
        help="the CSV has no header row (name the columns with --csv-columns)",
    )
    group.add_argument("--csv-columns", help="comma-separated names for a header-less CSV")
    group.add_argument("--user-col", help="the column holding the user (or visitor) id")
    group.add_argument("--item-col", help="the column holding the item id")
    group.add_argument("--ts-col", help="the column holding the event time")
    group.add_argument(
        "--ts-unit",
        choices=["auto", "s", "ms", "us", "iso"],
        help="epoch seconds, milliseconds, microseconds, ISO-8601 text, or auto-detected",
    )
    group.add_argument(
        "--event-type-col", help="the column holding the event type (see --keep-event-types)"
    )
    group.add_argument("--tiebreak-col", help="a column ordering events with the same timestamp")
    group.add_argument("--keep-event-types", help="comma-separated event types to keep")
    group.add_argument("--min-ts", help="earliest sane timestamp (UTC, ISO)")
    group.add_argument("--max-ts", help="latest sane timestamp, exclusive (UTC, ISO)")


def mapping_from_args(args) -> SourceMapping:
    """--preset, then --mapping, then the override flags."""

    def split(value: str | None) -> list[str] | None:
        return [v.strip() for v in value.split(",")] if value else None

    return load_mapping(args.preset, args.mapping).override(
        format=args.format,
        sep=args.sep.encode().decode("unicode_escape") if args.sep else None,
        header=args.header,
        csv_columns=split(args.csv_columns),
        user_col=args.user_col,
        item_col=args.item_col,
        ts_col=args.ts_col,
        ts_unit=args.ts_unit,
        event_type_col=args.event_type_col,
        tiebreak_col=args.tiebreak_col,
        keep_event_types=split(args.keep_event_types),
        min_ts=args.min_ts,
        max_ts=args.max_ts,
    )
