"""Code that no longer fits its history, inconsistent histories, poisoning and conflicts."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from engine import (
    All,
    ConflictError,
    Interpreter,
    NonDeterminismError,
    ScheduleActivity,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    activity,
    workflow,
)
from engine import Any as AnyOf
from engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    CommandRecord,
    Event,
    Json,
    MarkerRecorded,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from tests.history import T0, History, attempt_failed, completed, fired, signal

HERE = __file__


def line_of(fn: Callable[..., Any], marker: str) -> str:
    """``file:line`` of the source line of ``fn`` that contains ``# <marker>``."""
    lines, start = inspect.getsourcelines(fn)
    for i, text in enumerate(lines):
        if f"# {marker}" in text:
            return f"{HERE}:{start + i}"
    raise AssertionError(marker)  # pragma: no cover


def nde(h: History, wf: Callable[..., Any], *, check_args: bool = True) -> str:
    with pytest.raises(NonDeterminismError) as info:
        h.replay(wf, check_args=check_args)
    return str(info.value)


@activity
def charge(customer: str, cents: int) -> str:
    return "r"


@activity
def refund(customer: str, cents: int) -> str:
    return "r"


@workflow
def original() -> Generator[Any, Any, Any]:
    a = yield ScheduleActivity(charge, "c", 999)
    yield Timer(timedelta(days=30))
    b = yield All(ScheduleActivity(charge, "c", 1), ScheduleActivity(charge, "c", 2))
    return [a, b]


def full_original() -> History:
    h = History(original).decide().complete(1, "a").decide().fire(2).decide()
    return h.complete(4, "x").complete(5, "y").decide()


def test_the_original_replays() -> None:
    h = full_original()
    assert h.result() == ["a", ["x", "y"]]
    h.assert_replays()


def test_a_different_activity() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(refund, "c", 999)  # here

    msg = nde(full_original(), wf)
    assert msg.startswith("workflow 'original' is not deterministic at sequence number 1: ")
    assert (
        "the history recorded ScheduleActivity('charge') but the code yielded "
        f"ScheduleActivity('refund') at {line_of(wf, 'here')} in wf()"
    ) in msg
    assert "Likely cause: the workflow code changed" in msg
    assert "Patched('change-id')" in msg


def test_an_extra_timer() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 999)
        yield Timer(5)  # extra
        yield Timer(timedelta(days=30))

    msg = nde(full_original(), wf)
    assert "at sequence number 2: the history recorded Timer(30 days, 0:00:00) but the code " in msg
    # the history recorded a Timer at seq 2 too; the durations differ
    assert f"yielded Timer(0:00:05) at {line_of(wf, 'extra')} in wf()" in msg


def test_an_extra_timer_at_the_end_of_a_decision() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield AnyOf(ScheduleActivity(charge, "c", 999), Timer(1))  # extra

    msg = nde(full_original(), wf)
    assert "at sequence number 1: the history recorded ScheduleActivity('charge') but the " in msg
    assert f"code yielded Any(<2 commands>) at {line_of(wf, 'extra')}" in msg


def test_reordered_yields() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 999)
        yield Timer(timedelta(days=30))
        yield All(ScheduleActivity(charge, "c", 2), ScheduleActivity(charge, "c", 1))  # swapped

    msg = nde(full_original(), wf, check_args=True)
    assert "at sequence number 4: " in msg
    assert "with arguments that differ from the recorded ones" in msg
    assert "set check_args=False on the worker to allow that" in msg
    assert line_of(wf, "swapped") in msg


def test_reordered_commands_of_different_kinds() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield All(Timer(5), WaitSignal("s"))

    @workflow(name="before")
    def after() -> Generator[Any, Any, Any]:
        yield All(WaitSignal("s"), Timer(5))  # reordered

    h = History(before).decide()
    msg = nde(h, after)
    # the signal wait now takes seq 2, where the history recorded the timer
    assert "at sequence number 2: the history recorded Timer(0:00:05) but the code yielded " in msg
    assert f"WaitSignal('s') at {line_of(after, 'reordered')}" in msg

    @workflow(name="before")
    def timer_first() -> Generator[Any, Any, Any]:
        yield All(Timer(5), Timer(6))  # timer

    msg = nde(h, timer_first)
    assert "at sequence number 3: the history recorded WaitSignal('s') but the code yielded " in msg
    assert "Timer(0:00:06)" in msg


def test_a_changed_argument_and_check_args_false() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        a = yield ScheduleActivity(charge, "c", 1000)  # price rise
        yield Timer(timedelta(days=30))
        b = yield All(ScheduleActivity(charge, "c", 1), ScheduleActivity(charge, "c", 2))
        return [a, b]

    h = full_original()
    msg = nde(h, wf)
    assert "at sequence number 1: the code yielded ScheduleActivity('charge') at " in msg
    assert line_of(wf, "price rise") in msg
    assert "with arguments that differ" in msg
    relaxed = h.replay(wf, check_args=False)
    assert isinstance(relaxed.closing, WorkflowCompleted)
    # a different type is never relaxed
    with pytest.raises(NonDeterminismError, match="recorded ScheduleActivity\\('charge'\\)"):

        @workflow(name="original")
        def other() -> Generator[Any, Any, Any]:
            yield ScheduleActivity(refund, "c", 999)

        h.replay(other, check_args=False)


def test_child_workflow_changes() -> None:
    @workflow
    def kid(n: int) -> Generator[Any, Any, Any]:
        yield Timer(n)

    @workflow
    def parent() -> Generator[Any, Any, Any]:
        yield StartChildWorkflow(kid, 1)

    @workflow(name="parent")
    def renamed() -> Generator[Any, Any, Any]:
        yield StartChildWorkflow("kid2", 1)  # renamed

    @workflow(name="parent")
    def new_args() -> Generator[Any, Any, Any]:
        yield StartChildWorkflow(kid, 2)  # args

    h = History(parent).decide()
    msg = nde(h, renamed)
    assert "the history recorded StartChildWorkflow('kid') but the code yielded " in msg
    assert f"StartChildWorkflow('kid2') at {line_of(renamed, 'renamed')}" in msg
    assert "with arguments that differ" in nde(h, new_args)
    assert h.replay(new_args, check_args=False).closing is None


def test_signal_wait_changes() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield WaitSignal("go", timeout=60)

    @workflow(name="before")
    def renamed() -> Generator[Any, Any, Any]:
        yield WaitSignal("start", timeout=60)

    @workflow(name="before")
    def longer() -> Generator[Any, Any, Any]:
        yield WaitSignal("go", timeout=120)

    h = History(before).decide()
    msg = nde(h, renamed)
    assert (
        "sequence number 1: the history recorded WaitSignal('go', timeout=0:01:00) "
        "but the code yielded WaitSignal('start', timeout=0:01:00)"
    ) in msg
    msg = nde(h, longer)  # the timeout is part of the message, so the change shows
    assert "recorded WaitSignal('go', timeout=0:01:00) but the code yielded " in msg
    assert "WaitSignal('go', timeout=0:02:00)" in msg


def test_group_shape_changes() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield AnyOf(Timer(1), Timer(2))

    @workflow(name="before")
    def bigger() -> Generator[Any, Any, Any]:
        yield AnyOf(Timer(1), Timer(2), Timer(3))

    @workflow(name="before")
    def all_instead() -> Generator[Any, Any, Any]:
        yield All(Timer(1), Timer(2))

    h = History(before).decide()
    msg = nde(h, bigger)
    assert "recorded Any(<2 commands>) but the code yielded Any(<3 commands>)" in msg
    msg = nde(h, all_instead)
    assert "recorded Any(<2 commands>) but the code yielded All(<2 commands>)" in msg


def test_a_mismatch_inside_a_group_is_not_thrown_into_the_workflow() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield All(ScheduleActivity(charge, "c", 1), Timer(1))

    @workflow(name="before")
    def after() -> Generator[Any, Any, Any]:
        try:
            yield All(ScheduleActivity(refund, "c", 1), Timer(1))
        except Exception:  # pragma: no cover - must never be reached
            return "swallowed"

    msg = nde(History(before).decide(), after)
    assert (
        "recorded ScheduleActivity('charge') but the code yielded ScheduleActivity('refund')" in msg
    )


def test_side_effect_and_timer_swapped() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield SideEffect(lambda: 1)
        yield Timer(1)

    @workflow(name="before")
    def after() -> Generator[Any, Any, Any]:
        yield Timer(1)  # swapped

    msg = nde(History(before).decide(), after)
    assert "sequence number 1: the history recorded SideEffect(...) but the code yielded " in msg
    assert "Timer(0:00:01)" in msg

    @workflow(name="before")
    def side_effect_first() -> Generator[Any, Any, Any]:
        yield SideEffect(lambda: 1)
        yield SideEffect(lambda: 2)

    msg = nde(History(before).decide(), side_effect_first)
    assert "sequence number 2: the history recorded Timer(0:00:01) but the code yielded " in msg
    assert "SideEffect(...)" in msg


def test_code_that_returns_while_recorded_commands_remain() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 999)
        return "early"  # here

    msg = nde(full_original(), wf)
    assert "at sequence number 2: the code ended the run with WorkflowCompleted at the end " in msg
    assert "but the history recorded Timer(30 days, 0:00:00)" in msg

    @workflow
    def waits() -> Generator[Any, Any, Any]:
        yield Timer(1)
        yield WaitSignal("more")

    @workflow(name="waits")
    def returns() -> Generator[Any, Any, Any]:
        yield Timer(1)

    h = History(waits).decide().fire(1).decide()
    msg = nde(h, returns)
    assert "at sequence number 2: the code ended the run with WorkflowCompleted" in msg
    assert "but the history recorded WaitSignal('more')" in msg

    @workflow(name="waits")
    def fails() -> Generator[Any, Any, Any]:
        yield Timer(1)
        raise ValueError("x")

    h = History(waits).decide().fire(1).decide().signal("more").decide()
    assert "ended the run with WorkflowFailed" in nde(
        h.continue_with(waits, check_args=True), fails
    )


def test_code_that_ends_differently() -> None:
    @workflow
    def ok() -> Generator[Any, Any, Any]:
        yield Timer(1)
        return 1

    @workflow(name="ok")
    def bad() -> Generator[Any, Any, Any]:
        yield Timer(1)
        raise ValueError("now it fails")

    @workflow(name="ok")
    def longer() -> Generator[Any, Any, Any]:
        yield Timer(1)
        yield Timer(2)  # more

    h = History(ok).decide().fire(1).decide()
    msg = nde(h, bad)
    assert (
        "at sequence number 2: the code ended the run with WorkflowFailed at the end of the " in msg
    )
    assert "workflow, but the history recorded WorkflowCompleted" in msg
    msg = nde(h, longer)
    assert "sequence number 2: the history recorded WorkflowCompleted but the code yielded " in msg
    assert f"Timer(0:00:02) at {line_of(longer, 'more')}" in msg


def test_code_that_waits_while_the_history_holds_more() -> None:
    # a hand-made batch with a command the code never yields (e.g. written by other code)
    h = History(original).decide()
    batch_end = len(h.events)
    extra = TimerStarted(time=T0, seq=9, duration=timedelta(1), fire_at=T0)
    events = [*h.events[:batch_end], extra]
    it = Interpreter(original)
    with pytest.raises(NonDeterminismError) as info:
        it.feed(events)
    msg = str(info.value)
    assert "at sequence number 9: the code waits at " in msg
    assert "in original() while the history still holds Timer(1 day, 0:00:00)" in msg

    # a record the code never yields
    head = h.events[1]
    assert isinstance(head, WorkflowTaskCompleted)
    extra_record = msgspec.structs.replace(head, commands=(CommandRecord(7, "signal", "x"),))
    with pytest.raises(NonDeterminismError, match="still holds WaitSignal\\('x'\\)"):
        Interpreter(original).feed([h.events[0], extra_record, *h.events[2:]])


def test_code_that_returned_while_the_history_holds_more() -> None:
    h = full_original()
    extra = TimerStarted(time=T0, seq=9, duration=timedelta(1), fire_at=T0)
    with pytest.raises(NonDeterminismError) as info:
        Interpreter(original).feed([*h.events, extra])
    msg = str(info.value)
    assert "the code returned at the end of the workflow while the history still holds" in msg


def test_a_missing_timer_cancellation() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield AnyOf(ScheduleActivity(charge, "c", 1), Timer(60))
        yield Timer(1)

    h = History(wf).decide().complete(2, "r").decide()
    assert h.kinds() == ["TimerCancelled:3", "TimerStarted:4"]
    # as an older version of the code would have recorded it: no cancellation, indexes dense
    kept = [e for e in h.events if type(e) is not TimerCancelled]
    events = [msgspec.structs.replace(e, index=i) for i, e in enumerate(kept)]
    with pytest.raises(NonDeterminismError) as info:
        Interpreter(wf).feed(events)
    msg = str(info.value)
    assert "at sequence number 3: the history recorded Timer(0:00:01) but the code yielded " in msg
    assert "the cancellation of timer 3" in msg


def test_events_out_of_place_are_refused() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 1)
        yield Timer(1)

    h = History(wf).decide().complete(1, "r").decide()
    events = h.events
    for broken in (
        [*events[:3], events[3], *events[3:]],  # a duplicate
        [*events[:3], *events[4:]],  # a gap
        [*events[:3], events[4], events[3], *events[5:]],  # a swap
    ):
        with pytest.raises(NonDeterminismError, match=r"carries index .* a gap, a duplicate"):
            Interpreter(wf).feed(broken)
    unindexed = [msgspec.structs.replace(e, index=-1) for e in events]
    Interpreter(wf).feed(unindexed)  # events not yet appended carry no index: accepted


def test_a_foreign_marker_where_a_side_effect_was_recorded() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield SideEffect(lambda: 1)
        yield Timer(1)

    h = History(wf).decide()
    events = [
        msgspec.structs.replace(e, name="mystery") if type(e) is MarkerRecorded else e
        for e in h.events
    ]
    with pytest.raises(NonDeterminismError, match="sequence number 1"):
        Interpreter(wf).feed(events)


def test_the_location_inside_a_yield_from_helper() -> None:
    def helper() -> Generator[Any, Any, Any]:
        yield Timer(1)  # helper timer
        return (yield from ScheduleActivity(refund, "c", 1))

    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 999)
        return (yield from helper())

    msg = nde(full_original(), wf)
    assert "at sequence number 2: the history recorded Timer(30 days, 0:00:00)" in msg
    assert f"at {line_of(helper, 'helper timer')} in helper()" in msg

    @workflow(name="original")
    def wf2() -> Generator[Any, Any, Any]:
        yield from helper2()

    def helper2() -> Generator[Any, Any, Any]:
        return (yield from ScheduleActivity(refund, "c", 1))  # in helper2

    msg = nde(full_original(), wf2)
    assert f"at {line_of(helper2, 'in helper2')} in helper2()" in msg


# --------------------------------------------------------------------------- poisoning


def test_the_interpreter_is_poisoned_after_an_error() -> None:
    @workflow(name="original")
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(refund, "c", 999)

    h = full_original()
    it = Interpreter(wf)
    with pytest.raises(NonDeterminismError):
        it.feed(h.events)
    with pytest.raises(RuntimeError, match="this Interpreter failed earlier") as info:
        it.feed([])
    assert isinstance(info.value.__cause__, NonDeterminismError)
    assert "NonDeterminismError" in str(info.value)
    with pytest.raises(RuntimeError, match="build a new one to replay"):
        it.decide(T0, "b9")


def test_an_error_in_decide_poisons_too() -> None:
    class Broken:
        def encode(self, value: Any) -> Any:
            raise RuntimeError("codec down")

        def decode(self, payload: Any, type: Any = Any) -> Any:
            return []

        def decode_args(self, payload: Any, types: Any, rest: Any) -> list[Any]:
            return []

        def encode_args(self, args: Any) -> Any:
            raise KeyboardInterrupt  # not an Exception: nothing may swallow it

        def fingerprint_args(self, args: Any) -> int:
            return 0

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield ScheduleActivity(charge, "c", 1)

    it = Interpreter(wf, codec=Broken())
    it.feed(History(wf).events[:1])
    with pytest.raises(KeyboardInterrupt):
        it.decide(T0, "b1")
    with pytest.raises(RuntimeError, match="failed earlier"):
        it.decide(T0, "b1")


def test_conflict_when_a_foreign_decision_arrives_while_ours_is_pending() -> None:
    h = History(original).decide().complete(1, "a")
    it = h.replay()
    mine = it.decide(T0, "mine")
    assert mine is not None
    theirs = h.decide().events[-2:]  # another worker's decision b2 for the same input
    assert isinstance(theirs[0], WorkflowTaskCompleted)
    with pytest.raises(
        ConflictError, match=r"another decision \(b2\) was appended instead of this"
    ):
        it.feed(theirs)
    with pytest.raises(RuntimeError, match="failed earlier"):
        it.feed([])


def test_own_decision_fed_back_after_concurrent_inputs() -> None:
    h = History(original).decide().complete(1, "a")
    it = h.replay()
    mine = it.decide(T0, "mine")
    assert mine is not None
    # an input lands before our batch; it stays for the next decision
    it.feed([fired(2), *mine.events])
    d = it.decide(T0, "next")
    assert d is not None
    assert [type(e) for e in d.events[1:]] == [ActivityScheduled, ActivityScheduled]


# --------------------------------------------------------------------------- inconsistent histories


def started() -> WorkflowStarted:
    return WorkflowStarted(
        time=T0, workflow_type="original", workflow_id="w", run_id="r", input=Json(text="[]")
    )


def wtc(seen: int, batch_id: str = "x", *commands: CommandRecord) -> WorkflowTaskCompleted:
    return WorkflowTaskCompleted(time=T0, seen=seen, batch_id=batch_id, commands=commands)


def done() -> WorkflowCompleted:
    return WorkflowCompleted(time=T0, result=Json(text="1"))


INCONSISTENT: dict[str, tuple[list[Event], str]] = {
    "no WorkflowStarted first": ([signal("s")], "the history does not begin with WorkflowStarted"),
    "a decision first": ([wtc(0)], "a decision comes before WorkflowStarted"),
    "WorkflowStarted later": ([started(), started()], "WorkflowStarted at event 1, not 0"),
    "a decision event outside a batch": (
        [started(), TimerFired(time=T0, seq=1), TimerCancelled(time=T0, seq=1)],
        "event 2 (TimerCancelled) is outside a decision",
    ),
    "a result for an unknown seq": (
        [started(), completed(3, "x")],
        "ActivityCompleted for sequence number 3, which the code never started "
        "(it has started 1 commands)",
    ),
    "a result for seq 0": (
        [started(), completed(0, "x")],
        "ActivityCompleted for sequence number 0, which the code never started "
        "(it has started 1 commands)",
    ),
    "an attempt failure for an unknown seq": (
        [started(), attempt_failed(5)],
        "ActivityAttemptFailed for unknown sequence number 5",
    ),
    "seen beyond the batch": (
        [started(), wtc(2)],
        "decision x claims to have seen 2 events (previous decision saw 0)",
    ),
    "seen going back": (
        [started(), signal("a"), wtc(2, "one"), done(), wtc(1, "two")],
        "decision two claims to have seen 1 events (previous decision saw 2)",
    ),
    "a decision after the run closed": (
        [started(), wtc(1), done(), wtc(3, "late")],
        "decision late comes after the run closed",
    ),
    "a timer result for an activity": (
        [
            started(),
            wtc(1),
            ActivityScheduled(
                time=T0, seq=1, activity_type="charge", args=Json(text='["c",999]'), args_digest=0
            ),
            TimerFired(time=T0, seq=1),
        ],
        "TimerFired for sequence number 1, which is a activity",
    ),
}


@workflow(name="original")
def one_activity() -> Generator[Any, Any, Any]:
    yield ScheduleActivity(charge, "c", 999)


@workflow(name="original")
def instant() -> Generator[Any, Any, Any]:
    return 1
    yield  # pragma: no cover


@pytest.mark.parametrize("name", list(INCONSISTENT))
def test_inconsistent_histories(name: str) -> None:
    events, message = INCONSISTENT[name]
    wf = instant if any(type(e) is WorkflowCompleted for e in events) else one_activity
    it = Interpreter(wf, check_args=False)
    with pytest.raises(NonDeterminismError) as info:
        it.feed(events)
        it.decide(T0, "d")
    assert str(info.value) == f"workflow 'original': the history is inconsistent: {message}"
    with pytest.raises(RuntimeError):
        it.feed([])


def test_results_for_commands_that_take_no_result_are_ignored() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield SideEffect(lambda: 1)
        return (yield WaitSignal("s"))

    h = History(wf).decide()
    h.add(ActivityCompleted(time=T0, seq=1, result=Json(text="1"))).decide()
    h.add(TimerFired(time=T0, seq=2)).decide()
    assert len(h.decisions) == 3 and h.kinds() == []  # seen, nothing to do
    h.signal("s", 3).decide()
    assert h.result() == 3


def test_message_mentions_what_went_wrong_in_few_words() -> None:
    msg = nde(full_original(), _renamed_timer)
    assert re.search(r"sequence number 2: the history recorded Timer\(30 days, 0:00:00\)", msg)


@workflow(name="original")
def _renamed_timer() -> Generator[Any, Any, Any]:
    yield ScheduleActivity(charge, "c", 999)
    yield Timer(timedelta(days=31))


def test_recorded_all_and_a_truncated_batch() -> None:
    @workflow
    def before() -> Generator[Any, Any, Any]:
        yield All(Timer(1), Timer(2))

    @workflow(name="before")
    def after() -> Generator[Any, Any, Any]:
        yield AnyOf(Timer(1), Timer(2))

    h = History(before).decide()
    assert "recorded All(<2 commands>) but the code yielded Any(<2 commands>)" in nde(h, after)
    # a batch that lost its last event (as a buggy store might)
    with pytest.raises(NonDeterminismError) as info:
        Interpreter(before).feed(h.events[:-1])
    assert "sequence number 3: the history recorded nothing more but the code yielded " in str(
        info.value
    )
    # a batch that lost its closing event
    with pytest.raises(NonDeterminismError) as info:
        Interpreter(instant).feed([started(), wtc(1)])
    assert "ended the run with WorkflowCompleted at the end of the workflow, but the history " in (
        str(info.value)
    )
    assert "recorded nothing more" in str(info.value)
