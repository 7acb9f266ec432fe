"""Property: on random dirty clickstreams, every raw row is accounted for exactly once.

For several seeds, a clickstream over three days is generated with what real ones have:
sessions crossing midnight, exact duplicate rows, immediate repeats, bots above the daily
cap, and dirt of every quarantine reason. It is ingested as one range (the real job, on a
CSV file), then sessionized day by day in one lake and as one range in a copy. Checked
against what the generator knows it put in (never against the code under test):

    raw rows      = events + duplicates dropped + quarantined (per reason, exactly)
    each day      : events in = session events + repeats removed + capped, and the session
                    events are exactly those of an independent pure-Python sessionizer
                    (same ids, positions and removals)
    day by day    = range run, partition by partition
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jobs.common.lake import Lake
from jobs.common.settings import SessionizeSettings
from jobs.ingest import run_ingest
from jobs.sessionize import run_sessionize
from jobs.sources import PRESETS

DAYS = [dt.date(2026, 3, d) for d in (1, 2, 3)]
GAP_S = 1800
CAP = 40  # events per user and day above which a user-day is capped (a bot)
SETTINGS = SessionizeSettings(gap_seconds=GAP_S, max_events_per_user_day=CAP)


def _ms(ts: dt.datetime) -> str:
    return str(int(ts.timestamp() * 1000))


def generate(seed: int):
    """(raw rows, clean events, injected dirt by reason, number of duplicate rows)."""
    rng = random.Random(seed)
    t0 = dt.datetime.combine(DAYS[0], dt.time(), tzinfo=dt.UTC)
    end = t0 + dt.timedelta(days=len(DAYS))
    clean: list[tuple[str, str, dt.datetime]] = []
    for u in range(rng.randint(25, 40)):
        user = f"u{u}"
        t = t0 + dt.timedelta(seconds=rng.randint(0, 3600 * 20))
        for _ in range(rng.randint(1, 4)):  # sessions
            if rng.random() < 0.35:  # start close to a midnight: the session crosses it
                midnight = t0 + dt.timedelta(days=rng.randrange(len(DAYS)))
                t = max(t, midnight - dt.timedelta(minutes=rng.randint(1, 20)))
            item = f"i{rng.randint(0, 30)}"
            for _ in range(rng.randint(1, 9)):
                if t >= end:
                    break
                clean.append((user, item, t))
                # an immediate repeat now and then; else a new item
                item = item if rng.random() < 0.15 else f"i{rng.randint(0, 30)}"
                t += dt.timedelta(seconds=rng.randint(1, 25 * 60))
            t += dt.timedelta(seconds=rng.randint(GAP_S + 1, 3600 * 12))
    bot_day = t0 + dt.timedelta(days=rng.randrange(len(DAYS)), hours=1)
    for k in range(CAP + rng.randint(1, 20)):  # one bot above the cap on one day
        clean.append(("bot", f"i{k % 7}", bot_day + dt.timedelta(seconds=30 * k)))
    rows = [(u, i, _ms(ts), "view") for u, i, ts in clean]
    duplicates = rng.sample(rows, rng.randint(3, 12))
    mid = _ms(t0 + dt.timedelta(hours=30))
    dirt = {
        "null_user_id": [("", "i1", mid, "view"), ("null", "i2", mid, "view")],
        "malformed_user_id": [("u" * 300, "i1", mid, "view")],
        "null_item_id": [("u1", "None", mid, "view")],
        "malformed_item_id": [("u1", "i\x01x", mid, "view")],
        "null_ts": [("u2", "i3", "", "view")],
        "unparseable_ts": [("u2", "i3", "yesterday", "view"), ("u3", "i4", "12:3x", "view")],
        "ts_out_of_window": [("u4", "i5", _ms(t0 - dt.timedelta(days=9)), "view")],
    }
    dirt = {reason: rows_ * rng.randint(1, 3) for reason, rows_ in dirt.items()}
    raw = rows + duplicates + [r for rs in dirt.values() for r in rs]
    rng.shuffle(raw)
    return raw, clean, {r: len(v) for r, v in dirt.items()}, len(duplicates)


def reference_sessions(clean):
    """An independent sessionizer, straight from the spec: per user in time order (ties by
    item), a user-day above CAP is capped; a gap over GAP_S starts a session; an immediate
    repeat of the item before (not at a session start) is removed but is activity.
    Returns ({(session_id, user, item, ts in epoch us, seq)}, {day: Counter of removals})."""
    per_day = Counter((u, ts.date()) for u, _, ts in clean)
    removed: dict[dt.date, Counter] = defaultdict(Counter)
    out = set()
    by_user = defaultdict(list)
    for u, i, ts in clean:
        if per_day[(u, ts.date())] > CAP:
            removed[ts.date()]["capped_events"] += 1
        else:
            by_user[u].append((ts, i))
    for u, events in by_user.items():
        prev_ts = prev_item = None
        for ts, item in sorted(events):
            new = prev_ts is None or (ts - prev_ts).total_seconds() > GAP_S
            if new:
                start, seq = ts, 0
                us = round(start.timestamp() * 1_000_000)
                sid = hashlib.sha256(f"{u}|{us}".encode()).hexdigest()[:24]
            if not new and item == prev_item:
                removed[ts.date()]["repeats_removed"] += 1
            else:
                out.add((sid, u, item, round(ts.timestamp() * 1_000_000), seq))
                seq += 1
            prev_ts, prev_item = ts, item
    return out, removed


def _session_rows(spark, path) -> set:
    """(session_id, user, item, ts as epoch microseconds, seq) of a sessions partition."""
    df = spark.read.parquet(path).selectExpr("*", "unix_micros(ts) AS us")
    return {(r.session_id, r.user_id, r.item_id, r.us, r.seq) for r in df.collect()}


@pytest.mark.parametrize("seed", [1, 2])
def test_every_raw_row_is_accounted_for_once(spark, tmp_path, seed):
    raw, clean, dirt, n_duplicates = generate(seed)
    path = tmp_path / "clicks.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "event_type"])
        w.writerows(raw)
    lake = Lake(str(tmp_path / "lake"))
    summary = run_ingest(spark, str(path), lake, PRESETS["synthetic"], DAYS[0], DAYS[-1])

    # ingest: every raw row is an event, a dropped duplicate or quarantined with its reason
    assert summary["rows_in"] == len(raw)
    assert summary["quarantined"] == dirt
    assert summary["duplicates_dropped"] == n_duplicates
    assert summary["events_out"] == len(clean)
    assert spark.read.parquet(lake.quarantine).count() == sum(dirt.values())
    per_day = Counter(ts.date() for _, _, ts in clean)
    for d in DAYS:
        assert spark.read.parquet(lake.events_day(d)).count() == per_day[d]

    # sessionize day by day, and as one range in a copy of the lake
    ranged = Lake(str(tmp_path / "ranged"))
    shutil.copytree(lake.events, ranged.events)
    daily = [run_sessionize(spark, lake, d, SETTINGS) for d in DAYS]
    whole = run_sessionize(spark, ranged, DAYS[0], SETTINGS, last_day=DAYS[-1])

    expected, removed = reference_sessions(clean)
    by_day = defaultdict(set)
    for row in expected:
        by_day[dt.datetime.fromtimestamp(row[3] / 1e6, dt.UTC).date()].add(row)
    crossing = {sid for sid, *_ in by_day[DAYS[0]]} & {sid for sid, *_ in by_day[DAYS[1]]}
    crossing |= {sid for sid, *_ in by_day[DAYS[1]]} & {sid for sid, *_ in by_day[DAYS[2]]}
    assert crossing, "the generator must produce sessions crossing midnight"
    assert sum(r["repeats_removed"] for r in removed.values()) > 0
    assert sum(r["capped_events"] for r in removed.values()) > CAP

    for d, day_summary in zip(DAYS, daily, strict=True):
        account = day_summary["days"][str(d)]
        assert account == whole["days"][str(d)]  # range == day by day
        assert account["events_in"] == per_day[d]
        assert account["repeats_removed"] == removed[d]["repeats_removed"]
        assert account["capped_events"] == removed[d]["capped_events"]
        assert account["session_events_out"] == len(by_day[d])
        assert account["events_in"] == (
            account["session_events_out"] + account["repeats_removed"] + account["capped_events"]
        )
        got = _session_rows(spark, lake.sessions_day(d))
        assert got == by_day[d]  # the same sessions, ids and positions as the reference
        assert _session_rows(spark, ranged.sessions_day(d)) == got
    assert Path(lake.sessions_day(DAYS[-1])).exists()
