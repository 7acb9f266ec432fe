import numpy as np
import pytest
import torch

from gru4rec.baselines import evaluate_baseline
from gru4rec.config import Config
from gru4rec.data import ItemMap, build_sessions, read_events
from gru4rec.evaluate import evaluate_model
from gru4rec.train import Trainer

SMALL = dict(
    layers=(32,), batch_size=16, n_sample=32, sample_store_size=32 * 50, n_epochs=4,
    learning_rate=0.1, momentum=0.2, dropout_p_hidden=0.1, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def splits(tsv_split):
    train_path, test_path = tsv_split
    frame = read_events(train_path)
    im = ItemMap.from_train(frame["item_id"].to_numpy(dtype=object))
    return im, build_sessions(frame, im, "train"), build_sessions(read_events(test_path), im)


def fit(splits, **overrides):
    im, train, test = splits
    cfg = Config.from_dict({**SMALL, **overrides})
    trainer = Trainer(cfg, im)
    history = trainer.fit(train, progress=False)
    return trainer, history, evaluate_model(trainer.model, test)


def test_same_seed_same_metrics_different_seed_different(splits):
    _, h1, m1 = fit(splits)
    _, h2, m2 = fit(splits)
    assert [e.loss for e in h1] == [e.loss for e in h2]
    assert m1 == m2
    _, h3, _ = fit(splits, seed=7)
    assert [e.loss for e in h3] != [e.loss for e in h1]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(loss="cross-entropy", logq=1.0),
        dict(loss="bpr-max", elu_param=0.5, bpreg=1.0, logq=0.0, momentum=0.0),
        dict(loss="top1-max", logq=0.0, embedding="separate", embedding_dim=24),
        dict(loss="cross-entropy", logq=0.0, embedding="onehot", layers=(32, 24)),
        dict(loss="top1", logq=0.0, learning_rate=0.05),
        dict(loss="bpr", logq=0.0, learning_rate=0.05, n_sample=0),
    ],
    ids=["xe-logq", "bpr-max-elu", "top1-max-separate", "xe-onehot-2layers", "top1", "bpr"],
)
def test_every_loss_and_embedding_mode_learns_the_structure(splits, overrides):
    im, train, test = splits
    trainer, history, metrics = fit(splits, **overrides)
    assert all(np.isfinite(e.loss) for e in history)
    assert history[-1].loss < history[0].loss
    pop = evaluate_baseline("pop", train, test, im.support)
    # the data walks i -> i + 1 80% of the time; POP cannot see that
    assert metrics["recall@5"] > pop["recall@5"] + 0.2, (metrics, pop)


def test_epoch_uses_every_pair_once(splits):
    im, train, _ = splits
    trainer = Trainer(Config.from_dict({**SMALL, "n_epochs": 1}), im)
    stats = trainer.train_epoch(train, progress=False)
    assert stats.events == train.n_pairs


def test_a_large_split_trains_in_schedule_pieces_exactly_as_whole(splits, monkeypatch):
    """A split over SCHEDULE_PIECE training points (10^8-event windows) is trained on its
    schedule computed piece by piece, from int32 items (read_compact): the same model, bit
    for bit, as the whole schedule over int64 items."""
    import dataclasses

    import gru4rec.train as train_module

    im, train, _ = splits
    cfg = Config.from_dict({**SMALL, "n_epochs": 2})
    whole = Trainer(cfg, im)
    whole.fit(train, progress=False)
    compact = dataclasses.replace(train, items=train.items.astype(np.int32), session_ids=None)
    monkeypatch.setattr(train_module, "SCHEDULE_PIECE", 97)
    pieces = list(train_module.Trainer(cfg, im).schedule_pieces(compact))
    assert len(pieces) > 10  # the case: many pieces, slot changes carried across them
    pieced = Trainer(cfg, im)
    pieced.fit(compact, progress=False)
    assert [e.loss for e in pieced.history] == [e.loss for e in whole.history]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, pieced.model.state_dict()[name]), name


def test_no_backprop_through_time(splits):
    im, train, _ = splits
    trainer = Trainer(Config.from_dict(SMALL), im)
    hidden = trainer.model.zero_hidden(4)
    inp, tgt = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    _, hidden = trainer.step(inp, tgt, hidden)
    assert all(not h.requires_grad and h.grad_fn is None for h in hidden)
    _, hidden2 = trainer.step(tgt, inp, hidden)  # a second step on a detached state works
    assert hidden2[0].shape == (4, 32)


def test_only_touched_item_rows_change(splits):
    im, _, _ = splits
    trainer = Trainer(Config.from_dict({**SMALL, "n_sample": 0}), im)
    before = trainer.model.sparse["Wy"].clone()
    bias_before = trainer.model.sparse["By"].clone()
    inp, tgt = torch.tensor([0, 1]), torch.tensor([2, 3])
    trainer.step(inp, tgt, trainer.model.zero_hidden(2))
    changed = (trainer.model.sparse["Wy"] != before).any(dim=1).nonzero().view(-1).tolist()
    assert changed == [0, 1, 2, 3]  # inputs (shared embedding) and targets
    changed_b = (trainer.model.sparse["By"] != bias_before).any(dim=1).nonzero().view(-1)
    assert changed_b.tolist() == [2, 3]  # biases of the scored columns only


def test_glorot_init_ranges(splits):
    im, _, _ = splits
    trainer = Trainer(Config.from_dict(SMALL), im)
    w = trainer.model.dense_views()
    h, n = 32, len(im)
    sigma_gate = np.sqrt(6 / (h + h))  # per gate block of Wx (input width = h when shared)
    assert w["Wx0"].abs().max() <= sigma_gate and w["Wx0"].abs().max() > 0.9 * sigma_gate
    assert w["b0"].abs().max() == 0
    wy = trainer.model.sparse["Wy"]
    sigma_y = np.sqrt(6 / (n + h))
    assert wy.abs().max() <= sigma_y and wy.abs().max() > 0.9 * sigma_y
    assert trainer.model.sparse["By"].abs().max() == 0


def test_dropout_p_is_the_drop_rate_and_survivors_are_scaled():
    from gru4rec.model import dropout_mask

    torch.manual_seed(0)
    x = torch.ones(400, 500)
    mask = dropout_mask(x, 0.3)
    dropped = (mask == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01  # p = 0.3 drops 30%, it is not a keep probability
    assert torch.allclose(mask[mask > 0], torch.tensor(1 / 0.7))


def test_samples_are_drawn_on_the_training_device_in_bulk(splits):
    im, train, _ = splits
    trainer = Trainer(Config.from_dict(SMALL), im)
    trainer.train_epoch(train, progress=False)
    store = trainer.store
    assert store._store.device == trainer.device
    steps = trainer.schedule(train).n_steps
    # one pre-drawn store of 50 rows serves 50 mini-batches: redraws, not per-step draws
    assert store.draws == -(-steps // store.rows)
