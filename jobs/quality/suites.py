"""Great Expectations suites in code, one per dataset (each expectation says why it exists in
its `notes`, shown in Data Docs).

- `raw_events`      events/dt=D as ingested, with the day's quarantine share
- `sessions`        sessions/dt=D
- `datasets`        datasets/run=D train + test splits
- `item_index`      datasets/run=D items + popularity (the index training and scoring share)
- `recommendations` the scored table before it is published

Rules GX has no single expectation for are checked on derived columns (names start with `_`)
computed next to the data (`spark_frames` for the Spark datasets, `recommendations` for the
scored table); a failure names the expectation and column.
"""

from __future__ import annotations

import numpy as np

from jobs.common import contracts as C
from jobs.common.settings import QualityThresholds

NULL_TOKENS = list(C.NULL_TOKENS)


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


def _id_format(column: str, t: QualityThresholds) -> list:
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
            regex=C.CONTROL_CHARS,
            notes="Control characters (tabs, newlines) in ids come from mis-split records.",
        ),
    ]


def raw_events_suite(t: QualityThresholds, previous_day_events: int | None = None):
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
    return _suite(C.SUITE_RAW_EVENTS, exp)


def sessions_suite(t: QualityThresholds):
    """sessions/dt=D with `_ts_in_day`, `_account_balanced` and, on each session's first row of
    the day only (null on the others, which GX skips), `_session_length`, `_seq_contiguous`,
    `_continues_previous_day`."""
    gxe = _gxe()
    return _suite(
        C.SUITE_SESSIONS,
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
                "_ts_in_day",
                "sessions/dt=D holds the session events that happened on D: a session "
                "spanning midnight has its events in both days under one session_id.",
            ),
            _true(
                "_account_balanced",
                "Conservation: the events of D = its session events + repeats removed + "
                "capped bot events, and both sides match the partitions' real row counts "
                "(sessionize's account, in the result's `account`).",
            ),
            _true(
                "_continues_previous_day",
                "A session without its first event on D continues one of D-1's sessions "
                "(same session_id; judged when D-1 has sessions).",
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="_seq_contiguous",
                value_set=[True],
                notes="Positions run on without holes, in time order, within each session's day "
                "(0..n-1 for a session starting on D).",
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


def datasets_suite(t: QualityThresholds):
    """train + test of datasets/run=D (column `split`), with `_session_length` on each
    session's first row, `_item_in_train`, `_after_split` (test) / `_before_split` (train)
    and `_test_coverage` (share of the test window's events whose item train knows)."""
    gxe = _gxe()
    return _suite(
        C.SUITE_DATASETS,
        [
            *_not_null(
                ["session_id", "item_id", "ts", "seq", "item_idx", "split"],
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


def item_index_suite(t: QualityThresholds, n_train_items: int):
    """items + popularity of datasets/run=D joined on item_idx, with `_support_matches`
    (support = the item's train events), `_weight_ok` (weight = support^alpha) and
    `_cdf_step` (cdf minus the previous item's)."""
    gxe = _gxe()
    return _suite(
        C.SUITE_ITEM_INDEX,
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
                "_alpha_matches",
                "The table records the alpha it was built with: training samples from this "
                "table, so its alpha is the one the model used.",
            ),
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
        *_not_null(C.RECOMMENDATIONS.columns, "Downstream systems read every field."),
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
            value_set=list(C.STRATEGIES),
            notes="Each row says which strategy produced it.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="model_version", min_value=1, notes="Every row names its model."
        ),
    ]
    return _suite(C.SUITE_RECOMMENDATIONS, exp)


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
