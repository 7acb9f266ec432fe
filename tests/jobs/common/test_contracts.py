"""The data contracts are what the writers write: the model library's scored table and the
Spark jobs' outputs match jobs/common/contracts.py."""

from __future__ import annotations

import datetime as dt

from gru4rec.score import SCHEMA
from jobs.common import contracts as C
from jobs.common.lake import Lake


def test_the_model_librarys_scored_table_is_the_recommendations_contract():
    assert SCHEMA.equals(C.arrow_schema(C.RECOMMENDATIONS))
    assert C.RECOMMENDATIONS.columns[:3] == ["session_id", "user_id", "rank"]


def test_spark_outputs_follow_the_contracts(spark, tmp_path):
    from jobs.popularity import run_popularity

    lake = Lake(str(tmp_path))
    day = dt.date(2026, 1, 5)
    t = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    rows = [(f"s{i % 3}", "u", f"i{i % 4}", t + dt.timedelta(minutes=i), i) for i in range(12)]
    # a train split as written before datasets carried item_idx: the index is built from it
    spark.createDataFrame(rows, C.SESSIONS.ddl).write.parquet(lake.split(day, "train"))
    run_popularity(spark, lake, day, alpha=0.25)
    for contract, path in ((C.ITEMS, lake.items(day)), (C.POPULARITY, lake.popularity(day))):
        schema = spark.read.parquet(path).schema
        assert [(f.name, f.dataType.simpleString()) for f in schema] == list(contract.fields)
