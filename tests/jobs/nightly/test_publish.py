"""The nightly publish of recommendations: a scored version is validated, then the date's link
swaps to it atomically; readers never see a partial table, a rerun replaces only its date, a
killed scoring run leaves the published table intact, and nothing unvalidated is published."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gru4rec.score import score_sessions
from jobs.common.errors import ConfigError
from jobs.common.lake import Lake
from jobs.nightly import publish
from jobs.quality.recommendations import validate_scored
from jobs.quality.store import QualityGateError
from tests.scoring_fixtures import (
    SESSIONS,
    WHEN,
    kill_scoring_mid_write,
    make_checkpoint,
    write_sessions,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def night(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    model_dir = Path(lake.model_version("2026-01-01", "a"))
    model_dir.mkdir(parents=True)
    path, model, item_map = make_checkpoint(model_dir)
    for day in ("2026-01-02", "2026-01-03"):
        write_sessions(Path(lake.sessions_day(day)), SESSIONS)
    return lake, model_dir, item_map


def new_version(lake: Lake, day: str) -> Path:
    return publish.new_version_path(lake, day)  # the scorer creates it, whole


def score_and_validate(lake, model_dir, day, at=WHEN) -> Path:
    """What the DAG's score and validate_recommendations tasks do: a validated version."""
    staged = new_version(lake, day)
    score_sessions(model_dir, lake.sessions_day(day), staged, generated_at=at)
    result = validate_scored(staged, model_dir, lake.sessions_day(day))
    publish.mark_validated(staged, day, result["results"])
    return staged


def score_and_publish(lake, model_dir, day, at=WHEN, **kw) -> dict:
    """What the DAG's score, validate_recommendations and publish tasks do, in one go."""
    staged = score_and_validate(lake, model_dir, day, at)
    return publish.publish_staged(lake, day, staged, **kw)


def test_rerun_replaces_the_day_and_nothing_else(night):
    lake, model_dir, _ = night
    score_and_publish(lake, model_dir, "2026-01-02")
    score_and_publish(lake, model_dir, "2026-01-03")
    first = pd.read_parquet(lake.recommendations_day("2026-01-02"))
    later = WHEN.replace(hour=9)
    record = score_and_publish(lake, model_dir, "2026-01-03", at=later)
    assert record["sessions"] == 3 and record["rows"] == 60
    assert (pd.read_parquet(lake.recommendations_day("2026-01-03")).generated_at == later).all()
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day("2026-01-02")), first)
    versions = Path(lake.recommendations_versions("2026-01-03"))
    assert len(versions_of(versions)) == 2  # the replaced one stays for its grace period
    score_and_publish(lake, model_dir, "2026-01-03", grace_s=0)
    assert len(versions_of(versions)) == 1  # grace over: only the current one is left


def versions_of(versions: Path) -> list[Path]:
    """Version directories, published or not (a killed scorer's hidden staging one too)."""
    return [v for v in versions.iterdir() if v.is_dir()]


def test_every_reader_sees_the_same_rows(night, spark):
    lake, model_dir, _ = night
    score_and_publish(lake, model_dir, "2026-01-02")
    score_and_publish(lake, model_dir, "2026-01-03")
    part = lake.recommendations_day("2026-01-02")
    cols = ["session_id", "rank", "item_id", "score"]
    ref = pq.read_table(part).to_pandas()[cols]
    pdf = pd.read_parquet(part)[cols]
    ddb = duckdb.sql(f"select * from read_parquet('{part}/*.parquet') order by session_id, rank")
    root = lake.recommendations
    sdf = spark.read.parquet(root).where("dt = '2026-01-02'").orderBy("session_id", "rank")
    assert spark.read.parquet(root).count() == 120  # both days, _versions ignored
    for other in (pdf, ddb.df()[cols], sdf.select(*cols).toPandas()):
        pd.testing.assert_frame_equal(
            other.reset_index(drop=True), ref, check_dtype=False, check_exact=False, rtol=1e-6
        )


def test_killed_scoring_leaves_the_published_table_intact(night):
    lake, model_dir, _ = night
    day = "2026-01-02"
    score_and_publish(lake, model_dir, day)
    before = pd.read_parquet(lake.recommendations_day(day))
    kill_scoring_mid_write(str(model_dir), lake.sessions_day(day), str(new_version(lake, day)))
    versions = Path(lake.recommendations_versions(day))
    assert len(versions_of(versions)) == 2  # the published version and the killed partial one
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day(day)), before)
    # a kill between creating the new link and swapping it leaves a stray link: harmless
    root = Path(lake.recommendations)
    target = publish.current_version(root, f"dt={day}")
    os.symlink(target, root / f".dt={day}.link-dead", target_is_directory=True)
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day(day)), before)
    time.sleep(0.01)
    score_and_publish(lake, model_dir, day)  # within the grace period: nothing collected yet
    assert len(versions_of(versions)) == 3
    score_and_publish(lake, model_dir, day, grace_s=0)  # a run after the grace period cleans up
    assert len(versions_of(versions)) == 1 and not list(versions.glob(".*"))  # no tombstones
    assert not list(root.glob(".dt=*"))


def test_only_a_validated_version_of_the_date_is_published(night, monkeypatch):
    lake, model_dir, _ = night
    day = "2026-01-02"
    score_and_publish(lake, model_dir, day)
    before = pd.read_parquet(lake.recommendations_day(day))
    unvalidated = new_version(lake, day)
    score_sessions(model_dir, lake.sessions_day(day), unvalidated)
    with pytest.raises(ConfigError, match="was not validated"):
        publish.publish_staged(lake, day, unvalidated)
    other_day = new_version(lake, "2026-01-03")
    score_sessions(model_dir, lake.sessions_day("2026-01-03"), other_day)
    publish.mark_validated(other_day, "2026-01-03", [])
    with pytest.raises(ConfigError, match="expected a version directory of 2026-01-02"):
        publish.publish_staged(lake, day, other_day)
    # another date's marker copied into this date's version does not validate it
    (unvalidated / publish.VALIDATED).write_bytes((other_day / publish.VALIDATED).read_bytes())
    with pytest.raises(ConfigError, match="expected version .* of 2026-01-02"):
        publish.publish_staged(lake, day, unvalidated)
    with pytest.raises(ConfigError, match="expected a version directory"):
        publish.publish_staged(lake, day, Path(lake.recommendations_day(day)))  # the link
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day(day)), before)


def test_a_table_failing_the_gate_is_not_published(night):
    """A scored table missing a row fails the gate; the date keeps its previous table."""
    lake, model_dir, item_map = night
    day = "2026-01-02"
    score_and_publish(lake, model_dir, day)
    before = pd.read_parquet(lake.recommendations_day(day))
    staged = new_version(lake, day)
    score_sessions(model_dir, lake.sessions_day(day), staged)
    part = staged / "part-00000.parquet"
    pq.write_table(pq.read_table(part).slice(1), part)
    with pytest.raises(QualityGateError, match="20 rows per session"):
        validate_scored(staged, model_dir, lake.sessions_day(day))
    assert not (staged / publish.VALIDATED).exists()
    with pytest.raises(ConfigError, match="was not validated"):
        publish.publish_staged(lake, day, staged)
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day(day)), before)
    assert np.array_equal(np.sort(before.session_id.unique()), ["s1", "s2", "s3"])


def test_a_version_changed_after_validation_is_not_published(night):
    """The marker is tied to the content the gate checked: a file rewritten, added or removed
    afterwards makes publish refuse the version."""
    lake, model_dir, _ = night
    day = "2026-01-02"
    score_and_publish(lake, model_dir, day)
    before = pd.read_parquet(lake.recommendations_day(day))
    staged = score_and_validate(lake, model_dir, day)
    part = staged / "part-00000.parquet"
    validated_bytes = part.read_bytes()
    pq.write_table(pq.read_table(part).slice(0, 20), part)  # one session left: fails the gate
    with pytest.raises(ConfigError, match=r"changed since it was validated: \['part-00000"):
        publish.publish_staged(lake, day, staged)
    part.write_bytes(validated_bytes)
    (staged / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=r"\['part-00001.parquet'\] differ"):
        publish.publish_staged(lake, day, staged)
    pd.testing.assert_frame_equal(pd.read_parquet(lake.recommendations_day(day)), before)
    (staged / "part-00001.parquet").unlink()
    publish.publish_staged(lake, day, staged)  # the validated content again: published
    assert publish.current_version(lake.recommendations, f"dt={day}") == staged.resolve()


def test_a_reader_on_the_replaced_version_reads_it_to_the_end(night, spark):
    """Readers that resolved the old version (pyarrow, DuckDB, Spark) keep reading it while a
    new version is published and cleanup runs; it is collected only after the grace period."""
    lake, model_dir, _ = night
    day = "2026-01-02"
    score_and_publish(lake, model_dir, day)
    root = Path(lake.recommendations)
    old = publish.current_version(root, f"dt={day}")
    expected = pq.read_table(old).to_pandas()
    arrow_reader = pq.ParquetFile(old / "part-00000.parquet")  # opened, not yet read
    duck = duckdb.connect()
    duck.execute(f"create view old as select * from read_parquet('{old}/*.parquet')")
    spark_df = spark.read.parquet(str(old))  # planned on the old version's files
    # a concurrent run's staged version, still being written, is not someone's garbage
    concurrent = new_version(lake, day)
    concurrent.mkdir()
    score_and_publish(lake, model_dir, day, at=WHEN.replace(hour=9))
    assert publish.current_version(root, f"dt={day}") != old
    assert publish.cleanup(root, f"dt={day}") == []
    got = arrow_reader.read().to_pandas()
    pd.testing.assert_frame_equal(got, expected)
    assert duck.execute("select count(*) from old").fetchone()[0] == len(expected)
    assert spark_df.count() == len(expected)
    assert concurrent.is_dir()
    later = time.time() + publish.DEFAULT_GRACE_S + 60
    removed = publish.cleanup(root, f"dt={day}", now=later)
    assert sorted(removed) == sorted([old.name, concurrent.name])
    assert not old.exists() and publish.current_version(root, f"dt={day}").is_dir()
