"""Backtest: replay N consecutive nights of a raw clickstream through the real nightly steps.

    python -m jobs.nightly.backtest --input RAW --preset taobao --first 2017-11-28 --nights 6 \
        --out var/backtest/taobao-incremental --params '{"train_mode": "incremental"}'

The raw input (a file or directory the source mapping reads) is first cut into one delivery a
day (`<out>/lake/raw/dt=D/`, by a Spark job reading it with the mapping; a row whose timestamp
does not parse, or falls outside the days found, goes to a day chosen by a hash of the row, so
every delivery carries its share of the dirt, as real deliveries do). Then each night D runs
the DAG's own command lines (`jobs.nightly.commands`) one after another, each as a process the
way the DAG's tasks start them: ingest, the gates, sessionize, build_datasets, popularity,
train (full or incremental by the params), the promotion gate, the refresh, score, the
recommendations gate and publish. A night whose step exits with a data failure stops there and
the next night runs, as the scheduler's next run would. The first night catches up its window
from the deliveries.

Written to `<out>`: `nights.json` and `nights.csv` (one row per night: data counts, gate
verdicts, the training mode and seconds, Recall@20 and MRR@20 of GRU4Rec and of every baseline,
the promotion decision, and the next-day metric) and `report.html` with plots.

The next-day metric of night D: among users with a session on D and on D+1, the share whose
first click on D+1 is in the top-k recommended for their last session of D (published rows).
With the refresh on, D is also scored by the serving model before its refresh (a side table,
never published), and the same metric is reported for it: the freshness effect.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.lake import PROJECT_ROOT, Lake
from jobs.common.templating import render as render_template
from jobs.nightly import commands
from jobs.nightly.params import Night
from jobs.nightly.runner import DataFailure, run, step_env

log = logging.getLogger("jobs.backtest")

SPLIT_JOB = PROJECT_ROOT / "jobs" / "dev" / "split_deliveries.py"
STEPS = (
    "ingest", "validate_raw", "sessionize", "validate_sessions", "build_datasets",
    "popularity", "validate_datasets", "train", "evaluate", "refresh", "score",
    "validate_recommendations", "publish",
)  # fmt: skip
SUITE_OF = {
    "validate_raw": C.SUITE_RAW_EVENTS,
    "validate_sessions": C.SUITE_SESSIONS,
    "validate_datasets": C.SUITE_DATASETS,
}


class NightRun:
    """One night's steps, glued as the DAG's tasks glue them (the model and staged dirs)."""

    def __init__(self, night: Night) -> None:
        self.night = night
        self.model: str | None = None
        self.staged: str | None = None
        self.unrefreshed: str | None = None
        self.seconds: dict[str, float] = {}
        self.plan: dict | None = None
        self._tmp: list[str] = []

    def commands(self, step: str) -> list[list[str]]:
        """The processes of `step` (none: the step is skipped tonight, as the DAG skips it)."""
        from jobs.nightly import promote

        n = self.night
        if step == "ingest":
            mapping = commands.mapping_file(n)
            if mapping:
                self._tmp.append(mapping)
            return [commands.ingest(n, mapping)]
        if step in SUITE_OF:
            return [commands.validate(n, SUITE_OF[step])]
        if step == "popularity" and commands.popularity_reused(n):
            return []  # build_datasets built it from this split, as in the DAG's task
        if step in ("sessionize", "build_datasets", "popularity"):
            return [getattr(commands, step)(n)]
        if step == "train":
            self.model = commands.new_model_dir(n)
            self.plan = commands.train_plan(n)
            return [commands.train(n, self.model, self.plan)]
        if step == "evaluate":
            return [commands.evaluate(n, self.model)]
        try:
            serving = promote.serving_model_name(n.lake, n.day)
        except promote.NoServingModel:
            return []  # a first night below the floor: nothing to refresh, score or publish
        if step == "refresh":
            if not n.train.refresh:
                return []
            fresh = commands.new_refresh_dir(n)
            return [commands.refresh(n, serving, fresh), commands.refreshed(n, fresh)]
        if step == "score":
            cmds = []
            if n.train.refresh:  # the freshness effect: D scored without the refresh too
                self.unrefreshed = commands.new_scored_dir(n)
                cmds.append(commands.score(n, n.lake.model_named(serving), self.unrefreshed))
            self.staged = commands.new_scored_dir(n)
            cmds.append(commands.score(n, promote.scoring_model(n.lake, n.day), self.staged))
            return cmds
        if step == "validate_recommendations":
            return [commands.validate_recommendations(n, self.staged)] if self.staged else []
        if step == "publish":
            return [commands.publish(n, self.staged)] if self.staged else []
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")

    def run(self, echo) -> str | None:
        """Every step; the step a data failure stopped the night at (None: it completed)."""
        env = step_env(self.night.spark.master)
        try:
            for step in STEPS:
                t0 = time.monotonic()
                try:
                    for cmd in self.commands(step):
                        run(cmd, env, echo=echo)
                except DataFailure as exc:
                    log.warning("night %s stopped at %s: %s", self.night.day, step, exc)
                    return step
                finally:
                    self.seconds[step] = round(time.monotonic() - t0, 2)
            return None
        finally:
            for path in self._tmp:
                os.unlink(path)


# -- one row per night -------------------------------------------------------------------------
def _load(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def night_row(lake: Lake, day: str, nr: NightRun | None, stopped: str | None) -> dict:
    """What the backtest reports of night D, from the records the steps wrote."""
    from jobs.nightly.promote import tonights_model

    ingest = _load(Lake.summary(lake.events, day)) or {}
    sessions = _load(Lake.summary(lake.sessions, day)) or {}
    datasets = (_load(lake.datasets_summary(day)) or {}).get("splits") or {}
    row: dict = {
        "date": day,
        "stopped_at": stopped,
        "events": ingest.get("events_out"),
        "quarantine_share": ingest.get("quarantine_share"),
        "sessions": sessions.get("sessions_out"),
        "train_events": (datasets.get("train") or {}).get("events"),
        "test_events": (datasets.get("test") or {}).get("events"),
    }
    for suite in (*C.SUITES,):
        result = _load(lake.suite_result(day, suite))
        row[f"gate_{suite}"] = None if result is None else bool(result.get("success"))
    model_dir = tonights_model(lake, day) if Path(lake.model_run(day)).exists() else None
    metrics = _load(Path(model_dir, "metrics.json")) if model_dir else None
    if metrics:
        row["mode"] = metrics.get("mode", "full")
        row["train_seconds"] = metrics.get("train_seconds")
        row["epochs"] = len(metrics.get("epochs") or [])
        sel = metrics.get("epoch_selection") or {}
        row["selection_seconds"] = sel.get("seconds")
        for key in ("recall@20", "mrr@20"):
            row[f"gru4rec_{key}"] = metrics.get(key)
            for name, values in (metrics.get("baselines") or {}).items():
                row[f"{name}_{key}"] = values.get(key)
    decision = _load(Path(lake.model_run(day)) / "promotion.json")
    if decision:
        row["promoted"] = decision.get("promoted")
        row["flagged"] = decision.get("flagged")
        row["reason"] = decision.get("reason")
        row["best_baseline"] = (decision.get("floor") or {}).get("best_baseline")
    refresh = _load(lake.refresh_record(day))
    row["refresh_seconds"] = (refresh or {}).get("train_seconds")
    row["refresh_new_items"] = (refresh or {}).get("new_items")
    if nr is not None:
        row["night_seconds"] = round(sum(nr.seconds.values()), 1)
        row["step_seconds"] = dict(nr.seconds)
    return row


def next_day_hits(recs_path, sessions_d, sessions_next, k: int = 20) -> dict:
    """Among users with a session on D and on D+1: the share whose first click on D+1 is in
    the top-k of their last session of D."""
    import pandas as pd

    recs = pd.read_parquet(recs_path, columns=["session_id", "user_id", "rank", "item_id"])
    day = pd.read_parquet(sessions_d, columns=["session_id", "user_id", "ts", "seq"])
    nxt = pd.read_parquet(sessions_next, columns=["session_id", "user_id", "item_id", "ts", "seq"])
    ends = day.sort_values(["ts", "seq"]).groupby("user_id")["session_id"].last()
    first = nxt.sort_values(["ts", "seq"]).groupby("user_id")["item_id"].first()
    users = ends.index.intersection(first.index)
    top = recs[recs["rank"] <= k]
    top = top[top["session_id"].isin(set(ends.loc[users]))]
    listed = set(zip(top["session_id"], top["item_id"], strict=True))
    hits = sum((ends[u], first[u]) in listed for u in users)
    return {
        "users": int(len(users)),
        "hits": int(hits),
        "share": hits / len(users) if len(users) else None,
    }


def add_next_day(lake: Lake, rows: list[dict], unrefreshed: dict[str, str], k: int) -> None:
    for row, nxt in zip(rows, rows[1:], strict=False):
        day, following = row["date"], nxt["date"]
        recs = Path(lake.recommendations_day(day))
        later = Path(lake.sessions_day(following))
        if not recs.exists() or not later.exists():
            continue
        got = next_day_hits(recs, lake.sessions_day(day), later, k)
        row["next_day_users"], row["next_day_hit"] = got["users"], got["share"]
        side = unrefreshed.get(day)
        if side and Path(side).exists():
            row["next_day_hit_unrefreshed"] = next_day_hits(side, lake.sessions_day(day), later, k)[
                "share"
            ]


# -- the report --------------------------------------------------------------------------------
def _plot(path: Path, rows: list[dict], keys: list[tuple[str, str]], title: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = list(range(len(rows)))  # positions, labelled by date (strings would be categories)
    for key, label in keys:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", label=label)
    ax.set_xticks(x, [r["date"][5:] for r in rows])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


BASELINES = ("pop", "spop", "itemknn", "vsknn", "stan")
COLUMNS = (
    "date", "stopped_at", "events", "quarantine_share", "sessions", "mode", "epochs",
    "train_seconds", "night_seconds", "gru4rec_recall@20", "gru4rec_mrr@20",
    *[f"{b}_recall@20" for b in BASELINES], "promoted", "flagged", "best_baseline",
    "next_day_hit", "next_day_hit_unrefreshed", "reason",
)  # fmt: skip


def write_report(out: Path, rows: list[dict], settings: dict) -> Path:
    metric_keys = [("gru4rec_recall@20", "GRU4Rec")] + [(f"{b}_recall@20", b) for b in BASELINES]
    _plot(out / "recall.png", rows, metric_keys, "Recall@20 per night", "Recall@20")
    mrr_keys = [("gru4rec_mrr@20", "GRU4Rec")] + [(f"{b}_mrr@20", b) for b in BASELINES]
    _plot(out / "mrr.png", rows, mrr_keys, "MRR@20 per night", "MRR@20")
    cost = [("train_seconds", "train"), ("refresh_seconds", "refresh"), ("night_seconds", "night")]
    _plot(out / "cost.png", rows, cost, "Seconds per night", "s")
    fresh = [
        ("next_day_hit", "refreshed (published)"),
        ("next_day_hit_unrefreshed", "not refreshed"),
    ]
    _plot(out / "next_day.png", rows, fresh, "Next-day first click in yesterday's top-20", "share")

    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    page = render_template(
        "backtest_report.html.j2",
        nights=len(rows),
        settings=json.dumps(settings),
        columns=COLUMNS,
        rows=[[cell(r.get(c)) for c in COLUMNS] for r in rows],
    )
    (out / "report.html").write_text(page)
    return out / "report.html"


def write_rows(out: Path, rows: list[dict]) -> None:
    (out / "nights.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    keys = sorted({k for r in rows for k in r if k != "step_seconds"})
    with open(out / "nights.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# -- the command -------------------------------------------------------------------------------
def split_deliveries(args, lake: Lake, echo) -> None:
    from jobs.nightly.commands import spark_submit_executable

    cmd = [
        spark_submit_executable(), "--master", "local[*]", "--driver-memory", "4g",
        str(SPLIT_JOB), "--input", args.input, "--out", f"{lake.root}/raw",
        "--preset", args.preset or "",
    ]  # fmt: skip
    if args.mapping:
        cmd += ["--mapping", args.mapping]
    run(cmd, step_env("local"), echo=echo)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.nightly.backtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--input", required=True, help="the raw clickstream (file or directory)")
    ap.add_argument("--preset", default="", help="source preset (rsc15, taobao, ...)")
    ap.add_argument("--mapping", help="a JSON file of SourceMapping keys over the preset")
    ap.add_argument("--first", required=True, type=dt.date.fromisoformat, help="first night's D")
    ap.add_argument("--nights", required=True, type=int, help="consecutive nights to replay")
    ap.add_argument("--out", required=True, help="directory for the lake and the results")
    ap.add_argument("--params", default="{}", help="DAG params as JSON (a run's conf)")
    ap.add_argument("--keep", action="store_true", help="reuse an existing lake under --out")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = Path(args.out).resolve()
    if out.exists() and not args.keep and any(out.iterdir()):
        ap.error(f"--out {out} is not empty (pass --keep to continue in it)")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GRU4REC_ROOTS", json.dumps([str(out)]))
    if "GRU4REC_SPARK_CONF" not in os.environ:  # short Spark applications: the quick JIT
        from jobs.dev.embedded import quick_jvm

        os.environ.update(quick_jvm())
    os.environ.setdefault("GRU4REC_PRIVATE_DIR", str(out / "private"))
    params = {
        "lake": str(out / "lake"),
        "raw_input": "{lake}/raw/dt={ds}",
        "source_preset": args.preset,
        **json.loads(args.params),
    }
    if args.mapping:
        params["column_mapping"] = json.loads(Path(args.mapping).read_text())
    lake = Lake(params["lake"])
    steps_log = open(out / "steps.log", "a")  # noqa: SIM115 - closed at exit

    def echo(line: str) -> None:
        steps_log.write(line + "\n")

    if not Path(lake.root, "raw").exists():
        split_deliveries(args, lake, echo)
    rows, unrefreshed = [], {}
    for i in range(args.nights):
        day = args.first + dt.timedelta(days=i)
        night = Night.from_params(params, day)
        t0 = time.monotonic()
        nr = NightRun(night)
        stopped = nr.run(echo)
        if nr.unrefreshed:
            unrefreshed[night.day] = nr.unrefreshed
        row = night_row(lake, night.day, nr, stopped)
        rows.append(row)
        published = Path(lake.publish_record(night.day)).exists()
        done = f"stopped at {stopped}" if stopped else ("published" if published else "no model")
        print(f"night {night.day}: {done}; "
              f"{row.get('mode')} {row.get('train_seconds') or 0:.1f} s training; "
              f"GRU4Rec R@20 {row.get('gru4rec_recall@20')}; promoted {row.get('promoted')} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
        write_rows(out, rows)
    k = Night.from_params(params, args.first).scoring.k
    add_next_day(lake, rows, unrefreshed, k)
    write_rows(out, rows)
    report = write_report(out, rows, params)
    print(f"backtest: {len(rows)} nights; {out / 'nights.csv'}; {report}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sys.exit(main())
