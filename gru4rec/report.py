"""The model report: metrics.json, report.html and PNG plots in a run directory."""

from __future__ import annotations

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


def _templates():
    """The package's Jinja2 templates (gru4rec/templates), every value HTML-escaped."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("gru4rec", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(metrics: dict) -> str:
    """report.html from metrics.json's content (templates/model_report.html.j2)."""
    model = {k: v for k, v in metrics.items() if "@" in k}
    baselines = metrics.get("baselines", {})
    cutoffs = _cutoffs(model)
    cols = [f"recall@{k}" for k in cutoffs] + [f"mrr@{k}" for k in cutoffs]
    improvement = None
    if baselines:
        best = {c: max(v[c] for v in baselines.values()) for c in cols}
        improvement = [(model[c] / best[c] - 1) * 100 if best[c] > 0 else None for c in cols]
    config = metrics.get("config", {})
    return (
        _templates()
        .get_template("model_report.html.j2")
        .render(
            n_items=metrics.get("n_items", "?"),
            ties=metrics.get("ties", "?"),
            n_points=metrics.get("n_points", "?"),
            loss=config.get("loss", "?"),
            device=metrics.get("device", "?"),
            columns=[{"label": c.replace("recall", "Recall").replace("mrr", "MRR")} for c in cols],
            baselines=[
                {"name": BASELINE_LABELS.get(name, name), "values": [v[c] for c in cols]}
                for name, v in baselines.items()
            ],
            model=[model[c] for c in cols],
            improvement=improvement,
            epochs=metrics.get("epochs", []),
            data=metrics.get("data", {}),
            config=json.dumps(config, indent=1),
        )
    )


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
