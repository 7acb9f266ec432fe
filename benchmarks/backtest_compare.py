"""Two backtests' candidates on the same test events: full retraining vs incremental, fairly.

    .venv/bin/python benchmarks/backtest_compare.py var/bt/taobao-full var/bt/taobao-incremental

Each backtest (run with `--keep`) reports its candidate's Recall@20 on D's test split with the
candidate's own item index, so two models that know different items are scored on different
test events (a grown incremental index keeps events a full model drops). Here each night's two
candidates are evaluated on A's test split of D, on the events whose item both know (`gru4rec
evaluate --known-by`), and the means over the nights after the first are printed with their
ratio, and how many of D's test points each model's own index can judge (its coverage).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@20", "mrr@20")


def _candidate(out: Path, day: str) -> Path | None:
    path = out / "lake" / "models" / f"run={day}" / "promotion.json"
    if not path.exists():
        return None
    name = json.loads(path.read_text()).get("candidate")
    return out / "lake" / "models" / name if name else None


def _own_points(model: Path) -> int:
    """The test points of D the model's own evaluation judged (targets its index knows)."""
    return int(json.loads((model / "metrics.json").read_text())["n_points"])


def _evaluate(model: Path, test: Path, other: Path) -> dict:
    cmd = [
        sys.executable, "-m", "gru4rec", "evaluate", "--model", str(model), "--test", str(test),
        "--known-by", str(other), "--device", "cpu", "--cutoffs", "20", "--log-level", "WARNING",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="a backtest's --out (kept lakes), e.g. full")
    ap.add_argument("b", type=Path, help="another, e.g. incremental")
    args = ap.parse_args()
    nights = [row["date"] for row in json.loads((args.a / "nights.json").read_text())]
    rows = []
    for day in nights[1:]:
        ma, mb = _candidate(args.a, day), _candidate(args.b, day)
        if ma is None or mb is None:
            print(f"{day}: no candidate in {'a' if ma is None else 'b'}; skipped")
            continue
        test = args.a / "lake" / "datasets" / f"run={day}" / "test"
        ea, eb = _evaluate(ma, test, mb), _evaluate(mb, test, ma)
        if ea["n_points"] != eb["n_points"]:
            raise SystemExit(f"{day}: {ea['n_points']} vs {eb['n_points']} points: not the same")
        own = [_own_points(m) for m in (ma, mb)]  # coverage: what each index lets it judge
        rows.append((day, ea, eb, own))
        print(
            f"{day}: {ea['n_points']} common test points (own index: a {own[0]}, b {own[1]}); "
            + "; ".join(f"{m} a {ea[m]:.4f} b {eb[m]:.4f}" for m in METRICS),
            flush=True,
        )
    if not rows:
        print("no night with both candidates")
        return 1
    a, b = (statistics.mean(r[3][i] for r in rows) for i in (0, 1))
    print(f"== test points of D each model can judge (its own index), mean: a {a:.0f}, b {b:.0f}")
    for m in METRICS:
        a = statistics.mean(r[1][m] for r in rows)
        b = statistics.mean(r[2][m] for r in rows)
        print(f"== {m} over {len(rows)} nights: a {a:.4f}, b {b:.4f}, b/a {b / a:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
