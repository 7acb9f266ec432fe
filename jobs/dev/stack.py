"""A real deployment on one machine: PostgreSQL (Airflow's metadata DB), Redis (the Celery
broker), a Spark standalone master and worker, and Airflow's scheduler, dag-processor, API
server and two Celery workers: one on the `default` queue (the Spark and pipeline tasks), one
on the `gpu` queue (train, evaluate, refresh, score). Every server listens on a free loopback
port, keeps its files under one folder, and is stopped by the process id it was started with.

It is what `tests/deploy/` starts, and it runs by hand (infra/README.md):

    python -m jobs.dev.stack up --root var/stack      # prints the UI's URL and where the
                                                      # admin password is (a 0600 file)
    python -m jobs.dev.stack down --root var/stack    # stops what `up` started

The servers come from Debian packages (`infra/local/packages.sh` installs them). As root,
PostgreSQL runs as the `postgres` user, its data in a private temporary folder. Secrets (the
database's and the broker's passwords, the admin password, the API's signing keys) are made
here, reach the servers through 0600 files and the components' environment, never a command
line, and never appear in a log this writes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common.localfs import write_json_atomic, write_text_atomic
from jobs.dev.embedded import POOLS, airflow_env, quick_jvm
from jobs.nightly.auth import write_passwords_file

DEFAULT_QUEUES = (("worker-default", "default"), ("worker-gpu", "gpu"))


def worker_hostname() -> str:
    """Airflow's `hostname_callable` for the stack: a worker's name (GRU4REC_WORKER_NAME), so
    the task instances of two workers on one machine say which one ran them."""
    name = os.environ.get("GRU4REC_WORKER_NAME")
    return name or socket.getfqdn()


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ... starttime
    (index 19)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid from ours)."""
    stat = _stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def session_members(leader: int, started: str | None) -> list[int]:
    """Every live process of the session `leader` started (each service starts one). A task
    runner of a Celery worker has a process group of its own but stays in the worker's
    session; a process that started before the leader is not ours (a reused session id)."""
    if started is None:
        return []
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if (
            stat
            and len(stat) > 19
            and stat[0] != "Z"  # a zombie is gone but for its parent's wait
            and stat[3] == str(leader)
            and int(stat[19]) >= int(started)
        ):
            members.append(int(entry.name))
    return members


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


_LIBC = _libc()


def _pdeathsig() -> None:
    """In a child: SIGTERM when the process that started it dies (a test run killed by its
    runner must not leave servers behind)."""
    _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    name: str
    proc: subprocess.Popen | None
    pid: int
    started: str | None
    log: str

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.started is not None and _start_time(self.pid) == self.started

    def members(self) -> list[int]:
        return session_members(self.pid, self.started)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise StackError(
            "PostgreSQL expected in /usr/lib/postgresql/<version>/bin (Debian's postgresql), "
            "found none: run infra/local/packages.sh"
        )
    return Path(found[-1]).parent


def _require(exe: str) -> str:
    path = shutil.which(exe)
    if not path:
        raise StackError(f"{exe} expected on PATH, found none: run infra/local/packages.sh")
    return path


@dataclass
class Stack:
    """The deployment under `root`; `lake` is where the DAG's data lives."""

    root: Path
    lake: Path
    admin_password: str | None = None
    workers: tuple[tuple[str, str], ...] = DEFAULT_QUEUES
    spark: bool = True
    extra_env: dict = field(default_factory=dict)
    # the servers end with the process that started them (tests); `up` leaves them running
    tied_to_parent: bool = True
    services: list[Service] = field(default_factory=list)
    ports: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.lake = Path(self.lake).resolve()
        self.logs = self.root / "logs"
        self.home = self.root / "airflow"
        self._secrets = {
            "postgres": secrets.token_urlsafe(24),
            "redis": secrets.token_urlsafe(24),
            "jwt": secrets.token_urlsafe(32),
            "api": secrets.token_urlsafe(32),
            "fernet": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        self.admin_password = (
            self.admin_password
            or os.environ.get("AIRFLOW_ADMIN_PASSWORD")
            or secrets.token_urlsafe(16)
        )
        self._pg_dir: Path | None = None

    # -- what a user of the stack needs -----------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def spark_master(self) -> str:
        return f"spark://127.0.0.1:{self.ports['spark']}"

    def secret_values(self) -> list[str]:
        """Every secret this stack made or was given (for checks that none leaked)."""
        return [*self._secrets.values(), self.admin_password]

    # -- starting ----------------------------------------------------------------------------
    def start(self, timeout: float = 240) -> Stack:
        for d in (self.logs, self.home, self.lake):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("postgres", "redis", "api", "spark", "spark_ui", "spark_worker_ui"):
            self.ports[name] = free_port()
        try:
            self._postgres()
            self._redis()
            if self.spark:
                self._spark()
            self.env = self._airflow_env()
            self._prepare()
            self._airflow()
            self._write_state()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None, **kw) -> Service:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=env if env is not None else os.environ.copy(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: stopped as a whole
                preexec_fn=_pdeathsig if self.tied_to_parent else None,  # noqa: PLW1509
                **kw,
            )
        svc = Service(name, proc, proc.pid, _start_time(proc.pid), str(log))
        self.services.append(svc)
        self._write_state()  # at once: `down` stops whatever was started, even mid-start
        return svc

    def _postgres(self) -> None:
        bindir = _pg_bin()
        as_root = os.geteuid() == 0
        # As root the server runs as `postgres`, in a folder only it can enter (pytest's and
        # the project's folders may be closed to it).
        self._pg_dir = Path(tempfile.mkdtemp(prefix="gru4rec-pg-", dir="/tmp"))
        self._write_state()
        user = {}
        if as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self._pg_dir, pw.pw_uid, pw.pw_gid)
            user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        os.chmod(self._pg_dir, 0o700)
        pwfile = write_text_atomic(
            self._pg_dir / "pw", self._secrets["postgres"] + "\n", mode=0o600
        )
        if as_root:
            os.chown(pwfile, user["user"], user["group"])
        data = self._pg_dir / "data"
        init = [
            str(bindir / "initdb"), "-D", str(data), "-U", "airflow", f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        with open(self.logs / "postgres-initdb.log", "wb") as out:
            rc = subprocess.run(init, stdout=out, stderr=subprocess.STDOUT, **user).returncode
        pwfile.unlink()
        if rc != 0:
            raise StackError(f"initdb exited with {rc}: see {self.logs / 'postgres-initdb.log'}")
        self._spawn(
            "postgres",
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.ports["postgres"]),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self._pg_dir}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],  # fmt: skip
            **user,
        )
        self._wait(lambda: self._pg_connect("postgres"), "postgres", 60)
        with contextlib.closing(self._pg_connect("postgres")) as conn:
            conn.autocommit = True
            conn.cursor().execute("CREATE DATABASE airflow")

    def _pg_connect(self, db: str):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.ports["postgres"],
            user="airflow",
            password=self._secrets["postgres"],
            dbname=db,
            connect_timeout=3,
        )

    def _redis(self) -> None:
        exe = _require("redis-server")
        d = self.root / "redis"
        d.mkdir(parents=True, exist_ok=True)
        conf = write_text_atomic(
            d / "redis.conf",
            f"bind 127.0.0.1\nport {self.ports['redis']}\nprotected-mode yes\n"
            f'requirepass {self._secrets["redis"]}\nsave ""\nappendonly no\n'
            f"dir {d}\ndaemonize no\n",
            mode=0o600,
        )
        self._spawn("redis", [exe, str(conf)])
        self._wait(self._redis_ping, "redis", 30)

    def _redis_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as s:
            s.sendall(f"AUTH {self._secrets['redis']}\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
        return reply.startswith(b"+OK\r\n+PONG")

    def _spark(self) -> None:
        import pyspark

        home = Path(pyspark.__file__).parent
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOG_DIR": str(self.logs),
            "SPARK_WORKER_DIR": str(self.root / "spark-work"),
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
        cls = str(home / "bin" / "spark-class")
        p = self.ports
        self._spawn(
            "spark-master",
            [cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(p["spark"]), "--webui-port", str(p["spark_ui"])],
            env,
        )  # fmt: skip
        self._spawn(
            "spark-worker",
            [cls, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", "2", "--memory", "3g", "--webui-port", str(p["spark_worker_ui"]),
             self.spark_master],
            env,
        )  # fmt: skip
        self._wait(lambda: self.spark_state().get("aliveworkers", 0) >= 1, "spark worker", 120)

    def spark_state(self) -> dict:
        url = f"http://127.0.0.1:{self.ports['spark_ui']}/json/"
        with urllib.request.urlopen(url, timeout=3) as r:
            return json.load(r)

    def _airflow_env(self) -> dict:
        s, p = self._secrets, self.ports
        db = f"airflow:{s['postgres']}@127.0.0.1:{p['postgres']}/airflow"
        passwords = write_passwords_file(
            self.home / "passwords.json", {"admin": self.admin_password}
        )
        extra = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{s['redis']}@127.0.0.1:{p['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt"],
            "AIRFLOW__API__SECRET_KEY": s["api"],
            "AIRFLOW__CORE__FERNET_KEY": s["fernet"],
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "jobs.dev.stack.worker_hostname",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # runs come through the REST API; the DAG's own schedule stays off
            "GRU4REC_SCHEDULE": "none",
        }
        if self.spark:
            conf = json.loads(quick_jvm()["GRU4REC_SPARK_CONF"])
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.executor.extraJavaOptions"] = "-XX:TieredStopAtLevel=1"
            conf["spark.executor.memory"] = "1g"
            extra["GRU4REC_SPARK_MASTER"] = self.spark_master
            extra["GRU4REC_SPARK_CONF"] = json.dumps(conf)
        extra.update(self.extra_env)
        return airflow_env(self.home, self.lake, extra)

    def _airflow_cmd(self, *args: str) -> list[str]:
        exe = Path(sys.executable).with_name("airflow")
        return [str(exe) if exe.exists() else "airflow", *args]

    def _prepare(self) -> None:
        """Metadata DB schema, pools, and the DAG serialized (as embedded.prepare, on
        Postgres)."""
        steps = [["db", "migrate"]]
        steps += [["pools", "set", n, str(slots), d] for n, (slots, d) in POOLS.items()]
        steps += [["dags", "reserialize"]]
        for args in steps:
            with open(self.logs / "airflow-prepare.log", "ab") as out:
                rc = subprocess.run(
                    self._airflow_cmd(*args), env=self.env, stdout=out, stderr=subprocess.STDOUT
                ).returncode
            if rc != 0:
                tail = (self.logs / "airflow-prepare.log").read_text(errors="replace")[-3000:]
                raise StackError(f"airflow {' '.join(args)} exited with {rc}:\n{tail}")

    def _airflow(self) -> None:
        a = self._airflow_cmd
        self._spawn("api-server", a("api-server", "-H", "127.0.0.1", "-p",
                                    str(self.ports["api"]), "-w", "1"), self.env)  # fmt: skip
        self._spawn("scheduler", a("scheduler", "--skip-serve-logs"), self.env)
        self._spawn("dag-processor", a("dag-processor"), self.env)
        for name, queue in self.workers:
            env = {**self.env, "GRU4REC_WORKER_NAME": name}
            self._spawn(
                name,
                a("celery", "worker", "--queues", queue, "--concurrency", "1",
                  "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
                  "--without-gossip", "--without-mingle"),
                env,
            )  # fmt: skip

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            dead = [s for s in self.services if not s.alive()]
            if dead:
                s = dead[0]
                raise StackError(f"{s.name} exited while waiting for {what}; its log:\n{s.tail()}")
            try:
                if ready():
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet; reported on timeout
                last = exc
            time.sleep(0.5)
        raise StackError(f"{what} not ready after {timeout:.0f} s (last: {last})")

    def wait_ready(self, timeout: float = 240) -> None:
        """The API server answers, the scheduler and dag-processor heartbeat, and both Celery
        workers answer a ping over the broker."""

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as r:
                h = json.load(r)
            return all(
                h.get(k, {}).get("status") == "healthy"
                for k in ("metadatabase", "scheduler", "dag_processor")
            )

        self._wait(healthy, "the API server, scheduler and dag-processor", timeout)
        self._wait(self._workers_up, "the Celery workers", timeout)

    def _workers_up(self) -> bool:
        """Each Celery worker has registered with the broker (its `<name>@host` answers)."""
        from celery import Celery

        app = Celery(broker=self.env["AIRFLOW__CELERY__BROKER_URL"])
        try:
            replies = app.control.ping(timeout=2) or []
        finally:
            app.close()
        names = {next(iter(r)) for r in replies}
        return all(any(n.startswith(f"{w}@") for n in names) for w, _ in self.workers)

    # -- REST --------------------------------------------------------------------------------
    def token(self, username: str = "admin", password: str | None = None) -> str:
        body = {"username": username, "password": password or self.admin_password}
        return self.rest("POST", "/auth/token", body, token=None)["access_token"]

    def rest(self, method: str, path: str, body=None, token: str | None = "auto"):
        if token == "auto":
            token = self._token = getattr(self, "_token", None) or self.token()
        req = urllib.request.Request(
            f"{self.api_url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
        )
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:1500]
            raise StackError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(text) if text else None

    # -- stopping ----------------------------------------------------------------------------
    def _write_state(self) -> None:
        state = {
            "api_url": self.api_url if "api" in self.ports else None,
            "ports": self.ports,
            "pg_dir": str(self._pg_dir) if self._pg_dir else None,
            "services": [
                {"name": s.name, "pid": s.pid, "started": s.started, "log": s.log}
                for s in self.services
            ],
        }
        write_json_atomic(self.root / "stack.json", state)

    def stop(self, grace: float = 30) -> list[str]:
        """Stop every service by its session (the process it started and everything that
        process started, task runners included): the workers first, then the scheduler and
        dag-processor, the API server, Spark, and the servers last. Returns the names of those
        that had to be killed."""
        killed = stop_services(self.services, grace)
        if self._pg_dir is not None:
            shutil.rmtree(self._pg_dir, ignore_errors=True)
            self._pg_dir = None
        with contextlib.suppress(OSError):
            (self.root / "stack.json").unlink()
        return killed

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Stopped in this order (a name not listed goes with the first tier): work before the
# services it reports to, the servers last.
_TIERS = (("scheduler", "dag-processor"), ("api-server",), ("spark-worker",), ("spark-master",),
          ("redis",), ("postgres",))  # fmt: skip


def _tier(name: str) -> int:
    return next((i + 1 for i, names in enumerate(_TIERS) if name in names), 0)


def _signal(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_services(services, grace: float = 30) -> list[str]:
    """SIGTERM to every process of each service's session, tier by tier, waiting up to
    `grace` seconds a tier; SIGKILL to what is left. A service whose first process already
    exited still has its session's leftovers stopped."""
    killed = []
    for tier in sorted({_tier(s.name) for s in services}):
        group = [s for s in services if _tier(s.name) == tier]
        for s in group:
            _signal(s.members(), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(s.members() for s in group):
            for s in group:
                if s.proc is not None:
                    s.proc.poll()  # reap the first process: no zombie left to count
            time.sleep(0.2)
        for s in group:
            left = s.members()
            if left:
                killed.append(s.name)
                _signal(left, signal.SIGKILL)
            if s.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(timeout=10)
    return killed


def _down(root: Path) -> int:
    state_file = root / "stack.json"
    if not state_file.exists():
        print(f"no stack running under {root} (no {state_file})")
        return 0
    state = json.loads(state_file.read_text())
    services = [
        Service(x["name"], None, x["pid"], x["started"], x["log"]) for x in state["services"]
    ]
    killed = stop_services(services)
    if state.get("pg_dir"):
        shutil.rmtree(state["pg_dir"], ignore_errors=True)
    state_file.unlink()
    print(f"stopped {len(services)} services" + (f" (killed: {killed})" if killed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    from jobs.common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m jobs.dev.stack",
        description="Start or stop a real Airflow deployment on this machine: PostgreSQL, "
        "Redis, a Spark standalone cluster, the scheduler, dag-processor, API server and two "
        "Celery workers (queues default and gpu), all on loopback.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down"], help="start, or stop what up started")
    parser.add_argument("--root", default="var/stack", help="the stack's files and logs")
    parser.add_argument("--lake", default=None, help="the lake (default: <root>/lake)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if args.command == "down":
        return _down(root)
    if (root / "stack.json").exists():
        print(f"a stack is already running under {root}: `down` it first", file=sys.stderr)
        return 1
    stack = Stack(root, Path(args.lake) if args.lake else root / "lake", tied_to_parent=False)
    try:
        stack.start()
    except StackError as exc:
        print(f"stack up failed: {exc}", file=sys.stderr)
        return 1
    # the processes outlive this command: `down` stops them by the ids in stack.json
    for s in stack.services:
        s.proc = None
    secret = root / "admin-password"
    write_text_atomic(secret, stack.admin_password + "\n", mode=0o600)
    print(f"Airflow UI and REST API: {stack.api_url} (user admin, password in {secret})")
    print(f"Spark master: {stack.spark_master}; logs: {stack.logs}")
    print(f"stop it: python -m jobs.dev.stack down --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
