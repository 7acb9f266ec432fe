"""Acceptance: the official settings on rsc15_sample reach >= 0.98 x the official numbers.

Reference values: GRU4REC_REFERENCE.md, the official PyTorch code on the same files
(train_full -> test, conservative ties, 10 epochs, CPU).
"""

import pytest

from gru4rec.config import Config
from gru4rec.data import ItemMap, build_sessions, read_events
from gru4rec.evaluate import evaluate_model
from gru4rec.train import Trainer

REFERENCE = {
    "rsc15": {"recall@5": 0.5104, "mrr@5": 0.3372, "recall@10": 0.6049, "mrr@10": 0.3499,
              "recall@20": 0.6840, "mrr@20": 0.3555},
    "retailrocket": {"recall@5": 0.5237, "mrr@5": 0.3481, "recall@10": 0.6133,
                     "mrr@10": 0.3601, "recall@20": 0.6850, "mrr@20": 0.3652},
}  # fmt: skip


@pytest.fixture(scope="module")
def rsc15_sample(shared_data):
    root = shared_data / "rsc15_sample"
    train_frame = read_events(root / "yoochoose-clicks-100k_train_full.txt")
    item_map = ItemMap.from_train(train_frame["item_id"].to_numpy(dtype=object))
    train = build_sessions(train_frame, item_map, "train")
    test = build_sessions(read_events(root / "yoochoose-clicks-100k_test.txt"), item_map, "test")
    return item_map, train, test


@pytest.mark.slow
@pytest.mark.parametrize("params", sorted(REFERENCE))
def test_reference_settings_reach_98_percent_of_the_official_numbers(rsc15_sample, params):
    item_map, train, test = rsc15_sample
    cfg = Config.from_params(params).with_overrides(["device=cpu"])
    assert cfg.n_epochs == 10
    trainer = Trainer(cfg, item_map)
    trainer.fit(train, progress=False)
    got = evaluate_model(trainer.model, test, mode="conservative")
    short = {k: (round(got[k], 4), v) for k, v in REFERENCE[params].items() if got[k] < 0.98 * v}
    assert not short, f"{params}: below 0.98 x reference (got, reference): {short}"
