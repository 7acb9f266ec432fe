"""The model report is rendered from a packaged Jinja2 template with every value escaped."""

from __future__ import annotations

from gru4rec.report import render_html


def test_the_model_report_escapes_what_it_shows_and_lists_every_row():
    metrics = {
        "recall@20": 0.5, "mrr@20": 0.25, "n_items": 7, "ties": "pessimistic", "n_points": 9,
        "device": "cpu", "config": {"loss": "<b>xe</b>"},
        "baselines": {"pop": {"recall@20": 0.25, "mrr@20": 0.0}},
        "epochs": [{"epoch": 1, "loss": 1.5, "seconds": 2.0, "events_per_second": 12345.6}],
        "data": {"<script>alert(1)</script>": "a&b"},
    }  # fmt: skip
    page = render_html(metrics)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "&lt;b&gt;xe&lt;/b&gt;" in page
    assert "<td>POP</td><td>0.2500</td><td>0.0000</td>" in page
    assert "<td><b>0.5000</b></td>" in page and "+100.0%" in page and "n/a" in page  # mrr: 0
    assert "12,346" in page and 'src="loss.png"' in page
