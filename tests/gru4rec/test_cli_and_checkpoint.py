import json
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gru4rec import checkpoint as ckpt
from gru4rec.cli import main
from gru4rec.config import Config
from gru4rec.data import ItemMap

from .conftest import synthetic_sessions

FAST = ["--set", "layers=24", "--set", "batch_size=16", "--set", "n_sample=16",
        "--set", "sample_store_size=1600", "--set", "n_epochs=2"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tsv_split, tmp_path_factory):
    train, test = tsv_split
    out = tmp_path_factory.mktemp("run") / "rsc"
    code = main(["train", "--train", str(train), "--test", str(test), "--out", str(out), *FAST])
    assert code == 0
    return out


def test_train_writes_model_metrics_and_report(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"model.pt", "metrics.json", "report.html", "loss.png", "metrics.png"} <= names
    assert {"config.json", "items.parquet"} <= names
    assert not [p for p in trained.parent.iterdir() if ".staging" in p.name]
    m = json.loads((trained / "metrics.json").read_text())
    for k in (1, 5, 10, 20):
        assert 0 <= m[f"recall@{k}"] <= 1 and 0 <= m[f"mrr@{k}"] <= m[f"recall@{k}"]
    assert m["events_per_second"] > 0 and m["seconds_per_epoch"] > 0
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert set(m["baselines"]) == {"pop", "spop", "itemknn", "vsknn", "stan"}
    assert m["data"]["test_unknown_item_events_dropped"] == 3
    html = (trained / "report.html").read_text()
    for label in ("POP", "S-POP", "Item-KNN", "GRU4Rec", "vs best baseline", "loss.png"):
        assert label in html
    for png in ("loss.png", "metrics.png"):
        with Image.open(trained / png) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_evaluate_reproduces_the_training_metrics(trained, tsv_split, tmp_path, capsys):
    _, test = tsv_split
    assert main(["evaluate", "--model", str(trained), "--test", str(test)]) == 0
    got = json.loads(capsys.readouterr().out)
    saved = json.loads((trained / "metrics.json").read_text())
    for k in ("recall@20", "mrr@20", "recall@1"):
        assert got[k] == saved[k]


def test_baselines_command(tsv_split, tmp_path):
    train, test = tsv_split
    out = tmp_path / "b"
    assert main(["baselines", "--train", str(train), "--test", str(test), "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())["baselines"]
    assert res["spop"]["n_points"] == res["pop"]["n_points"] > 0


def test_checkpoint_round_trip_and_resume(trained, tsv_split, tmp_path):
    loaded = ckpt.Checkpoint(trained)
    assert loaded.epochs_done == 2 and loaded.config.layers == (24,)
    model = loaded.model("cpu")
    state = torch.load(trained / "model.pt", weights_only=True)["weights"]
    assert torch.equal(model.sparse["Wy"], state["sparse.Wy"])
    train, _ = tsv_split
    out = tmp_path / "resumed"
    args = ["train", "--train", str(train), "--resume", str(trained), "--out", str(out)]
    assert main([*args, "--set", "n_epochs=3", "--no-baselines"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [3]  # continued after epoch 2
    assert ckpt.Checkpoint(out).epochs_done == 3


def test_checkpoint_refuses_a_different_item_index(trained, tmp_path):
    other = synthetic_sessions(seed=5, n_items=41)
    path = tmp_path / "other.tsv"
    other.to_csv(path, sep="\t", index=False)
    loaded = ckpt.Checkpoint(trained)
    im = ItemMap.from_train(other["ItemId"].astype(str).to_numpy(dtype=object))
    with pytest.raises(ckpt.CheckpointError, match="different item index"):
        loaded.check_items(im)
    code = main(
        ["train", "--train", str(path), "--resume", str(trained), "--out", str(tmp_path / "x")]
    )
    assert code == 2


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "gru4rec-checkpoint", "x": Evil()}, f)
    with pytest.raises(ckpt.CheckpointError, match="weights_only=True"):
        ckpt.Checkpoint(path)


def test_bad_input_exits_2_with_one_clear_line(tmp_path, caplog):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    assert main(["train", "--train", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "expected columns SessionId, ItemId, Time" in caplog.text
    assert not (tmp_path / "o").exists()
    assert main(["train", "--train", str(bad), "--out", "o", "--set", "lossy=1"]) == 2
    assert "unknown parameter 'lossy'" in caplog.text


def _pipeline_run(root):
    """The Spark jobs' layout: datasets/run=D/{train,test,items}; ids are strings."""
    frame = synthetic_sessions(n_sessions=300)
    frame["session_id"] = "s" + frame.SessionId.astype(str)
    frame["item_id"] = "item-" + frame.ItemId.astype(str)
    frame["user_id"] = "u"
    frame["ts"] = pd.to_datetime(frame.Time, unit="s", utc=True)
    frame["seq"] = frame.groupby("session_id").cumcount()
    run = root / "datasets" / "run=2026-01-01"
    cols = ["session_id", "user_id", "item_id", "ts", "seq"]
    tr, te = frame[frame.SessionId < 250][cols], frame[frame.SessionId >= 250][cols]
    for name, part in (("train", tr), ("test", te)):
        (run / name).mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), run / name / "p.parquet")
    support = tr.item_id.value_counts()
    items = pd.DataFrame({"item_id": sorted(support.index, key=lambda i: (-support[i], i))})
    items["item_idx"] = np.arange(len(items), dtype=np.int32)
    items["support"] = items.item_id.map(support).astype(np.int64)
    (run / "items").mkdir()
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), run / "items" / "p.parquet")
    return run, items


def test_train_on_pipeline_parquet_datasets(tmp_path):
    run, items = _pipeline_run(tmp_path)
    out = tmp_path / "model"
    args = ["train", "--train", str(run / "train"), "--test", str(run / "test"), "--out", str(out)]
    assert main([*args, *FAST, "--no-baselines"]) == 0
    saved = pd.read_parquet(out / "items.parquet")
    assert saved.item_id.tolist() == items.item_id.tolist()  # the shared index, not rebuilt
    assert json.loads((out / "metrics.json").read_text())["recall@20"] > 0


def test_training_samples_from_the_published_popularity_table(tmp_path):
    """The table's weights are what training draws from, and its alpha is the one recorded,
    whatever the parameter set says (yoochoose: sample_alpha 0.2; the table: 0.5)."""
    from gru4rec.data import ItemMap, SamplingTable
    from gru4rec.train import Trainer

    run, items = _pipeline_run(tmp_path)
    pop = items.copy()
    # deliberately not support^0.5 for the head item: only a reader of the table gets it
    pop["weight"] = pop.support.astype(float) ** 0.5
    pop.loc[0, "weight"] = 0.01
    pop["cdf"] = pop.weight.cumsum() / pop.weight.sum()
    pop["alpha"] = 0.5
    (run / "popularity").mkdir()
    pq.write_table(
        pa.Table.from_pandas(pop, preserve_index=False), run / "popularity" / "p.parquet"
    )
    out = tmp_path / "model"
    args = ["train", "--train", str(run / "train"), "--test", str(run / "test"), "--out", str(out)]
    assert main([*args, "--params", "yoochoose", *FAST, "--no-baselines"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sample_alpha"] == 0.5
    assert metrics["sampling"] == {"source": str(run / "popularity"), "alpha": 0.5}
    assert ckpt.Checkpoint(out).extra["sampling"]["alpha"] == 0.5
    item_map = ItemMap.read_parquet(run / "items")
    table = SamplingTable.read_parquet(run / "popularity", item_map)
    trainer = Trainer(Config(n_sample=16, device="cpu"), item_map, sample_weights=table.weights)
    np.testing.assert_allclose(trainer.store.cdf.numpy(), pop.cdf.to_numpy(), rtol=1e-12)
    # a table indexing items differently is refused, naming what it expected
    pq.write_table(
        pa.Table.from_pandas(
            pop.iloc[::-1].assign(item_idx=pop.item_idx.to_numpy()), preserve_index=False
        ),
        run / "popularity" / "p.parquet",
    )
    assert main([*args[:-1], str(tmp_path / "m2"), *FAST, "--no-baselines"]) == 2
    assert not (tmp_path / "m2").exists()


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "evaluate", "baselines"))
    assert Config().loss == "cross-entropy"
