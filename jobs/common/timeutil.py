"""UTC datetimes for Spark literals.

PySpark turns a naive datetime literal into a timestamp with the Python process's local time
zone, whatever spark.sql.session.timeZone says; only timezone-aware values are safe.
"""

from __future__ import annotations

import datetime as dt

from jobs.common.errors import ConfigError


def utc(value: str) -> dt.datetime:
    """An ISO date/time as an aware UTC datetime (no offset given: UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"expected an ISO date or date-time, found {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def days_before(day: dt.date, window_days: int) -> list[dt.date]:
    """The other days of the `window_days`-day window ending on `day`, oldest first."""
    return [day - dt.timedelta(days=i) for i in range(window_days - 1, 0, -1)]


def midnight_utc(day: dt.date) -> dt.datetime:
    """00:00 UTC of `day`, timezone-aware."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
