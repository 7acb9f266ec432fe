"""The one-page run report of a nightly run: `quality/dt=D/report.html`.

It gathers what the run left behind, whatever stage it reached: the quality suites (pass/fail,
the failing expectations, a link to the Data Docs), the jobs' summaries (rows in and out,
quarantine by reason, sessions, splits, items), the model's metrics against the baselines and
the live model (the promotion decision), the plots, and the recommendations' publish record.
Every task that changes one of these refreshes it; a missing piece is shown as "not run".
Reads local files only (the lake root and the quality root must be local or mounted paths).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import Lake
from jobs.common.localfs import write_json_atomic, write_text_atomic

PUBLISH_FIELDS = ("path", "sessions", "rows", "fallback_sessions", "model_version", "published_at")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Html(str):
    """A table cell that is already HTML (everything else is escaped)."""


def _cell(c) -> str:
    return c if isinstance(c, _Html) else html.escape(str(c))


def _table(rows: list[tuple], head: tuple) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


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
    return state


def _gates_section(state: dict) -> list[str]:
    gates = []
    for suite, res in state["suites"].items():
        if res is None:
            gates.append((suite, "not run", "", ""))
            continue
        st = res.get("statistics", {})
        status = "PASSED" if res["success"] else _Html("<b class=bad>FAILED</b>")
        gates.append(
            (
                suite,
                status,
                f"{st.get('successful_expectations')}/{st.get('evaluated_expectations')}",
                _Html("<br>".join(html.escape(f) for f in res.get("failed", [])) or "-"),
            )
        )
    return ["<h2>Data quality</h2>", _table(gates, ("suite", "status", "passed", "failing"))]


def _data_section(state: dict) -> list[str]:
    counts = []
    if (ing := state["ingest"]) is not None:
        counts += [
            ("raw rows", ing.get("rows_in")),
            ("events kept", ing.get("events_out")),
            ("duplicates dropped", ing.get("duplicates_dropped")),
            ("quarantined", f"{ing.get('quarantined_total')} {json.dumps(ing.get('quarantined'))}"),
        ]
        if ing.get("redelivered_days"):  # their verdicts were superseded: validated again
            redelivered = ", ".join(ing["redelivered_days"])
            counts.append(("re-delivered days ingested again", redelivered))
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
            accepted = ", ".join(bd["accepted_days"])
            counts.append(("failed days accepted by an operator", accepted))
    if (pop := state["popularity"]) is not None:
        counts.append(("items in the index", pop.get("items")))
    return ["<h2>Data</h2>", _table(counts or [("-", "no job summaries yet")], ("", ""))]


def _model_section(state: dict, quality_dir: Path) -> list[str]:
    model = state["model"]
    if model is None:
        return ["<h2>Model</h2>", "<p>not trained yet</p>"]
    cut = sorted(int(k.split("@")[1]) for k in model if k.startswith("recall@"))

    def row(name: str, values: dict) -> tuple:
        recall = [_fmt(values.get(f"recall@{c}")) for c in cut]
        return (name, *recall, *[_fmt(values.get(f"mrr@{c}")) for c in cut])

    rows = [row("GRU4Rec (tonight)", model)]
    rows += [row(name, b) for name, b in (model.get("baselines") or {}).items()]
    head = ("model", *[f"Recall@{c}" for c in cut], *[f"MRR@{c}" for c in cut])
    rel = os.path.relpath(state["model_dir"], quality_dir)
    rate = model.get("events_per_second") or 0
    device = html.escape(str(model.get("device")))
    sampling = model.get("sampling") or {}
    mode = html.escape(str(model.get("mode", "full")))
    if (warm := model.get("warm_start")) is not None:
        mode += (
            f": warm-started from <code>{html.escape(str(warm['from']))}</code> on the "
            f"{warm['sessions_trained']} sessions it had not seen ({warm['events_trained']} of "
            f"the split's {warm['events_in_split']} events), {warm['new_items']} new items"
        )
    elif model.get("warm_start_refused"):
        mode += f" (warm start refused: {html.escape(model['warm_start_refused'])})"
    train_s = model.get("train_seconds")
    return [
        "<h2>Model</h2>",
        f"<p>training: {mode}; {_fmt(train_s) if train_s is not None else '?'} s</p>",
        _table(rows, head),
        f'<p><a href="{rel}/report.html">model report</a> &middot; '
        f"{rate:.0f} training events/s on {device} &middot; negatives sampled with alpha "
        f"{html.escape(str(sampling.get('alpha')))} from "
        f"<code>{html.escape(str(sampling.get('source')))}</code></p>",
        f'<img src="{rel}/loss.png" alt="training loss"> '
        f'<img src="{rel}/metrics.png" alt="metrics">',
    ]


def _decision_sections(state: dict) -> list[str]:
    parts = ["<h2>Promotion gate</h2>"]
    promo = state["promotion"]
    if promo is None:
        parts.append("<p>not run</p>")
    else:
        serving = promo["serving_model"]
        if promo["promoted"]:
            verdict = "promoted"
        elif serving:
            verdict = "<b class=bad>FLAGGED: kept the live model</b>"
        else:
            verdict = "<b class=bad>FLAGGED: not promoted, and no live model: nothing served</b>"
        uses = (
            f"Scoring uses <code>{html.escape(str(serving))}</code>."
            if serving
            else "No recommendations are scored or published for this date."
        )
        fresh = state.get("refresh")
        if serving and fresh and fresh.get("from") == serving:
            uses = (
                f"The serving model <code>{html.escape(str(serving))}</code> was refreshed on "
                f"this date's sessions ({fresh.get('events_trained')} events, "
                f"{fresh.get('new_items')} new items) into "
                f"<code>{html.escape(str(fresh['model']))}</code>, which scores it."
            )
        parts.append(f"<p>{verdict}: {html.escape(promo['reason'])}. {uses}</p>")
        checks = []
        if (live := promo.get("live_check")) is not None:
            checks.append(("against the live model", _pass(live["passed"]), live["reason"]))
        if (floor := promo.get("floor")) is not None:
            checks.append(("baseline floor", _pass(floor["passed"]), floor["reason"]))
        if checks:
            parts.append(_table(checks, ("check", "verdict", "detail")))
    parts.append("<h2>Recommendations</h2>")
    pub = state["publish"]
    if pub is None:
        parts.append("<p>not published by this run</p>")
    else:
        parts.append(_table([(k, pub.get(k)) for k in PUBLISH_FIELDS], ("", "")))
    return parts


def _pass(ok: bool) -> str:
    return "passed" if ok else "FAILED"


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
    "collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:top}.bad{color:#b00}img{max-width:48%}"
)


def render(state: dict, quality_dir: Path) -> str:
    day = html.escape(state["date"])
    parts = [
        f"<h1>Nightly run {day}</h1>",
        '<p><a href="data_docs/index.html">Data Docs (every validation of this day)</a></p>',
        *_gates_section(state),
        *_data_section(state),
        *_model_section(state, quality_dir),
        *_decision_sections(state),
    ]
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Run {day}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_run_report(lake: Lake, day: str) -> Path | None:
    """Refresh `quality/dt=D/report.html` (and `run.json`); None when the roots are not local."""
    if not lake.is_local:
        return None
    state = run_state(lake, str(day))
    write_json_atomic(lake.run_state(day), state)
    return write_text_atomic(lake.run_report(day), render(state, Path(lake.quality_day(day))))
