"""Benchmark: ingest -> sessionize -> build_datasets -> popularity on synthetic clickstreams.

Runs the Spark jobs with local[2] at each size, then the same clean + sessionize + iterative
filter + time split + popularity in DuckDB SQL (2 threads) on the same CSV, the peer a
single-machine user would pick. Prints seconds and events/s per stage and the Spark/DuckDB ratio.

    .venv/bin/python benchmarks/spark_jobs.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import time
from pathlib import Path

from jobs.common.lake import Lake
from jobs.common.settings import DatasetSettings
from jobs.common.spark import get_spark
from jobs.dev.synth import SynthConfig, generate, write_csv
from jobs.run_all import run_all
from jobs.sources import PRESETS

DAYS = 7
START = dt.date(2026, 1, 1)


def ensure_input(out: Path, events: int) -> Path:
    path = out / f"clicks_{events}.csv"
    if not path.exists():
        t = time.monotonic()
        write_csv(generate(SynthConfig(events=events, days=DAYS, start=START)), str(path))
        print(f"generated {path} in {time.monotonic() - t:.1f} s", flush=True)
    return path


def run_spark(spark, path: Path, lake_dir: Path, events: int) -> dict:
    shutil.rmtree(lake_dir, ignore_errors=True)
    last = START + dt.timedelta(days=DAYS - 1)
    t = time.monotonic()
    res = run_all(
        spark,
        str(path),
        Lake(str(lake_dir)),
        PRESETS["synthetic"],
        last,
        DatasetSettings(window_days=DAYS),
    )
    total = time.monotonic() - t
    stages = {
        k: res[k]["wall_seconds"] for k in ("ingest", "sessionize", "build_datasets", "popularity")
    }
    return {
        "total_seconds": round(total, 1),
        "stages": stages,
        "events_per_s": {k: round(events / v) for k, v in stages.items()},
        "train_events": res["build_datasets"]["splits"]["train"]["events"],
        "test_events": res["build_datasets"]["splits"]["test"]["events"],
        "items": res["popularity"]["items"],
    }


def run_duckdb(path: Path, out_dir: Path, threads: int = 2) -> dict:
    import duckdb

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    lo = f"TIMESTAMP '{START}'"
    hi = f"TIMESTAMP '{START + dt.timedelta(days=DAYS)}'"
    split = f"TIMESTAMP '{START + dt.timedelta(days=DAYS - 1)}'"
    t = time.monotonic()
    con.execute(f"""
        CREATE TEMP TABLE ev AS SELECT DISTINCT user_id, item_id, ts, event_type FROM (
          SELECT NULLIF(trim(user_id), '') AS user_id, NULLIF(trim(item_id), '') AS item_id,
                 make_timestamp(TRY_CAST(timestamp AS BIGINT) * 1000) AS ts, event_type
          FROM read_csv('{path}', header = true, all_varchar = true))
        WHERE user_id IS NOT NULL AND item_id IS NOT NULL AND ts >= {lo} AND ts < {hi}""")
    t_ingest = time.monotonic()
    con.execute("""
        CREATE TEMP TABLE s AS
        WITH g AS (
          SELECT *, CASE WHEN lag(ts) OVER w IS NULL
                          OR epoch_us(ts) - epoch_us(lag(ts) OVER w) > 1800000000
                    THEN 1 ELSE 0 END AS new
          FROM ev WINDOW w AS (PARTITION BY user_id ORDER BY ts, item_id)),
        h AS (SELECT *, sum(new) OVER (PARTITION BY user_id ORDER BY ts, item_id
                                       ROWS UNBOUNDED PRECEDING) AS sn FROM g),
        r AS (SELECT *, lag(item_id) OVER (PARTITION BY user_id, sn ORDER BY ts, item_id)
                     AS prev FROM h)
        SELECT user_id || '|' || sn AS session_id, user_id, item_id, ts FROM r
        WHERE prev IS NULL OR prev <> item_id""")
    t_sess = time.monotonic()
    rows = con.execute("SELECT count(*) FROM s").fetchone()[0]
    passes = 0
    while True:
        passes += 1
        con.execute("""
            CREATE OR REPLACE TEMP TABLE f AS
            WITH a AS (SELECT * FROM s WHERE item_id IN
                       (SELECT item_id FROM s GROUP BY 1 HAVING count(*) >= 5))
            SELECT * FROM a WHERE session_id IN
                   (SELECT session_id FROM a GROUP BY 1 HAVING count(*) >= 2)""")
        n = con.execute("SELECT count(*) FROM f").fetchone()[0]
        con.execute("DROP TABLE s; ALTER TABLE f RENAME TO s")
        if n == rows:
            break
        rows = n
    con.execute(f"""
        CREATE TEMP TABLE st AS SELECT *, min(ts) OVER (PARTITION BY session_id) AS start FROM s;
        CREATE TEMP TABLE train AS SELECT * FROM st WHERE ts < {split} AND session_id IN
            (SELECT session_id FROM st WHERE ts < {split} GROUP BY 1 HAVING count(*) >= 2);
        CREATE TEMP TABLE test AS
            WITH t AS (SELECT * FROM st WHERE start >= {split}
                       AND item_id IN (SELECT DISTINCT item_id FROM train))
            SELECT * FROM t WHERE session_id IN
                (SELECT session_id FROM t GROUP BY 1 HAVING count(*) >= 2);
        -- as the Spark job: each event's item_idx, the splits in training order
        CREATE TEMP TABLE idx AS
            SELECT item_id, (row_number() OVER (ORDER BY c DESC, item_id) - 1)::INT AS item_idx,
                   c AS support
            FROM (SELECT item_id, count(*) AS c FROM train GROUP BY 1);
        COPY (SELECT session_id, user_id, item_id, ts, item_idx FROM train JOIN idx USING (item_id)
              ORDER BY start, session_id, ts, item_id) TO '{out_dir}/train.parquet';
        COPY (SELECT session_id, user_id, item_id, ts, item_idx FROM test JOIN idx USING (item_id)
              ORDER BY start, session_id, ts, item_id) TO '{out_dir}/test.parquet';""")
    t_build = time.monotonic()
    con.execute(f"""
        COPY (SELECT item_id, item_idx, support, pow(support, 0.5) AS weight,
                     sum(pow(support, 0.5)) OVER (ORDER BY item_idx)
                     / sum(pow(support, 0.5)) OVER () AS cdf
              FROM idx)
        TO '{out_dir}/popularity.parquet'""")
    t_end = time.monotonic()
    train_n = con.execute("SELECT count(*) FROM train").fetchone()[0]
    test_n = con.execute("SELECT count(*) FROM test").fetchone()[0]
    return {
        "total_seconds": round(t_end - t, 1),
        "stages": {
            "ingest": round(t_ingest - t, 2),
            "sessionize": round(t_sess - t_ingest, 2),
            "build_datasets": round(t_build - t_sess, 2),
            "popularity": round(t_end - t_build, 2),
        },
        "filter_passes": passes,
        "train_events": train_n,
        "test_events": test_n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    print(f"machine: {machine}", flush=True)
    t = time.monotonic()
    spark = get_spark("bench", "local[2]")
    spark_start = time.monotonic() - t
    print(f"SparkSession start: {spark_start:.1f} s (not counted below)", flush=True)
    results = {"machine": machine, "spark_session_start_s": round(spark_start, 1), "sizes": {}}
    for n in args.sizes:
        path = ensure_input(out, n)
        s = run_spark(spark, path, out / f"lake_{n}", n)
        d = run_duckdb(path, out / f"duckdb_{n}")
        ratio = s["total_seconds"] / d["total_seconds"]
        results["sizes"][n] = {"spark": s, "duckdb": d, "spark_over_duckdb": round(ratio, 2)}
        print(f"\n== {n:,} events", flush=True)
        print(f"{'stage':<16}{'spark s':>10}{'events/s':>12}{'duckdb s':>10}")
        for k in s["stages"]:
            print(
                f"{k:<16}{s['stages'][k]:>10.1f}{s['events_per_s'][k]:>12,}{d['stages'][k]:>10.1f}"
            )
        print(
            f"{'total':<16}{s['total_seconds']:>10.1f}{n / s['total_seconds']:>12,.0f}"
            f"{d['total_seconds']:>10.1f}"
        )
        print(f"Spark/DuckDB wall-time ratio: {ratio:.2f}  (target <= 3 at 10M)")
        print(
            f"train/test events: spark {s['train_events']}/{s['test_events']}, "
            f"duckdb {d['train_events']}/{d['test_events']}",
            flush=True,
        )
    sizes = sorted(results["sizes"])
    if len(sizes) >= 2:
        a, b = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
        growth = b["spark"]["total_seconds"] / a["spark"]["total_seconds"]
        results["spark_growth"] = round(growth, 2)
        print(
            f"\nSpark time growth {sizes[0]:,} -> {sizes[-1]:,}: {growth:.2f}x "
            f"(data x{sizes[-1] / sizes[0]:.0f}; target <= 12x for 10x)"
        )
    (out / "spark_jobs.json").write_text(json.dumps(results, indent=2))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
