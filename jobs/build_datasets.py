"""Build datasets: sessions of a training window -> filtered, time-split train/valid/test.

Output `datasets/run=D/{train,train_tr,valid,test}/` with session_id, user_id, item_id, ts, seq,
item_idx. seq keeps each event's position in its original session: strictly increasing within a
session, with gaps where filtering removed events (order by it; do not expect it to be
contiguous). item_idx is the item's index in the train split (support descending, then item id:
the `items/` table the popularity job publishes from it). Each split is written in training
order: sessions by their first event's time, then session id; events by seq; part files in that
order, so a reader takes sessions and their items as integer arrays without sorting.
- Filter: drop sessions shorter than 2 and items with support below 5, repeated until stable.
- Split: test = sessions starting in the last `test_days` of the window; train = events before
  that split time (sessions straddling it are truncated, then length-1 sessions dropped).
  valid / train_tr repeat the same split inside train. Test (valid) keeps only items known to
  train (train_tr), then sessions of length >= 2. (GRU4REC_REFERENCE.md, preprocessing.)
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common import contracts as C
from jobs.common.cli import base_parser, parse_date, run_main, setup_logging
from jobs.common.errors import ConfigError, NoInputError
from jobs.common.fs import FS, publish_dir, staging, write_summary
from jobs.common.lake import DT, SPLITS, Lake
from jobs.common.locks import hold_date
from jobs.common.settings import DatasetSettings
from jobs.common.spark import get_spark
from jobs.common.timeutil import midnight_utc
from jobs.quality.verdicts import add_arguments as add_verdict_arguments
from jobs.quality.verdicts import excluded_days
from jobs.validate import add_then_validate_arguments, judge_after

log = logging.getLogger("jobs.build_datasets")

DATASET_COLUMNS = C.DATASET.columns
SESSION_COLUMNS = C.SESSIONS.columns


# Sets of keys up to this size are broadcast to every task; larger ones use a shuffle join.
BROADCAST_MAX_KEYS = 4_000_000


def with_keys(df: DataFrame, salt: int = 0) -> DataFrame:
    """Add 64-bit keys for session and item ids: set operations on longs are cheap."""
    return df.withColumn("sk", F.xxhash64("session_id", F.lit(salt))).withColumn(
        "ik", F.xxhash64("item_id", F.lit(salt))
    )


def keep(df: DataFrame, keys: DataFrame, col: str, n_keys: int) -> DataFrame:
    """Rows of `df` whose `col` is in `keys` (a checkpointed set of `n_keys` keys)."""
    small = F.broadcast(keys) if n_keys <= BROADCAST_MAX_KEYS else keys
    return df.join(small, col, "left_semi")


@dataclass
class KeySet:
    """A checkpointed one-column DataFrame of keys and its size."""

    df: DataFrame
    n: int

    @classmethod
    def of(cls, df: DataFrame) -> KeySet:
        df = df.localCheckpoint(eager=True)
        return cls(df, df.count())


def stable_sets(
    keyed: DataFrame, min_session_length: int, min_item_support: int, max_passes: int
) -> tuple[KeySet, KeySet, int]:
    """Kept sessions and items once dropping short sessions and rare items changes nothing.

    Each pass recomputes both sets from the original events joined with the last sets (which
    only shrink), so the plan never grows with the passes and the events are never shuffled.
    """
    sessions = items = None
    for passes in range(1, max_passes + 1):
        cur = keyed.select("sk", "ik")
        if sessions is not None:
            cur = keep(keep(cur, sessions.df, "sk", sessions.n), items.df, "ik", items.n)
        new_items = KeySet.of(
            cur.groupBy("ik").count().filter(F.col("count") >= min_item_support).select("ik")
        )
        new_sessions = KeySet.of(
            keep(cur, new_items.df, "ik", new_items.n)
            .groupBy("sk")
            .count()
            .filter(F.col("count") >= min_session_length)
            .select("sk")
        )
        if sessions is not None and (new_sessions.n, new_items.n) == (sessions.n, items.n):
            return new_sessions, new_items, passes
        sessions, items = new_sessions, new_items
    raise ConfigError(f"filtering did not converge within {max_passes} passes")


def keyed_events(events: DataFrame) -> tuple[DataFrame, int, dict]:
    """Cache the compact (sk, ik, ts) table; return it, the salt used and input stats.

    The keys are checked, not assumed, to be collision-free: their distinct counts must equal
    the ids' distinct counts; another salt is tried otherwise.
    """
    n_sessions = events.select("session_id").distinct().count()
    n_items = events.select("item_id").distinct().count()
    for salt in range(3):
        keys = with_keys(events, salt).select("sk", "ik", "ts").persist()
        if (keys.select("sk").distinct().count(), keys.select("ik").distinct().count()) == (
            n_sessions,
            n_items,
        ):
            row = keys.agg(F.count(F.lit(1)), F.min("ts"), F.max("ts")).first()
            stats = {
                "events": row[0],
                "sessions": n_sessions,
                "items": n_items,
                "first_ts": str(row[1]),
                "last_ts": str(row[2]),
            }
            return keys, salt, stats
        keys.unpersist()
    raise ConfigError("session/item id hashes collide under three salts")  # pragma: no cover


@dataclass
class SplitSpec:
    """A split = the events before `before` (None: all) of `sessions`, with `items` only."""

    before: dt.datetime | None
    sessions: KeySet
    items: KeySet

    def select(self, keyed: DataFrame) -> DataFrame:
        df = keyed if self.before is None else keyed.filter(F.col("ts") < F.lit(self.before))
        df = keep(df, self.sessions.df, "sk", self.sessions.n)
        return keep(df, self.items.df, "ik", self.items.n)


def split_specs(
    keys: DataFrame,
    cfg: DatasetSettings,
    test_split: dt.datetime,
    valid_split: dt.datetime,
) -> tuple[dict[str, SplitSpec], int]:
    """Filter until stable, then split by time; everything on the compact keys table.

    Test = sessions starting at/after `test_split`, items unknown to train removed, then
    sessions of length >= min; train = events before the split, then sessions of length >= min.
    valid / train_tr repeat that at `valid_split` inside train. Returns the specs and passes.
    """
    mn, ts = cfg.min_session_length, F.col("ts")
    sessions, items, passes = stable_sets(keys, mn, cfg.min_item_support, cfg.max_passes)
    kept = SplitSpec(None, sessions, items).select(keys)
    per_session = (
        kept.groupBy("sk")
        .agg(
            F.min("ts").alias("start"),
            F.sum((ts < F.lit(test_split)).cast("int")).alias("n_test"),
            F.sum((ts < F.lit(valid_split)).cast("int")).alias("n_valid"),
        )
        .localCheckpoint(eager=True)
    )

    def where(cond) -> KeySet:
        return KeySet.of(per_session.filter(cond).select("sk"))

    def items_of(spec: SplitSpec) -> KeySet:
        return KeySet.of(spec.select(keys).select("ik").distinct())

    def long_enough(spec: SplitSpec) -> SplitSpec:
        counts = spec.select(keys).groupBy("sk").count()
        spec.sessions = KeySet.of(counts.filter(F.col("count") >= mn).select("sk"))
        return spec

    train = SplitSpec(test_split, where(F.col("n_test") >= mn), items)
    train_tr = SplitSpec(valid_split, where(F.col("n_valid") >= mn), items)
    test = long_enough(SplitSpec(None, where(F.col("start") >= F.lit(test_split)), items_of(train)))
    valid_cand = where((F.col("start") >= F.lit(valid_split)) & (F.col("n_test") >= mn))
    valid = long_enough(SplitSpec(test_split, valid_cand, items_of(train_tr)))
    return {"train": train, "train_tr": train_tr, "valid": valid, "test": test}, passes


def item_index(train: DataFrame) -> DataFrame:
    """item_id -> contiguous item_idx by (support desc, item_id asc), with support: the index
    of training and scoring (published as `items/` by the popularity job)."""
    support = train.groupBy("item_id").agg(F.count(F.lit(1)).alias("support"))
    order = Window.orderBy(F.col("support").desc(), F.col("item_id").asc())
    return support.select(
        "item_id", (F.row_number().over(order) - 1).cast("int").alias("item_idx"), "support"
    )


def indexed(split: DataFrame, items: DataFrame, n_items: int) -> DataFrame:
    """The split with each event's item_idx. Every split's items are train's (test and valid
    keep only items their training split knows; train_tr is a part of train): a left join,
    so an item missing from the index would show as a null the datasets gate refuses."""
    small = F.broadcast(items) if n_items <= BROADCAST_MAX_KEYS else items
    return split.join(small.select("item_id", "item_idx"), "item_id", "left").select(
        *DATASET_COLUMNS
    )


def training_order(split: DataFrame) -> DataFrame:
    """Sessions by their first event's time, then session id; events by seq."""
    start = F.min("ts").over(Window.partitionBy("session_id"))
    return (
        split.withColumn("_start", start)
        .orderBy("_start", "session_id", "seq")
        .select(*DATASET_COLUMNS)
    )


def read_sessions(
    spark: SparkSession,
    lake: Lake,
    day: dt.date,
    window_days: int,
    excluded: dict[str, str] | None = None,
) -> tuple[DataFrame, list[str]]:
    """Sessions of the window ending on `day`, without the `excluded` days (a failed gate);
    returns them and the list of missing days."""
    fs = FS(spark)
    excluded = excluded or {}
    days = [day - dt.timedelta(days=i) for i in range(window_days - 1, -1, -1)]
    present = [d for d in days if str(d) not in excluded and fs.exists(lake.sessions_day(d))]
    missing = [str(d) for d in days if d not in present and str(d) not in excluded]
    if not present:
        raise NoInputError(
            f"no sessions in the window {days[0]}..{day} under {lake.sessions}"
            + (f" (excluded by a failed gate: {sorted(excluded)})" if excluded else "")
        )
    paths = [lake.sessions_day(d) for d in present]
    df = spark.read.option("basePath", lake.sessions).parquet(*paths).drop(DT)
    return df, missing


def _stats(df: DataFrame, sessions: int) -> dict:
    """Events, distinct items and time span of a split; `sessions` comes from its key set."""
    row = df.agg(
        F.count(F.lit(1)).alias("events"),
        F.countDistinct("item_id").alias("items"),
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
    ).first()
    out = {k: (str(v) if isinstance(v, dt.datetime) else v) for k, v in row.asDict().items()}
    out["sessions"] = sessions
    return out


def run_build_datasets(
    spark: SparkSession,
    lake: Lake,
    day: dt.date,
    cfg: DatasetSettings | None = None,
    accepted_days=(),
) -> dict:
    """Build and publish `datasets/run=day`; return the summary. Days of the window whose raw
    or sessions gate failed are left out unless in `accepted_days` (jobs.quality.verdicts)."""
    t0 = time.monotonic()
    cfg = cfg or DatasetSettings()
    fs = FS(spark)
    window = [day - dt.timedelta(days=i) for i in range(cfg.window_days)]
    excluded = excluded_days(lake, window, accepted_days)
    for d, why in sorted(excluded.items()):
        log.warning("window day %s left out: %s", d, why)
    sessions, missing = read_sessions(spark, lake, day, cfg.window_days, excluded)
    if missing:
        log.warning("window %s days missing: %s", len(missing), ", ".join(missing))
    events = sessions.select(*SESSION_COLUMNS)
    keys, salt, stats_in = keyed_events(events)
    log.info("read and keyed the window: %.1f s", time.monotonic() - t0)
    end = midnight_utc(day + dt.timedelta(days=1))
    test_split = end - dt.timedelta(days=cfg.test_days)
    valid_split = test_split - dt.timedelta(days=cfg.valid_days)
    try:
        specs, passes = split_specs(keys, cfg, test_split, valid_split)
    finally:
        keys.unpersist()
    log.info("filtered in %d passes and split: %.1f s", passes, time.monotonic() - t0)

    with staging(fs, lake.datasets) as stage:
        keyed = with_keys(events, salt)
        items = item_index(specs["train"].select(keyed)).localCheckpoint(eager=True)
        n_items = items.count()
        for name in SPLITS:
            split = specs[name].select(keyed).select(*SESSION_COLUMNS)
            training_order(indexed(split, items, n_items)).write.parquet(f"{stage}/{name}")
        log.info("wrote the splits: %.1f s", time.monotonic() - t0)
        out_stats = {
            name: _stats(spark.read.parquet(f"{stage}/{name}"), specs[name].sessions.n)
            for name in SPLITS
        }
        for name in ("train", "test"):
            if out_stats[name]["events"] == 0:
                raise NoInputError(
                    f"the {name} split for {day} is empty after filtering "
                    f"({stats_in['events']} session events in the window): "
                    "widen --window-days or check the input"
                )
        publish_dir(fs, stage, lake.datasets_run(day))
    summary = {
        "job": "build_datasets",
        "run": str(day),
        "config": asdict(cfg),
        "window": [str(day - dt.timedelta(days=cfg.window_days - 1)), str(day)],
        "missing_days": missing,
        "excluded_days": excluded,
        "accepted_days": sorted(
            str(d) for d in accepted_days if str(d) in {str(w) for w in window}
        ),
        "input": stats_in,
        "filter_passes": passes,
        "test_split_time": str(test_split),
        "valid_split_time": str(valid_split),
        "splits": out_stats,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_summary(fs, lake.datasets, str(day), summary)
    return summary


def add_window_arguments(parser) -> None:
    """--window-days, --test-days, --valid-days, their defaults from DatasetSettings."""
    defaults = DatasetSettings()
    parser.add_argument(
        "--window-days",
        type=int,
        default=defaults.window_days,
        help="days of sessions in the window, ending with --date",
    )
    parser.add_argument(
        "--test-days", type=int, default=defaults.test_days, help="last days of the window for test"
    )
    parser.add_argument(
        "--valid-days",
        type=int,
        default=defaults.valid_days,
        help="days before the test days for validation (train_tr is train without them)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("python -m jobs.build_datasets", __doc__.splitlines()[0])
    parser.add_argument("--date", type=parse_date, required=True, help="last day of the window")
    add_window_arguments(parser)
    defaults = DatasetSettings()
    parser.add_argument(
        "--min-session-length",
        type=int,
        default=defaults.min_session_length,
        help="shorter sessions are dropped (after the item filter)",
    )
    parser.add_argument(
        "--min-item-support",
        type=int,
        default=defaults.min_item_support,
        help="items with fewer events in the window are dropped (filtered to a fixed point)",
    )
    add_verdict_arguments(parser)
    parser.add_argument(
        "--then-popularity",
        type=float,
        metavar="ALPHA",
        help="then build items/ and popularity/ (jobs.popularity, sampling exponent ALPHA) in "
        "this Spark application: the popularity task then finds them built from this split "
        "and starts no JVM",
    )
    add_then_validate_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    cfg = DatasetSettings(
        window_days=args.window_days,
        test_days=args.test_days,
        valid_days=args.valid_days,
        min_session_length=args.min_session_length,
        min_item_support=args.min_item_support,
    )
    lake = Lake(args.lake, args.quality_root or "")
    with hold_date(lake, args.date):  # one writer per date
        spark = get_spark("build_datasets", args.master, dict(args.conf))
        run_build_datasets(spark, lake, args.date, cfg, args.accept_days)
        if args.then_popularity is not None:
            from jobs.popularity import run_popularity

            run_popularity(spark, lake, args.date, args.then_popularity)
            if args.then_validate is not None:  # the datasets gate: splits and item index
                judge_after(spark, lake, C.SUITE_DATASETS, args.date, args.then_validate,
                            args.thresholds)  # fmt: skip
    return 0


if __name__ == "__main__":
    run_main(main)
