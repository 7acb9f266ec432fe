"""Every task's command line follows the night's settings, and what a job receives is what the
params said: the sessionize settings, the driver's heap, k and the popularity table."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from jobs.nightly import commands
from jobs.nightly.params import Night
from jobs.nightly.runner import DataFailure, InfraFailure, run, step_env

DAY = "2026-01-05"


def _arg(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_commands_follow_the_params(tmp_path, monkeypatch):
    monkeypatch.setenv("GRU4REC_SPARK_MASTER", "spark://h:7077")  # the deployment's
    night = Night.from_params(
        {"lake": str(tmp_path), "spark_conf": {"spark.sql.shuffle.partitions": "3"},
         "column_mapping": {"user_col": "visitor"}, "source_preset": "", "epochs": 3,
         "device": "cuda", "driver_memory": "6g"},
        DAY,
    )  # fmt: skip
    ingest = commands.ingest(night, "/tmp/m.json")
    assert ingest[1:5] == ["--master", "spark://h:7077", "--driver-memory", "6g"]
    assert "--conf" in ingest and "spark.sql.shuffle.partitions=3" in ingest
    assert _arg(ingest, "--input") == f"{tmp_path}/raw/dt={{ds}}"
    assert _arg(ingest, "--mapping") == "/tmp/m.json" and "--preset" not in ingest
    assert _arg(ingest, "--catch-up-days") == "30"
    assert any(Path(a).name == "ingest.py" for a in ingest)
    out = commands.new_model_dir(night)
    train = commands.train(night, out)
    assert "n_epochs=3" in train and _arg(train, "--device") == "cuda"
    assert _arg(train, "--out") == out and out.startswith(night.lake.model_run(DAY) + "/v=")
    assert commands.new_model_dir(night) != out  # every training run gets its own version
    assert _arg(train, "--popularity") == night.lake.popularity(DAY)  # training samples from it
    mapping = commands.mapping_file(night)
    assert Path(mapping).read_text() == '{"user_col": "visitor"}'
    os.unlink(mapping)


def test_sessionize_settings_reach_the_job():
    """gap, lookback, repeats and the bot cap go from the params to the job's own settings."""
    from jobs.common.settings import SessionizeSettings
    from jobs.sessionize import build_parser, settings_from_args

    params = {"gap_seconds": 600, "lookback_days": 2, "remove_repeats": False,
              "max_events_per_user_day": 500}  # fmt: skip
    cmd = commands.sessionize(Night.from_params(params, DAY))
    job_args = cmd[next(i for i, a in enumerate(cmd) if a.endswith("sessionize.py")) + 1 :]
    assert settings_from_args(build_parser().parse_args(job_args)) == SessionizeSettings(
        600, 2, False, 500
    )
    default = commands.sessionize(Night.from_params({}, DAY))
    job_args = default[next(i for i, a in enumerate(default) if a.endswith("sessionize.py")) + 1 :]
    assert settings_from_args(build_parser().parse_args(job_args)) == SessionizeSettings()


def test_k_sets_the_scoring_the_cutoffs_and_the_gate():
    night = Night.from_params({"k": 10}, DAY)
    assert _arg(commands.score(night, "m", "out"), "--k") == "10"
    assert _arg(commands.evaluate(night, "m"), "--k") == "10"
    assert "10" in _arg(commands.train(night, "m"), "--cutoffs").split(",")


def test_the_driver_gets_the_heap_the_params_ask_for(tmp_path, monkeypatch):
    """On the DAG path (spark-submit built by the command builder) the running driver reports
    the requested spark.driver.memory and a heap above the 1 GiB default."""
    import pandas as pd

    from jobs.common.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    train = Path(lake.split(DAY, "train"))
    train.mkdir(parents=True)
    ts = pd.to_datetime([1, 2], unit="s", utc=True)
    frame = pd.DataFrame(
        {"session_id": "s1", "user_id": "u", "item_id": ["a", "b"], "ts": ts, "seq": [0, 1]}
    )
    frame.to_parquet(train / "part-0.parquet", index=False, coerce_timestamps="us")
    # the deployment's Spark settings reach the job through the properties file, over the
    # jobs' own defaults (zstd), with its secrets never on the command line or in the log
    monkeypatch.setenv("GRU4REC_SPARK_MASTER", "local[1]")
    monkeypatch.setenv("GRU4REC_PRIVATE_DIR", str(tmp_path / "private"))
    monkeypatch.setenv(
        "GRU4REC_SPARK_CONF",
        '{"spark.sql.parquet.compression.codec": "snappy", "spark.hadoop.x.secret": "S3CR3T"}',
    )
    night = Night.from_params({"lake": lake.root, "driver_memory": "1536m"}, DAY)
    lines: list[str] = []
    cmd = commands.popularity(night)
    run(cmd, step_env("local[1]"), echo=lines.append)
    heap = [ln for ln in lines if "spark.driver.memory=1536m, driver JVM max heap" in ln]
    assert heap, lines[-20:]
    assert int(heap[0].split("max heap ")[1].split()[0]) > 1100  # MiB; the default gives ~434
    pop = pd.read_parquet(lake.popularity(DAY))
    assert pop.alpha.tolist() == [0.5, 0.5]  # the table records its own alpha
    import pyarrow.parquet as pq

    part = next(Path(lake.popularity(DAY)).glob("*.parquet"))
    assert pq.ParquetFile(part).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert not [ln for ln in lines if "S3CR3T" in ln]


def test_exit_status_2_is_a_data_failure_anything_else_retries():
    lines = []
    with pytest.raises(DataFailure, match="expected 3 columns, found 2"):
        run(
            [sys.executable, "-c",
             "import sys; print('x ERROR jobs: SchemaError: expected 3 columns, found 2', "
             "file=sys.stderr); sys.exit(2)"],
            echo=lines.append,
        )  # fmt: skip
    with pytest.raises(InfraFailure, match="exited with 137"):
        run([sys.executable, "-c", "import sys; sys.exit(137)"], echo=lines.append)
    out = run([sys.executable, "-c", "print('{\"a\": 1}')"], echo=lines.append)
    assert json.loads(out) == {"a": 1}


def _served(lake, day: str, warm_starts: int) -> str:
    """A model version of `day` that serves `day`, `warm_starts` from its full training."""
    d = Path(lake.model_version(day, "a"))
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"x")
    lineage = {"warm_starts": warm_starts, "epochs": 3}
    (d / "metrics.json").write_text(json.dumps({"lineage": lineage}))
    (Path(lake.model_run(day)) / "promotion.json").write_text(
        json.dumps({"serving_model": f"run={day}/v=a"})
    )
    return f"run={day}/v=a"


def test_the_train_plan_warm_starts_the_serving_model_and_retrains_fully_every_n_nights(
    tmp_path,
):
    params = {
        "lake": str(tmp_path), "train_mode": "incremental", "full_retrain_every": 3,
        "incremental_epochs": 2,
    }  # fmt: skip
    night = Night.from_params(params, DAY)
    first = commands.train_plan(night)
    assert first["mode"] == "full" and "no serving model" in first["reason"]
    assert "--warm-start" not in commands.train(night, "out", first)
    served = _served(night.lake, "2026-01-04", warm_starts=1)
    plan = commands.train_plan(night)
    assert plan == {
        "mode": "incremental",
        "warm_start": served,
        "epochs": 2,  # incremental_epochs, not the 3 its full training chose
        "reason": f"warm start 2 of 2 from {served}",
    }
    cmd = commands.train(night, "out", plan)
    assert _arg(cmd, "--warm-start") == night.lake.model_named(served) and "--fallback-full" in cmd
    # 2 epochs warm; a refused warm start's full training keeps the full `epochs` (10)
    assert _arg(cmd, "--warm-epochs") == "2" and "n_epochs=10" in cmd
    assert _arg(cmd, "--min-new-item-support") == str(night.datasets.min_item_support)
    # the refresh warm-starts the serving model on D's sessions, as many epochs
    fresh = commands.refresh(night, served, "fresh")
    assert _arg(fresh, "--train") == night.lake.sessions_day(DAY)
    assert _arg(fresh, "--warm-epochs") == "2" and "--fallback-full" not in fresh
    assert _arg(fresh, "--warm-start") == night.lake.model_named(served)
    assert _arg(fresh, "--min-new-item-support") == str(night.datasets.min_item_support)
    # new items' support is counted over D's window (window_days, D included), but a day a
    # failed gate keeps out (unless an operator accepted it)
    from jobs.common.localfs import write_json_atomic

    failure = {"suite": "raw_events", "success": False, "failed": ["_quarantine_share max 0.8"]}
    write_json_atomic(night.lake.suite_result("2026-01-04", "raw_events"), failure)
    for conf, days in (
        ({}, ("2026-01-05", "2026-01-03")),
        ({"accepted_days": ["2026-01-04"]}, ("2026-01-05", "2026-01-04", "2026-01-03")),
    ):
        cmd = commands.refresh(
            Night.from_params({**params, "window_days": 3, **conf}, DAY), served, "f"
        )
        i = cmd.index("--support-from")
        assert cmd[i + 1 : i + 1 + len(days)] == [night.lake.sessions_day(d) for d in days]
        assert cmd[i + 1 + len(days)].startswith("--")
    assert (
        commands.train_plan(Night.from_params({**params, "incremental_epochs": 1}, DAY))["epochs"]
        == 1
    )
    # a full training chooses its epochs on the valid split, by the gate's metric
    full = commands.train(night, "out", first)
    i = full.index("--select-epochs")
    splits = [night.lake.split(DAY, "train_tr"), night.lake.split(DAY, "valid")]
    assert full[i + 1 : i + 3] == splits
    assert _arg(full, "--select-by") == "recall@20" and "n_epochs=10" in full
    one = Night.from_params({**params, "epochs": 1}, DAY)  # nothing to choose from
    assert "--select-epochs" not in commands.train(one, "out", first)
    # the next night: the serving model is 2 warm starts from its full training: retrain
    later = Night.from_params(params, "2026-01-06")
    _served(later.lake, DAY, warm_starts=2)
    again = commands.train_plan(later)
    assert again["mode"] == "full" and "full retrain every 3 nights" in again["reason"]
    assert commands.train_plan(Night.from_params({**params, "train_mode": "full"}, DAY)) == {
        "mode": "full",
        "reason": "train_mode is full",
    }
    with pytest.raises(Exception, match="train_mode: expected full or incremental"):
        Night.from_params({**params, "train_mode": "sometimes"}, DAY)
