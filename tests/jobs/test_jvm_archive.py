"""The embedded default's class-data-sharing archive for Spark drivers: built once, keyed by
the JDK and pyspark, really usable by a driver JVM, and harmless when it is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.dev.embedded import class_archive, quick_jvm


def test_the_archive_is_named_in_the_drivers_options_and_a_driver_really_maps_it(tmp_path):
    archive = class_archive()
    assert archive is not None and archive.stat().st_size > 10_000_000
    assert class_archive() == archive  # built once: the same file, not rebuilt
    options = json.loads(quick_jvm()["GRU4REC_SPARK_CONF"])["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={archive}" in options.split()
    # -Xshare:on: a driver that cannot map the archive exits instead of starting without it
    script = tmp_path / "noop.py"
    script.write_text(
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\nprint('rows', s.range(3).count())\n"
    )
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[1]",
         "--conf", f"spark.driver.extraJavaOptions=-Xshare:on {options}", str(script)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "rows 3" in done.stdout, done.stderr[-2000:]


def test_an_archive_the_jvm_cannot_use_is_ignored(tmp_path):
    bad = tmp_path / "bad.jsa"
    bad.write_bytes(b"not an archive")
    done = subprocess.run(
        ["java", f"-XX:SharedArchiveFile={bad}", "-version"], capture_output=True, timeout=60
    )
    assert done.returncode == 0  # the JVM starts as usual (default -Xshare:auto)
    strict = subprocess.run(
        ["java", "-Xshare:on", f"-XX:SharedArchiveFile={bad}", "-version"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert strict.returncode != 0  # the case occurs: this file really is unusable


def test_a_failed_build_is_recorded_once_and_a_path_with_spaces_is_not_used(tmp_path, monkeypatch):
    from jobs.dev import embedded

    assert class_archive(tmp_path / "with space") is None
    calls = []

    def fails(out):
        calls.append(out)
        raise OSError("no space left on device")

    monkeypatch.setattr(embedded, "_build_archive", fails)
    assert class_archive(tmp_path / "jvm") is None
    assert class_archive(tmp_path / "jvm") is None
    assert len(calls) == 1  # not rebuilt on every call
    assert "no space left" in next((tmp_path / "jvm").glob(".failed-*")).read_text()
    assert not list((tmp_path / "jvm").glob("*.tmp"))
