"""V-SKNN and STAN against hand-computed scores on a tiny example, and against a plain
per-point loop (written here, independently of the vectorised code) on random sessions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gru4rec.baselines import evaluate_baseline, evaluation_points
from gru4rec.data import SessionData
from gru4rec.evaluate import ranks, sparse_ranks
from gru4rec.sknn import KnnSettings, SessionIndex, StanSettings, stan_scores, vsknn_scores

A, B, C, D, E, F = range(6)


def _sessions(seqs, ends=None) -> SessionData:
    items = np.array([i for s in seqs for i in s], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    times = None
    if ends is not None:  # each session's events one second apart, ending at its end time
        times = np.concatenate([np.arange(len(s), dtype=float) - len(s) + 1 + e
                                for s, e in zip(seqs, ends, strict=True)])  # fmt: skip
    return SessionData(items, offsets, np.arange(len(seqs)).astype(object), times=times)


TRAIN = _sessions([[A, B, C], [B, D], [E, F]], ends=[100.0, 200.0, 300.0])
INDEX = SessionIndex.build(TRAIN.items, TRAIN.offsets, 6, TRAIN.times)
PREFIX = np.array([A, B])  # the current session so far: A then B


def test_vsknn_scores_by_hand():
    got = vsknn_scores(INDEX, PREFIX, np.array([0]), np.array([1])).toarray()[0]
    # weights A: 1/2, B: 2/2; dot with (A B C) = 1.5, with (B D) = 1, (E F) shares nothing
    assert got == pytest.approx([1.5, 2.5, 1.5, 1.0, 0.0, 0.0])
    one = vsknn_scores(INDEX, PREFIX, np.array([0]), np.array([1]), KnnSettings(k=1)).toarray()[0]
    assert one == pytest.approx([1.5, 1.5, 1.5, 0.0, 0.0, 0.0])  # the nearest only
    # a sample of 1: the most recent session sharing an item is (B D), ending at t=200
    recent = vsknn_scores(INDEX, PREFIX, np.array([0]), np.array([1]), KnnSettings(100, 1))
    recent = recent.toarray()[0]
    assert recent == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])


def test_stan_scores_by_hand():
    settings = StanSettings(lambda_spw=1.0, lambda_snh=1000 / 86400, lambda_inh=1.0)
    times = np.array([999.0, 1000.0])  # the current event (B) at t=1000
    got = stan_scores(INDEX, PREFIX, np.array([0]), np.array([1]), times, settings).toarray()[0]
    e = math.exp
    sim0 = (e(-1) + 1) / (math.sqrt(2) * math.sqrt(3)) * e(-900 / 1000)  # (A B C), t=100
    sim1 = 1 / (math.sqrt(2) * math.sqrt(2)) * e(-800 / 1000)  # (B D), t=200
    # the most recent common item is B in both: at position 2 of (A B C), 1 of (B D)
    want = [sim0 * e(-1), sim0 + sim1, sim0 * e(-1), sim1 * e(-1), 0.0, 0.0]
    assert got == pytest.approx(want)
    # without times the time decay is off
    untimed = stan_scores(INDEX, PREFIX, np.array([0]), np.array([1]), None, settings).toarray()[0]
    assert untimed[D] == pytest.approx(0.5 * e(-1))


def _loop_reference(name, train, seq, now, k, sample, spw=1.02, snh=5.0, inh=2.05):
    """One point, by the definitions, with Python loops and dicts."""
    pos = {}
    for p, item in enumerate(seq, start=1):
        pos[item] = p  # most recent position
    L = len(seq)
    past = []
    for n in range(train.n_sessions):
        s = train.items[train.offsets[n] : train.offsets[n + 1]].tolist()
        npos = {}
        for p, item in enumerate(s, start=1):
            npos[item] = p
        end = train.times[train.offsets[n + 1] - 1]
        if set(npos) & set(pos):
            past.append((end, n, npos))
    past.sort(key=lambda t: (-t[0], -t[1]))
    past = past[:sample]
    scored = []
    for end, n, npos in past:
        common = set(npos) & set(pos)
        if name == "vsknn":
            sim = sum(pos[i] / L for i in common)
        else:
            sim = sum(math.exp((pos[i] - L) / spw) for i in common)
            sim /= math.sqrt(len(pos)) * math.sqrt(len(npos))
            sim *= math.exp(-max(now - end, 0.0) / (snh * 86400))
        scored.append((sim, end, n, npos, common))
    scored.sort(key=lambda t: (-t[0], -t[1]))
    scores = np.zeros(6 if train is TRAIN else 40)
    for sim, _, _, npos, common in scored[:k]:
        anchor = npos[max(common, key=lambda i: pos[i])]
        for item, p in npos.items():
            scores[item] += sim if name == "vsknn" else sim * math.exp(-abs(p - anchor) / inh)
    return scores


@pytest.mark.parametrize("name", ["vsknn", "stan"])
def test_batched_scores_equal_a_per_point_loop_on_random_sessions(name):
    rng = np.random.default_rng(7)
    n_items = 40

    def random_sessions(n, t0):
        seqs = [rng.integers(0, n_items, rng.integers(2, 9)).tolist() for _ in range(n)]
        ends = t0 + np.sort(rng.uniform(0, 10 * 86400, n))
        return _sessions(seqs, ends)

    train = random_sessions(300, 0.0)
    test = random_sessions(40, 11 * 86400.0)
    assert any(len(set(s)) < len(s) for s in np.split(train.items, train.offsets[1:-1]))
    index = SessionIndex.build(train.items, train.offsets, n_items, train.times)
    current, session, _ = evaluation_points(test)
    starts = test.offsets[session]
    k, sample = 7, 25  # small enough that both the sample and the top-k cut
    assert np.bincount(index.positions.indices).max() > sample  # items beyond their sample
    if name == "vsknn":
        got = vsknn_scores(index, test.items, starts, current, KnnSettings(k, sample))
    else:
        got = stan_scores(
            index, test.items, starts, current, test.times, StanSettings(k=k, sample_size=sample)
        )
    got = got.toarray()
    for j in range(len(current)):
        seq = test.items[starts[j] : current[j] + 1].tolist()
        want = _loop_reference(name, train, seq, test.times[current[j]], k, sample)
        np.testing.assert_allclose(got[j], want, rtol=1e-9, atol=1e-12, err_msg=f"point {j}")


@pytest.mark.parametrize("name", ["vsknn", "stan"])
def test_neighbours_find_the_next_item_where_popularity_cannot(name):
    # train: 20 sessions A B C and 30 sessions D E (more popular); test: A B C. The next item
    # is always among the neighbours' items (A, B, C score above D, E), never under POP.
    train = _sessions([[A, B, C]] * 20 + [[D, E]] * 30, ends=np.arange(50.0) * 60)
    test = _sessions([[A, B, C]], ends=[10_000.0])
    support = np.bincount(train.items, minlength=6).astype(float)
    res = evaluate_baseline(name, train, test, support, cutoffs=(3,))
    assert res["recall@3"] == 1.0 and res["n_points"] == 2
    assert evaluate_baseline("pop", train, test, support, cutoffs=(3,))["recall@3"] == 0.0


@pytest.mark.parametrize("mode", ["conservative", "standard", "median"])
def test_sparse_ranks_equal_dense_ranks_with_ties_and_unscored_targets(mode):
    import scipy.sparse as sp
    import torch

    rng = np.random.default_rng(3)
    m, n = 200, 60
    dense = np.where(rng.random((m, n)) < 0.1, rng.integers(1, 4, (m, n)) / 2.0, 0.0)
    secondary = rng.integers(0, 5, n).astype(float)  # ties in the tie-break too
    targets = rng.integers(0, n, m)
    targets[:50] = np.argmax(dense[:50], axis=1)  # some targets scored, tied with others
    assert (dense[np.arange(m), targets] == 0).sum() > 20  # unscored targets occur
    want = ranks(
        torch.as_tensor(dense), torch.as_tensor(targets), mode,
        torch.as_tensor(secondary).expand(m, n),
    )  # fmt: skip
    got = sparse_ranks(sp.csr_matrix(dense), targets, secondary, mode)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_sparse_ranks_sums_duplicates_and_refuses_negative_scores():
    import scipy.sparse as sp

    dup = sp.csr_matrix(
        (np.array([1.0, 1.0, 1.5]), np.array([0, 0, 1]), np.array([0, 3])), shape=(1, 3)
    )  # item 0 twice: 2.0 in all, above item 1's 1.5
    assert sparse_ranks(dup, np.array([1]), np.zeros(3)).tolist() == [2.0]
    assert dup.nnz == 3  # the caller's matrix is left as it was
    with pytest.raises(ValueError, match="expected scores >= 0"):
        sparse_ranks(sp.csr_matrix(np.array([[-1.0, 0, 0]])), np.array([0]), np.zeros(3))


def test_batches_bound_the_work_of_long_sessions():
    from gru4rec.baselines import _batches

    cost = np.array([1.0] * 10 + [50.0] + [1.0] * 5)
    got = _batches(cost, 10.0, 4)
    assert [b - a for a, b in got] == [4, 4, 2, 1, 4, 1]  # the costly point goes alone
    assert got[0][0] == 0 and got[-1][1] == len(cost)
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(got, got[1:], strict=False))


def test_stan_time_decay_is_off_when_the_index_has_no_times():
    untimed = SessionIndex.build(TRAIN.items, TRAIN.offsets, 6, None)
    times = np.array([999.0, 1000.0])
    timed_test = stan_scores(untimed, PREFIX, np.array([0]), np.array([1]), times).toarray()
    no_times = stan_scores(untimed, PREFIX, np.array([0]), np.array([1]), None).toarray()
    assert timed_test.max() > 0
    np.testing.assert_allclose(timed_test, no_times)


def test_seconds_of_any_unit_and_zone_without_overflow():
    import pandas as pd
    import pyarrow as pa

    from gru4rec.data import _seconds

    far = pa.table({"ts": pa.array([10**16, None], pa.timestamp("us"))}).to_pandas()["ts"]
    got = _seconds(far)
    assert got[0] == 10**10 and np.isnan(got[1])  # year ~2286; a missing time is NaN
    berlin = pd.Series(pd.to_datetime(["2026-01-01 01:00"]).tz_localize("Europe/Berlin"))
    assert _seconds(berlin)[0] == pd.Timestamp("2026-01-01 00:00", tz="UTC").timestamp()
