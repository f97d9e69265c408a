"""Clocks: where workflow time comes from.

Workflow timers, retries and ``Now()`` follow a ``Clock``; leases and liveness
follow real monotonic time, so a virtual clock's jump never expires a lease.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...


class SystemClock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that moves only when told: tests of months-long workflows run in milliseconds.

    >>> from datetime import timedelta
    >>> c = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> c.advance(timedelta(days=30)).isoformat()
    '2026-01-31T00:00:00+00:00'
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("VirtualClock(start) must be timezone-aware (use tzinfo=UTC)")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (a timedelta or seconds); returns the new time."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta():
            raise ValueError("a clock never goes back")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> datetime:
        """Jump forward to ``when`` (never back)."""
        with self._lock:
            if when > self._now:
                self._now = when
            return self._now
