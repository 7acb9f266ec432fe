import numpy as np
import pytest

from gru4rec.batching import session_parallel


def replay(offsets, batch_size):
    """Walk the schedule; return per step (slot -> (input pos, target pos)) and the events."""
    s = session_parallel(np.array(offsets), batch_size)
    steps = []
    for t in range(s.n_steps):
        pos = s.step(t)
        steps.append(
            (
                pos.tolist(),
                s.keep.get(t, np.array([])).tolist(),
                s.reset.get(t, np.array([], dtype=int)).tolist(),
            )
        )
    return s, steps


def test_small_example_by_hand():
    # sessions (in start-time order) of lengths 3, 2, 4, 2 -> positions 0-2, 3-4, 5-8, 9-10
    s, steps = replay([0, 3, 5, 9, 11], 2)
    assert steps == [
        ([0, 3], [], []),  # slot 0: session A, slot 1: session B
        ([1, 5], [], [1]),  # B ended: slot 1 reset, loads C
        ([9, 6], [], [0]),  # A ended: slot 0 reset, loads D
        ([7], [1], []),  # D ended, nothing left: the batch shrinks to C's slot
    ]
    # every event but each session's last is an input exactly once
    inputs = sorted(p for pos, _, _ in steps for p in pos)
    assert inputs == [0, 1, 3, 5, 6, 7, 9]


def test_pairs_resets_and_shrinking_on_random_sessions():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 12, size=500)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    s = session_parallel(offsets, 32)
    assert len(s.positions) == int((lengths - 1).sum())  # exactly sum(len - 1) pairs
    assert sorted(s.positions.tolist()) == sorted(
        p for a, b in zip(offsets[:-1], offsets[1:], strict=True) for p in range(a, b - 1)
    )
    session_of = np.repeat(np.arange(len(lengths)), lengths)
    # replay slots: a slot's consecutive inputs stay in one session unless it was reset
    slots = None
    first_seen = {}
    sizes = []
    for t in range(s.n_steps):
        pos = s.step(t)
        sizes.append(len(pos))
        if t in s.keep:
            slots = [slots[k] for k in s.keep[t]]
        reset = set(s.reset.get(t, np.array([], dtype=int)).tolist())
        if slots is not None:
            for k, p in enumerate(pos):
                prev = slots[k]
                if k in reset:
                    assert p == offsets[session_of[p]]  # a new session starts at its start
                    assert session_of[p] != session_of[prev]
                else:
                    assert p == prev + 1 and session_of[p] == session_of[prev]
        for p in pos:
            first_seen.setdefault(session_of[p], t)
        slots = list(pos)
    # sessions are started in order (start-time order of the data)
    starts = [first_seen[i] for i in range(len(lengths))]
    assert starts == sorted(starts)
    # full batches until the end, then the batch only shrinks
    full = sizes.index(next(x for x in sizes if x < 32))
    assert all(x == 32 for x in sizes[:full])
    assert all(a >= b for a, b in zip(sizes[full:], sizes[full + 1 :], strict=False))
    assert sizes[-1] >= 1


def test_epoch_does_not_end_when_the_first_slot_runs_dry():
    # one long session and many short ones: the long one must still be fully consumed
    lengths = [50] + [2] * 5
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    s = session_parallel(offsets, 3)
    assert set(range(49)) <= set(s.positions.tolist())


def test_sessions_shorter_than_two_are_refused():
    with pytest.raises(ValueError, match="at least 2 events"):
        session_parallel(np.array([0, 1, 3]), 2)


@pytest.mark.parametrize("max_positions", [1, 7, 50, 1000])
def test_pieces_replayed_in_order_are_the_whole_schedule(max_positions):
    """A split trained in pieces (schedule_chunks) steps exactly as the whole schedule does."""
    from gru4rec.batching import schedule_chunks

    rng = np.random.default_rng(max_positions)
    lengths = rng.integers(2, 9, size=400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    whole = session_parallel(offsets, 5)
    pieces = list(schedule_chunks(offsets, 5, max_positions))
    assert len(pieces) > 1  # the case this test is about: more than one piece
    assert all(p.positions.size >= max_positions for p in pieces[:-1])
    shift, steps, keep, reset = 0, [], {}, {}
    for p in pieces:
        steps += [p.step(t).tolist() for t in range(p.n_steps)]
        keep.update({t + shift: v.tolist() for t, v in p.keep.items()})
        reset.update({t + shift: v.tolist() for t, v in p.reset.items()})
        shift += p.n_steps
    assert steps == [whole.step(t).tolist() for t in range(whole.n_steps)]
    assert keep == {t: v.tolist() for t, v in whole.keep.items()}
    assert reset == {t: v.tolist() for t, v in whole.reset.items()}
    assert any(t in p.reset or t in p.keep for p in pieces[1:] for t in [0])  # carried over
