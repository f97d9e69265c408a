"""A fluent history builder for tests: drives an ``Interpreter`` the way a worker does.

``History(workflow, *args)`` appends ``WorkflowStarted``; ``decide()`` feeds the
live interpreter every input appended since its last decision, asks it for a
decision at the builder's clock with a deterministic batch id (``b1``, ``b2``,
...), appends the batch and feeds it back.  Between decisions a test injects
inputs (``complete``, ``fail``, ``fire``, ``signal``, ``cancel``, ``terminate``,
...), each of which appends one event and returns the builder::

    h = History(subscription, "cust-1").decide()
    h.complete(1, "receipt").decide().fire(2).decide()
    assert h.closing == ...

Inputs passed as ``decide(during=[...])`` are appended while the decision is
being made: after the events it saw, before its batch (``seen=N`` semantics).

With ``verify=True`` (the default) every decision is also made from scratch,
by a fresh interpreter fed ``history[:seen]``, and must be identical: the
incremental path and a replay must never differ.

Only the public interpreter API is used: ``Interpreter.feed``, ``decide``,
``closing``, ``queries`` and the events of ``engine.events``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from engine import Codec, Decision, Interpreter, JsonCodec
from engine.events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Failure,
    Json,
    Payload,
    SignalReceived,
    TimerFired,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    with_index,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

Workflow = Callable[..., Generator[Any, Any, Any]]

_codec = JsonCodec()


def payload(value: Any) -> Payload:
    """``value`` as the default codec encodes it."""
    return _codec.encode(value)


def failure(type: str = "ValueError", message: str = "boom") -> Failure:
    return Failure(type=type, message=message, traceback=f"Traceback: {type}: {message}\n")


# --------------------------------------------------------------------------- input events


def completed(seq: int, value: Any = None, *, attempt: int = 1, time: datetime = T0) -> Event:
    return ActivityCompleted(time=time, seq=seq, result=payload(value), attempt=attempt)


def failed(
    seq: int,
    type: str = "ValueError",
    message: str = "boom",
    *,
    attempt: int = 1,
    time: datetime = T0,
) -> Event:
    return ActivityFailed(time=time, seq=seq, error=failure(type, message), attempt=attempt)


def attempt_failed(
    seq: int,
    attempt: int = 1,
    type: str = "ValueError",
    message: str = "boom",
    *,
    time: datetime = T0,
) -> Event:
    return ActivityAttemptFailed(
        time=time,
        seq=seq,
        attempt=attempt,
        error=failure(type, message),
        retry_at=time + timedelta(seconds=attempt),
    )


def fired(seq: int, *, time: datetime = T0) -> Event:
    return TimerFired(time=time, seq=seq)


def signal(name: str, value: Any = None, *, time: datetime = T0, request_id: str = "") -> Event:
    return SignalReceived(time=time, name=name, payload=payload(value), request_id=request_id)


def cancel(reason: str = "", *, time: datetime = T0) -> Event:
    return CancelRequested(time=time, reason=reason)


def terminate(reason: str = "", *, time: datetime = T0) -> Event:
    return WorkflowTerminated(time=time, reason=reason)


def child_completed(seq: int, value: Any = None, *, run_id: str = "", time: datetime = T0) -> Event:
    return ChildWorkflowCompleted(time=time, seq=seq, result=payload(value), run_id=run_id)


def child_failed(
    seq: int,
    type: str = "ValueError",
    message: str = "boom",
    *,
    run_id: str = "",
    time: datetime = T0,
) -> Event:
    return ChildWorkflowFailed(time=time, seq=seq, error=failure(type, message), run_id=run_id)


# --------------------------------------------------------------------------- the builder


class History:
    """Runs ``workflow`` decision by decision, recording its history."""

    def __init__(
        self,
        workflow: Workflow,
        *args: Any,
        input: Payload | None = None,
        workflow_id: str = "wf-1",
        run_id: str = "run-1",
        workflow_type: str | None = None,
        start: datetime = T0,
        codec: Codec | None = None,
        check_args: bool = True,
        verify: bool = True,
    ) -> None:
        self.workflow = workflow
        self.codec = codec
        self.check_args = check_args
        self.verify = verify
        self.now = start
        self.events: list[Event] = []
        self.decisions: list[Decision] = []
        self.interpreter = self._new_interpreter()
        self._fed = 0
        self._batches = 0
        self.add(
            WorkflowStarted(
                time=start,
                workflow_type=workflow_type or self.interpreter.workflow_type,
                workflow_id=workflow_id,
                run_id=run_id,
                input=input if input is not None else payload(list(args)),
            )
        )

    def continue_with(self, workflow: Workflow, *, check_args: bool = True) -> History:
        """A builder that carries this history on with other code (a new deployment)."""
        other = History.__new__(History)
        other.workflow = workflow
        other.codec = self.codec
        other.check_args = check_args
        other.verify = self.verify
        other.now = self.now
        other.events = list(self.events)
        other.decisions = []
        other.interpreter = other._new_interpreter()
        other._fed = 0
        other._batches = sum(type(e) is WorkflowTaskCompleted for e in self.events)
        other._feed()
        return other

    def _new_interpreter(self) -> Interpreter:
        return Interpreter(self.workflow, codec=self.codec, check_args=self.check_args)

    # ------------------------------------------------------------------ inputs

    def add(self, *events: Event) -> History:
        """Append events as a store would (setting each one's index and time)."""
        for ev in events:
            self.events.append(with_index(ev, len(self.events), self.now))
        return self

    def advance(self, seconds: float) -> History:
        self.now += timedelta(seconds=seconds)
        return self

    def complete(self, seq: int, value: Any = None, *, attempt: int = 1) -> History:
        return self.add(completed(seq, value, attempt=attempt))

    def fail(
        self, seq: int, type: str = "ValueError", message: str = "boom", *, attempt: int = 1
    ) -> History:
        return self.add(failed(seq, type, message, attempt=attempt))

    def attempt_failed(self, seq: int, attempt: int = 1, type: str = "ValueError") -> History:
        return self.add(attempt_failed(seq, attempt, type))

    def fire(self, seq: int) -> History:
        return self.add(fired(seq))

    def signal(self, name: str, value: Any = None) -> History:
        return self.add(signal(name, value))

    def cancel(self, reason: str = "") -> History:
        return self.add(cancel(reason))

    def terminate(self, reason: str = "") -> History:
        return self.add(terminate(reason))

    def child_completed(self, seq: int, value: Any = None, *, run_id: str = "") -> History:
        return self.add(child_completed(seq, value, run_id=run_id))

    def child_failed(
        self, seq: int, type: str = "ValueError", message: str = "boom", *, run_id: str = ""
    ) -> History:
        return self.add(child_failed(seq, type, message, run_id=run_id))

    # ------------------------------------------------------------------ decisions

    def decide(self, *, during: Iterable[Event] = ()) -> History:
        """Make the next decision (if there is one) and append it; ``during`` lands before it."""
        self._feed()
        seen = len(self.events)
        self._batches += 1
        batch_id = f"b{self._batches}"
        decision = self.interpreter.decide(self.now, batch_id)
        if self.verify:
            fresh = self._new_interpreter()
            fresh.feed(self.events[:seen])
            again = fresh.decide(self.now, batch_id)
            assert _events_of(again) == _events_of(decision), (again, decision)
            fresh.close()
        self.add(*during)
        if decision is not None:
            assert decision.head.seen == seen
            self.decisions.append(decision)
            self.add(*decision.events)
            self._feed()  # the worker feeds the appended batch (and what came before it) back
        else:
            self._batches -= 1
        return self

    def run(self, *inputs: Event) -> History:
        """Append each input and decide after it (the usual worker rhythm)."""
        self.decide()
        for ev in inputs:
            self.add(ev).decide()
        return self

    def _feed(self) -> None:
        self.interpreter.feed(self.events[self._fed :])
        self._fed = len(self.events)

    # ------------------------------------------------------------------ results

    @property
    def last(self) -> Decision:
        """The latest decision."""
        return self.decisions[-1]

    @property
    def closing(self) -> Event | None:
        return self.interpreter.closing

    @property
    def queries(self) -> dict[str, Any]:
        """The latest ``SetQuery`` values, decoded."""
        return {k: _codec.decode(v) for k, v in self.interpreter.queries.items()}

    def result(self) -> Any:
        """The decoded result of a completed run."""
        closing = self.closing
        assert closing is not None, "the run is still open"
        value = getattr(closing, "result", None)
        assert value is not None, closing
        return _codec.decode(value)

    def kinds(self, decision: Decision | None = None) -> list[str]:
        """Event names of a decision (the latest by default), ``Name:seq`` where there is one."""
        d = decision if decision is not None else self.last
        return [_kind(e) for e in d.events[1:]]

    def of(self, cls: type[Any]) -> list[Any]:
        """Every event of one type in the history."""
        return [e for e in self.events if type(e) is cls]

    def replay(self, workflow: Workflow | None = None, *, check_args: bool = True) -> Interpreter:
        """A fresh interpreter (for ``workflow``, by default the same one) fed the whole history."""
        it = Interpreter(workflow or self.workflow, codec=self.codec, check_args=check_args)
        it.feed(self.events)
        return it

    def assert_replays(self, *, check_args: bool = True) -> None:
        """A replay from scratch reaches the same state as the live interpreter."""
        it = self.replay(check_args=check_args)
        # the live interpreter's closing event is the one it made (index -1), the
        # replay's is the appended one (index set by the store)
        assert _unindexed(it.closing) == _unindexed(self.closing)
        assert it.queries == self.interpreter.queries
        assert it.length == self.interpreter.length
        it.close()

    def encoded(self, format: str = "json") -> bytes:
        from engine.events import encode_history

        return encode_history(self.events, format=format)


def _kind(event: Event) -> str:
    seq = getattr(event, "seq", None)
    name = type(event).__name__
    return f"{name}:{seq}" if seq else name


def _unindexed(event: Event | None) -> Event | None:
    return None if event is None else with_index(event, -1)


def _events_of(decision: Decision | None) -> list[Event] | None:
    return None if decision is None else decision.events


def commands(decision: Decision) -> tuple[Any, ...]:
    head = decision.events[0]
    assert isinstance(head, WorkflowTaskCompleted)
    return head.commands


def decode(p: Payload | None) -> Any:
    assert p is not None
    return msgspec.json.decode(p.text) if isinstance(p, Json) else _codec.decode(p)
