"""R1 systematic mode: a crash right before and right after every durable write.

For each reference workflow (``tests/reliability/refwork.py``) on each local
durable store, a crash-free run counts the worker's durable writes (``create``
and ``append`` calls) N; then, for every n in 1..N and both sides of it, the
worker runs until its n-th durable write, where ``Crash`` (a
``BaseException``, as nothing may catch it) is raised either before the write
reaches the store or after it landed but before the worker sees the reply.
The crashed worker and its store handle are dropped (the handle closed, as the
kernel would drop its locks) and a new worker on a fresh handle finishes the
job.  Then:

* each workflow id ends with the crash-free run statuses and result;
* no run holds two ``WorkflowCompleted``s, or an activity scheduled or
  completed twice;
* every activity completed in the history ran (is in the fsync'd ledger) at
  least once, and none ran again after its completion was durable;
* every event the store acknowledged is still there at its index;
* every run's history passes ``engine.testing.assert_deterministic``.

The random SIGKILL mode is ``tests/crashkit.py`` (``test_store_file.py``,
``test_store_sqlite.py``, and ``test_r1_crashkit.py`` here for the ci tier).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from engine import Client, Status, Worker
from engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    Event,
    WorkflowCompleted,
    with_index,
)
from engine.testing import VirtualClock, assert_deterministic
from stores import AppendResult, MemoryStore, Store
from stores.file import FileStore
from stores.sqlite import SQLiteStore
from tests.reliability import refwork

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Crash(BaseException):
    """The process dies here."""


class Plan:
    """Where to crash (``at``-th durable write, ``side`` of it) and what was seen."""

    def __init__(self, at: int | None, side: str, ledger: str) -> None:
        self.at = at
        self.side = side
        self.ledger = ledger
        self.writes = 0
        self.crashed = False
        self.acked: list[tuple[str, str, Event]] = []
        self.durable_at: dict[tuple[str, str, int], int] = {}

    def landed(self, batches: Any, results: list[AppendResult], acknowledged: bool) -> None:
        for b, r in zip(batches, results, strict=True):
            if not r.ok:
                continue
            for i, ev in enumerate(b.events):
                if acknowledged:
                    self.acked.append((b.workflow_id, b.run_id, with_index(ev, r.index + i)))
                if isinstance(ev, ActivityCompleted):
                    key = (b.workflow_id, b.run_id, ev.seq)
                    self.durable_at.setdefault(key, len(refwork.read_ledger(self.ledger)))


class CrashingStore:
    """A store proxy that crashes at the plan's durable write."""

    def __init__(self, inner: Store, plan: Plan) -> None:
        self._inner = inner
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _due(self) -> bool:
        p = self._plan
        p.writes += 1
        if p.at is not None and not p.crashed and p.writes == p.at:
            p.crashed = True
            return True
        return False

    def create(self, started: Any, *args: Any, **kw: Any) -> Any:
        due = self._due()
        if due and self._plan.side == "before":
            raise Crash("before create")
        out = self._inner.create(started, *args, **kw)
        if due:
            raise Crash("after create")
        self._plan.acked.append((started.workflow_id, started.run_id, with_index(started, 0)))
        return out

    def append(self, batches: Any) -> list[AppendResult]:
        due = self._due()
        if due and self._plan.side == "before":
            raise Crash("before append")
        results = self._inner.append(batches)
        self._plan.landed(batches, results, acknowledged=not due)
        if due:
            raise Crash("after append")
        return results


def _setup(kind: str, client: Client, ledger: str) -> None:
    if kind == "chain":
        client.start(refwork.ref_chain, ledger, 6, id="chain")
    elif kind == "timer_signal":
        client.start(refwork.ref_timer_signal, ledger, id="ts")
        client.signal("ts", "go", "yes")
    else:
        client.start(refwork.ref_parent, ledger, 0, id="parent")


def _outcome(store: Store) -> dict[str, tuple[list[Status], Any]]:
    client = Client(store)
    by_id: dict[str, list[Any]] = collections.defaultdict(list)
    for info in store.runs():
        by_id[info.id].append(info)
    out = {}
    for wid, infos in by_id.items():
        infos.sort(key=lambda i: (i.start_time, i.status is not Status.CONTINUED_AS_NEW))
        out[wid] = ([i.status for i in infos], client.result(wid))
    return out


STORES: dict[str, Callable[[pathlib.Path], Store]] = {
    "file": lambda d: FileStore(d / "store", durability="none"),
    "sqlite": lambda d: SQLiteStore(d / "tpp.db", durability="none"),
}


def _run(
    make: Callable[[pathlib.Path], Store], directory: pathlib.Path, kind: str, plan: Plan
) -> None:
    clock = VirtualClock(start=T0)
    with make(directory) as store:
        _setup(kind, Client(store, clock=clock), plan.ledger)
    for _life in range(10):
        store = make(directory)
        try:
            Worker(
                CrashingStore(store, plan),  # type: ignore[arg-type]
                workflows=refwork.WORKFLOWS,
                activities=refwork.ACTIVITIES,
                clock=clock,
                identity=f"life-{_life}",
            ).run_until_idle(skip_time=True)
            counts = store.list(page_size=1).counts
            if not counts.get(Status.RUNNING):
                return
        except Crash:
            continue
        finally:
            store.close()
    raise AssertionError("the workflows did not finish in 10 worker lives")


def _check(store: Store, plan: Plan, want: dict[str, tuple[list[Status], Any]]) -> None:
    assert _outcome(store) == want
    rows = refwork.read_ledger(plan.ledger)
    ran = collections.Counter((w, r, q) for w, r, q, _ in rows)
    for info in store.runs():
        history = store.read(info.id, info.run_id)
        assert sum(isinstance(ev, WorkflowCompleted) for ev in history) <= 1, info
        for kind in (ActivityScheduled, ActivityCompleted):
            seqs = [ev.seq for ev in history if isinstance(ev, kind)]  # type: ignore[attr-defined]
            assert len(seqs) == len(set(seqs)), f"{info.id}: {kind.__name__} twice: {seqs}"
        for ev in history:
            if isinstance(ev, ActivityCompleted):
                assert ran[(info.id, info.run_id, ev.seq)] >= 1, f"{info.id} seq {ev.seq} never ran"
        assert_deterministic(refwork.BY_NAME[info.type], history)
    for i, (w, r, q, attempt) in enumerate(rows):
        limit = plan.durable_at.get((w, r, q))
        assert limit is None or i < limit, (
            f"{w} seq {q} attempt {attempt} ran after its completion was durable"
        )
    for wid, rid, ev in plan.acked:
        history = store.read(wid, rid)
        assert len(history) > ev.index and history[ev.index] == ev, f"{wid}: lost {ev}"


def _reference(kind: str, tmp: pathlib.Path) -> dict[str, tuple[list[Status], Any]]:
    clock = VirtualClock(start=T0)
    with MemoryStore() as store:
        _setup(kind, Client(store, clock=clock), str(tmp / "ref.ledger"))
        Worker(
            store, workflows=refwork.WORKFLOWS, activities=refwork.ACTIVITIES, clock=clock
        ).run_until_idle(skip_time=True)
        return _outcome(store)


@pytest.mark.parametrize("kind", ["chain", "timer_signal", "parent"])
@pytest.mark.parametrize("backend", STORES)
def test_a_crash_before_and_after_every_durable_write(
    tmp_path: pathlib.Path, backend: str, kind: str
) -> None:
    make = STORES[backend]
    want = _reference(kind, tmp_path)
    free = Plan(None, "before", str(tmp_path / "free.ledger"))
    _run(make, tmp_path / "free", kind, free)
    with make(tmp_path / "free") as store:
        _check(store, free, want)
    assert free.writes >= 4, free.writes
    cases = 0
    for n in range(1, free.writes + 1):
        for side in ("before", "after"):
            directory = tmp_path / f"{side}-{n}"
            directory.mkdir()
            plan = Plan(n, side, str(directory / "ledger"))
            _run(make, directory, kind, plan)
            assert plan.crashed, (n, side)
            try:
                with make(directory) as store:
                    _check(store, plan, want)
            except AssertionError as exc:
                raise AssertionError(f"crash {side} durable write {n}: {exc}") from exc
            cases += 1
    print(f"{backend}/{kind}: {cases} crash points over {free.writes} durable writes")
