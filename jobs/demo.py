"""Demo: generate a deterministic synthetic clickstream, run every Spark job on it, then train
and evaluate GRU4Rec (with baselines) on the datasets the jobs wrote."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time

from jobs.build_datasets import DatasetConfig
from jobs.common.lake import Lake
from jobs.common.spark import get_spark
from jobs.run_all import run_all
from jobs.sources import PRESETS
from jobs.synth import SynthConfig, generate, write_csv

log = logging.getLogger("jobs.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev.sh demo",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", default="var/demo", help="where the raw data and lake go")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2, help="GRU4Rec epochs (0: skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    t0 = time.monotonic()
    cfg = SynthConfig(events=args.events, days=args.days, start=dt.date(2026, 1, 1))
    raw = os.path.join(args.root, "raw", "clicks.csv")
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    write_csv(generate(cfg), raw)
    lake = Lake(os.path.join(args.root, "lake"))
    last = cfg.start + dt.timedelta(days=cfg.days - 1)
    spark = get_spark("demo")
    result = run_all(
        spark, raw, lake, PRESETS["synthetic"], last, DatasetConfig(window_days=cfg.days)
    )
    print(f"\nSpark jobs finished in {time.monotonic() - t0:.0f} s. Outputs under {lake.root}:")
    print(
        f"  events      {lake.events}  ({result['ingest']['events_out']} events, "
        f"{result['ingest']['quarantined_total']} quarantined, "
        f"{result['ingest']['duplicates_dropped']} duplicates dropped)"
    )
    print(
        f"  quarantine  {lake.quarantine}  by reason: {json.dumps(result['ingest']['quarantined'])}"
    )
    print(f"  sessions    {lake.sessions}  ({result['sessionize']['sessions_out']} sessions)")
    splits = result["build_datasets"]["splits"]
    print(
        f"  datasets    {lake.datasets(str(last))}  (train {splits['train']['events']} events, "
        f"test {splits['test']['events']} events)"
    )
    print(
        f"  items       {lake.datasets(str(last))}/items  ({result['popularity']['items']} items)"
    )
    print("  summaries   */_summaries/*.json")
    if args.epochs <= 0:
        return 0
    spark.stop()
    from gru4rec.cli import main as gru4rec_main

    run = lake.datasets(str(last))
    model_dir = os.path.join(lake.root, "models", f"run={last}")
    code = gru4rec_main(
        ["train", "--train", f"{run}/train", "--test", f"{run}/test", "--params", "rsc15",
         "--set", f"n_epochs={args.epochs}", "--out", model_dir]
    )  # fmt: skip
    if code != 0:
        return code
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    best = max(metrics["baselines"].items(), key=lambda kv: kv[1]["recall@20"])
    print(
        f"  model       {model_dir}  (GRU4Rec recall@20 {metrics['recall@20']:.4f}, "
        f"mrr@20 {metrics['mrr@20']:.4f}; best baseline {best[0]} recall@20 "
        f"{best[1]['recall@20']:.4f}; report: {model_dir}/report.html)"
    )
    print(f"\nDemo finished in {time.monotonic() - t0:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
