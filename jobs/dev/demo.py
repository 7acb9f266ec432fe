"""Demo: the whole nightly DAG on the embedded default (SQLite Airflow, local Spark, CPU torch,
local files) on a generated clickstream: a deterministic synthetic feed, one delivery a day.

It writes the deliveries to <root>/lake/raw/dt=D/, prepares Airflow's metadata DB under
<root>/airflow, runs `airflow dags test gru4rec_nightly` for the night after the last day (the
first run fills its training window from the deliveries), and prints where the
recommendations, the Data Docs and the run report are. Deterministic and idempotent: a rerun
replaces the same outputs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from jobs.common import contracts as C
from jobs.common.cli import HelpFormatter
from jobs.common.lake import Lake
from jobs.dev.embedded import airflow_env, dags_test, prepare, quick_jvm
from jobs.dev.synth import SynthConfig, generate, write_daily_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev.sh demo",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--root", default="var/demo", help="where the lake and Airflow go")
    parser.add_argument("--events", type=int, default=150_000, help="synthetic clicks in all")
    parser.add_argument(
        "--days", type=int, default=4, help="daily deliveries; the DAG runs for the last one"
    )
    # Six epochs: fewer make a model below the best baseline on this feed (two: Recall@20
    # 0.33 vs STAN's 0.44), which the promotion gate's floor rightly refuses to serve.
    parser.add_argument("--epochs", type=int, default=6, help="GRU4Rec epochs")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    root = Path(args.root).resolve()
    lake = root / "lake"
    cfg = SynthConfig(events=args.events, days=args.days, start=dt.date(2026, 1, 1))
    dates = write_daily_csv(generate(cfg), str(lake / "raw"))
    last = dt.date.fromisoformat(dates[-1])
    print(f"demo: {args.events} synthetic events, deliveries {dates[0]} .. {dates[-1]} "
          f"in {lake / 'raw'}", flush=True)  # fmt: skip
    env = airflow_env(root / "airflow", lake, quick_jvm())
    log = root / "airflow.log"
    log.unlink(missing_ok=True)
    prepare(env, log)
    logical = str(last + dt.timedelta(days=1))  # the night after the last day processes it
    # A few hundred thousand events: four shuffle partitions are plenty on a small machine.
    conf = {
        "epochs": args.epochs,
        "select_epochs": False,  # a quick demo: no epoch selection on the valid split first
        "window_days": args.days,
        "spark_conf": {"spark.sql.shuffle.partitions": "4"},
    }
    print(f"demo: airflow dags test gru4rec_nightly {logical} -c '{json.dumps(conf)}' "
          f"(log: {log})", flush=True)  # fmt: skip
    run = dags_test(env, logical, conf, log)
    day = str(last)
    layout = Lake(str(lake))
    if run.returncode != 0:
        failed = [ln for ln in run.stdout.splitlines() if "AirflowFailException" in ln]
        print(f"demo: the DAG run FAILED (exit {run.returncode}); see {log}", file=sys.stderr)
        for line in failed[-3:]:
            print("  " + line.strip()[:400], file=sys.stderr)
        print(f"  run report: {layout.run_report(day)}", file=sys.stderr)
        return 1
    promotion = json.loads(Path(layout.promotion_record(day)).read_text())
    if promotion["serving_model"] is None:
        print(f"demo: the DAG run succeeded but published nothing for {day}: no model "
              f"serves it ({promotion['reason']}); see {layout.run_report(day)}",
              file=sys.stderr)  # fmt: skip
        return 1
    _summary(layout, day, time.monotonic() - t0)
    return 0


def _summary(lake: Lake, day: str, seconds: float) -> None:
    import pyarrow.parquet as pq

    recs = lake.recommendations_day(day)
    table = pq.read_table(recs)
    promotion = json.loads(Path(lake.promotion_record(day)).read_text())
    from jobs.nightly.promote import tonights_model

    model_dir = tonights_model(lake, day)
    metrics = json.loads(Path(model_dir, "metrics.json").read_text())
    best = max(metrics["baselines"].items(), key=lambda kv: kv[1]["recall@20"])
    suites = {
        suite: json.loads(Path(lake.suite_result(day, suite)).read_text())["success"]
        for suite in C.SUITES
        if Path(lake.suite_result(day, suite)).exists()
    }
    print(f"\nDemo finished in {seconds:.0f} s: the nightly DAG ran for {day}.")
    n_sessions = len(table.column("session_id").unique())
    gates = ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in suites.items())
    print(f"  recommendations  {recs}  ({table.num_rows} rows, {n_sessions} sessions)")
    print(f"  data quality     {gates}")
    print(f"  Data Docs        {lake.data_docs(day)}")
    print(f"  run report       {lake.run_report(day)}")
    print(f"  model            {model_dir}  (GRU4Rec recall@20 "
          f"{metrics['recall@20']:.4f}; best baseline {best[0]} {best[1]['recall@20']:.4f}; "
          f"{promotion['reason']})")  # fmt: skip
    refresh = Path(lake.refresh_record(day))
    if refresh.exists():
        fresh = json.loads(refresh.read_text())
        print(f"  scored by        {lake.model_named(fresh['model'])}  (the serving model "
              f"refreshed on {day}'s {fresh['events_trained']} events, "
              f"{fresh['new_items']} new items)")  # fmt: skip
    print("  sample rows:")
    sample = table.slice(0, 3).to_pandas()
    for line in sample.to_string(index=False).splitlines():
        print("    " + line)


if __name__ == "__main__":
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    raise SystemExit(main())
