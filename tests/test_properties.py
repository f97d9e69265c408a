"""Property tests of the interpreter over generated workflows and generated histories.

A workflow *program* is a list of steps (an activity, a timer, a signal wait with
or without a deadline, ``All``/``Any`` of a few, a side effect, an activity
inside ``try/except``, a ``Patched`` branch, a child workflow, a query, ``Now``)
turned into a real ``@workflow`` generator.  ``engine.testing.histories`` drives
it with generated outcomes, and the properties are:

(a) replay from scratch reproduces every recorded command and issues none that
    was not recorded;
(b) the live, incremental path equals replay from scratch after every event,
    for every way of cutting the history into feeds;
(c) a changed workflow is reported as a ``NonDeterminismError`` at the sequence
    number of its first changed step;

and a state machine drives one live interpreter with "activity completes",
"activity fails", "timer fires", "signal arrives", "worker decides" and
"replay from scratch" (a cache miss, which must agree with the live state).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine import (
    ActivityError,
    All,
    CancelledError,
    ChildWorkflowError,
    ContinueAsNew,
    Interpreter,
    NonDeterminismError,
    Now,
    Patched,
    RetryPolicy,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    workflow,
)
from engine import Any as AnyOf
from engine.events import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    Event,
    Failure,
    Json,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    with_index,
)
from engine.testing import assert_deterministic, histories, replay
from engine.testing._replay import units

# TPP_PROPERTY_SCALE=50 pytest tests/test_properties.py: a longer hunt, by hand
SCALE = int(os.environ.get("TPP_PROPERTY_SCALE", "1"))
SETTINGS = settings(max_examples=60 * SCALE, deadline=None)

Step = tuple[Any, ...]
SIGNALS = ("go", "stop")
ACTIVITIES = ("a", "b", "c")
EXTRA_TIMER = 777_777  # a duration no generated step uses

# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Program:
    steps: tuple[Step, ...]
    saga: bool = False  # on cancellation, run a compensating activity, then re-raise
    ending: str = "return"  # or "continue_as_new", or "raise"
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(maximum_attempts=2))


leaves = st.one_of(
    st.tuples(st.just("act"), st.sampled_from(ACTIVITIES), st.integers(0, 3)),
    st.tuples(st.just("timer"), st.integers(1, 90)),
    st.tuples(st.just("signal"), st.sampled_from(SIGNALS), st.none() | st.integers(100, 200)),
)
steps = st.one_of(
    st.tuples(st.just("act"), st.sampled_from(ACTIVITIES), st.integers(0, 3)),
    st.tuples(st.just("try_act"), st.sampled_from(ACTIVITIES), st.integers(0, 3)),
    st.tuples(st.just("timer"), st.integers(1, 90)),
    st.tuples(st.just("signal"), st.sampled_from(SIGNALS), st.none() | st.integers(100, 200)),
    st.tuples(st.sampled_from(["all", "any"]), st.lists(leaves, min_size=1, max_size=3).map(tuple)),
    st.tuples(st.just("side_effect"), st.integers(0, 9)),
    st.tuples(st.just("patched"), st.sampled_from(["p1", "p2"]), st.integers(300, 400)),
    st.tuples(st.just("child"), st.just("kid"), st.integers(0, 3)),
    st.tuples(st.just("query"), st.sampled_from(["progress", "state"])),
    st.tuples(st.just("now")),
)
programs = st.builds(
    Program,
    st.lists(steps, min_size=1, max_size=6).map(tuple),
    saga=st.booleans(),
    ending=st.sampled_from(["return", "continue_as_new", "raise"]),
)


def _command(step: Step, retry: RetryPolicy) -> Any:
    match step:
        case ("act" | "try_act", name, arg):
            return ScheduleActivity(name, arg, retry=retry)
        case ("timer", seconds):
            return Timer(timedelta(seconds=seconds))
        case ("signal", name, timeout):
            return WaitSignal(name, timeout=timeout)
        case ("all", members):
            return All(*[_command(m, retry) for m in members])
        case ("any", members):
            return AnyOf(*[_command(m, retry) for m in members])
        case ("child", name, arg):
            return StartChildWorkflow(name, arg)
    raise AssertionError(step)


def _run(step: Step, retry: RetryPolicy, done: list[Any]) -> Generator[Any, Any, Any]:
    match step:
        case ("try_act", _, _):
            try:
                return (yield _command(step, retry))
            except ActivityError as exc:
                return f"failed after {exc.attempt}"
        case ("signal", _, timeout) if timeout is not None:
            try:
                return (yield _command(step, retry))
            except TimeoutError:
                return "timed out"
        case ("child", _, _):
            try:
                return (yield _command(step, retry))
            except ChildWorkflowError as exc:
                return exc.type
        case ("side_effect", value):
            return (yield SideEffect(lambda: value))
        case ("patched", change_id, seconds):
            if (yield Patched(change_id)):
                yield Timer(seconds)
                return "new"
            return "old"
        case ("query", name):
            yield SetQuery(name, len(done))
            return None
        case ("now",):
            return (yield Now()).isoformat()
    return (yield _command(step, retry))


def build(program: Program, trace: list[int] | None = None) -> Any:
    """The program as a ``@workflow``; ``trace`` collects the index of each step it starts."""

    @workflow(name="program")
    def run() -> Generator[Any, Any, Any]:
        done: list[Any] = []
        try:
            for i, step in enumerate(program.steps):
                if trace is not None:
                    trace.append(i)
                done.append((yield from _run(step, program.retry, done)))
        except CancelledError:
            if program.saga:
                yield ScheduleActivity("compensate", len(done))
            raise
        if trace is not None:
            trace.append(len(program.steps))
        if program.ending == "continue_as_new":
            yield ContinueAsNew(len(done))
        elif program.ending == "raise":
            raise ValueError(f"planned failure after {len(done)} steps")
        return done

    return run


def seq_count(step: Step) -> int:
    """How many sequence numbers a step takes (on a fresh run, where ``Patched`` is True)."""
    match step:
        case ("signal", _, timeout):
            return 1 if timeout is None else 2
        case ("all" | "any", members):
            return 1 + sum(seq_count(m) for m in members)
        case ("query",) | ("query", _) | ("now",):
            return 0
    return 1


def first_seq(program: Program, j: int) -> int:
    return 1 + sum(seq_count(s) for s in program.steps[:j])


def program_histories(draw: Any, program: Program, **kw: Any) -> list[Event]:
    return draw(  # type: ignore[no-any-return]
        histories(
            build(program),
            signals={name: st.integers(0, 3) for name in SIGNALS},
            max_steps=kw.pop("max_steps", 25),
            **kw,
        )
    )


def same_closing(a: Event | None, b: Event | None) -> bool:
    """Closing events equal up to ``index`` (the live path keeps its own, unindexed copy)."""
    if a is None or b is None:
        return a is b
    return msgspec.structs.replace(a, index=-1) == msgspec.structs.replace(b, index=-1)


def is_closed(history: list[Event]) -> bool:
    return type(history[-1]) in CLOSING_EVENTS


# --------------------------------------------------------------------------- (a)


@SETTINGS
@given(st.data())
def test_replay_reproduces_every_recorded_command(data: st.DataObject) -> None:
    program = data.draw(programs, "program")
    history = program_histories(data.draw, program)
    fn = build(program)
    assert_deterministic(fn, history)
    nxt = replay(fn, history)
    last = units(history)[-1]
    if is_closed(history) or isinstance(last[0], WorkflowTaskCompleted):
        # every input was decided on: nothing may be issued that was not recorded
        assert nxt == [], nxt
    else:
        it = Interpreter(fn)
        it.feed(history)
        decision = it.decide(max(e.time for e in history), "replay")
        assert nxt == ([] if decision is None else decision.events[1:])


# --------------------------------------------------------------------------- (b)


@SETTINGS
@given(st.data())
def test_incremental_path_equals_replay_for_any_batching(data: st.DataObject) -> None:
    program = data.draw(programs, "program")
    history = program_histories(data.draw, program)
    fn = build(program)
    parts = units(history)
    cuts = data.draw(st.lists(st.booleans(), min_size=len(parts), max_size=len(parts)), "cuts")
    chunks: list[list[Event]] = [[]]
    for unit, cut in zip(parts, cuts, strict=True):
        chunks[-1].extend(unit)
        if cut:
            chunks.append([])
    chunks = [c for c in chunks if c]
    now = max(e.time for e in history)

    live = Interpreter(fn)
    fed = 0
    for n, chunk in enumerate(chunks):
        live.feed(chunk)
        fed += len(chunk)
        scratch = Interpreter(fn)
        scratch.feed(history[:fed])
        assert same_closing(live.closing, scratch.closing), f"after {fed} events"
        assert live.queries == scratch.queries, f"after {fed} events"
        assert live.length == scratch.length == fed
        # the decision at this point, made by an interpreter fed the same way
        twin = Interpreter(fn)
        for c in chunks[: n + 1]:
            twin.feed(c)
        a, b = twin.decide(now, "x"), scratch.decide(now, "x")
        assert (a and a.events) == (b and b.events), f"after {fed} events"
        twin.close()
        scratch.close()
    live.close()


# --------------------------------------------------------------------------- (c)


def _first_key(step: Step) -> Any:
    """What a step's first command is, as replay compares it."""
    match step:
        case ("act" | "try_act", name, arg):
            return ("act", name, arg)
        case ("all" | "any", members):
            return (step[0], len(members))
        case ("patched", _, seconds):
            return ("timer", seconds)
        case ("side_effect", _):  # a recorded value is never recomputed, so never compared
            return ("side_effect",)
    return step


def mutations(program: Program) -> list[tuple[str, int, Program]]:
    """Changed programs, each with the index of its first changed step."""
    out: list[tuple[str, int, Program]] = []
    s = program.steps
    for j, step in enumerate(s):
        if step[0] in ("act", "try_act"):
            renamed = (step[0], step[1] + "_v2", step[2])
            out.append(("renamed activity", j, Program((*s[:j], renamed, *s[j + 1 :]))))
            changed = (step[0], step[1], step[2] + 1)
            out.append(("changed argument", j, Program((*s[:j], changed, *s[j + 1 :]))))
    for j in range(len(s) + 1):
        extra: Step = ("timer", EXTRA_TIMER)
        out.append(("extra timer", j, Program((*s[:j], extra, *s[j:]))))
    for j in range(len(s) - 1):
        x, y = s[j], s[j + 1]
        # a step without a sequence number or with a Patched branch moves legally
        if (
            seq_count(x)
            and seq_count(y)
            and "patched" not in (x[0], y[0])
            and _first_key(x) != _first_key(y)
        ):
            out.append(("reordered yields", j, Program((*s[:j], y, x, *s[j + 2 :]))))
    return [(what, j, Program(p.steps, program.saga, program.ending)) for what, j, p in out]


@settings(max_examples=60 * SCALE, deadline=None)
@given(st.data())
def test_changed_workflow_is_detected_at_the_first_changed_step(data: st.DataObject) -> None:
    program = data.draw(programs, "program")
    history = program_histories(data.draw, program)
    trace: list[int] = []
    Interpreter(build(program, trace)).feed(history)
    candidates = mutations(program)
    _, j, changed = data.draw(st.sampled_from(candidates), "mutation")
    seq = first_seq(program, j)
    if j in trace:
        with pytest.raises(NonDeterminismError, match=rf"at sequence number {seq}: "):
            replay(build(changed), history)
    else:  # the history never got to the changed step: it still replays
        replay(build(changed), history)


def test_mutation_examples() -> None:
    program = Program((("act", "a", 1), ("timer", 5), ("act", "b", 2)))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    it = Interpreter(build(program))
    history: list[Event] = [
        WorkflowStarted(
            time=t0, workflow_type="program", workflow_id="w", run_id="r", input=Json(text="[]")
        )
    ]
    inputs: list[Event] = [
        ActivityCompleted(time=t0, seq=1, result=Json(text="1")),
        TimerFired(time=t0, seq=2),
        ActivityCompleted(time=t0, seq=3, result=Json(text="3")),
    ]
    it.feed(history)
    for n, ev in enumerate([None, *inputs]):
        if ev is not None:
            history.append(ev)
            it.feed([ev])
        decision = it.decide(t0, f"b{n}")
        assert decision is not None
        history += decision.events
        it.feed(decision.events)
    assert it.closing is not None
    seen = {what for what, _, _ in mutations(program)}
    assert seen == {"renamed activity", "changed argument", "extra timer", "reordered yields"}
    for what, j, changed in mutations(program):
        with pytest.raises(NonDeterminismError, match=rf"sequence number {first_seq(program, j)}:"):
            replay(build(changed), history)
        assert what


# --------------------------------------------------------------------------- state machine

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class InterpreterMachine(RuleBasedStateMachine):
    """One live interpreter, the way a worker keeps it, against fresh replays."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Event] = []
        self.fn: Any = None
        self.live: Interpreter | None = None
        self.clock = T0
        self.batches = 0
        self.undecided = 0

    @initialize(program=programs)
    def start(self, program: Program) -> None:
        self.fn = build(program)
        self.live = Interpreter(self.fn)
        self._append(
            WorkflowStarted(
                time=T0, workflow_type="program", workflow_id="w", run_id="r", input=Json(text="[]")
            )
        )
        self._decide()

    # -- bookkeeping read from the history itself

    def _append(self, ev: Event) -> None:
        ev = with_index(ev, len(self.history))
        self.history.append(ev)
        assert self.live is not None
        self.live.feed([ev])
        if type(ev) not in (WorkflowTaskCompleted,):
            self.undecided += 1

    def _decide(self) -> None:
        assert self.live is not None
        self.batches += 1
        decision = self.live.decide(self.clock, f"b{self.batches}")
        if decision is not None:
            start = len(self.history)
            batch = [with_index(e, start + i) for i, e in enumerate(decision.events)]
            self.history += batch
            self.live.feed(batch)
        self.undecided = 0

    def _pending(self, kinds: tuple[type, ...], ends: tuple[type, ...]) -> list[int]:
        started = [getattr(e, "seq", 0) for e in self.history if isinstance(e, kinds)]
        ended = {getattr(e, "seq", 0) for e in self.history if isinstance(e, ends)}
        return [s for s in started if s not in ended]

    def activities(self) -> list[int]:
        return self._pending((ActivityScheduled,), (ActivityCompleted, ActivityFailed))

    def timers(self) -> list[int]:
        return self._pending((TimerStarted,), (TimerFired, TimerCancelled))

    def open(self) -> bool:
        return self.live is not None and self.live.closing is None

    # -- rules

    @precondition(lambda self: self.open() and self.activities())
    @rule(data=st.data(), value=st.integers(0, 5))
    def activity_completes(self, data: st.DataObject, value: int) -> None:
        seq = data.draw(st.sampled_from(self.activities()))
        self._append(ActivityCompleted(time=self.clock, seq=seq, result=Json(text=str(value))))

    @precondition(lambda self: self.open() and self.activities())
    @rule(data=st.data(), final=st.booleans())
    def activity_fails(self, data: st.DataObject, final: bool) -> None:
        seq = data.draw(st.sampled_from(self.activities()))
        attempt = 1 + sum(
            1 for e in self.history if isinstance(e, ActivityAttemptFailed) and e.seq == seq
        )
        error = Failure(type="ValueError", message="no")
        if final or attempt >= 2:  # the programs retry twice
            self._append(ActivityFailed(time=self.clock, seq=seq, error=error, attempt=attempt))
        else:
            self._append(
                ActivityAttemptFailed(
                    time=self.clock, seq=seq, attempt=attempt, error=error, retry_at=self.clock
                )
            )

    @precondition(lambda self: self.open() and self.timers())
    @rule(data=st.data())
    def timer_fires(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.timers()))
        self.clock += timedelta(seconds=1)
        self._append(TimerFired(time=self.clock, seq=seq))

    @precondition(lambda self: self.open())
    @rule(name=st.sampled_from(SIGNALS), value=st.integers(0, 3))
    def signal_arrives(self, name: str, value: int) -> None:
        self._append(SignalReceived(time=self.clock, name=name, payload=Json(text=str(value))))

    @precondition(
        lambda self: self.open() and not any(isinstance(e, CancelRequested) for e in self.history)
    )
    @rule()
    def cancel_requested(self) -> None:
        self._append(CancelRequested(time=self.clock, reason="enough"))

    @precondition(lambda self: self.open())
    @rule()
    def terminated(self) -> None:
        self._append(WorkflowTerminated(time=self.clock, reason="operator"))

    @precondition(lambda self: self.live is not None)
    @rule()
    def worker_decides(self) -> None:
        self._decide()

    @precondition(lambda self: self.live is not None)
    @rule(crash=st.booleans())
    def replay_from_scratch(self, crash: bool) -> None:
        """A fresh replay agrees with the live interpreter: closing, queries, next decision."""
        assert self.live is not None
        fresh = Interpreter(self.fn)
        fresh.feed(self.history)
        assert same_closing(fresh.closing, self.live.closing)
        assert fresh.queries == self.live.queries
        assert fresh.length == self.live.length == len(self.history)
        bid = f"b{self.batches + 1}"
        expected = fresh.decide(self.clock, bid)
        if crash:  # the worker died: the replay takes over (its decision is appended below)
            self.live.close()
            self.live = fresh
            made = expected
        else:
            made = self.live.decide(self.clock, bid)
            fresh.close()
        assert (made and made.events) == (expected and expected.events)
        self.batches += 1
        if made is not None:
            start = len(self.history)
            batch = [with_index(e, start + i) for i, e in enumerate(made.events)]
            self.history += batch
            self.live.feed(batch)
        self.undecided = 0

    @invariant()
    def history_replays(self) -> None:
        if self.fn is not None and self.undecided == 0:
            assert replay(self.fn, self.history) == []

    def teardown(self) -> None:
        if self.live is not None:
            self.live.close()


InterpreterMachine.TestCase.settings = settings(
    max_examples=40 * SCALE, stateful_step_count=25, deadline=None
)
TestInterpreterMachine = InterpreterMachine.TestCase


# --------------------------------------------------------------------------- found bugs


def test_live_closing_is_the_appended_event() -> None:
    fn = build(Program((("timer", 1),)))
    started = WorkflowStarted(
        time=T0, workflow_type="program", workflow_id="w", run_id="r", input=Json(text="[]")
    )
    history: list[Event] = [with_index(started, 0)]
    live = Interpreter(fn)
    live.feed(history)
    for n, inputs in enumerate([[], [TimerFired(time=T0, seq=1)]]):
        for ev in inputs:
            history.append(with_index(ev, len(history)))
            live.feed(history[-1:])
        decision = live.decide(T0, f"b{n}")
        assert decision is not None
        batch = [with_index(e, len(history) + i) for i, e in enumerate(decision.events)]
        history += batch
        live.feed(batch)
    scratch = Interpreter(fn)
    scratch.feed(history)
    assert scratch.closing is not None and scratch.closing.index == len(history) - 1
    assert live.closing == scratch.closing
