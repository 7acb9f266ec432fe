"""Scoring at the design's scale: a synthetic day of 10^7 sessions scored by `gru4rec score`'s
code path and checked by the recommendations gate, each with its peak memory.

    .venv/bin/python benchmarks/score_scale.py generate --out var/score-scale --sessions 10000000
    /usr/bin/time -v .venv/bin/python benchmarks/score_scale.py score --data var/score-scale
    /usr/bin/time -v .venv/bin/python benchmarks/score_scale.py gate --data var/score-scale

`generate` writes `sessions/` (string session, user and item ids, geometric lengths with mean
~3, several part files, sessions in random order as a shuffle leaves them) and a small random
model (`--items` items, `--units` hidden units: the benchmark is about memory and streaming,
not the matmul, which `score_speed.py` measures) in pieces, so its own memory stays small.
`score` runs `gru4rec.score.score_sessions` (ranges of `--max-events` events spilled to Arrow
files, then scored range by range); `gate` runs the gate's streaming contract check
(`jobs.quality.recommendations.check_table`, with the day's sessions as a SessionSet) and,
with `--suite`, the Great Expectations suite over the table in chunks. Each prints its rows,
seconds and the process's peak RSS (ru_maxrss, as `/usr/bin/time -v` reports it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _strings(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


def generate(args) -> None:
    import torch

    from gru4rec import checkpoint as ckpt
    from gru4rec.config import Config
    from gru4rec.data import ItemMap
    from gru4rec.model import GRU4RecModel

    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"--out: expected a new directory, found {out}")
    sessions = out / "sessions"
    sessions.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    weights = 1.0 / np.arange(1, args.items + 1) ** 1.1
    cdf = np.cumsum(weights / weights.sum())
    t0, events = time.perf_counter(), 0
    order = rng.permutation(args.sessions)  # file f holds a random slice of session numbers
    for f, part in enumerate(np.array_split(order, args.files)):
        lengths = np.minimum(rng.geometric(1 / 3, len(part)), 50)
        sid = np.repeat(part, lengths)
        seq = np.arange(len(sid)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        item = np.minimum(np.searchsorted(cdf, rng.random(len(sid))), args.items - 1)
        item[rng.random(len(sid)) < 0.02] = args.items + 7  # a few items the model lacks
        ts = 1_765_000_000_000_000 + np.repeat(part * 1000, lengths) + seq * 60_000_000
        table = pa.table(
            {
                "session_id": _strings("session-20261207-", sid),
                "user_id": _strings("user-", sid // 3),
                "item_id": _strings("item-", item),
                "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "seq": pa.array(seq.astype(np.int32)),
            }
        )
        pq.write_table(table, sessions / f"part-{f:05d}.parquet", compression="zstd")
        events += len(sid)
    ids = np.array([f"item-{i}" for i in range(args.items)], dtype=object)
    item_map = ItemMap(ids, np.round(weights * 1e9).astype(np.int64) + 1)
    cfg = Config(layers=(args.units,), n_sample=0, batch_size=32, device="cpu")
    model = GRU4RecModel(cfg, args.items)
    model.init_weights(args.seed)
    with torch.no_grad():
        model.dense.normal_(0, 0.5)
    (out / "model").mkdir()
    ckpt.save(out / "model" / "model.pt", model, item_map)
    item_map.to_frame().to_parquet(out / "model" / "items.parquet", index=False)
    print(json.dumps({"sessions": args.sessions, "events": events, "files": args.files,
                      "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip


def score(args) -> None:
    from gru4rec.score import score_sessions

    data = Path(args.data)
    out = data / "scored"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = score_sessions(
        data / "model" / "model.pt",
        data / "sessions",
        out,
        device="cpu",
        max_events=args.max_events,
        generated_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    seconds = time.perf_counter() - t0
    print(json.dumps({"sessions": summary["sessions"], "events": summary["events"],
                      "rows": summary["rows"], "seconds": round(seconds, 1),
                      "sessions_per_min": round(summary["sessions"] / seconds * 60),
                      "peak_rss_mib": round(peak_mib())}))  # fmt: skip


def gate(args) -> None:
    import pandas as pd

    from jobs.quality.recommendations import (
        SessionSet,
        check_table,
        validate_recommendations_file,
    )

    data = Path(args.data)
    part = data / "scored" / "part-00000.parquet"
    k = json.loads((data / "scored" / "_summary.json").read_text())["k"]
    items = pd.read_parquet(data / "model" / "items.parquet")["item_id"].astype(str).to_numpy()
    t0 = time.perf_counter()
    day = SessionSet.from_sessions(data / "sessions")
    t_day = time.perf_counter() - t0
    counts = check_table(part, day, items, k)
    t_check = time.perf_counter() - t0
    result = {
        "sessions": counts["sessions"],
        "rows": counts["rows"],
        "day_set_seconds": round(t_day, 1),
        "contract_seconds": round(t_check, 1),
    }
    if args.suite:
        gx = validate_recommendations_file(part, day, items, k)
        result.update(suite_success=gx["success"], suite_chunks=len(gx["results"]),
                      suite_seconds=round(time.perf_counter() - t0 - t_check, 1))  # fmt: skip
    result["peak_rss_mib"] = round(peak_mib())
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a synthetic day of sessions and a small model")
    g.add_argument("--out", required=True)
    g.add_argument("--sessions", type=int, default=10_000_000)
    g.add_argument("--files", type=int, default=10)
    g.add_argument("--items", type=int, default=2_000)
    g.add_argument("--units", type=int, default=32)
    g.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="score the day (gru4rec.score.score_sessions)")
    s.add_argument("--data", required=True)
    s.add_argument("--max-events", type=int, default=1_000_000)
    c = sub.add_parser("gate", help="the recommendations gate's contract check (and suite)")
    c.add_argument("--data", required=True)
    c.add_argument("--suite", action="store_true", help="also run the GX suite in chunks")
    args = ap.parse_args()
    {"generate": generate, "score": score, "gate": gate}[args.command](args)


if __name__ == "__main__":
    main()
