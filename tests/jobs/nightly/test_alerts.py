"""A failed night tells people: the log, the alerts file, e-mail to a real SMTP server and a
webhook on loopback, each configured by environment and Airflow connections only."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

from airflow.sdk.exceptions import AirflowFailException

from jobs.nightly import alerts
from tests.alert_sinks import HttpSink, SmtpSink

FAILED = (
    "data quality / input failure: jobs.validate: QualityGateError: suite raw_events failed: "
    "expect_column_values_to_not_be_null(user_id)"
)


def _context(lake, exception):
    return {
        "ti": SimpleNamespace(task_id="validate_raw", dag_id="gru4rec_nightly", try_number=1),
        "dag": SimpleNamespace(dag_id="gru4rec_nightly"),
        "run_id": "scheduled__2026-01-06T03:00:00+00:00",
        "data_interval_start": dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC),
        "params": {"lake": str(lake)},
        "exception": exception,
    }


def _connections(smtp_port: int, http_port: int):
    def get(conn_id: str):
        if conn_id == "smtp_sink":
            return SimpleNamespace(host="127.0.0.1", port=smtp_port, login=None, password=None,
                                   conn_type="smtp", schema=None,
                                   extra_dejson={"from_email": "pipeline@example.com"})  # fmt: skip
        assert conn_id == "hook", conn_id
        return SimpleNamespace(host="127.0.0.1", port=http_port, conn_type="http",
                               schema="alerts/nightly", login=None, password=None)  # fmt: skip

    return get


def test_a_failed_gate_reaches_the_smtp_sink_the_webhook_and_the_alerts_file(tmp_path, caplog):
    lake = tmp_path / "lake"
    with SmtpSink() as smtp, HttpSink() as hook:
        env = {
            alerts.EMAIL_TO: "data-team@example.com, oncall@example.com",
            alerts.SMTP_CONN: "smtp_sink",
            alerts.WEBHOOK_CONN: "hook",
        }
        alert = alerts.alert_from_context(_context(lake, AirflowFailException(FAILED)))
        assert alert["run_report"] is None  # the night failed before any report existed:
        alert = alerts._with_report(alert)  # NightAlert writes one, so the link works
        done = alerts.deliver(alert, env, _connections(smtp.port, hook.port))
    assert done == {"log": "sent", "file": "sent", "email": "sent", "webhook": "sent"}
    # e-mail: both recipients, the night, the task and the failing expectation named
    (mail,) = smtp.messages
    assert smtp.envelopes[0][1] == ["data-team@example.com", "oncall@example.com"]
    assert mail["Subject"].strip() == (
        "[gru4rec] night 2026-01-05 failed at validate_raw: data quality gate failed"
    )
    text = mail.get_content()
    assert "expect_column_values_to_not_be_null(user_id)" in text
    assert f"{lake}/quality/dt=2026-01-05/report.html" in text
    # webhook: the same alert as JSON, at the connection's path
    (path, body), = hook.posts  # fmt: skip
    posted = json.loads(body)
    assert path == "/alerts/nightly" and posted["task"] == "validate_raw"
    assert "expect_column_values_to_not_be_null(user_id)" in posted["reason"]
    # the alerts file and the log, always
    (line,) = (lake / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert posted.pop("text").startswith("[gru4rec] night 2026-01-05 failed at validate_raw")
    assert json.loads(line) == posted
    assert "ALERT [gru4rec] night 2026-01-05 failed at validate_raw" in caplog.text


def test_without_configuration_only_the_log_and_file_and_a_dead_channel_is_reported(tmp_path):
    lake = tmp_path / "lake"
    alert = alerts.alert_from_context(_context(lake, TimeoutError("execution_timeout")))
    assert alert["kind"] == "task failed after its retries"
    assert alerts.deliver(alert, {}) == {"log": "sent", "file": "sent"}
    with SmtpSink() as smtp:
        dead = smtp.port
    env = {alerts.EMAIL_TO: "a@example.com", alerts.SMTP_CONN: "smtp_sink",
           alerts.ALERTS_FILE: str(tmp_path / "elsewhere.jsonl")}  # fmt: skip
    done = alerts.deliver(alert, env, _connections(dead, 1))
    assert done["email"].startswith("failed: ") and done["file"] == "sent"
    assert (tmp_path / "elsewhere.jsonl").exists()
    assert len((lake / "alerts" / "alerts.jsonl").read_text().splitlines()) == 1


def test_a_hanging_mail_server_does_not_hold_the_webhook_or_the_task(tmp_path):
    """All channels go out at once within the deadline: a server that accepts and never
    answers costs the deadline, not one timeout per channel, and the webhook still goes."""
    import socket
    import time

    lake = tmp_path / "lake"
    alert = alerts.alert_from_context(_context(lake, TimeoutError("execution_timeout")))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections, never says a word
    try:
        with HttpSink() as hook:
            env = {alerts.EMAIL_TO: "a@example.com", alerts.SMTP_CONN: "smtp_sink",
                   alerts.WEBHOOK_CONN: "hook", alerts.DEADLINE: "1.5"}  # fmt: skip
            t0 = time.monotonic()
            done = alerts.deliver(alert, env, _connections(silent.getsockname()[1], hook.port))
            seconds = time.monotonic() - t0
        assert done["webhook"] == "sent" and done["email"] == "failed: timeout"
        assert seconds < 5 and len(hook.posts) == 1
    finally:
        silent.close()


def test_a_password_is_never_sent_without_tls_and_alerts_say_what_failed(tmp_path):
    lake = tmp_path / "lake"
    with SmtpSink() as smtp:

        def with_login(conn_id):
            conn = _connections(smtp.port, 1)(conn_id)
            conn.login, conn.password = "user", "s3cret-password"
            return conn

        alert = alerts.alert_from_context(_context(lake, AirflowFailException(FAILED)))
        done = alerts.deliver(alert, {alerts.EMAIL_TO: "a@example.com",
                                      alerts.SMTP_CONN: "smtp_sink"}, with_login)  # fmt: skip
    assert done["email"] == "failed: PermissionError" and smtp.messages == []
    assert "s3cret" not in (lake / "alerts" / "alerts.jsonl").read_text()
    # the kind: a gate's data failure, a non-gate step's input failure, an infra failure
    ctx = _context(lake, AirflowFailException("data quality / input failure: gru4rec train: x"))
    ctx["ti"].task_id = "train"
    assert alerts.alert_from_context(ctx)["kind"].startswith("failed on its input")
    ctx = _context(lake, RuntimeError("spark-submit exited with 137"))
    ctx["ti"].task_id = "ingest"
    assert alerts.alert_from_context(ctx)["kind"] == "task failed after its retries"
