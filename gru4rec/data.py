"""Session data for training and evaluation: the official TSV format and the pipeline's Parquet.

`SessionData` holds one split as item indices in session order: sessions ordered by their first
event's time (then session id), events within a session in time order. `ItemMap` is the item
index: for the pipeline's datasets it is the `items/` table written by the Spark popularity job
(never re-indexed here); for TSV input it is built from the training split the same way
(support descending, then item id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from gru4rec.errors import NoInputError, SchemaError

log = logging.getLogger("gru4rec.data")

TSV_COLUMNS = ("SessionId", "ItemId", "Time")
PARQUET_COLUMNS = ("session_id", "item_id", "ts")


@dataclasses.dataclass(frozen=True)
class ItemMap:
    """Item ids (as strings) in index order with their training support (event counts)."""

    ids: np.ndarray  # object array of str, position = item index
    support: np.ndarray  # int64, training events per item

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.support):
            raise SchemaError(
                f"item map: {len(self.ids)} ids but {len(self.support)} support values"
            )
        if len(self.ids) == 0:
            raise NoInputError("item map is empty: no training items")
        if len(pd.unique(self.ids)) != len(self.ids):
            raise SchemaError("item map: expected unique item ids, found duplicates")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        """A digest of the ids in index order: two maps index items identically iff equal."""
        h = hashlib.sha256()
        for chunk in range(0, len(self.ids), 65536):
            h.update("\n".join(self.ids[chunk : chunk + 65536]).encode())
            h.update(b"\n")
        return h.hexdigest()[:20]

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """Index of each id, -1 where the id is not in the map."""
        index = pd.Index(self.ids)
        return index.get_indexer(pd.Index(np.asarray(item_ids, dtype=object))).astype(np.int64)

    @classmethod
    def from_train(cls, item_ids: np.ndarray) -> ItemMap:
        """Index by support descending, then item id: the rule the Spark popularity job uses."""
        counts = pd.Series(item_ids, dtype=object).value_counts(sort=False)
        frame = pd.DataFrame({"item_id": counts.index.astype(str), "support": counts.to_numpy()})
        frame = frame.sort_values(["support", "item_id"], ascending=[False, True], kind="stable")
        return cls(frame["item_id"].to_numpy(dtype=object), frame["support"].to_numpy(np.int64))

    @classmethod
    def read_parquet(cls, path: str | Path) -> ItemMap:
        """The pipeline's `items/` table: item_id, item_idx (0..n-1), support."""
        table = _read_parquet(path, ("item_id", "item_idx", "support")).to_pandas()
        table = table.sort_values("item_idx", kind="stable")
        idx = table["item_idx"].to_numpy(np.int64)
        if not np.array_equal(idx, np.arange(len(idx))):
            raise SchemaError(
                f"{path}: expected item_idx to be contiguous 0..{len(idx) - 1}, "
                f"found {len(idx)} rows ranging {idx.min()}..{idx.max()}"
            )
        return cls(
            table["item_id"].astype(str).to_numpy(dtype=object), table["support"].to_numpy(np.int64)
        )

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"item_id": self.ids, "item_idx": np.arange(len(self.ids)), "support": self.support}
        )


@dataclasses.dataclass(frozen=True)
class SessionData:
    """One split: `items[offsets[s]:offsets[s+1]]` are session s's item indices in time order."""

    items: np.ndarray  # int64 item indices
    offsets: np.ndarray  # int64, n_sessions + 1
    session_ids: np.ndarray  # object array, one per session
    dropped_unknown: int = 0  # events whose item is not in the item map
    dropped_short: int = 0  # sessions left with fewer than 2 events
    times: np.ndarray | None = None  # float64 seconds per event, where the input has times

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def n_pairs(self) -> int:
        """Training / evaluation points: every event but each session's last."""
        return self.n_events - self.n_sessions

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def is_tsv(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() in (".txt", ".tsv", ".csv")


def read_events(path: str | Path) -> pd.DataFrame:
    """Events as a frame with columns session_id (str), item_id (str), order (sortable)."""
    p = Path(path)
    if not p.exists():
        raise NoInputError(f"no input at {path}")
    if is_tsv(p):
        return _read_tsv(p)
    return _read_pipeline_parquet(p)


def _read_tsv(path: Path) -> pd.DataFrame:
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        frame = pd.read_csv(path, sep=sep, dtype={"SessionId": str, "ItemId": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: expected a {sep!r}-separated file ({exc})") from None
    missing = [c for c in TSV_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{path}: expected columns {', '.join(TSV_COLUMNS)} (official GRU4Rec format), "
            f"found {', '.join(map(str, frame.columns))}"
        )
    time = pd.to_numeric(frame["Time"], errors="coerce")
    bad = time.isna() | frame["SessionId"].isna() | frame["ItemId"].isna()
    if bad.any():
        raise SchemaError(
            f"{path}: expected numeric Time and non-empty SessionId/ItemId, found {int(bad.sum())} "
            f"bad rows (first: {frame[bad].iloc[0].to_dict()})"
        )
    return pd.DataFrame(
        {
            "session_id": frame["SessionId"],
            "item_id": frame["ItemId"],
            "time": time.to_numpy(),
            "seconds": time.to_numpy(np.float64),  # the official format's Time: seconds
        }
    )


def open_parquet(path: str | Path, columns: tuple[str, ...], hint: str = ""):
    """A pyarrow dataset over `path` that has `columns`; clear errors when it does not."""
    p = Path(path)
    if not p.exists():
        raise NoInputError(f"no Parquet data at {path}" + (f": {hint}" if hint else ""))
    try:
        dataset = pads.dataset(str(p), format="parquet", exclude_invalid_files=True)
    except Exception as exc:  # pyarrow raises several types for unreadable input
        raise SchemaError(f"{path}: expected Parquet data ({exc})") from None
    names = dataset.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(
            f"{path}: expected columns {', '.join(columns)}, found {', '.join(names)}"
        )
    return dataset


def _read_parquet(path: str | Path, columns: tuple[str, ...]):
    return open_parquet(path, columns).to_table(columns=list(columns))


def item_counts(path: str | Path) -> pd.Series:
    """Events per item id (str) of an events table, reading the item column alone."""
    if is_tsv(Path(path)):
        ids = read_events(path)["item_id"]
    else:
        ids = _read_parquet(path, ("item_id",)).column("item_id").to_pandas().astype(str)
    return ids.value_counts()


def _read_pipeline_parquet(path: Path) -> pd.DataFrame:
    """A split from `datasets/run=D/<split>`: session_id, item_id, ts, seq."""
    table = _read_parquet(path, PARQUET_COLUMNS + ("seq",))
    frame = table.to_pandas()
    ts = frame["ts"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise SchemaError(f"{path}: expected ts to be a timestamp, found {ts.dtype}")
    return pd.DataFrame(
        {
            "session_id": frame["session_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            # seq orders events within a session (ties in ts were broken by the Spark job)
            "time": ts.dt.tz_localize(None).astype("int64") if ts.dt.tz else ts.astype("int64"),
            "seq": frame["seq"].to_numpy(np.int64),
            "seconds": _seconds(ts),
        }
    )


def _seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps as float64 seconds since the epoch, whatever their unit."""
    naive = ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz else ts
    micros = naive.to_numpy().astype("datetime64[us]")  # any unit, no overflow before 294k AD
    out = micros.astype(np.int64) / 1e6
    out[np.isnat(micros)] = np.nan
    return out


def build_sessions(frame: pd.DataFrame, item_map: ItemMap, name: str = "data") -> SessionData:
    """Map items, drop unknown ones (the session closes up), drop sessions shorter than 2.

    Sessions are ordered by their first event's time, then session id; events by time (then
    `seq` where present, then input order).
    """
    if frame.empty:
        raise NoInputError(f"{name}: no events")
    idx = item_map.lookup(frame["item_id"].to_numpy(dtype=object))
    known = idx >= 0
    dropped_unknown = int((~known).sum())
    frame = frame.assign(item_idx=idx, _row=np.arange(len(frame)))[known]
    if frame.empty:
        raise NoInputError(f"{name}: none of the {len(idx)} events has an item in the item map")
    start = frame.groupby("session_id", sort=False)["time"].transform("min")
    frame = frame.assign(_start=start.to_numpy())
    within = ["time"] + (["seq"] if "seq" in frame.columns else []) + ["_row"]
    frame = frame.sort_values(["_start", "session_id", *within], kind="stable")
    sessions = frame["session_id"].to_numpy(dtype=object)
    starts = np.concatenate([[0], np.flatnonzero(sessions[1:] != sessions[:-1]) + 1])
    lengths = np.diff(np.append(starts, len(frame)))
    keep = lengths >= 2
    kept_events = np.repeat(keep, lengths)
    items = frame["item_idx"].to_numpy(np.int64)[kept_events]
    times = None
    if "seconds" in frame.columns:
        times = frame["seconds"].to_numpy(np.float64)[kept_events]
    data = SessionData(
        items=items,
        offsets=np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64),
        session_ids=sessions[starts][keep],
        dropped_unknown=dropped_unknown,
        dropped_short=int((~keep).sum()),
        times=times,
    )
    if data.n_sessions == 0:
        raise NoInputError(f"{name}: no session with at least 2 known events")
    log.info(
        "%s: %d sessions, %d events (%d events with unknown items dropped, %d short sessions "
        "dropped)",
        name,
        data.n_sessions,
        data.n_events,
        dropped_unknown,
        data.dropped_short,
    )
    return data


@dataclasses.dataclass(frozen=True)
class Splits:
    train: SessionData
    item_map: ItemMap
    test: SessionData | None = None


def items_path_for(train_path: str | Path) -> Path | None:
    """The `items/` table beside a pipeline split (`datasets/run=D/train` -> `.../items`)."""
    p = Path(train_path)
    if is_tsv(p):
        return None
    candidate = p.parent / "items"
    return candidate if candidate.exists() else None


def popularity_path_for(train_path: str | Path) -> Path | None:
    """The `popularity/` table beside a pipeline split (`run=D/train` -> `run=D/popularity`)."""
    p = Path(train_path)
    candidate = p.parent / "popularity"
    return None if is_tsv(p) or not candidate.exists() else candidate


@dataclasses.dataclass(frozen=True)
class SamplingTable:
    """Negative-sampling weights in item index order, as a popularity table published them."""

    weights: np.ndarray  # float64, one per item, > 0
    alpha: float | None  # the exponent the table was built with (None: not recorded)
    source: str
    ids: np.ndarray | None = None  # the table's own item ids, when not checked against a map

    @classmethod
    def read_parquet(cls, path: str | Path, item_map: ItemMap | None) -> SamplingTable:
        """`item_idx, item_id, weight[, alpha]`, checked to index items exactly as `item_map`
        (None: in the table's own order, with its ids kept, for a warm start to map by id)."""
        dataset = open_parquet(path, ("item_idx", "item_id", "weight"))
        columns = ["item_idx", "item_id", "weight"]
        if "alpha" in dataset.schema.names:
            columns.append("alpha")
        table = dataset.to_table(columns=columns).to_pandas().sort_values("item_idx")
        ids = table["item_id"].astype(str).to_numpy(dtype=object)
        idx = table["item_idx"].to_numpy(np.int64)
        expected = item_map.ids.astype(str) if item_map is not None else ids
        if not np.array_equal(idx, np.arange(len(expected))) or not np.array_equal(ids, expected):
            raise SchemaError(
                f"{path}: expected the sampling weights of the {len(expected)} items of the "
                f"item index, in its order; found {len(idx)} rows that index items differently"
            )
        weights = table["weight"].to_numpy(np.float64)
        if not np.all(np.isfinite(weights) & (weights > 0)):
            raise SchemaError(f"{path}: expected positive finite weights, found others")
        alphas = pd.unique(table["alpha"]) if "alpha" in table else []
        if len(alphas) > 1:
            raise SchemaError(f"{path}: expected one alpha, found {sorted(alphas)}")
        alpha = float(alphas[0]) if len(alphas) else None
        return cls(weights, alpha, str(path), ids if item_map is None else None)


def load_item_map(
    train_frame: pd.DataFrame, train_path, items_path=None, from_data: bool = False
) -> ItemMap:
    """The `items/` table (given, or beside a Parquet split); else, for TSV input or with
    `from_data` (a warm start on a day's sessions), built from the training events."""
    items_path = items_path or items_path_for(train_path)
    if items_path is not None:
        item_map = ItemMap.read_parquet(items_path)
        log.info("item index: %d items from %s", len(item_map), items_path)
        return item_map
    if not is_tsv(train_path) and not from_data:
        raise NoInputError(
            f"no items/ table beside {train_path}: run the popularity job or pass --items"
        )
    item_map = ItemMap.from_train(train_frame["item_id"].to_numpy(dtype=object))
    log.info("item index: %d items built from %s", len(item_map), train_path)
    return item_map
