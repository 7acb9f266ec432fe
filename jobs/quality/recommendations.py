"""The scored recommendations' quality gate: a streaming contract check and the GX suite.

Both read the scored table (`part-00000.parquet` of a staged version) one row group at a time,
so memory is bounded by a chunk, never by the day. The model's items come from its run
directory's `items.parquet`, the day's sessions from `sessions/dt=D` (files are the contract
with the model library; nothing here imports it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.common import contracts as C
from jobs.common.errors import NoInputError, SchemaError
from jobs.quality.store import QualityGateError, QualityStore, validate_ephemeral
from jobs.quality.suites import recommendations_suite


def read_column(path: str | Path, column: str, what: str) -> np.ndarray:
    """One string column of a Parquet file or directory, as an object array."""
    import pyarrow.dataset as pads

    if not Path(path).exists():
        raise NoInputError(f"no {what} at {path}")
    table = pads.dataset(str(path), format="parquet").to_table(columns=[column])
    return table[column].to_numpy(zero_copy_only=False).astype(str).astype(object)


def string_hashes(values) -> np.ndarray:
    """64-bit hashes (pandas' SipHash) of strings, for set checks that do not hold the strings."""
    values = np.asarray(values, dtype=object)
    return pd.util.hash_array(values, categorize=False).astype(np.uint64)


class SessionSet:
    """A day's distinct session ids as sorted 64-bit hashes: 8 bytes per session, not a Python
    string, so ten million sessions take 80 MB. Membership is by hash: two of the day's ids
    sharing a hash (odds ~n^2/2^65, about 3e-6 at 10^7 sessions) shrink the count and fail the
    gate's count check (a false alarm); a wrong table passes only if a session it lacks and one
    it should not have share a hash (odds 2^-64 per such pair)."""

    def __init__(self, hashes: np.ndarray, owned: bool = False) -> None:
        """`owned`: `hashes` is a uint64 array nobody else holds, sorted in place (no copy)."""
        if not (owned and isinstance(hashes, np.ndarray) and hashes.dtype == np.uint64):
            hashes = np.array(hashes, dtype=np.uint64)
        hashes.sort()
        keep = np.ones(len(hashes), dtype=bool)
        np.not_equal(hashes[1:], hashes[:-1], out=keep[1:])
        n = int(keep.sum())
        hashes[:n] = hashes[keep]
        self.hashes = hashes[:n].copy() if n < len(hashes) // 2 else hashes[:n]

    @classmethod
    def of(cls, ids) -> SessionSet:
        return ids if isinstance(ids, SessionSet) else cls(string_hashes(ids))

    @classmethod
    def from_sessions(cls, sessions_path: str | Path, batch_rows: int = 65_536) -> SessionSet:
        """One day's session ids, read column-only, file by file in batches, with no read-ahead
        (memory: the hashes, not the day)."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        if not Path(sessions_path).exists():
            raise NoInputError(f"no sessions at {sessions_path}")
        files = sorted(pads.dataset(str(sessions_path), format="parquet").files)
        parts = []  # each batch's distinct ids, hashed: about one hash per session in all
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_rows, columns=["session_id"]):
                if batch.column(0).null_count:  # None would hash like the string "None"
                    raise SchemaError(
                        f"{path}: expected a session_id on every event, found "
                        f"{batch.column(0).null_count} null"
                    )
                ids = pc.unique(batch.column(0).cast("string")).to_numpy(zero_copy_only=False)
                parts.append(string_hashes(ids))
        hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        del parts
        found = cls(hashes, owned=True)
        if len(found) == 0:
            raise NoInputError(f"no sessions in {sessions_path}")
        return found

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, ids) -> np.ndarray:
        h = string_hashes(ids)
        at = np.minimum(np.searchsorted(self.hashes, h), max(len(self.hashes) - 1, 0))
        return (self.hashes[at] == h) if len(self.hashes) else np.zeros(len(h), bool)


def model_item_ids(model_dir: str | Path) -> np.ndarray:
    """The item ids a model can recommend (its run directory's item table)."""
    return read_column(Path(model_dir) / C.MODEL_ITEMS_FILE, "item_id", "model item table")


def check_table(path: Path, expected_sessions, item_ids, k: int) -> dict:
    """The contract, streamed: k consecutive rows per session with ranks 1..k, sessions in
    increasing session_id order (so each at most once), every session of the day
    (`expected_sessions`: ids or a SessionSet) exactly once, items of the model's index,
    non-increasing scores, no nulls. Memory: one row group, plus the day's SessionSet.

    Returns counts; raises QualityGateError naming the first rule broken.
    """
    import pyarrow.parquet as pq

    def broken(what: str) -> QualityGateError:
        return QualityGateError(f"recommendations contract: {what}")

    item_ids = set(item_ids)
    day = SessionSet.of(expected_sessions)
    pf = pq.ParquetFile(path)
    rows = sessions = 0
    last = None
    for g in range(pf.num_row_groups):
        t = pf.read_row_group(g).to_pandas()
        rows += len(t)
        nulls = [c for c in t.columns if t[c].isna().any()]
        if nulls:
            raise broken(f"expected no nulls, found nulls in {', '.join(nulls)}")
        if (t["model_version"].str.len() == 0).any():
            raise broken("expected model_version to be set, found empty values")
        if len(t) % k:
            raise broken(f"expected {k} rows per session, found {len(t)} rows in a batch")
        sess = t["session_id"].to_numpy().reshape(-1, k)
        if (sess != sess[:, :1]).any():
            raise broken(f"expected exactly {k} consecutive rows per session")
        if (t["rank"].to_numpy().reshape(-1, k) != np.arange(1, k + 1)).any():
            raise broken(f"expected ranks 1..{k} once per session")
        if (np.diff(t["score"].to_numpy().reshape(-1, k), axis=1) > 0).any():
            raise broken("expected scores non-increasing with rank")
        unknown = set(t["item_id"].unique()) - item_ids
        if unknown:
            raise broken(
                f"expected items of the model's index, found {len(unknown)} others "
                f"(e.g. {sorted(unknown)[:3]})"
            )
        firsts = sess[:, 0]
        if len(firsts) and (
            (last is not None and not firsts[0] > last) or not (firsts[1:] > firsts[:-1]).all()
        ):
            raise broken(
                "expected each session once, in increasing session_id order, found a session "
                "out of order or in several places"
            )
        outside = ~day.contains(firsts)
        if outside.any():
            raise broken(
                f"expected only sessions of the day, found {int(outside.sum())} others "
                f"(e.g. {sorted(firsts[outside])[:3]})"
            )
        sessions += len(firsts)
        last = firsts[-1] if len(firsts) else last
    if sessions != len(day):
        raise broken(f"expected every session of the day ({len(day)}), found {sessions} scored")
    return {"rows": rows, "sessions": sessions, "k": k}


def validate_scored(
    scored_dir: str | Path,
    model_dir: str | Path,
    sessions_path: str | Path,
    store: QualityStore | None = None,
) -> dict:
    """The gate on a scored table: the contract check, then the GX suite (results in `store`
    when given). Returns {"counts", "results"}; raises QualityGateError on any failure."""
    scored_dir = Path(scored_dir)
    summary_path = scored_dir / C.SCORED_SUMMARY
    if not summary_path.exists():
        raise NoInputError(f"{scored_dir} is not a scored table: expected {summary_path}")
    k = int(json.loads(summary_path.read_text())["k"])
    item_ids, day_ids = model_item_ids(model_dir), SessionSet.from_sessions(sessions_path)
    counts = check_table(scored_dir / C.SCORED_PART, day_ids, item_ids, k)
    gx = validate_recommendations_file(
        scored_dir / C.SCORED_PART, day_ids, item_ids, k, store=store
    )
    if not gx["success"]:
        raise QualityGateError(f"Great Expectations suite 'recommendations' failed: {gx['failed']}")
    return {"counts": counts, "results": gx["results"]}


def recommendations_frame(table: pd.DataFrame, day_sessions, item_ids: np.ndarray) -> pd.DataFrame:
    """The scored table with the derived columns of `recommendations_suite` (`day_sessions`:
    ids or a SessionSet)."""
    df = table.sort_values(["session_id", "rank"], kind="stable").reset_index(drop=True)
    df["_session_in_day"] = SessionSet.of(day_sessions).contains(df["session_id"].to_numpy())
    df["_item_in_index"] = df["item_id"].isin(pd.Index(item_ids))
    nxt = df.groupby("session_id", sort=False)["score"].shift(-1)
    df["_score_drop"] = (df["score"] - nxt).fillna(0.0).astype("float64")
    return df


def validate_recommendations_file(
    path,
    day_sessions: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    chunk_rows: int = 1_000_000,
    store: QualityStore | None = None,
) -> dict:
    """Run the suite over a scored Parquet file in chunks of whole row groups (a session never
    spans row groups), so memory is bounded by `chunk_rows`, not by the day. Table-level
    counts are per chunk here; that every session of the day appears exactly once across
    chunks is checked by the streaming `check_table` before this runs.
    With a `store`, each chunk's result goes to the day's results and Data Docs
    (`recommendations`, then `recommendations_part2`, ...).
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    day_index = SessionSet.of(day_sessions)
    results, failed, success = [], [], True
    pending: list[pd.DataFrame] = []
    rows = 0

    def flush() -> None:
        nonlocal success, rows
        chunk = pd.concat(pending, ignore_index=True)
        pending.clear()
        rows = 0
        n = len(chunk["session_id"].unique())
        frame = recommendations_frame(chunk, day_index, item_ids)
        if store is None:
            res = validate_ephemeral(lambda: recommendations_suite(k, n), frame)
        else:
            name = C.SUITE_RECOMMENDATIONS + (f"_part{len(results) + 1}" if results else "")
            res = store.validate(recommendations_suite(k, n), frame, "pandas", name=name)
        success = success and res["success"]
        failed.extend(f for f in res["failed"] if f not in failed)
        results.append(res["result"])

    for g in range(pf.num_row_groups):
        frame = pf.read_row_group(g).to_pandas()
        pending.append(frame)
        rows += len(frame)
        if rows >= chunk_rows:
            flush()
    if pending:
        flush()
    return {
        "suite": C.SUITE_RECOMMENDATIONS,
        "success": success,
        "failed": failed,
        "results": results,
    }


def validate_recommendations(
    table: pd.DataFrame,
    day_sessions: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    n_sessions: int | None = None,
) -> dict:
    """Run the suite on one table in an ephemeral context; returns {"success", "failed": [...],
    "result": GX JSON}. `n_sessions`: sessions the table must hold (default: all of
    `day_sessions`)."""
    if n_sessions is None:
        n_sessions = len(SessionSet.of(day_sessions))
    frame = recommendations_frame(table, day_sessions, item_ids)
    return validate_ephemeral(lambda: recommendations_suite(k, n_sessions), frame)
