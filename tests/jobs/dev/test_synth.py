"""The synthetic clickstream: deterministic, with the dirt it promises."""

from __future__ import annotations

import pyarrow.compute as pc

from jobs.dev.synth import SynthConfig, generate


def test_synthetic_clickstream_is_deterministic_and_dirty():
    cfg = SynthConfig(events=20_000, items=500, days=3)
    a, b = generate(cfg), generate(cfg)
    assert a.equals(b)
    assert not a.equals(generate(SynthConfig(events=20_000, items=500, days=3, seed=8)))
    ts = a.column("timestamp")
    assert pc.sum(pc.equal(ts, "n/a")).as_py() > 0
    assert pc.sum(pc.equal(ts, "0")).as_py() > 0
    assert pc.sum(pc.equal(a.column("user_id"), "")).as_py() > 0
    clean = a.num_rows - a.group_by(a.column_names).aggregate([]).num_rows
    assert clean > 0  # exact duplicate rows exist
    assert 20_000 <= a.num_rows < 20_000 * 1.01
