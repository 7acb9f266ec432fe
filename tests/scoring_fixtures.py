"""A tiny trained-looking checkpoint and a day of sessions, shared by the scoring tests of the
model library (tests/gru4rec) and the publish / quality-gate tests of the pipeline."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gru4rec import checkpoint as ckpt
from gru4rec.config import Config
from gru4rec.data import ItemMap
from gru4rec.model import GRU4RecModel

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SESSIONS = [
    ("s2", "u1", "it3", 10), ("s2", "u1", "zzz", 11), ("s2", "u1", "it7", 12),
    ("s1", "u2", "it5", 5),                         # one event
    ("s3", "u3", "nope", 1), ("s3", "u3", "nada", 2),  # only unknown items
]  # fmt: skip


def make_checkpoint(run_dir, n_items=40, seed=0):
    """`run_dir/model.pt` and `run_dir/items.parquet`, as `gru4rec train` leaves them."""
    ids = np.array([f"it{i}" for i in range(n_items)], dtype=object)
    item_map = ItemMap(ids, np.arange(n_items, 0, -1))  # it0 most popular
    cfg = Config(layers=(8,), n_sample=0, batch_size=4, device="cpu")
    model = GRU4RecModel(cfg, n_items)
    model.init_weights(seed)
    with torch.no_grad():
        model.dense.normal_(0, 0.5)
        model.sparse["By"].normal_()
    ckpt.save(run_dir / "model.pt", model, item_map)
    item_map.to_frame().to_parquet(run_dir / "items.parquet", index=False)
    return run_dir / "model.pt", model, item_map


def write_sessions(path, rows):
    frame = pd.DataFrame(rows, columns=["session_id", "user_id", "item_id", "t"])
    frame["ts"] = pd.to_datetime(frame.pop("t"), unit="s", utc=True)
    frame["seq"] = frame.groupby("session_id").cumcount()
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-0.parquet")
    return path


ROOT = Path(__file__).resolve().parents[1]
# `gru4rec score` writing one session per batch, pausing after each: a kill lands mid-write
SLOW_SCORING = """
import sys, time
import pyarrow.parquet as pq
real = pq.ParquetWriter.write_table
def slow(self, table, *a, **k):
    real(self, table, *a, **k)
    print("wrote", flush=True)
    time.sleep(0.5)
pq.ParquetWriter.write_table = slow
from gru4rec.score import score_sessions
score_sessions(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=1)
"""


def kill_scoring_mid_write(model, sessions, out) -> None:
    """Start scoring in a real process and SIGKILL it after its first written batch."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SCORING, str(model), str(sessions), str(out)],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"wrote"  # mid-write: one batch of three written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
