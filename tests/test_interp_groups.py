"""``All`` and ``Any``: results in every order, failures, losers, nesting."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import Any

import pytest

from engine import (
    ActivityError,
    All,
    ScheduleActivity,
    Timer,
    WaitSignal,
    activity,
    workflow,
)
from engine import Any as AnyOf
from engine.events import Event, TimerCancelled, WorkflowFailed
from tests.history import History, commands, completed, failed, fired, signal


@activity
def work(n: int) -> int:
    return n


@workflow
def fan_out() -> Generator[Any, Any, Any]:
    results = yield All(ScheduleActivity(work, 1), Timer(10), WaitSignal("go"))
    return results


ALL_INPUTS: list[Event] = [completed(2, 11), fired(3), signal("go", "sig")]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_all_returns_results_in_command_order_whatever_the_arrival_order(
    order: tuple[int, ...],
) -> None:
    h = History(fan_out).decide()
    assert h.kinds() == ["ActivityScheduled:2", "TimerStarted:3"]
    assert [(c.seq, c.kind, c.detail) for c in commands(h.last)] == [
        (1, "all", 3),
        (4, "signal", 0),
    ]
    for i in order[:-1]:
        h.add(ALL_INPUTS[i]).decide()
        assert h.closing is None
    h.add(ALL_INPUTS[order[-1]]).decide()
    assert h.result() == [11, None, "sig"]
    h.assert_replays()


def test_all_inputs_in_one_decision() -> None:
    h = History(fan_out).decide().add(*ALL_INPUTS).decide()
    assert h.result() == [11, None, "sig"]
    assert len(h.decisions) == 2


@workflow
def all_fail() -> Generator[Any, Any, Any]:
    try:
        yield All(ScheduleActivity(work, 1), ScheduleActivity(work, 2), Timer(5))
    except ActivityError as exc:
        first = [exc.message]
    # the other members ran on; their results are recorded but unused
    after = yield WaitSignal("next")
    return [first, after]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_all_raises_the_first_failure_in_history_order(order: tuple[int, ...]) -> None:
    inputs = [failed(2, message="one"), failed(3, message="two"), fired(4)]
    h = History(all_fail).decide()
    for i in order:
        h.add(inputs[i]).decide()
    h.signal("next", "n").decide()
    first_failure = next(i for i in order if i < 2)
    assert h.result() == [[["one", "two"][first_failure]], "n"]
    # a timer still pending when the All failed is cancelled
    if order.index(2) > order.index(first_failure):
        assert h.of(TimerCancelled)[0].seq == 4
    else:
        assert h.of(TimerCancelled) == []
    h.assert_replays()


@workflow
def race() -> Generator[Any, Any, Any]:
    first = yield AnyOf(ScheduleActivity(work, 1), Timer(60), WaitSignal("s"))
    second = yield WaitSignal("s")
    return [first, second]


def test_any_activity_wins() -> None:
    h = History(race).decide().complete(2, 5).decide()
    assert h.kinds() == ["TimerCancelled:3"]
    h.signal("s", "late").decide()
    assert h.result() == [[0, 5], "late"]
    h.assert_replays()


def test_any_timer_wins_and_a_losing_signal_wait_consumes_nothing() -> None:
    h = History(race).decide().fire(3).decide()
    assert h.kinds() == []  # nothing to cancel; a new signal wait is recorded
    assert [c.seq for c in commands(h.last)] == [5]
    h.signal("s", "x").decide()
    assert h.result() == [[1, None], "x"]
    h.complete(2, 1).decide()  # the losing activity's result is ignored
    assert len(h.decisions) == 3
    h.assert_replays()


def test_any_signal_wins_and_the_next_wait_takes_the_next_signal() -> None:
    h = History(race).decide().signal("s", "a").signal("s", "b").decide()
    assert h.kinds() == ["TimerCancelled:3", "WorkflowCompleted"]
    assert h.result() == [[2, "a"], "b"]
    h.assert_replays()


def test_any_raises_when_its_first_member_fails() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield AnyOf(ScheduleActivity(work, 1), Timer(60))
        except ActivityError as exc:
            return exc.type

    h = History(wf).decide().fail(2, "KeyError").decide()
    assert h.kinds() == ["TimerCancelled:3", "WorkflowCompleted"]
    assert h.result() == "KeyError"


def test_any_takes_the_earlier_of_two_buffered_signals() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        first = yield AnyOf(WaitSignal("a"), WaitSignal("b"))
        rest = yield All(WaitSignal("a"), WaitSignal("b"))
        return [first, rest]

    h = History(wf).decide().signal("b", 1).signal("a", 2).signal("b", 3).fire(1).decide()
    assert h.result() == [[1, 1], [2, 3]]
    h.assert_replays()


def test_all_of_two_waits_for_one_signal_name_takes_signals_in_order() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        return (yield All(WaitSignal("a"), WaitSignal("a")))

    h = History(wf).signal("a", 1).signal("a", 2).decide()
    assert h.result() == [1, 2]
    h2 = History(wf).decide().signal("a", 1).decide().signal("a", 2).decide()
    assert h2.result() == [1, 2]


def test_signal_wait_with_timeout_inside_an_any() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            return (yield AnyOf(WaitSignal("s", timeout=5), ScheduleActivity(work, 1)))
        except TimeoutError:
            return "timeout"

    h = History(wf).decide()
    assert h.kinds() == ["TimerStarted:3", "ActivityScheduled:4"]
    assert [(c.seq, c.kind) for c in commands(h.last)] == [(1, "any"), (2, "signal")]
    h.fire(3).decide()
    assert h.result() == "timeout"
    h2 = History(wf).decide().complete(4, 9).decide()
    assert h2.kinds() == ["TimerCancelled:3", "WorkflowCompleted"]
    assert h2.result() == [1, 9]
    h3 = History(wf).decide().signal("s", "y").decide()
    assert h3.result() == [0, "y"]


@workflow
def nested() -> Generator[Any, Any, Any]:
    return (
        yield All(
            AnyOf(Timer(30), WaitSignal("approve")),
            All(ScheduleActivity(work, 1), ScheduleActivity(work, 2)),
            All(),
        )
    )


def test_nested_groups() -> None:
    h = History(nested).decide()
    assert h.kinds() == ["TimerStarted:3", "ActivityScheduled:6", "ActivityScheduled:7"]
    assert [(c.seq, c.kind, c.detail) for c in commands(h.last)] == [
        (1, "all", 3),
        (2, "any", 2),
        (4, "signal", 0),
        (5, "all", 2),
        (8, "all", 0),
    ]
    h.complete(7, 2).decide().signal("approve", "ok").decide()
    assert h.kinds() == ["TimerCancelled:3"]
    h.complete(6, 1).decide()
    assert h.result() == [[1, "ok"], [1, 2], []]
    h.assert_replays()


def test_nested_failure_propagates_and_cancels_every_pending_timer() -> None:
    h = History(nested).decide().fail(6).decide()
    assert h.kinds() == ["TimerCancelled:3", "WorkflowFailed"]
    closing = h.closing
    assert isinstance(closing, WorkflowFailed)
    assert closing.error.type == "engine._errors.ActivityError"
    h.complete(7, 1).signal("approve").fire(3).decide()  # late: ignored
    assert len(h.decisions) == 2
    h.assert_replays()


def test_empty_all_is_done_at_once() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        empty = yield All()
        yield Timer(1)
        return empty

    h = History(wf).decide()
    assert [(c.seq, c.kind, c.detail) for c in commands(h.last)] == [(1, "all", 0)]
    assert h.kinds() == ["TimerStarted:2"]
    h.fire(2).decide()
    assert h.result() == []
    h.assert_replays()


def test_an_empty_all_wins_an_any_and_later_members_lose() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        won = yield AnyOf(All(), Timer(5), ScheduleActivity(work, 1))
        late = yield WaitSignal("go")
        return [won, late]

    h = History(wf).decide()
    # the timer opened after the Any was won is cancelled at once
    assert h.kinds() == ["TimerStarted:3", "ActivityScheduled:4", "TimerCancelled:3"]
    h.fire(3).complete(4, 1).decide()  # results for the losers never resume the workflow
    assert h.closing is None
    h.signal("go", "g").decide()
    assert h.result() == [[0, []], "g"]
    h.assert_replays()


def test_any_needs_a_command() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield AnyOf()
        except ValueError as exc:
            return str(exc)

    h = History(wf).decide()
    assert h.result() == "Any() needs at least one command (it would wait forever)"
    assert commands(h.last) == ()


@workflow
def bad_group() -> Generator[Any, Any, Any]:
    errors = []
    for cmd in (
        AnyOf(ScheduleActivity(work, 1), Timer(7), Timer(-1)),
        All(WaitSignal("s"), "nope"),  # type: ignore[arg-type]
    ):
        try:
            yield cmd
        except (TypeError, ValueError) as exc:
            errors.append(type(exc).__name__)
    got = yield WaitSignal("s")
    return [errors, got]


def test_a_bad_member_fails_the_group_and_its_opened_members_are_abandoned() -> None:
    h = History(bad_group).decide()
    assert h.kinds() == ["ActivityScheduled:2", "TimerStarted:3", "TimerCancelled:3"]
    # neither the abandoned activity nor the abandoned signal wait takes anything
    h.complete(2, 1).fire(3).decide()
    assert h.closing is None
    h.signal("s", "mine").decide()
    assert h.result() == [["ValueError", "TypeError"], "mine"]
    h.assert_replays()
