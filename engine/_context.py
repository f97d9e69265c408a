"""``activity_context()``: what an activity can know and do about its own execution."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ActivityContext", "activity_context"]

_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("temporalpp_activity")


class ActivityContext:
    """The running activity's attempt, identity, heartbeat and cancellation.

    ``idempotency_key`` is the same for every attempt of one scheduled activity
    (and differs between activities), so an effect keyed by it happens once:

    >>> from engine import activity, activity_context
    >>> @activity
    ... def charge(customer: str, cents: int) -> str:
    ...     key = activity_context().idempotency_key   # pass it to the payment API
    ...     return f"charged {customer} {cents} ({key})"
    """

    def __init__(
        self,
        *,
        workflow_id: str,
        run_id: str,
        activity_type: str,
        seq: int,
        attempt: int,
        heartbeat_details: Any,
        record_heartbeat: Callable[[Any], None],
        heartbeat_throttle: float = 1.0,
    ) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity_type = activity_type
        self.seq = seq
        self.attempt = attempt
        self.heartbeat_details = heartbeat_details
        self._record = record_heartbeat
        self._throttle = heartbeat_throttle
        self._last_sent = 0.0
        self.last_heartbeat = time.monotonic()
        self._cancelled = False
        self._unsent = False

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts: ``workflow id / run id / sequence number``."""
        return f"{self.workflow_id}/{self.run_id}/{self.seq}"

    @property
    def cancelled(self) -> bool:
        """True once the result can no longer be used (timed out, run closed, worker stopping)."""
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def heartbeat(self, details: Any = None) -> None:
        """Report progress; ``details`` reach the next attempt as ``heartbeat_details``.

        Writes to the store are throttled (at most one per second by default);
        the liveness a ``heartbeat_timeout`` checks is updated on every call.
        """
        now = time.monotonic()
        self.last_heartbeat = now
        self.heartbeat_details = details
        self._unsent = True
        if now - self._last_sent >= self._throttle:
            self.flush()

    def flush(self) -> None:
        """Store the latest details now if throttling held them back (the attempt ends)."""
        if self._unsent:
            self._unsent = False
            self._last_sent = time.monotonic()
            self._record(self.heartbeat_details)


def activity_context() -> ActivityContext:
    """The context of the activity running in this thread or task."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "activity_context() is only available inside a running activity"
        ) from None


def set_context(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    return _current.set(ctx)


def reset_context(token: contextvars.Token[ActivityContext]) -> None:
    _current.reset(token)
