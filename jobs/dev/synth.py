"""Deterministic synthetic raw clickstream: Zipf-like items, users with several sessions,
realistic gaps, a learnable item-to-item structure and some dirt.

Columns (CSV with header): user_id, item_id, timestamp (epoch ms, as a string), event_type.
Dirt, at the given rates: empty user ids, unparseable timestamps, zero timestamps (1970),
exact duplicate rows. Rows come in time order with a little local shuffling, as logs do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from jobs.common.cli import HelpFormatter
from jobs.common.lake import dt_partition

log = logging.getLogger("jobs.synth")


@dataclass(frozen=True)
class SynthConfig:
    events: int = 1_000_000
    items: int = 40_000
    start: dt.date = dt.date(2026, 1, 1)
    days: int = 7
    mean_session_length: float = 6.0
    sessions_per_user: float = 3.0
    mean_hours_between_sessions: float = 8.0
    zipf_exponent: float = 1.05
    # Probability that the next item follows the current item's fixed successors (learnable).
    follow_prob: float = 0.6
    successors: int = 8
    max_session_length: int = 60
    dirt_null_user: float = 0.002
    dirt_bad_ts: float = 0.001
    dirt_zero_ts: float = 0.001
    dirt_duplicates: float = 0.002
    seed: int = 7


def _popularity_sampler(rng: np.random.Generator, n: int, exponent: float):
    ranks = np.arange(1, n + 1, dtype=np.float64)
    cdf = np.cumsum((ranks + 20.0) ** -exponent)  # Zipf-Mandelbrot: a less extreme head
    cdf /= cdf[-1]
    perm = rng.permutation(n)  # popular items get scattered ids

    def draw(size: int) -> np.ndarray:
        return perm[np.searchsorted(cdf, rng.random(size), side="right").clip(0, n - 1)]

    return draw


def _sessions(rng, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Session lengths and their users (sorted), 30% more sessions than needed: some fall past
    the end; the surplus is cut later."""
    n_sessions = max(1, int(1.3 * cfg.events / cfg.mean_session_length))
    lengths = np.minimum(
        rng.geometric(1.0 / cfg.mean_session_length, n_sessions), cfg.max_session_length
    )
    n_users = max(1, int(n_sessions / cfg.sessions_per_user))
    return lengths, np.sort(rng.integers(0, n_users, n_sessions))


def _offsets(rng, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each event's offset in its session (gaps of seconds to minutes, always under 30
    minutes) and each session's duration."""
    total = int(lengths.sum())
    gaps = np.minimum(rng.exponential(45.0, total), 1700.0)
    first = np.zeros(total, dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    gaps[first] = 0.0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[first], lengths)
    return offsets, offsets[np.cumsum(lengths) - 1]


def _starts(rng, cfg: SynthConfig, users: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Session start offsets: between a user's sessions at least 31 minutes, hours on
    average; users start at random in the span."""
    span = cfg.days * 86400.0
    between = 1860.0 + rng.exponential(cfg.mean_hours_between_sessions * 3600.0, len(users))
    user_first = np.ones(len(users), dtype=bool)
    user_first[1:] = users[1:] != users[:-1]
    step = between + np.concatenate([[0.0], durations[:-1]])
    step[user_first] = rng.random(user_first.sum()) * span
    cs = np.cumsum(step)
    group = np.cumsum(user_first) - 1
    return cs - (cs - step)[user_first][group]  # running sum restarted at each user


def _items(rng, cfg: SynthConfig, draw, succ: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """First item from popularity, then follow a successor of the current item or jump."""
    total = int(lengths.sum())
    sess_of_event = np.repeat(np.arange(len(lengths)), lengths)
    items = np.empty(total, dtype=np.int64)
    pos_in_session = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cur = draw(len(lengths))
    for pos in range(int(lengths.max())):
        idx = np.flatnonzero(pos_in_session == pos)
        sess = sess_of_event[idx]
        if pos > 0:
            follow = rng.random(idx.size) < cfg.follow_prob
            nxt = draw(idx.size)
            pick = succ[cur[sess], rng.integers(0, cfg.successors, idx.size)]
            cur[sess] = np.where(follow, pick, nxt)
        items[idx] = cur[sess]
    return items


def _dirty_table(rng, cfg: SynthConfig, users, items, ts_ms) -> pa.Table:
    """Duplicates, log order (time, jittered a little), then empty users and broken times."""
    n = ts_ms.size
    dup = np.flatnonzero(rng.random(n) < cfg.dirt_duplicates)
    order = np.concatenate([np.arange(n), dup])
    users, items, ts_ms = users[order], items[order], ts_ms[order]
    order = np.argsort(ts_ms + rng.integers(0, 5000, ts_ms.size), kind="stable")
    users, items, ts_ms = users[order], items[order], ts_ms[order]
    user_col = pc.binary_join_element_wise("u", pa.array(users).cast(pa.string()), "")
    item_col = pc.binary_join_element_wise("i", pa.array(items).cast(pa.string()), "")
    ts_col = pa.array(ts_ms).cast(pa.string())
    m = ts_ms.size
    null_user = rng.random(m) < cfg.dirt_null_user
    bad_ts = rng.random(m) < cfg.dirt_bad_ts
    zero_ts = rng.random(m) < cfg.dirt_zero_ts
    user_col = pc.if_else(pa.array(null_user), pa.scalar(""), user_col)
    ts_col = pc.if_else(pa.array(bad_ts), pa.scalar("n/a"), ts_col)
    ts_col = pc.if_else(pa.array(zero_ts & ~bad_ts), pa.scalar("0"), ts_col)
    event_type = pa.DictionaryArray.from_arrays(
        pa.array((rng.random(m) < 0.05).astype(np.int8)), pa.array(["view", "cart"])
    ).cast(pa.string())
    return pa.table(
        {"user_id": user_col, "item_id": item_col, "timestamp": ts_col, "event_type": event_type}
    )


def generate(cfg: SynthConfig) -> pa.Table:
    """Build the raw clickstream table in memory (about 60 bytes per event)."""
    rng = np.random.default_rng(cfg.seed)
    draw = _popularity_sampler(rng, cfg.items, cfg.zipf_exponent)
    succ = draw(cfg.items * cfg.successors).reshape(cfg.items, cfg.successors)
    lengths, users = _sessions(rng, cfg)
    offsets, durations = _offsets(rng, lengths)
    starts = _starts(rng, cfg, users, durations)
    items = _items(rng, cfg, draw, succ, lengths)
    t0 = dt.datetime.combine(cfg.start, dt.time(), tzinfo=dt.UTC).timestamp()
    ts_ms = ((t0 + np.repeat(starts, lengths) + offsets) * 1000).astype(np.int64)
    keep = ts_ms < (t0 + cfg.days * 86400.0) * 1000
    keep &= np.cumsum(keep) <= cfg.events  # exactly `events` clean rows (users sorted: cut last)
    return _dirty_table(rng, cfg, np.repeat(users, lengths)[keep], items[keep], ts_ms[keep])


def write_csv(table: pa.Table, path: str) -> None:
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=True))


def write_daily_csv(table: pa.Table, root: str) -> list[str]:
    """Write the clickstream as one delivery a day, `root/dt=YYYY-MM-DD/clicks.csv`, as a
    nightly feed arrives. A dirty row (bad or zero timestamp) travels with its neighbours in
    log order. Returns the dates written."""
    import os

    raw = table["timestamp"].to_numpy(zero_copy_only=False).astype(object)
    ms = np.array([int(v) if str(v).isdigit() else 0 for v in raw], dtype=np.int64)
    day = np.where(ms > 0, ms // 86_400_000, -1)
    valid = np.flatnonzero(day >= 0)
    fill = np.maximum.accumulate(np.where(day >= 0, np.arange(day.size), -1))
    fill[fill < 0] = valid[0] if valid.size else 0
    day = day[fill]
    dates = []
    for d in np.unique(day):
        date = str(dt.date(1970, 1, 1) + dt.timedelta(days=int(d)))
        os.makedirs(os.path.join(root, dt_partition(date)), exist_ok=True)
        rows = table.filter(pa.array(day == d))
        write_csv(rows, os.path.join(root, dt_partition(date), "clicks.csv"))
        dates.append(date)
    return dates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.dev.synth",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    d = SynthConfig()
    parser.add_argument("--out", required=True, help="CSV file to write (a directory: --daily)")
    parser.add_argument(
        "--daily", action="store_true", help="one delivery a day: OUT/dt=D/clicks.csv"
    )
    parser.add_argument("--events", type=int, default=d.events, help="clicks in all")
    parser.add_argument("--items", type=int, default=d.items, help="catalogue size")
    parser.add_argument("--days", type=int, default=d.days, help="days the clicks span")
    parser.add_argument(
        "--start", type=dt.date.fromisoformat, default=d.start, help="first day (YYYY-MM-DD)"
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="random seed (same seed, same file)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = SynthConfig(
        events=args.events, items=args.items, days=args.days, start=args.start, seed=args.seed
    )
    table = generate(cfg)
    if args.daily:
        write_daily_csv(table, args.out)
    else:
        write_csv(table, args.out)
    log.info("wrote %d rows to %s", table.num_rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
