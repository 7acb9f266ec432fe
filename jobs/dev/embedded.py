"""The embedded default: a SQLite-backed Airflow home with this project's DAG, local Spark,
CPU or GPU torch, local files. Used by the demo and by the end-to-end tests; the same commands
work by hand (see docs/dag.md)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.common.lake import PROJECT_ROOT

DAG_ID = "gru4rec_nightly"
POOLS = {"spark": (1, "one Spark application at a time"), "gpu": (1, "one torch process")}


def airflow_env(home: str | Path, lake: str | Path, extra: dict | None = None) -> dict:
    """Environment for the airflow CLI: its home, this project's dags/, our lake."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(Path(home).resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GRU4REC_LAKE": str(Path(lake).resolve()),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    env.update(extra or {})
    return env


def quick_jvm() -> dict:
    """Deployment settings for small inputs: the driver JVM's quick (C1-only) JIT suits short
    Spark applications, and a class-data-sharing archive of a driver's classes (built once per
    JDK and pyspark, `class_archive`) saves ~4 s of every spark-submit's start on these
    machines (a no-op application 8.7-9.2 s -> 4.9-5.3 s). A JVM option is the deployment's to
    set (GRU4REC_SPARK_CONF), never a run's."""
    options = "-XX:TieredStopAtLevel=1"
    archive = class_archive()
    if archive is not None:
        options += f" -XX:SharedArchiveFile={archive}"
    return {"GRU4REC_SPARK_CONF": json.dumps({"spark.driver.extraJavaOptions": options})}


def _archive_key() -> str | None:
    """What a driver's archive depends on: the java spark-submit runs ($JAVA_HOME's, else the
    one on PATH), pyspark's version and its jars (names and sizes)."""
    import hashlib

    import pyspark

    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else "java"
    try:
        version = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=True
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    listing = (
        sorted((p.name, p.stat().st_size) for p in jars.glob("*.jar")) if jars.is_dir() else []
    )
    text = json.dumps([java, version, pyspark.__version__, pyspark.__file__, listing])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def class_archive(directory: Path | None = None) -> Path | None:
    """The driver's class-data-sharing archive under `var/jvm/` (built by a short warm-up
    application the first time, one builder at a time; its name is keyed by the JDK, pyspark
    and its jars, so another of them gets its own). None when there is none and it cannot be
    built (recorded once per key, not retried on every call) or when its path holds
    whitespace (a JVM option cannot carry it); a JVM that finds an archive it cannot use
    ignores it and starts as usual."""
    import fcntl

    directory = directory or PROJECT_ROOT / "var" / "jvm"
    key = _archive_key()
    if key is None or any(c.isspace() for c in str(directory)):
        return None
    archive = directory / f"spark-driver-{key}.jsa"
    failed = directory / f".failed-{key}"
    tmp = directory / f".{archive.name}.{os.getpid()}.tmp"
    try:
        if archive.exists():
            return archive
        if failed.exists():
            return None
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another builder's archive is ours too
            if archive.exists():
                return archive
            _build_archive(tmp)
            os.replace(tmp, archive)
        return archive
    except (OSError, subprocess.SubprocessError) as exc:
        err = (getattr(exc, "stderr", None) or b"").decode(errors="replace").strip()
        print(f"no class-data-sharing archive for Spark drivers ({exc}; {err[-500:]}); "
              f"starting without (not tried again while {failed} exists)",
              file=sys.stderr)  # fmt: skip
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            failed.write_text(f"{exc}\n{err[-2000:]}\n")
        return None


def _build_archive(out: Path) -> None:
    submit = Path(sys.executable).with_name("spark-submit")
    cmd = [
        str(submit) if submit.exists() else "spark-submit", "--master", "local[1]",
        "--conf", f"spark.driver.extraJavaOptions=-XX:ArchiveClassesAtExit={out}",
        str(PROJECT_ROOT / "jobs" / "dev" / "jvm_warmup.py"),
    ]  # fmt: skip
    env = {**airflow_env(out.parent, out.parent), "SPARK_LOCAL_IP": "127.0.0.1"}
    # spark-submit finds its Spark home through the python on PATH: this one
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=True)
    if not out.exists():
        raise OSError(f"the warm-up application wrote no archive at {out}")


def airflow(
    args: list[str], env: dict, log=None, check: bool = True
) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    out = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"$ airflow {' '.join(args)}\n{out.stdout}\n")
    if check and out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-30:])
        raise RuntimeError(f"airflow {' '.join(args)} exited with {out.returncode}:\n{tail}")
    return out


def prepare(env: dict, log=None) -> None:
    """Metadata DB (SQLite under AIRFLOW_HOME), pools, and the DAG serialized into it."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(["db", "migrate"], env, log)
    for name, (slots, description) in POOLS.items():
        airflow(["pools", "set", name, str(slots), description], env, log)
    airflow(["dags", "reserialize"], env, log)


def dags_test(env: dict, logical_date: str, conf: dict | None = None, log=None):
    """`airflow dags test` of the nightly DAG for one logical date (processing the day before).
    Returns the completed process (returncode 0 when the run succeeded)."""
    args = ["dags", "test", DAG_ID, logical_date]
    if conf:
        args += ["-c", json.dumps(conf)]
    return airflow(args, env, log, check=False)
