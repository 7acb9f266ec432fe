"""Telling people when a night fails: an Airflow notifier on every task of the DAG.

When a task fails for good (a failed quality gate, which never retries, or a task out of its
retries) `NightAlert` writes one alert, naming the night, the task, the try and the reason
(for a gate: the suite and its failing expectations), and the run report to open, to:

- the task log (always);
- an alerts file, one JSON object a line (always): `GRU4REC_ALERTS_FILE`, default
  `<lake>/alerts/alerts.jsonl` (on a lake at a Hadoop URI, `$AIRFLOW_HOME/gru4rec-alerts.jsonl`);
- e-mail over SMTP, when `GRU4REC_ALERT_EMAIL` names recipients (comma-separated): through
  the Airflow connection `GRU4REC_SMTP_CONN_ID` (default `smtp_default`: host, port, login,
  password; extra `{"from_email": ..., "starttls": true, "ssl": true, "timeout": 10}`;
  certificates are verified, and a password is sent only over TLS unless the extra says
  `"allow_plain_login": true`);
- a webhook, when `GRU4REC_ALERT_WEBHOOK_CONN_ID` names an Airflow connection (type http or
  https with host, port and path, or a host that is a whole URL): the alert is POSTed as JSON.

Everything is set by environment and connections, never by a code change. The channels are
sent at once, within 15 s in all (`GRU4REC_ALERT_DEADLINE_S`; Airflow ends a failed task's
process soon after it reports, `[core] task_success_overtime`, 20 s by default). A channel
that fails is logged and the others still go out; no credential or URL is ever logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import urllib.request
from email.message import EmailMessage
from pathlib import Path

from airflow.sdk import BaseNotifier

log = logging.getLogger("jobs.alerts")

ALERTS_FILE = "GRU4REC_ALERTS_FILE"
EMAIL_TO = "GRU4REC_ALERT_EMAIL"
SMTP_CONN = "GRU4REC_SMTP_CONN_ID"
WEBHOOK_CONN = "GRU4REC_ALERT_WEBHOOK_CONN_ID"
DEADLINE = "GRU4REC_ALERT_DEADLINE_S"
DEADLINE_S = 15.0  # all channels together: within Airflow's task_success_overtime (20 s)
PER_CHANNEL_S = 10.0


def alert_from_context(context) -> dict:
    """The alert of a failed task, from its Airflow context."""
    from jobs.common.lake import Lake, default_root

    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    start = context.get("data_interval_start")
    if start is None and context.get("logical_date") is not None:
        start = context["logical_date"] - dt.timedelta(days=1)
    day = str(start.date()) if start is not None else "unknown"
    params = dict(context.get("params") or {})
    lake = Lake.resolved(params.get("lake") or default_root(), params.get("quality_root") or "")
    error = context.get("exception")
    reason = str(error) if error is not None else "no exception recorded"
    task_id = getattr(ti, "task_id", None) or ""
    if task_id.startswith("validate_") and "data quality / input failure" in reason:
        kind = "data quality gate failed"
    elif "data quality / input failure" in reason or type(error).__name__ == (
        "AirflowFailException"
    ):
        kind = "failed on its input or configuration (not retried)"
    else:
        kind = "task failed after its retries"
    report = lake.run_report(day) if day != "unknown" and lake.is_local else None
    published = None
    if day != "unknown" and lake.is_local:
        record = Path(lake.publish_record(day))
        published = record.exists()
    return {
        "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None),
        "run_id": context.get("run_id"),
        "date": day,
        "task": getattr(ti, "task_id", None),
        "try": getattr(ti, "try_number", None),
        "kind": kind,
        "reason": reason,
        "run_report": report if report and Path(report).exists() else None,
        "published": published,
        "alerted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "_lake": lake.root,
        "_quality": lake.quality_root,
    }


def subject(alert: dict) -> str:
    return f"[gru4rec] night {alert['date']} failed at {alert['task']}: {alert['kind']}"


def body(alert: dict) -> str:
    lines = [
        subject(alert),
        "",
        f"DAG {alert['dag_id']}, run {alert['run_id']}, task {alert['task']}, try {alert['try']}.",
        "",
        "Why:",
        f"  {alert['reason']}",
        "",
        "The tasks after it did not run.",
    ]
    if alert.get("published"):
        lines.append(
            f"Recommendations for {alert['date']} were published before this failure and stay "
            "as they are."
        )
    elif alert.get("published") is False:
        lines.append(
            f"No recommendations for {alert['date']} are published; earlier days' stay as they are."
        )
    if alert.get("run_report"):
        lines += ["", f"Run report: {alert['run_report']}"]
    return "\n".join(lines) + "\n"


def deliver(alert: dict, env=os.environ, get_connection=None) -> dict:
    """Send `alert` to every configured channel; {channel: "sent" | "failed: ..."}."""
    done = {}
    public = {k: v for k, v in alert.items() if not k.startswith("_")}
    log.error("ALERT %s: %s", subject(alert), alert["reason"])
    done["log"] = "sent"
    try:
        path = Path(env.get(ALERTS_FILE) or default_alerts_file(alert["_lake"], env))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:  # one write: whole lines, even if two runs
            f.write(json.dumps(public, sort_keys=True) + "\n")
        done["file"] = "sent"
    except OSError as exc:
        done["file"] = f"failed: {type(exc).__name__}"
    get_connection = get_connection or _connection
    sends = {}
    if conn_id := env.get(WEBHOOK_CONN):  # first: the quicker channel
        sends["webhook"] = lambda: _webhook(public, get_connection(conn_id))
    if recipients := [r.strip() for r in env.get(EMAIL_TO, "").split(",") if r.strip()]:
        smtp_id = env.get(SMTP_CONN) or "smtp_default"
        sends["email"] = lambda: _email(alert, recipients, get_connection(smtp_id))
    done.update(_send_all(sends, float(env.get(DEADLINE, DEADLINE_S))))
    return done


def _send_all(sends: dict, deadline_s: float) -> dict:
    """Every channel at once, each in its own thread, all within `deadline_s` in total: a
    failing task's process is ended soon after it reports (Airflow's task_success_overtime,
    20 s by default), so no channel may wait on another or hang past the deadline."""
    import threading
    import time

    results: dict = {}

    def run(name, send) -> None:
        results[name] = _guard(name, send)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in sends.items()]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    for name in sends:
        if name not in results:
            log.warning("alert not sent by %s: no answer within %.0f s", name, deadline_s)
            results[name] = "failed: timeout"
    return results


def default_alerts_file(lake_root: str, env=os.environ) -> str:
    """`<lake>/alerts/alerts.jsonl` on a local lake, else under AIRFLOW_HOME."""
    if "://" not in lake_root or lake_root.startswith("file://"):
        return str(Path(lake_root.removeprefix("file://")) / "alerts" / "alerts.jsonl")
    return str(Path(env.get("AIRFLOW_HOME") or ".") / "gru4rec-alerts.jsonl")


def _guard(channel: str, send) -> str:
    try:
        send()
        return "sent"
    except Exception as exc:  # noqa: BLE001 - one channel failing must not stop the others
        log.warning("alert not sent by %s: %s", channel, type(exc).__name__)
        return f"failed: {type(exc).__name__}"


def _connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def _email(alert: dict, recipients: list[str], conn) -> None:
    """Over SMTP; TLS certificates are verified; a password is only sent over TLS unless the
    connection's extra says `"allow_plain_login": true` (a relay on a trusted network)."""
    import socket
    import ssl

    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    msg = EmailMessage()
    msg["Subject"] = subject(alert)
    msg["From"] = extra.get("from_email") or f"gru4rec-pipeline@{socket.gethostname()}"
    msg["To"] = ", ".join(recipients)
    msg.set_content(body(alert))
    timeout = float(extra.get("timeout", PER_CHANNEL_S))
    tls = ssl.create_default_context()
    port = int(conn.port or (465 if extra.get("ssl") else 25))
    if extra.get("ssl"):
        smtp = smtplib.SMTP_SSL(conn.host, port, timeout=timeout, context=tls)
    else:
        smtp = smtplib.SMTP(conn.host, port, timeout=timeout)
    with smtp:
        if extra.get("starttls"):
            smtp.starttls(context=tls)
        if conn.login:
            if not (extra.get("ssl") or extra.get("starttls") or extra.get("allow_plain_login")):
                raise PermissionError("refusing to send the SMTP password without TLS")
            smtp.login(conn.login, conn.password or "")
        smtp.send_message(msg)


def webhook_url(conn) -> str:
    """The URL of a webhook connection: its host when that is a whole URL, else scheme (the
    connection type http or https), host, port and path (the URI's path, Airflow's schema)."""
    host = conn.host or ""
    if "://" in host:
        return host
    scheme = "http" if conn.conn_type == "http" else "https"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{host}{port}{path}"


def _webhook(alert: dict, conn) -> None:
    url = webhook_url(conn)
    payload = {**alert, "text": f"{subject(alert)}: {alert['reason']}"}  # chat webhooks
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=PER_CHANNEL_S) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


class NightAlert(BaseNotifier):
    """The DAG's `on_failure_callback`: a task that failed for good alerts people."""

    def notify(self, context) -> None:
        try:
            alert = alert_from_context(context)
        except Exception as exc:  # noqa: BLE001 - an alert about the alert, not silence
            log.error("ALERT a task failed, and building its alert failed too: %s", exc)
            return
        if alert.get("run_report") is None and alert["date"] != "unknown":
            alert = _with_report(alert)
        deliver(alert)


def _with_report(alert: dict) -> dict:
    """A night that failed before any report was written gets one now (best effort), so the
    alert's link works and the trends page lists the night."""
    from jobs.common.lake import Lake
    from jobs.nightly.report import write_run_report

    try:
        page = write_run_report(Lake(alert["_lake"], alert["_quality"]), alert["date"])
    except Exception as exc:  # noqa: BLE001 - the alert goes out without the link
        log.warning("no run report for the alert: %s", type(exc).__name__)
        return alert
    return {**alert, "run_report": str(page) if page else None}
