"""Worker, Client and engine.run end to end on the MemoryStore."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Generator, Sequence
from datetime import timedelta
from typing import Any

import pytest

import engine.testing as engine_testing
from engine import (
    ActivityError,
    All,
    CancelledError,
    ChildWorkflowError,
    Client,
    ContinueAsNew,
    IdReusePolicy,
    NonDeterminismError,
    RetryPolicy,
    ScheduleActivity,
    SetQuery,
    StartChildWorkflow,
    Status,
    Timer,
    VirtualClock,
    WaitSignal,
    Worker,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    activity,
    activity_context,
    run,
    workflow,
)
from engine.events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    Json,
    SignalReceived,
    TimerCancelled,
    WorkflowTaskCompleted,
)
from stores import AppendBatch, AppendResult, MemoryStore

Gen = Generator[Any, Any, Any]


@dataclasses.dataclass
class Order:
    sku: str
    cents: int


@activity
def price(order: Order) -> Order:
    assert isinstance(order, Order)  # arrives as the annotated dataclass
    return Order(order.sku, order.cents * 2)


@workflow
def pricing(order: Order) -> Generator[Any, Any, Order]:
    doubled = yield ScheduleActivity(price, order)
    assert isinstance(doubled, Order)
    return doubled


def setup(
    *workflows: Any, activities: Sequence[Any] = (), **options: Any
) -> tuple[MemoryStore, Client, Worker, VirtualClock]:
    clock = VirtualClock()
    store = MemoryStore()
    client = Client(store, clock=clock)
    worker = Worker(store, workflows=workflows, activities=activities, clock=clock, **options)
    return store, client, worker, clock


def test_dataclass_arguments_and_results_round_trip() -> None:
    _, client, worker, _ = setup(pricing, activities=[price])
    wid = client.start(pricing, Order("x", 5))
    worker.run_until_idle()
    assert client.result(wid) == {"sku": "x", "cents": 10}
    assert client.result(wid, type=Order) == Order("x", 10)
    assert run(pricing, Order("y", 1)) == Order("y", 2)


calls: Counter[str] = Counter()


@activity
def flaky(key: str, failures: int) -> str:
    calls[key] += 1
    ctx = activity_context()
    if ctx.attempt <= failures:
        raise ConnectionError(f"attempt {ctx.attempt} of {key}")
    return f"{key} ok after {ctx.attempt} ({ctx.idempotency_key})"


@workflow
def retrying(key: str, failures: int, attempts: int) -> Gen:
    policy = RetryPolicy(initial_interval=timedelta(seconds=10), maximum_attempts=attempts)
    return (yield ScheduleActivity(flaky, key, failures, retry=policy))


def test_retries_wait_durably_and_survive_a_worker_restart() -> None:
    store, client, worker, clock = setup(retrying, activities=[flaky])
    wid = client.start(retrying, "r1", 2, 5)
    worker.run_until_idle()
    history = client.history(wid)
    failed = [e for e in history if isinstance(e, ActivityAttemptFailed)]
    assert [(e.attempt, e.retry_at - clock.now()) for e in failed] == [(1, timedelta(seconds=10))]
    assert failed[0].error.type == "ConnectionError"
    assert client.describe(wid).due == clock.now() + timedelta(seconds=10)
    # a new worker (the old one "crashed") picks the retry up when it is due
    fresh = Worker(store, workflows=[retrying], activities=[flaky], clock=clock)
    fresh.run_until_idle()
    assert calls["r1"] == 1
    fresh.run_until_idle(skip_time=True)
    result = client.result(wid)
    assert result.startswith("r1 ok after 3")
    assert result.endswith(f"({wid}/{client.describe(wid).run_id}/1)")  # stable across attempts
    assert calls["r1"] == 3
    retries = [e for e in client.history(wid) if isinstance(e, ActivityAttemptFailed)]
    assert [e.retry_at - e.time for e in retries] == [timedelta(seconds=10), timedelta(seconds=20)]


def test_retries_exhausted_throw_activity_error() -> None:
    _, client, worker, _ = setup(retrying, activities=[flaky])
    wid = client.start(retrying, "r2", 9, 3)
    worker.run_until_idle(skip_time=True)
    with pytest.raises(WorkflowFailedError) as info:
        client.result(wid)
    assert "ActivityError" in str(info.value)
    assert "ConnectionError" in str(info.value)
    final = [e for e in client.history(wid) if isinstance(e, ActivityFailed)]
    assert final[0].attempt == 3 and calls["r2"] == 3


class InsufficientFunds(Exception):
    pass


@activity
def withdraw(cents: int) -> None:
    calls["withdraw"] += 1
    raise InsufficientFunds(f"cannot withdraw {cents}")


@workflow
def transfer(cents: int) -> Gen:
    try:
        yield ScheduleActivity(
            withdraw, cents, retry=RetryPolicy(non_retryable=("InsufficientFunds",))
        )
    except ActivityError as err:
        return f"refused: {err.type}: {err.message} after {err.attempt}"
    return "done"


def test_non_retryable_errors_fail_at_once() -> None:
    _, client, worker, _ = setup(transfer, activities=[withdraw])
    calls["withdraw"] = 0
    wid = client.start(transfer, 100)
    worker.run_until_idle(skip_time=True)
    assert client.result(wid) == (
        "refused: tests.test_worker.InsufficientFunds: cannot withdraw 100 after 1"
    )
    assert calls["withdraw"] == 1


@activity
def slow(seconds: float) -> str:
    ctx = activity_context()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    return "slow done"


@workflow
def impatient(seconds: float) -> Gen:
    try:
        return (
            yield ScheduleActivity(
                slow, seconds, start_to_close=0.05, retry=RetryPolicy(maximum_attempts=1)
            )
        )
    except ActivityError as err:
        return f"{err.type}: {err.message}"


def test_start_to_close_timeout_inline() -> None:
    _, client, worker, _ = setup(impatient, activities=[slow])
    wid = client.start(impatient, 0.2)
    worker.run_until_idle()
    assert client.result(wid).startswith("TimeoutError: start_to_close timeout")


def test_start_to_close_timeout_threaded_run() -> None:
    store, client, _, _ = setup()
    worker = Worker(store, workflows=[impatient], activities=[slow], poll_interval=0.01)
    wid = client.start(impatient, 5)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert client.result(wid, timeout=10).startswith("TimeoutError")
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


@activity
def progress(total: int) -> list[Any]:
    ctx = activity_context()
    start = ctx.heartbeat_details or 0
    seen = [start]
    for i in range(start, total):
        ctx.heartbeat(i + 1)
        if ctx.attempt == 1 and i == 2:
            raise RuntimeError("crashed half way")
    return seen


@workflow
def resumable(total: int) -> Gen:
    return (yield ScheduleActivity(progress, total, retry=RetryPolicy(maximum_attempts=2)))


def test_heartbeat_details_reach_the_next_attempt() -> None:
    _, client, worker, _ = setup(resumable, activities=[progress])
    wid = client.start(resumable, 5)
    worker.run_until_idle(skip_time=True)
    # throttled heartbeats are flushed when the attempt fails: the retry resumes at 3
    assert client.result(wid) == [3]


@activity
async def fetch(url: str) -> str:
    await asyncio.sleep(0)
    return f"<{url}>"


@workflow
def crawler(urls: list[str]) -> Gen:
    pages = yield All(*[ScheduleActivity(fetch, u) for u in urls])
    return pages


def test_async_activities_inline_and_threaded() -> None:
    store, client, worker, _ = setup(crawler, activities=[fetch])
    wid = client.start(crawler, ["a", "b"])
    worker.run_until_idle()
    assert client.result(wid) == ["<a>", "<b>"]
    threaded = Worker(store, workflows=[crawler], activities=[fetch], poll_interval=0.01)
    wid2 = client.start(crawler, ["c"])
    thread = threading.Thread(target=threaded.run)
    thread.start()
    try:
        assert client.result(wid2, timeout=10) == ["<c>"]
    finally:
        threaded.stop()
        thread.join(10)


@workflow
def waiter() -> Gen:
    got = []
    try:
        while True:
            value = yield WaitSignal("item")
            got.append(value)
            yield SetQuery("items", got)
    finally:
        yield ScheduleActivity(compensate, len(got))


@activity
def compensate(n: int) -> None:
    calls["compensate"] += n


def test_signals_queries_cancel_and_compensation() -> None:
    _, client, worker, _ = setup(waiter, activities=[compensate])
    calls["compensate"] = 0
    wid = client.start(waiter, id="w-1")
    client.signal(wid, "item", {"n": 1})
    client.signal(wid, "item", {"n": 2})
    worker.run_until_idle()
    assert client.query(wid, "items") == [{"n": 1}, {"n": 2}]
    with pytest.raises(KeyError):
        client.query(wid, "nothing")
    client.cancel(wid, "user asked")
    worker.run_until_idle()
    with pytest.raises(CancelledError):
        client.result(wid)
    assert client.describe(wid).status is Status.CANCELLED
    assert calls["compensate"] == 2
    with pytest.raises(WorkflowAlreadyClosedError):
        client.signal(wid, "item", 3)
    with pytest.raises(WorkflowNotFoundError):
        client.signal("no-such-id", "item", 3)
    with pytest.raises(TypeError):
        client.signal(wid, "item", object())


def test_terminate_and_id_reuse() -> None:
    _, client, worker, _ = setup(waiter, activities=[compensate])
    wid = client.start(waiter, id="same")
    with pytest.raises(WorkflowAlreadyStartedError):
        client.start(waiter, id="same")
    client.terminate(wid, "ops says so")
    worker.run_until_idle()
    with pytest.raises(WorkflowFailedError, match="ops says so"):
        client.result(wid)
    first = client.describe(wid).run_id
    client.start(waiter, id="same", id_reuse=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    assert client.describe("same").run_id != first
    client.start(waiter, id="same", id_reuse=IdReusePolicy.TERMINATE_IF_RUNNING)
    assert len([i for i in client.list() if i.id == "same"]) == 3
    assert client.list(status=Status.RUNNING)[0].id == "same"
    with pytest.raises(WorkflowAlreadyStartedError):
        client.start(waiter, id="same", id_reuse=IdReusePolicy.REJECT_DUPLICATE)


@workflow
def child(n: int) -> Gen:
    yield Timer(5)
    if n < 0:
        raise ValueError("negative")
    return n * 10


@workflow
def parent(ns: list[int]) -> Gen:
    out = []
    for n in ns:
        try:
            out.append((yield StartChildWorkflow(child, n)))
        except ChildWorkflowError as err:
            out.append(f"{err.type}: {err.message}")
    return out


def test_child_workflows() -> None:
    _, client, worker, _ = setup(parent, child)
    wid = client.start(parent, [1, -1, 2])
    worker.run_until_idle(skip_time=True)
    assert client.result(wid) == [10, "ValueError: negative", 20]
    children = [i for i in client.list(type="child")]
    assert len(children) == 3 and all(i.parent and i.parent.workflow_id == wid for i in children)


@workflow
def counter(n: int, total: int) -> Gen:
    yield Timer(1)
    if n < 3:
        yield ContinueAsNew(n + 1, total + n)
    return total + n


def test_continue_as_new_chains_and_result_follows() -> None:
    _, client, worker, _ = setup(counter)
    wid = client.start(counter, 0, 0)
    worker.run_until_idle(skip_time=True)
    assert client.result(wid) == 6
    runs = [i for i in client.list(type="counter")]
    assert sorted(i.status.value for i in runs) == ["COMPLETED"] + ["CONTINUED_AS_NEW"] * 3
    assert client.history(wid)[0].continued_from is not None


def test_unknown_types_block_the_run_until_fixed_code_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, client, _, clock = setup()
    wid = client.start("pricing", {"sku": "s", "cents": 2})
    stranger = Worker(store, workflows=[retrying], activities=[flaky], clock=clock)
    with caplog.at_level("WARNING", logger="temporalpp.worker"):
        stranger.run_until_idle(skip_time=True)
    assert f"workflow {wid} run" in caplog.text and "not registered" in caplog.text
    info = client.describe(wid)
    assert info.status is Status.RUNNING and "not registered" in (info.blocked or "")
    half = Worker(store, workflows=[pricing], clock=clock)  # knows the workflow, not the activity
    clock.advance(120)
    half.run_until_idle()
    assert "activity type 'price'" in (client.describe(wid).blocked or "")
    fixed = Worker(store, workflows=[pricing], activities=[price], clock=clock)
    clock.advance(120)
    fixed.run_until_idle()
    assert client.result(wid) == {"sku": "s", "cents": 4}
    assert client.describe(wid).blocked is None


def test_non_determinism_blocks_and_fixed_code_resumes() -> None:
    @workflow(name="evolving")
    def v1() -> Gen:
        yield Timer(10)
        yield Timer(10)
        return "v1"

    @workflow(name="evolving")
    def v2() -> Gen:
        yield ScheduleActivity(compensate, 0)
        return "v2"

    store, client, worker, clock = setup(v1)
    wid = client.start("evolving")
    worker.run_until_idle()
    bad = Worker(store, workflows=[v2], activities=[compensate], clock=clock)
    clock.advance(10)
    bad.run_until_idle()
    info = client.describe(wid)
    assert info.status is Status.RUNNING and "not deterministic" in (info.blocked or "")
    good = Worker(store, workflows=[v1], clock=clock)
    good.run_until_idle(skip_time=True)
    assert client.result(wid) == "v1"
    with pytest.raises(NonDeterminismError):
        raise NonDeterminismError  # the error type is public and catchable


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.appends: list[list[str]] = []

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        self.appends.extend([type(e).__name__ for e in b.events] for b in batches)
        return super().append(batches)


@activity
def step(i: int) -> int:
    return i


@workflow
def sequential(n: int) -> Gen:
    total = 0
    for i in range(n):
        total += yield ScheduleActivity(step, i)
    return total


def test_one_durable_write_per_activity_and_cache_eviction_replays() -> None:
    store = CountingStore()
    client = Client(store)
    worker = Worker(store, workflows=[sequential], activities=[step], cache_size=1)
    a = client.start(sequential, 10)
    b = client.start(sequential, 10)
    worker.run_until_idle()
    assert client.result(a) == client.result(b) == 45
    per_run = len(store.appends) / 2
    assert per_run == 11  # first decision + one (result + next decision) per activity
    assert all(
        batch[0] == "ActivityCompleted" and batch[1] == "WorkflowTaskCompleted"
        for batch in store.appends
        if batch[0] == "ActivityCompleted"
    )


def test_two_workers_with_different_registries_in_one_process() -> None:
    store, client, _, clock = setup()
    w1 = Worker(store, workflows=[pricing], activities=[price], clock=clock, task_queue="q1")
    w2 = Worker(store, workflows=[sequential], activities=[step], clock=clock, task_queue="q2")
    a = client.start(pricing, Order("a", 1), task_queue="q1")
    b = client.start(sequential, 3, task_queue="q2")
    w2.run_until_idle()
    w1.run_until_idle()
    assert client.result(a) == {"sku": "a", "cents": 2} and client.result(b) == 3


def test_any_timer_loser_is_cancelled_and_run_closes() -> None:
    @workflow
    def deadline() -> Gen:
        got = yield WaitSignal("approve", timeout=timedelta(days=14))
        return got

    _, client, worker, _ = setup(deadline)
    wid = client.start(deadline)
    worker.run_until_idle()
    client.signal(wid, "approve", "yes")
    worker.run_until_idle()
    assert client.result(wid) == "yes"
    assert any(isinstance(e, TimerCancelled) for e in client.history(wid))
    assert client.describe(wid).due is None


def test_bad_input_is_refused_before_anything_is_stored() -> None:
    store, client, _, _ = setup()
    with pytest.raises(TypeError, match="cannot be serialised"):
        client.start(pricing, object())
    with pytest.raises(TypeError, match="not a workflow"):
        client.start(price, Order("x", 1))  # an activity is not a workflow
    with pytest.raises(TypeError):
        client.start(pricing, Order("x", 1), id=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a workflow"):
        run(price, Order("x", 1))  # type: ignore[arg-type]
    assert store.list().items == []
    with pytest.raises(TypeError):
        Worker(store, workflows=[price])


def test_result_timeout_and_engine_run_of_a_failing_workflow() -> None:
    @workflow
    def boom() -> Gen:
        yield Timer(1)
        raise RuntimeError("kaput")

    _, client, _, _ = setup()
    wid = client.start(boom)
    with pytest.raises(TimeoutError, match="is a worker running"):
        client.result(wid, timeout=0.01)
    with pytest.raises(WorkflowFailedError, match="RuntimeError: kaput") as info:
        run(boom, clock=VirtualClock())
    assert info.value.__cause__ is not None and "kaput" in str(info.value.__cause__)


def test_history_decisions_record_what_they_saw() -> None:
    _, client, worker, _ = setup(sequential, activities=[step])
    wid = client.start(sequential, 2)
    worker.run_until_idle()
    history = client.history(wid)
    for i, ev in enumerate(history):
        assert ev.index == i
        if isinstance(ev, WorkflowTaskCompleted):
            assert ev.seen <= i
    assert sum(isinstance(e, ActivityCompleted) for e in history) == 2


@activity
def silent(seconds: float) -> str:
    time.sleep(seconds)
    return "finished without heartbeats"


@workflow
def watched() -> Gen:
    try:
        return (
            yield ScheduleActivity(
                silent, 0.3, heartbeat_timeout=0.05, retry=RetryPolicy(maximum_attempts=1)
            )
        )
    except ActivityError as err:
        return err.message


def test_heartbeat_timeout_fails_a_silent_attempt() -> None:
    store, client, _, _ = setup()
    worker = Worker(store, workflows=[watched], activities=[silent], poll_interval=0.01)
    wid = client.start(watched)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert "heartbeat_timeout" in client.result(wid, timeout=10)
    finally:
        worker.stop()
        thread.join(10)


@workflow
def bounded() -> Gen:
    try:
        yield ScheduleActivity(flaky, "bounded", 99, schedule_to_close=timedelta(seconds=25))
    except ActivityError as err:
        return err.attempt


def test_schedule_to_close_bounds_all_retries() -> None:
    _, client, worker, _ = setup(bounded, activities=[flaky])
    wid = client.start(bounded)
    worker.run_until_idle(skip_time=True)
    # retries after 1, 2, 4, 8 s fit in 25 s; the next (16 s later) would not
    assert client.result(wid) == 5


GRACEFUL = r"""
import sys, threading, time
from engine import Client, Worker, workflow, activity, ScheduleActivity
from stores import MemoryStore

@activity
def long_job(n: int) -> str:
    print("activity started", flush=True)
    time.sleep(0.5)
    return f"job {n} done"

@workflow
def job(n: int):
    return (yield ScheduleActivity(long_job, n))

store = MemoryStore()
client = Client(store)
wid = client.start(job, 7)
Worker(store, workflows=[job], activities=[long_job], poll_interval=0.01).run()
events = [type(e).__name__ for e in client.history(wid)]
print("after run:", events, client.describe(wid).status.value, flush=True)
"""


def test_sigterm_is_graceful(tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "graceful.py"
    script.write_text(GRACEFUL)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "activity started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    # the running activity finished and its outcome was recorded before the worker let go
    assert "ActivityCompleted" in out and "COMPLETED" in out


class CallCountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        self.calls.append(len(batches))
        return super().append(batches)


def test_outcomes_of_many_runs_are_group_committed() -> None:
    store = CallCountingStore()
    client = Client(store)
    worker = Worker(store, workflows=[sequential], activities=[step])
    ids = [client.start(sequential, 3) for _ in range(10)]
    worker.run_until_idle()
    assert [client.result(wid) for wid in ids] == [3] * 10
    # each round's outcomes (one per run) and the decisions they trigger: one call
    assert max(store.calls) == 10
    assert store.calls == [10, 10, 10, 10]  # the first decisions, then one per round


class RacingStore(MemoryStore):
    """Slips a signal in just before the worker's next append of a given shape."""

    def __init__(self, first_kind: str) -> None:
        super().__init__()
        self.first_kind = first_kind
        self.raced = 0

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        for b in batches:
            first = type(b.events[0]).__name__ if b.events else ""
            if self.raced == 0 and b.expected_length is not None and first == self.first_kind:
                self.raced += 1
                signal = SignalReceived(time=b.events[0].time, name="go", payload=Json(text="10"))
                super().append(
                    [AppendBatch(workflow_id=b.workflow_id, run_id=b.run_id, events=[signal])]
                )
        return super().append(batches)


@workflow
def racer() -> Gen:
    x = yield ScheduleActivity(step, 1)
    s = yield WaitSignal("go")
    return x + s


@pytest.mark.parametrize("first_kind", ["ActivityCompleted", "WorkflowTaskCompleted"])
def test_a_signal_racing_an_append_is_never_lost_nor_duplicated(first_kind: str) -> None:
    # ActivityCompleted: the coalesced (outcome + decision) batch must land exactly where
    # it was made, so the race is a ConflictError and the worker decides again;
    # WorkflowTaskCompleted: a plain decision lands after the signal and the cache is reread.
    store = RacingStore(first_kind)
    client = Client(store)
    wid = client.start(racer)
    Worker(store, workflows=[racer], activities=[step]).run_until_idle()
    assert store.raced == 1
    assert client.result(wid) == 11
    history = client.history(wid)
    assert sum(isinstance(e, ActivityCompleted) for e in history) == 1
    assert sum(isinstance(e, SignalReceived) for e in history) == 1
    engine_testing.assert_deterministic(racer, history)
