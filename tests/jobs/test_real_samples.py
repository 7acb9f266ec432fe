"""Every job on each real sample in ../shared/data, checked against counts computed here with
pandas (tests/jobs/reference.py), never read back from the job's own summaries."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.build_datasets import run_build_datasets
from jobs.common.lake import Lake
from jobs.common.settings import DatasetSettings, SessionizeSettings
from jobs.ingest import run_ingest
from jobs.popularity import run_popularity
from jobs.sessionize import run_sessionize
from jobs.sources import PRESETS
from tests.jobs.reference import filter_and_split, sessionize_pd

pytestmark = pytest.mark.slow

NO_CAP = SessionizeSettings(max_events_per_user_day=0)


def _day(us: int) -> dt.date:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).date()


def _spark_sessions(spark, lake):
    return (
        spark.read.parquet(lake.sessions)
        .select("session_id", "user_id", "item_id", F.unix_micros("ts").alias("ts_us"), "seq")
        .toPandas()
    )


def _check_sessions(spark, lake, expected: pd.DataFrame, first: dt.date, last: dt.date):
    """Spark sessions of [first, last] == the pandas reference's sessions starting then."""
    exp = expected[expected["start_us"].map(_day).between(first, last)]
    got = _spark_sessions(spark, lake)
    assert len(got) == len(exp)
    assert got["session_id"].nunique() == exp.groupby(["user_id", "start_us"]).ngroups
    # Same events in the same sessions: compare (user, session start, item, ts) multisets.
    got_start = got.groupby("session_id")["ts_us"].transform("min")
    a = sorted(zip(got.user_id, got_start, got.item_id, got.ts_us, strict=True))
    b = sorted(zip(exp.user_id, exp.start_us, exp.item_id, exp.ts_us, strict=True))
    assert a == b


def test_rsc15_sample_all_jobs(spark, shared_data, tmp_path):
    path = shared_data / "rsc15_sample" / "yoochoose-clicks-100k_train_full.txt"
    raw = pd.read_csv(path, sep="\t", dtype={"SessionId": str, "ItemId": str, "Time": str})
    lake = Lake(str(tmp_path / "lake"))
    s = run_ingest(spark, str(path), lake, PRESETS["rsc15"])
    ts_us = np.round(raw["Time"].astype(float) * 1e6).astype(np.int64)
    ev = pd.DataFrame({"user_id": raw.SessionId, "item_id": raw.ItemId, "ts_us": ts_us})
    ev = ev.drop_duplicates()
    assert s["rows_in"] == len(raw) == 70278
    assert s["events_out"] == len(ev)
    assert s["quarantined_total"] == 0

    first, last = _day(ev.ts_us.min()), _day(ev.ts_us.max())
    run_sessionize(spark, lake, first, NO_CAP, last_day=last)
    ref = sessionize_pd(ev)
    _check_sessions(spark, lake, ref, first, last)

    # train_full ends near midnight of its last day: a 2-day test span gives a real test set.
    _check_datasets_and_popularity(
        spark, lake, ref, last, (last - first).days + 1, test_days=2, min_test=1000
    )


def _check_datasets_and_popularity(
    spark,
    lake,
    ref,
    last: dt.date,
    window_days: int,
    test_days: int = 1,
    valid_days: int = 1,
    min_test: int = 100,
):
    """build_datasets + popularity == the pandas reference filter/split and item counts."""
    cfg = DatasetSettings(window_days=window_days, test_days=test_days, valid_days=valid_days)
    summary = run_build_datasets(spark, lake, last, cfg)
    ref = ref.assign(session_id=ref.user_id + "|" + ref.start_us.astype(str))
    split_day = last - dt.timedelta(days=test_days - 1)
    split_us = int(dt.datetime.combine(split_day, dt.time(), dt.UTC).timestamp() * 1e6)
    train, test = filter_and_split(ref, split_us)
    got_train = spark.read.parquet(lake.split(last, "train"))
    got_test = spark.read.parquet(lake.split(last, "test"))
    assert got_train.count() == len(train) and got_test.count() == len(test)
    assert got_test.select("session_id").distinct().count() == test.session_id.nunique()
    assert summary["splits"]["test"]["events"] == len(test) >= min_test

    pop = run_popularity(spark, lake, last, alpha=0.5)
    support = train.item_id.value_counts()
    items = spark.read.parquet(lake.items(last)).toPandas()
    assert pop["items"] == len(support) == len(items)
    assert dict(zip(items.item_id, items.support, strict=True)) == support.to_dict()
    top = sorted(support.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert list(items.sort_values("item_idx").item_id[:3]) == [k for k, _ in top]


def test_taobao_sample_page_views_with_outliers(spark, shared_data, tmp_path):
    path = shared_data / "taobao_sample" / "UserBehavior.csv"
    cols = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    raw = pd.read_csv(path, header=None, names=cols, dtype=str)
    lake = Lake(str(tmp_path / "lake"))
    s = run_ingest(spark, str(path), lake, PRESETS["taobao"])
    ts = raw.timestamp.astype(np.int64)
    lo = int(dt.datetime(2017, 11, 25, tzinfo=dt.UTC).timestamp())
    hi = int(dt.datetime(2017, 12, 4, tzinfo=dt.UTC).timestamp())
    pv = raw.behavior_type == "pv"
    inside = (ts >= lo) & (ts < hi)
    assert s["rows_in"] == len(raw) == 84475
    assert s["filtered_event_type"] == int((~pv).sum())
    assert s["quarantined"] == {"ts_out_of_window": int((pv & ~inside).sum())}
    ev = pd.DataFrame({"user_id": raw.user_id, "item_id": raw.item_id, "ts_us": ts * 1_000_000})[
        pv & inside
    ].drop_duplicates()
    assert s["events_out"] == len(ev)
    q = spark.read.parquet(lake.quarantine)
    assert q.count() == int((pv & ~inside).sum()) > 1000

    first, last = dt.date(2017, 11, 25), dt.date(2017, 12, 3)
    run_sessionize(spark, lake, first, NO_CAP, last_day=last)
    ref = sessionize_pd(ev)
    _check_sessions(spark, lake, ref, first, last)
    assert ref.groupby(["user_id", "start_us"]).ngroups > 10_000
    _check_datasets_and_popularity(spark, lake, ref, last, window_days=9)


def test_trivago_sample_orders_equal_timestamps_by_step(spark, shared_data, tmp_path):
    path = shared_data / "trivago_sample" / "trivago_val100k_item_events.csv"
    raw = pd.read_csv(path, dtype=str)
    lake = Lake(str(tmp_path / "lake"))
    s = run_ingest(spark, str(path), lake, PRESETS["trivago"])
    ev = pd.DataFrame(
        {
            "user_id": raw.user_id,
            "item_id": raw.item_id,
            "ts_us": raw.timestamp.astype(np.int64) * 1_000_000,
            "tiebreak": raw.step.astype(np.int64),
            "event_type": raw.action_type,
        }
    ).drop_duplicates()
    assert s["rows_in"] == len(raw)
    assert s["events_out"] == len(ev)
    ev = ev.drop(columns="event_type")
    first, last = _day(ev.ts_us.min()), _day(ev.ts_us.max())
    run_sessionize(spark, lake, first, NO_CAP, last_day=last)
    ref = sessionize_pd(ev)
    _check_sessions(spark, lake, ref, first, last)
    # The order inside sessions follows step: compare item sequences, not just sets.
    got = _spark_sessions(spark, lake).sort_values(["session_id", "seq"])
    got_seqs = sorted(tuple(g.item_id) for _, g in got.groupby("session_id"))
    ref_seqs = sorted(tuple(g.item_id) for _, g in ref.groupby(["user_id", "start_us"]))
    assert got_seqs == ref_seqs
    # Two days of data: a 3-day window with one test day (train_tr is empty, which is allowed).
    _check_datasets_and_popularity(spark, lake, ref, last, window_days=3, min_test=30)
