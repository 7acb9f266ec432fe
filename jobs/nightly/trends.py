"""The lake's trends page, `quality/index.html`: one row per night and a chart per measure.

Built from every night's `quality/dt=D/run.json` (what the run report shows, written by
`jobs.nightly.report`), so it is refreshed whenever a run report is, and shows the nights
whatever stage each reached: volume, quarantine share by reason, sessions, the gates'
verdicts, Recall@20 / MRR@20 of tonight's model and of the best baseline, the promotion
decision, whether recommendations were published, training and night seconds. Each row links
to the night's run report and Data Docs. The charts are inline SVG (no script, no network,
no image files): the page opens anywhere, offline included.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobs.common.lake import Lake
from jobs.common.localfs import write_text_atomic
from jobs.common.templating import render as render_template

CHART_W, CHART_H, PAD = 640, 170, 30
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def night_row(state: dict) -> dict:
    """One night's row, from its run.json."""
    ing = state.get("ingest") or {}
    model = state.get("model") or {}
    promo = state.get("promotion") or None
    baselines = model.get("baselines") or {}
    best = max(baselines, key=lambda b: baselines[b].get("recall@20") or 0, default=None)
    rows_in = ing.get("rows_in")
    quarantined = ing.get("quarantined") or {}
    if promo is None:
        decision = "not run"
    elif promo.get("promoted"):
        decision = "promoted"
    elif promo.get("serving_model"):
        decision = "kept the live model"
    else:
        decision = "nothing served"
    gates = {s: (None if r is None else bool(r.get("success"))) for s, r in state["suites"].items()}
    return {
        "date": state["date"],
        "raw_rows": rows_in,
        "events": ing.get("events_out"),
        "quarantine_share": ing.get("quarantine_share"),
        "quarantine": {
            reason: round(n / rows_in, 6) if rows_in else None
            for reason, n in sorted(quarantined.items(), key=lambda kv: -kv[1])
        },
        "sessions": (state.get("sessionize") or {}).get("sessions_out"),
        "gates": gates,
        "gates_failed": [s for s, ok in gates.items() if ok is False],
        "recall": model.get("recall@20"),
        "mrr": model.get("mrr@20"),
        "best_baseline": best,
        "best_recall": baselines[best].get("recall@20") if best else None,
        "best_mrr": baselines[best].get("mrr@20") if best else None,
        "decision": decision,
        "published": state.get("publish") is not None,
        "train_seconds": model.get("train_seconds"),
        "night_seconds": (state.get("timing") or {}).get("seconds"),
    }


def nights(lake: Lake) -> list[dict]:
    """Every night with a run.json, oldest first."""
    out = []
    for path in sorted(Path(lake.quality_root).glob("dt=*/run.json")):
        try:
            out.append(night_row(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a run.json being rewritten or from another version: skipped this time
    return out


def chart(title: str, rows: list[dict], series: dict[str, str], percent: bool = False) -> dict:
    """An SVG line chart of `series` ({label: row key}) over the nights."""
    values = [v for key in series.values() for r in rows if (v := r.get(key)) is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo = min(lo, 0.0)
    hi = hi if hi > lo else lo + 1.0
    n = len(rows)

    def x(i: int) -> float:
        return PAD + (CHART_W - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return CHART_H - PAD + (v - lo) / (hi - lo) * (2 * PAD - CHART_H)

    lines = []
    for colour, (label, key) in zip(COLOURS, series.items(), strict=False):
        points = [(x(i), y(r[key])) for i, r in enumerate(rows) if r.get(key) is not None]
        lines.append({
            "label": label,
            "colour": colour,
            "points": " ".join(f"{px:.1f},{py:.1f}" for px, py in points),
            "dots": points,
        })  # fmt: skip

    def fmt(v: float) -> str:
        return f"{v * 100:.1f}%" if percent else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")

    return {
        "title": title,
        "width": CHART_W,
        "height": CHART_H,
        "pad": PAD,
        "lines": lines,
        "lo": fmt(lo),
        "hi": fmt(hi),
        "first": rows[0]["date"] if rows else "",
        "last": rows[-1]["date"] if rows else "",
        "empty": not values,
    }


def render(rows: list[dict]) -> str:
    reasons = sorted({reason for r in rows for reason in r["quarantine"]})
    charts = [
        chart("Volume", rows, {"raw rows": "raw_rows", "events kept": "events"}),
        chart("Quarantine share", rows, {"quarantined": "quarantine_share"}, percent=True),
        chart("Sessions", rows, {"sessions": "sessions"}),
        chart("Recall@20", rows, {"GRU4Rec": "recall", "best baseline": "best_recall"}),
        chart("MRR@20", rows, {"GRU4Rec": "mrr", "best baseline": "best_mrr"}),
        chart("Seconds", rows, {"training": "train_seconds", "night": "night_seconds"}),
    ]
    return render_template("trends.html.j2", rows=list(reversed(rows)), reasons=reasons,
                           charts=charts)  # fmt: skip


def write_trends(lake: Lake) -> Path | None:
    """Refresh `quality/index.html`; None when the quality root is not local."""
    if not lake.is_local:
        return None
    return write_text_atomic(Path(lake.quality_root) / "index.html", render(nights(lake)))
