"""Great Expectations suites in code, one per dataset; shared by the jobs and the DAG.

`recommendations_suite(k)` is the contract of `recommendations/dt=D/`; `validate_recommendations`
runs it on a scored table (pandas, ephemeral GX context) and returns the GX result as JSON.
Rules GX has no single expectation for are checked on derived columns computed here from the
table and the day's inputs: `_session_in_day`, `_item_in_index`, `_score_drop` (score minus
the next rank's score within the session).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger("jobs.quality")

REC_COLUMNS = (
    "session_id", "user_id", "rank", "item_id", "score", "strategy", "model_version",
    "generated_at",
)  # fmt: skip


def recommendations_suite(k: int, n_sessions: int):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="recommendations")
    for col in REC_COLUMNS:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(gxe.ExpectTableRowCountToEqual(value=n_sessions * k))
    suite.add_expectation(
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="session_id", min_value=n_sessions, max_value=n_sessions
        )
    )
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=["session_id", "rank"]))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="rank", min_value=1, max_value=k)
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column="_session_in_day", value_set=[True])
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column="_item_in_index", value_set=[True])
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="_score_drop", min_value=0))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(
            column="strategy", value_set=["gru4rec", "popularity_fallback"]
        )
    )
    suite.add_expectation(
        gxe.ExpectColumnValueLengthsToBeBetween(column="model_version", min_value=1)
    )
    return suite


def validate_recommendations_file(
    path, day_sessions: np.ndarray, item_ids: np.ndarray, k: int, chunk_rows: int = 1_000_000
) -> dict:
    """Run the suite over a scored Parquet file in chunks of whole row groups (a session never
    spans row groups), so memory is bounded by `chunk_rows`, not by the day. Table-level
    counts are per chunk here; that every session of the day appears exactly once across
    chunks is checked by the streaming `gru4rec.score.validate_table` before this runs.
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
        sessions = chunk["session_id"].unique()
        res = validate_recommendations(chunk, day_index, item_ids, k, n_sessions=len(sessions))
        # sessions of this chunk must all belong to the day: checked by _session_in_day
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
    return {"success": success, "failed": failed, "results": results}


def validate_recommendations(
    table: pd.DataFrame,
    day_sessions: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    n_sessions: int | None = None,
) -> dict:
    """Run the suite on one table; returns {"success", "failed": [...], "result": GX JSON}.

    `n_sessions`: sessions the table must hold (default: all of `day_sessions`).
    """
    import great_expectations as gx

    df = table.sort_values(["session_id", "rank"], kind="stable").reset_index(drop=True)
    df["_session_in_day"] = df["session_id"].isin(pd.Index(day_sessions))
    df["_item_in_index"] = df["item_id"].isin(pd.Index(item_ids))
    nxt = df.groupby("session_id", sort=False)["score"].shift(-1)
    df["_score_drop"] = (df["score"] - nxt).fillna(0.0).astype("float64")
    if n_sessions is None:
        n_sessions = len(pd.unique(np.asarray(day_sessions, dtype=object)))
    context = gx.get_context(mode="ephemeral")
    _quiet(context)
    source = context.data_sources.add_pandas("scored")
    asset = source.add_dataframe_asset("recommendations")
    batch = asset.add_batch_definition_whole_dataframe("day")
    suite = context.suites.add(recommendations_suite(k, n_sessions))
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name="recommendations", data=batch, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    failed = [
        f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')})"
        for r in result.results
        if not r.success
    ]
    return {"success": bool(result.success), "failed": failed, "result": result.to_json_dict()}


def _quiet(context) -> None:
    """No progress bars in job logs."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other GX versions
        log.debug("could not turn GX progress bars off")
