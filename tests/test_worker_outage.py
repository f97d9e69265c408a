"""``Worker.run()`` rides out a failing store: outages, lost replies, a stop mid-outage.

The store is a ``MemoryStore`` whose calls raise ``StoreError`` while it is
"down", and whose appends can land and still raise (a lost reply).  The worker
must keep running, record every activity outcome exactly once, and never run an
activity again after its completion was durable.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

import pytest

from engine import Client, ScheduleActivity, Status, StoreError, Worker, activity, workflow
from engine.events import ActivityCompleted, WorkflowCompleted
from engine.testing import assert_deterministic
from stores import AppendBatch, AppendResult, MemoryStore
from stores._protocol import Claims, RunRef

Gen = Generator[Any, Any, Any]


class FlakyStore(MemoryStore):
    """Down while ``down`` is set; with an ``rng``, also for 1-6 calls (seeded) every 40
    calls, and every 5th append lands but its caller sees an error (a lost reply)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__()
        self.down = threading.Event()
        self.rng = rng
        self.outage = 0  # calls left in the current outage (one starts every 40 calls)
        self.calls = self.appends = 0
        self.failures: Counter[str] = Counter()
        self.durable: set[tuple[str, int]] = set()
        self._mu = threading.Lock()

    def _gate(self, call: str) -> None:
        with self._mu:
            self.calls += 1
            if self.rng is not None and not self.outage and self.calls % 40 == 0:
                self.outage = self.rng.randint(1, 6)
                self.failures["outages"] += 1
            if self.outage:
                self.outage -= 1
                self.failures[call] += 1
                raise StoreError(f"simulated outage in {call}")
        if self.down.is_set():
            self.failures[call] += 1
            raise StoreError(f"simulated outage in {call}")

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        self._gate("append")
        results = super().append(batches)
        with self._mu:
            for batch, result in zip(batches, results, strict=True):
                if result.error is None:
                    for ev in batch.events:
                        if isinstance(ev, ActivityCompleted):
                            self.durable.add((batch.workflow_id, ev.seq))
            self.appends += 1
            if self.rng is not None and self.appends % 5 == 0:
                self.failures["lost reply"] += 1
                raise StoreError("simulated lost reply: the append landed")
        return results

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Any]:
        self._gate("read")
        return super().read(workflow_id, run_id, after)

    def claim(self, owner: str, *, now: datetime, **kw: Any) -> Claims:
        self._gate("claim")
        return super().claim(owner, now=now, **kw)

    def renew(self, owner: str, *, lease: float = 30.0) -> list[RunRef]:
        self._gate("renew")
        return super().renew(owner, lease=lease)

    def release(self, owner: str, run: RunRef, **kw: Any) -> None:
        self._gate("release")
        super().release(owner, run, **kw)


RAN: list[tuple[str, int]] = []
LATE: list[tuple[str, int]] = []
STORE: list[FlakyStore] = []


@activity
def outage_step(wid: str, i: int) -> int:
    if (wid, i + 1) in STORE[0].durable:  # its seq: the workflow's (i + 1)-th command
        LATE.append((wid, i))  # ran again after its completion was recorded
    RAN.append((wid, i))
    time.sleep(0.002)
    return i


@workflow
def outage_chain(wid: str, steps: int) -> Gen:
    total = 0
    for i in range(steps):
        total += yield ScheduleActivity(outage_step, wid, i)
    return total


def _worker(store: FlakyStore) -> Worker:
    return Worker(
        store,
        workflows=[outage_chain],
        activities=[outage_step],
        poll_interval=0.01,
        max_concurrent_activities=4,
    )


def test_a_worker_rides_out_outages_and_lost_replies(caplog: pytest.LogCaptureFixture) -> None:
    seed = 6001
    store = FlakyStore(random.Random(seed))
    STORE[:] = [store]
    RAN.clear()
    LATE.clear()
    client = Client(store)
    n, steps = 12, 4
    ids = [client.start(outage_chain, f"o{i}", steps, id=f"o{i}") for i in range(n)]
    worker = _worker(store)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    caplog.set_level(logging.WARNING, logger="temporalpp.worker")
    thread.start()
    deadline = time.monotonic() + 60
    while sum(client.describe(w).status is Status.COMPLETED for w in ids) < n:
        assert time.monotonic() < deadline, f"seed {seed}: not done, {store.failures}"
        assert thread.is_alive(), f"seed {seed}: Worker.run() ended: {errors}"
        time.sleep(0.02)
    worker.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors
    store.rng = None  # the checks below read without faults
    assert store.failures["outages"] >= 3 and store.failures["lost reply"] >= 3, store.failures
    assert sum(store.failures.values()) > store.failures["lost reply"], store.failures
    for i, wid in enumerate(ids):
        assert client.result(wid) == sum(range(steps)), f"seed {seed}"
        history = client.history(wid)
        done = Counter(ev.seq for ev in history if isinstance(ev, ActivityCompleted))
        assert done == Counter(range(1, steps + 1)), f"seed {seed}: {wid}: {done}"
        assert sum(isinstance(ev, WorkflowCompleted) for ev in history) == 1
        assert_deterministic(outage_chain, history)
        assert {s for w, s in RAN if w == f"o{i}"} == set(range(steps))
    assert LATE == [], f"seed {seed}: ran after their completion was durable: {LATE}"
    assert "store answers again" in caplog.text


def test_a_stop_during_an_outage_returns(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    STORE[:] = [store]
    client = Client(store)
    wid = client.start(outage_chain, "s", 3, id="s")
    worker = _worker(store)
    worker.lease = 1.0  # how long a stop keeps trying to record outcomes
    store.down.set()
    thread = threading.Thread(target=worker.run, daemon=True)
    caplog.set_level(logging.WARNING, logger="temporalpp.worker")
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "store error" in caplog.text
    store.down.clear()  # back: another worker finishes the run
    w2 = _worker(store)
    w2.run_until_idle()
    assert client.result(wid) == 3


class ForgetfulStore(MemoryStore):
    """``renew`` once answers that the worker holds nothing while the store still counts
    its runs as the worker's (as AzureBlobStore does while a partition's lease renewal is
    late: its runs are not trusted for a moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.hide = 0

    def renew(self, owner: str, *, lease: float = 30.0) -> list[RunRef]:
        held = super().renew(owner, lease=lease)
        if self.hide and held:
            self.hide -= 1
            return []
        return held


@activity
def slow_step(i: int) -> int:
    time.sleep(0.4)
    return i


@workflow
def slow_chain(steps: int) -> Gen:
    total = 0
    for i in range(steps):
        total += yield ScheduleActivity(slow_step, i)
    return total


def test_runs_a_renew_says_are_lost_are_given_back_not_stranded() -> None:
    store = ForgetfulStore()
    client = Client(store)
    wid = client.start(slow_chain, 3, id="stranded")
    worker = Worker(
        store, workflows=[slow_chain], activities=[slow_step], poll_interval=0.01, lease=0.6
    )
    store.hide = 1  # the first renew with the run in hand says it is gone
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        # stranded, the run would stay claimed by this worker, which no longer works on it
        assert client.result(wid, timeout=20) == 3
        assert store.hide == 0
    finally:
        worker.stop()
        thread.join(timeout=10)
