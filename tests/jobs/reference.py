"""Independent pandas implementations of the jobs' rules, used as test oracles on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sessionize_pd(
    df: pd.DataFrame, gap_seconds: int = 1800, remove_repeats: bool = True
) -> pd.DataFrame:
    """df: user_id, item_id, ts_us (int64 micros)[, tiebreak] -> + session (user, start_us)."""
    keys = ["user_id", "ts_us"] + (["tiebreak"] if "tiebreak" in df else []) + ["item_id"]
    df = df.sort_values(keys, kind="mergesort").reset_index(drop=True)
    new_user = df["user_id"].ne(df["user_id"].shift())
    gap = df["ts_us"].diff()
    new = new_user | (gap > gap_seconds * 1_000_000)
    df["start_us"] = df["ts_us"].where(new).ffill().astype(np.int64)
    if remove_repeats:
        rep = (~new) & df["item_id"].eq(df["item_id"].shift())
        df = df[~rep].reset_index(drop=True)
    return df


def filter_and_split(
    sessions: pd.DataFrame, split_us: int, min_len: int = 2, min_support: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """sessions: session_id, item_id, ts_us -> (train, test) by the reference preprocessing."""
    df = sessions
    while True:
        support = df.groupby("item_id")["item_id"].transform("size")
        df2 = df[support >= min_support]
        length = df2.groupby("session_id")["session_id"].transform("size")
        df2 = df2[length >= min_len]
        if len(df2) == len(df):
            break
        df = df2
    start = df.groupby("session_id")["ts_us"].transform("min")
    train = df[df["ts_us"] < split_us]
    train = train[train.groupby("session_id")["session_id"].transform("size") >= min_len]
    test = df[start >= split_us]
    test = test[test["item_id"].isin(set(train["item_id"]))]
    test = test[test.groupby("session_id")["session_id"].transform("size") >= min_len]
    return train, test
