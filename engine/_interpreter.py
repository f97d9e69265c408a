"""The pure interpreter: history in, the next decision out.

Rules of this module:

* Everything that decides which yielded command matches which recorded event
  lives here.  This module does no I/O and imports no clock, random, threading
  or store code (``tests/test_purity.py`` parses its imports to keep it so);
  time, batch ids and the payload codec are passed in.
* Commands that start something with a recorded outcome get sequence numbers in
  yield order.  ``Now``, ``Patched`` and ``SetQuery`` take none.
* A decision is appended as one batch that begins with
  ``WorkflowTaskCompleted(seen=N)``: the decision saw ``history[:N]`` only.

Theory of operation
-------------------
Events are either *decision events* (written by a decision, after its
``WorkflowTaskCompleted``) or *inputs* (results, timer firings, signals,
cancellation: appended by anyone at any time).  ``feed`` walks the history in
order.  Inputs wait in an inbox.  At each recorded decision ``WorkflowTaskCompleted
(seen=N)`` the interpreter applies, in history order, the inbox events with
index < N, running the generator whenever its current wait resolves; every
command the generator yields is checked against the decision's recorded batch
(positionally, by sequence number, kind, type or name, and argument
fingerprint).  ``decide`` does the same for all fed inputs and, instead of
checking, returns the new batch.  The live interpreter is kept by the worker:
feeding it only new events gives exactly the decisions of a replay from
scratch, so a long workflow is never replayed at every step.

The generator waits on one tree at a time: a leaf (activity, child, timer,
signal) or a group (``All``, ``Any``, or a ``WaitSignal`` with a timeout, which
is a signal leaf racing a timer leaf).  A leaf that can no longer be used is
abandoned; an abandoned timer is cancelled in the current decision.  Results
for abandoned commands are ignored.

After any error the interpreter is poisoned and refuses further input (as
h11's ERROR state): build a new one and replay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime, timedelta
from types import GeneratorType
from typing import Any, Final, NoReturn

from . import _guard
from ._codec import Codec, JsonCodec
from ._commands import (
    All,
    ContinueAsNew,
    Now,
    Patched,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    _Command,
    to_timedelta,
)
from ._commands import Any as AnyOf
from ._defs import result_type_of, type_name, workflow_definition
from ._errors import (
    ActivityError,
    CancelledError,
    ChildWorkflowError,
    ConflictError,
    NonDeterminismError,
    PayloadError,
)
from ._events import (
    CLOSING_EVENTS,
    DECISION_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    CommandRecord,
    Event,
    MarkerRecorded,
    Payload,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from ._failures import failure_from, remote_error
from ._retry import RetryPolicy
from ._waits import ACTIVITY, ALL, ANY, CHILD, SIGNAL, TIMEOUT, TIMER, Group, Leaf, Wait

__all__ = ["Decision", "Interpreter", "decide", "failure_from"]

_BLOCKED: Final = object()
_ITER_CODE = _Command.__iter__.__code__
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Decision:
    """One decision: the batch to append, beginning with ``WorkflowTaskCompleted``."""

    __slots__ = ("events",)

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    @property
    def head(self) -> WorkflowTaskCompleted:
        head = self.events[0]
        assert isinstance(head, WorkflowTaskCompleted)
        return head

    @property
    def closing(self) -> Event | None:
        """The event that closes the run, if this decision closes it."""
        last = self.events[-1]
        return last if type(last) in CLOSING_EVENTS else None

    def __repr__(self) -> str:
        return f"Decision({self.events!r})"


def _describe(item: Any) -> str:
    """A recorded event or record, or a yielded command, in one short phrase."""
    match item:
        case ActivityScheduled(activity_type=name) | ScheduleActivity(activity=name):
            return f"ScheduleActivity({type_name(name, 'activity')!r})"
        case TimerStarted(duration=d) | Timer(duration=d):
            return f"Timer({to_timedelta(d, 'duration')})"
        case ChildWorkflowStarted(workflow_type=name) | StartChildWorkflow(workflow=name):
            return f"StartChildWorkflow({type_name(name, 'workflow')!r})"
        case MarkerRecorded(seq=seq) | SideEffect(fn=seq):
            return "SideEffect(...)"
        case CommandRecord(kind="signal", name=name, detail=seconds):
            return _wait_text(name, timedelta(seconds=seconds) if seconds else None)
        case WaitSignal(name=name, timeout=timeout):  # NB: its timeout was checked already
            return _wait_text(name, None if timeout is None else to_timedelta(timeout, "timeout"))
        case CommandRecord(kind="all", detail=n):
            return f"All(<{int(n)} commands>)"
        case CommandRecord(kind="any", detail=n):
            return f"Any(<{int(n)} commands>)"
        case All(commands=c):
            return f"All(<{len(c)} commands>)"
        case AnyOf(commands=c):
            return f"Any(<{len(c)} commands>)"
        case TimerCancelled(seq=seq):
            return f"the cancellation of timer {seq}"
        case None:
            return "nothing more"
        case _:
            return type(item).__name__


def _wait_text(name: Any, timeout: timedelta | None) -> str:
    if timeout is None:
        return f"WaitSignal({name!r})"
    return f"WaitSignal({name!r}, timeout={timeout})"


class Interpreter:
    """Replays a workflow's history and makes its next decision.

    >>> from datetime import datetime, timezone
    >>> from engine import workflow, Timer
    >>> from engine._events import WorkflowStarted, Json
    >>> @workflow
    ... def nap():
    ...     yield Timer(60)
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> it = Interpreter(nap)
    >>> it.feed([WorkflowStarted(time=t, workflow_type="nap", workflow_id="w", run_id="r",
    ...                          input=Json(text="[]"))])
    >>> [type(e).__name__ for e in it.decide(t, "b1").events]
    ['WorkflowTaskCompleted', 'TimerStarted']
    """

    def __init__(
        self,
        workflow: Callable[..., Generator[Any, Any, Any]],
        *,
        codec: Codec | None = None,
        check_args: bool = True,
    ) -> None:
        self._def = workflow_definition(workflow)
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._check_args = check_args
        #: activity and child-workflow functions the code has yielded, by type name
        #: (``engine.run`` uses them, so embedded use needs no registration)
        self.functions: dict[str, Callable[..., Any]] = {}
        self._targets: dict[Any, tuple[str, Any]] = {}
        self._gen: Generator[Any, Any, Any] | None = None
        self._started: WorkflowStarted | None = None
        self._count = 0
        self._seen = 0
        self._inbox: deque[tuple[int, Event]] = deque()
        self._next_seq = 1
        self._leaves: dict[int, Leaf] = {}
        self._signal_waiters: list[Leaf] = []
        self._signals: dict[str, deque[tuple[int, Payload]]] = {}  # buffered: (arrival, payload)
        self._arrivals = 0
        self._current: Wait | None = None
        self._resume: tuple[Any, BaseException | None] | None = None
        self._cancel_requested = False
        self._patches: dict[str, bool] = {}
        self._queries: dict[str, Payload] = {}
        self._queries_dirty = False
        self._now: datetime = _EPOCH
        self._closing: Event | None = None
        self._terminated: WorkflowTerminated | None = None  # fed, maybe not applied yet
        self._pending_own: str | None = None
        self._poisoned: BaseException | None = None
        # the decision being made (fresh) or checked (replay)
        self._replaying = False
        self._out: list[Event] = []
        self._records: list[CommandRecord] = []
        self._rec: list[Event] = []
        self._rec_pos = 0
        self._rec_cmds: tuple[CommandRecord, ...] = ()
        self._rec_cmd_pos = 0
        _guard.install()

    # ------------------------------------------------------------------ public API

    @property
    def workflow_type(self) -> str:
        return self._def.name

    @property
    def length(self) -> int:
        """How many events have been fed."""
        return self._count

    @property
    def closing(self) -> Event | None:
        """The event that closed the run (completed, failed, cancelled, ...), if closed.

        A ``WorkflowTerminated`` counts as soon as it is fed: it closes the run
        even before a decision applies it.
        """
        return self._closing if self._closing is not None else self._terminated

    @property
    def queries(self) -> dict[str, Payload]:
        """The latest ``SetQuery`` values, encoded."""
        return dict(self._queries)

    def feed(self, events: Iterable[Event]) -> None:
        """Take events appended to the history, in order, whole batches at a time.

        Recorded decisions are replayed and checked; inputs wait for the next
        decision.  Raises :class:`NonDeterminismError` when the code does not fit.
        """
        if self._poisoned is not None:
            self._check_poison()
        if type(events) is not list:
            events = list(events)
        token: Any = None  # the sandbox guard, taken once recorded decisions run workflow code
        start = index = self._count
        self._replaying = True  # NB: every decision that feed() runs is a recorded one
        try:
            inbox = self._inbox
            kinds = _FEED
            started = self._started is not None
            head: Any = None  # the open decision's WorkflowTaskCompleted, at index head_at
            head_at = 0
            for index, ev in enumerate(events, start):
                if ev.index != index and ev.index != -1:  # -1: not appended yet (own batch)
                    self._inconsistent(
                        f"event {index} carries index {ev.index}: the history has a gap, "
                        f"a duplicate or a reordering"
                    )
                kind = kinds[type(ev)]
                if kind == _IN_BATCH:
                    if head is None:
                        self._inconsistent(
                            f"event {index} ({type(ev).__name__}) is outside a decision"
                        )
                    continue
                if head is not None:
                    # NB: a decision's batch runs from its head to the next head or input
                    if token is None and self._pending_own is None:
                        token = _guard.guarded(self._def.name)
                    self._flush_batch(head, head_at, events[head_at - start + 1 : index - start])
                    head = None
                if kind == _INPUT:
                    if not started:
                        self._inconsistent("the history does not begin with WorkflowStarted")
                    inbox.append((index, ev))
                elif kind == _HEAD:
                    if not started:
                        self._inconsistent("a decision comes before WorkflowStarted")
                    head, head_at = ev, index
                elif kind == _FIRST:
                    if index != 0:
                        self._inconsistent(f"WorkflowStarted at event {index}, not 0")
                    self._started = ev
                    started = True
                else:  # _TERMINATE
                    if not started:
                        self._inconsistent("the history does not begin with WorkflowStarted")
                    inbox.append((index, ev))
                    if self._terminated is None:
                        self._terminated = ev
            self._count = start + len(events)
            if head is not None:
                if token is None and self._pending_own is None:
                    token = _guard.guarded(self._def.name)
                self._flush_batch(head, head_at, events[head_at - start + 1 :])
        except BaseException as exc:
            if self._count == start:  # counted up to the event refused
                self._count = index + 1
            self._poisoned = exc
            raise
        finally:
            self._replaying = False
            if token is not None:  # recorded decisions ran
                self._queries_dirty = False  # they saved their queries
                _guard.release(token)

    def decide(self, now: datetime, batch_id: str) -> Decision | None:
        """Make the next decision from everything fed so far; ``None`` if there is nothing to do.

        A decision is made whenever an input that wakes the run was fed since the
        last one, even when it changes nothing (it then holds only its
        ``WorkflowTaskCompleted``, recording what it saw).

        ``now`` becomes the decision's time (``Now()``, timer due times); ``batch_id``
        must be unique.  Feed the decision's batch back once it is appended; if the
        append fails, discard this interpreter and replay.
        """
        if self._poisoned is not None:
            self._check_poison()
        if self._pending_own is not None:
            raise RuntimeError("the previous decision has not been fed back yet")
        if self._started is None:
            raise ValueError("the history must begin with WorkflowStarted")
        if self._closing is not None:
            return None
        if self._terminated is not None:
            # NB: no decision after a termination, and no workflow code runs past it
            self._in_terminated(self._terminated)
            return None
        token = _guard.guarded(self._def.name)
        try:
            self._now = now
            self._out = []
            self._records = []
            # NB: a decision with no commands is still made when it consumed an input
            # that wakes a run (a result nobody awaits, a signal nobody waits for yet):
            # its WorkflowTaskCompleted records that the input was seen, so the store's
            # ready index stops offering the run.  Only retry notices never wake a run.
            woke = False
            for _, ev in self._inbox:
                if type(ev) is not ActivityAttemptFailed:
                    woke = True
                    break
            self._run_decision(self._count)
            if not self._out and not self._records and not woke:
                return None
            head = WorkflowTaskCompleted(
                time=now,
                seen=self._count,
                batch_id=batch_id,
                commands=tuple(self._records),
                queries=dict(self._queries) if self._queries_dirty else None,
            )
            self._queries_dirty = False
            self._pending_own = batch_id
            self._seen = self._count
            events: list[Event] = [head]
            events.extend(self._out)
            return Decision(events)
        except BaseException as exc:
            self._poisoned = exc
            raise
        finally:
            _guard.release(token)

    def close(self) -> None:
        """Drop the live generator, running its ``finally`` blocks under the guard.

        An interpreter closed before its run ended refuses further input.
        """
        gen, self._gen = self._gen, None
        if self._closing is None and self._poisoned is None and self._started is not None:
            self._poisoned = RuntimeError("it was closed before the run ended")
        if gen is not None:
            token = _guard.guarded(self._def.name)
            try:
                gen.close()
            except BaseException:  # a finally block that yields, raises: nothing to record
                pass
            finally:
                _guard.release(token)

    # ------------------------------------------------------------------ decisions

    def _check_poison(self) -> None:
        if self._poisoned is not None:
            raise RuntimeError(
                f"this Interpreter failed earlier ({type(self._poisoned).__name__}: "
                f"{self._poisoned}); build a new one to replay"
            ) from self._poisoned

    def _inconsistent(self, what: str) -> NoReturn:
        raise NonDeterminismError(
            f"workflow {self._def.name!r}: the history is inconsistent: {what}"
        )

    def _flush_batch(self, head: WorkflowTaskCompleted, head_at: int, batch: list[Event]) -> None:
        """Apply one recorded decision: ``head`` (at ``head_at``), then its ``batch``."""
        if self._pending_own is not None:
            if head.batch_id == self._pending_own:
                self._pending_own = None  # our own decision, already applied
                if self._closing is not None and batch and type(batch[-1]) is type(self._closing):
                    self._closing = batch[-1]  # as appended: with its index
                return
            raise ConflictError(
                f"workflow {self._def.name!r}: another decision ({head.batch_id}) was appended "
                f"instead of this interpreter's ({self._pending_own}); replay from scratch"
            )
        seen = head.seen
        if not self._seen <= seen <= head_at:
            self._inconsistent(
                f"decision {head.batch_id} claims to have seen {seen} events "
                f"(previous decision saw {self._seen})"
            )
        if self._closing is not None:
            self._inconsistent(f"decision {head.batch_id} comes after the run closed")
        self._seen = seen
        self._now = head.time
        self._rec = batch
        self._rec_pos = 0
        commands = self._rec_cmds = head.commands
        self._rec_cmd_pos = 0
        # NB: _run_decision(seen) inline: this runs once per recorded decision
        if self._gen is None:
            self._start()
        inbox = self._inbox
        while inbox and inbox[0][0] < seen:
            ev = inbox.popleft()[1]
            if self._closing is not None:
                continue  # late results for a closed run
            _INPUTS[type(ev)](self, ev)
            resume = self._resume
            if resume is not None:
                self._resume = None
                self._drive(*resume)
        if self._rec_pos == len(batch) and self._rec_cmd_pos == len(commands):
            return  # NB: the common case: everything recorded was yielded
        leftover: Any = self._next_recorded()
        if leftover is None and self._rec_cmd_pos < len(self._rec_cmds):
            leftover = self._rec_cmds[self._rec_cmd_pos]
        if leftover is not None:
            state = "returned" if self._closing is not None else "waits"
            self._mismatch(
                getattr(leftover, "seq", 0),
                leftover,
                None,
                f"the code {state} at {self._location()} while the history still holds "
                f"{_describe(leftover)}",
            )

    def _run_decision(self, limit: int) -> None:
        if self._gen is None and self._closing is None:
            self._start()
        inbox = self._inbox
        inputs = _INPUTS
        while inbox and inbox[0][0] < limit:
            ev = inbox.popleft()[1]
            if self._closing is not None:
                continue  # late results for a closed run
            inputs[type(ev)](self, ev)
            resume = self._resume
            if resume is not None:
                self._resume = None
                self._drive(*resume)

    def _start(self) -> None:
        started = self._started
        assert started is not None
        types, rest = self._def.param_types()
        try:
            args = self._codec.decode_args(started.input, types, rest)
            self._gen = self._def.fn(*args)
        except Exception as exc:  # bad input for this signature: the run fails
            self._finish(WorkflowFailed, error=failure_from(exc))
            return
        self._drive(None, None)

    def _drive(self, value: Any, exc: BaseException | None) -> None:
        """Send ``value`` in (or throw ``exc``), and run the generator until it waits or ends."""
        gen = self._gen
        assert gen is not None
        commands = _COMMANDS
        # NB: feed() and decide() hold the sandbox guard while workflow code runs
        while True:
            try:
                cmd = gen.send(value) if exc is None else gen.throw(exc)
            except StopIteration as stop:
                self._complete(stop.value)
                return
            except CancelledError as err:
                self._finish(WorkflowCancelled, reason=str(err))
                return
            except Exception as err:
                self._finish(WorkflowFailed, error=failure_from(err))
                return
            exc = None
            try:
                if type(cmd) is ScheduleActivity:  # NB: the most common command, inline
                    self._current = self._open_activity(cmd, None, 0)
                    # NB: a new activity resolves nothing and waits for no signal: the
                    # run now waits (the blocked case below would find nothing to do)
                    return
                if type(cmd) in commands:
                    value = commands[type(cmd)](self, cmd)
                else:
                    value = None
                    exc = TypeError(
                        f"a workflow must yield commands (ScheduleActivity, Timer, WaitSignal, "
                        f"...), not {cmd!r}"
                    )
                    continue
            except NonDeterminismError:
                raise
            except Exception as err:  # a bad command or a failing SideEffect: thrown in
                value, exc = None, err
                continue
            if value is _BLOCKED:
                # NB: buffered signals are delivered here, outside the handler, so
                # a codec failure is never mistaken for the command's own error.
                if self._signals and self._signal_waiters:
                    self._deliver_buffered()
                if self._resume is None:
                    return
                value, exc = self._resume
                self._resume = None
            elif self._closing is not None:
                return

    def _complete(self, value: Any) -> None:
        # NB: encoded on replay too: a result that cannot be encoded failed the run.
        try:
            payload = self._codec.encode(value)
        except (TypeError, PayloadError) as exc:
            self._finish(WorkflowFailed, error=failure_from(exc))
        else:
            self._finish(WorkflowCompleted, result=payload)

    def _finish(self, cls: type[Event], **fields: Any) -> None:
        """Close the run with a closing event (recorded, or checked on replay)."""
        if self._replaying:
            rec = self._next_recorded()
            if type(rec) is not cls:
                recorded: Any = rec
                if rec is None and self._rec_cmd_pos < len(self._rec_cmds):
                    recorded = self._rec_cmds[self._rec_cmd_pos]  # e.g. a WaitSignal
                self._mismatch(
                    getattr(recorded, "seq", self._next_seq),
                    recorded,
                    None,
                    f"the code ended the run with {cls.__name__} at {self._location()}, but "
                    f"the history recorded {_describe(recorded)}",
                )
            self._rec_pos += 1
            self._closing = rec
        else:
            ev = cls(time=self._now, **fields)
            self._out.append(ev)
            self._closing = ev
        self.close()

    # ------------------------------------------------------------------ replay checks

    def _next_recorded(self) -> Event | None:
        """The next recorded decision event, skipping patch markers (checked by lookup)."""
        rec = self._rec
        pos = self._rec_pos
        while pos < len(rec):
            ev = rec[pos]
            if type(ev) is MarkerRecorded and ev.name == "patch":
                pos += 1
                continue
            self._rec_pos = pos
            return ev
        self._rec_pos = pos
        return None

    def _next_record(self) -> CommandRecord | None:
        if self._rec_cmd_pos < len(self._rec_cmds):
            rec = self._rec_cmds[self._rec_cmd_pos]
            self._rec_cmd_pos += 1
            return rec
        return None

    def _location(self) -> str:
        gen: Any = self._gen
        if gen is None:
            return "the end of the workflow"
        while True:
            sub: Any = gen.gi_yieldfrom
            if not isinstance(sub, GeneratorType) or sub.gi_code is _ITER_CODE:
                break
            gen = sub
        frame = gen.gi_frame
        if frame is None:
            return "the end of the workflow"
        return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}()"

    def _mismatch(
        self, seq: int, recorded: Any, yielded: Any, detail: str | None = None
    ) -> NoReturn:
        where = self._location()
        if detail is None:
            recorded = self._recorded_at(seq, recorded)
            detail = (
                f"the history recorded {_describe(recorded)} but the code yielded "
                f"{_describe(yielded)} at {where}"
            )
        raise NonDeterminismError(
            f"workflow {self._def.name!r} is not deterministic at sequence number {seq}: "
            f"{detail}. Likely cause: the workflow code changed while this run was in flight "
            f"(guard new code with `if (yield Patched('change-id')):`), or it depends on "
            f"something other than its history (time, randomness, I/O: use Now(), "
            f"SideEffect() or an activity)."
        )

    def _recorded_at(self, seq: int, found: Any) -> Any:
        """What this decision recorded at ``seq``, for the error message.

        ``found`` is the next record of the kind the code yielded; when the code
        yielded another kind (a timer where a signal wait was recorded), the
        record that really holds ``seq`` is in the other list.
        """
        if getattr(found, "seq", None) == seq:
            return found
        for item in (*self._rec, *self._rec_cmds):
            if type(item) is not TimerCancelled and getattr(item, "seq", None) == seq:
                return item
        return found

    def _expect(self, seq: int, cls: type[Event], yielded: Any) -> Any:
        rec = self._next_recorded()
        if type(rec) is not cls or rec.seq != seq:  # type: ignore[union-attr]
            self._mismatch(seq, rec, yielded)
        self._rec_pos += 1
        return rec

    def _record(self, seq: int, kind: str, name: str, detail: float, yielded: Any) -> None:
        if self._replaying:
            rec = self._next_record()
            if (
                rec is None
                or rec.seq != seq
                or rec.kind != kind
                or rec.name != name
                or (rec.detail != detail)
            ):
                self._mismatch(seq, rec, yielded)
        else:
            # NB: a float, as the field is typed, so a decoded history re-encodes to the same bytes
            self._records.append(CommandRecord(seq, kind, name, float(detail)))

    # ------------------------------------------------------------------ commands

    def _cmd_activity(self, cmd: ScheduleActivity) -> Any:
        # NB: the most common command, without the opener lookup (a new leaf is never done)
        self._current = self._open_activity(cmd, None, 0)
        return _BLOCKED

    def _cmd_wait(self, cmd: Any) -> Any:
        node = _OPENERS[type(cmd)](self, cmd, None, 0)
        if not node.done:
            self._current = node
        return _BLOCKED

    def _open_activity(self, cmd: ScheduleActivity, parent: Group | None, slot: int) -> Wait:
        # NB: everything that can reject the command is checked before it takes a
        # sequence number, and on replay too, so a rejected command (thrown into
        # the workflow) shifts nothing and replays exactly as it ran.
        try:  # NB: the common case without _target(): a function seen before
            name, rtype = self._targets[cmd.activity]
        except (KeyError, TypeError):
            name, rtype = self._target(cmd.activity, "activity")
        plain = (
            cmd.retry is None
            and cmd.task_queue is None
            and cmd.start_to_close is None
            and cmd.schedule_to_close is None
            and cmd.heartbeat_timeout is None
        )
        if not plain:
            _check_options(cmd.task_queue, cmd.retry)
            timeouts = (
                _opt_td(cmd.start_to_close, "start_to_close"),
                _opt_td(cmd.schedule_to_close, "schedule_to_close"),
                _opt_td(cmd.heartbeat_timeout, "heartbeat_timeout"),
            )
        if self._replaying:
            digest = self._codec.fingerprint_args(cmd.args)
            seq = self._next_seq
            self._next_seq = seq + 1
            # NB: the common case inline: the next recorded event is this very command
            pos = self._rec_pos
            try:
                rec: Any = self._rec[pos]
            except IndexError:
                rec = None
            if type(rec) is ActivityScheduled and rec.seq == seq:
                self._rec_pos = pos + 1
            else:
                rec = self._expect(seq, ActivityScheduled, cmd)
            if rec.activity_type != name or (self._check_args and rec.args_digest != digest):
                self._mismatch(seq, rec, cmd, self._arg_detail(rec.activity_type, name, rec, cmd))
        else:
            payload, digest = self._codec.encode_args(cmd.args)
            seq = self._next_seq
            self._next_seq = seq + 1
            start_to_close, schedule_to_close, heartbeat_timeout = (
                (None, None, None) if plain else timeouts
            )
            self._out.append(
                ActivityScheduled(
                    time=self._now,
                    seq=seq,
                    activity_type=name,
                    args=payload,
                    args_digest=digest,
                    task_queue=cmd.task_queue or "",
                    retry=cmd.retry,
                    start_to_close=start_to_close,
                    schedule_to_close=schedule_to_close,
                    heartbeat_timeout=heartbeat_timeout,
                )
            )
        leaf = Leaf(seq, parent, slot, ACTIVITY, name, rtype)
        self._leaves[seq] = leaf
        return leaf

    def _target(self, target: Any, what: str) -> tuple[str, Any]:
        """A command target's type name and result type, cached per function."""
        try:
            known = self._targets.get(target)
        except TypeError:  # an unhashable callable: nothing to cache
            return type_name(target, what), result_type_of(target)
        if known is None:
            name = type_name(target, what)
            if name not in self.functions and not isinstance(target, str):
                self.functions[name] = target
            known = self._targets[target] = (name, result_type_of(target))
        return known

    def _arg_detail(self, recorded_type: str, name: str, rec: Any, cmd: Any) -> str:
        if recorded_type != name:
            return (
                f"the history recorded {_describe(rec)} but the code yielded "
                f"{_describe(cmd)} at {self._location()}"
            )
        return (
            f"the code yielded {_describe(cmd)} at {self._location()} with arguments that differ "
            f"from the recorded ones (set check_args=False on the worker to allow that)"
        )

    def _open_child(self, cmd: StartChildWorkflow, parent: Group | None, slot: int) -> Wait:
        # NB: checked before taking a sequence number, on replay too (see _open_activity).
        name = type_name(cmd.workflow, "child workflow")
        _check_options(cmd.task_queue, None)
        if name not in self.functions and not isinstance(cmd.workflow, str):
            self.functions[name] = cmd.workflow
        if cmd.id is not None and not isinstance(cmd.id, str):
            raise TypeError(f"a child workflow id must be a string, got {cmd.id!r}")
        if self._replaying:
            digest = self._codec.fingerprint_args(cmd.args)
            seq = self._next_seq
            self._next_seq = seq + 1
            rec = self._expect(seq, ChildWorkflowStarted, cmd)
            if rec.workflow_type != name or (self._check_args and rec.args_digest != digest):
                self._mismatch(seq, rec, cmd, self._arg_detail(rec.workflow_type, name, rec, cmd))
            child_id = rec.workflow_id
        else:
            started = self._started
            assert started is not None
            payload, digest = self._codec.encode_args(cmd.args)
            seq = self._next_seq
            self._next_seq = seq + 1
            child_id = cmd.id or f"{started.workflow_id}/{started.run_id}/{seq}"
            self._out.append(
                ChildWorkflowStarted(
                    time=self._now,
                    seq=seq,
                    workflow_type=name,
                    workflow_id=child_id,
                    args=payload,
                    args_digest=digest,
                    task_queue=cmd.task_queue or "",
                )
            )
        leaf = Leaf(seq, parent, slot, CHILD, name, result_type_of(cmd.workflow))
        leaf.child_id = child_id
        self._leaves[seq] = leaf
        return leaf

    def _open_timer(self, cmd: Timer, parent: Group | None, slot: int) -> Wait:
        duration = to_timedelta(cmd.duration, "Timer duration")
        seq = self._next_seq
        self._next_seq = seq + 1
        self._start_timer(seq, duration, cmd)
        leaf = Leaf(seq, parent, slot, TIMER, "", None)
        self._leaves[seq] = leaf
        return leaf

    def _start_timer(self, seq: int, duration: Any, cmd: Any) -> None:
        if self._replaying:
            rec = self._expect(seq, TimerStarted, cmd)
            if rec.duration != duration:
                self._mismatch(seq, rec, cmd)
        else:
            now = self._now
            self._out.append(
                TimerStarted(time=now, seq=seq, duration=duration, fire_at=now + duration)
            )

    def _open_signal(self, cmd: WaitSignal, parent: Group | None, slot: int) -> Wait:
        if not isinstance(cmd.name, str):
            raise TypeError(f"a signal name must be a string, got {cmd.name!r}")
        timeout = None if cmd.timeout is None else to_timedelta(cmd.timeout, "WaitSignal timeout")
        seq = self._next_seq
        self._next_seq = seq + 1
        self._record(seq, SIGNAL, cmd.name, timeout.total_seconds() if timeout else 0, cmd)
        leaf = Leaf(seq, None, 0, SIGNAL, cmd.name, Any)
        self._signal_waiters.append(leaf)
        if timeout is None:
            leaf.parent, leaf.slot = parent, slot
            return leaf
        # NB: a deadline is a group racing the signal against a timer of its own.
        group = Group(seq, parent, slot, TIMEOUT, 2)
        leaf.parent = group
        timer_seq = self._next_seq
        self._next_seq = timer_seq + 1
        self._start_timer(timer_seq, timeout, cmd)
        timer = Leaf(timer_seq, group, 1, TIMER, "", None)
        self._leaves[timer_seq] = timer
        group.children = [leaf, timer]
        return group

    def _open_group(self, cmd: All | AnyOf, parent: Group | None, slot: int) -> Wait:
        members = cmd.commands
        mode = ALL if type(cmd) is All else ANY
        if mode == ANY and not members:
            raise ValueError("Any() needs at least one command (it would wait forever)")
        seq = self._next_seq
        self._next_seq = seq + 1
        self._record(seq, mode, "", len(members), cmd)
        group = Group(seq, parent, slot, mode, len(members))
        try:
            for i, member in enumerate(members):
                opener = _OPENERS.get(type(member))
                if opener is None:
                    raise TypeError(
                        f"All/Any members must be ScheduleActivity, StartChildWorkflow, Timer, "
                        f"WaitSignal, All or Any, not {member!r}"
                    )
                group.children.append(opener(self, member, group, i))
        except NonDeterminismError:
            raise
        except Exception:
            # NB: a bad member fails the whole group (thrown into the workflow); the
            # members opened before it are abandoned so their results never resume it.
            group.done = True
            self._abandon_children(group)
            raise
        if not members:  # All() is done at once
            self._resolve(group, [], None)
        elif group.done:
            # NB: an empty All() member resolved this Any while it was being opened;
            # the members opened after it lost.
            self._abandon_children(group)
        return group

    def _cmd_side_effect(self, cmd: SideEffect) -> Any:
        seq = self._next_seq
        self._next_seq = seq + 1
        rtype = result_type_of(cmd.fn) if callable(cmd.fn) else Any
        if self._replaying:
            rec = self._expect(seq, MarkerRecorded, cmd)
            if rec.name != "side_effect":
                self._mismatch(seq, rec, cmd)
            if rec.error is not None:
                raise remote_error(rec.error)
            return self._codec.decode(rec.value, rtype)
        # NB: a failing SideEffect is recorded too, and thrown in as the same
        # RemoteError on every replay, so fresh runs and replays behave alike.
        try:
            if not callable(cmd.fn):
                raise TypeError(f"SideEffect needs a function of no arguments, got {cmd.fn!r}")
            payload = self._codec.encode(cmd.fn())
        except Exception as exc:
            failure = failure_from(exc)
            self._out.append(
                MarkerRecorded(time=self._now, name="side_effect", seq=seq, error=failure)
            )
            raise remote_error(failure) from exc
        self._out.append(MarkerRecorded(time=self._now, name="side_effect", seq=seq, value=payload))
        return self._codec.decode(payload, rtype)

    def _cmd_now(self, cmd: Now) -> Any:
        return self._now

    def _cmd_patched(self, cmd: Patched) -> Any:
        change_id = cmd.change_id
        if not isinstance(change_id, str) or not change_id:
            raise TypeError(f"a change id must be a non-empty string, got {change_id!r}")
        known = self._patches.get(change_id)
        if known is not None:
            return known
        if self._replaying:
            found = any(
                type(ev) is MarkerRecorded and ev.name == "patch" and ev.change_id == change_id
                for ev in self._rec
            )
        else:
            self._out.append(MarkerRecorded(time=self._now, name="patch", change_id=change_id))
            found = True
        self._patches[change_id] = found
        return found

    def _cmd_set_query(self, cmd: SetQuery) -> Any:
        if not isinstance(cmd.name, str):
            raise TypeError(f"a query name must be a string, got {cmd.name!r}")
        self._queries[cmd.name] = self._codec.encode(cmd.value)
        self._queries_dirty = True
        return None

    def _cmd_continue_as_new(self, cmd: ContinueAsNew) -> Any:
        # NB: encoded on replay too, so arguments that cannot be encoded are
        # thrown into the workflow on replay exactly as they were the first time.
        payload, _ = self._codec.encode_args(cmd.args)
        self._finish(WorkflowContinuedAsNew, input=payload)
        return None

    # ------------------------------------------------------------------ resolution

    def _resolve(self, node: Wait, value: Any, exc: BaseException | None) -> None:
        node.done = True
        parent = node.parent
        if parent is None:
            self._current = None
            self._resume = (value, exc)
            return
        mode = parent.mode
        if mode == ALL:
            if exc is None:
                parent.results[node.slot] = value
                parent.remaining -= 1
                if parent.remaining:
                    return
                self._resolve(parent, parent.results, None)
                return
        elif mode == ANY:
            value = (node.slot, value)
        elif node.slot == 1:  # TIMEOUT: the deadline won
            value, exc = None, TimeoutError(f"no signal {parent.children[0].name!r} in time")  # type: ignore[attr-defined]
        for child in parent.children:
            if not child.done:
                self._abandon(child)
        self._resolve(parent, value, exc)

    def _abandon(self, node: Wait) -> None:
        if node.done:
            return
        node.done = True
        if isinstance(node, Group):
            self._abandon_children(node)
            return
        assert isinstance(node, Leaf)
        if node.kind == SIGNAL:
            self._signal_waiters.remove(node)
            return
        del self._leaves[node.seq]
        if node.kind == TIMER:
            if self._replaying:
                self._expect(node.seq, TimerCancelled, TimerCancelled(time=self._now, seq=node.seq))
            else:
                self._out.append(TimerCancelled(time=self._now, seq=node.seq))

    def _abandon_children(self, group: Group) -> None:
        for child in group.children:
            self._abandon(child)

    def _deliver_buffered(self) -> None:
        # NB: of the buffered signals that waiters want, the one that arrived first
        # is delivered first, so an Any of two signal waits takes the earlier signal.
        while True:
            best: Leaf | None = None
            first = 0
            for leaf in self._signal_waiters:
                queue = self._signals.get(leaf.name)
                if queue and (best is None or queue[0][0] < first):
                    best, first = leaf, queue[0][0]
            if best is None:
                return
            self._deliver(best, self._signals[best.name].popleft()[1])

    def _deliver(self, leaf: Leaf, payload: Payload) -> None:
        self._signal_waiters.remove(leaf)
        try:
            value = self._codec.decode(payload, leaf.rtype)
        except TypeError as exc:  # as for results: thrown in at the WaitSignal
            self._resolve(leaf, None, exc)
        else:
            self._resolve(leaf, value, None)

    def _leaf(self, seq: int, kind: str, event: Event, leaf: Leaf | None = None) -> Leaf | None:
        """The leaf waiting for ``event`` (result of command ``seq``); None if it is abandoned.

        ``leaf`` is the one already popped for ``seq``, if the caller did.
        """
        if leaf is None:
            leaf = self._leaves.pop(seq, None)
        if leaf is not None and leaf.kind is kind:
            return leaf
        if leaf is None:
            if not 0 < seq < self._next_seq:
                self._inconsistent(
                    f"{type(event).__name__} for sequence number {seq}, which the code never "
                    f"started (it has started {self._next_seq - 1} commands)"
                )
            return None  # a result nobody waits for any more
        self._inconsistent(
            f"{type(event).__name__} for sequence number {seq}, which is a {leaf.kind}"
        )

    def _in_activity_completed(self, ev: ActivityCompleted) -> None:
        leaf = self._leaves.pop(ev.seq, None)
        if leaf is None or leaf.kind is not ACTIVITY:  # NB: the common case without _leaf()
            leaf = self._leaf(ev.seq, ACTIVITY, ev, leaf)
            if leaf is None:
                return
        try:
            value = self._codec.decode(ev.result, leaf.rtype)
        except TypeError as exc:
            self._resolve(leaf, None, exc)
            return
        if leaf.parent is None:  # NB: the common case inline: the workflow waits on it
            leaf.done = True
            self._current = None
            self._drive(value, None)
        else:
            self._resolve(leaf, value, None)

    def _in_activity_failed(self, ev: ActivityFailed) -> None:
        leaf = self._leaf(ev.seq, ACTIVITY, ev)
        if leaf is not None:
            err = ActivityError(leaf.name, ev.error.type, ev.error.message, ev.attempt)
            err.__cause__ = remote_error(ev.error)
            self._resolve(leaf, None, err)

    def _in_attempt_failed(self, ev: ActivityAttemptFailed) -> None:
        leaf = self._leaves.get(ev.seq)
        if leaf is None and not 0 < ev.seq < self._next_seq:
            self._inconsistent(f"ActivityAttemptFailed for unknown sequence number {ev.seq}")

    def _in_timer_fired(self, ev: TimerFired) -> None:
        leaf = self._leaf(ev.seq, TIMER, ev)
        if leaf is not None:
            self._resolve(leaf, None, None)

    def _in_child_completed(self, ev: ChildWorkflowCompleted) -> None:
        leaf = self._leaf(ev.seq, CHILD, ev)
        if leaf is not None:
            try:
                value = self._codec.decode(ev.result, leaf.rtype)
            except TypeError as exc:
                self._resolve(leaf, None, exc)
            else:
                self._resolve(leaf, value, None)

    def _in_child_failed(self, ev: ChildWorkflowFailed) -> None:
        leaf = self._leaf(ev.seq, CHILD, ev)
        if leaf is not None:
            err = ChildWorkflowError(leaf.name, leaf.child_id, ev.error.type, ev.error.message)
            err.__cause__ = remote_error(ev.error)
            self._resolve(leaf, None, err)

    def _in_signal(self, ev: SignalReceived) -> None:
        for leaf in self._signal_waiters:
            if leaf.name == ev.name:
                self._deliver(leaf, ev.payload)
                return
        self._arrivals += 1
        self._signals.setdefault(ev.name, deque()).append((self._arrivals, ev.payload))

    def _in_cancel(self, ev: CancelRequested) -> None:
        if self._cancel_requested:
            return
        self._cancel_requested = True
        current = self._current
        assert current is not None  # an open run always waits when an input is applied
        self._abandon(current)
        self._current = None
        self._resume = (None, CancelledError(ev.reason or "cancellation requested"))

    def _in_terminated(self, ev: WorkflowTerminated) -> None:
        self._closing = ev
        self._current = None
        self.close()


def _check_options(task_queue: Any, retry: Any) -> None:
    # NB: these are copied into events as they are; a wrong type would be
    # stored, and the history would no longer decode.
    if task_queue is not None and not isinstance(task_queue, str):
        raise TypeError(f"task_queue must be a string, got {task_queue!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {retry!r}")


# The transition tables: which handler takes which yielded command or input event.
_COMMANDS: dict[type, Callable[[Interpreter, Any], Any]] = {
    ScheduleActivity: Interpreter._cmd_activity,
    StartChildWorkflow: Interpreter._cmd_wait,
    Timer: Interpreter._cmd_wait,
    WaitSignal: Interpreter._cmd_wait,
    All: Interpreter._cmd_wait,
    AnyOf: Interpreter._cmd_wait,
    SideEffect: Interpreter._cmd_side_effect,
    Now: Interpreter._cmd_now,
    Patched: Interpreter._cmd_patched,
    SetQuery: Interpreter._cmd_set_query,
    ContinueAsNew: Interpreter._cmd_continue_as_new,
}
_OPENERS: dict[type, Callable[[Interpreter, Any, Group | None, int], Wait]] = {
    ScheduleActivity: Interpreter._open_activity,
    StartChildWorkflow: Interpreter._open_child,
    Timer: Interpreter._open_timer,
    WaitSignal: Interpreter._open_signal,
    All: Interpreter._open_group,
    AnyOf: Interpreter._open_group,
}
_INPUTS: dict[type, Callable[[Interpreter, Any], None]] = {
    ActivityCompleted: Interpreter._in_activity_completed,
    ActivityFailed: Interpreter._in_activity_failed,
    ActivityAttemptFailed: Interpreter._in_attempt_failed,
    TimerFired: Interpreter._in_timer_fired,
    ChildWorkflowCompleted: Interpreter._in_child_completed,
    ChildWorkflowFailed: Interpreter._in_child_failed,
    SignalReceived: Interpreter._in_signal,
    CancelRequested: Interpreter._in_cancel,
    WorkflowTerminated: Interpreter._in_terminated,
}
# How feed() files each event: a decision's head opens a batch, the decision's other events
# join it, and inputs wait in the inbox for the decision that saw them (each has its handler
# in _INPUTS).
_HEAD: Final = 0
_IN_BATCH: Final = 1
_INPUT: Final = 2
_FIRST: Final = 3  # WorkflowStarted
_TERMINATE: Final = 4  # an input that closes the run as soon as it is fed
_FEED: dict[type, int] = {
    cls: _IN_BATCH if cls in DECISION_EVENTS else _INPUT for cls in Event.__args__
}
_FEED.update(
    {WorkflowTaskCompleted: _HEAD, WorkflowStarted: _FIRST, WorkflowTerminated: _TERMINATE}
)


def _opt_td(value: Any, what: str) -> Any:
    return None if value is None else to_timedelta(value, what)


def decide(
    workflow: Callable[..., Generator[Any, Any, Any]],
    history: Iterable[Event],
    now: datetime,
    batch_id: str,
    *,
    codec: Codec | None = None,
    check_args: bool = True,
) -> Decision | None:
    """The functional entry point: replay ``history`` and return the next decision."""
    interpreter = Interpreter(workflow, codec=codec, check_args=check_args)
    try:
        interpreter.feed(history)
        return interpreter.decide(now, batch_id)
    finally:
        interpreter.close()
