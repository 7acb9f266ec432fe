"""Training data at the design's scale: a synthetic 10^8-event training split, loaded as
integer arrays (gru4rec.data.read_compact) and an epoch started, with its peak memory.

    .venv/bin/python benchmarks/train_scale.py generate --out var/scale --events 100000000
    /usr/bin/time -v .venv/bin/python benchmarks/train_scale.py load --data var/scale

`generate` writes `run=scale/train/` as jobs.build_datasets does (training order, item_idx,
string session and item ids, several part files) and `run=scale/items/`, in pieces of
`--per-file` events so its own memory stays small. Sessions: geometric lengths (mean ~4,
at least 2), starts one to three seconds apart; items: a power law over `--items` items.

`load` reads the split (read_compact: 4 bytes an event for item_idx, 8 a session for the
offsets), builds a Trainer with the `rsc15` parameters, computes the epoch's first schedule
piece and trains `--steps` minibatches. It prints the load time, the steps' rate and the
process's peak RSS at each stage (ru_maxrss); `/usr/bin/time -v` reports the same peak
("Maximum resident set size") from outside. Targets (issue 13): <= 2 GB peak, <= 60 s load.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def generate(args) -> None:
    out = Path(args.out) / "run=scale"
    if out.exists():
        raise SystemExit(f"--out: expected a new directory, found {out}")
    train, items_dir = out / "train", out / "items"
    train.mkdir(parents=True)
    items_dir.mkdir()
    rng = np.random.default_rng(args.seed)
    # item popularity: a power law; item_idx orders items by support, as the Spark index does
    weights = 1.0 / np.arange(1, args.items + 1) ** args.zipf
    cdf = np.cumsum(weights / weights.sum())
    support = np.zeros(args.items, dtype=np.int64)
    ids = pc.cast(pa.array(np.arange(args.items, dtype=np.int64)), pa.string())
    ids = pc.binary_join_element_wise("item-", ids, "")
    t0, written, session0, clock = time.perf_counter(), 0, 0, 1_400_000_000_000_000
    part = 0
    while written < args.events:
        n_target = min(args.per_file, args.events - written)
        lengths = 2 + rng.geometric(0.5, size=n_target // 3)
        lengths = lengths[np.cumsum(lengths) <= n_target]
        n, k = int(lengths.sum()), len(lengths)
        if k == 0:  # fewer events left than a session needs
            break
        starts = clock + np.cumsum(rng.integers(1, 4, size=k)) * 1_000_000
        clock = int(starts[-1])
        session = np.repeat(np.arange(k), lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        seq = (np.arange(n) - first).astype(np.int32)
        ts = starts[session] + seq.astype(np.int64) * 20_000_000
        item = np.searchsorted(cdf, rng.random(n)).astype(np.int32)
        np.add.at(support, item, 1)
        sid = pc.cast(pa.array(session0 + np.arange(k, dtype=np.int64)), pa.string())
        sid = pc.utf8_lpad(sid, 12, "0")
        table = pa.table(
            {
                "session_id": sid.take(pa.array(session)),
                "item_id": pa.DictionaryArray.from_arrays(pa.array(item), ids),
                "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "seq": pa.array(seq),
                "item_idx": pa.array(item),
            }
        )
        pq.write_table(table, train / f"part-{part:05d}.parquet")
        written, session0, part = written + n, session0 + k, part + 1
        print(f"  {written:,} events in {part} files, {time.perf_counter() - t0:.0f} s", flush=True)
    # item_idx is the rank the generator drew from: close to the index's support order, not
    # exactly it (the reader does not depend on the order, only on the ids and their count)
    items = pa.table(
        {"item_id": ids, "item_idx": pa.array(np.arange(args.items, dtype=np.int32)),
         "support": pa.array(support)}
    )  # fmt: skip
    pq.write_table(items, items_dir / "part-00000.parquet")
    print(json.dumps({"events": written, "files": part, "items": args.items,
                      "seconds": round(time.perf_counter() - t0, 1), "out": str(out)}))  # fmt: skip


def load(args) -> None:
    import torch

    from gru4rec.batching import apply_slot_changes
    from gru4rec.config import PARAM_SETS, Config
    from gru4rec.data import ItemMap, read_compact
    from gru4rec.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.data) / "run=scale"
    base = peak_mib()
    t0 = time.perf_counter()
    item_map = ItemMap.read_parquet(run / "items")
    data = read_compact(run / "train", item_map, "train")
    if data is None:
        raise SystemExit("the split is not compact (see the warning above)")
    load_s = time.perf_counter() - t0
    after_load = peak_mib()
    cfg = Config.from_dict({**PARAM_SETS["rsc15"], "device": "cpu", "n_epochs": 1})
    trainer = Trainer(cfg, item_map)
    t1 = time.perf_counter()
    piece = next(trainer.schedule_pieces(data))
    items = torch.as_tensor(data.items)
    pos = torch.as_tensor(piece.positions)
    inputs, targets = items[pos].long(), items[pos + 1].long()
    offs = piece.step_offsets.tolist()
    hidden = trainer.model.zero_hidden(offs[1] - offs[0])
    piece_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    steps = min(args.steps, piece.n_steps)
    for t in range(steps):
        hidden = apply_slot_changes(piece, t, hidden)
        _, hidden = trainer.step(inputs[offs[t] : offs[t + 1]], targets[offs[t] : offs[t + 1]],
                                 hidden)  # fmt: skip
    step_s = time.perf_counter() - t2
    report = {
        "events": data.n_events,
        "sessions": data.n_sessions,
        "items": len(item_map),
        "load_seconds": round(load_s, 1),
        "load_events_per_second": round(data.n_events / load_s),
        "arrays_mib": round((data.items.nbytes + data.offsets.nbytes) / 2**20),
        "first_piece_seconds": round(piece_s, 2),
        "steps": steps,
        "minibatches_per_second": round(steps / step_s, 1),
        "peak_rss_mib": {
            "interpreter_and_imports": round(base),
            "after_load": round(after_load),
            "after_steps": round(peak_mib()),
        },
        "targets": {"peak_rss_mib": 2048, "load_seconds": 60},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--events", type=int, default=100_000_000)
    g.add_argument("--items", type=int, default=200_000)
    g.add_argument("--zipf", type=float, default=1.1)
    g.add_argument("--per-file", type=int, default=5_000_000)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=generate)
    ld = sub.add_parser("load")
    ld.add_argument("--data", required=True)
    ld.add_argument("--steps", type=int, default=500)
    ld.add_argument("--threads", type=int, default=0)
    ld.set_defaults(fn=load)
    args = ap.parse_args()
    args.fn(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
