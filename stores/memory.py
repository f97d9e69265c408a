"""MemoryStore: the whole store in plain dicts and lists, thread-safe.

The fastest backend and the default of ``engine.run``; it survives nothing
beyond its process.  It is a real, complete backend (it passes the same
conformance suite as the durable ones), so tests and notebooks use it as is.

>>> from stores import MemoryStore
>>> with MemoryStore() as store:
...     store.list().counts
{}
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from engine._errors import (
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    CLOSING_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    Event,
    Payload,
    WorkflowStarted,
    WorkflowTerminated,
    with_index,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

from ._protocol import AppendBatch, AppendResult, Claims, RunRef
from ._summary import (
    RunSummary,
    check_decision,
    check_start,
    child_refused,
    is_repeated_child,
    parent_notice,
    select_page,
)

__all__ = ["MemoryStore"]


def _check_ids(workflow_id: object, run_id: object) -> None:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    if not isinstance(run_id, str):
        raise TypeError(f"a run id must be a string, got {run_id!r}")


class _Run:
    __slots__ = ("events", "heartbeats", "owner", "summary")

    def __init__(self, started: WorkflowStarted) -> None:
        self.events: list[Event] = [with_index(started, 0)]
        self.summary = RunSummary(started)
        self.owner: str | None = None
        self.heartbeats: dict[int, Payload] = {}


class MemoryStore:
    """An in-memory event store (see ``stores._protocol.Store``)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[tuple[str, str], _Run] = {}
        self._chains: dict[str, list[str]] = {}
        # ready index: per task queue a heap of (due, tiebreak, key); entries go
        # stale when a run's due time changes and are checked when popped.
        self._ready: dict[str, list[tuple[datetime, int, tuple[str, str]]]] = {}
        self._tiebreak = itertools.count()
        self._owners: dict[str, float] = {}  # owner -> lease expiry (monotonic)
        # NB: ordered (dicts, not sets), so a dead owner's runs return in claim order
        self._claims: dict[str, dict[tuple[str, str], None]] = {}
        self._closed = False

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MemoryStore is closed")

    def _run(self, workflow_id: str, run_id: str | None) -> _Run:
        if not isinstance(workflow_id, str):
            raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
        chain = self._chains.get(workflow_id)
        if not chain:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        rid = chain[-1] if run_id is None else run_id
        run = self._runs.get((workflow_id, rid))
        if run is None:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {rid!r}")
        return run

    def _reindex(self, key: tuple[str, str], run: _Run) -> None:
        if run.owner is not None:
            return
        due = run.summary.due
        if due is not None:
            queue = self._ready.setdefault(run.summary.started.task_queue, [])
            heapq.heappush(queue, (due, next(self._tiebreak), key))

    def _create(self, started: WorkflowStarted) -> None:
        key = (started.workflow_id, started.run_id)
        if key in self._runs:
            raise WorkflowAlreadyStartedError(
                f"workflow {started.workflow_id!r} already has a run {started.run_id!r}"
            )
        run = _Run(started)
        self._runs[key] = run
        self._chains.setdefault(started.workflow_id, []).append(started.run_id)
        self._reindex(key, run)

    def _summaries(self, workflow_id: str) -> list[RunSummary]:
        return [self._runs[(workflow_id, r)].summary for r in self._chains.get(workflow_id, [])]

    def _append_one(self, batch: AppendBatch) -> int:
        run = self._run(batch.workflow_id, batch.run_id)
        expected = batch.expected_length
        tail = run.events[expected:] if expected is not None else []
        check_decision(run.summary, batch.events, tail, expected)
        self._check_starts(batch, run)
        index = len(run.events)
        stamped = [with_index(ev, index + i) for i, ev in enumerate(batch.events)]
        run.events.extend(stamped)
        run.summary.apply(stamped)
        for ev in stamped:
            if type(ev) is ActivityCompleted or type(ev) is ActivityFailed:
                run.heartbeats.pop(ev.seq, None)
        for started in batch.starts:
            self._start_from(started)
        self._after_append(batch.workflow_id, batch.run_id, run)
        return index

    def _check_starts(self, batch: AppendBatch, run: _Run) -> None:
        """Refuse, before anything lands, a batch whose parentless starts cannot happen.

        A refused child start is its parent's news (``ChildWorkflowFailed``), but a
        continue-as-new that cannot start must fail its batch whole.
        """
        closes = any(type(ev) in CLOSING_EVENTS for ev in batch.events)
        for started in batch.starts:
            if started.parent is not None:
                continue
            wid = started.workflow_id
            if (wid, started.run_id) in self._runs:
                raise WorkflowAlreadyStartedError(
                    f"workflow {wid!r} already has a run {started.run_id!r}"
                )
            chain = self._chains.get(wid)
            if chain:
                last = self._runs[(wid, chain[-1])]
                if last.summary.running and not (last is run and closes):
                    raise WorkflowAlreadyStartedError(
                        f"workflow {wid!r} is already running (run {chain[-1]})"
                    )

    def _start_from(self, started: WorkflowStarted) -> None:
        """A run started by a batch: a child (idempotent by parent link) or a continuation."""
        runs = self._summaries(started.workflow_id)
        if is_repeated_child(started, runs):
            return  # this child exists already (a retried decision)
        try:
            check_start(started, runs, IdReusePolicy.ALLOW_DUPLICATE)
            self._create(started)
        except WorkflowAlreadyStartedError as exc:
            if started.parent is None:
                raise
            self._external(*child_refused(started, exc))

    def _external(self, workflow_id: str, run_id: str, event: Event) -> None:
        """A store-made event (child outcome, refusal) for a run that may have closed."""
        # the parent may be gone or closed: then nobody waits for this any more
        with contextlib.suppress(WorkflowError):
            self._append_one(AppendBatch(workflow_id=workflow_id, run_id=run_id, events=[event]))

    def _after_append(self, workflow_id: str, run_id: str, run: _Run) -> None:
        if not run.summary.running:
            run.heartbeats.clear()
            notice = parent_notice(run.summary)
            if notice is not None:
                self._external(*notice)
        self._reindex((workflow_id, run_id), run)

    def _expire_owners(self) -> None:
        now = time.monotonic()
        for owner, expiry in list(self._owners.items()):
            if expiry < now:
                self._drop_owner(owner)

    def _drop_owner(self, owner: str) -> None:
        self._owners.pop(owner, None)
        for key in self._claims.pop(owner, {}):
            run = self._runs[key]
            run.owner = None
            self._reindex(key, run)

    # ------------------------------------------------------------------ protocol

    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> None:
        with self._lock:
            self._check_open()
            if not isinstance(started, WorkflowStarted):
                raise TypeError(f"create() needs a WorkflowStarted event, got {started!r}")
            _check_ids(started.workflow_id, started.run_id)
            if (started.workflow_id, started.run_id) in self._runs:
                # before TERMINATE_IF_RUNNING acts: a refused start changes nothing
                raise WorkflowAlreadyStartedError(
                    f"workflow {started.workflow_id!r} already has a run {started.run_id!r}"
                )
            running = check_start(started, self._summaries(started.workflow_id), id_reuse)
            if running is not None:
                rid = running.started.run_id
                run = self._runs[(started.workflow_id, rid)]
                self._append_one(
                    AppendBatch(
                        workflow_id=started.workflow_id,
                        run_id=rid,
                        events=[
                            WorkflowTerminated(
                                time=started.time,
                                reason=f"terminated by a new start ({started.run_id}) with "
                                f"TERMINATE_IF_RUNNING",
                            )
                        ],
                    )
                )
                assert not run.summary.running
            self._create(started)

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        results: list[AppendResult] = []
        for batch in batches:  # bad input refuses the whole call before anything lands
            _check_ids(batch.workflow_id, batch.run_id)
        with self._lock:
            self._check_open()
            for batch in batches:
                try:
                    results.append(AppendResult(index=self._append_one(batch)))
                except WorkflowError as exc:
                    results.append(AppendResult(error=exc))
        return results

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        with self._lock:
            self._check_open()
            return self._run(workflow_id, run_id).events[after:]

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        with self._lock:
            self._check_open()
            return self._run(workflow_id, run_id).summary.info()

    def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> WorkflowPage:
        with self._lock:
            self._check_open()
            return select_page(
                (run.summary for run in self._runs.values()),
                status=status,
                type=type,
                since=since,
                until=until,
                page_size=page_size,
                page_token=page_token,
            )

    def runs(self) -> Iterator[WorkflowInfo]:
        with self._lock:
            self._check_open()
            infos = [run.summary.info() for run in self._runs.values()]
        return iter(infos)

    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        with self._lock:
            self._check_open()
            self._expire_owners()
            self._owners[owner] = time.monotonic() + lease
            mine = self._claims.setdefault(owner, {})
            got: builtins.list[RunRef] = []
            next_due: datetime | None = None
            for queue_name in task_queues:
                heap = self._ready.get(queue_name)
                while heap:
                    due, _, key = heap[0]
                    run = self._runs[key]
                    if run.owner is not None or run.summary.due != due:
                        heapq.heappop(heap)  # stale: claimed, re-timed or closed
                        continue
                    if due > now or len(got) >= limit:
                        if next_due is None or due < next_due:
                            next_due = due
                        break
                    heapq.heappop(heap)
                    run.owner = owner
                    mine[key] = None
                    got.append(RunRef(*key))
            return Claims(runs=got, next_due=next_due)

    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        with self._lock:
            self._check_open()
            self._expire_owners()
            if owner not in self._owners:
                return []
            self._owners[owner] = time.monotonic() + lease
            return [RunRef(*key) for key in self._claims.get(owner, ())]

    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            key = (run.workflow_id, run.run_id)
            entry = self._runs.get(key)
            if entry is None or entry.owner != owner:
                return
            entry.owner = None
            self._claims.get(owner, {}).pop(key, None)
            entry.summary.not_before = not_before
            entry.summary.blocked = blocked
            self._reindex(key, entry)

    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        with self._lock:
            self._check_open()
            entry = self._run(run.workflow_id, run.run_id)
            if details is not None and seq in entry.summary.activities:
                entry.heartbeats[seq] = details  # only a pending activity has a slot
            return entry.heartbeats.get(seq)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
