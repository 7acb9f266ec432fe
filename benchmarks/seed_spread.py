"""How much tonight's GRU4Rec depends on its seed: Recall@20 / MRR@20 over seeds.

    .venv/bin/python benchmarks/seed_spread.py [--sets rsc15,retailrocket] [--seeds 5]
                                               [--epochs 3,10] [--select mrr@20]

Trains each parameter set with each seed on rsc15_sample (train_full -> test), evaluating
after each epoch count listed (one training run per seed; the metrics after epoch e are those
of the model after e epochs). Prints per seed and the spread (max / min - 1) and mean.

With --select METRIC: what the nightly pipeline's `select_epochs` does, per seed: choose the
epoch count (at most the largest of --epochs, patience 2) on train_tr -> train_valid, then
train that many on train_full and evaluate on test.
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
    ap.add_argument("--select", help="choose the epochs on the validation split by this metric")
    args = ap.parse_args()
    data = Path(args.data)
    train_frame = read_events(data / "yoochoose-clicks-100k_train_full.txt")
    item_map = ItemMap.from_train(train_frame["item_id"].to_numpy(dtype=object))
    train = build_sessions(train_frame, item_map, "train")
    test = build_sessions(read_events(data / "yoochoose-clicks-100k_test.txt"), item_map, "test")
    marks = sorted(int(e) for e in args.epochs.split(","))
    if args.select:
        return selected(args, data, item_map, train, test, marks[-1])
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


def selected(args, data, item_map, train, test, max_epochs: int) -> int:
    from gru4rec.selection import choose_epochs

    train_tr = build_sessions(
        read_events(data / "yoochoose-clicks-100k_train_tr.txt"), item_map, "train_tr"
    )
    valid = build_sessions(
        read_events(data / "yoochoose-clicks-100k_train_valid.txt"), item_map, "valid"
    )
    for params in args.sets.split(","):
        got = []
        for seed in range(args.seeds):
            cfg = Config.from_params(params).with_overrides(
                ["device=cpu", f"seed={seed}", f"n_epochs={max_epochs}"]
            )
            t0 = time.perf_counter()
            sel = choose_epochs(cfg, item_map, train_tr, valid, args.select, patience=2)
            best = sel["best_epochs"]
            trainer = Trainer(cfg.with_overrides([f"n_epochs={best}"]), item_map)
            trainer.fit(train, progress=False)
            m = evaluate_model(trainer.model, test, mode="conservative")
            got.append((best, m["recall@20"], m["mrr@20"]))
            curve = " ".join(f"{p[sel['metric']]:.4f}" for p in sel["curve"])
            print(f"{params} seed {seed}: chose {best} epochs (valid {curve}); recall@20 "
                  f"{m['recall@20']:.4f} mrr@20 {m['mrr@20']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        rec = [r for _, r, _ in got]
        mrr = [m for _, _, m in got]
        print(
            f"== {params} with epochs chosen by valid {args.select} (<= {max_epochs}), "
            f"{len(got)} seeds, epochs {[b for b, _, _ in got]}: recall@20 mean "
            f"{statistics.mean(rec):.4f} spread {max(rec) / min(rec) - 1:.1%}; mrr@20 "
            f"mean {statistics.mean(mrr):.4f} spread {max(mrr) / min(mrr) - 1:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
