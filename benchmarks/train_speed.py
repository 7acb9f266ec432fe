"""GRU4Rec training speed on the rsc15 sample: events/s for the official parameter sets.

    .venv/bin/python benchmarks/train_speed.py [--epochs 4] [--sets rsc15,retailrocket]
                                               [--devices cpu,cuda] [--threads N] [--json F]

Reports, per parameter set and device, the median events/s over the epochs after the first
(the first includes one-time costs), against the official PyTorch code's rate on a 2-core
machine (GRU4REC_REFERENCE.md) and the 3x target. With --check-accuracy it also trains the
full 10 epochs and prints Recall/MRR@20, so a speed-up can be checked for unchanged accuracy.
CUDA is measured only when torch sees a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gru4rec.config import Config  # noqa: E402
from gru4rec.data import ItemMap, build_sessions, read_events  # noqa: E402
from gru4rec.evaluate import evaluate_model  # noqa: E402
from gru4rec.train import Trainer  # noqa: E402

OFFICIAL_CPU = {"rsc15": 4100.0, "retailrocket": 5100.0}  # events/s, 2 CPU cores
DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sets", default="rsc15,retailrocket")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--check-accuracy", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = DATA / "rsc15_sample"
    frame = read_events(root / "yoochoose-clicks-100k_train_full.txt")
    item_map = ItemMap.from_train(frame["item_id"].to_numpy(dtype=object))
    train = build_sessions(frame, item_map, "train")
    test = build_sessions(read_events(root / "yoochoose-clicks-100k_test.txt"), item_map, "test")
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    )
    print(f"data: {train.n_events:,} training events, {train.n_pairs:,} pairs per epoch")
    results = []
    for name in args.sets.split(","):
        for device in devices:
            epochs = 10 if args.check_accuracy else args.epochs
            cfg = Config.from_params(name).with_overrides(
                [f"device={device}", f"n_epochs={epochs}"]
            )
            trainer = Trainer(cfg, item_map)
            t0 = time.perf_counter()
            history = trainer.fit(train, progress=False)
            wall = time.perf_counter() - t0
            rates = [e.events_per_second for e in history]
            median = statistics.median(rates[1:] or rates)
            row = {
                "params": name, "device": device, "epochs": epochs,
                "events_per_second_median": round(median),
                "events_per_second_each": [round(r) for r in rates],
                "seconds_per_epoch_median": round(statistics.median(
                    [e.seconds for e in history[1:]] or [history[0].seconds]), 2),
                "wall_seconds": round(wall, 1),
            }  # fmt: skip
            if device == "cpu":
                row["official_cpu_events_per_second"] = OFFICIAL_CPU[name]
                row["speedup_vs_official"] = round(median / OFFICIAL_CPU[name], 2)
                row["target_3x_met"] = median >= 3 * OFFICIAL_CPU[name]
            if args.check_accuracy:
                m = evaluate_model(trainer.model, test)
                row.update({k: round(v, 4) for k, v in m.items() if "@" in k})
            results.append(row)
            extra = (
                f"  {row['speedup_vs_official']:.2f}x official (target 3x: "
                f"{'met' if row['target_3x_met'] else 'NOT met'})"
                if device == "cpu"
                else ""
            )
            print(
                f"{name:13s} {device:5s} {median:9,.0f} events/s  "
                f"{row['seconds_per_epoch_median']:.2f} s/epoch{extra}"
                + (f"  R@20 {row['recall@20']} M@20 {row['mrr@20']}" if args.check_accuracy else "")
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
