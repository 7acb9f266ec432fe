import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gru4rec import checkpoint as ckpt
from gru4rec import publish
from gru4rec.config import Config
from gru4rec.data import ItemMap
from gru4rec.model import GRU4RecModel
from gru4rec.score import FALLBACK, GRU4REC, SCHEMA, ValidationError, score_day, validate_table

ROOT = Path(__file__).resolve().parents[2]
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def make_checkpoint(path, n_items=40, seed=0):
    ids = np.array([f"it{i}" for i in range(n_items)], dtype=object)
    item_map = ItemMap(ids, np.arange(n_items, 0, -1))  # it0 most popular
    cfg = Config(layers=(8,), n_sample=0, batch_size=4, device="cpu")
    model = GRU4RecModel(cfg, n_items)
    model.init_weights(seed)
    with torch.no_grad():
        model.dense.normal_(0, 0.5)
        model.sparse["By"].normal_()
    ckpt.save(path / "model.pt", model, item_map)
    return path / "model.pt", model, item_map


def write_sessions(path, rows):
    frame = pd.DataFrame(rows, columns=["session_id", "user_id", "item_id", "t"])
    frame["ts"] = pd.to_datetime(frame.pop("t"), unit="s", utc=True)
    frame["seq"] = frame.groupby("session_id").cumcount()
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-0.parquet")
    return path


SESSIONS = [
    ("s2", "u1", "it3", 10), ("s2", "u1", "zzz", 11), ("s2", "u1", "it7", 12),
    ("s1", "u2", "it5", 5),                         # one event
    ("s3", "u3", "nope", 1), ("s3", "u3", "nada", 2),  # only unknown items
]  # fmt: skip


@pytest.fixture
def setup(tmp_path):
    path, model, item_map = make_checkpoint(tmp_path)
    sessions = write_sessions(tmp_path / "sessions" / "dt=2026-01-02", SESSIONS)
    return path, model, item_map, sessions, tmp_path / "recommendations"


def expected_top(model, items, k):
    hidden = model.zero_hidden(1)
    for i in items:
        hidden = model.step_inference(torch.tensor([i]), hidden)
    scores = model.score_all(hidden[-1])[0]
    top = torch.topk(scores, k)
    return top.indices.tolist(), top.values.tolist()


def test_scores_sessions_fallback_and_schema(setup):
    path, model, item_map, sessions, out = setup
    summary = score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    assert summary["sessions"] == 3 and summary["rows"] == 60 and summary["fallback_sessions"] == 1
    table = pq.read_table(out / "dt=2026-01-02")
    assert table.schema.equals(SCHEMA)
    df = table.to_pandas()
    assert df.session_id.tolist() == sorted(df.session_id.tolist())  # sorted by session, rank
    assert df.groupby("session_id")["rank"].apply(list).map(lambda r: r == list(range(1, 21))).all()
    s2 = df[df.session_id == "s2"]
    idx, val = expected_top(model, [3, 7], 20)  # the unknown item is skipped
    assert s2.item_id.tolist() == [f"it{i}" for i in idx]
    np.testing.assert_allclose(s2.score.to_numpy(), val, rtol=1e-5, atol=1e-6)
    assert set(s2.strategy) == {GRU4REC} and set(s2.user_id) == {"u1"}
    s1 = df[df.session_id == "s1"]
    assert s1.item_id.tolist() == [f"it{i}" for i in expected_top(model, [5], 20)[0]]
    s3 = df[df.session_id == "s3"]
    assert set(s3.strategy) == {FALLBACK}
    assert s3.item_id.tolist() == [f"it{i}" for i in range(20)]  # popularity order
    assert (df.generated_at == pd.Timestamp(WHEN)).all()
    assert df.model_version.str.len().min() > 0


def test_exclude_seen(setup):
    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02", exclude_seen=True)
    df = pd.read_parquet(out / "dt=2026-01-02")
    assert not set(df[df.session_id == "s2"].item_id) & {"it3", "it7"}
    assert "it5" not in set(df[df.session_id == "s1"].item_id)


def test_catalogue_smaller_than_k(tmp_path):
    path, _, _ = make_checkpoint(tmp_path, n_items=6)
    rows = [("a", "u", "it1", 1), ("a", "u", "it2", 2), ("b", "u", "x", 1)]
    sessions = write_sessions(tmp_path / "s", rows)
    summary = score_day(path, sessions, tmp_path / "r", "2026-01-02")
    df = pd.read_parquet(tmp_path / "r" / "dt=2026-01-02")
    assert summary["k"] == 6 and len(df) == 12
    assert sorted(df[df.session_id == "a"].item_id) == [f"it{i}" for i in range(6)]


def test_rerun_replaces_the_day_and_nothing_else(setup):
    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-01", generated_at=WHEN)
    score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    first = pd.read_parquet(out / "dt=2026-01-01")
    later = WHEN + dt.timedelta(hours=1)
    score_day(path, sessions, out, "2026-01-02", generated_at=later)
    assert (pd.read_parquet(out / "dt=2026-01-02").generated_at == pd.Timestamp(later)).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "dt=2026-01-01"), first)
    # one version per day remains
    assert len(list((out / "_versions" / "dt=2026-01-02").iterdir())) == 1


def test_validation_failure_publishes_nothing(setup, tmp_path):
    path, model, item_map, sessions, out = setup
    bad = tmp_path / "bad.parquet"
    good = tmp_path / "good.parquet"
    score_day(path, sessions, out, "2026-01-02")
    table = pq.read_table(out / "dt=2026-01-02")
    pq.write_table(table, good)
    ids = set(item_map.ids)
    assert validate_table(good, np.array(["s1", "s2", "s3"]), ids, 20)["rows"] == 60
    scores = table["score"].to_numpy().copy()
    scores[0], scores[1] = scores[1], scores[0] + 1
    pq.write_table(table.set_column(4, "score", pa.array(scores, pa.float32())), bad)
    with pytest.raises(ValidationError, match="non-increasing"):
        validate_table(bad, np.array(["s1", "s2", "s3"]), ids, 20)
    with pytest.raises(ValidationError, match="every session of the day"):
        validate_table(good, np.array(["s1", "s2", "s3", "s4"]), ids, 20)
    with pytest.raises(ValidationError, match="items of the model's index"):
        validate_table(good, np.array(["s1", "s2", "s3"]), ids - {"it0"}, 20)


def test_every_reader_sees_the_same_rows(setup, spark):
    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    score_day(path, sessions, out, "2026-01-03", generated_at=WHEN)
    part = out / "dt=2026-01-02"
    cols = ["session_id", "rank", "item_id", "score"]
    ref = pq.read_table(part).to_pandas()[cols]
    pdf = pd.read_parquet(part)[cols]
    ddb = duckdb.sql(f"select * from read_parquet('{part}/*.parquet') order by session_id, rank")
    ddf = ddb.df()[cols]
    sdf = spark.read.parquet(str(out)).where("dt = '2026-01-02'").orderBy("session_id", "rank")
    sp = sdf.select(*cols).toPandas()
    assert spark.read.parquet(str(out)).count() == 120  # both days, _versions ignored
    for other in (pdf, ddf, sp):
        pd.testing.assert_frame_equal(
            other.reset_index(drop=True), ref, check_dtype=False, check_exact=False, rtol=1e-6
        )


KILL_SCRIPT = """
import sys, time
import pyarrow.parquet as pq
real = pq.ParquetWriter.write_table
def slow(self, table, *a, **k):
    real(self, table, *a, **k)
    print("wrote", flush=True)
    time.sleep(0.5)
pq.ParquetWriter.write_table = slow
from gru4rec.score import score_day
score_day(sys.argv[1], sys.argv[2], sys.argv[3], "2026-01-02", batch_size=1)
"""


def test_killed_run_leaves_the_published_table_intact(setup):
    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    before = pd.read_parquet(out / "dt=2026-01-02")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path), str(sessions), str(out)],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"wrote"  # mid-write: one batch of three written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    staged = list((out / "_versions" / "dt=2026-01-02").iterdir())
    assert len(staged) == 2  # the published version and the killed run's partial one
    pd.testing.assert_frame_equal(pd.read_parquet(out / "dt=2026-01-02"), before)
    # a kill between creating the new link and swapping it leaves a stray link: harmless
    os.symlink(staged[0].name, out / ".dt=2026-01-02.link-dead", target_is_directory=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "dt=2026-01-02"), before)
    time.sleep(0.01)
    score_day(path, sessions, out, "2026-01-02")  # the next run cleans up
    assert len(list((out / "_versions" / "dt=2026-01-02").iterdir())) == 1
    assert not list(out.glob(".dt=*"))
    assert publish.current_version(out, "dt=2026-01-02") is not None


def test_score_cli(setup, capsys):
    from gru4rec.cli import main

    path, model, item_map, sessions, out = setup
    args = ["score", "--model", str(path), "--sessions", str(sessions), "--out", str(out)]
    assert main([*args, "--date", "2026-01-02"]) == 0
    assert '"rows": 60' in capsys.readouterr().out
    assert main([*args, "--date", "02.01.2026"]) == 2


def test_great_expectations_suite_catches_each_broken_rule(setup):
    from jobs.quality import validate_recommendations

    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02")
    good = pd.read_parquet(out / "dt=2026-01-02")
    assert (out / "dt=2026-01-02" / "_validation.json").exists()
    day, ids = np.array(["s1", "s2", "s3"]), item_map.ids.astype(str)
    assert validate_recommendations(good, day, ids, 20)["success"]

    def failed(frame, day_sessions=day, items=ids):
        return validate_recommendations(frame, day_sessions, items, 20)["failed"]

    rising = good.copy()
    rising.loc[1, "score"] = rising.loc[0, "score"] + 1
    assert any("_score_drop" in f for f in failed(rising))
    dup_rank = good.copy()
    dup_rank.loc[1, "rank"] = 1
    assert any("compound_columns" in f for f in failed(dup_rank))
    assert any("_session_in_day" in f for f in failed(good, np.array(["s1", "s2", "s9"])))
    assert any("_item_in_index" in f for f in failed(good, day, ids[:5]))
    nulls = good.copy()
    nulls.loc[3, "item_id"] = None
    assert any("not_be_null(item_id)" in f for f in failed(nulls))
    assert any("row_count" in f for f in failed(good.iloc[:-1]))


def test_failed_suite_publishes_nothing(setup, monkeypatch):
    import gru4rec.score as score

    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    before = pd.read_parquet(out / "dt=2026-01-02")
    real = score.Scorer.batches

    def drop_first_row(self, *a, **k):
        for table in real(self, *a, **k):
            yield table.slice(1)

    monkeypatch.setattr(score.Scorer, "batches", drop_first_row)
    monkeypatch.setattr(score, "validate_table", lambda *a, **k: {})  # leave it to GX
    with pytest.raises(ValidationError, match="Great Expectations suite"):
        score_day(path, sessions, out, "2026-01-02")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "dt=2026-01-02"), before)
    assert len(list((out / "_versions" / "dt=2026-01-02").iterdir())) == 1


def test_suite_runs_in_bounded_chunks_of_whole_sessions(setup):
    from jobs.quality import validate_recommendations_file

    path, model, item_map, sessions, out = setup
    score_day(path, sessions, out, "2026-01-02", batch_size=1)  # one row group per session
    part = out / "dt=2026-01-02" / "part-00000.parquet"
    assert pq.ParquetFile(part).num_row_groups == 3
    day, ids = np.array(["s1", "s2", "s3"]), item_map.ids.astype(str)
    res = validate_recommendations_file(part, day, ids, 20, chunk_rows=20)
    assert res["success"] and len(res["results"]) == 3  # three chunks, each one session
    res = validate_recommendations_file(part, np.array(["s1", "s2"]), ids, 20, chunk_rows=20)
    assert not res["success"] and any("_session_in_day" in f for f in res["failed"])


def test_chunked_input_gives_the_same_table(setup, tmp_path):
    path, model, item_map, sessions, out = setup
    # split the day over two files, with session s2 straddling them
    frame = pd.read_parquet(sessions)
    split = tmp_path / "split"
    split.mkdir()
    pq.write_table(pa.Table.from_pandas(frame.iloc[:2], preserve_index=False), split / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[2:], preserve_index=False), split / "b.parquet")
    score_day(path, sessions, out, "2026-01-02", generated_at=WHEN)
    score_day(path, split, out, "2026-01-03", generated_at=WHEN, max_sessions=1)
    whole = pd.read_parquet(out / "dt=2026-01-02")
    chunked = pd.read_parquet(out / "dt=2026-01-03")
    pd.testing.assert_frame_equal(whole, chunked)
