"""Great Expectations suites in code, one per dataset, and the store that keeps their results.

Suites (each expectation says why it exists in its `notes`, shown in Data Docs):
- `raw_events`      events/dt=D as ingested, with the day's quarantine share
- `sessions`        sessions/dt=D
- `datasets`        datasets/run=D train + test splits
- `item_index`      datasets/run=D items + popularity (the index training and scoring share)
- `recommendations` the scored table before it is published

Rules GX has no single expectation for are checked on derived columns (names start with `_`)
that the validation job computes next to the data; a failure names the expectation and column.

`QualityStore` is a file-backed GX context under `quality/dt=D/`: every validation writes its
result as JSON (`quality/dt=D/<suite>.json`) and rebuilds the day's Data Docs site
(`quality/dt=D/data_docs/index.html`). A rerun replaces the suite's previous result.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.common.errors import PipelineError
from jobs.common.localfs import write_json_atomic

log = logging.getLogger("jobs.quality")

REC_COLUMNS = (
    "session_id", "user_id", "rank", "item_id", "score", "strategy", "model_version",
    "generated_at",
)  # fmt: skip

# Strings that exporters write for a missing value; as ids they mean the id was lost upstream.
NULL_TOKENS = ["", "null", "NULL", "Null", "None", "none", "nan", "NaN", "NA", "N/A", "undefined"]


class QualityGateError(PipelineError):
    """A dataset failed its Great Expectations suite: the run stops, nothing is published."""


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the suites (DAG params / CLI flags); defaults suit clickstreams."""

    max_quarantine_share: float = 0.05
    min_events: int = 1
    min_volume_ratio: float = 0.2  # events of D vs the previous day's
    max_id_length: int = 256
    max_session_events: int = 1000
    max_long_session_share: float = 0.001  # share of sessions allowed above max_session_events
    min_multi_event_share: float = 0.05  # sessions with >= 2 events
    min_test_coverage: float = 0.25  # share of test-window events whose item train knows

    @classmethod
    def from_dict(cls, values: dict | None) -> Thresholds:
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise PipelineError(
                f"unknown quality thresholds {unknown}: expected some of {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def _suite(name: str, expectations: list):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name)
    for e in expectations:
        suite.add_expectation(e)
    return suite


def _not_null(columns, why: str) -> list:
    gxe = _gxe()
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, notes=why) for c in columns]


def _true(column: str, why: str):
    return _gxe().ExpectColumnValuesToBeInSet(column=column, value_set=[True], notes=why)


def _id_format(column: str, t: Thresholds) -> list:
    gxe = _gxe()
    return [
        gxe.ExpectColumnValueLengthsToBeBetween(
            column=column,
            min_value=1,
            max_value=t.max_id_length,
            notes="An empty or very long id means a broken column mapping (e.g. a whole "
            "record or JSON blob landing in the id column).",
        ),
        gxe.ExpectColumnValuesToNotBeInSet(
            column=column,
            value_set=NULL_TOKENS,
            notes="'null', 'None', 'nan' as text are missing ids an exporter wrote out; "
            "they would become one giant fake user or item.",
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=column,
            regex=r"[\x00-\x1f]",
            notes="Control characters (tabs, newlines) in ids come from mis-split records.",
        ),
    ]


def raw_events_suite(t: Thresholds, previous_day_events: int | None = None):
    """events/dt=D as ingest published it, plus the day's ingest counts as columns:
    `_ts_in_day` (the event's UTC date is D), `_quarantine_share` (rejected / raw rows)."""
    gxe = _gxe()
    exp = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=t.min_events,
            notes="An empty or near-empty delivery must not silently train tonight's model.",
        ),
        *_not_null(
            ["user_id", "item_id", "ts"],
            "Ingest quarantines rows without user, item or timestamp; a null here means the "
            "contract between ingest and the rest of the pipeline broke.",
        ),
        *_id_format("user_id", t),
        *_id_format("item_id", t),
        _true(
            "_ts_in_day",
            "Events are partitioned by their UTC date: an event of another day in dt=D means "
            "a time zone or unit mix-up.",
        ),
        gxe.ExpectColumnMaxToBeBetween(
            column="_quarantine_share",
            min_value=0,
            max_value=t.max_quarantine_share,
            notes="A surge of rejected rows (unparseable timestamps, missing ids) means the "
            "source format changed; training on the remainder would be silently biased. "
            "Reasons are counted in quarantine/dt=D.",
        ),
    ]
    if previous_day_events:
        exp.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=int(np.ceil(previous_day_events * t.min_volume_ratio)),
                notes=f"Volume check: at least {t.min_volume_ratio:.0%} of the previous day's "
                f"{previous_day_events} events; a truncated delivery fails here.",
            )
        )
    return _suite("raw_events", exp)


def sessions_suite(t: Thresholds):
    """sessions/dt=D with `_ts_not_before_day` and, on each session's first row only (null
    on the others, which GX skips), `_starts_on_day`, `_session_length`, `_seq_contiguous`."""
    gxe = _gxe()
    return _suite(
        "sessions",
        [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=1, notes="A day without sessions cannot be scored."
            ),
            *_not_null(
                ["session_id", "user_id", "item_id", "ts", "seq"],
                "Every session event needs its session, user, item, time and position.",
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="session_id",
                regex=r"^[0-9a-f]{24}$",
                notes="session_id is 96 bits of SHA-256 in hex: deterministic across reruns.",
            ),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["session_id", "seq"],
                notes="One event per position: duplicates would double-count transitions.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="seq", min_value=0, notes="Positions are 0-based."
            ),
            _true(
                "_starts_on_day",
                "A session belongs to the day it starts: sessions/dt=D holds sessions whose "
                "first event is on D (a session spanning midnight is not cut in two).",
            ),
            _true(
                "_ts_not_before_day",
                "No event of a dt=D session is before D: the lookback must only link, never "
                "add, earlier events.",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="_seq_contiguous",
                value_set=[True],
                notes="Positions run 0..n-1 in time order within each session.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="_session_length",
                min_value=1,
                max_value=t.max_session_events,
                mostly=1 - t.max_long_session_share,
                notes="Sessions of thousands of events are crawlers or stuck clients; a "
                "few are tolerated, many mean bot traffic reached the sessions.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="_session_length",
                min_value=2,
                mostly=t.min_multi_event_share,
                notes="Session length distribution: if (almost) every session has a single "
                "event, the user key or timestamps are wrong and there is nothing to learn.",
            ),
        ],
    )


def datasets_suite(t: Thresholds):
    """train + test of datasets/run=D (column `split`), with `_session_length` on each
    session's first row, `_item_in_train`, `_after_split` (test) / `_before_split` (train)
    and `_test_coverage` (share of the test window's events whose item train knows)."""
    gxe = _gxe()
    return _suite(
        "datasets",
        [
            *_not_null(
                ["session_id", "item_id", "ts", "seq", "split"],
                "Training and evaluation need every field of every event.",
            ),
            gxe.ExpectColumnDistinctValuesToEqualSet(
                column="split",
                value_set=["train", "test"],
                notes="Both splits must be non-empty: no model without train, no gate "
                "without test.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="_session_length",
                min_value=2,
                notes="A session of one event gives no next-item pair.",
            ),
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["split", "session_id", "seq"],
                notes="One event per position per split.",
            ),
            _true(
                "_item_in_train",
                "Item coverage: every test item is in the training index, or evaluation "
                "would rank items the model cannot know.",
            ),
            _true(
                "_split_order",
                "No leakage: train events are before the split time, test sessions start at "
                "or after it.",
            ),
            gxe.ExpectColumnMinToBeBetween(
                column="_test_coverage",
                min_value=t.min_test_coverage,
                notes="Item coverage between train and test: when most test-window events "
                "are items train never saw (catalogue churn, new id scheme), the metrics "
                "describe a sliver of traffic.",
            ),
        ],
    )


def item_index_suite(t: Thresholds, n_train_items: int):
    """items + popularity of datasets/run=D joined on item_idx, with `_support_matches`
    (support = the item's train events), `_weight_ok` (weight = support^alpha) and
    `_cdf_step` (cdf minus the previous item's)."""
    gxe = _gxe()
    return _suite(
        "item_index",
        [
            gxe.ExpectTableRowCountToEqual(
                value=n_train_items,
                notes="One index entry per distinct training item, no more, no fewer.",
            ),
            *_not_null(
                ["item_id", "item_idx", "support", "weight", "cdf"],
                "The index and sampling table have no gaps.",
            ),
            gxe.ExpectColumnValuesToBeUnique(column="item_id", notes="An item maps to one index."),
            gxe.ExpectColumnValuesToBeUnique(column="item_idx", notes="An index names one item."),
            gxe.ExpectColumnValuesToBeBetween(
                column="item_idx",
                min_value=0,
                max_value=max(n_train_items - 1, 0),
                notes="With uniqueness: item_idx is exactly 0..n-1, the model's output rows.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="support",
                min_value=1,
                notes="Every indexed item occurs in train (support is its train events).",
            ),
            _true("_support_matches", "support is the item's event count in train."),
            _true(
                "_weight_ok",
                "Negative sampling weight = support^alpha and positive.",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="_cdf_step",
                min_value=0,
                notes="The sampling CDF never decreases in item_idx order.",
            ),
            gxe.ExpectColumnMaxToBeBetween(
                column="cdf",
                min_value=1 - 1e-6,
                max_value=1 + 1e-6,
                notes="Popularity weights sum to one: the CDF ends at 1.",
            ),
        ],
    )


def recommendations_suite(k: int, n_sessions: int):
    gxe = _gxe()
    exp = [
        *_not_null(REC_COLUMNS, "Downstream systems read every field."),
        gxe.ExpectTableRowCountToEqual(
            value=n_sessions * k, notes=f"Exactly {k} recommendations per session."
        ),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="session_id",
            min_value=n_sessions,
            max_value=n_sessions,
            notes="Every session of the day is scored.",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["session_id", "rank"], notes="One item per rank per session."
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="rank", min_value=1, max_value=k, notes=f"Ranks are 1..{k}."
        ),
        _true("_session_in_day", "Only sessions of day D are scored."),
        _true("_item_in_index", "Only items of the model's index are recommended."),
        gxe.ExpectColumnValuesToBeBetween(
            column="_score_drop",
            min_value=0,
            notes="Scores do not increase with rank within a session.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="strategy",
            value_set=["gru4rec", "popularity_fallback"],
            notes="Each row says which strategy produced it.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="model_version", min_value=1, notes="Every row names its model."
        ),
    ]
    return _suite("recommendations", exp)


def describe_failures(result) -> list[str]:
    """One readable line per failed expectation: type, column and what was observed."""
    out = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = cfg.kwargs
        target = kw.get("column") or ",".join(kw.get("column_list", []) or []) or "table"
        res = r.result or {}
        observed = res.get("observed_value")
        if observed is None and "unexpected_percent" in res:
            observed = (
                f"{res.get('unexpected_count')} unexpected "
                f"({res['unexpected_percent']:.2f}%), e.g. "
                f"{(res.get('partial_unexpected_list') or [])[:3]}"
            )
        if r.exception_info and r.exception_info.get("raised_exception"):
            observed = f"error: {r.exception_info.get('exception_message')}"
        bounds = {
            k: kw[k] for k in ("min_value", "max_value", "value", "value_set", "mostly") if k in kw
        }
        out.append(f"{cfg.type}({target}) expected {bounds or 'to hold'}, found {observed}")
    return out


class QualityStore:
    """The file-backed GX context of one day: results JSON + Data Docs under `root`.

    `root` is `quality/dt=D` (a local or mounted directory).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        import great_expectations as gx

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.docs_dir = self.root / "data_docs"
        self.context = gx.get_context(mode="file", project_root_dir=str(self.root))
        _quiet(self.context)
        site = {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(self.docs_dir.resolve()),
            },
        }
        sites = self.context.list_data_docs_sites()
        if "local_site" in sites:
            self.context.update_data_docs_site("local_site", site)
        else:
            self.context.add_data_docs_site("local_site", site)

    @staticmethod
    def results_dir(quality_root: str | os.PathLike, day) -> Path:
        return Path(quality_root) / f"dt={day}"

    @property
    def docs_index(self) -> Path:
        return self.docs_dir / "index.html"

    def _batch(self, engine: str, asset_name: str):
        sources = self.context.data_sources
        if engine == "spark":
            source = sources.add_or_update_spark("spark")
        elif engine == "pandas":
            source = sources.add_or_update_pandas("pandas")
        else:
            raise ValueError(f"engine: expected 'spark' or 'pandas', found {engine!r}")
        try:
            asset = source.get_asset(asset_name)
        except LookupError:
            asset = source.add_dataframe_asset(asset_name)
        try:
            return asset.get_batch_definition("whole")
        except (LookupError, KeyError):
            return asset.add_batch_definition_whole_dataframe("whole")

    def _forget(self, suite_name: str) -> None:
        """Drop the suite's earlier results of this day, so a rerun replaces them."""
        shutil.rmtree(
            self.root / "gx" / "uncommitted" / "validations" / suite_name, ignore_errors=True
        )

    def validate(
        self, suite, frame, engine: str, name: str | None = None, extra: dict | None = None
    ) -> dict:
        """Run `suite` on `frame` (a Spark or pandas DataFrame), keep the result (with `extra`,
        e.g. the counts behind it) and rebuild the Data Docs; returns {"suite", "success",
        "failed", "statistics", ...}."""
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction

        name = name or suite.name
        if engine == "spark":
            # Materialize the derived columns once: GX computes each metric as its own Spark
            # job, which would otherwise recompute the windows and joins every time.
            # Small days spread over many shuffle partitions make every metric a job of many
            # tiny tasks: keep about two partitions per core, never more than there were.
            target = 2 * frame.sparkSession.sparkContext.defaultParallelism
            if frame.rdd.getNumPartitions() > target:
                frame = frame.coalesce(target)
            frame = frame.localCheckpoint(eager=True)
        self._forget(name)
        batch = self._batch(engine, name)
        suite = self.context.suites.add_or_update(suite)
        vd = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=["local_site"])],
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        result = next(iter(run.run_results.values()))
        summary = {
            "suite": name,
            "success": bool(result.success),
            "failed": describe_failures(result),
            "statistics": dict(result.statistics),
            "data_docs": str(self.docs_index),
            **(extra or {}),
            "result": result.to_json_dict(),
        }
        write_json_atomic(self.root / f"{name}.json", summary)
        log.info(
            "suite %s: %s (%s/%s expectations passed)",
            name,
            "passed" if summary["success"] else "FAILED",
            summary["statistics"].get("successful_expectations"),
            summary["statistics"].get("evaluated_expectations"),
        )
        return summary


def raise_if_failed(*summaries: dict) -> None:
    """The quality gate: a failed suite stops the run with every failing expectation named."""
    failed = [s for s in summaries if not s["success"]]
    if failed:
        lines = [f"suite '{s['suite']}': " + "; ".join(s["failed"]) for s in failed]
        docs = failed[0].get("data_docs", "")
        raise QualityGateError(
            "data quality gate failed: "
            + " | ".join(lines)
            + (f" (Data Docs: {docs})" if docs else "")
        )


def recommendations_frame(table: pd.DataFrame, day_sessions, item_ids: np.ndarray) -> pd.DataFrame:
    """The scored table with the derived columns of `recommendations_suite`."""
    df = table.sort_values(["session_id", "rank"], kind="stable").reset_index(drop=True)
    df["_session_in_day"] = df["session_id"].isin(pd.Index(day_sessions))
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
    chunks is checked by the streaming `gru4rec.score.validate_table` before this runs.
    With a `store`, each chunk's result goes to the day's results and Data Docs
    (`recommendations`, then `recommendations_part2`, ...).
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    day_index = pd.Index(np.asarray(day_sessions, dtype=object))
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
            res = _validate_ephemeral(lambda: recommendations_suite(k, n), frame)
        else:
            name = "recommendations" + (f"_part{len(results) + 1}" if results else "")
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
    return {"suite": "recommendations", "success": success, "failed": failed, "results": results}


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
        n_sessions = len(pd.unique(np.asarray(day_sessions, dtype=object)))
    frame = recommendations_frame(table, day_sessions, item_ids)
    return _validate_ephemeral(lambda: recommendations_suite(k, n_sessions), frame)


def _validate_ephemeral(build_suite, frame: pd.DataFrame) -> dict:
    """`build_suite()` runs after the context exists (GX needs one to build a suite)."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    _quiet(context)
    suite = build_suite()
    source = context.data_sources.add_pandas("scored")
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("day")
    suite = context.suites.add(suite)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    return {
        "suite": suite.name,
        "success": bool(result.success),
        "failed": describe_failures(result),
        "result": result.to_json_dict(),
    }


def _quiet(context) -> None:
    """No progress bars in job logs."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other GX versions
        log.debug("could not turn GX progress bars off")
