"""Session-based nearest-neighbour baselines, vectorised over batches of evaluation points.

Both compare the current session (the prefix up to the current event) with past training
sessions, keep its nearest neighbours and score every item by the neighbours that hold it.

- V-SKNN (Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", 2018):
  the current session is a real-valued vector whose element at position p (1-based, of L) is
  p / L: the last event weighs 1, earlier ones decay linearly. A past session is a binary item
  vector; similarity is the dot product. Candidates are the `sample_size` most recent training
  sessions sharing an item with the current one; the `k` most similar are its neighbours;
  score(i) = sum of the similarities of the neighbours holding i.
- STAN (Garg et al., "Sequence and Time Aware Neighborhood for Session-based
  Recommendations", SIGIR 2019): the element at position p is exp((p - L) / lambda_spw);
  similarity is that vector's dot product with the binary past session, divided by
  sqrt(|s|) sqrt(|n|) (distinct items), times exp(-(t_s - t_n) / lambda_snh) with t the time of
  a session's last event (t_s: the current event's); neighbours as above; each neighbour n
  scores its item i with sim(s, n) * exp(-|pos(i, n) - pos(r, n)| / lambda_inh), r being the
  most recent item of the current session that n holds.

An item repeated in a session counts once, at its most recent position. Settings default to
the values commonly used with these methods in the published comparisons (k = 100; V-SKNN
samples 1,000 recent sessions, STAN 5,000 with lambda_spw = 1.02, lambda_snh = 5 days,
lambda_inh = 2.05); no tuning to the data here.

No Python loop runs per session or per point: each batch of points is a sparse matrix, the
candidates one sparse product with the training sessions, the per-row sampling and top-k
selections are sorts over all (point, session) pairs of the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from gru4rec.evaluate import csr_keys, csr_lookup

DAY_SECONDS = 86_400.0


@dataclasses.dataclass(frozen=True)
class KnnSettings:
    k: int = 100
    sample_size: int = 1000


@dataclasses.dataclass(frozen=True)
class StanSettings:
    k: int = 100
    sample_size: int = 5000
    lambda_spw: float = 1.02  # positions in the current session
    lambda_snh: float = 5.0  # days between the current session and a neighbour
    lambda_inh: float = 2.05  # positions in the neighbour from its last common item


def _dedup_last(rows: np.ndarray, items: np.ndarray, pos: np.ndarray, n_items: int):
    """(row, item) pairs once each, keeping the largest position; sorted by row, item."""
    key = rows.astype(np.int64) * n_items + items
    order = np.lexsort((-pos, key))
    key, pos = key[order], pos[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, pos = key[first], pos[first]
    return key // n_items, key % n_items, pos


@dataclasses.dataclass(frozen=True)
class SessionIndex:
    """Training sessions as a sparse (session x item) matrix of 1-based positions, rows in
    recency order (by last event time, then input order: row n is more recent than row n - 1),
    plus, per sample size, each item's most recent sessions."""

    positions: sp.csr_matrix  # value: the item's most recent position in the session
    ends: np.ndarray  # float64, ascending: each session's last event time (or input order)
    sizes: np.ndarray  # distinct items per session
    timed: bool = True  # ends are times (False: input order, and STAN's time decay is off)
    _recent: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _keys: np.ndarray = dataclasses.field(init=False, compare=False, repr=False)
    _binary: sp.csr_matrix = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # derived once, read by every batch: the entries' keys and the 0/1 session matrix
        object.__setattr__(self, "_keys", csr_keys(self.positions))
        binary = self.positions.copy()
        binary.data[:] = 1.0
        object.__setattr__(self, "_binary", binary)

    @classmethod
    def build(cls, items: np.ndarray, offsets: np.ndarray, n_items: int, times=None):
        lengths = np.diff(offsets)
        n = len(lengths)
        timed = times is not None and len(times) == len(items)
        if timed:
            ends = np.asarray(times, np.float64)[offsets[1:] - 1]
        else:  # no times: sessions are in time order (data.build_sessions)
            ends = np.arange(n, dtype=np.float64)
        order = np.lexsort((np.arange(n), ends))  # recency order; ties: input order
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        rows = np.repeat(rank, lengths)
        pos = np.arange(len(items)) - np.repeat(offsets[:-1], lengths) + 1
        rows, cols, pos = _dedup_last(rows, np.asarray(items, np.int64), pos, n_items)
        positions = sp.csr_matrix(
            (pos.astype(np.float64), (rows, cols)), shape=(n, n_items), dtype=np.float64
        )
        positions.sort_indices()
        sizes = np.diff(positions.indptr).astype(np.float64)
        return cls(positions, ends[order], sizes, timed)

    @property
    def n_items(self) -> int:
        return self.positions.shape[1]

    def recent_sessions(self, sample_size: int) -> sp.csr_matrix:
        """(item x session) 0/1 matrix of each item's `sample_size` most recent sessions.

        The `sample_size` most recent sessions sharing an item with a query are all in it, and
        each with every query item it holds: a session that `sample_size` more recent sessions
        beat for one of its items cannot be among the query's `sample_size` most recent. So a
        query's (weighted) product with it gives, on those sessions, the exact dot products.
        """
        if sample_size not in self._recent:
            by_item = self.positions.T.tocsr()
            by_item.sort_indices()
            keep = _last_per_row(by_item, sample_size)  # the last ones: most recent
            item = np.repeat(np.arange(by_item.shape[0]), np.diff(by_item.indptr))[keep]
            self._recent[sample_size] = sp.csr_matrix(
                (np.ones(int(keep.sum())), (item, by_item.indices[keep])), shape=by_item.shape
            )
        return self._recent[sample_size]

    def holds(self, sessions: np.ndarray, items: np.ndarray):
        """(held, position) of each (session, item) pair."""
        return csr_lookup(self.positions, sessions, items, self._keys)

    @property
    def binary(self) -> sp.csr_matrix:
        """(session x item) 0/1: which items each session holds."""
        return self._binary


def _last_per_row(matrix: sp.csr_matrix, limit: int) -> np.ndarray:
    """Mask of each row's last `limit` entries (CSR with sorted indices: the largest columns)."""
    counts = np.diff(matrix.indptr)
    rank = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    return rank >= np.repeat(counts, counts) - limit


def _prefixes(items, starts, currents, n_items):
    """The prefixes items[starts[j] .. currents[j]] as deduplicated (row, item, position)
    triples, plus each prefix's length L."""
    counts = currents - starts + 1
    rows = np.repeat(np.arange(len(starts)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    flat = np.repeat(starts, counts) + within
    r, i, p = _dedup_last(rows, np.asarray(items, np.int64)[flat], within + 1, n_items)
    return r, i, p.astype(np.float64), counts.astype(np.float64)


def _top_per_row(rows, values, tiebreak, limit):
    """Mask of the `limit` largest `values` in each row (ties: larger `tiebreak` first).

    Rows grouped (ascending), as every caller has them: a partition finds each row's
    `limit`-th largest value, and only the entries reaching it are sorted."""
    keep = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0:
        return keep
    if np.any(rows[1:] < rows[:-1]):  # not grouped: sort everything
        candidates = np.arange(len(rows))
    else:
        counts = np.bincount(rows)
        if counts.max() <= limit:
            keep[:] = True
            return keep
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        col = np.arange(len(rows)) - start[rows]
        padded = np.full((len(counts), counts.max()), -np.inf)
        padded[rows, col] = values
        kth = -np.partition(-padded, limit - 1, axis=1)[:, limit - 1]
        candidates = np.flatnonzero(values >= kth[rows])
    r, v, t = rows[candidates], values[candidates], tiebreak[candidates]
    order = np.lexsort((-t, -v, r))
    sorted_rows = r[order]
    first = np.searchsorted(sorted_rows, sorted_rows, side="left")
    keep[candidates[order[np.arange(len(order)) - first < limit]]] = True
    return keep


def _expand(rows_of_pairs, row_start, per_row):
    """For each pair, the indices of its row's entries: (pair index, entry index)."""
    take = per_row[rows_of_pairs]
    pair = np.repeat(np.arange(len(rows_of_pairs)), take)
    flat = np.repeat(row_start[rows_of_pairs], take) + (
        np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    )
    return pair, flat


def _neighbours(index: SessionIndex, rows, items, weights, n_rows, sample_size, k, sim_fn):
    """(row, session, similarity) of each row's neighbours. Candidates come from each item's
    most recent sessions only (`recent_sessions`), so a batch's work is bounded by points x
    sample_size however popular its items are."""
    query = sp.csr_matrix((weights, (rows, items)), shape=(n_rows, index.n_items))
    dots = (query @ index.recent_sessions(sample_size)).tocsr()
    dots.sort_indices()
    recent = _last_per_row(dots, sample_size)  # the row's most recent sessions
    r = np.repeat(np.arange(n_rows), np.diff(dots.indptr))[recent]
    s = dots.indices[recent].astype(np.int64)
    sim = sim_fn(r, s, dots.data[recent])
    near = _top_per_row(r, sim, s.astype(np.float64), k) & (sim > 0)
    return r[near], s[near], sim[near]


def vsknn_scores(index: SessionIndex, items, starts, currents, settings=KnnSettings()):
    """Sparse (points x items, CSR) V-SKNN scores of the prefixes items[starts[j]..currents[j]]
    (an item no neighbour holds scores 0)."""
    n = len(starts)
    rows, its, pos, lengths = _prefixes(items, starts, currents, index.n_items)
    weights = pos / lengths[rows]
    r, s, sim = _neighbours(
        index, rows, its, weights, n, settings.sample_size, settings.k, lambda r, s, d: d
    )
    neighbours = sp.csr_matrix((sim, (r, s)), shape=(n, len(index.ends)))
    scores = (neighbours @ index.binary).tocsr()
    scores.eliminate_zeros()
    return scores


def stan_scores(index: SessionIndex, items, starts, currents, times=None, settings=StanSettings()):
    """Sparse (points x items, CSR) STAN scores; `times` (seconds per event of `items`) gives
    the current event's time; without it, or without times in the index, the time decay is
    off."""
    n = len(starts)
    rows, its, pos, lengths = _prefixes(items, starts, currents, index.n_items)
    weights = np.exp((pos - lengths[rows]) / settings.lambda_spw)
    distinct = np.bincount(rows, minlength=n).astype(np.float64)
    timed = times is not None and index.timed  # both sides' times, or no time decay
    now = np.asarray(times, np.float64)[currents] if timed else None
    snh = settings.lambda_snh * DAY_SECONDS

    def similarity(r, s, dot):
        sim = dot / (np.sqrt(distinct[r]) * np.sqrt(index.sizes[s]))
        if now is not None:
            sim = sim * np.exp(-np.maximum(now[r] - index.ends[s], 0.0) / snh)
        return sim

    r, s, sim = _neighbours(
        index, rows, its, weights, n, settings.sample_size, settings.k, similarity
    )
    # The most recent prefix item each neighbour holds (r_jn) and its position in it.
    P = index.positions
    per_row = np.bincount(rows, minlength=n)
    pair, flat = _expand(r, np.concatenate([[0], np.cumsum(per_row)]), per_row)
    held, where = index.holds(s[pair], its[flat])
    pair, cand_pos, where = pair[held], pos[flat][held], where[held]
    last = _top_per_row(pair, cand_pos, np.zeros(len(pair)), 1)
    anchor = np.zeros(len(r))
    anchor[pair[last]] = where[last]
    # Every item of each neighbour, weighted by its distance from the anchor.
    pair, flat = _expand(s, P.indptr[:-1], np.diff(P.indptr))
    w = sim[pair] * np.exp(-np.abs(P.data[flat] - anchor[pair]) / settings.lambda_inh)
    scores = sp.csr_matrix((w, (r[pair], P.indices[flat])), shape=(n, index.n_items))
    scores.sum_duplicates()
    scores.eliminate_zeros()
    return scores
