"""``stores.copy``: every run between any two backends, identical encoded histories.

A memory store is filled with every shape a history can take (children, a
running parent whose child finished, continue-as-new chains, retries, timers,
failures, terminations, signals, hostile ids), then copied memory -> file ->
sqlite -> file, and every run must read back byte for byte as encoded events.
"""

from __future__ import annotations

import doctest
import pathlib
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

import stores
import stores._copy
from engine import (
    Client,
    ContinueAsNew,
    RetryPolicy,
    ScheduleActivity,
    StartChildWorkflow,
    Status,
    Timer,
    VirtualClock,
    WaitSignal,
    Worker,
    WorkflowAlreadyStartedError,
    activity,
    workflow,
)
from engine.events import WorkflowStarted, encode_event
from stores import MemoryStore, Store
from stores.file import FileStore
from stores.sqlite import SQLiteStore

QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


class Flaky(Exception): ...


_calls: dict[str, int] = {}


@activity
def work(name: str) -> str:
    return f"done {name}"


@activity
def twice_flaky(name: str) -> str:
    _calls[name] = _calls.get(name, 0) + 1
    if _calls[name] < 3:
        raise Flaky(f"attempt {_calls[name]} of {name}")
    return f"finally {name}"


@activity
def always_fails(name: str) -> str:
    raise Flaky(f"{name} never works")


@workflow
def child(n: int) -> Generator[Any, Any, int]:
    yield Timer(timedelta(minutes=n))
    return n * 10


@workflow
def parent(n: int, wait: bool) -> Generator[Any, Any, int]:
    total = 0
    for i in range(n):
        total += yield StartChildWorkflow(child, i + 1)
    if wait:  # stays running with its children's outcomes recorded
        yield WaitSignal("finish")
    return total


@workflow
def counter(n: int, limit: int) -> Generator[Any, Any, int]:
    yield ScheduleActivity(work, f"step {n}")
    if n < limit:
        yield ContinueAsNew(n + 1, limit)
    return n


@workflow
def retrying(name: str) -> Generator[Any, Any, str]:
    got = yield ScheduleActivity(twice_flaky, name, retry=QUICK)
    return str(got)


@workflow
def failing(name: str) -> Generator[Any, Any, str]:
    return str((yield ScheduleActivity(always_fails, name, retry=QUICK)))


@workflow
def waiting(name: str) -> Generator[Any, Any, Any]:
    return (yield WaitSignal("go", timeout=timedelta(days=3)))


WORKFLOWS = [child, parent, counter, retrying, failing, waiting]
ACTIVITIES = [work, twice_flaky, always_fails]
ODD_IDS = ["Order #1 (ACME/EU)", "../etc/passwd", "ünïcödé ☃", "x" * 300, "CON"]


def populate(store: Store) -> None:
    """A store holding every kind of run (on a virtual clock)."""
    _calls.clear()
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, WORKFLOWS, ACTIVITIES, clock=clock)
    client.start(parent, 2, False, id="parent-done")
    client.start(parent, 2, True, id="parent-waiting")
    client.start(counter, 1, 3, id="chain")
    client.start(retrying, "r", id="retrying")
    client.start(failing, "f", id="failing")
    client.start(waiting, "w", id="signalled")
    client.start(waiting, "t", id="terminated")
    client.start(waiting, "s", id="still-waiting")
    for wid in ODD_IDS:
        client.start(waiting, wid, id=wid)
    worker.run_until_idle()
    client.signal("signalled", "go", {"ok": True})
    client.terminate("terminated", "no longer wanted")
    client.signal(ODD_IDS[0], "go", [1, 2, 3])
    worker.run_until_idle()
    for _ in range(3):  # children's timers fire one after the other; retries are retried
        clock.advance(timedelta(hours=1))
        worker.run_until_idle()
    # a second, closed-then-restarted id: two separate runs of one id
    client.start(counter, 9, 9, id="restarted")
    worker.run_until_idle()
    client.start(counter, 10, 10, id="restarted")
    worker.run_until_idle()
    assert client.describe("parent-waiting").status is Status.RUNNING
    assert client.describe("parent-done").status is Status.COMPLETED
    assert client.describe("failing").status is Status.FAILED
    assert client.describe("retrying").status is Status.COMPLETED
    assert client.describe("chain").status is Status.COMPLETED
    assert client.describe("still-waiting").status is Status.RUNNING


def snapshot(store: Store) -> dict[tuple[str, str], list[bytes]]:
    """Every run's encoded events, by (workflow id, run id)."""
    return {
        (info.id, info.run_id): [encode_event(ev) for ev in store.read(info.id, info.run_id)]
        for info in store.runs()
    }


def latest(store: Store) -> dict[str, tuple[str, Status]]:
    out = {}
    for info in store.runs():
        d = store.describe(info.id)
        out[info.id] = (d.run_id, d.status)
    return out


def test_round_trip_memory_file_sqlite_file(tmp_path: pathlib.Path) -> None:
    memory = MemoryStore()
    populate(memory)
    want = snapshot(memory)
    want_latest = latest(memory)
    assert len(want) > 20
    assert sum(1 for wid, _ in want if wid == "chain") == 3
    with (
        FileStore(tmp_path / "files1", durability="none") as files1,
        SQLiteStore(tmp_path / "db.sqlite", durability="none") as db,
        FileStore(tmp_path / "files2", durability="none") as files2,
    ):
        for src, dst in [(memory, files1), (files1, db), (db, files2)]:
            report = stores.copy(src, dst)
            assert report.runs == report.copied == len(want)
            assert report.skipped == report.resumed == 0
            assert report.workflows == len(want_latest)
            assert snapshot(dst) == want
            assert latest(dst) == want_latest
            for info in src.runs():
                theirs = dst.describe(info.id, info.run_id)
                assert theirs.status is info.status
                assert theirs.parent == info.parent
                assert theirs.history_length == info.history_length
    # the copy is a working store: the waiting parent finishes there
    with FileStore(tmp_path / "files2", durability="none") as again:
        clock = VirtualClock()
        Client(again, clock=clock).signal("parent-waiting", "finish")
        Worker(again, WORKFLOWS, ACTIVITIES, clock=clock).run_until_idle()
        assert Client(again).result("parent-waiting", timeout=5) == 30
        # children's outcomes were not delivered twice to the running parent
        kinds = [type(ev).__name__ for ev in again.read("parent-waiting")]
        assert kinds.count("ChildWorkflowCompleted") == 2


def test_copy_again_skips_identical_runs_and_resumes_a_prefix() -> None:
    src, dst = MemoryStore(), MemoryStore()
    populate(src)
    stores.copy(src, dst)
    report = stores.copy(src, dst)
    assert report.copied == report.resumed == report.events == 0
    assert report.skipped == report.runs

    # an interrupted copy: the destination holds a prefix of one run
    partial = MemoryStore()
    events = src.read("retrying")
    started = events[0]
    assert isinstance(started, WorkflowStarted)
    partial.create(started)
    partial.append(
        [stores.AppendBatch(workflow_id="retrying", run_id=started.run_id, events=events[1:3])]
    )
    report = stores.copy(src, partial)
    assert report.resumed == 1 and report.copied == report.runs - 1
    assert snapshot(partial) == snapshot(src)


def test_a_different_run_in_the_destination_is_refused_before_anything_is_written() -> None:
    src, dst = MemoryStore(), MemoryStore()
    populate(src)
    Client(dst).start(waiting, "other", id="still-waiting")  # another run of the same id
    with pytest.raises(WorkflowAlreadyStartedError, match=r"still-waiting.*nothing was copied"):
        stores.copy(src, dst)
    assert len(list(dst.runs())) == 1

    dst2 = MemoryStore()
    events = src.read("signalled")
    started = events[0]
    assert isinstance(started, WorkflowStarted)
    dst2.create(started)  # same run id, then a different event
    dst2.append(
        [
            stores.AppendBatch(
                workflow_id="signalled",
                run_id=started.run_id,
                events=[events[1], events[2], events[2]],
            )
        ]
    )
    with pytest.raises(WorkflowAlreadyStartedError, match="different history"):
        stores.copy(src, dst2)
    assert len(list(dst2.runs())) == 1


def test_progress_is_reported_per_run() -> None:
    src = MemoryStore()
    populate(src)
    seen: list[tuple[int, int]] = []
    stores.copy(src, MemoryStore(), progress=lambda done, total: seen.append((done, total)))
    total = len(list(src.runs()))
    assert seen == [(n, total) for n in range(1, total + 1)]


def test_copy_order_puts_children_of_running_parents_first() -> None:
    src = MemoryStore()
    populate(src)
    infos = list(src.runs())
    order = stores._copy.copy_order(infos, {i.id: src.describe(i.id).run_id for i in infos})
    position = {(i.id, i.run_id): n for n, i in enumerate(order)}
    for info in order:
        if info.parent is not None and info.parent.workflow_id == "parent-waiting":
            assert (
                position[(info.id, info.run_id)]
                < position[(info.parent.workflow_id, info.parent.run_id)]
            )
    chain = [i.run_id for i in order if i.id == "restarted"]
    assert chain[-1] == src.describe("restarted").run_id


def test_doctests() -> None:
    result = doctest.testmod(stores._copy)
    assert result.failed == 0 and result.attempted > 0
