"""Params -> settings: one home per default, validated once, every setting reachable by a
param or a GRU4REC_* variable."""

from __future__ import annotations

import dataclasses

import pytest

from jobs.common.errors import ConfigError
from jobs.common.settings import DatasetSettings, SessionizeSettings, SparkSettings
from jobs.nightly.params import PARAMS, Night, default_params

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
    assert night.spark.conf == {"spark.sql.shuffle.partitions": "4"}
    assert night.lake.root == str(tmp_path / "lake")
    monkeypatch.setenv("GRU4REC_EPOCHS", "ten")
    with pytest.raises(ConfigError, match="GRU4REC_EPOCHS: expected int, found 'ten'"):
        default_params()
