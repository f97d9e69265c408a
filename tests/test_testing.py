"""``engine.testing``: replay, assert_deterministic, histories and VirtualClock."""

from __future__ import annotations

import doctest
import itertools
import pathlib
import subprocess
import sys
from collections.abc import Generator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings

import engine.testing
import engine.testing._replay
from engine import (
    ActivityError,
    ChildWorkflowError,
    Interpreter,
    NonDeterminismError,
    RetryPolicy,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    activity,
    workflow,
)
from engine import Any as AnyOf
from engine._clock import VirtualClock as CoreVirtualClock
from engine._defs import workflow_definition
from engine.events import (
    CLOSING_EVENTS,
    DECISION_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Json,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    encode_history,
    with_index,
)
from engine.testing import VirtualClock, assert_deterministic, histories, replay

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@activity
def charge(customer: str, cents: int) -> str:
    return f"receipt-{customer}-{cents}"


@activity
def count(n: int) -> int:
    return n


@workflow
def subscription(customer: str) -> Generator[Any, Any, Any]:
    try:
        yield WaitSignal("cancel", timeout=timedelta(days=60))
        return "cancelled in trial"
    except TimeoutError:
        pass
    receipts = []
    for _ in range(3):
        try:
            receipts.append(
                (
                    yield ScheduleActivity(
                        charge, customer, 999, retry=RetryPolicy(maximum_attempts=3)
                    )
                )
            )
        except ActivityError:
            receipts.append("declined")
        yield Timer(timedelta(days=30))
    return receipts


@workflow
def adder() -> Generator[Any, Any, int]:
    total = 0
    for i in range(3):
        total += yield ScheduleActivity(count, i)
    yield SetQuery("total", total)
    return total


@workflow
def parent() -> Generator[Any, Any, Any]:
    try:
        return (yield StartChildWorkflow("kid", 1))
    except ChildWorkflowError as exc:
        return exc.type


def worker_run(fn: Any, *args: Any, inputs: Sequence[Sequence[Event]]) -> list[Event]:
    """A history made the worker's way: decide, append, then each group of inputs."""
    it = Interpreter(fn)
    history: list[Event] = []

    def append(events: Sequence[Event]) -> None:
        batch = [with_index(e, len(history) + i) for i, e in enumerate(events)]
        history.extend(batch)
        it.feed(batch)

    started = WorkflowStarted(
        time=T0,
        workflow_type=workflow_definition(fn).name,
        workflow_id="w",
        run_id="r",
        input=Json(text=msgspec.json.encode(list(args)).decode()),
    )
    append([started])
    for n, group in enumerate([[], *inputs]):
        append(group)
        decision = it.decide(T0, f"b{n}")
        if decision is not None:
            append(decision.events)
    it.close()
    return history


def done(seq: int, value: Any) -> ActivityCompleted:
    return ActivityCompleted(
        time=T0, seq=seq, result=Json(text=msgspec.json.encode(value).decode())
    )


ADDER = [[done(1, 0)], [done(2, 1)], [done(3, 2)]]


# --------------------------------------------------------------------------- the package


def test_all_is_sorted_complete_and_binding() -> None:
    names = engine.testing.__all__
    assert list(names) == sorted(names)
    assert {"replay", "histories", "assert_deterministic", "VirtualClock"} <= set(names)
    for name in names:
        assert hasattr(engine.testing, name)
    assert VirtualClock is CoreVirtualClock


def test_importing_engine_testing_does_not_import_hypothesis() -> None:
    code = (
        "import sys, engine, engine.testing\n"
        "from engine.testing import replay, assert_deterministic, VirtualClock\n"
        "print('hypothesis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", [engine.testing, engine.testing._replay])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- replay


def test_replay_returns_the_next_commands() -> None:
    history = worker_run(adder, inputs=ADDER)[:-5]  # up to the second result, undecided
    assert isinstance(history[-1], ActivityCompleted)
    nxt = replay(adder, history)
    assert [type(e) for e in nxt] == [ActivityScheduled]
    assert nxt[0].seq == 3  # type: ignore[union-attr]


def test_replay_of_a_closed_run_issues_nothing() -> None:
    history = worker_run(adder, inputs=ADDER)
    assert isinstance(history[-1], WorkflowCompleted)
    assert replay(adder, history) == []
    assert replay(adder, []) == []


def test_replay_reads_history_files(tmp_path: pathlib.Path) -> None:
    history = worker_run(adder, inputs=ADDER)[:-5]
    expected = replay(adder, history)
    as_json = encode_history(history)
    as_msgpack = encode_history(history, format="msgpack")
    (tmp_path / "h.json").write_bytes(as_json)
    (tmp_path / "h.msgpack").write_bytes(as_msgpack)
    for source in (
        as_json,
        as_msgpack,
        as_json.decode(),
        b"\n  " + as_json,
        tmp_path / "h.json",
        str(tmp_path / "h.json"),
        tmp_path / "h.msgpack",
    ):
        assert replay(adder, source) == expected, source


def test_replay_rejects_what_is_not_a_history() -> None:
    with pytest.raises(TypeError, match="history item 0 is not an event"):
        replay(adder, [{"kind": "WorkflowStarted"}])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError):
        replay(adder, "/nonexistent/history.json")


def test_replay_reports_a_changed_workflow() -> None:
    history = worker_run(adder, inputs=ADDER)

    @workflow(name="adder")
    def changed() -> Generator[Any, Any, int]:
        total = 0
        for i in range(3):
            total += yield ScheduleActivity(count, i if i < 2 else 7)
        return total

    with pytest.raises(NonDeterminismError, match="sequence number 3") as err:
        replay(changed, history)
    assert "arguments that differ" in str(err.value)
    assert replay(changed, history, check_args=False) == []


# --------------------------------------------------------------------------- assert_deterministic


def test_assert_deterministic_accepts_a_worker_history() -> None:
    assert_deterministic(adder, worker_run(adder, inputs=ADDER))
    assert_deterministic(adder, worker_run(adder, inputs=ADDER)[:-3])
    assert_deterministic(adder, encode_history(worker_run(adder, inputs=ADDER)))


def test_assert_deterministic_follows_seen_points() -> None:
    # A signal appended while decision b1 was being made: after its seen point.
    history = worker_run(subscription, "c", inputs=[])
    head = history[1]
    assert isinstance(head, WorkflowTaskCompleted) and head.seen == 1
    raced = SignalReceived(time=T0, name="cancel", payload=Json(text="null"))
    history = [history[0], with_index(raced, 1)] + [
        with_index(e, i + 1) for i, e in enumerate(history[1:], 1)
    ]
    assert_deterministic(subscription, history)
    assert [type(e) for e in replay(subscription, history)] == [TimerCancelled, WorkflowCompleted]


def test_assert_deterministic_raises_nondeterminism_from_scratch() -> None:
    history = worker_run(adder, inputs=ADDER)

    @workflow(name="adder")
    def changed() -> Generator[Any, Any, int]:
        yield Timer(5)
        return 0

    with pytest.raises(NonDeterminismError, match="sequence number 1"):
        assert_deterministic(changed, history)


def _tamper(history: list[Event], index: int, **fields: Any) -> list[Event]:
    out = list(history)
    out[index] = msgspec.structs.replace(out[index], **fields)
    return out


def test_assert_deterministic_catches_what_only_the_live_path_sees() -> None:
    # Replay checks commands by kind, type, sequence number and arguments; the live
    # path also sees the options and values a decision wrote.
    history = worker_run(adder, inputs=ADDER)
    i = next(n for n, e in enumerate(history) if isinstance(e, ActivityScheduled))
    tampered = _tamper(history, i, retry=RetryPolicy(maximum_attempts=9))
    replay(adder, tampered)  # from scratch, this passes
    with pytest.raises(AssertionError, match=rf"at event {i} .*maximum_attempts=9"):
        assert_deterministic(adder, tampered)

    last = len(history) - 1
    tampered = _tamper(history, last, result=Json(text="42"))
    with pytest.raises(AssertionError, match="WorkflowCompleted"):
        assert_deterministic(adder, tampered)

    head = max(n for n, e in enumerate(history) if isinstance(e, WorkflowTaskCompleted))
    tampered = _tamper(history, head, queries={"total": Json(text="-1")})
    with pytest.raises(AssertionError, match="queries"):
        assert_deterministic(adder, tampered)


def test_assert_deterministic_allows_side_effects_to_differ_when_rerun() -> None:
    counter = itertools.count()

    @workflow
    def lottery() -> Generator[Any, Any, Any]:
        n = yield SideEffect(lambda: next(counter))
        yield ScheduleActivity("draw", n)  # depends on the recorded value
        m = yield SideEffect(lambda: next(counter))
        return [n, m]

    history = worker_run(lottery, inputs=[[done(2, None)]])
    assert isinstance(history[-1], WorkflowCompleted)
    assert_deterministic(lottery, history)
    assert_deterministic(lottery, history[:-3])


# --------------------------------------------------------------------------- histories


def check_valid(history: list[Event]) -> None:
    """What every store-made history satisfies."""
    assert isinstance(history[0], WorkflowStarted)
    assert [e.index for e in history] == list(range(len(history)))
    last_seen = 0
    for i, e in enumerate(history):
        if isinstance(e, WorkflowTaskCompleted):
            assert last_seen <= e.seen <= i
            last_seen = e.seen
        if type(e) in CLOSING_EVENTS:
            assert i == len(history) - 1
    inputs = [e.time for e in history if type(e) not in DECISION_EVENTS]
    assert inputs == sorted(inputs)  # the world's clock never goes back


@FEW
@given(histories(subscription, "c1", signals={"cancel": st.none()}))
def test_histories_replay(history: list[Event]) -> None:
    check_valid(history)
    assert_deterministic(subscription, history)


@FEW
@given(histories(subscription, "c1", signals={"cancel": st.none()}))
def test_histories_follow_time_and_retry_rules(history: list[Event]) -> None:
    fire_at = {e.seq: e.fire_at for e in history if isinstance(e, TimerStarted)}
    for e in history:
        if isinstance(e, TimerFired):
            assert e.time == fire_at[e.seq]
    retry_at: dict[int, datetime] = {}
    attempts: dict[int, int] = {}
    for e in history:
        if isinstance(e, ActivityAttemptFailed):
            assert e.attempt == attempts.get(e.seq, 0) + 1
            assert e.attempt < 3  # the policy allows three attempts
            attempts[e.seq] = e.attempt
            retry_at[e.seq] = e.retry_at
        elif isinstance(e, ActivityCompleted | ActivityFailed):
            assert e.attempt == attempts.get(e.seq, 0) + 1
            assert e.seq not in retry_at or e.time >= retry_at[e.seq]
            if isinstance(e, ActivityFailed) and e.attempt < 3:
                assert e.error.non_retryable


@FEW
@given(histories(adder))
def test_histories_infer_result_types(history: list[Event]) -> None:
    for e in history:
        if isinstance(e, ActivityCompleted):
            assert isinstance(e.result, Json)
            value = msgspec.json.decode(e.result.text)
            assert isinstance(value, int) and not isinstance(value, bool)
    assert_deterministic(adder, history)


def test_histories_take_activities_for_result_types() -> None:
    @activity(name="measure")
    def local_measure() -> float:  # not in the workflow's module: passed explicitly
        return 1.5

    @workflow
    def measured() -> Generator[Any, Any, Any]:
        return (yield ScheduleActivity(local_measure))

    runs = examples(histories(measured, activities=[local_measure], failures=False), 20)
    values = [
        msgspec.json.decode(e.result.text)
        for h in runs
        for e in h
        if isinstance(e, ActivityCompleted) and isinstance(e.result, Json)
    ]
    assert values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    for h in runs:
        assert not any(isinstance(e, WorkflowFailed) for e in h)


@FEW
@given(histories(adder, results={"count": st.just(5)}, failures=False, cancel=False))
def test_histories_take_result_strategies_and_switches(history: list[Event]) -> None:
    kinds = {type(e) for e in history}
    assert not kinds & {ActivityFailed, ActivityAttemptFailed, CancelRequested}
    for e in history:
        if isinstance(e, ActivityCompleted):
            assert e.result == Json(text="5")
    if type(history[-1]) in CLOSING_EVENTS:
        assert history[-1] == WorkflowCompleted(
            time=history[-1].time, index=history[-1].index, result=Json(text="15")
        )


@FEW
@given(histories(adder, results={"count": st.text()}))
def test_results_that_do_not_fit_the_annotation_fail_the_run(history: list[Event]) -> None:
    assert_deterministic(adder, history)
    if any(isinstance(e, ActivityCompleted) for e in history):
        assert not isinstance(history[-1], WorkflowCompleted)


@FEW
@given(histories(parent))
def test_histories_drive_child_workflows(history: list[Event]) -> None:
    assert_deterministic(parent, history)


def examples(strategy: Any, n: int) -> list[list[Event]]:
    """``n`` generated examples (no shrinking; derandomised, so the test is stable)."""
    out: list[list[Event]] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(history: list[Event]) -> None:
        out.append(history)

    collect()
    return out


def test_histories_reach_every_kind_of_input() -> None:
    @workflow
    def busy() -> Generator[Any, Any, Any]:
        yield AnyOf(ScheduleActivity("a"), Timer(10), WaitSignal("s"), StartChildWorkflow("k"))
        yield ScheduleActivity("b")

    seen: set[type] = set()
    for history in examples(histories(busy, signals={"s": st.none()}), 300):
        seen |= {type(e) for e in history}
        assert_deterministic(busy, history)
    assert {
        ActivityCompleted,
        ActivityFailed,
        ActivityAttemptFailed,
        TimerFired,
        TimerCancelled,
        SignalReceived,
        CancelRequested,
        ChildWorkflowCompleted,
        ChildWorkflowFailed,
        WorkflowCompleted,
        WorkflowFailed,
    } <= seen


def test_histories_race_inputs_with_decisions() -> None:
    found = [
        h
        for h in examples(histories(subscription, "c", signals={"cancel": st.none()}), 100)
        if any(isinstance(e, WorkflowTaskCompleted) and e.seen < e.index for e in h)
    ]
    assert found
    for history in found:
        check_valid(history)
        assert_deterministic(subscription, history)


def test_histories_stop_after_max_steps() -> None:
    @workflow
    def forever() -> Generator[Any, Any, None]:
        while True:
            yield ScheduleActivity("tick")

    for h in examples(histories(forever, max_steps=0), 5):
        assert [type(e) for e in h] == [WorkflowStarted, WorkflowTaskCompleted, ActivityScheduled]
    for h in examples(histories(forever, max_steps=7, failures=False, cancel=False), 20):
        inputs = [e for e in h if isinstance(e, ActivityCompleted)]
        assert len(inputs) == 7
        assert [type(e) for e in replay(forever, h)] in ([], [ActivityScheduled])
        assert_deterministic(forever, h)


def test_histories_check_their_arguments() -> None:
    with pytest.raises(TypeError, match="not a workflow"):
        histories(charge)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_steps"):
        histories(adder, max_steps=-1)


def test_virtual_clock_is_deterministic() -> None:
    clock = VirtualClock()
    assert clock.now() == T0
    assert clock.advance(timedelta(days=1)) == T0 + timedelta(days=1)
