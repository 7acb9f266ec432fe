import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gru4rec.data import ItemMap, build_sessions, load_item_map, read_events
from gru4rec.errors import NoInputError, SchemaError


def test_tsv_sessions_in_start_time_order_and_events_in_time_order(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text(
        "SessionId\tItemId\tTime\n"
        "2\t10\t5.0\n2\t11\t4.0\n"  # session 2 starts at 4.0 (out of order in the file)
        "1\t12\t9.0\n1\t10\t8.5\n1\t13\t10\n"
        "3\t10\t1.0\n"  # length 1: no training pair
    )
    frame = read_events(f)
    im = ItemMap.from_train(frame["item_id"].to_numpy(dtype=object))
    assert im.ids.tolist() == ["10", "11", "12", "13"]  # support desc, then id
    assert im.support.tolist() == [3, 1, 1, 1]
    data = build_sessions(frame, im, "train")
    assert data.session_ids.tolist() == ["2", "1"]
    assert [im.ids[i] for i in data.items] == ["11", "10", "10", "12", "13"]
    assert data.offsets.tolist() == [0, 2, 5] and data.dropped_short == 1


def test_tsv_with_wrong_columns_is_a_clear_error(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("session\titem\tts\n1\t2\t3\n")
    with pytest.raises(SchemaError, match="expected columns SessionId, ItemId, Time.*found"):
        read_events(f)
    g = tmp_path / "bad2.tsv"
    g.write_text("SessionId\tItemId\tTime\n1\t2\tnoon\n")
    with pytest.raises(SchemaError, match="expected numeric Time"):
        read_events(g)
    with pytest.raises(NoInputError):
        read_events(tmp_path / "missing.tsv")


def _write_pipeline_run(root):
    """A `datasets/run=D/` layout like the Spark jobs write (several files, string ids)."""
    train = pd.DataFrame(
        {
            "session_id": ["b", "b", "b", "a", "a"],
            "user_id": ["u"] * 5,
            "item_id": ["x", "y", "x", "y", "z"],
            "ts": pd.to_datetime([5, 5, 7, 1, 2], unit="s", utc=True),
            "seq": [2, 0, 3, 0, 1],  # equal ts in session b: seq decides; gaps allowed
        }
    )
    (root / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(train.iloc[:2]), root / "train" / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(train.iloc[2:]), root / "train" / "part-1.parquet")
    (root / "train" / "_SUCCESS").write_text("")
    items = pd.DataFrame({"item_id": ["y", "x", "z"], "item_idx": [0, 1, 2], "support": [2, 2, 1]})
    (root / "items").mkdir()
    pq.write_table(pa.Table.from_pandas(items), root / "items" / "part-0.parquet")
    return root / "train"


def test_pipeline_parquet_uses_the_shared_item_index(tmp_path):
    path = _write_pipeline_run(tmp_path / "run=2026-01-01")
    frame = read_events(path)
    im = load_item_map(frame, path)
    assert im.ids.tolist() == ["y", "x", "z"]  # read, never re-indexed
    data = build_sessions(frame, im, "train")
    assert data.session_ids.tolist() == ["a", "b"]
    assert data.items.tolist() == [0, 2, 0, 1, 1]  # a: y z; b: y(seq0) x(seq2) x(seq3)


def test_item_table_must_be_contiguous(tmp_path):
    d = tmp_path / "items"
    d.mkdir()
    bad = pd.DataFrame({"item_id": ["a", "b"], "item_idx": [0, 2], "support": [1, 1]})
    pq.write_table(pa.Table.from_pandas(bad), d / "p.parquet")
    with pytest.raises(SchemaError, match="contiguous"):
        ItemMap.read_parquet(d)


def test_fingerprint_changes_with_the_index():
    a = ItemMap(np.array(["1", "2"], dtype=object), np.array([2, 1]))
    b = ItemMap(np.array(["2", "1"], dtype=object), np.array([2, 1]))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == ItemMap(a.ids.copy(), a.support.copy()).fingerprint


def _write_compact_run(root, train: pd.DataFrame, cut: int):
    """A split in training order with item_idx, in two files cut at row `cut`."""
    (root / "train").mkdir(parents=True)
    for k, part in enumerate((train.iloc[:cut], train.iloc[cut:])):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       root / "train" / f"part-0000{k}.parquet")  # fmt: skip
    items = pd.DataFrame({"item_id": ["y", "x", "z"], "item_idx": [0, 1, 2], "support": [3, 3, 1]})
    (root / "items").mkdir()
    pq.write_table(pa.Table.from_pandas(items), root / "items" / "part-0.parquet")
    return root / "train", ItemMap.read_parquet(root / "items")


TRAINING_ORDER = pd.DataFrame(
    {  # a (start 1), then c and b tied at 5 (ordered by id: b, c), then d; b spans the files
        "session_id": ["a", "a", "b", "b", "b", "c", "c", "d", "d"],
        "user_id": ["u"] * 9,
        "item_id": ["y", "z", "x", "y", "x", "y", "x", "z", "y"],
        "ts": pd.to_datetime([1, 2, 5, 5, 7, 5, 6, 9, 9], unit="s", utc=True),
        "seq": [0, 1, 0, 2, 3, 4, 5, 0, 1],
        "item_idx": pd.array([0, 2, 1, 0, 1, 0, 1, 2, 0], dtype="int32"),
    }
)


def test_read_compact_equals_the_frame_reader_across_files(tmp_path, caplog):
    from gru4rec.data import read_compact

    path, im = _write_compact_run(tmp_path / "ok", TRAINING_ORDER, cut=3)
    expected = build_sessions(read_events(path), im, "train")
    got = read_compact(path, im, "train", times=True)
    assert got.items.dtype == np.int32 and got.items.tolist() == expected.items.tolist()
    assert got.offsets.tolist() == expected.offsets.tolist() == [0, 2, 5, 7, 9]
    assert got.times.tolist() == expected.times.tolist()
    assert got.seconds_range == (1.0, 9.0)
    # not compact -> None (the caller reads the frame): no item_idx, an item not in the index
    # (null), sessions or events out of order, a session in two places (event-time order:
    # every run starts later than the one before), timestamps as plain integers
    no_idx = TRAINING_ORDER.drop(columns="item_idx")
    null = TRAINING_ORDER.assign(item_idx=TRAINING_ORDER["item_idx"].astype("Int32"))
    null.loc[7, "item_idx"] = pd.NA
    swapped = TRAINING_ORDER.iloc[[2, 3, 4, 0, 1, 5, 6, 7, 8]]  # b before a
    events = TRAINING_ORDER.iloc[[1, 0, 2, 3, 4, 5, 6, 7, 8]]  # a's events reversed
    by_time = pd.DataFrame(
        {
            "session_id": list("ABBACAC"),
            "user_id": ["u"] * 7,
            "item_id": ["y"] * 7,
            "ts": pd.to_datetime([1, 3, 4, 5, 6, 7, 8], unit="s", utc=True),
            "seq": [0, 0, 1, 1, 0, 2, 1],
            "item_idx": pd.array([0] * 7, dtype="int32"),
        }
    )
    int_ts = TRAINING_ORDER.assign(ts=TRAINING_ORDER["ts"].astype("int64"))
    cases = {"no_idx": no_idx, "null": null, "swapped": swapped, "events": events,
             "by_time": by_time, "int_ts": int_ts}  # fmt: skip
    for name, frame in cases.items():
        path, im = _write_compact_run(tmp_path / name, frame, cut=4)
        assert read_compact(path, im, "train") is None, name
    general = build_sessions(read_events(tmp_path / "by_time" / "train"), im, "train")
    assert general.offsets.tolist() == [0, 3, 5, 7]  # what a wrong compact read would miss
    other = ItemMap(np.array(["x", "y", "z"], dtype=object), np.array([3, 3, 1]))
    path, _ = _write_compact_run(tmp_path / "other", TRAINING_ORDER, cut=3)
    assert read_compact(path, other, "train") is None
    assert "not in training order" in caplog.text
    # an index beyond the items table is refused, not read
    beyond = TRAINING_ORDER.assign(item_idx=TRAINING_ORDER["item_idx"].replace(2, 7))
    path, im = _write_compact_run(tmp_path / "beyond", beyond, cut=3)
    with pytest.raises(SchemaError, match=r"expected item_idx in 0..2"):
        read_compact(path, im, "train")
