from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from jobs.common.fs import FS, publish_dir, publish_partitions, staging, write_summary


def _write(spark, path, rows):
    spark.createDataFrame(rows, "v int, dt string").write.partitionBy("dt").parquet(path)


def test_publish_partitions_replaces_only_the_run_dates(spark, tmp_path):
    fs = FS(spark)
    final = str(tmp_path / "t")
    _write(spark, final, [(1, "d1"), (2, "d2"), (3, "d3")])
    with staging(fs, final) as stage:
        _write(spark, stage, [(20, "d2")])
        # This run owns d2 and d3: d2 is replaced, d3 (nothing produced) removed, d1 untouched.
        assert publish_partitions(fs, stage, final, "dt", ["d2", "d3"]) == ["d2"]
    got = sorted((r.v, r.dt) for r in spark.read.parquet(final).collect())
    assert got == [(1, "d1"), (20, "d2")]
    assert not fs.exists(stage)


def test_a_failed_run_leaves_no_staged_output_and_the_published_data_intact(spark, tmp_path):
    fs = FS(spark)
    final = str(tmp_path / "t")
    _write(spark, final, [(1, "d1")])
    with pytest.raises(RuntimeError), staging(fs, final) as stage:
        _write(spark, stage, [(2, "d1")])
        raise RuntimeError("the job failed before publishing")
    assert not fs.exists(stage)
    assert fs.list_dirs(f"{final}/_staging") == []
    assert [(r.v, r.dt) for r in spark.read.parquet(final).collect()] == [(1, "d1")]


def test_publish_dir_swaps_whole_directory(spark, tmp_path):
    fs = FS(spark)
    final = str(tmp_path / "run=x")
    spark.range(3).write.parquet(final)
    with staging(fs, str(tmp_path)) as stage:
        spark.range(5).write.parquet(stage)
        publish_dir(fs, stage, final)
    assert spark.read.parquet(final).agg(F.max("id")).first()[0] == 4
    assert fs.list_dirs(str(tmp_path / "_trash")) == []


def test_summary_is_written_atomically_and_readable(spark, tmp_path):
    fs = FS(spark)
    path = write_summary(fs, str(tmp_path / "ds"), "2024-01-01", {"rows": 3})
    assert json.loads((tmp_path / "ds" / "_summaries" / "2024-01-01.json").read_text()) == {
        "rows": 3
    }
    assert path.endswith("_summaries/2024-01-01.json")
    assert [p.name for p in (tmp_path / "ds" / "_summaries").iterdir()] == ["2024-01-01.json"]


def test_what_readers_see_between_publish_dirs_two_renames(spark, tmp_path):
    """The documented window: the partition is absent between the renames, the other
    partitions are whole, and no reader sees a partial or mixed partition."""
    fs = FS(spark)
    final = str(tmp_path / "t")
    _write(spark, final, [(1, "d1"), (2, "d2"), (2, "d2"), (3, "d3")])
    seen = []
    rename = fs.rename

    def rename_and_look(src, dst):
        rename(src, dst)
        if "_trash" in dst:  # the old d2 moved aside, the new one not yet in
            seen.append(sorted((r.v, r.dt) for r in spark.read.parquet(final).collect()))
            seen.append(fs.exists(f"{final}/dt=d2"))

    fs.rename = rename_and_look
    with staging(fs, final) as stage:
        _write(spark, stage, [(20, "d2")])
        publish_partitions(fs, stage, final, "dt", ["d2"])
    assert seen == [[(1, "d1"), (3, "d3")], False]
    got = sorted((r.v, r.dt) for r in spark.read.parquet(final).collect())
    assert got == [(1, "d1"), (3, "d3"), (20, "d2")]


def test_a_failed_second_rename_puts_the_old_partition_back(spark, tmp_path):
    fs = FS(spark)
    final = str(tmp_path / "t")
    _write(spark, final, [(1, "d1"), (2, "d2")])
    rename = fs.rename

    def fail_moving_in(src, dst):
        if "_staging" in src:
            raise OSError(f"rename failed: {src} -> {dst}")
        rename(src, dst)

    fs.rename = fail_moving_in
    with pytest.raises(OSError), staging(fs, final) as stage:
        _write(spark, stage, [(20, "d2")])
        publish_partitions(fs, stage, final, "dt", ["d2"])
    got = sorted((r.v, r.dt) for r in spark.read.parquet(final).collect())
    assert got == [(1, "d1"), (2, "d2")]
