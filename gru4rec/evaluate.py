"""Next-item evaluation: Recall@k and MRR@k over all training items.

Each test session is fed from a zero hidden state; for every event but the last the true next
item is ranked against all items of the item map. Ranks:
- conservative: #{items with score >= target score}  (ties count against the model)
- standard:     #{items with score > target score} + 1
- median:       the mean of the two (ties share the middle rank)
Recall@k = share of evaluation points with rank <= k; MRR@k = mean of 1/rank, 0 beyond k;
both averaged over evaluation points. Test items missing from the item map were dropped when
the test split was built (the session closes up; see data.build_sessions).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from gru4rec.batching import apply_slot_changes, session_parallel
from gru4rec.config import TIE_MODES
from gru4rec.data import SessionData
from gru4rec.model import GRU4RecModel

DEFAULT_CUTOFFS = (1, 5, 10, 20)


def ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mode: str = "conservative",
    secondary: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rank of each row's target among all columns (float, 1 = best).

    The target's score is read from `scores` itself, so it compares exactly equal with the
    columns it ties with. `secondary` (same shape) breaks ties of the primary score, for
    baselines with a defined tie-break order.
    """
    if mode not in TIE_MODES:
        raise ValueError(f"tie mode: expected one of {', '.join(TIE_MODES)}, found {mode!r}")
    t = scores.gather(1, targets.view(-1, 1))
    if secondary is None:
        greater = (scores > t).sum(dim=1)
        equal_or_greater = (scores >= t).sum(dim=1)
    else:
        s = secondary.gather(1, targets.view(-1, 1))
        tie = scores == t
        greater = ((scores > t) | (tie & (secondary > s))).sum(dim=1)
        equal_or_greater = greater + (tie & (secondary == s)).sum(dim=1)
    if mode == "conservative":
        return equal_or_greater.double()
    if mode == "standard":
        return greater.double() + 1.0
    return (greater.double() + 1.0 + equal_or_greater.double()) / 2.0


def csr_keys(matrix) -> np.ndarray:
    """The (row, column) of every entry of a canonical CSR matrix as one sorted int64 key."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return rows * matrix.shape[1] + matrix.indices.astype(np.int64)


def csr_lookup(matrix, rows, cols, keys: np.ndarray | None = None):
    """(found, value) of each (row, column) pair in a canonical CSR matrix (sorted indices, no
    duplicates); `keys` (its `csr_keys`) when the caller keeps them."""
    keys = csr_keys(matrix) if keys is None else keys
    want = np.asarray(rows, np.int64) * matrix.shape[1] + np.asarray(cols, np.int64)
    if len(keys) == 0:
        return np.zeros(len(want), dtype=bool), np.zeros(len(want))
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = keys[at] == want
    return found, np.where(found, matrix.data[at], 0.0)


def sparse_ranks(scores, targets: np.ndarray, secondary: np.ndarray, mode: str = "conservative"):
    """`ranks` of a sparse score matrix (scipy CSR, points x items; an absent entry scores 0)
    with the row-independent tie-break `secondary` (one value per item), in O(nonzeros).
    Scores must be >= 0 (a negative one is refused).

    Items scoring 0 are counted from `secondary`'s sorted values, not visited: the result
    equals `ranks(scores.toarray(), targets, mode, secondary broadcast to every row)`.
    """
    if mode not in TIE_MODES:
        raise ValueError(f"tie mode: expected one of {', '.join(TIE_MODES)}, found {mode!r}")
    scores = scores.tocsr(copy=True)  # the caller's matrix stays as it was
    scores.sum_duplicates()  # canonical: one sorted entry per (row, item)
    scores.eliminate_zeros()
    if scores.nnz and scores.data.min() < 0:
        raise ValueError(
            f"sparse_ranks: expected scores >= 0 (absent items score 0), found {scores.data.min()}"
        )
    m = scores.shape[0]
    targets = np.asarray(targets, np.int64)
    secondary = np.asarray(secondary, np.float64)
    counts = np.diff(scores.indptr)
    row = np.repeat(np.arange(m), counts)
    col, val = scores.indices.astype(np.int64), scores.data
    _, t = csr_lookup(scores, np.arange(m), targets)  # each row's target score (absent: 0)
    s = secondary[targets]
    tie = val == t[row]
    sec = secondary[col]
    greater = np.bincount(row, (val > t[row]) | (tie & (sec > s[row])), minlength=m)
    equal = np.bincount(row, tie & (sec == s[row]), minlength=m)
    # rows whose target scores 0 tie with every item scoring 0: count those from secondary
    ordered = np.sort(secondary)
    above = len(ordered) - np.searchsorted(ordered, s, side="right")
    same = np.searchsorted(ordered, s, side="right") - np.searchsorted(ordered, s, side="left")
    nz_above = np.bincount(row, sec > s[row], minlength=m)
    nz_same = np.bincount(row, sec == s[row], minlength=m)
    zero = t == 0
    greater = greater + np.where(zero, above - nz_above, 0)
    equal = equal + np.where(zero, same - nz_same, 0)
    if mode == "conservative":
        out = greater + equal
    elif mode == "standard":
        out = greater + 1.0
    else:
        out = (greater + 1.0 + greater + equal) / 2.0
    return torch.as_tensor(np.asarray(out, np.float64))


@dataclasses.dataclass
class RankingMetrics:
    """Accumulates Recall@k and MRR@k over evaluation points."""

    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS
    n: int = 0
    hits: np.ndarray | None = None
    rr: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.hits = np.zeros(len(self.cutoffs))
        self.rr = np.zeros(len(self.cutoffs))

    def add(self, rank: torch.Tensor) -> None:
        rank = rank.double()
        for j, k in enumerate(self.cutoffs):
            within = rank <= k
            self.hits[j] += float(within.sum())
            self.rr[j] += float(torch.where(within, 1.0 / rank, 0.0).sum())
        self.n += int(rank.numel())

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no evaluation points: the test set has no usable session")
        out: dict[str, float] = {}
        for j, k in enumerate(self.cutoffs):
            out[f"recall@{k}"] = self.hits[j] / self.n
        for j, k in enumerate(self.cutoffs):
            out[f"mrr@{k}"] = self.rr[j] / self.n
        out["n_points"] = self.n
        return out


@torch.no_grad()
def evaluate_model(
    model: GRU4RecModel,
    test: SessionData,
    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS,
    mode: str = "conservative",
    batch_size: int = 512,
) -> dict[str, float]:
    """Session-parallel evaluation: hidden state zeroed whenever a slot loads a new session."""
    device = model.device
    metrics = RankingMetrics(tuple(cutoffs))
    sched = session_parallel(test.offsets, batch_size)
    items = torch.as_tensor(test.items, device=device).long()  # int32 when read compactly
    pos = torch.as_tensor(sched.positions, device=device)
    inputs, targets = items[pos], items[pos + 1]
    offs = sched.step_offsets.tolist()
    hidden = model.zero_hidden(offs[1] - offs[0])
    all_ranks = []
    for t in range(sched.n_steps):
        hidden = apply_slot_changes(sched, t, hidden)
        a, b = offs[t], offs[t + 1]
        hidden = model.step_inference(inputs[a:b], hidden)
        scores = model.score_all(hidden[-1])
        all_ranks.append(ranks(scores, targets[a:b], mode))
    metrics.add(torch.cat(all_ranks).cpu())
    return metrics.result()
