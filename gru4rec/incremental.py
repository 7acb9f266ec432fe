"""Incremental training: warm-start from a trained model on the events it has not seen.

A warm start continues the checkpoint's weights and optimizer state (Adagrad accumulators and
momentum) with the same configuration; only `n_epochs` and `device` may differ (the CLI's
`--warm-epochs` is the number of epochs on the new events). The item index is append-only
across warm starts: the checkpoint's items keep their rows, in their order, and the new items
of the events trained tonight are appended (those the window's item index lists or with
`min_new_support` events, see `trainable`; nothing grows when nothing is trained), their rows
initialised as a fresh model initialises rows (Glorot-uniform at the grown index's size) with
two exceptions that keep an untrained row from outranking trained ones: the output bias
starts at the known items' median (a fresh model's 0 is above nearly every trained item's),
and the row is drawn as a negative by its own support^alpha (not the table's smallest
weight). Their optimizer state starts at zero. The growth itself changes no existing row.

Every checkpoint records the range of event times it has been trained on (`data_range`, epoch
seconds). A warm start trains on the sessions that end after that range (a session that
straddles the boundary is trained on whole; with no such session it trains 0 epochs: the same
weights, re-evaluated) and records the union of the ranges. It also records its lineage: the
full training it descends from, how many warm starts followed and the epochs it chose.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd
import torch

from gru4rec.checkpoint import Checkpoint, CheckpointError
from gru4rec.config import Config
from gru4rec.data import ItemMap
from gru4rec.errors import NoInputError
from gru4rec.model import GRU4RecModel, glorot_
from gru4rec.optim import AdagradM

log = logging.getLogger("gru4rec.incremental")

# Settings a warm start may change: how long it trains and where.
MAY_DIFFER = ("n_epochs", "device")


def check_compatible(checkpoint: Checkpoint, cfg: Config) -> None:
    """Refuse a warm start whose configuration differs from the checkpoint's."""
    old, new = checkpoint.config.to_dict(), cfg.to_dict()
    diff = [k for k in old if k not in MAY_DIFFER and old[k] != new.get(k)]
    if diff:
        found = ", ".join(f"{k}: checkpoint {old[k]!r}, tonight {new.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{checkpoint.path}: cannot warm-start from a model trained with another "
            f"configuration (only {', '.join(MAY_DIFFER)} may differ); expected the "
            f"checkpoint's settings, found {found}. Train a full model instead."
        )


def grow_item_map(old: ItemMap, tonight: ItemMap) -> tuple[ItemMap, int]:
    """The checkpoint's items in their order, then tonight's new items in tonight's order;
    support is tonight's (`tonight`: the items of the events trained tonight; 0 for items
    they lack): how often an item comes up as an in-batch target tonight, what the logQ
    correction needs. Returns (map, n_new)."""
    position = tonight.lookup(old.ids)
    support = np.where(position >= 0, tonight.support[np.maximum(position, 0)], 0)
    is_new = old.lookup(tonight.ids) < 0
    ids = np.concatenate([old.ids, tonight.ids[is_new]]).astype(object)
    support = np.concatenate([support, tonight.support[is_new]]).astype(np.int64)
    return ItemMap(ids, support), int(is_new.sum())


def lineage_support(old: ItemMap, grown: ItemMap) -> ItemMap:
    """The grown index with the support of everything its lineage trained on: the old
    checkpoint's support (its first rows, in order) plus tonight's (`grown.support`)."""
    support = np.asarray(grown.support, dtype=np.int64).copy()
    support[: len(old)] += np.asarray(old.support, dtype=np.int64)
    return ItemMap(grown.ids, support)


def grown_weights(weights: np.ndarray, table: ItemMap, grown: ItemMap, alpha: float) -> np.ndarray:
    """Sampling weights (in `table`'s order) in the grown index's order. An item the table
    lacks (first seen after it was built) gets support^alpha, the weight the popularity job
    gives an item of that support: a new item is drawn as a negative as often as a known one
    of its popularity (with the table's smallest weight instead, new items were almost never
    pushed down and rose above every trained item)."""
    weights = np.asarray(weights, dtype=np.float64)
    position = table.lookup(grown.ids)
    own = np.power(np.maximum(grown.support, 1).astype(np.float64), alpha)
    return np.where(position >= 0, weights[np.maximum(position, 0)], own)


def trainable(
    frame: pd.DataFrame,
    qualified: ItemMap | None,
    known: ItemMap,
    min_new_support: int,
    window_counts: pd.Series | None = None,
) -> tuple[pd.DataFrame, ItemMap | None, dict]:
    """The unseen events a warm start trains on, and the index of their items (support: their
    event count; None when nothing is left). An item the checkpoint does not know gets a row
    when it is in `qualified` (the window's item index, whose items already passed the
    datasets' support filter over the window: the items a full training would know) or has
    at least `min_new_support` events: in `window_counts` (events per item id over the window
    the datasets job would filter, tonight included) when given, else among the events
    trained tonight. The events of other new items are dropped, and so are sessions left with
    fewer than 2 events (training cannot use them), until both rules hold together, so every
    new row is trained. Each drop is counted by its reason."""
    items = frame["item_id"].astype(str).to_numpy(dtype=object)
    sessions = frame["session_id"].to_numpy(dtype=object)
    is_known = known.lookup(items) >= 0
    listed = qualified.lookup(items) >= 0 if qualified is not None else np.zeros(len(items), bool)
    counted = ~is_known & ~listed  # new items that must earn their row tonight
    per_event = pd.Series(items, dtype=object)
    # the window's counts do not change as events drop; tonight's do, so they are recounted
    fixed = None if window_counts is None else per_event.map(window_counts).fillna(0).to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    rare = np.zeros(len(frame), dtype=bool)
    short = np.zeros(len(frame), dtype=bool)
    while True:
        support = fixed
        if support is None:
            new_count = pd.Series(items[keep & counted], dtype=object).value_counts()
            support = per_event.map(new_count).fillna(0).to_numpy()
        too_rare = keep & counted & (support < min_new_support)
        left = keep & ~too_rare
        length = pd.Series(left, dtype=np.int64).groupby(sessions, sort=False).transform("sum")
        too_short = left & (length.to_numpy() < 2)
        if not (too_rare.any() or too_short.any()):
            break
        rare |= too_rare
        short |= too_short
        keep &= ~(too_rare | too_short)
    record = {
        "min_new_item_support": int(min_new_support),
        "new_item_support_counted_in": "window" if window_counts is not None else "tonight",
        "new_items_too_rare": int(len(set(items[rare]))),
        "events_of_rare_new_items_dropped": int(rare.sum()),
        "events_of_short_sessions_dropped": int(short.sum()),
    }
    if rare.any() or short.any():
        log.info("warm start: %s", record)
    kept = frame[keep]
    if kept.empty:
        return kept, None, record
    return kept, ItemMap.from_train(items[keep]), record


def grow_model(model: GRU4RecModel, n_items: int, seed: int) -> GRU4RecModel:
    """A model over `n_items` >= model.n_items items: the old rows and dense weights copied
    unchanged, the new rows drawn as a fresh model of `n_items` items draws its rows. The one
    exception is the output bias: a fresh model starts every item's at 0 together, but beside
    trained items (whose biases training pushes down: a mean of -1.3 on the Taobao backtest's
    model) 0 would rank a new item above all of them before it has been trained; a new row's
    bias starts at the known items' median instead."""
    n_old = model.n_items
    if n_items < n_old:
        raise ValueError(f"the item index only grows: {n_old} -> {n_items}")
    grown = GRU4RecModel(model.cfg, n_items, model.device)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + n_old)  # deterministic per growth
    with torch.no_grad():
        grown.dense.copy_(model.dense)
        out_dim = model.layers[-1]
        for name, table in grown.sparse.items():
            table[:n_old] = model.sparse[name]
            fresh = torch.zeros(n_items - n_old, table.shape[1])
            if name == "Wx0":
                h = model.layers[0]
                for b in range(3):
                    glorot_(fresh[:, b * h : (b + 1) * h], n_items, h, gen)
            elif name == "By":
                if n_old:
                    fresh[:] = model.sparse[name].median().item()
            else:
                glorot_(fresh, n_items, out_dim if name == "Wy" else table.shape[1], gen)
            table[n_old:] = fresh.to(table.device)
    return grown


def grow_optimizer(opt: AdagradM, n_old: int, n_items: int) -> AdagradM:
    """Zero accumulators and momentum for the new rows of every item-indexed table."""
    for name, (acc, vel) in list(opt.state.items()):
        if acc.dim() == 2 and acc.shape[0] == n_old:
            pad = torch.zeros(n_items - n_old, acc.shape[1], dtype=acc.dtype, device=acc.device)
            acc = torch.cat([acc, pad])
            vel = torch.cat([vel, pad.clone()]) if vel is not None else None
            opt.state[name] = (acc, vel)
    return opt


def data_range(frame: pd.DataFrame) -> dict | None:
    """The event times of a training frame (epoch seconds), where it has them."""
    if "seconds" not in frame.columns or frame.empty:
        return None
    seconds = frame["seconds"].to_numpy(np.float64)
    if np.isnan(seconds).all():
        return None
    return {"first": float(np.nanmin(seconds)), "last": float(np.nanmax(seconds))}


def merge_ranges(seen: dict | None, new: dict | None) -> dict | None:
    if seen is None or new is None:
        return new or seen
    return {"first": min(seen["first"], new["first"]), "last": max(seen["last"], new["last"])}


def unseen_sessions(frame: pd.DataFrame, seen: dict | None, source: str) -> pd.DataFrame:
    """The sessions of `frame` that end after the range the checkpoint has seen."""
    if seen is None:
        raise CheckpointError(
            f"{source}: the checkpoint records no data range, so the events it has not seen "
            f"cannot be told apart; train a full model"
        )
    if "seconds" not in frame.columns:
        raise NoInputError("the training data has no event times: cannot train incrementally")
    last = frame.groupby("session_id", sort=False)["seconds"].transform("max")
    out = frame[last.to_numpy() > seen["last"]]
    if out.empty:
        log.info(
            "no session ends after %s, the last event the warm-start model has seen",
            _iso(seen["last"]),
        )
    return out


def _iso(seconds: float) -> str:
    import datetime as dt

    if not math.isfinite(seconds):
        return str(seconds)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a warm start trains with: the grown model, optimizer and item index."""

    model: GRU4RecModel
    optimizer: AdagradM
    item_map: ItemMap
    epochs_done: int
    new_items: int
    seen: dict | None
    lineage: dict


def warm_start(
    checkpoint: Checkpoint, cfg: Config, tonight: ItemMap | None, device: torch.device
) -> WarmStart:
    """The checkpoint's model and optimizer, grown to tonight's new items (`tonight`: the
    items of the events trained tonight; None: nothing is trained, nothing grows)."""
    check_compatible(checkpoint, cfg)
    if tonight is None:  # no support tonight
        old = checkpoint.item_map
        grown_map, n_new = ItemMap(old.ids, np.zeros(len(old), dtype=np.int64)), 0
    else:
        grown_map, n_new = grow_item_map(checkpoint.item_map, tonight)
    model = checkpoint.model(device, cfg)
    opt = checkpoint.optimizer(cfg, device)
    n_old = len(checkpoint.item_map)
    if n_new:
        model = grow_model(model, len(grown_map), cfg.seed)
        opt = grow_optimizer(opt, n_old, len(grown_map))
    lineage = dict(checkpoint.extra.get("lineage") or {"full": str(checkpoint.path)})
    lineage["warm_starts"] = int(lineage.get("warm_starts", 0)) + 1
    lineage["from"] = str(checkpoint.path)
    log.info(
        "warm start from %s (after epoch %d): %d known items, %d new",
        checkpoint.path, checkpoint.epochs_done, n_old, n_new,
    )  # fmt: skip
    return WarmStart(
        model, opt, grown_map, checkpoint.epochs_done, n_new,
        checkpoint.extra.get("data_range"), lineage,
    )  # fmt: skip
