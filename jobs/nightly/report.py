"""The one-page run report of a nightly run: `quality/dt=D/report.html`.

It gathers what the run left behind, whatever stage it reached: the quality suites (pass/fail,
the failing expectations, a link to the Data Docs), the jobs' summaries (rows in and out,
quarantine by reason, sessions, splits, items), the model's metrics against the baselines and
the live model (the promotion decision), the plots, and the recommendations' publish record.
Every task that changes one of these refreshes it; a missing piece is shown as "not run".
Reads local files only (the lake root and the quality root must be local or mounted paths).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import Lake
from jobs.common.localfs import write_json_atomic, write_text_atomic
from jobs.common.templating import render as render_template

log = logging.getLogger("jobs.report")

PUBLISH_FIELDS = ("path", "sessions", "rows", "fallback_sessions", "model_version", "published_at")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def run_state(lake: Lake, day: str) -> dict:
    """Everything the report shows, as plain data (also written as `run.json`)."""
    state: dict = {"date": day, "suites": {}}
    for suite in C.SUITES:
        res = _load(Path(lake.suite_result(day, suite)))
        if res is not None:
            res.pop("result", None)
        state["suites"][suite] = res
    state["ingest"] = _load(Path(Lake.summary(lake.events, day)))
    state["sessionize"] = _load(Path(Lake.summary(lake.sessions, day)))
    state["build_datasets"] = _load(Path(lake.datasets_summary(day)))
    state["popularity"] = _load(Path(lake.popularity_summary(day)))
    from jobs.nightly.promote import tonights_model

    model_dir = tonights_model(lake, day)
    state["model"] = _load(Path(model_dir, "metrics.json")) if model_dir else None
    state["promotion"] = _load(Path(lake.promotion_record(day)))
    state["refresh"] = _load(Path(lake.refresh_record(day)))
    state["publish"] = _load(Path(lake.publish_record(day)))
    state["model_dir"] = model_dir
    state["timing"] = _timing(lake, day)
    state["figures"] = figures(state)
    previous = _load(Path(lake.run_state(_day_before(day))))
    if previous is not None:
        state["previous"] = {"date": previous.get("date"), "figures": figures(previous)}
    return state


def _timing(lake: Lake, day: str) -> dict | None:
    """The night's wall time so far: from its run's lease on the date (taken by the DAG's
    first task) to now; once the lease is given back, what the last report recorded."""
    import time

    from jobs.common.locks import OWNER_ENV, DateLease, stale_seconds

    held = DateLease(lake, day).holder() or {}
    now = time.time()
    ours = held.get("owner") and held.get("owner") == os.environ.get(OWNER_ENV)
    live = now - float(held.get("heartbeat", 0)) < stale_seconds()
    if ours and live and held.get("since"):  # this run's own, live lease
        return {"started": held["since"], "updated": now, "seconds": round(now - held["since"], 1)}
    return (_load(Path(lake.run_state(day))) or {}).get("timing")


def _day_before(day: str) -> str:
    import datetime as dt

    return str(dt.date.fromisoformat(day) - dt.timedelta(days=1))


def figures(state: dict) -> dict:
    """The night's key numbers, for comparing one night with the one before."""
    ing = state.get("ingest") or {}
    ses = state.get("sessionize") or {}
    model = state.get("model") or {}
    rows_in = ing.get("rows_in")
    share = ing.get("quarantine_share")
    if share is None and rows_in:
        share = round((ing.get("quarantined_total") or 0) / rows_in, 6)
    return {
        "raw rows": rows_in,
        "events kept": ing.get("events_out"),
        "quarantine share": share,
        "sessions": ses.get("sessions_out"),
        "Recall@20": model.get("recall@20"),
        "MRR@20": model.get("mrr@20"),
    }


def verdict(state: dict) -> dict:
    """The report's first line: published or not, and why."""
    pub, promo = state["publish"], state["promotion"]
    failed = [
        (suite, res.get("failed", []))
        for suite, res in state["suites"].items()
        if res is not None and not res["success"]
    ]
    accepted = set((state.get("build_datasets") or {}).get("accepted_days") or [])
    if pub is not None and (not failed or state["date"] in accepted):
        why = (
            f"{pub.get('sessions')} sessions, {pub.get('rows')} rows, scored by "
            f"{pub.get('model_version')}"
        )
        if failed:
            why += "; the failed gates of this day were accepted by an operator"
        return {"published": True, "headline": "Recommendations published", "why": why}
    if failed:
        suite, expectations = failed[0]
        named = "; ".join(expectations[:3]) + (" ..." if len(expectations) > 3 else "")
        why = f"the quality gate '{suite}' failed: {named or 'see below'}"
        if pub is not None:  # a rerun that failed: what an earlier run published stays
            why += f" (the version published earlier, at {pub.get('published_at')}, stays as it is)"
    elif promo is not None and not promo.get("serving_model"):
        why = f"no model serves this date: {promo.get('reason')}"
    elif promo is None:
        why = "the run has not reached the promotion gate (yet, or it stopped before it)"
    else:
        why = "the run has not published (yet, or it stopped after the promotion gate)"
    return {"published": False, "headline": "Nothing published", "why": why}


def changes(state: dict) -> list[dict]:
    """Tonight's key numbers against the night before's, with the change."""
    prev = (state.get("previous") or {}).get("figures") or {}
    rows = []
    for name, now in state["figures"].items():
        before = prev.get(name)
        change = None
        if isinstance(now, int | float) and isinstance(before, int | float):
            if name == "quarantine share":
                change = f"{(now - before) * 100:+.2f} points"
            elif before:
                change = f"{(now / before - 1) * 100:+.1f}%"
        rows.append({"name": name, "before": _num(before, name), "now": _num(now, name),
                     "change": change or ""})  # fmt: skip
    return rows


def _num(v, name: str) -> str:
    if v is None:
        return "-"
    if name == "quarantine share":
        return f"{v * 100:.2f}%"
    if isinstance(v, float):
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _gates(state: dict) -> list[dict]:
    out = []
    for suite, res in state["suites"].items():
        if res is None:
            out.append({"suite": suite, "status": "not run", "passed": "", "failing": []})
            continue
        st = res.get("statistics", {})
        out.append(
            {
                "suite": suite,
                "status": "PASSED" if res["success"] else "FAILED",
                "passed": f"{st.get('successful_expectations')}/{st.get('evaluated_expectations')}",
                "failing": res.get("failed", []),
            }
        )
    return out


def _quarantine(state: dict) -> list[dict]:
    ing = state["ingest"] or {}
    total_in = ing.get("rows_in") or 0
    return [
        {"reason": reason, "rows": n, "share": f"{n / total_in * 100:.2f}%" if total_in else "-"}
        for reason, n in sorted((ing.get("quarantined") or {}).items(), key=lambda kv: -kv[1])
    ]


def _counts(state: dict) -> list[tuple]:
    counts = []
    if (ing := state["ingest"]) is not None:
        counts += [
            ("raw rows", ing.get("rows_in")),
            ("events kept", ing.get("events_out")),
            ("duplicates dropped", ing.get("duplicates_dropped")),
            ("quarantined (by reason below)", ing.get("quarantined_total")),
        ]
        if ing.get("redelivered_days"):  # their verdicts were superseded: validated again
            counts.append(("re-delivered days ingested again", ", ".join(ing["redelivered_days"])))
        for d, why in sorted((ing.get("refused_deliveries") or {}).items()):
            counts.append((f"delivery of {d} refused", why))
    if (ses := state["sessionize"]) is not None:
        counts += [
            ("sessions", ses.get("sessions_out")),
            ("of them continued from the day before", ses.get("sessions_continued")),
            (
                "events in = session events + repeats removed + capped",
                f"{ses.get('events_in')} = {ses.get('session_events_out')} + "
                f"{ses.get('repeats_removed')} + {ses.get('capped_events')}"
                + ("" if ses.get("balanced") else "  (DOES NOT BALANCE)"),
            ),
        ]
    if (bd := state["build_datasets"]) is not None:
        for name, s in bd.get("splits", {}).items():
            counts.append(
                (f"{name} split", f"{s.get('events')} events, {s.get('sessions')} sessions")
            )
        # A failed gate's day stays out of every later window: say which, and why.
        for d, why in sorted((bd.get("excluded_days") or {}).items()):
            counts.append((f"window day {d} left out", why))
        if bd.get("accepted_days"):
            counts.append(("failed days accepted by an operator", ", ".join(bd["accepted_days"])))
    if (pop := state["popularity"]) is not None:
        counts.append(("items in the index", pop.get("items")))
    return counts


def _model(state: dict, quality_dir: Path) -> dict | None:
    model = state["model"]
    if model is None:
        return None
    cut = sorted(int(k.split("@")[1]) for k in model if k.startswith("recall@"))

    def row(name: str, values: dict) -> list:
        recall = [_fmt(values.get(f"recall@{c}")) for c in cut]
        return [name, *recall, *[_fmt(values.get(f"mrr@{c}")) for c in cut]]

    rows = [row("GRU4Rec (tonight)", model)]
    rows += [row(name, b) for name, b in (model.get("baselines") or {}).items()]
    train_s = model.get("train_seconds")
    return {
        "head": ["model", *[f"Recall@{c}" for c in cut], *[f"MRR@{c}" for c in cut]],
        "rows": rows,
        "dir": os.path.relpath(state["model_dir"], quality_dir),
        "rate": f"{model.get('events_per_second') or 0:.0f}",
        "device": model.get("device"),
        "sampling": model.get("sampling") or {},
        "mode": model.get("mode", "full"),
        "warm": model.get("warm_start"),
        "warm_refused": model.get("warm_start_refused"),
        "train_seconds": _fmt(train_s) if train_s is not None else "?",
    }


def _promotion(state: dict) -> dict | None:
    promo = state["promotion"]
    if promo is None:
        return None
    serving = promo["serving_model"]
    fresh = state.get("refresh")
    checks = []
    if (live := promo.get("live_check")) is not None:
        checks.append(("against the live model", _pass(live["passed"]), live["reason"]))
    if (floor := promo.get("floor")) is not None:
        checks.append(("baseline floor", _pass(floor["passed"]), floor["reason"]))
    return {
        "promoted": promo["promoted"],
        "serving": serving,
        "reason": promo["reason"],
        "refreshed": fresh if serving and fresh and fresh.get("from") == serving else None,
        "checks": checks,
    }


def _pass(ok: bool) -> str:
    return "passed" if ok else "FAILED"


def render(state: dict, quality_dir: Path) -> str:
    """report.html (templates/run_report.html.j2): the verdict first, then the details."""
    pub = state["publish"]
    return render_template(
        "run_report.html.j2",
        date=state["date"],
        verdict=verdict(state),
        previous=(state.get("previous") or {}).get("date"),
        changes=changes(state),
        gates=_gates(state),
        quarantine=_quarantine(state),
        counts=_counts(state),
        model=_model(state, quality_dir),
        promotion=_promotion(state),
        publish=[(k, pub.get(k)) for k in PUBLISH_FIELDS] if pub is not None else None,
    )


def write_run_report(lake: Lake, day: str, trends: bool = True) -> Path | None:
    """Refresh `quality/dt=D/report.html` (and `run.json`), then (`trends`) the lake's page
    across nights; None when the roots are not local."""
    if not lake.is_local:
        return None
    state = run_state(lake, str(day))
    write_json_atomic(lake.run_state(day), state)
    page = write_text_atomic(lake.run_report(day), render(state, Path(lake.quality_day(day))))
    if trends:
        _refresh_trends(lake)
    return page


def write_run_reports(lake: Lake, days) -> None:
    """Refresh the run reports of those `days` that have a quality directory, each on its own
    (one that cannot be written is logged, the others still are), then the trends page once."""
    if not lake.is_local:
        return
    for d in days:
        try:
            if os.path.isdir(lake.quality_day(d)):
                write_run_report(lake, str(d), trends=False)
        except Exception as exc:  # noqa: BLE001 - a gate's verdict must never be hidden
            log.warning("run report of %s not refreshed: %s: %s", d, type(exc).__name__, exc)
    _refresh_trends(lake)


def _refresh_trends(lake: Lake) -> None:
    """quality/index.html; a failure is logged and never hides a night's own report."""
    from jobs.nightly.trends import write_trends

    try:
        write_trends(lake)
    except Exception as exc:  # noqa: BLE001 - logged; the next report refreshes it
        log.warning("trends page not refreshed: %s: %s", type(exc).__name__, exc)
