"""Batch scoring in the model library: sessions Parquet in, a recommendations table out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gru4rec.errors import SchemaError
from gru4rec.score import FALLBACK, GRU4REC, PART, SCHEMA, SUMMARY, score_sessions
from tests.scoring_fixtures import (
    SESSIONS,
    WHEN,
    kill_scoring_mid_write,
    make_checkpoint,
    write_sessions,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path, model, item_map = make_checkpoint(model_dir)
    sessions = write_sessions(tmp_path / "sessions", SESSIONS)
    return path, model, item_map, sessions, tmp_path / "scored"


def expected_top(model, items, k):
    hidden = model.zero_hidden(1)
    for i in items:
        hidden = model.step_inference(torch.tensor([i]), hidden)
    scores = model.score_all(hidden[-1])[0]
    top = torch.topk(scores, k)
    return top.indices.tolist(), top.values.tolist()


def test_scores_sessions_fallback_and_schema(setup):
    path, model, item_map, sessions, out = setup
    summary = score_sessions(path, sessions, out, generated_at=WHEN)
    assert summary["sessions"] == 3 and summary["rows"] == 60 and summary["fallback_sessions"] == 1
    assert sorted(p.name for p in out.iterdir()) == [SUMMARY, PART]
    table = pq.read_table(out / PART)
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
    score_sessions(path, sessions, out, exclude_seen=True)
    df = pd.read_parquet(out / PART)
    assert not set(df[df.session_id == "s2"].item_id) & {"it3", "it7"}
    assert "it5" not in set(df[df.session_id == "s1"].item_id)


def test_catalogue_smaller_than_k(tmp_path):
    path, _, _ = make_checkpoint(tmp_path, n_items=6)
    rows = [("a", "u", "it1", 1), ("a", "u", "it2", 2), ("b", "u", "x", 1)]
    sessions = write_sessions(tmp_path / "s", rows)
    summary = score_sessions(path, sessions, tmp_path / "r")
    df = pd.read_parquet(tmp_path / "r" / PART)
    assert summary["k"] == 6 and len(df) == 12
    assert sorted(df[df.session_id == "a"].item_id) == [f"it{i}" for i in range(6)]


def test_an_existing_output_is_never_overwritten(setup):
    path, model, item_map, sessions, out = setup
    score_sessions(path, sessions, out, generated_at=WHEN)
    before = (out / PART).read_bytes()
    with pytest.raises(Exception, match="expected a new directory"):
        score_sessions(path, sessions, out)
    assert (out / PART).read_bytes() == before


def test_a_killed_run_leaves_no_table_behind(setup):
    """The table appears whole or not at all: a kill mid-write leaves only a staging dir."""
    path, model, item_map, sessions, out = setup
    kill_scoring_mid_write(str(path), str(sessions), str(out))
    assert not out.exists()
    assert [p.name.startswith(f".{out.name}.staging") for p in out.parent.iterdir()].count(True)


def test_score_cli(setup, capsys):
    from gru4rec.cli import main

    path, model, item_map, sessions, out = setup
    args = ["score", "--model", str(path), "--sessions", str(sessions), "--out", str(out)]
    assert main(args) == 0
    assert '"rows": 60' in capsys.readouterr().out
    assert main(args) == 2  # the output exists: refused, not overwritten
    assert main([*args[:-1], str(out.parent / "other"), "--k", "0"]) != 0


def test_chunked_input_gives_the_same_table(setup, tmp_path):
    path, model, item_map, sessions, out = setup
    # split the day over two files, with session s2 straddling them
    frame = pd.read_parquet(sessions)
    split = tmp_path / "split"
    split.mkdir()
    pq.write_table(pa.Table.from_pandas(frame.iloc[:2], preserve_index=False), split / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[2:], preserve_index=False), split / "b.parquet")
    score_sessions(path, sessions, out, generated_at=WHEN)
    score_sessions(path, split, tmp_path / "chunked", generated_at=WHEN, max_events=1)
    whole = pd.read_parquet(out / PART)
    chunked = pd.read_parquet(tmp_path / "chunked" / PART)
    pd.testing.assert_frame_equal(whole, chunked)


@pytest.mark.parametrize("max_events", [10**6, 1], ids=["whole", "ranges"])
def test_a_session_continuing_from_the_day_before_is_scored_after_all_its_events(
    setup, tmp_path, max_events
):
    """A session spanning midnight has its events in two days' partitions; with the earlier
    day as context it is scored as one session, as if it had not been cut (whether the day
    is scored whole or in ranges, the earlier day spilled to the same ranges)."""
    from gru4rec.score import bucket_bounds, open_sessions

    path, model, item_map, sessions, out = setup
    before = write_sessions(tmp_path / "before", [("s2", "u1", "it9", 1), ("s2", "u1", "it4", 2),
                                                  ("s9", "u9", "it1", 3)])  # fmt: skip
    today = pd.DataFrame(
        [("s2", "u1", "it3", 10, 2), ("s2", "u1", "it7", 12, 3), ("s1", "u2", "it5", 5, 0)],
        columns=["session_id", "user_id", "item_id", "t", "seq"],
    )
    today["ts"] = pd.to_datetime(today.pop("t"), unit="s", utc=True)
    (tmp_path / "today").mkdir()
    pq.write_table(pa.Table.from_pandas(today, preserve_index=False),
                   tmp_path / "today" / "part-0.parquet")  # fmt: skip
    ranges = len(bucket_bounds(open_sessions(tmp_path / "today"), max_events)) + 1
    assert ranges == (1 if max_events > 3 else 2)
    summary = score_sessions(
        path, tmp_path / "today", out, context_path=before, max_events=max_events
    )
    df = pd.read_parquet(out / PART)
    assert sorted(set(df.session_id)) == ["s1", "s2"]  # only today's sessions are scored
    s2 = df[df.session_id == "s2"]
    assert s2.item_id.tolist() == [f"it{i}" for i in expected_top(model, [9, 4, 3, 7], 20)[0]]
    assert s2.item_id.tolist() != [f"it{i}" for i in expected_top(model, [3, 7], 20)[0]]
    assert summary["sessions"] == 2 and summary["context_path"] == str(before)
    # without context, only today's part of it is seen
    score_sessions(path, tmp_path / "today", tmp_path / "alone")
    alone = pd.read_parquet(tmp_path / "alone" / PART)
    s2 = alone[alone.session_id == "s2"]
    assert s2.item_id.tolist() == [f"it{i}" for i in expected_top(model, [3, 7], 20)[0]]


def test_a_day_scored_in_ranges_equals_the_day_scored_whole(setup, tmp_path):
    """A day larger than `max_events` is spilled to ranges of session_id and scored range by
    range: the table is the same, in session_id order, and no temporary file is left."""
    from gru4rec.score import bucket_bounds, iter_session_chunks, open_sessions

    path, *_ = setup
    rng = np.random.default_rng(3)
    n = 600
    ids = [f"s{'é' * (i % 3)}{rng.integers(10**9)}-{i}" for i in range(n)]  # varied, non-ASCII
    rows = [
        (ids[s], f"u{s % 50}", f"it{rng.integers(45)}", s * 100 + e)  # it40..44 unknown
        for s in rng.permutation(n)
        for e in range(int(rng.integers(1, 8)))
    ]
    frame = pd.read_parquet(write_sessions(tmp_path / "one", rows))
    day = tmp_path / "day"
    day.mkdir()
    for f, part in enumerate(np.array_split(np.arange(len(frame)), 3)):  # sessions straddle files
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False),
                       day / f"part-{f}.parquet")  # fmt: skip
    max_events = len(frame) // 8
    dataset = open_sessions(day)
    assert len(bucket_bounds(dataset, max_events)) >= 6
    chunks = list(iter_session_chunks(dataset, max_events, spill_parent=tmp_path / "work"))
    assert len(chunks) >= 7 and not list((tmp_path / "work").iterdir())
    assert max(len(c) for c in chunks) < 2 * max_events
    in_chunks = [set(c.session_id) for c in chunks]
    assert sum(len(s) for s in in_chunks) == n  # each session whole in exactly one range
    assert all(max(a) < min(b) for a, b in zip(in_chunks[:-1], in_chunks[1:], strict=True))
    score_sessions(path, day, tmp_path / "whole", generated_at=WHEN)
    score_sessions(path, day, tmp_path / "ranges", generated_at=WHEN, max_events=max_events)
    whole = pd.read_parquet(tmp_path / "whole" / PART)
    ranged = pd.read_parquet(tmp_path / "ranges" / PART)
    # other batch compositions: the same items, scores equal up to float summation order
    pd.testing.assert_frame_equal(whole, ranged, check_exact=False, rtol=1e-5, atol=1e-6)
    assert ranged.session_id.is_monotonic_increasing and ranged.session_id.nunique() == n
    assert sorted(p.name for p in (tmp_path / "ranges").iterdir()) == sorted([PART, SUMMARY])


@pytest.mark.parametrize("max_events", [10**6, 4], ids=["whole", "ranges"])
def test_files_of_other_types_are_read_alike_and_bad_ones_named(setup, tmp_path, max_events):
    """Part files written by other tools (dictionary ids, large strings, int32 positions,
    nanosecond times) are scored as one day either way; a file without a column or with a
    null session id is refused with its name."""
    path, *_ = setup
    frame = pd.read_parquet(write_sessions(tmp_path / "one", SESSIONS * 3))
    day = tmp_path / "day"
    day.mkdir()
    a = pa.Table.from_pandas(frame.iloc[:9], preserve_index=False)
    a = a.set_column(2, "item_id", a["item_id"].dictionary_encode())
    a = a.set_column(4, "seq", a["seq"].cast(pa.int32()))
    b = pa.Table.from_pandas(frame.iloc[9:], preserve_index=False)
    b = b.set_column(0, "session_id", b["session_id"].cast(pa.large_string()))
    b = b.set_column(3, "ts", b["ts"].cast(pa.timestamp("ns", tz="UTC")))
    pq.write_table(a, day / "a.parquet")
    pq.write_table(b, day / "b.parquet")
    score_sessions(path, day, tmp_path / "mixed", generated_at=WHEN, max_events=max_events)
    score_sessions(path, tmp_path / "one", tmp_path / "plain", generated_at=WHEN)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "mixed" / PART),
        pd.read_parquet(tmp_path / "plain" / PART),
        check_exact=False,
        rtol=1e-5,
        atol=1e-6,
    )
    pq.write_table(b.drop_columns(["seq"]), day / "b.parquet")
    with pytest.raises(SchemaError, match=r"b.parquet: expected columns session_id.*found"):
        score_sessions(path, day, tmp_path / "no-seq", max_events=max_events)
    nulls = b.set_column(0, "session_id", pa.array([None] * b.num_rows, pa.large_string()))
    pq.write_table(nulls, day / "b.parquet")
    with pytest.raises(SchemaError, match=r"b.parquet: expected a session_id on every event"):
        score_sessions(path, day, tmp_path / "null-id", max_events=max_events)
    assert not (tmp_path / "no-seq").exists() and not (tmp_path / "null-id").exists()


def test_a_terminated_run_removes_its_spill_and_stale_spills_go(setup, tmp_path):
    """SIGTERM (a task's timeout) mid-write: the CLI unwinds, its spilled copy of the day and
    its staging directory are removed. A killed run's spill (its process gone, untouched for
    an hour) is removed by the next run; a live process's spill is not."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from gru4rec.score import SPILL_PREFIX, spill_dir

    path, model, item_map, sessions, out = setup
    spill = tmp_path / "spill"
    slow = (
        "import sys, time\n"
        "import pyarrow.parquet as pq\n"
        "real = pq.ParquetWriter.write_table\n"
        "def slow(self, *a, **k):\n"
        "    real(self, *a, **k); print('wrote', flush=True); time.sleep(30)\n"
        "pq.ParquetWriter.write_table = slow\n"
        "from gru4rec.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", slow, "score", "--model", str(path), "--sessions",
           str(sessions), "--out", str(out), "--max-events", "2", "--batch-size", "1",
           "--spill-dir", str(spill)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.stdout.readline().strip() == b"wrote"
    assert [p.name for p in spill.iterdir()][0].startswith(SPILL_PREFIX)  # spilled, mid-run
    assert list(next(spill.iterdir()).glob("range-*.arrow"))  # ranges still to score
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(spill.iterdir()) == [] and list(out.parent.glob(f".{out.name}*")) == []
    assert not out.exists()

    dead = spill / f"{SPILL_PREFIX}999999999-abc"  # no such process
    live = spill / f"{SPILL_PREFIX}{os.getpid()}-abc"
    fresh = spill / f"{SPILL_PREFIX}999999998-abc"
    for d in (dead, live, fresh):
        d.mkdir()
        (d / "range-00000.arrow").write_bytes(b"x")
    old = time.time() - 2 * 3600
    for d in (dead, live):
        os.utime(d, (old, old))
    new = spill_dir(spill)
    assert not dead.exists() and live.exists() and fresh.exists() and new.exists()
