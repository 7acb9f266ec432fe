"""Incremental training: a warm start continues exactly, the item index only grows, and a
checkpoint of another configuration is refused."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from gru4rec import checkpoint as ckpt
from gru4rec import incremental as inc
from gru4rec.cli import main
from gru4rec.config import Config
from gru4rec.data import ItemMap, build_sessions, read_events
from gru4rec.model import GRU4RecModel
from gru4rec.optim import AdagradM
from gru4rec.train import Trainer

from .conftest import synthetic_sessions

SMALL = dict(
    layers=(32,), batch_size=16, n_sample=32, sample_store_size=32 * 50, n_epochs=2,
    learning_rate=0.1, momentum=0.2, dropout_p_hidden=0.3, device="cpu",
)  # fmt: skip
FAST = ["--set", "layers=24", "--set", "batch_size=16", "--set", "n_sample=16",
        "--set", "sample_store_size=1600", "--set", "n_epochs=2", "--no-baselines"]  # fmt: skip


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    path = tmp_path_factory.mktemp("inc") / "all.tsv"
    synthetic_sessions(n_sessions=400).to_csv(path, sep="\t", index=False)
    return read_events(path)


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_warm_start_continues_exactly_where_the_checkpoint_stopped(frame, tmp_path):
    """1 epoch, a checkpoint, a warm start for 1 more on the same data: the same loss and the
    same weights as 2 uninterrupted epochs (dropout and samples included)."""
    im = ItemMap.from_train(frame["item_id"].to_numpy(dtype=object))
    data = build_sessions(frame, im)
    cfg = Config.from_dict(SMALL)
    straight = Trainer(cfg, im)
    losses = [e.loss for e in straight.fit(data, progress=False)]
    assert losses[0] != losses[1]

    first = Trainer(dataclasses.replace(cfg, n_epochs=1), im)
    first.fit(data, progress=False)
    path = ckpt.save(
        tmp_path / "model.pt", first.model, im, first.optimizer, first.epochs_done,
        extra={"data_range": inc.data_range(frame)},
    )  # fmt: skip
    ws = inc.warm_start(ckpt.Checkpoint(path), cfg, im, torch.device("cpu"))
    assert ws.new_items == 0 and ws.epochs_done == 1 and ws.lineage["warm_starts"] == 1
    resumed = Trainer(cfg, ws.item_map, ws.model, ws.optimizer, epochs_done=ws.epochs_done)
    second = resumed.train_epoch(data, progress=False)
    assert second.epoch == 2 and second.loss == losses[1]
    a, b = _weights(straight.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(
        torch.equal(x, y)
        for k in straight.optimizer.state
        for x, y in zip(straight.optimizer.state[k], resumed.optimizer.state[k], strict=True)
    )


def test_new_items_get_fresh_rows_and_the_growth_changes_no_old_row():
    cfg = Config.from_dict({**SMALL, "embedding": "separate", "embedding_dim": 8})
    old = ItemMap(np.array(["a", "b", "c"], dtype=object), np.array([5, 3, 1]))
    tonight = ItemMap(np.array(["d", "b", "e", "a"], dtype=object), np.array([9, 4, 2, 1]))
    grown, n_new = inc.grow_item_map(old, tonight)
    assert list(grown.ids) == ["a", "b", "c", "d", "e"] and n_new == 2
    assert list(grown.support) == [1, 4, 0, 9, 2]  # tonight's support; c is gone tonight
    # a popularity table built before d and e existed, without c: the table's weights where it
    # has them, else support^alpha (c has no support tonight: 1^alpha)
    table = ItemMap(np.array(["b", "a", "z"], dtype=object), np.zeros(3, dtype=np.int64))
    np.testing.assert_allclose(
        inc.grown_weights(np.array([0.4, 0.9, 0.2]), table, grown, 0.5),
        [0.9, 0.4, 1.0, 3.0, math.sqrt(2.0)],
    )

    model = GRU4RecModel(cfg, 3)
    model.init_weights(1)
    model.sparse["By"][:, 0] = torch.tensor([-1.0, -2.0, -0.5])  # as training leaves them
    opt = AdagradM(0.1, 0.2)
    for name in ("WyBy", "E"):
        table = model.out_table if name == "WyBy" else model.sparse["E"]
        opt.state[name] = (torch.rand_like(table), torch.rand_like(table))
    opt.state["dense"] = (torch.rand_like(model.dense), torch.rand_like(model.dense))
    before = _weights(model)
    state_before = {k: (a.clone(), v.clone()) for k, (a, v) in opt.state.items()}

    n = 2000  # many new rows: their spread can be checked against the fresh init's
    big = inc.grow_model(model, 3 + n, cfg.seed)
    inc.grow_optimizer(opt, 3, 3 + n)
    after = big.state_dict()
    for key, value in before.items():
        if key.startswith("dense."):
            assert torch.equal(after[key], value)
        else:
            assert torch.equal(after[key][:3], value), key
    fresh = GRU4RecModel(cfg, 3 + n)
    fresh.init_weights(cfg.seed)
    for name in ("Wy", "E"):
        new_rows, ref = big.sparse[name][3:], fresh.sparse[name][3:]
        bound = ref.abs().max().item()
        sigma = math.sqrt(6.0 / (3 + n + new_rows.shape[1]))
        assert bound <= sigma and new_rows.abs().max().item() <= sigma
        assert new_rows.std().item() == pytest.approx(ref.std().item(), rel=0.05)
    # a new item's bias starts at the known items' median, not at 0 above all of them
    assert torch.equal(big.sparse["By"][3:], torch.full((n, 1), -1.0))
    for name, (acc, vel) in opt.state.items():
        if name == "dense":
            assert torch.equal(acc, state_before[name][0])
            continue
        assert acc.shape[0] == 3 + n and torch.equal(acc[:3], state_before[name][0])
        assert torch.count_nonzero(acc[3:]) == 0 and torch.count_nonzero(vel[3:]) == 0
        assert torch.equal(vel[:3], state_before[name][1])


def test_a_warm_start_grows_only_items_it_trains_with_enough_events():
    """A new item gets a row when the window's index lists it (d, one event tonight) or with
    2 events tonight (c, 3); e and x have neither."""
    known = ItemMap(np.array(["a", "b"], dtype=object), np.array([5, 3]))
    window = ItemMap(np.array(["a", "d"], dtype=object), np.ones(2, dtype=np.int64))
    frame = pd.DataFrame({
        "session_id": ["s1"] * 4 + ["s2"] * 4,
        "item_id": ["a", "c", "d", "c", "c", "e", "x", "b"],
    })  # fmt: skip
    kept, tonight, record = inc.trainable(frame, window, known, 2)
    assert list(kept["item_id"]) == ["a", "c", "d", "c", "c", "b"]
    assert dict(zip(tonight.ids, tonight.support, strict=True)) == {"c": 3, "a": 1, "b": 1, "d": 1}
    assert record == {
        "min_new_item_support": 2, "new_item_support_counted_in": "tonight",
        "new_items_too_rare": 2, "events_of_rare_new_items_dropped": 2,
        "events_of_short_sessions_dropped": 0,
    }  # fmt: skip
    without = inc.trainable(frame, None, known, 2)[0]  # no window index: d needs 2 events too
    assert list(without["item_id"]) == ["a", "c", "c", "c", "b"]
    # counted over the window (tonight included): e has 1 event tonight but 2 in the window;
    # c has 3 tonight, but the window's count is what counts (here, 1: a made-up window)
    window_counts = pd.Series({"c": 1, "d": 1, "e": 2, "x": 1})
    kept, tonight, record = inc.trainable(frame, None, known, 2, window_counts)
    assert list(kept["item_id"]) == ["e", "b"]  # s1 is left with a alone: short
    assert record["new_item_support_counted_in"] == "window"
    assert record["events_of_rare_new_items_dropped"] == 5  # c x3, d, x
    assert record["events_of_short_sessions_dropped"] == 1 and record["new_items_too_rare"] == 3
    everything = inc.trainable(frame, None, known, 1)[0]
    assert len(everything) == len(frame)  # no index, no minimum: every event trains
    kept, tonight, _ = inc.trainable(frame[frame.item_id == "d"], None, known, 2)
    assert kept.empty and tonight is None  # nothing to train: nothing grows


def test_a_warm_start_drops_what_training_could_not_use_until_both_rules_hold():
    """Training drops sessions of fewer than 2 events, so an item whose events are there would
    get a row it never trains. s1 loses its rare d and is left with one event (c); c is then
    down to 2 events, one short of the minimum, so s2's c goes too; s2 keeps a b; s3 is a
    one-event session of a known item."""
    known = ItemMap(np.array(["a", "b"], dtype=object), np.array([5, 3]))
    frame = pd.DataFrame({
        "session_id": ["s1", "s1", "s2", "s2", "s2", "s2", "s3", "s4", "s4"],
        "item_id": ["c", "d", "a", "c", "b", "c", "a", "e", "e"],
    })  # fmt: skip
    kept, tonight, record = inc.trainable(frame, None, known, 3)
    assert list(kept["item_id"]) == ["a", "b"]
    assert dict(zip(tonight.ids, tonight.support, strict=True)) == {"a": 1, "b": 1}
    assert record["events_of_rare_new_items_dropped"] == 5  # d, then c twice, e twice
    assert record["events_of_short_sessions_dropped"] == 2  # s1's c, s3's a
    assert record["new_items_too_rare"] == 3
    assert len(kept) + 5 + 2 == len(frame)  # every event kept or counted
    kept, tonight, record = inc.trainable(frame, None, known, 2)  # c and e stay
    assert list(kept["item_id"]) == ["a", "c", "b", "c", "e", "e"]
    assert record["events_of_short_sessions_dropped"] == 2  # s1's c (after d), s3's a
    assert dict(zip(tonight.ids, tonight.support, strict=True)) == {"c": 2, "e": 2, "a": 1, "b": 1}


def test_the_cli_trains_only_the_unseen_sessions_and_grows_the_index(tmp_path):
    """Night 1: sessions 0-199 of items 0-39; night 2: the whole window, sessions 0-399, where
    sessions 200-399 also use items 40-44. The warm start trains sessions 200-399 only."""
    one = synthetic_sessions(n_sessions=200, seed=1)
    two = synthetic_sessions(n_sessions=400, n_items=45, seed=2)
    two = two[two.SessionId >= 200].copy()
    two["Time"] += one["Time"].max() + 3600 - two["Time"].min()
    both = pd.concat([one, two], ignore_index=True)
    night1, night2 = tmp_path / "n1.tsv", tmp_path / "n2.tsv"
    one.to_csv(night1, sep="\t", index=False)
    both.to_csv(night2, sep="\t", index=False)
    full, warm = tmp_path / "full", tmp_path / "warm"
    assert main(["train", "--train", str(night1), "--out", str(full), *FAST]) == 0
    code = main(
        ["train", "--train", str(night2), "--test", str(night2), "--warm-start", str(full),
         "--out", str(warm), *FAST]
    )  # fmt: skip
    assert code == 0
    m = json.loads((warm / "metrics.json").read_text())
    assert m["mode"] == "incremental" and [e["epoch"] for e in m["epochs"]] == [3, 4]
    w = m["warm_start"]
    assert w["sessions_trained"] == 200 and w["events_trained"] == len(two)
    assert w["events_in_split"] == len(both) and w["epochs_before"] == 2
    assert m["data_range"] == {"first": both.Time.min(), "last": both.Time.max()}
    assert m["lineage"] == {
        "full": str(full),
        "warm_starts": 1,
        "from": str(full / "model.pt"),
        "epochs": 2,
    }
    old, new = ckpt.Checkpoint(full), ckpt.Checkpoint(warm)
    n_old = len(old.item_map)
    assert list(new.item_map.ids[:n_old]) == list(old.item_map.ids)
    added = set(new.item_map.ids[n_old:])
    assert added == {str(i) for i in range(40, 45)} and w["new_items"] == 5
    assert new.epochs_done == 4 and new.extra["data_range"] == m["data_range"]
    # baselines learn from the whole window, not only the sessions the warm start trains on
    assert m["data"]["train_sessions"] == 400
    # a second warm start on the same window finds nothing new: 0 epochs, the same weights
    again = tmp_path / "again"
    args = ["train", "--train", str(night2), "--warm-start", str(warm), "--out", str(again)]
    assert main([*args, *FAST]) == 0
    m2 = json.loads((again / "metrics.json").read_text())
    assert m2["epochs"] == [] and m2["warm_start"]["events_trained"] == 0
    assert m2["warm_start"]["new_items"] == 0 and m2["n_items"] == m["n_items"]  # no untrained row
    assert m2["lineage"]["warm_starts"] == 1  # nothing trained: no step further
    same, before = ckpt.Checkpoint(again).payload["weights"], new.payload["weights"]
    assert all(torch.equal(same[k], before[k]) for k in before)
    assert inc.unseen_sessions(read_events(night2), new.extra["data_range"], "x").empty
    # the saved index's support is the lineage's: night 1's plus the events trained tonight
    tonight = two["ItemId"].astype(str).value_counts()
    expected = [
        old.item_map.support[i] + tonight.get(item, 0) if i < n_old else tonight[item]
        for i, item in enumerate(new.item_map.ids)
    ]
    assert list(new.item_map.support) == expected
    assert list(ckpt.Checkpoint(again).item_map.support) == expected  # nothing trained: as is
    # --warm-epochs: epochs of the warm start, whatever n_epochs says. With items 40-44 too
    # rare to get a row, their events are not trained but are seen: a warm start from that
    # model finds nothing new in the same window.
    strict = tmp_path / "strict"
    args = ["train", "--train", str(night2), "--warm-start", str(full), "--out", str(strict)]
    assert main([*args, *FAST, "--warm-epochs", "1", "--min-new-item-support", "10000"]) == 0
    m3 = json.loads((strict / "metrics.json").read_text())
    rare = int((~two["ItemId"].astype(str).isin(set(old.item_map.ids))).sum())
    assert rare > 0 and m3["warm_start"]["events_of_rare_new_items_dropped"] == rare
    assert [e["epoch"] for e in m3["epochs"]] == [3] and m3["warm_start"]["new_items"] == 0
    assert m3["data_range"] == {"first": both.Time.min(), "last": both.Time.max()}
    args = ["train", "--train", str(night2), "--warm-start", str(strict), "--out", str(again)]
    shutil.rmtree(again)
    assert main([*args, *FAST]) == 0
    assert json.loads((again / "metrics.json").read_text())["warm_start"]["events_unseen"] == 0


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, caplog):
    path = tmp_path / "n1.tsv"
    synthetic_sessions(n_sessions=120).to_csv(path, sep="\t", index=False)
    full = tmp_path / "full"
    assert main(["train", "--train", str(path), "--out", str(full), *FAST]) == 0
    loaded = ckpt.Checkpoint(full)
    other = dataclasses.replace(loaded.config, layers=(48,), n_epochs=1, device="cpu")
    with pytest.raises(ckpt.CheckpointError, match=r"layers: checkpoint \[24\], tonight \[48\]"):
        inc.check_compatible(loaded, other)
    inc.check_compatible(loaded, dataclasses.replace(loaded.config, n_epochs=7))  # may differ
    out = tmp_path / "x"
    args = ["train", "--train", str(path), "--warm-start", str(full), "--out", str(out)]
    assert main([*args, *FAST, "--set", "momentum=0.5"]) == 2 and not out.exists()
    assert "momentum: checkpoint 0.2, tonight 0.5" in caplog.text
    # the nightly pipeline's way: a refused warm start falls back to a full training, and says so
    # (with n_epochs, 2, not the warm start's --warm-epochs 1)
    code = main([*args, *FAST, "--set", "momentum=0.5", "--fallback-full", "--warm-epochs", "1"])
    m = json.loads((out / "metrics.json").read_text())
    assert code == 0 and m["mode"] == "full" and "momentum" in m["warm_start_refused"]
    assert m["lineage"] == {"full": str(out), "warm_starts": 0, "epochs": 2}
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]


def test_epoch_selection_stops_after_patience_and_trains_the_best_count(tmp_path, monkeypatch):
    """A scripted validation curve 0.1, 0.3, 0.2, 0.25 (then 0.9, never reached): with
    patience 2 the selection stops after epoch 4 and the model trains 2 epochs on train."""
    import gru4rec.selection as selection

    frame = synthetic_sessions(n_sessions=300)
    paths = {}
    for name, rows in (
        ("train", frame[frame.SessionId < 250]),
        ("train_tr", frame[frame.SessionId < 200]),
        ("valid", frame[(frame.SessionId >= 200) & (frame.SessionId < 250)]),
        ("test", frame[frame.SessionId >= 250]),
    ):
        paths[name] = tmp_path / f"{name}.tsv"
        rows.to_csv(paths[name], sep="\t", index=False)
    curve = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    real = selection.evaluate_model
    calls = []

    def scripted(model, data, cutoffs, ties):
        result = real(model, data, cutoffs, ties)
        calls.append(data.n_sessions)
        result["mrr@20"] = next(curve)
        return result

    monkeypatch.setattr(selection, "evaluate_model", scripted)
    out = tmp_path / "out"
    args = [
        "train",
        "--train",
        str(paths["train"]),
        "--test",
        str(paths["test"]),
        "--select-epochs",
        str(paths["train_tr"]),
        str(paths["valid"]),
        "--out",
        str(out),
    ]
    assert main([*args, *FAST, "--set", "n_epochs=6"]) == 0  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    sel = m["epoch_selection"]
    assert [p["mrr@20"] for p in sel["curve"]] == [0.1, 0.3, 0.2, 0.25]
    assert sel["best_epochs"] == 2 and sel["max_epochs"] == 6 and sel["metric"] == "mrr@20"
    assert [e["epoch"] for e in m["epochs"]] == [1, 2] and m["lineage"]["epochs"] == 2
    assert sel["data"]["train_tr_sessions"] == 200 and sel["data"]["valid_sessions"] == 50
    assert calls == [50] * 4  # evaluated on the valid split after each selection epoch


def test_a_refresh_on_a_days_parquet_sessions_grows_the_index_from_the_data(tmp_path):
    """The pipeline's refresh: --train is a day of sessions (Parquet, no items table beside
    it) and --popularity the window's table, indexed differently: both are mapped by id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    one = synthetic_sessions(n_sessions=150, seed=1)
    tsv = tmp_path / "n1.tsv"
    one.to_csv(tsv, sep="\t", index=False)
    full = tmp_path / "full"
    assert main(["train", "--train", str(tsv), "--out", str(full), *FAST]) == 0
    day = synthetic_sessions(n_sessions=120, n_items=45, seed=3)
    day["Time"] += one["Time"].max() + 3600 - day["Time"].min()
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    pq.write_table(
        pa.table({
            "session_id": day["SessionId"].astype(str),
            "user_id": day["SessionId"].astype(str),
            "item_id": day["ItemId"].astype(str),
            "ts": pd.to_datetime(day["Time"], unit="s", utc=True),
            "seq": day.groupby("SessionId").cumcount().astype("int32"),
        }),
        sessions / "part-0.parquet",
    )  # fmt: skip
    ids = [str(i) for i in range(39, -1, -1)]  # the window's index: another order, no new items
    pop = tmp_path / "popularity"
    pop.mkdir()
    pq.write_table(
        pa.table({"item_idx": list(range(40)), "item_id": ids, "weight": [1.0 + i for i in
                  range(40)], "alpha": [0.5] * 40}),
        pop / "part-0.parquet",
    )  # fmt: skip
    out = tmp_path / "fresh"
    args = ["train", "--train", str(sessions), "--warm-start", str(full), "--popularity",
            str(pop), "--out", str(out), *FAST]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["warm_start"]["new_items"] == 5 and m["warm_start"]["events_trained"] == len(day)
    assert m["sampling"]["source"] == str(pop)
    grown = ckpt.Checkpoint(out).item_map
    assert set(grown.ids[40:]) == {str(i) for i in range(40, 45)}
    assert list(grown.ids[:40]) == list(ckpt.Checkpoint(full).item_map.ids)
