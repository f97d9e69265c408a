"""Client and Worker on AzureBlobStore (Azurite): sequential activities, retries, timers,
signals and cancellation, children, continue-as-new, ``run()`` in a thread, and two
handles (as two processes) sharing one container's work.

The workflows are ``tests/test_worker.py``'s, run here on the Azure store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from engine import CancelledError, Client, Status, VirtualClock, Worker, WorkflowFailedError
from engine.events import ActivityCompleted, WorkflowTaskCompleted
from stores.azure import AzureBlobStore
from tests import test_worker as w
from tests.azurite import Azurite
from tests.test_store_azure import make


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.new_container("wk")


@pytest.fixture
def store(azurite: Azurite, container: str) -> Iterator[AzureBlobStore]:
    with make(azurite, container) as handle:
        yield handle


def setup(store: AzureBlobStore, *workflows: Any, activities: Any = ()) -> tuple[
    Client, Worker, VirtualClock
]:  # fmt: skip
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, workflows=workflows, activities=activities, clock=clock)
    return client, worker, clock


def test_sequential_activities_one_append_each(store: AzureBlobStore) -> None:
    client, worker, _ = setup(store, w.pricing, activities=[w.price])
    wid = client.start(w.pricing, w.Order("x", 5))
    worker.run_until_idle()
    assert client.result(wid, type=w.Order) == w.Order("x", 10)
    history = client.history(wid)
    assert [type(e).__name__ for e in history] == [
        "WorkflowStarted",
        "WorkflowTaskCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowTaskCompleted",
        "WorkflowCompleted",
    ]


def test_retries_timers_and_a_fresh_worker(store: AzureBlobStore) -> None:
    client, worker, clock = setup(store, w.retrying, activities=[w.flaky])
    w.calls["az"] = 0
    wid = client.start(w.retrying, "az", 2, 5)
    worker.run_until_idle()
    assert w.calls["az"] == 1
    fresh = Worker(store, workflows=[w.retrying], activities=[w.flaky], clock=clock)
    fresh.run_until_idle(skip_time=True)
    assert client.result(wid).startswith("az ok after 3")


def test_signals_queries_and_cancellation(store: AzureBlobStore) -> None:
    client, worker, _ = setup(store, w.waiter, activities=[w.compensate])
    w.calls["compensate"] = 0
    wid = client.start(w.waiter, id="w-1")
    client.signal(wid, "item", {"n": 1})
    client.signal(wid, "item", {"n": 2})
    worker.run_until_idle()
    assert client.query(wid, "items") == [{"n": 1}, {"n": 2}]
    client.cancel(wid, "user asked")
    worker.run_until_idle()
    with pytest.raises(CancelledError):
        client.result(wid)
    assert w.calls["compensate"] == 2


def test_terminate_children_and_continue_as_new(store: AzureBlobStore) -> None:
    client, worker, _ = setup(store, w.parent, w.child, w.counter)
    kids = client.start(w.parent, [1, -1, 2])
    chain = client.start(w.counter, 0, 0)
    worker.run_until_idle(skip_time=True)
    assert client.result(kids) == [10, "ValueError: negative", 20]
    children = client.list(type="child")
    assert len(children) == 3 and all(i.parent and i.parent.workflow_id == kids for i in children)
    assert client.result(chain) == 6
    statuses = sorted(i.status.value for i in client.list(type="counter"))
    assert statuses == ["COMPLETED"] + ["CONTINUED_AS_NEW"] * 3
    victim = client.start(w.waiter)
    client.terminate(victim, "ops says so")
    with pytest.raises(WorkflowFailedError, match="ops says so"):
        client.result(victim)


def test_worker_run_in_a_thread_and_a_client_on_another_handle(
    azurite: Azurite, container: str
) -> None:
    """A worker's ``run()`` on one handle, a client on another (two processes' view)."""
    with make(azurite, container, poll_interval=0.05) as mine, make(azurite, container) as theirs:
        worker = Worker(mine, workflows=[w.pricing, w.waiter], activities=[w.price, w.compensate],
                        poll_interval=0.02)  # fmt: skip
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            client = Client(theirs)
            ids = [client.start(w.pricing, w.Order(str(i), i)) for i in range(5)]
            waiting = client.start(w.waiter)
            assert [client.result(i, timeout=30)["cents"] for i in ids] == [0, 2, 4, 6, 8]
            client.signal(waiting, "item", 1)
            deadline = time.monotonic() + 30
            while not any(
                isinstance(e, WorkflowTaskCompleted) and e.seen >= 2
                for e in client.history(waiting)
            ):
                assert time.monotonic() < deadline, client.history(waiting)
                time.sleep(0.05)
            client.cancel(waiting)
            with pytest.raises(CancelledError):
                client.result(waiting, timeout=30)
        finally:
            worker.stop()
            thread.join(timeout=30)
        assert not thread.is_alive()
        for wid in ids:
            completed = [e for e in client.history(wid) if isinstance(e, ActivityCompleted)]
            assert len(completed) == 1
        assert theirs.list().counts == {Status.COMPLETED: 5, Status.CANCELLED: 1}
