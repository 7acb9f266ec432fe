"""Baselines of the ICLR 2016 paper, evaluated with the same protocol as GRU4Rec.

- POP:      always the training set's most popular items (score = support).
- S-POP:    the items of the current session by how often they occurred in it so far; ties
            (and items not in the session) by global popularity.
- Item-KNN: items similar to the current item; similarity = session co-occurrence cosine,
            |S_i & S_j| / ((|S_i| + lambda)^alpha * (|S_j| + lambda)^(1 - alpha)),
            with S_i the training sessions containing item i (lambda regularizes rare items;
            alpha = 0.5 is the cosine). Each item keeps its `n_neighbors` most similar items;
            ties, and items with no similarity, fall back to global popularity.

- V-SKNN, STAN: session-based nearest neighbours (`gru4rec.sknn`), the strong baselines of
            the published comparisons of session-based algorithms.

Every baseline scores all items (sparsely: an item without a score scores 0); ranks use the
evaluation's tie mode on the primary score, with popularity as the declared tie-break
(`evaluate.sparse_ranks`, which never builds a dense row).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from gru4rec.data import SessionData
from gru4rec.evaluate import DEFAULT_CUTOFFS, RankingMetrics, sparse_ranks
from gru4rec.sknn import KnnSettings, SessionIndex, StanSettings, stan_scores, vsknn_scores

NAMES = ("pop", "spop", "itemknn", "vsknn", "stan")


def evaluation_points(data: SessionData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluation point: (position of the current event, session index, target item)."""
    lengths = data.lengths()
    session = np.repeat(np.arange(data.n_sessions), lengths - 1)
    within = np.arange(data.n_pairs) - np.repeat(
        np.cumsum(lengths - 1) - (lengths - 1), lengths - 1
    )
    current = data.offsets[session] + within
    return current, session, data.items[current + 1]


def item_knn(
    train: SessionData,
    n_items: int,
    n_neighbors: int = 100,
    lam: float = 20.0,
    alpha: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Top `n_neighbors` similar items per item: (indices, similarities), each n_items x k.

    An item with fewer than k neighbours has its row padded with index -1 (similarity 0):
    padding never names a real item, so it cannot overwrite item 0's similarity.
    """
    session = np.repeat(np.arange(train.n_sessions), train.lengths())
    occ = sp.csr_matrix(
        (np.ones(len(session), dtype=np.float32), (session, train.items)),
        shape=(train.n_sessions, n_items),
    )
    occ.data[:] = 1.0  # duplicates were summed: a session counts once per item
    occ.sum_duplicates()
    occ.data[:] = 1.0
    support = np.asarray(occ.sum(axis=0)).ravel()
    co = (occ.T @ occ).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    left = (support + lam) ** alpha
    right = (support + lam) ** (1.0 - alpha)
    k = min(n_neighbors, n_items - 1) if n_items > 1 else 1
    idx = np.full((n_items, k), -1, dtype=np.int64)
    sim = np.zeros((n_items, k), dtype=np.float64)
    for i in range(n_items):
        start, end = co.indptr[i], co.indptr[i + 1]
        cols = co.indices[start:end]
        if len(cols) == 0:
            continue
        s = co.data[start:end] / (left[i] * right[cols])
        take = np.argsort(-s, kind="stable")[:k] if len(cols) > k else np.argsort(-s, kind="stable")
        idx[i, : len(take)] = cols[take]
        sim[i, : len(take)] = s[take]
    return idx, sim


def _batches(cost: np.ndarray, budget: float, max_points: int):
    """Consecutive (start, end) ranges of points, each of total `cost` <= `budget` (a point
    costing more goes alone) and at most `max_points` points."""
    out, a, n = [], 0, len(cost)
    cum = np.concatenate([[0.0], np.cumsum(cost)])
    while a < n:
        b = int(np.searchsorted(cum, cum[a] + budget, side="right")) - 1
        b = min(max(b, a + 1), a + max_points, n)
        out.append((a, b))
        a = b
    return out


def evaluate_baseline(
    name: str,
    train: SessionData,
    test: SessionData,
    support: np.ndarray,
    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS,
    mode: str = "conservative",
    batch_size: int | None = None,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    sessions: SessionIndex | None = None,
) -> dict[str, float]:
    """Recall@k / MRR@k of one baseline on `test` (items already mapped to the item index)."""
    if name not in NAMES:
        raise ValueError(f"baseline: expected one of {', '.join(NAMES)}, found {name!r}")
    n_items = len(support)
    if batch_size is None:
        batch_size = 4096
    support = np.asarray(support, dtype=np.float64)
    current, session, target = evaluation_points(test)
    if name == "itemknn" and knn is None:
        knn = item_knn(train, n_items)
    cost = np.ones(len(current))
    budget = float(batch_size)
    if name in ("vsknn", "stan"):
        if sessions is None:
            sessions = SessionIndex.build(train.items, train.offsets, n_items, train.times)
        # a point's work is up to (its prefix's items x sample_size) candidate pairs: bound a
        # batch's total, so long sessions make smaller batches instead of a memory spike
        sample = (KnnSettings() if name == "vsknn" else StanSettings()).sample_size
        cost = (current - test.offsets[session] + 1).astype(np.float64) * sample
        budget = 4_000_000.0
    metrics = RankingMetrics(tuple(cutoffs))
    all_ranks = []
    for a, b in _batches(cost, budget, batch_size):
        cur = current[a:b]
        m = len(cur)
        starts = test.offsets[session[a:b]]
        if name == "pop":  # no primary score: popularity ranks everything
            scores = sp.csr_matrix((m, n_items))
        elif name == "spop":
            # counts of the items seen so far in each point's session (prefix incl. current)
            counts = cur - starts + 1
            rows = np.repeat(np.arange(m), counts)
            pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            scores = sp.csr_matrix(
                (np.ones(len(rows)), (rows, test.items[pos])), shape=(m, n_items)
            )  # duplicates summed: the counts
        elif name == "vsknn":
            scores = vsknn_scores(sessions, test.items, starts, cur)
        elif name == "stan":
            scores = stan_scores(sessions, test.items, starts, cur, test.times)
        else:
            idx, sim = knn
            items = test.items[cur]
            nb = idx[items]
            rows, slots = np.nonzero(nb >= 0)  # padding (-1) names no item
            scores = sp.csr_matrix(
                (sim[items][rows, slots], (rows, nb[rows, slots])), shape=(m, n_items)
            )
        # sparse scores (absent: 0), popularity the tie-break, ranked in O(nonzeros)
        all_ranks.append(sparse_ranks(scores, target[a:b], support, mode))
    metrics.add(torch.cat(all_ranks))
    return metrics.result()
