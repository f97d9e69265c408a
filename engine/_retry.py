"""Retry policy with Temporal's meanings and defaults (pure arithmetic, no clock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import msgspec

__all__ = ["RetryPolicy"]

_DEFAULT_COEFFICIENT = 2.0


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a failed activity is retried.

    Defaults follow Temporal: first retry after 1 s, each wait doubles, capped at
    100 x the initial interval, unlimited attempts (``maximum_attempts=0``).
    ``non_retryable`` lists exception type names (``"ValueError"`` or a
    qualified ``"billing.CardDeclined"``) that fail the activity at once.

    >>> RetryPolicy(maximum_attempts=3).delay(2)
    datetime.timedelta(seconds=2)
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = _DEFAULT_COEFFICIENT
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable: Sequence[str] = ()

    def __post_init__(self) -> None:
        # NB: normalise, so equal policies encode to equal bytes (2 and 2.0, list and tuple)
        if type(self.backoff_coefficient) is not float:
            coefficient = float(self.backoff_coefficient)
            if coefficient == _DEFAULT_COEFFICIENT:  # msgspec omits a default by identity
                coefficient = _DEFAULT_COEFFICIENT
            msgspec.structs.force_setattr(self, "backoff_coefficient", coefficient)
        if isinstance(self.non_retryable, str) or not all(
            isinstance(n, str) for n in self.non_retryable
        ):
            raise TypeError(
                f"RetryPolicy.non_retryable must be a list of exception type names, "
                f"got {self.non_retryable!r}"
            )
        if type(self.non_retryable) is not tuple:
            msgspec.structs.force_setattr(self, "non_retryable", tuple(self.non_retryable))
        if not isinstance(self.initial_interval, timedelta) or self.initial_interval <= timedelta():
            raise ValueError(
                f"RetryPolicy.initial_interval must be a positive timedelta, "
                f"got {self.initial_interval!r}"
            )
        if self.backoff_coefficient < 1:
            raise ValueError(
                f"RetryPolicy.backoff_coefficient must be >= 1, got {self.backoff_coefficient!r}"
            )
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy.maximum_interval must be >= initial_interval")
        if self.maximum_attempts < 0:
            raise ValueError("RetryPolicy.maximum_attempts must be >= 0 (0 means unlimited)")

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        cap = self.maximum_interval or self.initial_interval * 100
        seconds = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        return min(timedelta(seconds=seconds), cap)

    def retries(self, attempt: int, error_type: str) -> bool:
        """Whether failed attempt ``attempt`` with ``error_type`` gets another try."""
        short = error_type.rsplit(".", 1)[-1]
        if error_type in self.non_retryable or short in self.non_retryable:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts
