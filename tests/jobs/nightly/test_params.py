"""Params -> settings: one home per default, validated once, every setting reachable by a
param or a GRU4REC_* variable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jobs.common.errors import ConfigError
from jobs.common.settings import (
    DatasetSettings,
    SessionizeSettings,
    SparkSettings,
    deployment_spark_conf,
)
from jobs.nightly import commands
from jobs.nightly.params import PARAMS, Night, default_params
from jobs.nightly.runner import redact

DAY = "2026-01-05"


def test_defaults_are_the_settings_defaults():
    night = Night.from_params({}, DAY)
    assert night.sessionize == SessionizeSettings()
    assert night.datasets == DatasetSettings()
    assert night.spark == SparkSettings()
    assert night.sessionize.max_events_per_user_day == 10_000  # the bot cap is on
    assert (night.scoring.k, night.metric) == (20, "recall@20")


def test_every_settings_field_a_deployment_may_change_is_a_param():
    fields = {
        (spec.component, spec.field) for spec in PARAMS.values() if spec.component != "thresholds"
    }
    for component in ("spark", "sessionize", "datasets", "popularity", "train", "scoring",
                      "promotion"):  # fmt: skip
        cls = type(getattr(Night.from_params({}, DAY), component))
        for f in dataclasses.fields(cls):
            if f.name != "max_passes":  # a safety limit of the filter, not a setting
                assert (component, f.name) in fields, (component, f.name)


def test_the_window_rule_is_checked_once_where_the_night_is_built():
    # window 2 = test 1 + valid 1 leaves no day to train on: refused before any task runs
    with pytest.raises(ConfigError, match="window_days: expected more than test_days"):
        Night.from_params({"window_days": 2, "test_days": 1, "valid_days": 1}, DAY)
    assert Night.from_params({"window_days": 3, "test_days": 1, "valid_days": 1}, DAY)


def test_bad_values_and_names_fail_with_what_was_expected():
    with pytest.raises(ConfigError, match="unknown params \\['lake_root'\\]"):
        Night.from_params({"lake_root": "x"}, DAY)
    with pytest.raises(ConfigError, match="gap_seconds: expected an integer >= 1, found 0"):
        Night.from_params({"gap_seconds": 0}, DAY)
    with pytest.raises(ConfigError, match="driver_memory"):
        Night.from_params({"driver_memory": "lots"}, DAY)
    with pytest.raises(ConfigError, match="launch-time"):
        Night.from_params({"spark_conf": {"spark.driver.memory": "8g"}}, DAY)
    with pytest.raises(ConfigError, match="promotion_margin"):
        Night.from_params({"promotion_margin": 1.5}, DAY)
    with pytest.raises(ConfigError, match="unknown mapping keys"):
        Night.from_params({"column_mapping": {"usr_col": "x"}}, DAY)
    with pytest.raises(ConfigError, match="quality thresholds"):
        Night.from_params({"quality_thresholds": {"max_share": 1}}, DAY)
    with pytest.raises(ConfigError, match="quality thresholds: expected an object"):
        Night.from_params({"quality_thresholds": [1]}, DAY)
    with pytest.raises(ConfigError, match="column_mapping"):  # a number where a date belongs
        Night.from_params({"column_mapping": {"min_ts": 5}}, DAY)
    assert Night.from_params({"driver_memory": "512mb"}, DAY).spark.driver_memory == "512mb"


def test_environment_sets_the_deployment_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("GRU4REC_GAP_SECONDS", "600")
    monkeypatch.setenv("GRU4REC_REMOVE_REPEATS", "false")
    monkeypatch.setenv("GRU4REC_SPARK_CONF", '{"spark.sql.shuffle.partitions": "4"}')
    monkeypatch.setenv("GRU4REC_LAKE", str(tmp_path / "lake"))
    assert default_params()["gap_seconds"] == 600
    night = Night.from_params({"lookback_days": 3}, DAY)
    assert night.sessionize == SessionizeSettings(600, 3, False, 10_000)
    assert night.spark.conf == {}  # the deployment's Spark settings are no param (see below)
    assert deployment_spark_conf() == {"spark.sql.shuffle.partitions": "4"}
    assert night.lake.root == str(tmp_path / "lake")
    monkeypatch.setenv("GRU4REC_EPOCHS", "ten")
    with pytest.raises(ConfigError, match="GRU4REC_EPOCHS: expected int, found 'ten'"):
        default_params()


@pytest.mark.parametrize(
    "key, value",
    [
        ("spark.driver.extraJavaOptions", "-agentpath:/tmp/evil.so"),
        ("spark.executor.extraJavaOptions", "-Dx=1"),
        ("spark.jars", "http://evil/x.jar"),
        ("spark.jars.packages", "evil:evil:1"),
        ("spark.pyspark.python", "/tmp/evil.sh"),
        ("spark.sql.extensions", "evil.Extension"),
        ("spark.hadoop.fs.s3a.endpoint", "http://evil"),
        ("spark.plugins", "evil.Plugin"),
    ],
)
def test_a_runs_conf_cannot_set_spark_settings_that_run_code_or_name_paths(key, value):
    """Anyone allowed to trigger the DAG with config could make every Spark task run code."""
    with pytest.raises(ConfigError, match=f"spark_conf: a run may only change .*{key}"):
        Night.from_params({"spark_conf": {key: value}}, DAY)


def test_a_runs_conf_may_tune_spark_with_plain_values_only(monkeypatch):
    night = Night.from_params({"spark_conf": {"spark.sql.shuffle.partitions": "16"}}, DAY)
    assert night.spark.conf == {"spark.sql.shuffle.partitions": "16"}
    with pytest.raises(ConfigError, match="plain values.*spark.executor.memory"):
        Night.from_params({"spark_conf": {"spark.executor.memory": "1g -Dx=1"}}, DAY)
    # a deployment may widen the list (and set anything itself in GRU4REC_SPARK_CONF)
    monkeypatch.setenv("GRU4REC_RUN_SPARK_CONF_KEYS", '["spark.locality.wait"]')
    assert Night.from_params({"spark_conf": {"spark.locality.wait": "0s"}}, DAY).spark.conf


def test_the_spark_master_is_the_deployments_alone(monkeypatch):
    with pytest.raises(ConfigError, match="spark_master: set by the deployment"):
        Night.from_params({"spark_master": "spark://evil:7077"}, DAY)
    assert Night.from_params({"spark_master": "local[*]"}, DAY)  # the default itself: fine
    monkeypatch.setenv("GRU4REC_SPARK_MASTER", "spark://cluster:7077")
    night = Night.from_params({"spark_master": "spark://cluster:7077"}, DAY)
    assert night.spark.master == "spark://cluster:7077"
    assert Night.from_params({}, DAY).spark.master == "spark://cluster:7077"


def test_a_runs_paths_stay_under_the_deployments_roots(monkeypatch, tmp_path):
    monkeypatch.delenv("GRU4REC_ROOTS", raising=False)
    monkeypatch.setenv("GRU4REC_LAKE", str(tmp_path / "lake"))
    (tmp_path / "lake").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "lake" / "escape").symlink_to(tmp_path / "elsewhere")
    assert Night.from_params({"lake": str(tmp_path / "lake" / "tenant-a")}, DAY)
    for name, path in (
        ("lake", "/"),
        ("lake", str(tmp_path / "elsewhere")),
        ("lake", str(tmp_path / "lake" / ".." / "elsewhere")),
        ("lake", str(tmp_path / "lake" / "escape")),  # a link out of the lake
        ("lake", str(tmp_path / "lake-not-really")),  # a prefix, not a parent
        ("quality_root", "/etc"),
        ("raw_input", "/etc/passwd"),
        ("raw_input", "s3a://someone-elses-bucket/raw/dt={ds}"),
    ):
        with pytest.raises(ConfigError, match=f"{name}: expected a path under the deployment"):
            Night.from_params({name: path}, DAY)
    # the deployment names its roots: object storage and a delivery directory
    monkeypatch.setenv("GRU4REC_ROOTS", f'["s3a://bucket/lake", "{tmp_path / "deliveries"}"]')
    night = Night.from_params(
        {"lake": "s3a://bucket/lake/prod", "raw_input": f"{tmp_path}/deliveries/dt={{ds}}"}, DAY
    )
    assert night.lake.root == "s3a://bucket/lake/prod"
    with pytest.raises(ConfigError, match="lake: expected a path under"):
        Night.from_params({"lake": "s3a://bucket/lake-b"}, DAY)


def test_deployment_spark_secrets_never_reach_a_param_argv_or_a_log(monkeypatch, tmp_path):
    secret = "AKIA-TOP-SECRET-42"
    conf = {"spark.hadoop.fs.s3a.secret.key": secret, "spark.sql.shuffle.partitions": "3"}
    monkeypatch.setenv("GRU4REC_SPARK_CONF", json.dumps(conf))
    monkeypatch.setenv("GRU4REC_PRIVATE_DIR", str(tmp_path / "private"))
    assert default_params()["spark_conf"] == {}  # what the UI shows as the default
    night = Night.from_params({}, DAY)
    assert secret not in repr(night)
    cmd = commands.sessionize(night)
    assert secret not in " ".join(cmd)
    props = Path(cmd[cmd.index("--properties-file") + 1])
    assert "--load-spark-defaults" in cmd
    assert secret in props.read_text() and props.stat().st_mode & 0o777 == 0o600
    assert props.parent.stat().st_mode & 0o777 == 0o700
    assert commands.sessionize(night) == cmd  # one file per content, reused
    # a secret-looking setting on a command line is hidden from the task log
    shown = redact(["spark-submit", "--conf", f"spark.hadoop.fs.s3a.secret.key={secret}", "x=1"])
    assert secret not in " ".join(shown) and "x=1" in shown
    # a private directory someone else can read is refused, not used
    (tmp_path / "private").chmod(0o755)
    with pytest.raises(ConfigError, match="mode 0700"):
        commands.sessionize(night)
