from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.build_datasets import (
    keyed_events,
    run_build_datasets,
    split_specs,
    stable_sets,
    with_keys,
)
from jobs.common import contracts as C
from jobs.common.errors import ConfigError
from jobs.common.lake import Lake
from jobs.common.settings import DatasetSettings
from jobs.popularity import item_index, popularity, run_popularity

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def sessions_df(spark, rows):
    """rows: (session_id, item_id, hours after T0)."""
    seen: dict[str, int] = {}
    data = []
    for s, i, h in sorted(rows, key=lambda r: (r[0], r[2])):  # seq = position in the session
        data.append((s, "u" + s, i, T0 + dt.timedelta(hours=h), seen.setdefault(s, 0)))
        seen[s] += 1
    df = spark.createDataFrame(
        data, "session_id string, user_id string, item_id string, ts timestamp, seq int"
    )
    return df


def _split(spark, rows, day_split: dt.datetime, valid_split: dt.datetime, **cfg):
    """Run filter + split on inline sessions; return {split: sorted (session, item)}, passes."""
    events = sessions_df(spark, rows)
    keys, salt, _ = keyed_events(events)
    specs, passes = split_specs(keys, DatasetSettings(**cfg), day_split, valid_split)
    keyed = with_keys(events, salt)
    got = {
        name: sorted((r.session_id, r.item_id) for r in spec.select(keyed).collect())
        for name, spec in specs.items()
    }
    keys.unpersist()
    return got, passes


def test_filter_needs_several_passes_to_be_stable(spark):
    # Item x has support 5 only thanks to session s3; s3 has length 2 only thanks to item y
    # (support 1). Pass 1 drops y, then s3 (now length 1), leaving x with support 4;
    # pass 2 drops x, then s1 and t* (now length 1); pass 3 changes nothing.
    rows = [("s1", "x", 0), ("s1", "a", 0.1)]
    rows += [(f"t{k}", "x", 0) for k in range(3)] + [(f"t{k}", "a", 0.1) for k in range(3)]
    rows += [("s3", "x", 0), ("s3", "y", 0.1)]
    rows += [(f"w{k}", "a", 0) for k in range(2)] + [(f"w{k}", "b", 0.1) for k in range(2)]
    rows += [(f"v{k}", "b", 0) for k in range(3)] + [(f"v{k}", "a", 0.1) for k in range(3)]
    keys = with_keys(sessions_df(spark, rows)).select("sk", "ik", "ts")
    sessions, items, passes = stable_sets(keys, 2, 5, 100)
    assert passes == 3
    assert items.n == 2 and sessions.n == 5
    late = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # everything is train
    got, _ = _split(spark, rows, late, late - dt.timedelta(days=1))
    assert {i for _, i in got["train"]} == {"a", "b"}
    assert sorted({s for s, _ in got["train"]}) == ["v0", "v1", "v2", "w0", "w1"]


def test_filter_stops_after_max_passes(spark):
    rows = [("s1", "x", 0), ("s1", "a", 0.1)] + [(f"t{k}", "a", 0) for k in range(5)]
    keys = with_keys(sessions_df(spark, rows)).select("sk", "ik", "ts")
    with pytest.raises(ConfigError, match="did not converge within 1 passes"):
        stable_sets(keys, 2, 5, 1)


def test_time_split_boundaries_truncation_and_unknown_items(spark):
    split = dt.datetime(2024, 3, 2, tzinfo=dt.UTC)  # T0 + 24h
    rows = [
        ("old", "a", 1),
        ("old", "b", 2),  # train
        ("straddle", "a", 23),
        ("straddle", "b", 23.5),
        ("straddle", "c", 24.5),
        ("short", "a", 23.9),
        ("short", "c", 24.1),  # truncated to length 1 -> dropped
        ("new", "a", 24),
        ("new", "b", 25),  # starts exactly at split -> test
        ("unk", "a", 26),
        ("unk", "zz", 27),  # zz unknown to train -> len 1 -> gone
        ("new2", "b", 26),
        ("new2", "zz", 26.5),
        ("new2", "a", 27),  # zz removed, closes up
    ]
    # No support filter here: this test is about the split alone.
    got, _ = _split(spark, rows, split, split - dt.timedelta(hours=12), min_item_support=1)
    assert got["train"] == [("old", "a"), ("old", "b"), ("straddle", "a"), ("straddle", "b")]
    assert got["test"] == [("new", "a"), ("new", "b"), ("new2", "a"), ("new2", "b")]
    # Inside train, split at T0+12h: old is train_tr; straddle starts after -> valid, whose
    # items must be known to train_tr (a and b are).
    assert got["train_tr"] == [("old", "a"), ("old", "b")]
    assert got["valid"] == [("straddle", "a"), ("straddle", "b")]


def test_dataset_config_is_validated():
    with pytest.raises(ConfigError, match="window_days"):
        DatasetSettings(window_days=2, test_days=1, valid_days=1)
    with pytest.raises(ConfigError, match="test_days"):
        DatasetSettings(test_days=0)


def test_item_index_is_contiguous_and_deterministic(spark):
    rows = [("a",)] * 3 + [("b",)] * 5 + [("c",)] * 3 + [("d",)]
    df = spark.createDataFrame(rows, "item_id string")
    got = [tuple(r) for r in item_index(df).orderBy("item_idx").collect()]
    assert got == [("b", 0, 5), ("a", 1, 3), ("c", 2, 3), ("d", 3, 1)]
    again = [tuple(r) for r in item_index(df.orderBy(F.rand(1))).orderBy("item_idx").collect()]
    assert again == got


def test_popularity_weights_and_cdf(spark):
    items = spark.createDataFrame(
        [("b", 0, 9), ("a", 1, 4), ("c", 2, 1)], "item_id string, item_idx int, support long"
    )
    rows = popularity(items, 0.5).orderBy("item_idx").collect()
    assert [r.weight for r in rows] == pytest.approx([3.0, 2.0, 1.0])
    assert [r.cdf for r in rows] == pytest.approx([0.5, 5 / 6, 1.0])
    uniform = popularity(items, 0.0).orderBy("item_idx").collect()
    assert [r.cdf for r in uniform] == pytest.approx([1 / 3, 2 / 3, 1.0])


def write_four_days(spark, lake) -> None:
    """sessions/dt=2024-03-01..04: 12 two-event sessions a day (s<day>_<k>) over 6 items."""
    rows = []
    for k in range(12):
        for d in range(4):
            sid = f"s{d}_{k}"
            rows += [
                (sid, f"i{k % 6}", 24 * d + 1 + k * 0.5),
                (sid, f"i{(k + 1) % 6}", 24 * d + 1.1 + k * 0.5),
            ]
    df = sessions_df(spark, rows).withColumn("dt", F.date_format("ts", "yyyy-MM-dd"))
    df.write.partitionBy("dt").parquet(lake.sessions)


def test_build_and_popularity_publish_run_directory(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_four_days(spark, lake)
    day = dt.date(2024, 3, 4)
    s = run_build_datasets(spark, lake, day, DatasetSettings(window_days=4))
    assert s["splits"]["test"]["sessions"] == 12 and s["splits"]["valid"]["sessions"] == 12
    assert s["splits"]["train"]["sessions"] == 36 and s["splits"]["train_tr"]["sessions"] == 24
    p = run_popularity(spark, lake, day, alpha=1.0)
    assert p["items"] == 6 and p["train_events"] == 72
    items = spark.read.parquet(lake.items(day)).collect()
    assert sorted(r.item_idx for r in items) == list(range(6))
    test = spark.read.parquet(lake.split(day, "test"))
    assert sorted({r.seq for r in test.collect()}) == [0, 1]
    assert test.columns == ["session_id", "user_id", "item_id", "ts", "seq", "item_idx"]
    assert [(f.name, f.dataType.simpleString()) for f in test.schema] == list(C.DATASET.fields)


def test_popularity_is_reused_only_for_the_split_and_alpha_it_was_built_from(spark, tmp_path):
    """The popularity task starts no JVM when items/ and popularity/ were built from exactly
    the train split there now with tonight's alpha; any other split, alpha or a table from
    before the version was recorded is built again."""
    import os

    from jobs.quality.versions import popularity_reusable

    lake = Lake(str(tmp_path / "lake"))
    write_four_days(spark, lake)
    day = dt.date(2024, 3, 4)
    run_build_datasets(spark, lake, day, DatasetSettings(window_days=4))
    assert not popularity_reusable(lake, day, 0.5)  # nothing built yet
    run_popularity(spark, lake, day, alpha=0.5)
    assert popularity_reusable(lake, day, 0.5)
    assert not popularity_reusable(lake, day, 1.0)  # another alpha
    part = next(p for p in Path(lake.split(day, "train")).rglob("*.parquet"))
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))
    assert not popularity_reusable(lake, day, 0.5)  # the split was rewritten since
    run_popularity(spark, lake, day, alpha=0.5)
    assert popularity_reusable(lake, day, 0.5)
    summary = Path(lake.popularity_summary(day))
    record = json.loads(summary.read_text())
    summary.write_text(json.dumps({k: v for k, v in record.items() if k != "input_version"}))
    assert not popularity_reusable(lake, day, 0.5)  # a table from before versions


def test_a_day_whose_gate_failed_stays_out_of_later_windows_until_accepted(spark, tmp_path):
    """Finding: a failed raw gate was forgotten the next night (its events were sessionized
    by the catch-up and trained on). Its verdict persists: the window leaves the day out,
    the summary says why, and only an operator's acceptance lets it back in."""
    from jobs.common.localfs import write_json_atomic

    lake = Lake(str(tmp_path / "lake"))
    write_four_days(spark, lake)
    bad = "2024-03-02"
    failure = {"suite": "raw_events", "success": False, "failed": ["_quarantine_share max 0.8"]}
    write_json_atomic(lake.suite_result(bad, "raw_events"), failure)
    passed = {"suite": "sessions", "success": True, "failed": []}
    write_json_atomic(lake.suite_result("2024-03-03", "sessions"), passed)
    # a catch-up batch's failed result, recorded under each day of the batch, names no day
    shared = {**failure, "validated_with": "2024-03-04"}
    write_json_atomic(lake.suite_result("2024-03-01", "raw_events"), shared)
    day, cfg = dt.date(2024, 3, 4), DatasetSettings(window_days=4)

    s = run_build_datasets(spark, lake, day, cfg)
    assert s["excluded_days"] == {bad: "raw_events gate failed: _quarantine_share max 0.8"}
    assert s["missing_days"] == [] and s["accepted_days"] == []
    train = spark.read.parquet(lake.split(day, "train"))
    assert train.filter(F.col("session_id").startswith("s1_")).count() == 0  # 03-02's sessions
    assert s["splits"]["train"]["sessions"] == 24

    s = run_build_datasets(spark, lake, day, cfg, accepted_days=[bad])  # an operator accepts
    assert s["excluded_days"] == {} and s["accepted_days"] == [bad]
    assert s["splits"]["train"]["sessions"] == 36

    from jobs.nightly.report import write_run_report

    run_build_datasets(spark, lake, day, cfg)
    write_run_report(lake, str(day))
    page = Path(lake.run_report(str(day))).read_text()
    assert f"window day {bad} left out" in page and "_quarantine_share max 0.8" in page


def test_splits_carry_the_item_index_in_training_order_and_read_as_integer_arrays(spark, tmp_path):
    """Each split carries item_idx from the published items/ table and is written in training
    order, across several part files: the trainer's integer-array reader (read_compact) gets
    exactly what the frame reader (build_sessions) gets, without a frame."""
    import random

    from gru4rec.data import ItemMap, build_sessions, read_compact, read_events

    rng = random.Random(3)
    rows = []
    for k in range(400):  # starts on a 10-minute grid: many sessions share a start time
        start, sid = rng.randrange(0, 4 * 24 * 6 - 1) / 6, f"s{k * 7919 % 1000:03d}"
        for e in range(rng.randint(1, 6)):
            item = f"i{int(rng.paretovariate(1.2))}"
            rows.append((sid, item, start + e * rng.randint(1, 3) / 60))
    lake = Lake(str(tmp_path / "lake"))
    df = sessions_df(spark, rows).withColumn("dt", F.date_format("ts", "yyyy-MM-dd"))
    df.write.partitionBy("dt").parquet(lake.sessions)
    day = dt.date(2024, 3, 4)
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    try:
        run_build_datasets(spark, lake, day, DatasetSettings(window_days=4, min_item_support=2))
        run_popularity(spark, lake, day)
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    item_map = ItemMap.read_parquet(lake.items(day))
    for name in ("train", "train_tr", "valid", "test"):
        path = lake.split(day, name)
        frame = read_events(path)
        if name == "train":  # the cases this test is about occur
            assert len(list(Path(path).glob("*.parquet"))) > 1
            starts = frame.groupby("session_id")["time"].min()
            assert starts.duplicated().any()  # sessions tied on start time, ordered by id
        expected = build_sessions(frame, item_map, name)
        got = read_compact(path, item_map, name, times=True)
        assert got is not None, name
        assert got.items.dtype == np.int32
        assert np.array_equal(got.items, expected.items), name
        assert np.array_equal(got.offsets, expected.offsets), name
        assert np.allclose(got.times, expected.times), name
        # the published index is the one the datasets job gave every event
        pairs = pd.read_parquet(path, columns=["item_id", "item_idx"]).drop_duplicates()
        assert (item_map.lookup(pairs["item_id"].to_numpy(object)) == pairs["item_idx"]).all()


def test_popularity_refuses_a_train_split_whose_item_idx_is_not_one_index(spark, tmp_path):
    from jobs.common.errors import SchemaError

    lake = Lake(str(tmp_path / "lake"))
    write_four_days(spark, lake)
    day = dt.date(2024, 3, 4)
    run_build_datasets(spark, lake, day, DatasetSettings(window_days=4))
    train = spark.read.parquet(lake.split(day, "train"))
    broken = train.withColumn(  # two items share an index
        "item_idx", F.when(F.col("item_idx") == 1, F.lit(0)).otherwise(F.col("item_idx"))
    )
    broken.localCheckpoint(eager=True).write.mode("overwrite").parquet(lake.split(day, "train"))
    with pytest.raises(SchemaError, match="expected one contiguous index"):
        run_popularity(spark, lake, day)
