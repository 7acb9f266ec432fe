"""Batch scoring: each session of a day -> its top-k next items, as a Parquet table.

For every session of `sessions/dt=D/`, the session's events are fed through the model from a
zero hidden state (items unknown to the model are skipped) and the k best next items after its
last event are written with their scores. A session without any known item gets the
popularity top-k (`strategy = 'popularity_fallback'`, score = the item's share of training
events); the others get `strategy = 'gru4rec'` with the raw model score. With
`exclude_seen`, items already in the session are ranked last (they appear only when fewer than
k other items exist). A catalogue with fewer than k items gives that many rows per session.

Output schema (sorted by session_id, then rank): session_id string, user_id string, rank int32,
item_id string, score float32, strategy string, model_version string, generated_at timestamp
(UTC, us). The day is scored in ranges of session_id of about `max_events` events (spilled to
temporary Arrow files in one pass), each range in batches on the model's device, and each batch
is appended to the Parquet file as it is computed: memory is bounded by a range, not the day.

Sessions Parquet in, recommendations Parquet out: validating and publishing the table is the
pipeline's business (`jobs/nightly/`), not the model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gru4rec.config import AUTO_DEVICE
from gru4rec.data import ItemMap, open_parquet
from gru4rec.errors import ConfigError, NoInputError, SchemaError
from gru4rec.model import GRU4RecModel
from gru4rec.outdir import RunDir

log = logging.getLogger("gru4rec.score")

SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("strategy", pa.string()),
        ("model_version", pa.string()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)
SESSION_COLUMNS = ("session_id", "user_id", "item_id", "ts", "seq")
GRU4REC = "gru4rec"
FALLBACK = "popularity_fallback"


@dataclasses.dataclass
class ScoreStats:
    sessions: int = 0
    events: int = 0
    unknown_item_events: int = 0
    fallback_sessions: int = 0
    rows: int = 0
    seconds: float = 0.0


def open_sessions(path: str | Path):
    """One day of `sessions/` as a pyarrow dataset (checked for the columns scoring reads)."""
    return open_parquet(path, SESSION_COLUMNS, "run the sessionize job for this day first")


MAX_BUCKETS = 256
SAMPLE_PER_BUCKET = 256
BATCH_ROWS = 65_536
SPILL_PREFIX = "gru4rec-score-"
STALE_SPILL_S = 3600


def read_schema(dataset) -> pa.Schema:
    """The types scoring reads every file as: ids as plain strings (dictionaries decoded,
    integers spelled out, so every reader orders them alike), `ts` as UTC microseconds (or
    int64 when the files hold integer times), `seq` as int64."""
    ts = dataset.schema.field("ts").type
    if pa.types.is_timestamp(ts):
        ts = pa.timestamp("us", tz="UTC")
    elif pa.types.is_integer(ts):
        ts = pa.int64()
    else:
        raise SchemaError(f"sessions: expected ts as a timestamp or an integer, found {ts}")
    strings = [(c, pa.string()) for c in ("session_id", "user_id", "item_id")]
    return pa.schema([*strings, ("ts", ts), ("seq", pa.int64())])


def _batches(dataset, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The day's rows as `schema`, file by file in path order, one batch at a time, with no
    read-ahead (memory: a batch). A file without a column, or with a null session_id, is an
    error naming the file."""
    for path in sorted(dataset.files):
        pf = pq.ParquetFile(path)
        missing = [c for c in schema.names if c not in pf.schema_arrow.names]
        if missing:
            raise SchemaError(f"{path}: expected columns {', '.join(schema.names)}, "
                              f"found {', '.join(pf.schema_arrow.names)}")  # fmt: skip
        for batch in pf.iter_batches(BATCH_ROWS, columns=schema.names):
            try:
                batch = pa.RecordBatch.from_arrays(
                    [batch.column(c).cast(schema.field(c).type, safe=False) for c in schema.names],
                    schema=schema,
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{path}: expected columns as {schema}, found {exc}") from None
            if batch.column(0).null_count:
                raise SchemaError(
                    f"{path}: expected a session_id on every event, found "
                    f"{batch.column(0).null_count} null"
                )
            yield batch


def bucket_bounds(dataset, max_events: int, max_buckets: int = MAX_BUCKETS) -> list[str]:
    """Session ids that split the day into ranges of about `max_events` events each.

    The bounds are quantiles of a systematic sample of the session_id column (one pass over
    that column only), so a range holds about as many events as any other; every event of a
    session falls in the same range. At most `max_buckets` ranges: beyond that the ranges are
    larger than asked (logged). Empty when the day fits in one range.
    """
    import pyarrow.compute as pc

    total = dataset.count_rows()
    if total == 0:
        raise NoInputError("no sessions for this day")
    wanted = -(-total // max_events)
    n = min(wanted, max_buckets)
    if n < wanted:
        log.warning(
            "scoring %d events in %d ranges of ~%d events (max_events %d would need %d)",
            total, n, -(-total // n), max_events, wanted,
        )  # fmt: skip
    if n <= 1:
        return []
    step = max(1, total // (n * SAMPLE_PER_BUCKET))
    picked, at = [], 0
    for batch in _batches(dataset, pa.schema([("session_id", pa.string())])):
        rows = np.arange((-at) % step, batch.num_rows, step)
        picked.append(batch.column(0).take(pa.array(rows)))
        at += batch.num_rows
    sample = pa.concat_arrays(picked)
    sample = sample.take(pc.sort_indices(sample)).to_pylist()
    bounds = {sample[len(sample) * i // n] for i in range(1, n)}
    return sorted(bounds - {sample[0]})


def _bucket_of(ids: pa.Array, bounds: list[str]) -> np.ndarray:
    """Index of each id's range: how many bounds are <= it (in code point order, which is
    UTF-8's byte order: Arrow, pandas and Python order these strings alike)."""
    import pyarrow.compute as pc

    if len(bounds) > 32:  # a binary search beats one vectorised comparison per bound
        found = np.searchsorted(
            np.array(bounds, dtype=object), ids.to_numpy(zero_copy_only=False), side="right"
        )
        return found.astype(np.int32)
    out = np.zeros(len(ids), dtype=np.int32)
    for bound in bounds:
        out += pc.greater_equal(ids, pa.scalar(bound, pa.string())).to_numpy(zero_copy_only=False)
    return out


def _spill(batches, bounds: list[str], paths: list[Path], schema: pa.Schema) -> set[int]:
    """Write each row of `batches` to its range's Arrow file; the ranges written."""
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    try:
        for batch in batches:
            bucket = _bucket_of(batch.column(0), bounds)
            counts = np.bincount(bucket, minlength=len(paths))
            ends = np.cumsum(counts)
            batch = batch.take(pa.array(np.argsort(bucket, kind="stable")))
            for i in np.flatnonzero(counts).tolist():
                if i not in writers:
                    writers[i] = pa.ipc.new_file(paths[i], schema, options=options)
                writers[i].write_batch(batch.slice(int(ends[i] - counts[i]), int(counts[i])))
    finally:
        for writer in writers.values():
            writer.close()
    return set(writers)


def _read_spilled(path: Path) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        frame = pa.ipc.open_file(source).read_all().to_pandas()
    path.unlink()
    return frame


def spill_dir(parent: str | Path | None = None) -> Path:
    """A new private directory for one run's spilled ranges under `parent` (default: the
    system's temporary directory, TMPDIR). Directories of runs whose process is gone and
    that nobody touched for an hour (a killed run) are removed on the way."""
    import tempfile

    root = Path(parent or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{SPILL_PREFIX}*"):
        try:
            pid = int(old.name[len(SPILL_PREFIX) :].split("-")[0])
            stale = time.time() - old.stat().st_mtime > STALE_SPILL_S
        except (ValueError, OSError):
            continue
        if stale and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def iter_session_chunks(
    dataset, max_events: int = 1_000_000, context=None, spill_parent: str | Path | None = None
) -> Iterator[pd.DataFrame]:
    """The day's events as DataFrames of whole sessions, ranges of session_id in order.

    One pass writes each event to its range's temporary Arrow file in a private directory
    under `spill_parent` (`spill_dir`; bounds from `bucket_bounds`); each range is then read
    back, handed out and deleted, and the directory is removed when the generator finishes or
    is closed. A day that fits in one range is read directly, with nothing spilled. Memory holds
    one range (about `max_events` events), never the whole day; the day is read twice (its
    session_id column, then every column) whatever its size. With `context` (an earlier day's
    sessions), a session that continues from it (its first position here is not 0) gets its
    earlier events prepended; the earlier day is spilled to the same ranges in one pass.
    """
    schema = read_schema(dataset)
    bounds = bucket_bounds(dataset, max_events)
    if not bounds:
        day = pa.Table.from_batches(list(_batches(dataset, schema)), schema).to_pandas()
        earlier = None
        if context is not None:  # only the continued sessions' events, read batch by batch
            import pyarrow.compute as pc

            ids = pa.array(day["session_id"].unique(), pa.string())
            kept = [b.filter(pc.is_in(b.column(0), value_set=ids))
                    for b in _batches(context, schema)]  # fmt: skip
            earlier = pa.Table.from_batches(kept, schema).to_pandas()
        yield _with_context(day, earlier)
        return
    work_dir = spill_dir(spill_parent)
    try:
        n = len(bounds) + 1
        paths = [work_dir / f"range-{i:05d}.arrow" for i in range(n)]
        written = _spill(_batches(dataset, schema), bounds, paths, schema)
        context_paths = [work_dir / f"context-{i:05d}.arrow" for i in range(n)]
        in_context = set()
        if context is not None:
            in_context = _spill(_batches(context, schema), bounds, context_paths, schema)
        for i in range(n):
            earlier = _read_spilled(context_paths[i]) if i in in_context else None
            if i in written:
                yield _with_context(_read_spilled(paths[i]), earlier)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _with_context(chunk: pd.DataFrame, earlier: pd.DataFrame | None) -> pd.DataFrame:
    """`chunk` with the events in `earlier` (an earlier day) of its sessions that continue
    from it (their first position in `chunk` is not 0)."""
    if earlier is None or earlier.empty:
        return chunk
    first_seq = chunk.groupby("session_id", sort=False)["seq"].min()
    continued = first_seq.index[first_seq.to_numpy() > 0]
    if len(continued) == 0:
        return chunk
    earlier = earlier[earlier["session_id"].isin(continued)]
    return pd.concat([earlier, chunk], ignore_index=True)


class Scorer:
    def __init__(
        self,
        model: GRU4RecModel,
        item_map: ItemMap,
        model_version: str,
        k: int = 20,
        exclude_seen: bool = False,
        batch_size: int = 2048,
    ) -> None:
        if not model_version:
            raise SchemaError("model_version: expected a non-empty string")
        for name, value in (("k", k), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, found {value}")
        self.model = model
        self.item_map = item_map
        self.model_version = model_version
        self.k = min(k, len(item_map))
        self.exclude_seen = exclude_seen
        self.batch_size = batch_size
        support = np.asarray(item_map.support, dtype=np.float64)
        order = np.argsort(-support, kind="stable")[: self.k]
        self.fallback_items = order
        self.fallback_scores = (support[order] / support.sum()).astype(np.float32)
        self.item_ids = pa.array(item_map.ids.astype(str), pa.string())

    @torch.no_grad()
    def _top_k(self, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (items, scores) after the last event of each (non-empty) sequence."""
        model, device = self.model, self.model.device
        n = len(seqs)
        lengths = np.array([len(s) for s in seqs])
        order = np.argsort(-lengths, kind="stable")  # longest first: active rows are a prefix
        max_len = int(lengths.max())
        padded = np.zeros((n, max_len), dtype=np.int64)
        for row, s in enumerate(order):
            padded[row, : lengths[s]] = seqs[s]
        sorted_len = lengths[order]
        items = torch.as_tensor(padded, device=device)
        hidden = model.zero_hidden(n)
        active = n
        for t in range(max_len):
            while active > 0 and sorted_len[active - 1] <= t:
                active -= 1
            nxt = model.step_inference(items[:active, t], [h[:active] for h in hidden])
            for layer, h in enumerate(nxt):
                hidden[layer][:active] = h
        scores = model.score_all(hidden[-1])
        if self.exclude_seen:
            seen = items.clone()
            pad = torch.arange(max_len, device=device).view(1, -1) >= torch.as_tensor(
                sorted_len, device=device
            ).view(-1, 1)
            seen[pad] = items[:, :1].expand(-1, max_len)[pad]
            scores.scatter_(1, seen, torch.finfo(scores.dtype).min)
        top_scores, top_items = torch.topk(scores, self.k, dim=1)
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        return top_items.cpu().numpy()[inverse], top_scores.cpu().numpy()[inverse]

    def batches(self, chunks, generated_at: dt.datetime) -> Iterator[pa.Table]:
        """Arrow tables of recommendations for `chunks` (a DataFrame of whole sessions, or an
        iterable of such DataFrames in session_id order)."""
        self.stats = ScoreStats()
        if isinstance(chunks, pd.DataFrame):
            chunks = [chunks]
        for chunk in chunks:
            yield from self._chunk_batches(chunk, generated_at)

    def _chunk_batches(self, sessions: pd.DataFrame, generated_at: dt.datetime):
        frame = sessions.sort_values(["session_id", "ts", "seq"], kind="stable")
        sid = frame["session_id"].astype(str).to_numpy(dtype=object)
        starts = np.flatnonzero(np.concatenate([[True], sid[1:] != sid[:-1]]))
        bounds = np.append(starts, len(sid))
        idx = self.item_map.lookup(frame["item_id"].astype(str).to_numpy(dtype=object))
        user = frame["user_id"].astype(str).to_numpy(dtype=object)
        self.stats.sessions += len(starts)
        self.stats.events += len(sid)
        self.stats.unknown_item_events += int((idx < 0).sum())
        ts = pa.scalar(generated_at, pa.timestamp("us", tz="UTC"))
        k = self.k
        for a in range(0, len(starts), self.batch_size):
            chunk = range(a, min(a + self.batch_size, len(starts)))
            seqs = [idx[bounds[s] : bounds[s + 1]] for s in chunk]
            seqs = [q[q >= 0] for q in seqs]
            has = np.array([len(q) > 0 for q in seqs])
            top_items = np.tile(self.fallback_items, (len(seqs), 1))
            top_scores = np.tile(self.fallback_scores, (len(seqs), 1))
            if has.any():
                it, sc = self._top_k([q for q, h in zip(seqs, has, strict=True) if h])
                top_items[has], top_scores[has] = it, sc
            self.stats.fallback_sessions += int((~has).sum())
            m = len(seqs)
            strategy = np.where(np.repeat(has, k), GRU4REC, FALLBACK)
            table = pa.table(
                {
                    "session_id": pa.array(np.repeat(sid[starts[chunk]], k), pa.string()),
                    "user_id": pa.array(np.repeat(user[starts[chunk]], k), pa.string()),
                    "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), m)),
                    "item_id": self.item_ids.take(pa.array(top_items.reshape(-1))),
                    "score": pa.array(top_scores.reshape(-1).astype(np.float32)),
                    "strategy": pa.array(strategy, pa.string()),
                    "model_version": pa.array([self.model_version] * (m * k), pa.string()),
                    "generated_at": pa.array([ts.value] * (m * k), pa.timestamp("us", tz="UTC")),
                },
                schema=SCHEMA,
            )
            self.stats.rows += table.num_rows
            yield table

    def write(self, sessions, path: Path, generated_at: dt.datetime) -> ScoreStats:
        """Stream every batch into one Parquet file (one row group per batch)."""
        t0 = time.perf_counter()
        with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
            for table in self.batches(sessions, generated_at):
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.stats.seconds = time.perf_counter() - t0
        return self.stats


PART = "part-00000.parquet"
SUMMARY = "_summary.json"


def model_version(loaded) -> str:
    """The checkpoint's own version, else its item fingerprint and file time."""
    default = f"{loaded.item_map.fingerprint[:8]}-{loaded.path.stat().st_mtime_ns:x}"
    return loaded.extra.get("model_version", default)


def score_sessions(
    checkpoint_path: str | Path,
    sessions_path: str | Path,
    out_dir: str | Path,
    k: int = 20,
    exclude_seen: bool = False,
    device: str = AUTO_DEVICE,
    batch_size: int = 2048,
    generated_at: dt.datetime | None = None,
    max_events: int = 1_000_000,
    context_path: str | Path | None = None,
    spill_parent: str | Path | None = None,
) -> dict:
    """Score every session under `sessions_path` into the new directory `out_dir`.

    `context_path` (optional; an earlier day's sessions): a session that continues one of
    them across midnight is scored after all its events, not only the ones of this day.

    `out_dir` gets `part-00000.parquet` (the table) and `_summary.json` (counts, k, model
    version); it is written under a staging name and renamed when complete, so it either
    holds the whole table or does not exist. Returns the summary.
    """
    from gru4rec import checkpoint as ckpt
    from gru4rec.train import resolve_device

    out_dir = Path(out_dir)
    if max_events < 1:
        raise ConfigError(f"max_events: expected an integer >= 1, found {max_events}")
    if out_dir.exists():
        raise ConfigError(f"--out: expected a new directory, found existing {out_dir}")
    loaded = ckpt.Checkpoint(checkpoint_path)
    model = loaded.model(resolve_device(device))
    version = model_version(loaded)
    dataset = open_sessions(sessions_path)
    scorer = Scorer(model, loaded.item_map, version, k, exclude_seen, batch_size)
    with RunDir(out_dir) as stage:
        context = None
        if context_path is not None and Path(context_path).exists():
            context = open_sessions(context_path)
        # a spill, if any, goes under spill_parent, never into the version being written
        chunks = iter_session_chunks(dataset, max_events, context, spill_parent)
        with contextlib.closing(chunks):
            stats = scorer.write(chunks, stage / PART, generated_at or dt.datetime.now(dt.UTC))
        summary = {
            **dataclasses.asdict(stats),
            "k": scorer.k,
            "model_version": version,
            "model": str(loaded.path),
            "sessions_path": str(sessions_path),
            "context_path": str(context_path) if context is not None else None,
            "max_events": max_events,
        }
        (stage / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("scored %s into %s: %s", sessions_path, out_dir, summary)
    return summary
