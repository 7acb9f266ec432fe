"""How many warm-start epochs a nightly refresh needs: chains of refreshes replayed offline.

    .venv/bin/python benchmarks/warm_epochs_sweep.py var/bt/taobao-full var/bt/taobao-incremental \
        --window 4 --epochs 2 3 4 5 7 10

Reads two kept backtests (`--keep`) of the same clickstream: A (full retraining) and B
(incremental). Starting from B's first-night full model, each chain refreshes the model on
each day D's sessions exactly as the nightly refresh does (`gru4rec train --warm-start` with
D's window index, the window's support and `--warm-epochs E`), then evaluates it on D+1's test
split against A's candidate of D+1, on the test points both models know (`--known-by`), which
is what an incremental night's candidate is (a warm start finds no unseen session in D+1's
train split, whose days the refreshes have seen). Prints per night and the means, with the
mean refresh train seconds; the full candidate's cost is in A's nights.csv (train +
selection + refresh seconds). Chains are written under --work and reused when present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@20", "mrr@20")


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _candidate(lake: Path, day: str) -> Path:
    path = lake / "models" / f"run={day}" / "promotion.json"
    name = json.loads(path.read_text()).get("candidate") if path.exists() else None
    if not name:
        raise SystemExit(f"{path}: no candidate recorded (was the backtest run with --keep?)")
    return lake / "models" / name


def _evaluate(model: Path, test: Path, other: Path) -> dict:
    cmd = [
        sys.executable, "-m", "gru4rec", "evaluate", "--model", str(model), "--test", str(test),
        "--known-by", str(other), "--device", "cpu", "--cutoffs", "20", "--log-level", "WARNING",
    ]  # fmt: skip
    return json.loads(_run(cmd))


def _refresh(lake: Path, model: Path, day: str, window: int, epochs: int, out: Path) -> dict:
    if not (out / "model.pt").exists():
        d = dt.date.fromisoformat(day)
        days = [str(d - dt.timedelta(days=i)) for i in range(window)]
        support = [str(lake / "sessions" / f"dt={x}") for x in days]
        cmd = [
            sys.executable, "-m", "gru4rec", "train", "--train", support[0],
            "--items", str(lake / "datasets" / f"run={day}" / "items"),
            "--warm-start", str(model),
            "--popularity", str(lake / "datasets" / f"run={day}" / "popularity"),
            "--params", "rsc15", "--warm-epochs", str(epochs), "--min-new-item-support", "2",
            "--support-from", *support, "--device", "cpu", "--no-baselines",
            "--log-level", "WARNING", "--out", str(out),
        ]  # fmt: skip
        _run(cmd)
    return json.loads((out / "metrics.json").read_text())


def chain(a: Path, b: Path, nights: list[str], window: int, epochs: int, work: Path) -> dict:
    model = _candidate(b / "lake", nights[0])  # the lineage's first full training
    rows, seconds = [], []
    for day, nxt in zip(nights, nights[1:], strict=False):
        out = work / f"e{epochs}" / f"refreshed-{day}"
        seconds.append(_refresh(b / "lake", model, day, window, epochs, out)["train_seconds"])
        model = out
        full = _candidate(a / "lake", nxt)
        test = a / "lake" / "datasets" / f"run={nxt}" / "test"
        mine, theirs = _evaluate(model, test, full), _evaluate(full, test, model)
        rows.append((mine, theirs))
        print(
            f"  E={epochs} {nxt}: {mine['n_points']} common points; "
            + "; ".join(f"{m} refreshed {mine[m]:.4f} full {theirs[m]:.4f}" for m in METRICS),
            flush=True,
        )
    out = {"epochs": epochs, "points": statistics.mean(r[0]["n_points"] for r in rows)}
    out["refresh_train_seconds"] = statistics.mean(seconds)
    for m in METRICS:
        mine, theirs = (statistics.mean(r[i][m] for r in rows) for i in (0, 1))
        out[m] = {"refreshed": mine, "full": theirs, "ratio": mine / theirs}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="the full backtest's --out (kept lake)")
    ap.add_argument("b", type=Path, help="the incremental backtest's --out (kept lake)")
    ap.add_argument("--window", type=int, default=4, help="window_days of both backtests")
    ap.add_argument("--epochs", type=int, nargs="+", default=[2, 5], help="warm epochs to try")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "warm_sweep")
    args = ap.parse_args()
    nights = [row["date"] for row in json.loads((args.b / "nights.json").read_text())]
    results = [chain(args.a, args.b, nights, args.window, e, args.work) for e in args.epochs]
    for r in results:
        print(
            f"== warm epochs {r['epochs']}: {r['points']:.0f} common points a night; "
            + "; ".join(
                f"{m} {r[m]['refreshed']:.4f} vs full {r[m]['full']:.4f} (x{r[m]['ratio']:.3f})"
                for m in METRICS
            )
            + f"; refresh trains {r['refresh_train_seconds']:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
