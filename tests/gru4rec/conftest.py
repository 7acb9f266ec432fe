"""Small clickstreams with learnable structure, written in the formats gru4rec reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def synthetic_sessions(n_sessions=600, n_items=40, seed=0) -> pd.DataFrame:
    """Sessions that mostly walk item i -> i + 1: a model that learns anything beats POP."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 1_400_000_000.0
    for s in range(n_sessions):
        length = int(rng.integers(2, 8))
        item = int(rng.integers(0, n_items))
        for _ in range(length):
            rows.append((s, item, t))
            t += float(rng.integers(1, 60))
            item = (item + 1) % n_items if rng.random() < 0.8 else int(rng.integers(0, n_items))
        t += 10.0
    return pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])


@pytest.fixture(scope="session")
def tsv_split(tmp_path_factory):
    """(train.tsv, test.tsv) in the official format; the test split has unknown items."""
    root = tmp_path_factory.mktemp("tsv")
    frame = synthetic_sessions()
    train = frame[frame.SessionId < 500]
    test = frame[frame.SessionId >= 500].copy()
    test.loc[test.index[:3], "ItemId"] = 999  # unknown to the training set
    train.to_csv(root / "train.tsv", sep="\t", index=False)
    test.to_csv(root / "test.tsv", sep="\t", index=False)
    return root / "train.tsv", root / "test.tsv"
