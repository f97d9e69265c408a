"""How runs end (complete, fail, cancel, terminate, bad input), ``seen=N``, live == replay."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import pytest

from engine import (
    All,
    CancelledError,
    ContinueAsNew,
    Interpreter,
    Now,
    Patched,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    Timer,
    WaitSignal,
    activity,
    decide,
    workflow,
)
from engine import Any as AnyOf
from engine.events import (
    ActivityScheduled,
    Event,
    Json,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    with_index,
)
from tests.history import (
    T0,
    History,
    cancel,
    child_completed,
    completed,
    failed,
    fired,
    signal,
    terminate,
)


@activity
def reserve(item: str) -> str:
    return f"r-{item}"


@activity
def release(reservation: str) -> None:
    pass


@activity
def notify(text: str) -> None:
    pass


# --------------------------------------------------------------------------- endings


def test_workflow_raising_fails_the_run_with_type_and_message() -> None:
    class OutOfStock(Exception):
        pass

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        try:
            raise KeyError("sku")
        except KeyError as exc:
            raise OutOfStock("sku-1 is gone") from exc

    h = History(wf).decide().fire(1).decide()
    closing = h.closing
    assert isinstance(closing, WorkflowFailed)
    assert closing.error.type.endswith("OutOfStock")
    assert closing.error.type.startswith("tests.test_interp_lifecycle.")
    assert closing.error.message == "sku-1 is gone"
    assert "OutOfStock" in closing.error.traceback
    cause = closing.error.cause
    assert cause is not None and (cause.type, cause.message) == ("KeyError", "'sku'")
    h.assert_replays()


def test_returning_completes_the_run() -> None:
    @dataclasses.dataclass
    class Summary:
        total: int

    @workflow
    def wf(a: int, b: int) -> Generator[Any, Any, Summary]:
        yield Timer(1)
        return Summary(a + b)

    h = History(wf, 2, 3).decide().fire(1).decide()
    assert isinstance(h.closing, WorkflowCompleted)
    assert h.result() == {"total": 5}
    h.assert_replays()


@dataclasses.dataclass
class Order:
    sku: str
    qty: int


@workflow
def typed(order: Order, *notes: str) -> Generator[Any, Any, Any]:
    yield Timer(1)
    return [type(order).__name__, order.qty, list(notes)]


def test_input_is_decoded_into_the_annotated_types() -> None:
    h = History(typed, {"sku": "a", "qty": 2}, "gift", "fragile").decide().fire(1).decide()
    assert h.result() == ["Order", 2, ["gift", "fragile"]]


@pytest.mark.parametrize(
    ("input", "message"),
    [
        (Json(text='[{"sku": "a"}]'), "argument 1 does not match"),
        (Json(text='[{"sku": "a", "qty": 1}, 5]'), "argument 2 does not match"),
        (Json(text='{"not": "a list"}'), "payload does not match"),
        (Json(text="[]"), "missing 1 required positional argument"),
    ],
)
def test_bad_input_fails_the_run(input: Json, message: str) -> None:
    h = History(typed, input=input).decide()
    assert h.kinds() == ["WorkflowFailed"]
    closing = h.closing
    assert isinstance(closing, WorkflowFailed)
    assert closing.error.type == "TypeError"
    assert message in closing.error.message
    h.assert_replays()


def test_too_many_arguments_fail_the_run() -> None:
    @workflow
    def one(a: int) -> Generator[Any, Any, Any]:
        yield Timer(a)

    h = History(one, 1, 2).decide()
    closing = h.closing
    assert isinstance(closing, WorkflowFailed)
    assert closing.error.message == "got 2 arguments, the function takes 1"


# --------------------------------------------------------------------------- cancellation


@workflow
def saga(item: str) -> Generator[Any, Any, Any]:
    reservation = yield ScheduleActivity(reserve, item)
    try:
        yield WaitSignal("paid", timeout=timedelta(hours=1))
        return "paid"
    except CancelledError as exc:
        yield ScheduleActivity(release, reservation)
        yield ScheduleActivity(notify, f"cancelled: {exc}")
        raise


def test_cancellation_runs_compensation_then_cancels_the_run() -> None:
    h = History(saga, "book").decide().complete(1, "r-book").decide()
    assert h.kinds() == ["TimerStarted:3"]
    h.cancel("customer asked").decide()
    assert h.kinds() == ["TimerCancelled:3", "ActivityScheduled:4"]
    assert h.last.events[2].activity_type == "release"  # type: ignore[union-attr]
    # a second cancel request is ignored; compensation carries on
    h.cancel("again").decide()
    assert len(h.decisions) == 4 and h.kinds() == []  # seen, nothing to do
    h.complete(4).decide()
    notice = h.last.events[1]
    assert isinstance(notice, ActivityScheduled)
    assert notice.args == Json(text='["cancelled: customer asked"]')
    h.complete(5).decide()
    closing = h.closing
    assert isinstance(closing, WorkflowCancelled)
    assert closing.reason == "customer asked"
    h.assert_replays()


def test_uncaught_cancellation_cancels_the_run() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield All(Timer(5), WaitSignal("x"))

    h = History(wf).decide().cancel().decide()
    assert h.kinds() == ["TimerCancelled:2", "WorkflowCancelled"]
    closing = h.closing
    assert isinstance(closing, WorkflowCancelled)
    assert closing.reason == "cancellation requested"
    # the abandoned signal wait takes nothing, and nothing reaches a closed run
    h.signal("x").fire(2).decide()
    assert len(h.decisions) == 2
    h.assert_replays()


def test_cancellation_reaches_a_finally_block() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield Timer(60)
        finally:
            yield ScheduleActivity(notify, "cleanup")

    h = History(wf).decide().cancel().decide()
    assert h.kinds() == ["TimerCancelled:1", "ActivityScheduled:2"]
    h.complete(2).decide()
    assert isinstance(h.closing, WorkflowCancelled)


def test_workflow_may_swallow_cancellation() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield ScheduleActivity(notify, "work")
        except CancelledError:
            return "cancelled, but done"

    h = History(wf).decide().cancel("stop").decide()
    assert h.result() == "cancelled, but done"
    # the abandoned activity's result is ignored
    h.complete(1).decide()
    assert len(h.decisions) == 2


def test_terminate_closes_the_run_without_a_decision() -> None:
    closed: list[str] = []

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield Timer(60)
            yield ScheduleActivity(notify, "never")
        finally:
            closed.append("finally ran")

    h = History(wf, verify=False).decide().terminate("by operator").decide()
    assert len(h.decisions) == 1
    closing = h.closing
    assert isinstance(closing, WorkflowTerminated)
    assert closing.reason == "by operator"
    assert closed == ["finally ran"]
    h.fire(1).decide()
    assert len(h.decisions) == 1
    h.assert_replays()


def test_terminate_in_the_same_decision_as_an_input_makes_no_decision() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield SetQuery("stage", "waiting")
        yield WaitSignal("go")
        yield SetQuery("stage", "went")
        yield ScheduleActivity(notify, "never scheduled")

    h = History(wf).decide().signal("go").terminate()
    assert isinstance(h.replay().closing, WorkflowTerminated)  # closed as soon as it is fed
    h.decide()
    assert len(h.decisions) == 1
    assert isinstance(h.closing, WorkflowTerminated)
    assert h.of(ActivityScheduled) == []
    # no workflow code ran past the termination
    assert h.queries == {"stage": "waiting"}
    h.assert_replays()


def test_a_decision_that_saw_a_termination_replays() -> None:
    # written by another engine version: the batch saw the termination; it is
    # applied in order and the run ends there
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield WaitSignal("go")
        yield ScheduleActivity(notify, "x")

    h = History(wf).decide().signal("go").terminate()
    head = WorkflowTaskCompleted(time=T0, seen=len(h.events), batch_id="late")
    it = Interpreter(wf, check_args=False)
    it.feed(
        [
            *h.events,
            head,
            ActivityScheduled(
                time=T0, seq=2, activity_type="notify", args=Json(text='["x"]'), args_digest=0
            ),
        ]
    )
    assert isinstance(it.closing, WorkflowTerminated)


def test_a_finally_block_that_yields_or_raises_on_close_is_ignored() -> None:
    @workflow
    def yields() -> Generator[Any, Any, Any]:
        try:
            yield Timer(60)
        finally:
            yield Timer(1)

    @workflow
    def raises() -> Generator[Any, Any, Any]:
        try:
            yield Timer(60)
        finally:
            raise ValueError("in finally")

    for wf in (yields, raises):
        h = History(wf).decide().terminate().decide()
        assert isinstance(h.closing, WorkflowTerminated)


# --------------------------------------------------------------------------- seen=N


@workflow
def approval() -> Generator[Any, Any, Any]:
    draft = yield ScheduleActivity(reserve, "draft")
    won = yield AnyOf(WaitSignal("approve"), Timer(3600))
    return [draft, won]


def test_a_signal_appended_during_a_decision_is_applied_at_the_next() -> None:
    h = History(approval).decide().complete(1, "d")
    h.decide(during=[signal("approve", "yes")])
    # the decision saw only the history before the signal
    head = h.last.head
    assert head.seen == 4
    assert type(h.events[4]).__name__ == "SignalReceived"
    assert h.kinds() == ["TimerStarted:4"]
    assert h.closing is None
    # the next decision applies it
    h.decide()
    assert h.kinds() == ["TimerCancelled:4", "WorkflowCompleted"]
    assert h.result() == ["d", [0, "yes"]]
    # on replay the signal is invisible to the decision that did not see it
    h.assert_replays()


def test_a_result_appended_during_a_decision_is_applied_at_the_next() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        a = yield ScheduleActivity(reserve, "a")
        b = yield ScheduleActivity(reserve, "b")
        return [a, b]

    h = History(wf).decide(during=[completed(1, "early")])
    assert h.last.head.seen == 1
    h.decide().decide(during=[completed(2, "x")]).decide()
    assert h.result() == ["early", "x"]
    h.assert_replays()


def test_cancel_appended_during_a_decision() -> None:
    h = History(saga, "book").decide(during=[cancel("quick")])
    assert h.kinds() == ["ActivityScheduled:1"]
    h.decide()
    assert h.kinds() == ["WorkflowCancelled"]  # cancelled while reserving: nothing to release
    h.assert_replays()


def test_replay_honours_seen_for_a_hand_written_history() -> None:
    # the signal at index 3 arrived while decision b2 (seen=3) was being made;
    # b2 timed out the wait instead, and the signal waits for the next WaitSignal
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        with contextlib.suppress(TimeoutError):
            yield WaitSignal("s", timeout=10)
        return (yield WaitSignal("s"))

    h = History(wf).decide().fire(2).decide(during=[signal("s", "later")])
    assert h.last.head.seen == 4
    assert [c.seq for c in h.last.head.commands] == [3]
    h.decide()
    assert h.result() == "later"
    h.assert_replays()


# --------------------------------------------------------------------------- late events


def test_late_events_after_the_run_closed_are_ignored() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        first = yield AnyOf(ScheduleActivity(reserve, "a"), Timer(5))
        return first

    h = History(wf).decide().complete(2, "a").decide()
    assert isinstance(h.closing, WorkflowCompleted)
    h.fire(3).complete(2, "again").signal("s").cancel().terminate().decide()
    assert len(h.decisions) == 2
    assert isinstance(h.closing, WorkflowCompleted)
    h.assert_replays()


def test_results_for_abandoned_commands_are_ignored_but_the_run_goes_on() -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        first = yield AnyOf(ScheduleActivity(reserve, "slow"), Timer(5))
        second = yield ScheduleActivity(reserve, "next")
        return [first, second]

    h = History(wf).decide().fire(3).decide()
    h.complete(2, "slow result").decide()
    assert len(h.decisions) == 3 and h.kinds() == []  # seen, nothing to do
    h.complete(4, "n").decide()
    assert h.result() == [[1, None], "n"]


# --------------------------------------------------------------------------- live == replay


def tick() -> int:
    return 7


@workflow
def kitchen_sink(n: int) -> Generator[Any, Any, Any]:
    yield SetQuery("stage", "start")
    if (yield Patched("v2")):
        r = yield ScheduleActivity(reserve, "x")
    else:  # pragma: no cover - fresh histories always take the patch
        r = "old"
    lucky = yield SideEffect(tick)
    t = yield Now()
    got = yield All(WaitSignal("a"), AnyOf(Timer(30), WaitSignal("b")))
    yield SetQuery("stage", "waiting")
    try:
        yield WaitSignal("c", timeout=60)
    except TimeoutError:
        pass
    except CancelledError:
        yield ScheduleActivity(release, r)
        raise
    if n:
        yield ContinueAsNew(n - 1)
    return [r, lucky, t.isoformat(), got]


SCRIPTS: dict[str, list[Event | str]] = {
    "signals first": [signal("a", 1), signal("b", 2), "decide", completed(1, "r")],
    "timer wins": [completed(1, "r"), fired(5), signal("a", 1), signal("c", 3)],
    "timeout": [completed(1, "r"), signal("a", 1), signal("b", 0), fired(8)],
    "cancelled": [completed(1, "r"), signal("a"), signal("b"), cancel("stop"), completed(9)],
    "terminated": [completed(1, "r"), terminate("op")],
    "failed": [failed(1, "IOError")],
}


def _run(wf: Callable[..., Generator[Any, Any, Any]], n: int, script: list[Event | str]) -> History:
    h = History(wf, n).decide()
    for step in script:
        if step == "decide":
            h.decide()
        else:
            assert not isinstance(step, str)
            h.add(step).advance(1).decide()
    return h


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("n", [0, 1])
def test_feeding_one_batch_at_a_time_equals_replay_from_scratch(name: str, n: int) -> None:
    h = _run(kitchen_sink, n, SCRIPTS[name])  # verify=True: every decision was remade from scratch
    h.assert_replays()
    # replay from scratch, then a fresh decision, matches the live interpreter
    heads = [i for i, e in enumerate(h.events) if isinstance(e, WorkflowTaskCompleted)]
    for pos in heads:
        head = h.events[pos]
        assert isinstance(head, WorkflowTaskCompleted) and head.seen == pos
        fresh = decide(kitchen_sink, h.events[:pos], head.time, head.batch_id)
        assert fresh is not None
        recorded = h.events[pos : pos + len(fresh.events)]
        assert fresh.events == [with_index(e, -1) for e in recorded]
    # feed the history event by event (batches whole) into one live interpreter
    live = Interpreter(kitchen_sink)
    i = 0
    while i < len(h.events):
        j = i + 1
        if isinstance(h.events[i], WorkflowTaskCompleted):
            while j < len(h.events) and not _is_input(h.events[j]):
                j += 1
        live.feed(h.events[i:j])
        i = j
    assert live.queries == h.interpreter.queries
    assert (live.closing is None) == (h.closing is None)
    live.close()


def _is_input(e: Event) -> bool:
    from engine.events import DECISION_EVENTS

    return type(e) not in DECISION_EVENTS


def test_the_functional_entry_point() -> None:
    h = History(approval).decide().complete(1, "d").decide().signal("approve", 1)
    d = decide(approval, h.events, T0, "bx")
    assert d is not None
    assert [type(e).__name__ for e in d.events] == [
        "WorkflowTaskCompleted",
        "TimerCancelled",
        "WorkflowCompleted",
    ]
    assert d.head.batch_id == "bx"
    assert "Decision([WorkflowTaskCompleted(" in repr(d)
    assert decide(approval, h.events[:3], T0, "by") is None  # nothing new to decide


def test_interpreter_properties() -> None:
    it = Interpreter(approval)
    assert it.workflow_type == "approval"
    assert it.length == 0 and it.closing is None and it.queries == {}
    with pytest.raises(ValueError, match="must begin with WorkflowStarted"):
        it.decide(T0, "b1")
    it.feed(
        [
            WorkflowStarted(
                time=T0,
                workflow_type="approval",
                workflow_id="w",
                run_id="r",
                input=Json(text="[]"),
            )
        ]
    )
    assert it.length == 1
    d = it.decide(T0, "b1")
    assert d is not None and d.closing is None
    with pytest.raises(RuntimeError, match="has not been fed back"):
        it.decide(T0, "b2")
    it.feed(d.events)
    assert it.decide(T0, "b2") is None
    it.close()
    it.close()


def test_started_workflow_type_is_not_checked_against_the_code() -> None:
    h = History(approval, workflow_type="renamed").decide()
    assert h.kinds() == ["ActivityScheduled:1"]
    assert isinstance(h.events[0], WorkflowStarted)
    assert h.events[0].workflow_type == "renamed"


def test_child_result_for_an_activity_is_inconsistent() -> None:
    from engine import NonDeterminismError

    h = History(approval).decide()
    h.add(child_completed(1, "x"))
    with pytest.raises(NonDeterminismError, match="sequence number 1, which is a activity"):
        h.decide()
