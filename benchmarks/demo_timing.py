"""Wall time of the README's main command and of each DAG task in it.

    .venv/bin/python benchmarks/demo_timing.py [--root var/demo-bench] [demo options]

Runs the demo (jobs.dev.demo: generated deliveries, Airflow metadata DB, `airflow dags test` of
gru4rec_nightly), then reads each task's start and end from Airflow's metadata DB
(`airflow tasks states-for-dag-run`) and prints a table and the total against the 5-minute
target. Needs `.venv` to exist (the demo's own first run also creates it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.dev import demo  # noqa: E402
from jobs.dev.embedded import DAG_ID, airflow, airflow_env  # noqa: E402

TARGET_SECONDS = 300


def _json(text: str):
    """The JSON list the airflow CLI printed (its log lines come in the same stream)."""
    return json.loads(text[text.index("[{") : text.rindex("}]") + 2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="var/demo-bench")
    args, rest = parser.parse_known_args()
    t0 = time.monotonic()
    code = demo.main(["--root", args.root, *rest])
    total = time.monotonic() - t0
    if code != 0:
        print(f"demo failed (exit {code})")
        return code
    root = Path(args.root).resolve()
    env = airflow_env(root / "airflow", root / "lake")
    runs = _json(airflow(["dags", "list-runs", DAG_ID, "-o", "json"], env).stdout)
    run_id = max(runs, key=lambda r: r.get("start_date") or "")["run_id"]
    states = _json(
        airflow(["tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"], env).stdout
    )
    rows = []
    for s in states:
        start, end = (dt.datetime.fromisoformat(s[k]) for k in ("start_date", "end_date"))
        rows.append((start, s["task_id"], (end - start).total_seconds(), s["state"]))
    rows.sort()
    print(f"\n{'task':26s} {'seconds':>8s}  state")
    for _, task, sec, state in rows:
        print(f"{task:26s} {sec:8.1f}  {state}")
    in_tasks = sum(r[2] for r in rows)
    print(f"{'sum of tasks':26s} {in_tasks:8.1f}")
    verdict = "met" if total <= TARGET_SECONDS else "NOT met"
    print(
        f"{'demo end to end':26s} {total:8.1f}  (target <= {TARGET_SECONDS} s: {verdict}; "
        f"ratio {total / TARGET_SECONDS:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
