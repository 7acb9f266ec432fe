"""The whole nightly DAG with `airflow dags test` on a real sample (RSC15 clicks from
../shared/data, split into one delivery a day in a temporary lake), on the embedded default:
a real SQLite metadata DB, spark-submit to local Spark, CPU torch, real GX suites.

The sequence, run once for the module: night of 2014-04-07 (processes 04-06; a first run fills
its 3-day window), night of 04-08 (processes 04-07: an incremental training, the promotion gate
against the live model and the baseline floor, which keeps the live model serving),
a rerun of the first night, then a corrupted delivery for 04-08 that must stop at the quality
gate and publish nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs.common.lake import Lake
from jobs.dev.embedded import airflow_env, dags_test, prepare, quick_jvm
from tests.alert_sinks import SmtpSink

pytestmark = pytest.mark.slow

RSC15 = ("yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt")
# Small window, one epoch, and Spark settings for tiny inputs: the test is about the DAG.
# One epoch makes no model worth the baseline floor: it is off (1) on the first night, so
# there is a live model; the second night trains incrementally with the default floor.
CONF = {
    "source_preset": "rsc15",
    "window_days": 3,
    "test_days": 1,
    "epochs": 1,
    "baseline_margin": 1.0,
    "refresh_before_scoring": False,
    "spark_conf": {"spark.sql.shuffle.partitions": "2"},
}
# The second night: an incremental training, the default floor, and the serving model
# refreshed on the day's sessions before it scores them.
SECOND = {
    **CONF,
    "baseline_margin": 0.05,
    "train_mode": "incremental",
    "incremental_epochs": 1,
    "refresh_before_scoring": True,
}
D1, D2, D3 = "2014-04-06", "2014-04-07", "2014-04-08"
SCHEMA = {
    "session_id": "string",
    "user_id": "string",
    "rank": "int32",
    "item_id": "string",
    "score": "float",
    "strategy": "string",
    "model_version": "string",
    "generated_at": "timestamp[us, tz=UTC]",
}


def _deliveries(shared_data: Path, raw: Path) -> pd.DataFrame:
    frames = [pd.read_csv(shared_data / "rsc15_sample" / f, sep="\t", dtype=str) for f in RSC15]
    clicks = pd.concat(frames, ignore_index=True)
    day = pd.to_datetime(clicks["Time"].astype(float), unit="s").dt.strftime("%Y-%m-%d")
    for d, rows in clicks.groupby(day):
        (raw / f"dt={d}").mkdir(parents=True)
        rows.to_csv(raw / f"dt={d}" / "clicks.tsv", sep="\t", index=False)
    return clicks.assign(day=day)


class L:
    """The lake layout (jobs.common.lake), with paths to read back."""

    def __init__(self, root: Path) -> None:
        self._lake = Lake(str(root))

    def __getattr__(self, name: str):
        attr = getattr(self._lake, name)
        return (lambda *a: Path(attr(*a))) if callable(attr) else Path(attr)


def _tree_digest(path: Path) -> dict:
    """Content hash of every file under `path` (following the published symlink)."""
    path = path.resolve()
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _recs(lake: Path, day: str) -> pd.DataFrame:
    return pd.read_parquet(L(lake).recommendations_day(day))


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("nightly")
    lake = root / "lake"
    clicks = _deliveries(shared_data, lake / "raw")
    env = airflow_env(root / "airflow", lake, quick_jvm())
    log = root / "airflow.log"
    prepare(env, log)
    state: dict = {"root": root, "lake": lake, "clicks": clicks, "log": log}

    first = dags_test(env, "2014-04-07", CONF, log)
    state["first"] = first
    state["d1_link"] = os.readlink(L(lake).recommendations_day(D1))
    state["d1_recs"] = _recs(lake, D1)

    second = dags_test(env, "2014-04-08", SECOND, log)
    state["second"] = second
    state["d2_digest"] = _tree_digest(L(lake).recommendations_day(D2))
    state["d2_link"] = os.readlink(L(lake).recommendations_day(D2))
    state["d2_model"] = _tree_digest(L(lake).model_run(D2))
    state["d2_sessions"] = _tree_digest(L(lake).sessions_day(D2))
    state["live_after_second"] = json.loads((L(lake).live_pointer).read_text())
    state["d1_versions"] = sorted(p.name for p in L(lake).model_run(D1).glob("v=*"))
    serving = json.loads((L(lake).model_run(D2) / "promotion.json").read_text())["serving_model"]
    state["d2_serving"] = (serving, _tree_digest(L(lake).model_named(serving)))

    rerun = dags_test(env, "2014-04-07", CONF, log)
    state["rerun"] = rerun

    # A corrupted delivery for 04-08: 04-07's clicks a day later, 80% of the timestamps broken.
    bad = clicks[clicks["day"] == D2].drop(columns="day").copy()
    bad["Time"] = (bad["Time"].astype(float) + 86400).map(lambda t: f"{t:.3f}")
    rng = np.random.default_rng(0)
    broken = rng.random(len(bad)) < 0.8
    bad.loc[broken, "Time"] = "2014-04-08 not a time"
    target = lake / "raw" / f"dt={D3}"
    for f in target.glob("*"):
        f.unlink()
    bad.to_csv(target / "clicks.tsv", sep="\t", index=False)
    state["before_corrupt"] = {d: _tree_digest(L(lake).recommendations_day(d)) for d in (D1, D2)}
    # The night's alerts go to a real SMTP server on loopback, set by env and connection only.
    with SmtpSink() as smtp:
        alerting = {**env, "GRU4REC_ALERT_EMAIL": "data-team@example.com",
                    "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{smtp.port}"}  # fmt: skip
        state["corrupt"] = dags_test(alerting, "2014-04-09", CONF, log)
    state["corrupt_mail"] = smtp.messages
    return state


def _check_ok(run, log: Path) -> None:
    assert run.returncode == 0, f"DAG run failed; see {log}:\n" + run.stdout[-4000:]


def test_first_night_publishes_valid_recommendations(nightly):
    _check_ok(nightly["first"], nightly["log"])
    lake = nightly["lake"]
    part = L(lake).recommendations_day(D1)
    # Read back by independent readers, exactly the published schema.
    table = ds.dataset(part, format="parquet").to_table()
    assert {f.name: str(f.type) for f in table.schema} == SCHEMA
    recs = table.to_pandas()
    sessions = pd.read_parquet(L(lake).sessions_day(D1))
    assert set(recs["session_id"]) == set(sessions["session_id"])
    ranks = recs.groupby("session_id")["rank"].apply(list)
    assert all(r == list(range(1, 21)) for r in ranks)
    n = duckdb.sql(f"select count(*) from read_parquet('{part}/*.parquet')").fetchall()[0][0]
    assert n == 20 * sessions["session_id"].nunique()
    # Items come from the model's index; scores never rise with rank.
    items = set(pd.read_parquet(L(lake).items(D1))["item_id"])
    assert set(recs["item_id"]) <= items
    assert (recs.groupby("session_id")["score"].diff().dropna() <= 0).all()
    # The quality gates all ran and passed; reports exist.
    q = L(lake).quality_day(D1)
    for suite in ("raw_events", "sessions", "datasets", "item_index", "recommendations"):
        assert json.loads((q / f"{suite}.json").read_text())["success"], suite
    assert (q / "data_docs" / "index.html").exists()
    report = (q / "report.html").read_text()
    assert "Recall@20" in report and "promoted" in report and "data_docs/index.html" in report
    # Training read the published splits as integer arrays (item_idx, training order), not
    # through a frame of string ids.
    for split in ("train", "test"):
        pattern = rf"gru4rec.data: {split}: \d+ sessions, \d+ events read as integer arrays"
        assert re.search(pattern, nightly["first"].stdout), split
    # build_datasets built the item index and weights in its own application; the
    # popularity task found them built from this very split and started no JVM.
    assert "built from this train split with this alpha by build_datasets (reused" in (
        nightly["first"].stdout
    )
    assert "jobs/popularity.py" not in nightly["first"].stdout  # no spark-submit of it
    # Training sampled its negatives from the published popularity table, with its alpha.
    candidate = json.loads((L(lake).model_run(D1) / "promotion.json").read_text())["candidate"]
    metrics = json.loads((L(lake).model_named(candidate) / "metrics.json").read_text())
    assert metrics["sampling"] == {"source": str(L(lake).popularity(D1)), "alpha": 0.5}
    assert pd.read_parquet(L(lake).popularity(D1))["alpha"].eq(0.5).all()
    # The first run filled its window: the earlier days were ingested and validated too.
    for d in ("2014-04-04", "2014-04-05"):
        assert (L(lake).sessions_day(d)).is_dir()
        assert json.loads((L(lake).suite_result(d, "raw_events")).read_text())["success"]


def test_second_night_trains_incrementally_and_stops_at_the_baseline_floor(nightly):
    _check_ok(nightly["second"], nightly["log"])
    lake = nightly["lake"]
    decision = json.loads((L(lake).model_run(D2) / "promotion.json").read_text())
    assert decision["incumbent"].startswith(f"run={D1}/v=")  # an exact, immutable version
    cmp = decision["comparison"]
    assert cmp["common_item_events"] > 0
    assert 0 < cmp["incumbent"]["recall@20"] <= 1 and 0 < cmp["candidate"]["recall@20"] <= 1
    floor = cmp["incumbent"]["recall@20"] * (1 - 0.05)
    assert decision["live_check"]["passed"] == (cmp["candidate"]["recall@20"] >= floor)
    # The baseline floor: tonight's one-epoch model is well below the best baseline (checked,
    # so the case this night is about occurs), so it is not promoted, the night is flagged
    # and the first night's model keeps serving.
    first_serving = nightly["d2_serving"][0]  # D1's model, before the rerun of D1
    fl = decision["floor"]
    assert not fl["passed"] and fl["candidate"] < fl["baseline"] * 0.95, fl
    assert fl["best_baseline"] in ("pop", "spop", "itemknn", "vsknn", "stan")
    assert not decision["promoted"] and decision["flagged"]
    assert first_serving.startswith(f"run={D1}/v=")
    assert decision["serving_model"] == first_serving == decision["incumbent"]
    assert "live model keeps serving" in decision["reason"]
    assert "FLAGGED" in (L(lake).quality_day(D2) / "report.html").read_text()
    # The serving model was refreshed on D2's sessions, and that model scored D2 and is live.
    refresh = json.loads((L(lake).model_run(D2) / "refresh.json").read_text())
    assert refresh["from"] == decision["serving_model"]
    assert refresh["model"].startswith(f"run={D2}/v=fresh-")
    sessions = pd.read_parquet(L(lake).sessions_day(D2))
    fresh = L(lake).model_named(refresh["model"])
    fresh_items = set(pd.read_parquet(fresh / "items.parquet")["item_id"])
    served = L(lake).model_named(refresh["from"]) / "items.parquet"
    old_items = set(pd.read_parquet(served)["item_id"])
    # all of D2 was new to it: it trained every event but those of new items neither in D2's
    # window index nor with min_item_support (5) events in D2's window (D2's and the 2 days
    # before: no row for them) and those left in sessions of fewer than 2 events; checked
    # against a plain loop (both kinds of new item, and the drop, occur)
    window = set(pd.read_parquet(L(lake).items(D2))["item_id"])
    days = [L(lake).sessions_day(d) for d in ("2014-04-05", "2014-04-06", D2)]
    counts = pd.concat(pd.read_parquet(d)["item_id"] for d in days if Path(d).exists())
    counts = counts.value_counts().to_dict()
    kept, rare, short = _warm_start_events(sessions, old_items, window, counts, 5)
    new_kept = {item for _, item in kept} - old_items
    assert rare and new_kept - window and new_kept & window
    assert any(counts[i] >= 5 > support for i, support in sessions["item_id"].value_counts().items()
               if i in new_kept - window)  # fmt: skip  # enough events only over the window
    assert refresh["events_of_rare_new_items_dropped"] == len(rare)
    assert refresh["events_of_short_sessions_dropped"] == len(short)
    assert refresh["events_trained"] == len(kept) == len(sessions) - len(rare) - len(short)
    assert refresh["new_items_too_rare"] == len({item for _, item in rare})
    assert fresh_items - old_items == new_kept and refresh["new_items"] == len(new_kept)
    # (test_published_recommendations_are_the_serving_models: D2's rows are this model's)
    assert nightly["live_after_second"]["date"] == D2
    assert nightly["live_after_second"]["serving_model"] == refresh["model"]
    # Tonight's model was warm-started from the serving model, on the sessions it had not
    # seen (the first night's test day), its item index grown append-only.
    m = json.loads((L(lake).model_named(decision["candidate"]) / "metrics.json").read_text())
    warm = m["warm_start"]
    assert m["mode"] == "incremental" and warm["from"].startswith(
        str(L(lake).model_named(first_serving))
    )
    assert 0 < warm["events_trained"] < warm["events_in_split"]
    assert m["lineage"]["warm_starts"] == 1 and [e["epoch"] for e in m["epochs"]] == [2]
    served_ids = pd.read_parquet(L(lake).model_named(first_serving) / "items.parquet")
    grown = pd.read_parquet(L(lake).model_named(decision["candidate"]) / "items.parquet")
    n_old = len(served_ids)
    assert grown["item_id"][:n_old].tolist() == served_ids["item_id"].tolist()
    assert len(grown) == n_old + warm["new_items"]


def test_rerun_of_the_first_night_changes_nothing_else(nightly):
    _check_ok(nightly["rerun"], nightly["log"])
    lake = nightly["lake"]
    # The later date is untouched: same published version, same files, same model, same
    # sessions, and the live pointer stays on it.
    assert os.readlink(L(lake).recommendations_day(D2)) == nightly["d2_link"]
    assert _tree_digest(L(lake).recommendations_day(D2)) == nightly["d2_digest"]
    assert _tree_digest(L(lake).model_run(D2)) == nightly["d2_model"]
    assert _tree_digest(L(lake).sessions_day(D2)) == nightly["d2_sessions"]
    live = json.loads((L(lake).live_pointer).read_text())
    assert (
        live["date"] == D2
        and live["serving_model"] == nightly["live_after_second"]["serving_model"]
    )
    # The rerun trained a new model version of D1 beside the old one; whatever D2 serves (D1's
    # first version or its own) still has the very same weights.
    versions = sorted(p.name for p in L(lake).model_run(D1).glob("v=*"))
    assert len(versions) == 2 and versions[0] == nightly["d1_versions"][0]
    serving, digest = nightly["d2_serving"]
    assert _tree_digest(L(lake).model_named(serving)) == digest
    # The rerun date itself was republished (a new version) with the same recommendations.
    assert os.readlink(L(lake).recommendations_day(D1)) != nightly["d1_link"]
    cols = ["session_id", "rank", "item_id", "score", "strategy"]
    pd.testing.assert_frame_equal(_recs(lake, D1)[cols], nightly["d1_recs"][cols])
    # The replaced version is kept for readers (the grace period), nothing else piles up.
    versions = [v for v in L(lake).recommendations_versions(D1).iterdir() if v.is_dir()]
    assert len(versions) == 2


def test_corrupted_day_stops_at_the_quality_gate_and_publishes_nothing(nightly):
    run, lake = nightly["corrupt"], nightly["lake"]
    assert run.returncode != 0
    # It failed at validate_raw, without retries, naming the failing expectation.
    assert re.search(r"validate_raw.*failed|failed.*validate_raw", run.stdout, re.S)
    assert "expect_column_max_to_be_between(_quarantine_share)" in run.stdout
    # The task's failure message itself names it (what the Airflow UI shows).
    assert re.search(r"AirflowFailException: .*_quarantine_share", run.stdout)
    assert "try_number=2" not in run.stdout.split("validate_raw", 1)[1][:20000]
    assert not (L(lake).recommendations_day(D3)).exists()
    assert not (L(lake).sessions_day(D3)).exists()
    for d in (D1, D2):
        assert _tree_digest(L(lake).recommendations_day(d)) == nightly["before_corrupt"][d]
    # The quarantine holds the broken rows with their reason.
    quarantine = pq.read_table(L(lake).quarantine_day(D3)).to_pandas()
    assert (quarantine["reason"] == "unparseable_ts").sum() > 0.7 * len(quarantine)
    # The result and the Data Docs show the failing expectation.
    q = L(lake).quality_day(D3)
    result = json.loads((q / "raw_events.json").read_text())
    assert not result["success"]
    assert any("_quarantine_share" in f for f in result["failed"])
    pages = list((q / "data_docs" / "validations" / "raw_events").rglob("*.html"))
    assert pages, "no Data Docs page for the failed validation"
    page = pages[0].read_text()
    assert "_quarantine_share" in page and "Failed" in page
    assert "FAILED" in (q / "report.html").read_text()
    # People were told: one e-mail through the SMTP connection, naming the night, the task
    # and the failing expectation; the same alert in the lake's alerts file.
    (mail,) = nightly["corrupt_mail"]
    assert "night 2014-04-08 failed at validate_raw" in mail["Subject"]
    assert "_quarantine_share" in mail.get_content() and "report.html" in mail.get_content()
    (line,) = (lake / "alerts" / "alerts.jsonl").read_text().splitlines()
    alert = json.loads(line)
    assert alert["task"] == "validate_raw" and alert["kind"] == "data quality gate failed"


def test_published_recommendations_are_the_serving_models(nightly):
    """Fallback sessions are exactly those without a known item; three sessions equal
    stepping the serving model one event at a time (moved here from the scoring tests)."""
    import torch

    from gru4rec import checkpoint as ckpt
    from gru4rec.score import FALLBACK

    _check_ok(nightly["second"], nightly["log"])
    lake = nightly["lake"]
    refresh = json.loads((L(lake).model_run(D2) / "refresh.json").read_text())
    loaded = ckpt.Checkpoint(L(lake).model_named(refresh["model"]))  # what scored D2
    sessions = pd.read_parquet(L(lake).sessions_day(D2))
    recs = _recs(lake, D2)
    known = sessions.item_id.isin(set(loaded.item_map.ids))
    no_known = set(sessions.session_id) - set(sessions[known].session_id)
    assert set(recs[recs.strategy == FALLBACK].session_id) == no_known
    model = loaded.model("cpu")
    index = {item: i for i, item in enumerate(loaded.item_map.ids)}
    rng = np.random.default_rng(0)
    for sid in rng.choice(sorted(set(sessions.session_id) - no_known), 3, replace=False):
        seq = sessions[sessions.session_id == sid].sort_values("seq").item_id
        hidden = model.zero_hidden(1)
        for item in seq:
            if item in index:
                hidden = model.step_inference(torch.tensor([index[item]]), hidden)
        top = torch.topk(model.score_all(hidden[-1])[0], 20).indices.tolist()
        got = recs[recs.session_id == sid].sort_values("rank").item_id.tolist()
        assert got == [loaded.item_map.ids[i] for i in top]


def _warm_start_events(sessions, known: set, window: set, counts: dict, min_support: int):
    """(kept, rare, short) (session, item) events of a warm start on `sessions`, by a plain
    loop: drop new items outside `window` with fewer than `min_support` events in `counts`,
    then sessions with fewer than 2 kept events until nothing more drops."""
    events = list(zip(sessions["session_id"], sessions["item_id"], strict=True))
    listed = known | window  # items that need no count tonight
    keep = [True] * len(events)
    rare, short = [], []
    changed = True
    while changed:
        changed = False
        for i, (_, item) in enumerate(events):
            if keep[i] and item not in listed and counts.get(item, 0) < min_support:
                keep[i], changed = False, True
                rare.append(events[i])
        length: dict = {}
        for (session, _), k in zip(events, keep, strict=True):
            length[session] = length.get(session, 0) + k
        for i, (session, _) in enumerate(events):
            if keep[i] and length[session] < 2:
                keep[i], changed = False, True
                short.append(events[i])
    return [e for e, k in zip(events, keep, strict=True) if k], rare, short


def test_the_trends_page_shows_every_night_of_the_lake(nightly):
    """quality/index.html after four runs: a row per night (the failed one flagged), every
    chart drawn, and every link resolving to a file."""
    lake = nightly["lake"]
    quality = lake / "quality"
    page = (quality / "index.html").read_text()
    for day in (D1, D2, D3):
        assert f"<tr><td>{day}</td>" in page, day
    d3 = page.split(f"<tr><td>{D3}</td>")[1].split("</tr>")[0]
    assert "failed: raw_events" in d3 and '<span class="bad">no</span>' in d3
    d1 = page.split(f"<tr><td>{D1}</td>")[1].split("</tr>")[0]
    assert '<span class="good">yes</span>' in d1 and "promoted" in d1
    assert page.count("<polyline") >= 6 and "no data yet" not in page
    for link in re.findall(r'href="([^"]+)"', page):
        assert (quality / link).is_file(), link


def test_trends_reports_and_data_docs_in_a_browser_with_no_network(nightly, tmp_path):
    """The lake's pages as people open them: headless Chromium, no network. The trends page
    draws every chart with a point per night; each link opens a page that renders (a run
    report with its verdict, Data Docs with their table built by their scripts)."""
    from tests.webdriver import Browser

    artifacts = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
    trends = nightly["lake"] / "quality" / "index.html"
    with Browser(tmp_path / "browser", height=1400) as b:
        b.get(trends.as_uri())
        b.wait("return document.readyState == 'complete'")
        b.screenshot(artifacts / "trends.png")
        charts = b.js(
            "return Array.from(document.querySelectorAll('svg[role=img]'), s => {"
            "  const r = s.getBoundingClientRect();"
            "  const lines = Array.from(s.querySelectorAll('polyline'));"
            "  return {name: s.getAttribute('aria-label'), w: r.width, h: r.height,"
            "          points: Math.max(0, ...lines.map(l => l.points.numberOfItems)),"
            "          drawn: lines.some(l => l.getBBox().width > 0)}; });"
        )
        assert len(charts) >= 6, charts
        for c in charts:
            assert c["w"] > 100 and c["h"] > 50 and c["drawn"], c
        # several nights on the line: D1, D2 (and the corrupted D3 for its volume)
        assert max(c["points"] for c in charts) >= 3, charts
        rows = b.js(
            "return Array.from(document.querySelectorAll('tbody tr'), r => r.cells[0].innerText)"
        )
        assert {D1, D2, D3} <= set(rows), rows
        links = b.js("return Array.from(document.querySelectorAll('a[href]'), a => a.href)")
        assert len(links) >= 6 and all(u.startswith("file://") for u in links), links
        for url in links:
            b.get(url)
            text = b.wait("return document.readyState == 'complete' && document.body.innerText")
            assert "ERR_FILE_NOT_FOUND" not in text, url
            if url.endswith("report.html"):
                # the verdict first: D1 and D2 published, D3 stopped by its gate, the window's
                # earlier days ingested only
                verdict = b.js("return document.querySelector('p.verdict').innerText")
                want = "Recommendations published" if any(
                    f"dt={d}/" in url for d in (D1, D2)) else "Nothing published"  # fmt: skip
                assert verdict.startswith(want), (url, text[:300])
            else:
                built = b.wait(
                    "return typeof jQuery == 'function' && "
                    "document.querySelectorAll('table tbody tr').length",
                    what=f"the Data Docs table at {url}",
                )
                assert built >= 1, url
        b.get(next(u for u in links if u.endswith(f"dt={D3}/report.html")))
        b.wait("return document.readyState == 'complete'")
        b.screenshot(artifacts / "run_report_failed_night.png")
