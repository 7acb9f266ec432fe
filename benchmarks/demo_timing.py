"""Wall time of the README's main command and of each DAG task in it.

    .venv/bin/python benchmarks/demo_timing.py [--root var/demo-bench] [--runs 3] [demo options]

Runs the demo (jobs.dev.demo: generated deliveries, Airflow metadata DB, `airflow dags test` of
gru4rec_nightly) `--runs` times, each from an empty root (a first night, as a newcomer's),
reads each task's start and end from Airflow's metadata DB (`airflow tasks
states-for-dag-run`) and prints a table per run, then the median end-to-end time against the
2-minute target (issue 13). Needs `.venv` to exist (the demo's own first run also creates it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.dev import demo  # noqa: E402
from jobs.dev.embedded import DAG_ID, airflow, airflow_env  # noqa: E402

TARGET_SECONDS = 120


def _json(text: str):
    """The JSON list the airflow CLI printed (its log lines come in the same stream)."""
    return json.loads(text[text.index("[{") : text.rindex("}]") + 2])


def one_run(root: Path, rest: list[str]) -> float | None:
    """One demo from an empty `root`; its per-task table; its end-to-end seconds."""
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    code = demo.main(["--root", str(root), *rest])
    total = time.monotonic() - t0
    if code != 0:
        print(f"demo failed (exit {code})")
        return None
    root = root.resolve()
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
    print(f"{'sum of tasks':26s} {sum(r[2] for r in rows):8.1f}")
    print(f"{'demo end to end':26s} {total:8.1f}")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="var/demo-bench")
    parser.add_argument("--runs", type=int, default=1, help="demos, each from an empty root")
    args, rest = parser.parse_known_args()
    totals = []
    for _ in range(args.runs):
        total = one_run(Path(args.root), rest)
        if total is None:
            return 1
        totals.append(total)
    median = statistics.median(totals)
    verdict = "met" if median <= TARGET_SECONDS else "NOT met"
    runs = ", ".join(f"{t:.1f}" for t in totals)
    print(
        f"\ndemo end to end, {len(totals)} run(s): {runs} s; median {median:.1f} s "
        f"(target <= {TARGET_SECONDS} s: {verdict}; ratio {median / TARGET_SECONDS:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
