import numpy as np
import pytest

from gru4rec.baselines import evaluate_baseline, item_knn
from gru4rec.data import SessionData


def sessions(seqs):
    lengths = [len(s) for s in seqs]
    return SessionData(
        items=np.array([i for s in seqs for i in s], dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        session_ids=np.array([str(i) for i in range(len(seqs))], dtype=object),
    )


TRAIN = sessions([[0, 1], [0, 1, 2], [0, 2], [3, 0], [1, 2]])
SUPPORT = np.array([4, 3, 3, 1])  # events per item in TRAIN


def test_item_knn_cosine_by_hand():
    idx, sim = item_knn(TRAIN, 4, n_neighbors=3, lam=0.0, alpha=0.5)
    # sessions containing: 0 -> {0,1,2,3}, 1 -> {0,1,4}, 2 -> {1,2,4}, 3 -> {3}
    expected_01 = 2 / np.sqrt(4 * 3)
    row0 = dict(zip(idx[0].tolist(), sim[0].tolist(), strict=True))
    assert row0[1] == pytest.approx(expected_01)
    assert row0[2] == pytest.approx(2 / np.sqrt(4 * 3))
    assert row0[3] == pytest.approx(1 / np.sqrt(4 * 1))
    row1 = dict(zip(idx[1].tolist(), sim[1].tolist(), strict=True))
    assert row1[2] == pytest.approx(2 / np.sqrt(3 * 3))
    # regularization shrinks rare items' similarity
    _, sim_reg = item_knn(TRAIN, 4, n_neighbors=3, lam=20.0, alpha=0.5)
    assert sim_reg.max() < sim.max()


def test_pop_ranks_by_support_with_conservative_ties():
    test = sessions([[3, 0, 2]])  # points: 3->0, 0->2
    res = evaluate_baseline("pop", TRAIN, test, SUPPORT, cutoffs=(1, 3))
    # target 0 is the most popular: rank 1. target 2 ties with item 1 at 3: rank 3
    assert res["recall@1"] == 0.5 and res["recall@3"] == 1.0
    assert res["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)


def test_spop_prefers_items_of_the_current_session():
    test = sessions([[3, 2, 3]])  # points: 3 -> 2 (no repeat yet), [3,2] -> 3 (seen once)
    res = evaluate_baseline("spop", TRAIN, test, SUPPORT, cutoffs=(1, 2, 4))
    # point 1: only item 3 seen; target 2 -> session items first (3), then by pop: 0,1/2 tie
    # secondary popularity ranks 0 (4) above 2 (3) and ties 2 with 1 (3): conservative rank 4
    # point 2: items 3 and 2 seen once each; tie on count, 2 has more support: 3 ranks 2
    assert res["mrr@4"] == pytest.approx((1 / 4 + 1 / 2) / 2)


def test_itemknn_scores_neighbours_of_the_current_item():
    test = sessions([[3, 0]])
    res = evaluate_baseline("itemknn", TRAIN, test, SUPPORT, cutoffs=(1,))
    assert res["recall@1"] == 1.0  # 0 is item 3's only neighbour


def test_itemknn_padding_never_overwrites_item_0():
    # item 2 has one neighbour, item 0, which is NOT the popularity winner (item 1 is):
    # the padded slots of 2's row must not reset 0's similarity to 0, or popularity would
    # rank item 1 first and the target 0 would miss recall@1.
    train = sessions([[2, 0], [1, 3], [1, 3], [1, 3], [3, 1]])
    support = np.array([1, 4, 1, 4])
    idx, sim = item_knn(train, 4, n_neighbors=3, lam=0.0)
    assert idx[2].tolist() == [0, -1, -1] and sim[2, 0] > 0
    res = evaluate_baseline("itemknn", train, sessions([[2, 0]]), support, cutoffs=(1,))
    assert res["recall@1"] == 1.0
