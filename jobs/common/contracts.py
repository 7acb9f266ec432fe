"""Data contracts: the columns and types of every dataset in the lake, and the suite names.

Writers select these columns in this order, readers check them, the quality suites name them.
Types are Spark SQL type names; `arrow_schema` gives the pyarrow equivalent for Python-side
readers and writers. Pure Python: importable while the DAG is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contract:
    """One dataset: its (column, Spark SQL type) pairs, in order."""

    name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.fields]

    @property
    def ddl(self) -> str:
        """`name type, ...`: a Spark schema string (for empty frames of this contract)."""
        return ", ".join(f"{name} {kind}" for name, kind in self.fields)


EVENTS = Contract(
    "events",
    (
        ("user_id", "string"),
        ("item_id", "string"),
        ("ts", "timestamp"),
        ("event_type", "string"),
        ("tiebreak", "bigint"),
    ),
)
# Strings exporters write for a missing value: as ids they mean the id was lost upstream (they
# would become one giant fake user or item). Ingest quarantines them as null ids (compared
# case-insensitively); the raw suite checks that none got through.
NULL_TOKENS = ("", "null", "NULL", "Null", "None", "none", "nan", "NaN", "NA", "N/A", "undefined")
# Control characters in an id come from mis-split records (tabs, newlines, NULs).
CONTROL_CHARS = r"[\x00-\x1f]"

QUARANTINE = Contract(
    "quarantine",
    (
        ("reason", "string"),
        ("raw", "string"),
        ("user_id", "string"),
        ("item_id", "string"),
        ("ts", "timestamp"),
    ),
)
SESSIONS = Contract(
    "sessions",
    (
        ("session_id", "string"),
        ("user_id", "string"),
        ("item_id", "string"),
        ("ts", "timestamp"),
        ("seq", "int"),
    ),
)
# train, train_tr, valid and test of datasets/run=D: the sessions' columns and each event's
# item_idx in the run's item index (items/), written in training order (session start, session
# id, seq) so a trainer reads integer arrays straight from the files (gru4rec.data)
DATASET = Contract("datasets", (*SESSIONS.fields, ("item_idx", "int")))
ITEMS = Contract("items", (("item_id", "string"), ("item_idx", "int"), ("support", "bigint")))
POPULARITY = Contract(
    "popularity",
    (
        ("item_idx", "int"),
        ("item_id", "string"),
        ("support", "bigint"),
        ("weight", "double"),
        ("cdf", "double"),
        ("alpha", "double"),
    ),
)
RECOMMENDATIONS = Contract(
    "recommendations",
    (
        ("session_id", "string"),
        ("user_id", "string"),
        ("rank", "int"),
        ("item_id", "string"),
        ("score", "float"),
        ("strategy", "string"),
        ("model_version", "string"),
        ("generated_at", "timestamp"),
    ),
)
# `strategy` values of the recommendations
STRATEGIES = ("gru4rec", "popularity_fallback")
# the model run directory's item table (written by `python -m gru4rec train`)
MODEL_ITEMS_FILE = "items.parquet"
MODEL_FILE = "model.pt"
# a scored table's files (written by `python -m gru4rec score --out DIR`)
SCORED_PART = "part-00000.parquet"
SCORED_SUMMARY = "_summary.json"

# Quality suites, one per dataset (jobs/quality/suites.py builds them)
# Sessionize's conservation account: events_in = session_events_out + the named removals.
SESSION_ACCOUNT = ("events_in", "session_events_out", "repeats_removed", "capped_events")

SUITE_RAW_EVENTS = "raw_events"
SUITE_SESSIONS = "sessions"
SUITE_DATASETS = "datasets"
SUITE_ITEM_INDEX = "item_index"
SUITE_RECOMMENDATIONS = "recommendations"
SUITES = (
    SUITE_RAW_EVENTS,
    SUITE_SESSIONS,
    SUITE_DATASETS,
    SUITE_ITEM_INDEX,
    SUITE_RECOMMENDATIONS,
)


def arrow_schema(contract: Contract):
    """The contract as a pyarrow schema (timestamps: microseconds, UTC)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int": pa.int32(),
        "bigint": pa.int64(),
        "float": pa.float32(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, types[kind]) for name, kind in contract.fields])
