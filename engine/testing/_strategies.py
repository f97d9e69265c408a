"""``histories``: a hypothesis strategy that runs a workflow against a generated world.

The strategy plays both sides.  The *worker* asks a live ``Interpreter`` for a
decision whenever inputs arrived, appends the batch and feeds it back.  The
*world* appends inputs: activity results, failed attempts (with their durable
retry) and final failures, timers firing, child workflow outcomes, signals and a
cancellation request.  Some inputs land between a decision's seen point and its
batch, as when a signal races a worker.

Time is a ``VirtualClock``: a timer fires at its ``fire_at`` and nothing else
happens after a due timer's time before it fires (timers due at the same
instant fire in any order); a retried attempt ends no earlier than its
``retry_at``.  Batch ids are ``b1``, ``b2``, ... so a history is a pure function
of the draws, as hypothesis needs for shrinking.  Choices are ordered so that
shrinking leads towards the happy path (results before failures, the lowest
sequence number first).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import hypothesis.strategies as st

from .._clock import VirtualClock
from .._codec import Codec, JsonCodec
from .._defs import (
    ActivityDefinition,
    WorkflowDefinition,
    result_type_of,
    workflow_definition,
)
from .._events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Failure,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowStarted,
    WorkflowTaskCompleted,
    with_index,
)
from .._interpreter import Interpreter
from .._retry import RetryPolicy

__all__ = ["histories", "json_values"]

Workflow = Callable[..., Generator[Any, Any, Any]]
Strategy = Any  # hypothesis.strategies.SearchStrategy[Any]

_DEFAULT_RETRY = RetryPolicy()
_ERROR_TYPES = ("RuntimeError", "ValueError", "ConnectionError")


def json_values() -> Strategy:
    """Small JSON-ish values: ``None``, booleans, numbers, text, and lists and dicts of them."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    )


def _for_type(tp: Any) -> Strategy:
    """Values that a result annotated ``tp`` decodes into (simple annotations; else hypothesis)."""
    if tp is Any or tp is object:
        return json_values()
    if tp is None or tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**53), 2**53)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.text(max_size=12)
    if tp is bytes:
        return st.binary(max_size=12)
    if tp is datetime:
        return st.datetimes(timezones=st.just(UTC))
    if tp is date:
        return st.dates()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([_for_type(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(_for_type(args[0] if args else Any), max_size=3)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_for_type(args[0]), max_size=3).map(tuple)
        return st.tuples(*[_for_type(a) for a in args])
    if origin is dict:
        key = args[0] if args else str
        return st.dictionaries(_for_type(key), _for_type(args[1] if args else Any), max_size=3)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = {f.name: _for_type(hints.get(f.name, Any)) for f in dataclasses.fields(tp)}
        return st.builds(tp, **fields)
    return st.from_type(tp)


def _result_types(fn: Workflow, extra: Iterable[Callable[..., Any]]) -> dict[str, Any]:
    """Annotated result types by type name: ``extra`` first, then the workflow's module."""
    found: dict[str, Any] = {}
    candidates = list(extra) + list(getattr(fn, "__globals__", {}).values())
    for obj in candidates:
        try:
            d = getattr(obj, "__temporalpp__", None)
        except Exception:  # a module global with a strange __getattr__
            continue
        if isinstance(d, ActivityDefinition | WorkflowDefinition) and d.name not in found:
            found[d.name] = d.result_type()
    return found


@dataclasses.dataclass
class _Activity:
    name: str
    retry: RetryPolicy
    attempt: int = 1
    ready_at: datetime | None = None


@dataclasses.dataclass
class _Options:
    results: Mapping[str, Strategy]
    signals: Mapping[str, Strategy] | None
    result_types: dict[str, Any]
    failures: bool
    cancel: bool
    concurrency: bool
    max_steps: int
    codec: Codec
    start: datetime
    workflow_id: str


# weights of the kinds of input; the order is the shrinking order
_KINDS = (
    ("complete", 32),
    ("fire", 24),
    ("child_complete", 16),
    ("signal", 12),
    ("fail", 8),
    ("child_fail", 4),
    ("cancel", 1),
)


class _World:
    """One generated run: the history, the live interpreter, and what may happen next."""

    def __init__(self, fn: Workflow, args: tuple[Any, ...], opts: _Options, draw: Any) -> None:
        self.opts = opts
        self.draw = draw
        self.clock = VirtualClock(opts.start)
        self.history: list[Event] = []
        self.batches = 0
        self.activities: dict[int, _Activity] = {}
        self.timers: dict[int, datetime] = {}
        self.children: dict[int, str] = {}
        self.signal_names: list[str] = list(opts.signals) if opts.signals is not None else []
        self.cancelled = False
        self.steps = 0  # inputs appended so far
        self.strategies: dict[str, Strategy] = {}
        self.interpreter = Interpreter(fn, codec=opts.codec)
        name = workflow_definition(fn).name
        payload, _ = opts.codec.encode_args(args)
        self.append(
            WorkflowStarted(
                time=self.clock.now(),
                workflow_type=name,
                workflow_id=opts.workflow_id,
                run_id=f"{opts.workflow_id}-run-1",
                input=payload,
            )
        )

    # -- the log

    def append(self, ev: Event) -> None:
        ev = with_index(ev, len(self.history))
        self.history.append(ev)
        self.interpreter.feed([ev])

    @property
    def closed(self) -> bool:
        return self.interpreter.closing is not None

    # -- the worker

    def decide(self) -> bool:
        """Make a decision if there is one to make; maybe let inputs race it."""
        self.batches += 1
        decision = self.interpreter.decide(self.clock.now(), f"b{self.batches}")
        if decision is None:
            self.batches -= 1
            return False
        if self.opts.concurrency:
            racing = (0, 0, 0, 0, 0, 0, 0, 1, 1, 2)[self.draw(st.integers(0, 9))]
            for _ in range(min(racing, self.opts.max_steps - self.steps)):
                if not self.step():
                    break
        start = len(self.history)
        batch = [with_index(ev, start + i) for i, ev in enumerate(decision.events)]
        self.history.extend(batch)
        self.interpreter.feed(batch)
        for ev in batch:
            self.observe(ev)
        return True

    def observe(self, ev: Event) -> None:
        match ev:
            case ActivityScheduled():
                self.activities[ev.seq] = _Activity(ev.activity_type, ev.retry or _DEFAULT_RETRY)
            case TimerStarted():
                self.timers[ev.seq] = ev.fire_at
            case TimerCancelled():
                self.timers.pop(ev.seq, None)
            case ChildWorkflowStarted():
                self.children[ev.seq] = ev.workflow_type
            case WorkflowTaskCompleted() if self.opts.signals is None:
                for rec in ev.commands:
                    if rec.kind == "signal" and rec.name not in self.signal_names:
                        self.signal_names.append(rec.name)
            case _:
                pass

    # -- the world

    def _due(self) -> datetime | None:
        return min(self.timers.values()) if self.timers else None

    def _ready(self) -> dict[str, list[Any]]:
        """What may happen next, by kind (each list in shrinking order)."""
        now = self.clock.now()
        due = self._due()
        ready_acts = [
            seq
            for seq, a in sorted(self.activities.items())
            if due is None or max(now, a.ready_at or now) <= due
        ]
        children = sorted(self.children)
        options: dict[str, list[Any]] = {
            "complete": ready_acts,
            "fire": sorted(s for s, t in self.timers.items() if t == due),
            "child_complete": children,
            "signal": list(self.signal_names),
            "fail": ready_acts if self.opts.failures else [],
            "child_fail": children if self.opts.failures else [],
            "cancel": [None] if self.opts.cancel and not self.cancelled else [],
        }
        return {k: v for k, v in options.items() if v}

    def step(self) -> bool:
        """Append one generated input; ``False`` if nothing can happen any more."""
        ready = self._ready()
        if not ready:
            return False
        kinds = [(k, w) for k, w in _KINDS if k in ready]
        roll = self.draw(st.integers(0, sum(w for _, w in kinds) - 1))
        for kind, weight in kinds:  # noqa: B007
            if roll < weight:
                break
            roll -= weight
        target = self.draw(st.sampled_from(ready[kind]))
        self.append(getattr(self, f"_{kind}")(target))
        self.steps += 1
        return True

    def _result(self, name: str) -> Any:
        strategy = self.strategies.get(name)
        if strategy is None:
            strategy = self.opts.results.get(name)
            if strategy is None:
                strategy = _for_type(self._result_type(name))
            self.strategies[name] = strategy
        return self.opts.codec.encode(self.draw(strategy))

    def _result_type(self, name: str) -> Any:
        if name in self.opts.result_types:
            return self.opts.result_types[name]
        # the functions the code yielded, where the interpreter keeps them
        fns = getattr(self.interpreter, "functions", None)
        if isinstance(fns, dict) and name in fns:
            return result_type_of(fns[name])
        return Any

    def _failure(self) -> Failure:
        kind = self.draw(st.sampled_from(_ERROR_TYPES))
        return Failure(type=kind, message=f"generated {kind}", traceback="(generated)\n")

    def _at(self, when: datetime | None) -> datetime:
        return self.clock.now() if when is None else self.clock.set(when)

    def _complete(self, seq: int) -> Event:
        a = self.activities.pop(seq)
        t = self._at(a.ready_at)
        return ActivityCompleted(time=t, seq=seq, result=self._result(a.name), attempt=a.attempt)

    def _fail(self, seq: int) -> Event:
        a = self.activities[seq]
        t = self._at(a.ready_at)
        error = self._failure()
        final = self.draw(st.booleans())
        if final or not a.retry.retries(a.attempt, error.type):
            del self.activities[seq]
            if final:
                error = Failure(
                    type=error.type,
                    message=error.message,
                    traceback=error.traceback,
                    non_retryable=True,
                )
            return ActivityFailed(time=t, seq=seq, error=error, attempt=a.attempt)
        retry_at = t + a.retry.delay(a.attempt)
        ev = ActivityAttemptFailed(
            time=t, seq=seq, attempt=a.attempt, error=error, retry_at=retry_at
        )
        a.attempt += 1
        a.ready_at = retry_at
        return ev

    def _fire(self, seq: int) -> Event:
        t = self._at(self.timers.pop(seq))
        return TimerFired(time=t, seq=seq)

    def _child_complete(self, seq: int) -> Event:
        name = self.children.pop(seq)
        return ChildWorkflowCompleted(
            time=self.clock.now(), seq=seq, result=self._result(name), run_id=f"child-{seq}"
        )

    def _child_fail(self, seq: int) -> Event:
        del self.children[seq]
        return ChildWorkflowFailed(
            time=self.clock.now(), seq=seq, error=self._failure(), run_id=f"child-{seq}"
        )

    def _signal(self, name: str) -> Event:
        signals = self.opts.signals
        strategy = signals.get(name) if signals is not None else None
        value = self.draw(strategy if strategy is not None else json_values())
        return SignalReceived(
            time=self.clock.now(),
            name=name,
            payload=self.opts.codec.encode(value),
            request_id=f"signal-{len(self.history)}",
        )

    def _cancel(self, _: None) -> Event:
        self.cancelled = True
        return CancelRequested(time=self.clock.now(), reason="generated cancellation")

    # -- a whole run

    def run(self) -> list[Event]:
        try:
            self.decide()
            while not self.closed and self.steps < self.opts.max_steps:
                arrivals = 0
                burst = self.draw(st.integers(1, 3))
                for _ in range(min(burst, self.opts.max_steps - self.steps)):
                    if not self.step():
                        break
                    arrivals += 1
                if arrivals == 0:
                    break  # waits on nothing the world can do (say, an unknown signal)
                if self.steps >= self.opts.max_steps and self.draw(st.booleans()):
                    break  # leave the last inputs undecided
                self.decide()
            return self.history
        finally:
            self.interpreter.close()


def histories(
    fn: Workflow,
    *args: Any,
    results: Mapping[str, Strategy] | None = None,
    signals: Mapping[str, Strategy] | None = None,
    activities: Iterable[Callable[..., Any]] = (),
    failures: bool = True,
    cancel: bool = True,
    concurrency: bool = True,
    max_steps: int = 50,
    codec: Codec | None = None,
    start: datetime | None = None,
    workflow_id: str = "wf-1",
) -> Strategy:
    """See :func:`engine.testing.histories`."""
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps!r}")
    workflow_definition(fn)  # a clear error now rather than inside hypothesis
    opts = _Options(
        results=dict(results or {}),
        signals=None if signals is None else dict(signals),
        result_types=_result_types(fn, activities),
        failures=failures,
        cancel=cancel,
        concurrency=concurrency,
        max_steps=max_steps,
        codec=codec if codec is not None else JsonCodec(),
        start=start if start is not None else datetime(2026, 1, 1, tzinfo=UTC),
        workflow_id=workflow_id,
    )

    @st.composite
    def strategy(draw: Any) -> list[Event]:
        return _World(fn, args, opts, draw).run()

    return strategy()
