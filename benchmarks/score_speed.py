"""Batch scoring speed: the full pipeline (batching, model, top-k, Parquet) vs the bare math.

    .venv/bin/python benchmarks/score_speed.py [--sessions 100000] [--items 40000]
                                               [--units 100] [--device cpu|cuda]

Pipeline: `gru4rec.score.Scorer.write` (sessions sorted and batched, forward passes, scores
against all items, top-20 on the device, Arrow tables streamed into a Parquet file).
Bare cost: the same forward passes over the same padded batches, one matmul against all item
embeddings and a top-20, no I/O and no table building. Prints sessions/s, sessions/minute
and the ratio pipeline / bare (target <= 1.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gru4rec.config import Config  # noqa: E402
from gru4rec.data import ItemMap  # noqa: E402
from gru4rec.model import GRU4RecModel  # noqa: E402
from gru4rec.score import Scorer  # noqa: E402


def synthetic_sessions(n_sessions: int, n_items: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.3, n_sessions), 50)  # mean ~3.3 events
    sid = np.repeat(np.arange(n_sessions), lengths)
    items = (rng.zipf(1.2, len(sid)) - 1) % n_items
    return pd.DataFrame(
        {
            "session_id": pd.Series(sid).map("s{:08d}".format),
            "user_id": "u",
            "item_id": pd.Series(items).map("it{}".format),
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(sid)), "s"),
            "seq": np.concatenate([np.arange(n) for n in lengths]),
        }
    )


@torch.no_grad()
def bare(model: GRU4RecModel, seqs: list[np.ndarray], batch: int, k: int) -> None:
    """Forward passes + scores against all items + top-k for every session, nothing else."""
    for a in range(0, len(seqs), batch):
        chunk = sorted(seqs[a : a + batch], key=len, reverse=True)
        lengths = np.array([len(s) for s in chunk])
        padded = np.zeros((len(chunk), lengths.max()), dtype=np.int64)
        for i, s in enumerate(chunk):
            padded[i, : len(s)] = s
        items = torch.as_tensor(padded, device=model.device)
        hidden = model.zero_hidden(len(chunk))
        for t in range(padded.shape[1]):
            active = int((lengths > t).sum())
            nxt = model.step_inference(items[:active, t], [h[:active] for h in hidden])
            for layer, h in enumerate(nxt):
                hidden[layer][:active] = h
        torch.topk(model.score_all(hidden[-1]), k, dim=1)
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    frame = synthetic_sessions(args.sessions, args.items)
    ids = np.array([f"it{i}" for i in range(args.items)], dtype=object)
    item_map = ItemMap(ids, np.arange(args.items, 0, -1))
    model = GRU4RecModel(Config(layers=(args.units,), device=args.device), args.items, device)
    model.init_weights(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")  # fmt: skip
    print(f"{args.sessions:,} sessions, {len(frame):,} events, {args.items:,} items, "
          f"{args.units} units, batch {args.batch_size}")  # fmt: skip
    scorer = Scorer(model, item_map, "bench", 20, False, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = scorer.write(frame, Path(tmp) / "out.parquet", dt.datetime.now(dt.UTC))
        pipeline = time.perf_counter() - t0
    # the same sequences, in the same session order, for the bare run
    ordered = frame.sort_values(["session_id", "ts", "seq"], kind="stable")
    idx = item_map.lookup(ordered["item_id"].to_numpy(dtype=object))
    bounds = np.flatnonzero(np.diff(np.r_[-1, ordered["session_id"].str[1:].astype(int)]))
    seqs = np.split(idx, bounds[1:])
    t0 = time.perf_counter()
    bare(model, seqs, args.batch_size, 20)
    bare_s = time.perf_counter() - t0
    for name, sec in (("pipeline", pipeline), ("bare math", bare_s)):
        rate = stats.sessions / sec
        print(f"{name:10s} {sec:7.2f} s  {rate:10,.0f} sessions/s  {rate * 60:12,.0f} sessions/min")
    ratio = pipeline / bare_s
    per_min = stats.sessions / pipeline * 60
    verdict = "met" if ratio <= 1.5 else "NOT met"
    print(f"ratio pipeline / bare: {ratio:.2f} (target <= 1.5: {verdict})")
    print(f"throughput target >= 100,000 sessions/min: {'met' if per_min >= 1e5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
