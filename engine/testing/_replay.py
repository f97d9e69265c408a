"""Replaying recorded histories: ``replay`` and ``assert_deterministic`` (no hypothesis here).

Two ways to run workflow code over a history exist, and a worker uses both:

* *from scratch*: one ``Interpreter`` is fed the whole history and checks every
  recorded decision against what the code yields (a cache miss, a restart);
* *live*: the worker keeps the interpreter, feeds it each input as it arrives,
  calls ``decide()`` and feeds the appended batch back (the common path).

``assert_deterministic`` runs both over one history.  The live path calls
``decide()`` exactly where each recorded decision was made (after the events it
saw, ``seen=N``; inputs appended concurrently are fed after the decision) and
compares the batch it makes with the recorded one, event by event.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from typing import Any

import msgspec

from .._codec import Codec, JsonCodec
from .._events import (
    ActivityScheduled,
    ChildWorkflowStarted,
    Event,
    Failure,
    Json,
    MarkerRecorded,
    Payload,
    TimerCancelled,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowTaskCompleted,
    decode_history,
)
from .._interpreter import Interpreter
from .._payloads import BlobStore, PayloadCodec, Payloads

__all__ = ["HistorySource", "assert_deterministic", "load_history", "replay", "units"]

Workflow = Callable[..., Generator[Any, Any, Any]]
HistorySource = Sequence[Event] | str | bytes | os.PathLike[str]

_DECISION_WRITES = (
    ActivityScheduled,
    TimerStarted,
    TimerCancelled,
    ChildWorkflowStarted,
    MarkerRecorded,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
)


def load_history(source: HistorySource) -> list[Event]:
    """A history as a list of events.

    ``source`` is a list of events; the bytes of a history file (a JSON array as
    written by ``engine.events.encode_history`` or ``tpp workflow show --output
    json``, or the msgpack form); a JSON text; or the path of such a file.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _decode(bytes(source))
    if isinstance(source, str) and source.lstrip().startswith("["):
        return decode_history(source.encode())
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return _decode(f.read())
    events = list(source)
    for i, ev in enumerate(events):
        if not isinstance(ev, _EVENT_TYPES):
            raise TypeError(f"history item {i} is not an event: {ev!r}")
    return events


def _decode(data: bytes) -> list[Event]:
    if data.lstrip()[:1] == b"[":
        return decode_history(data)
    return decode_history(data, format="msgpack")


_EVENT_TYPES: tuple[type, ...] = tuple(
    getattr(Event, "__args__", ())  # the members of the union
)


def _opened(events: list[Event], codec: Codec | None, cas: BlobStore | None) -> list[Event]:
    """``events`` with sealed payloads (compressed, encrypted, in the CAS) opened."""
    return Payloads(codec if codec is not None else PayloadCodec(), cas).open_events(events)


def _last_time(history: Sequence[Event]) -> datetime:
    return max(ev.time for ev in history)


def replay(
    fn: Workflow,
    history: HistorySource,
    *,
    codec: Codec | None = None,
    cas: BlobStore | None = None,
    check_args: bool = True,
) -> list[Event]:
    """Replay ``history`` with the workflow ``fn``; return the events it would write next.

    Every recorded decision is checked against what the code yields now; a
    difference raises :class:`~engine.NonDeterminismError` naming the sequence
    number, the recorded and the yielded command.  The result is the next
    decision's events after its ``WorkflowTaskCompleted`` (``[]`` when the code
    has nothing new to do, e.g. for a closed run).  Sealed payloads are opened
    with ``codec`` (a ``PayloadCodec`` with the workers' keys) and ``cas``.

    >>> from engine import workflow, Timer
    >>> from engine.events import WorkflowStarted, Json
    >>> from engine.testing import VirtualClock
    >>> @workflow
    ... def nap():
    ...     yield Timer(60)
    >>> started = WorkflowStarted(time=VirtualClock().now(), workflow_type="nap",
    ...                           workflow_id="w", run_id="r", input=Json(text="[]"))
    >>> [type(e).__name__ for e in replay(nap, [started])]
    ['TimerStarted']
    """
    events = _opened(load_history(history), codec, cas)
    interpreter = Interpreter(fn, codec=codec, check_args=check_args)
    try:
        interpreter.feed(events)
        if not events:
            return []
        decision = interpreter.decide(_last_time(events), "replay")
        return [] if decision is None else decision.events[1:]
    finally:
        interpreter.close()


def _units(history: Sequence[Event]) -> list[tuple[int, list[Event]]]:
    """The history cut into inputs (one event each) and whole decision batches."""
    units: list[tuple[int, list[Event]]] = []
    for i, ev in enumerate(history):
        if isinstance(ev, WorkflowTaskCompleted) or not isinstance(ev, _DECISION_WRITES):
            units.append((i, [ev]))
        elif units and isinstance(units[-1][1][0], WorkflowTaskCompleted):
            units[-1][1].append(ev)
        else:
            units.append((i, [ev]))  # malformed: replay from scratch reports it
    return units


class _Comparer:
    """Compares decision events by what determinism covers (not index, time or tracebacks)."""

    def __init__(self, codec: Codec, check_args: bool) -> None:
        self._codec = codec
        self._check_args = check_args

    def value(self, payload: Payload | None) -> Any:
        if payload is None or isinstance(payload, Json):
            return payload
        try:
            return ("value", self._codec.decode(payload))
        except Exception:  # a payload this codec cannot read: compare it as stored
            return payload

    def failure(self, f: Failure | None) -> Any:
        if f is None:
            return None
        return (f.type, f.message, f.non_retryable, self.failure(f.cause))

    def key(self, ev: Event) -> tuple[Any, ...]:
        match ev:
            case WorkflowTaskCompleted():
                queries = (
                    None
                    if ev.queries is None
                    else sorted((k, repr(self.value(v))) for k, v in ev.queries.items())
                )
                return ("WorkflowTaskCompleted", ev.seen, ev.commands, queries)
            case ActivityScheduled():
                return (
                    "ActivityScheduled",
                    ev.seq,
                    ev.activity_type,
                    ev.args_digest if self._check_args else None,
                    ev.task_queue,
                    ev.retry,
                    ev.start_to_close,
                    ev.schedule_to_close,
                    ev.heartbeat_timeout,
                )
            case ChildWorkflowStarted():
                return (
                    "ChildWorkflowStarted",
                    ev.seq,
                    ev.workflow_type,
                    ev.workflow_id,
                    ev.args_digest if self._check_args else None,
                    ev.task_queue,
                )
            case TimerStarted():  # fire_at follows the decision's clock, time the store's
                return ("TimerStarted", ev.seq, ev.duration)
            case TimerCancelled():
                return ("TimerCancelled", ev.seq)
            case MarkerRecorded():
                return (
                    "MarkerRecorded",
                    ev.name,
                    ev.seq,
                    ev.change_id,
                    self.value(ev.value),
                    self.failure(ev.error),
                )
            case WorkflowCompleted():
                return ("WorkflowCompleted", self.value(ev.result))
            case WorkflowFailed():
                return ("WorkflowFailed", self.failure(ev.error))
            case WorkflowCancelled():
                return ("WorkflowCancelled", ev.reason)
            case WorkflowContinuedAsNew():
                return ("WorkflowContinuedAsNew", self.value(ev.input))
            case _:
                return (type(ev).__name__, repr(_strip(ev)))

    def reran_side_effect(self, recorded: Event, produced: Event) -> bool:
        """A side effect ran again and gave another value: legal, but the paths part here."""
        return (
            isinstance(recorded, MarkerRecorded)
            and isinstance(produced, MarkerRecorded)
            and recorded.name == produced.name == "side_effect"
            and recorded.seq == produced.seq
        )

    def diff(self, recorded: Sequence[Event], produced: Sequence[Event]) -> tuple[int, bool] | None:
        """``None`` if equal, else (position of the first difference, whether it is a re-run
        side effect, after which nothing more can be compared)."""
        for pos in range(max(len(recorded), len(produced))):
            if pos >= len(recorded) or pos >= len(produced):
                return pos, False
            r, p = recorded[pos], produced[pos]
            if self.key(r) != self.key(p):
                return pos, self.reran_side_effect(r, p)
        return None


def _strip(ev: Event) -> Any:
    return msgspec.structs.replace(ev, index=-1)


def _show(events: Sequence[Event], pos: int) -> str:
    if pos >= len(events):
        return "nothing"
    ev = events[pos]
    inner = ", ".join(
        f"{k}={getattr(ev, k)!r}" for k in ev.__struct_fields__ if k not in ("index", "time")
    )
    return f"{type(ev).__name__}({inner})"


def assert_deterministic(
    fn: Workflow,
    history: HistorySource,
    *,
    codec: Codec | None = None,
    cas: BlobStore | None = None,
    check_args: bool = True,
) -> None:
    """Replay ``history`` from scratch and through the live path; require identical commands.

    From scratch, one interpreter is fed the whole history (every recorded
    command is checked; a mismatch raises :class:`~engine.NonDeterminismError`).
    Live, a second interpreter is fed the history input by input and makes each
    recorded decision itself, at the point the decision was made, and the batch
    it makes must equal the recorded batch; at the end both must agree on
    whether the run is closed, its queries, and the next decision.  Any
    difference raises ``AssertionError`` saying where and what.

    >>> from engine import Interpreter, workflow, ScheduleActivity
    >>> from engine.events import ActivityCompleted, Json, WorkflowStarted
    >>> from engine.testing import VirtualClock
    >>> @workflow
    ... def greet(name: str):
    ...     return (yield ScheduleActivity("hello", name))
    >>> t = VirtualClock().now()
    >>> history = [WorkflowStarted(time=t, workflow_type="greet", workflow_id="w",
    ...                            run_id="r", input=Json(text='["ada"]'))]
    >>> it = Interpreter(greet)              # a worker's live interpreter
    >>> for new in ([], [ActivityCompleted(time=t, seq=1, result=Json(text='"hi"'))]):
    ...     history += new
    ...     it.feed(history[-len(new):] if new else history)
    ...     batch = it.decide(t, f"b{len(history)}").events
    ...     it.feed(batch)
    ...     history += batch
    >>> assert_deterministic(greet, history)
    """
    events = _opened(load_history(history), codec, cas)
    codec = codec if codec is not None else JsonCodec()
    cmp = _Comparer(codec, check_args)
    if not events:
        return
    now = _last_time(events)

    scratch = Interpreter(fn, codec=codec, check_args=check_args)
    try:
        scratch.feed(events)  # NonDeterminismError propagates: the clearest report
        live = _live(fn, events, codec, check_args, cmp)
        try:
            _agree(cmp, "replay from scratch", scratch, "the live path", live, now, len(events))
        finally:
            live.close()
    finally:
        scratch.close()


def _live(
    fn: Workflow, events: list[Event], codec: Codec, check_args: bool, cmp: _Comparer
) -> Interpreter:
    """Drive a live interpreter through ``events`` as the worker that wrote them did."""
    live = Interpreter(fn, codec=codec, check_args=check_args)
    waiting: list[Event] = []  # inputs not yet fed (they may follow a decision's seen point)
    fed = 0
    try:
        for start, unit in _units(events):
            head = unit[0]
            if not isinstance(head, WorkflowTaskCompleted):
                if fed == 0:
                    live.feed(unit)  # WorkflowStarted
                    fed = 1
                else:
                    waiting.append(head)
                continue
            before = [ev for i, ev in enumerate(waiting, fed) if i < head.seen]
            after = waiting[len(before) :]
            for ev in before:
                live.feed([ev])
            fed += len(before)
            produced = live.decide(head.time, head.batch_id)
            if produced is None:
                raise AssertionError(
                    f"the live path made no decision at event {start} (after seeing "
                    f"{head.seen} events) but the history recorded batch {head.batch_id!r}: "
                    f"{_show(unit, 0)} ..."
                )
            diff = cmp.diff(unit, produced.events)
            if diff is not None and not diff[1]:
                pos = diff[0]
                raise AssertionError(
                    f"the live path decided differently at event {start + pos} (decision "
                    f"{head.batch_id!r}, which saw {head.seen} events, batch position {pos}): "
                    f"the history recorded {_show(unit, pos)} but the live interpreter made "
                    f"{_show(produced.events, pos)}"
                )
            for ev in after:
                live.feed([ev])
            live.feed(unit)
            fed += len(after) + len(unit)
            waiting = []
            if diff is not None:
                # A SideEffect ran again with a new value.  A real worker's generator holds
                # the recorded value, so continue from a replay of everything so far.
                live.close()
                live = Interpreter(fn, codec=codec, check_args=check_args)
                live.feed(events[: start + len(unit)])
        for ev in waiting:
            live.feed([ev])
    except AssertionError:
        live.close()
        raise
    except Exception as exc:
        live.close()
        raise AssertionError(
            f"the live path failed where replay from scratch did not: {type(exc).__name__}: {exc}"
        ) from exc
    return live


def _agree(
    cmp: _Comparer,
    a_name: str,
    a: Interpreter,
    b_name: str,
    b: Interpreter,
    now: datetime,
    length: int,
) -> None:
    """Two interpreters fed the same history agree on closing, queries and the next decision."""
    a_closing = None if a.closing is None else cmp.key(a.closing)
    b_closing = None if b.closing is None else cmp.key(b.closing)
    if a_closing != b_closing:
        raise AssertionError(
            f"after {length} events, {a_name} has closing event {a.closing!r} but {b_name} "
            f"has {b.closing!r}"
        )
    if a.queries != b.queries:
        raise AssertionError(
            f"after {length} events, {a_name} has queries {a.queries!r} but {b_name} "
            f"has {b.queries!r}"
        )
    da = a.decide(now, "next")
    db = b.decide(now, "next")
    ea: list[Event] = [] if da is None else da.events
    eb: list[Event] = [] if db is None else db.events
    diff = cmp.diff(ea, eb)
    if diff is not None and not diff[1]:
        raise AssertionError(
            f"after {length} events, the next decision differs at batch position {diff[0]}: "
            f"{a_name} makes {_show(ea, diff[0])} but {b_name} makes {_show(eb, diff[0])}"
        )


def units(history: Sequence[Event]) -> list[list[Event]]:
    """The history cut into what may be fed at once: single inputs and whole decision batches.

    ``Interpreter.feed`` takes whole batches; a store appends and reads them whole.
    """
    return [unit for _, unit in _units(history)]
