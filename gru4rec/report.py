"""The model report: metrics.json, report.html and PNG plots in a run directory."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

BASELINE_LABELS = {
    "pop": "POP",
    "spop": "S-POP",
    "itemknn": "Item-KNN",
    "vsknn": "V-SKNN",
    "stan": "STAN",
}


def _cutoffs(metrics: dict) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in metrics if k.startswith("recall@"))


def plot_loss(epochs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot([e["epoch"] for e in epochs], [e["loss"] for e in epochs], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (per mini-batch)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_metrics(model: dict, baselines: dict, path: Path) -> None:
    cutoffs = _cutoffs(model)
    rows = [(BASELINE_LABELS.get(k, k), v) for k, v in baselines.items()] + [("GRU4Rec", model)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    width = 0.8 / len(rows)
    for ax, metric in zip(axes, ("recall", "mrr"), strict=True):
        for i, (label, values) in enumerate(rows):
            xs = [j + i * width for j in range(len(cutoffs))]
            ax.bar(xs, [values[f"{metric}@{k}"] for k in cutoffs], width, label=label)
        ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(cutoffs))])
        ax.set_xticklabels([f"@{k}" for k in cutoffs])
        ax.set_title("Recall@k" if metric == "recall" else "MRR@k")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def render_html(metrics: dict) -> str:
    model = {k: v for k, v in metrics.items() if "@" in k}
    baselines = metrics.get("baselines", {})
    cutoffs = _cutoffs(model)
    cols = [f"recall@{k}" for k in cutoffs] + [f"mrr@{k}" for k in cutoffs]
    head = "".join(f"<th>{c.replace('recall', 'Recall').replace('mrr', 'MRR')}</th>" for c in cols)
    body = []
    for name, values in baselines.items():
        cells = "".join(f"<td>{_fmt(values[c])}</td>" for c in cols)
        body.append(f"<tr><td>{html.escape(BASELINE_LABELS.get(name, name))}</td>{cells}</tr>")
    cells = "".join(f"<td><b>{_fmt(model[c])}</b></td>" for c in cols)
    body.append(f"<tr><td><b>GRU4Rec</b></td>{cells}</tr>")
    if baselines:
        best = {c: max(v[c] for v in baselines.values()) for c in cols}
        imp = []
        for c in cols:
            if best[c] > 0:
                imp.append(f"<td>{(model[c] / best[c] - 1) * 100:+.1f}%</td>")
            else:
                imp.append("<td>n/a</td>")
        body.append(f"<tr><td><i>vs best baseline</i></td>{''.join(imp)}</tr>")
    epochs = metrics.get("epochs", [])
    epoch_rows = "".join(
        f"<tr><td>{e['epoch']}</td><td>{e['loss']:.4f}</td><td>{e['seconds']:.1f}</td>"
        f"<td>{e['events_per_second']:,.0f}</td></tr>"
        for e in epochs
    )
    cfg = json.dumps(metrics.get("config", {}), indent=1)
    data = metrics.get("data", {})
    data_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in data.items()
    )
    loss_img = '<img src="loss.png" alt="training loss per epoch">' if epochs else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GRU4Rec model report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
pre {{ background: #f6f6f6; padding: 0.8em; }}
</style></head><body>
<h1>GRU4Rec model report</h1>
<p>Next-item prediction on the test sessions, ranking against all {metrics.get("n_items", "?")}
training items; ties counted <b>{html.escape(str(metrics.get("ties", "?")))}</b>;
{metrics.get("n_points", "?")} evaluation points. Loss <b>{
        html.escape(str(metrics.get("config", {}).get("loss", "?")))
    }</b>, device
{html.escape(str(metrics.get("device", "?")))}.</p>
<h2>GRU4Rec vs baselines</h2>
<table><tr><th>method</th>{head}</tr>{"".join(body)}</table>
<img src="metrics.png" alt="Recall and MRR at k, GRU4Rec vs baselines">
<h2>Training</h2>
{loss_img}
<table><tr><th>epoch</th><th>loss</th><th>seconds</th><th>events/s</th></tr>{epoch_rows}</table>
<h2>Data</h2>
<table>{data_rows}</table>
<h2>Configuration</h2>
<pre>{html.escape(cfg)}</pre>
</body></html>
"""


def write_report(out: Path, metrics: dict) -> None:
    """metrics.json, report.html, metrics.png and (when there was training) loss.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    model = {k: v for k, v in metrics.items() if "@" in k}
    if metrics.get("epochs"):
        plot_loss(metrics["epochs"], out / "loss.png")
    if model:
        plot_metrics(model, metrics.get("baselines", {}), out / "metrics.png")
    (out / "report.html").write_text(render_html(metrics))
