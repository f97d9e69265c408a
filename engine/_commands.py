"""Commands: what a workflow generator yields.

Every command is a frozen msgspec ``Struct``.  Those whose binding signature
takes ``*args`` (``ScheduleActivity``, ``StartChildWorkflow``, ``ContinueAsNew``,
``All``, ``Any``) get it from a small metaclass, since msgspec generates
``__init__`` itself.  A command is also iterable, so ``result = yield from cmd``
works and lets a type checker see the result type where it matters.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar
from typing import Any as _Any

import msgspec

from ._retry import RetryPolicy

__all__ = [
    "All",
    "Any",
    "Command",
    "ContinueAsNew",
    "Now",
    "Patched",
    "ScheduleActivity",
    "SetQuery",
    "SideEffect",
    "StartChildWorkflow",
    "Timer",
    "WaitSignal",
]

Duration = timedelta | float | int


class _Command(msgspec.Struct, frozen=True):
    def __iter__(self) -> Generator[_Command, _Any, _Any]:
        return (yield self)


_new = msgspec.StructMeta.__call__


class _ArgsMeta(msgspec.StructMeta):
    """Lets ``Cmd(target, *args, **options)`` build a Struct with an ``args`` tuple."""

    def __call__(cls, *args: _Any, **options: _Any) -> _Any:
        # NB: the common call (no options) skips _build: commands are built on every
        # yield, replays included, so this is on the replay hot path
        if options or not args:
            return cls._build(*args, **options)  # type: ignore[attr-defined]
        if cls._target_first:  # type: ignore[attr-defined]
            return _new(cls, args[0], args[1:])
        return _new(cls, args)


class ScheduleActivity(_Command, frozen=True, metaclass=_ArgsMeta):
    """Run an activity; the yield returns its result or throws ``ActivityError``.

    ``ScheduleActivity(charge, "cust-1", 999, retry=RetryPolicy(maximum_attempts=3))``
    """

    _target_first: ClassVar[bool] = True

    if TYPE_CHECKING:

        def __init__(
            self,
            activity: _Any,
            /,
            *args: _Any,
            retry: RetryPolicy | None = None,
            start_to_close: Duration | None = None,
            schedule_to_close: Duration | None = None,
            heartbeat_timeout: Duration | None = None,
            task_queue: str | None = None,
        ) -> None: ...

    activity: _Any
    args: tuple[_Any, ...]
    retry: RetryPolicy | None = None
    start_to_close: Duration | None = None
    schedule_to_close: Duration | None = None
    heartbeat_timeout: Duration | None = None
    task_queue: str | None = None

    @classmethod
    def _build(
        cls,
        activity: _Any,
        *args: _Any,
        retry: RetryPolicy | None = None,
        start_to_close: Duration | None = None,
        schedule_to_close: Duration | None = None,
        heartbeat_timeout: Duration | None = None,
        task_queue: str | None = None,
    ) -> ScheduleActivity:
        return _new(  # type: ignore[no-any-return]
            cls,
            activity,
            args,
            retry,
            start_to_close,
            schedule_to_close,
            heartbeat_timeout,
            task_queue,
        )


class StartChildWorkflow(_Command, frozen=True, metaclass=_ArgsMeta):
    """Start a child workflow and wait for its result (or ``ChildWorkflowError``)."""

    _target_first: ClassVar[bool] = True

    if TYPE_CHECKING:

        def __init__(
            self,
            workflow: _Any,
            /,
            *args: _Any,
            id: str | None = None,
            task_queue: str | None = None,
        ) -> None: ...

    workflow: _Any
    args: tuple[_Any, ...]
    id: str | None = None
    task_queue: str | None = None

    @classmethod
    def _build(
        cls, workflow: _Any, *args: _Any, id: str | None = None, task_queue: str | None = None
    ) -> StartChildWorkflow:
        return _new(cls, workflow, args, id, task_queue)  # type: ignore[no-any-return]


class ContinueAsNew(_Command, frozen=True, metaclass=_ArgsMeta):
    """End this run and start a fresh run of the same workflow id with ``args``."""

    _target_first: ClassVar[bool] = False

    if TYPE_CHECKING:

        def __init__(self, *args: _Any) -> None: ...

    args: tuple[_Any, ...]

    @classmethod
    def _build(cls, *args: _Any) -> ContinueAsNew:
        return _new(cls, args)  # type: ignore[no-any-return]


class All(_Command, frozen=True, metaclass=_ArgsMeta):
    """Wait for every member; the result is the list of their results, in order.

    Raises the first failure in history order; the other members run on.
    """

    _target_first: ClassVar[bool] = False

    if TYPE_CHECKING:

        def __init__(self, *commands: _Command) -> None: ...

    commands: tuple[_Command, ...]

    @classmethod
    def _build(cls, *commands: _Command) -> All:
        return _new(cls, commands)  # type: ignore[no-any-return]


class Any(_Command, frozen=True, metaclass=_ArgsMeta):
    """Wait for the first member to resolve; the result is ``(index, result)``.

    Losing timers are cancelled; a losing ``WaitSignal`` consumes nothing.
    """

    _target_first: ClassVar[bool] = False

    if TYPE_CHECKING:

        def __init__(self, *commands: _Command) -> None: ...

    commands: tuple[_Command, ...]

    @classmethod
    def _build(cls, *commands: _Command) -> Any:
        return _new(cls, commands)  # type: ignore[no-any-return]


class Timer(_Command, frozen=True):
    """Sleep durably for ``duration`` (a ``timedelta`` or seconds)."""

    duration: Duration


class WaitSignal(_Command, frozen=True):
    """Wait for signal ``name``; its payload is the result.  ``TimeoutError`` after ``timeout``."""

    name: str
    timeout: Duration | None = None


class SideEffect(_Command, frozen=True):
    """Run ``fn()`` once and record its value; replay returns the recorded value."""

    fn: Callable[[], _Any]


class Now(_Command, frozen=True):
    """The decision's deterministic UTC ``datetime``."""


class Patched(_Command, frozen=True):
    """``True`` on runs that reach this point on new code, ``False`` on older histories."""

    change_id: str


class SetQuery(_Command, frozen=True):
    """Publish ``value`` under query ``name`` (read by ``Client.query``); no sequence number."""

    name: str
    value: _Any


Command = (
    ScheduleActivity
    | StartChildWorkflow
    | ContinueAsNew
    | All
    | Any
    | Timer
    | WaitSignal
    | SideEffect
    | Now
    | Patched
    | SetQuery
)


def to_timedelta(value: Duration, what: str) -> timedelta:
    """Normalise a duration argument, with a clear error for anything else."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    if result < timedelta():
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return result
