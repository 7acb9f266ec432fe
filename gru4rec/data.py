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
import pyarrow as pa
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

    items: np.ndarray  # item indices: int64, or int32 when read compactly (read_compact)
    offsets: np.ndarray  # int64, n_sessions + 1
    session_ids: np.ndarray | None  # object array, one per session (None: read compactly)
    dropped_unknown: int = 0  # events whose item is not in the item map
    dropped_short: int = 0  # sessions left with fewer than 2 events
    times: np.ndarray | None = None  # float64 seconds per event, where the input has times
    # (first, last) event time in seconds of everything read, dropped events included
    seconds_range: tuple[float, float] | None = None

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
    """A split from `datasets/run=D/<split>` through a frame: session_id, item_id, ts, seq
    (`read_compact` reads one written in training order without a frame)."""
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


COMPACT_COLUMNS = ("session_id", "item_idx", "ts", "seq")


def read_compact(
    path: str | Path, item_map: ItemMap, name: str = "data", times: bool = False
) -> SessionData | None:
    """A pipeline split as integer arrays, straight from its Parquet files: item_idx (4 bytes
    an event) and session offsets (8 bytes a session), with no Python object per event, so a
    window of 10^8 events loads in a few hundred MB. `times`: also each event's time in
    seconds (8 bytes an event), for the baselines that weigh recency.

    The split must carry item_idx in `item_map`'s index (the `items/` table beside it), every
    event's, and be written in training order (jobs.build_datasets): sessions by first event
    time, then id, each session's events together; events by seq; files by name. All of it is
    checked as the files are read (a session id seen in two places is caught by a 64-bit hash
    of each session's id). Returns None, with a log line, where the split does not qualify
    (written before datasets carried item_idx, another index, another order or types): the
    caller then reads it with `build_sessions`, whose result this one equals.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    p = Path(path)
    dataset = open_parquet(p, ("session_id", "item_id", "ts", "seq"))
    why = None
    if "item_idx" not in dataset.schema.names:
        why = "it has no item_idx column (written before datasets carried it)"
    else:
        items_path = items_path_for(p)
        if items_path is None or ItemMap.read_parquet(items_path).fingerprint != (
            item_map.fingerprint
        ):
            why = "its item_idx is not the index in use (no items/ beside it, or another one)"
    if why is not None:
        log.info("%s: read with the general loader: %s", name, why)
        return None
    n = dataset.count_rows()
    if n == 0:
        raise NoInputError(f"{name}: no events in {path}")
    items = np.empty(n, dtype=np.int32)
    seconds = np.empty(n, dtype=np.float64) if times else None
    # Session starts and id hashes, at most one per event: reserved, not touched, so only
    # what is written takes memory (and no per-batch pieces fragment the heap).
    starts = np.empty(n + 1, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    at = runs = 0
    last_id = last_start = last_ts = last_seq = None  # the session open at a batch's end
    lo_ts = hi_ts = None
    for file in sorted(dataset.files):
        parquet = pq.ParquetFile(file)
        types = {f.name: f.type for f in parquet.schema_arrow}
        why = _compact_types(types)
        if why is not None:
            return _not_compact(name, f"{Path(file).name}: {why}")
        for batch in parquet.iter_batches(batch_size=1 << 20, columns=list(COMPACT_COLUMNS)):
            m = batch.num_rows
            if m == 0:
                continue
            if at + m > n:
                raise SchemaError(f"{path}: expected {n} rows from its metadata, found more")
            sid = batch.column("session_id")
            if pa.types.is_dictionary(sid.type):
                sid = sid.dictionary_decode()
            idx = batch.column("item_idx")
            try:  # nanoseconds are taken only where they are whole microseconds
                ts = pc.cast(batch.column("ts"), pa.timestamp("us")).cast(pa.int64())
            except pa.ArrowInvalid:
                return _not_compact(name, "ts has sub-microsecond values")
            seq = batch.column("seq")
            if sid.null_count or ts.null_count or seq.null_count or idx.null_count:
                return _not_compact(name, "a session_id, ts, seq or item_idx is null")
            ts_np = ts.to_numpy()
            seq_np = seq.to_numpy().astype(np.int64)
            new = np.empty(m, dtype=bool)
            new[1:] = pc.not_equal(sid.slice(1), sid.slice(0, m - 1)).to_numpy(zero_copy_only=False)
            new[0] = last_id is None or sid[0].as_py() != last_id
            # within a session: seq rises, time never falls
            same = ~new
            prev_ts = np.concatenate([[last_ts if last_ts is not None else 0], ts_np[:-1]])
            prev_seq = np.concatenate([[last_seq if last_seq is not None else 0], seq_np[:-1]])
            if np.any(same & ((seq_np <= prev_seq) | (ts_np < prev_ts))):
                return _not_compact(name, "events of a session are not in seq order")
            # sessions by (start, id): each new session after the one before it
            first = np.flatnonzero(new)
            if len(first):
                start_ts, ids, k = ts_np[first], sid.take(pa.array(first)), len(first)
                later = start_ts[1:] > start_ts[:-1]
                tied = start_ts[1:] == start_ts[:-1]
                after = pc.greater(ids.slice(1), ids.slice(0, k - 1))
                in_order = np.all(later | (tied & after.to_numpy(zero_copy_only=False)))
                if last_id is not None:
                    head = (int(start_ts[0]), ids[0].as_py())
                    in_order = in_order and head > (last_start, last_id)
                if not in_order:
                    return _not_compact(name, "sessions are not ordered by start time, then id")
                last_start = int(start_ts[-1])
                starts[runs : runs + k] = first + at
                hashes[runs : runs + k] = _string_hashes(ids)
                runs += k
            last_id, last_ts, last_seq = sid[m - 1].as_py(), int(ts_np[-1]), int(seq_np[-1])
            lo_ts = int(ts_np.min()) if lo_ts is None else min(lo_ts, int(ts_np.min()))
            hi_ts = int(ts_np.max()) if hi_ts is None else max(hi_ts, int(ts_np.max()))
            batch_items = idx.to_numpy()
            if batch_items.max() >= len(item_map) or batch_items.min() < 0:
                raise SchemaError(
                    f"{path}: expected item_idx in 0..{len(item_map) - 1} (the items/ table), "
                    f"found values {batch_items.min()}..{batch_items.max()}"
                )
            items[at : at + m] = batch_items
            if seconds is not None:
                seconds[at : at + m] = ts_np / 1e6
            at += m
    if at != n:
        raise SchemaError(f"{path}: expected {n} rows from its metadata, read {at}")
    run_hashes = hashes[:runs]
    run_hashes.sort()
    if np.any(run_hashes[1:] == run_hashes[:-1]):  # an id in two places (or a rare collision)
        return _not_compact(name, "a session's events are not all together")
    del run_hashes, hashes
    starts[runs] = n
    starts.resize(runs + 1, refcheck=False)  # in place (the unused reserve is given back)
    offsets = starts
    lengths = np.diff(offsets)
    short = lengths < 2
    if short.any():
        keep = np.repeat(~short, lengths)
        items = items[keep]
        seconds = seconds[keep] if seconds is not None else None
        offsets = np.concatenate([[0], np.cumsum(lengths[~short])]).astype(np.int64)
    data = SessionData(
        items=items,
        offsets=offsets,
        session_ids=None,
        dropped_short=int(short.sum()),
        times=seconds,
        seconds_range=(lo_ts / 1e6, hi_ts / 1e6),
    )
    if data.n_sessions == 0:
        raise NoInputError(f"{name}: no session with at least 2 known events")
    log.info(
        "%s: %d sessions, %d events read as integer arrays (%d short sessions dropped)",
        name, data.n_sessions, data.n_events, data.dropped_short,
    )  # fmt: skip
    return data


def _compact_types(types: dict) -> str | None:
    """Why a file's column types are not those read_compact reads exactly (None: they are)."""
    missing = [c for c in COMPACT_COLUMNS if c not in types]
    if missing:
        return f"no {', '.join(missing)} column"
    sid = types["session_id"]
    sid = sid.value_type if pa.types.is_dictionary(sid) else sid
    if not (pa.types.is_string(sid) or pa.types.is_large_string(sid)):
        return f"session_id is {sid}, not a string"
    ts = types["ts"]
    if not pa.types.is_timestamp(ts):
        return f"ts is {ts}, not a timestamp"
    if not all(pa.types.is_integer(types[c]) for c in ("seq", "item_idx")):
        return f"seq is {types['seq']} and item_idx {types['item_idx']}: expected integers"
    return None


def _string_hashes(strings: pa.Array) -> np.ndarray:
    """A 64-bit polynomial hash of each string (arithmetic mod 2^64), with no Python object
    per string: the bytes and offsets of the Arrow array, in numpy."""
    strings = strings.cast(pa.large_binary())
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)
    offsets = offsets[strings.offset : strings.offset + len(strings) + 1]
    buffer = strings.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    position = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    longest = int(lengths.max()) if len(lengths) else 0
    powers = np.cumprod(np.full(max(longest, 1), 1_099_511_628_211, dtype=np.uint64))
    with np.errstate(over="ignore"):
        terms = (data.astype(np.uint64) + np.uint64(1)) * powers[position]
        sums = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(terms, dtype=np.uint64)])
        hashed = sums[offsets[1:]] - sums[offsets[:-1]]
        return hashed * np.uint64(0x9E3779B97F4A7C15) + lengths.astype(np.uint64)


def _not_compact(name: str, why: str) -> None:
    log.warning("%s: not in training order (%s): read with the general loader", name, why)
    return None


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
