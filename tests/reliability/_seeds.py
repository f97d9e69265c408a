"""Seeds for the reliability suite: fixed by default, overridable, printed on failure.

Every randomised test draws its randomness from ``random.Random(seed)`` only, so
the same seed gives the same trace.  ``seeds(name, default, count)`` yields the
seeds a test runs: ``default`` onwards, or ``$TPP_SEED`` onwards when set (to
replay one failure: ``TPP_SEED=1234 TPP_SEEDS=1 pytest -k ...``).  ``count`` can be
raised with ``$TPP_SEEDS`` (soak runs).  ``replaying(seed)`` wraps a failure so
that its message starts with the environment that replays it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["count", "replaying", "seeds"]


def count(default: int, env: str = "TPP_SEEDS") -> int:
    """``default``, or the number in ``$env`` (soak tiers)."""
    raw = os.environ.get(env)
    return int(raw) if raw else default


def seeds(default: int, n: int) -> range:
    """``n`` consecutive seeds from ``$TPP_SEED`` (when set) or ``default``."""
    raw = os.environ.get("TPP_SEED")
    start = int(raw) if raw else default
    return range(start, start + count(n))


@contextlib.contextmanager
def replaying(seed: int, what: str = "") -> Iterator[None]:
    """Re-raise an ``AssertionError`` (or any failure) with the seed that replays it."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        raise AssertionError(
            f"seed {seed} failed{' (' + what + ')' if what else ''}; replay with "
            f"TPP_SEED={seed} TPP_SEEDS=1: {type(exc).__name__}: {exc}"
        ) from exc
