"""Scoring on real data end to end: rsc15 sample -> Spark jobs -> train -> score a day."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from gru4rec import checkpoint as ckpt
from gru4rec.cli import main as gru4rec_main
from gru4rec.score import FALLBACK, score_day
from jobs.build_datasets import DatasetConfig, run_build_datasets
from jobs.common.lake import Lake
from jobs.ingest import run_ingest
from jobs.popularity import run_popularity
from jobs.sessionize import run_sessionize
from jobs.sources import PRESETS

pytestmark = pytest.mark.slow


def test_rsc15_sample_through_the_jobs_training_and_scoring(spark, shared_data, tmp_path):
    path = shared_data / "rsc15_sample" / "yoochoose-clicks-100k_train_full.txt"
    lake = Lake(str(tmp_path / "lake"))
    run_ingest(spark, str(path), lake, PRESETS["rsc15"])
    days = sorted(
        p.name.split("=")[1] for p in (tmp_path / "lake" / "events").iterdir() if "=" in p.name
    )
    first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    run_sessionize(spark, lake, first, last_day=last, max_events_per_user_day=None)
    cfg = DatasetConfig(window_days=(last - first).days + 1, test_days=2)
    run_build_datasets(spark, lake, last, cfg)
    run_popularity(spark, lake, last)
    run = lake.datasets(str(last))
    model_dir = tmp_path / "model"
    fast = ["--set", "n_epochs=1", "--set", "n_sample=256", "--set", "sample_store_size=25600"]
    assert gru4rec_main(["train", "--train", f"{run}/train", "--out", str(model_dir), *fast]) == 0

    sessions_dir = f"{lake.sessions}/dt={last}"
    out = tmp_path / "recommendations"
    summary = score_day(model_dir, sessions_dir, out, str(last))
    sessions = pd.read_parquet(sessions_dir)
    recs = pd.read_parquet(out / f"dt={last}")
    n = sessions.session_id.nunique()
    assert summary["sessions"] == n and len(recs) == 20 * n
    loaded = ckpt.Checkpoint(model_dir)
    assert set(recs.item_id) <= set(loaded.item_map.ids)
    # sessions whose items the model never saw (they appear after the training split) fall back
    known = sessions.item_id.isin(set(loaded.item_map.ids))
    no_known = set(sessions.session_id) - set(sessions[known].session_id)
    assert set(recs[recs.strategy == FALLBACK].session_id) == no_known
    # spot-check three sessions against stepping the model one event at a time
    model = loaded.model("cpu")
    index = {item: i for i, item in enumerate(loaded.item_map.ids)}
    rng = np.random.default_rng(0)
    for sid in rng.choice(sorted(set(sessions.session_id) - no_known), 3, replace=False):
        seq = sessions[sessions.session_id == sid].sort_values("seq").item_id
        hidden = model.zero_hidden(1)
        for item in seq:
            if item in index:
                hidden = model.step_inference(torch.tensor([index[item]]), hidden)
        top = torch.topk(model.score_all(hidden[-1])[0], 20).indices.tolist()
        got = recs[recs.session_id == sid].sort_values("rank").item_id.tolist()
        assert got == [loaded.item_map.ids[i] for i in top]
