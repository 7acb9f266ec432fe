"""The scored table's gate: the streaming contract check and the GX suite catch each broken
rule, in bounded chunks of whole sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gru4rec.score import PART, score_sessions
from jobs.quality.recommendations import (
    check_table,
    validate_recommendations,
    validate_recommendations_file,
    validate_scored,
)
from jobs.quality.store import QualityGateError, QualityStore
from tests.scoring_fixtures import SESSIONS, make_checkpoint, write_sessions

DAY = np.array(["s1", "s2", "s3"])


@pytest.fixture
def scored(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _, _, item_map = make_checkpoint(model_dir)
    sessions = write_sessions(tmp_path / "sessions", SESSIONS)
    out = tmp_path / "scored"
    score_sessions(model_dir, sessions, out, batch_size=1)  # one row group per session
    return out, model_dir, sessions, item_map.ids.astype(str)


def test_contract_check_names_the_broken_rule(scored, tmp_path):
    out, _, _, ids = scored
    good = out / PART
    assert check_table(good, DAY, ids, 20)["rows"] == 60
    table = pq.read_table(good)
    scores = table["score"].to_numpy().copy()
    scores[0], scores[1] = scores[1], scores[0] + 1
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(4, "score", pa.array(scores, pa.float32())), bad)
    with pytest.raises(QualityGateError, match="non-increasing"):
        check_table(bad, DAY, ids, 20)
    with pytest.raises(QualityGateError, match="every session of the day"):
        check_table(good, np.array(["s1", "s2", "s3", "s4"]), ids, 20)
    with pytest.raises(QualityGateError, match="items of the model's index"):
        check_table(good, DAY, ids[1:], 20)


def test_great_expectations_suite_catches_each_broken_rule(scored):
    out, _, _, ids = scored
    good = pd.read_parquet(out / PART)
    assert validate_recommendations(good, DAY, ids, 20)["success"]

    def failed(frame, day_sessions=DAY, items=ids):
        return validate_recommendations(frame, day_sessions, items, 20)["failed"]

    rising = good.copy()
    rising.loc[1, "score"] = rising.loc[0, "score"] + 1
    assert any("_score_drop" in f for f in failed(rising))
    dup_rank = good.copy()
    dup_rank.loc[1, "rank"] = 1
    assert any("compound_columns" in f for f in failed(dup_rank))
    assert any("_session_in_day" in f for f in failed(good, np.array(["s1", "s2", "s9"])))
    assert any("_item_in_index" in f for f in failed(good, DAY, ids[:5]))
    nulls = good.copy()
    nulls.loc[3, "item_id"] = None
    assert any("not_be_null(item_id)" in f for f in failed(nulls))
    assert any("row_count" in f for f in failed(good.iloc[:-1]))


def test_suite_runs_in_bounded_chunks_of_whole_sessions(scored):
    out, _, _, ids = scored
    part = out / PART
    assert pq.ParquetFile(part).num_row_groups == 3
    res = validate_recommendations_file(part, DAY, ids, 20, chunk_rows=20)
    assert res["success"] and len(res["results"]) == 3  # three chunks, each one session
    res = validate_recommendations_file(part, np.array(["s1", "s2"]), ids, 20, chunk_rows=20)
    assert not res["success"] and any("_session_in_day" in f for f in res["failed"])


def test_validate_scored_reads_the_model_items_and_the_day_from_files(scored, tmp_path):
    out, model_dir, sessions, _ = scored
    store = QualityStore(tmp_path / "quality")
    result = validate_scored(out, model_dir, sessions, store=store)
    assert result["counts"] == {"rows": 60, "sessions": 3, "k": 20}
    assert (tmp_path / "quality" / "recommendations.json").exists()
    # a model that does not know it0 (the fallback's top item): the gate fails
    items = pd.read_parquet(model_dir / "items.parquet")
    items[items.item_id != "it0"].to_parquet(model_dir / "items.parquet", index=False)
    with pytest.raises(QualityGateError, match="items of the model's index"):
        validate_scored(out, model_dir, sessions)


def test_contract_check_catches_order_duplicates_and_strangers(scored, tmp_path):
    """Sessions out of order, a session twice, a session not of the day: each named."""
    from jobs.quality.recommendations import SessionSet

    out, _, sessions, ids = scored
    table = pq.read_table(out / PART)

    def check(t):
        bad = tmp_path / "bad.parquet"
        pq.write_table(t, bad, row_group_size=20)
        return check_table(bad, SessionSet.from_sessions(sessions, batch_rows=2), ids, 20)

    assert check(table)["sessions"] == 3
    reordered = pa.concat_tables([table.slice(20), table.slice(0, 20)])
    with pytest.raises(QualityGateError, match="increasing session_id order"):
        check(reordered)
    twice = pa.concat_tables([table.slice(0, 40), table.slice(20, 20)])
    with pytest.raises(QualityGateError, match="several places"):
        check(twice)
    renamed = table.set_column(0, "session_id", pa.array(["s1"] * 20 + ["s2"] * 20 + ["s9"] * 20))
    with pytest.raises(QualityGateError, match=r"only sessions of the day, found 1 others"):
        check(renamed)
    with pytest.raises(QualityGateError, match=r"every session of the day \(3\), found 2"):
        check(table.slice(0, 40))


def test_the_day_set_refuses_a_null_session_id(tmp_path):
    """A null id would hash like the string "None": refused, with the file named."""
    from jobs.common.errors import SchemaError
    from jobs.quality.recommendations import SessionSet

    day = tmp_path / "day"
    day.mkdir()
    pq.write_table(pa.table({"session_id": ["a", None, "b"]}), day / "part-0.parquet")
    with pytest.raises(SchemaError, match="part-0.parquet: expected a session_id on every"):
        SessionSet.from_sessions(day)
    pq.write_table(pa.table({"session_id": ["a", "None", "b", "a"]}), day / "part-0.parquet")
    assert len(SessionSet.from_sessions(day)) == 3
