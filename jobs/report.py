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

from jobs.common.localfs import write_json_atomic, write_text_atomic

PUBLISH_FIELDS = ("path", "sessions", "rows", "fallback_sessions", "model_version", "published_at")
SUITES = ("raw_events", "sessions", "datasets", "item_index", "recommendations")


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


def run_state(lake: str, quality_root: str, day: str) -> dict:
    """Everything the report shows, as plain data (also written as `run.json`)."""
    lake_p, q = Path(lake), Path(quality_root) / f"dt={day}"
    state: dict = {"date": day, "suites": {}}
    for suite in SUITES:
        res = _load(q / f"{suite}.json")
        if res is not None:
            res.pop("result", None)
        state["suites"][suite] = res
    state["ingest"] = _load(lake_p / "events" / "_summaries" / f"{day}.json")
    state["sessionize"] = _load(lake_p / "sessions" / "_summaries" / f"{day}.json")
    state["build_datasets"] = _load(lake_p / "datasets" / "_summaries" / f"{day}.json")
    state["popularity"] = _load(lake_p / "datasets" / "_summaries" / f"{day}.popularity.json")
    model_dir = lake_p / "models" / f"run={day}"
    state["model"] = _load(model_dir / "metrics.json")
    state["promotion"] = _load(q / "promotion.json")
    state["publish"] = _load(q / "publish.json")
    state["model_dir"] = str(model_dir)
    return state


def render(state: dict, quality_dir: Path) -> str:
    day = state["date"]
    parts = [
        f"<h1>Nightly run {html.escape(day)}</h1>",
        '<p><a href="data_docs/index.html">Data Docs (every validation of this day)</a></p>',
    ]
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
    parts += ["<h2>Data quality</h2>", _table(gates, ("suite", "status", "passed", "failing"))]

    counts = []
    if (ing := state["ingest"]) is not None:
        counts += [
            ("raw rows", ing.get("rows_in")),
            ("events kept", ing.get("events_out")),
            ("duplicates dropped", ing.get("duplicates_dropped")),
            ("quarantined", f"{ing.get('quarantined_total')} {json.dumps(ing.get('quarantined'))}"),
        ]
    if (ses := state["sessionize"]) is not None:
        counts += [
            ("sessions", ses.get("sessions_out")),
            ("session events", ses.get("session_events_out")),
        ]
    if (bd := state["build_datasets"]) is not None:
        for name, s in bd.get("splits", {}).items():
            counts.append(
                (f"{name} split", f"{s.get('events')} events, {s.get('sessions')} sessions")
            )
    if (pop := state["popularity"]) is not None:
        counts.append(("items in the index", pop.get("items")))
    parts += ["<h2>Data</h2>", _table(counts or [("-", "no job summaries yet")], ("", ""))]

    model = state["model"]
    parts.append("<h2>Model</h2>")
    if model is None:
        parts.append("<p>not trained yet</p>")
    else:
        cut = sorted(int(k.split("@")[1]) for k in model if k.startswith("recall@"))
        rows = [
            (
                "GRU4Rec (tonight)",
                *[_fmt(model[f"recall@{c}"]) for c in cut],
                *[_fmt(model[f"mrr@{c}"]) for c in cut],
            )
        ]
        for name, b in (model.get("baselines") or {}).items():
            rows.append(
                (
                    name,
                    *[_fmt(b.get(f"recall@{c}")) for c in cut],
                    *[_fmt(b.get(f"mrr@{c}")) for c in cut],
                )
            )
        head = ("model", *[f"Recall@{c}" for c in cut], *[f"MRR@{c}" for c in cut])
        rel = os.path.relpath(state["model_dir"], quality_dir)
        rate = model.get("events_per_second") or 0
        device = html.escape(str(model.get("device")))
        parts += [
            _table(rows, head),
            f'<p><a href="{rel}/report.html">model report</a> &middot; '
            f"{rate:.0f} training events/s on {device}</p>",
            f'<img src="{rel}/loss.png" alt="training loss"> '
            f'<img src="{rel}/metrics.png" alt="metrics">',
        ]
    promo = state["promotion"]
    parts.append("<h2>Promotion gate</h2>")
    if promo is None:
        parts.append("<p>not run</p>")
    else:
        verdict = "promoted" if promo["promoted"] else "<b class=bad>kept the live model</b>"
        parts.append(
            f"<p>{verdict}: {html.escape(promo['reason'])}. Scoring uses "
            f"<code>{html.escape(str(promo['serving_model']))}</code>.</p>"
        )
    pub = state["publish"]
    parts.append("<h2>Recommendations</h2>")
    if pub is None:
        parts.append("<p>not published by this run</p>")
    else:
        parts.append(
            _table(
                [
                    (k, pub.get(k))
                    for k in (
                        "path",
                        "sessions",
                        "rows",
                        "fallback_sessions",
                        "model_version",
                        "published_at",
                    )
                ],
                ("", ""),
            )
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
        "collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
        "vertical-align:top}.bad{color:#b00}img{max-width:48%}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Run {html.escape(day)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_run_report(lake: str, quality_root: str, day: str) -> Path | None:
    """Refresh `quality/dt=D/report.html` (and `run.json`); None when the roots are not local."""
    if "://" in lake or "://" in quality_root:
        return None
    q = Path(quality_root) / f"dt={day}"
    state = run_state(lake, quality_root, day)
    write_json_atomic(q / "run.json", state)
    return write_text_atomic(q / "report.html", render(state, q))
