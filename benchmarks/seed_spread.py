"""How much tonight's GRU4Rec depends on its seed: Recall@20 / MRR@20 over seeds.

    .venv/bin/python benchmarks/seed_spread.py [--sets rsc15,retailrocket] [--seeds 5]
                                               [--epochs 3,10]

Trains each parameter set with each seed on rsc15_sample (train_full -> test), evaluating
after each epoch count listed (one training run per seed; the metrics after epoch e are those
of the model after e epochs). Prints per seed and the spread (max / min - 1) and mean.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from gru4rec.config import Config
from gru4rec.data import ItemMap, build_sessions, read_events
from gru4rec.evaluate import evaluate_model
from gru4rec.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="rsc15,retailrocket")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", default="3,10", help="evaluate after these epoch counts")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "rsc15_sample"))
    args = ap.parse_args()
    data = Path(args.data)
    train_frame = read_events(data / "yoochoose-clicks-100k_train_full.txt")
    item_map = ItemMap.from_train(train_frame["item_id"].to_numpy(dtype=object))
    train = build_sessions(train_frame, item_map, "train")
    test = build_sessions(read_events(data / "yoochoose-clicks-100k_test.txt"), item_map, "test")
    marks = sorted(int(e) for e in args.epochs.split(","))
    for params in args.sets.split(","):
        rows: dict[int, list] = {e: [] for e in marks}
        for seed in range(args.seeds):
            cfg = Config.from_params(params).with_overrides(
                ["device=cpu", f"seed={seed}", f"n_epochs={marks[-1]}"]
            )
            trainer = Trainer(cfg, item_map)
            t0 = time.perf_counter()
            for epoch in range(1, marks[-1] + 1):
                trainer.train_epoch(train, progress=False)
                if epoch in rows:
                    m = evaluate_model(trainer.model, test, mode="conservative")
                    rows[epoch].append((seed, m["recall@20"], m["mrr@20"]))
                    print(f"{params} seed {seed} epoch {epoch:2d}: recall@20 "
                          f"{m['recall@20']:.4f} mrr@20 {m['mrr@20']:.4f} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        for epoch, got in rows.items():
            rec = [r for _, r, _ in got]
            mrr = [m for _, _, m in got]
            print(
                f"== {params} after {epoch} epochs, {len(got)} seeds: recall@20 mean "
                f"{statistics.mean(rec):.4f} spread {max(rec) / min(rec) - 1:.1%}; mrr@20 "
                f"mean {statistics.mean(mrr):.4f} spread {max(mrr) / min(mrr) - 1:.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
