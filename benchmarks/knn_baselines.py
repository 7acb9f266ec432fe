"""V-SKNN and STAN evaluation speed and peak memory on synthetic Zipf clickstreams.

    .venv/bin/python benchmarks/knn_baselines.py [--train-events 1000000] [--test-events 50000]

Prints seconds per baseline, evaluation points per second and the process's peak RSS. Popular
items held by many sessions are the hard case: candidates come from each item's most recent
`sample_size` sessions only, so the work per point stays bounded.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from gru4rec.baselines import evaluate_baseline
from gru4rec.data import SessionData
from gru4rec.sknn import SessionIndex


def synthetic(n_events: int, n_items: int, t0: float, rng) -> SessionData:
    lengths = rng.geometric(0.2, size=n_events // 4) + 1
    lengths = lengths[np.cumsum(lengths) <= n_events]
    items = (rng.zipf(1.3, size=int(lengths.sum())) - 1) % n_items
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ends = t0 + np.sort(rng.uniform(0, 30 * 86400, len(lengths)))
    times = (
        np.repeat(ends, lengths)
        - (np.repeat(offsets[1:], lengths) - 1 - np.arange(int(lengths.sum()))) * 30.0
    )
    return SessionData(items.astype(np.int64), offsets, np.arange(len(lengths)).astype(object),
                       times=times)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-events", type=int, default=1_000_000)
    ap.add_argument("--test-events", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=50_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    train = synthetic(args.train_events, args.items, 0.0, rng)
    test = synthetic(args.test_events, args.items, 31 * 86400.0, rng)
    support = np.bincount(train.items, minlength=args.items).astype(float) + 1e-9
    print(f"train {train.n_events} events / {train.n_sessions} sessions, test {test.n_pairs} "
          f"points, {args.items} items; most popular item in "
          f"{int(np.bincount(train.items).max())} events")  # fmt: skip
    t0 = time.perf_counter()
    index = SessionIndex.build(train.items, train.offsets, args.items, train.times)
    print(f"session index: {time.perf_counter() - t0:.1f} s")
    for name in ("vsknn", "stan"):
        t0 = time.perf_counter()
        res = evaluate_baseline(name, train, test, support, sessions=index)
        dt = time.perf_counter() - t0
        print(f"{name:6s} {dt:6.1f} s  {test.n_pairs / dt:8.0f} points/s  "
              f"recall@20 {res['recall@20']:.4f}  mrr@20 {res['mrr@20']:.4f}")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
