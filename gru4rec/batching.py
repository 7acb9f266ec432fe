"""Session-parallel mini-batches (Hidasi et al., ICLR 2016).

`batch_size` slots each step through one session: the input is event t, the target event t+1.
When a slot's session ends, the slot's hidden state is zeroed and the next session (in start
time order) is loaded into it. Once no session is left, finished slots are removed: the batch
shrinks, and the epoch ends when every session is consumed. Every event but each session's
last is an input exactly once per epoch.

The schedule depends only on the session lengths and the batch size, so it is computed once
and replayed every epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Input positions per step, plus the slot changes to apply before given steps.

    Before step t: if t in `keep`, keep only those slots (rows of the hidden state, in order);
    then if t in `reset`, zero those slots' hidden state (indices after the keep). The target
    of the input at position p is position p + 1.
    """

    positions: np.ndarray  # int64, concatenated input positions of all steps
    step_offsets: np.ndarray  # int64, n_steps + 1
    reset: dict[int, np.ndarray]
    keep: dict[int, np.ndarray]

    @property
    def n_steps(self) -> int:
        return len(self.step_offsets) - 1

    def step(self, t: int) -> np.ndarray:
        return self.positions[self.step_offsets[t] : self.step_offsets[t + 1]]


def session_parallel(offsets: np.ndarray, batch_size: int) -> Schedule:
    """The epoch's steps for sessions `offsets` (each session at least 2 events long)."""
    (whole,) = schedule_chunks(offsets, batch_size)
    return whole


def schedule_chunks(
    offsets: np.ndarray, batch_size: int, max_positions: int | None = None
) -> Iterator[Schedule]:
    """The epoch's steps in consecutive pieces of about `max_positions` inputs each (None: one
    piece). Replaying the pieces in order, the hidden state carried from one to the next, is
    replaying `session_parallel`: a split too large for its whole schedule in memory (eight
    bytes per event) is trained in pieces, each computed when it is reached."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n_sessions = len(offsets) - 1
    if n_sessions <= 0:
        raise ValueError("no sessions to iterate over")
    if np.any(np.diff(offsets) < 2):
        raise ValueError("every session must have at least 2 events")
    width = min(batch_size, n_sessions)
    session = np.arange(width)
    start = offsets[session].copy()
    end = offsets[session + 1].copy()
    next_session = width
    chunks: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    reset: dict[int, np.ndarray] = {}
    keep: dict[int, np.ndarray] = {}
    n_steps = n_positions = 0
    while True:
        run = int((end - start).min()) - 1  # steps until the first slot's session ends
        block = start[None, :] + np.arange(run)[:, None]
        chunks.append(block.ravel())
        sizes.append(np.full(run, len(start), dtype=np.int64))
        n_steps += run
        n_positions += block.size
        start += run
        finished = np.flatnonzero(end - start <= 1)
        n_refill = min(len(finished), n_sessions - next_session)
        refill, drop = finished[:n_refill], finished[n_refill:]
        new = np.arange(next_session, next_session + n_refill)
        next_session += n_refill
        start[refill] = offsets[new]
        end[refill] = offsets[new + 1]
        if max_positions is not None and n_positions >= max_positions:
            # the slot changes below apply before the next piece's first step
            yield _piece(chunks, sizes, reset, keep)
            chunks, sizes, reset, keep = [], [], {}, {}
            n_steps = n_positions = 0
        if len(drop):
            kept = np.setdiff1d(np.arange(len(start)), drop)
            if len(kept) == 0:
                break
            keep[n_steps] = kept
            start, end = start[kept], end[kept]
            refill = np.searchsorted(kept, refill)
        if len(refill):
            reset[n_steps] = refill
    if chunks:
        yield _piece(chunks, sizes, reset, keep)


def _piece(chunks, sizes, reset, keep) -> Schedule:
    positions = np.concatenate(chunks)
    step_offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64)
    return Schedule(positions, step_offsets, reset, keep)


def apply_slot_changes(
    schedule: Schedule, t: int, hidden: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The hidden states to use at step t: drop finished slots, zero the reloaded ones."""
    keep = schedule.keep.get(t)
    if keep is not None:
        k = torch.as_tensor(keep, device=hidden[0].device)
        hidden = [h.index_select(0, k) for h in hidden]
    reset = schedule.reset.get(t)
    if reset is not None:
        r = torch.as_tensor(reset, device=hidden[0].device)
        hidden = [h.index_fill(0, r, 0.0) for h in hidden]
    return hidden
