import numpy as np
import pandas as pd
import pytest
import torch

from gru4rec.config import Config
from gru4rec.data import ItemMap, build_sessions
from gru4rec.evaluate import RankingMetrics, evaluate_model, ranks
from gru4rec.model import GRU4RecModel

SCORES = torch.tensor(
    [
        [0.5, 0.9, 0.5, 0.1, 0.5],  # target 0 ties with items 2 and 4, one item above
        [0.2, 0.2, 0.2, 0.2, 0.2],  # all tied
        [0.9, 0.1, 0.3, 0.2, 0.0],  # target 0 strictly best
    ]
)
TARGETS = torch.tensor([0, 3, 0])


def test_tie_modes_on_constructed_ties():
    assert ranks(SCORES, TARGETS, "conservative").tolist() == [4.0, 5.0, 1.0]
    assert ranks(SCORES, TARGETS, "standard").tolist() == [2.0, 1.0, 1.0]
    assert ranks(SCORES, TARGETS, "median").tolist() == [3.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="tie mode"):
        ranks(SCORES, TARGETS, "optimistic")


def test_secondary_key_breaks_ties():
    secondary = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0]] * 3)
    r = ranks(SCORES, TARGETS, "conservative", secondary)
    # row 0: item 1 above; among the 0.5-ties only item 2 has a larger secondary
    assert r[0].item() == 3.0


def test_rank_equal_to_k_counts_as_a_hit():
    m = RankingMetrics((1, 5, 20))
    m.add(torch.tensor([1.0, 5.0, 20.0, 21.0]))
    res = m.result()
    assert res["recall@1"] == 0.25
    assert res["recall@5"] == 0.5  # rank 5 is within the top 5
    assert res["recall@20"] == 0.75  # rank 20 counts, 21 does not
    assert res["mrr@20"] == pytest.approx((1 + 1 / 5 + 1 / 20) / 4)
    assert res["mrr@5"] == pytest.approx((1 + 1 / 5) / 4)


def test_unknown_test_items_are_dropped_and_the_session_closes_up():
    item_map = ItemMap(np.array(["a", "b", "c"], dtype=object), np.array([3, 2, 1]))
    frame = pd.DataFrame(
        {
            "session_id": ["s1"] * 4 + ["s2"] * 2 + ["s3"] * 2,
            "item_id": ["a", "zz", "b", "c", "a", "zz", "b", "c"],
            "time": [1, 2, 3, 4, 5, 6, 0, 1],
        }
    )
    data = build_sessions(frame, item_map, "test")
    assert data.dropped_unknown == 2
    assert data.dropped_short == 1  # s2 keeps one event: no evaluation point
    assert data.session_ids.tolist() == ["s3", "s1"]  # by start time
    assert data.items.tolist() == [1, 2, 0, 1, 2]
    assert data.n_pairs == 3


def _tiny_model(seed=0):
    cfg = Config(layers=(8,), n_sample=0, batch_size=4, dropout_p_hidden=0.0, device="cpu")
    model = GRU4RecModel(cfg, 12)
    model.init_weights(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.sparse["By"].normal_()
        model.dense.normal_(0, 0.5)
    return model


def test_hidden_state_is_reset_between_test_sessions():
    model = _tiny_model()
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 7, size=40)
    items = rng.integers(0, 12, size=int(lengths.sum()))
    frame = pd.DataFrame(
        {
            "session_id": np.repeat([f"s{i:03d}" for i in range(40)], lengths),
            "item_id": [str(i) for i in items],
            "time": np.arange(int(lengths.sum())),
        }
    )
    item_map = ItemMap(np.array([str(i) for i in range(12)], dtype=object), np.ones(12, int))
    data = build_sessions(frame, item_map, "test")
    batched = evaluate_model(model, data, batch_size=7)
    # oracle: every session on its own from a zero state, one event at a time
    metrics = RankingMetrics()
    for s in range(data.n_sessions):
        seq = data.items[data.offsets[s] : data.offsets[s + 1]]
        hidden = model.zero_hidden(1)
        for t in range(len(seq) - 1):
            hidden = model.step_inference(torch.tensor([seq[t]]), hidden)
            scores = model.score_all(hidden[-1])
            metrics.add(torch.tensor([(scores[0] >= scores[0, seq[t + 1]]).sum().item()]))
    alone = metrics.result()
    for k in alone:
        assert batched[k] == pytest.approx(alone[k], abs=1e-12), k
    assert batched["n_points"] == data.n_pairs
