"""Prometheus metrics for a worker, collected by a ``Store`` proxy (``tpp worker --metrics-port``).

The worker is not instrumented itself: :class:`MetricsStore` wraps the store a
worker is given and reads what passes through it.  Every durable fact a worker
produces goes through ``append``, so the appended events tell:

* a batch holding a ``WorkflowTaskCompleted`` is a decision; a run's first one
  starts the workflow;
* ``ActivityScheduled`` names the activity type of a sequence number, and the
  outcomes that follow (``ActivityCompleted``, ``ActivityFailed``,
  ``ActivityAttemptFailed``) are attempts: completed, failed for good, retried;
* a closing event ends the workflow (completed, failed, ...);
* an ``append`` call's duration is the append latency (a group commit is one call).

Three more come from the other calls: ``claim``/``release``/``renew`` give the
runs the worker owns (workflows in flight); ``release(blocked=...)`` a blocked
run; and the worker reads an activity's heartbeat slot (``heartbeat(run, seq)``
with no details) right before it runs an attempt, which starts the attempt's
clock (activities in flight and their duration).  The types of runs and
sequence numbers are learnt from the histories the worker reads (the worker
reads a run before it decides), so the proxy adds no store calls of its own
except for a run it has not seen read.

Decision latency is the time from the worker's read of a run to the append that
carries its decision (loading, replaying and deciding; for a group commit it
includes the runs decided before it in the same call).  A worker that measures
``decide`` itself can report to :meth:`WorkerMetrics.observe_decision` and pass
``time_decisions=False``.

Each ``WorkerMetrics`` has its own ``CollectorRegistry`` (no global state), and
needs the ``metrics`` extra: ``pip install 'temporalpp[metrics]'``.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stores._protocol import AppendBatch, AppendResult, Claims, RunRef, Store

from ._errors import ConflictError
from ._events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Event,
    Payload,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from ._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["MetricsStore", "WorkerMetrics", "serve"]

_CLOSED: dict[type, Status] = {
    WorkflowCompleted: Status.COMPLETED,
    WorkflowFailed: Status.FAILED,
    WorkflowCancelled: Status.CANCELLED,
    WorkflowTerminated: Status.TERMINATED,
    WorkflowContinuedAsNew: Status.CONTINUED_AS_NEW,
}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UNKNOWN = "unknown"


class WorkerMetrics:
    """The metrics of one worker, in their own registry.

    >>> m = WorkerMetrics()
    >>> m.observe_decision(0.002)
    >>> m.value("tpp_decision_seconds_count")
    1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        wt, at = ["workflow_type"], ["activity_type"]
        self.workflows_started = Counter(
            "tpp_workflows_started", "Runs whose first decision this worker made", wt, registry=r
        )
        self.workflows_completed = Counter(
            "tpp_workflows_completed", "Runs this worker completed", wt, registry=r
        )
        self.workflows_failed = Counter(
            "tpp_workflows_failed", "Runs this worker failed (the workflow raised)", wt, registry=r
        )
        self.workflows_closed = Counter(
            "tpp_workflows_closed",
            "Runs this worker closed, by status",
            [*wt, "status"],
            registry=r,
        )
        self.decisions = Counter(
            "tpp_decisions", "Decisions appended (WorkflowTaskCompleted)", wt, registry=r
        )
        self.conflicts = Counter(
            "tpp_decision_conflicts",
            "Decision appends refused as stale (ConflictError)",
            registry=r,
        )
        self.blocked = Counter(
            "tpp_runs_blocked",
            "Runs given back blocked (unknown type, non-determinism)",
            registry=r,
        )
        self.activities_scheduled = Counter(
            "tpp_activities_scheduled", "Activities scheduled by decisions", at, registry=r
        )
        self.activity_attempts = Counter(
            "tpp_activity_attempts",
            "Activity attempts by outcome (completed, failed for good, retry)",
            [*at, "outcome"],
            registry=r,
        )
        self.activity_failures = Counter(
            "tpp_activity_failures",
            "Activities failed for good (retries exhausted)",
            at,
            registry=r,
        )
        self.activity_retries = Counter(
            "tpp_activity_retries", "Failed attempts that will be retried", at, registry=r
        )
        self.workflows_in_flight = Gauge(
            "tpp_workflows_in_flight", "Runs this worker owns now", registry=r
        )
        self.activities_in_flight = Gauge(
            "tpp_activities_in_flight", "Activity attempts running now", at, registry=r
        )
        self.decision_seconds = Histogram(
            "tpp_decision_seconds",
            "Time to make a decision (load, replay, decide)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.append_seconds = Histogram(
            "tpp_store_append_seconds",
            "Duration of a store append call (one group commit)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.activity_seconds = Histogram(
            "tpp_activity_seconds",
            "Duration of an activity attempt, start to recorded outcome",
            at,
            buckets=(*_LATENCY_BUCKETS, 30, 60, 300),
            registry=r,
        )

    def observe_decision(self, seconds: float) -> None:
        """Record one decision's latency (for a worker that times ``decide`` itself)."""
        self.decision_seconds.observe(seconds)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``name`` as exposed, e.g. ``..._total``)."""
        return self.registry.get_sample_value(name, labels)


class _Run:
    """What the proxy knows of one run: its type, its open activities, whether it decided."""

    __slots__ = ("activities", "decided", "read_at", "type")

    def __init__(self, workflow_type: str) -> None:
        self.type = workflow_type
        self.activities: dict[int, str] = {}
        self.decided = False
        self.read_at: float | None = None


class MetricsStore:
    """A ``Store`` that forwards every call to ``store`` and records ``metrics`` on the way.

    >>> from stores import MemoryStore
    >>> from engine import Client, Worker, ScheduleActivity, activity, workflow
    >>> @activity
    ... def ping() -> str:
    ...     return "pong"
    >>> @workflow
    ... def pinger():
    ...     return (yield ScheduleActivity(ping))
    >>> metrics = WorkerMetrics()
    >>> store = MetricsStore(MemoryStore(), metrics)
    >>> wid = Client(store).start(pinger)
    >>> Worker(store, [pinger], [ping]).run_until_idle()
    >>> metrics.value("tpp_workflows_completed_total", workflow_type="pinger")
    1.0
    >>> metrics.value("tpp_activity_attempts_total", activity_type="ping", outcome="completed")
    1.0
    """

    #: How many runs' types and open activities are remembered (least recently used go).
    MAX_RUNS = 10_000

    def __init__(
        self, store: Store, metrics: WorkerMetrics, *, time_decisions: bool = True
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.time_decisions = time_decisions
        self._mu = threading.Lock()
        self._runs: OrderedDict[RunRef, _Run] = OrderedDict()
        self._attempts: dict[tuple[RunRef, int], tuple[str, float]] = {}
        self._owned: set[RunRef] = set()

    def __getattr__(self, name: str) -> Any:  # backend extras, e.g. FileStore.rebuild_index
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"MetricsStore({self.store!r})"

    # ------------------------------------------------------------------ bookkeeping

    def _remember(self, ref: RunRef, run: _Run) -> _Run:
        self._runs[ref] = run
        self._runs.move_to_end(ref)
        while len(self._runs) > self.MAX_RUNS:
            self._runs.popitem(last=False)
        return run

    def _learn(self, ref: RunRef, events: Sequence[Event]) -> _Run:
        """State of a run from its whole history."""
        first = events[0] if events else None
        run = _Run(first.workflow_type if isinstance(first, WorkflowStarted) else _UNKNOWN)
        self._note(run, events)
        return self._remember(ref, run)

    def _state(self, ref: RunRef) -> _Run:
        run = self._runs.get(ref)
        if run is not None:
            self._runs.move_to_end(ref)
            return run
        try:  # a run this proxy has not seen read (its memory was full): read it once
            events = self.store.read(ref.workflow_id, ref.run_id)
        except Exception:
            events = []
        return self._learn(ref, events)

    @staticmethod
    def _note(run: _Run, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, WorkflowTaskCompleted):
                run.decided = True
            elif isinstance(ev, ActivityScheduled):
                run.activities[ev.seq] = ev.activity_type
            elif isinstance(ev, ActivityCompleted | ActivityFailed):
                run.activities.pop(ev.seq, None)

    def _end_attempt(self, ref: RunRef, seq: int) -> None:
        started = self._attempts.pop((ref, seq), None)
        if started is not None:
            activity_type, at = started
            self.metrics.activities_in_flight.labels(activity_type).dec()
            self.metrics.activity_seconds.labels(activity_type).observe(time.monotonic() - at)

    def _appended(self, batch: AppendBatch, began: float) -> None:
        m = self.metrics
        ref = RunRef(batch.workflow_id, batch.run_id)
        run = self._state(ref)
        decisions = 0
        for ev in batch.events:
            if isinstance(ev, WorkflowTaskCompleted):
                decisions += 1
            elif isinstance(ev, ActivityScheduled):
                run.activities[ev.seq] = ev.activity_type
                m.activities_scheduled.labels(ev.activity_type).inc()
            elif isinstance(ev, ActivityCompleted | ActivityFailed | ActivityAttemptFailed):
                activity_type = run.activities.get(ev.seq, _UNKNOWN)
                if isinstance(ev, ActivityCompleted):
                    outcome = "completed"
                elif isinstance(ev, ActivityFailed):
                    outcome = "failed"
                    m.activity_failures.labels(activity_type).inc()
                else:
                    outcome = "retry"
                    m.activity_retries.labels(activity_type).inc()
                m.activity_attempts.labels(activity_type, outcome).inc()
                self._end_attempt(ref, ev.seq)
                if outcome != "retry":
                    run.activities.pop(ev.seq, None)
            else:
                status = _CLOSED.get(type(ev))
                if status is not None:
                    m.workflows_closed.labels(run.type, status.value).inc()
                    if status is Status.COMPLETED:
                        m.workflows_completed.labels(run.type).inc()
                    elif status is Status.FAILED:
                        m.workflows_failed.labels(run.type).inc()
        if decisions:
            m.decisions.labels(run.type).inc(decisions)
            if not run.decided:
                run.decided = True
                m.workflows_started.labels(run.type).inc()
            if self.time_decisions and run.read_at is not None:
                m.observe_decision(max(0.0, began - run.read_at))
            run.read_at = None

    # ------------------------------------------------------------------ the protocol

    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> None:
        self.store.create(started, id_reuse=id_reuse)

    def append(self, batches: Sequence[AppendBatch]) -> builtins.list[AppendResult]:
        began = time.monotonic()
        results = self.store.append(batches)
        self.metrics.append_seconds.observe(time.monotonic() - began)
        with self._mu:
            for batch, result in zip(batches, results, strict=False):
                if result.error is None:
                    self._appended(batch, began)
                elif isinstance(result.error, ConflictError):
                    self.metrics.conflicts.inc()
        return results

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        events = self.store.read(workflow_id, run_id, after)
        if run_id is None:
            return events
        ref = RunRef(workflow_id, run_id)
        with self._mu:
            if after == 0:
                run = self._learn(ref, events)
            else:
                run = self._state(ref)
                self._note(run, events)
            run.read_at = time.monotonic()
        return events

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        return self.store.describe(workflow_id, run_id)

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
        return self.store.list(
            status=status,
            type=type,
            since=since,
            until=until,
            page_size=page_size,
            page_token=page_token,
        )

    def runs(self) -> Iterator[WorkflowInfo]:
        return self.store.runs()

    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        claims = self.store.claim(owner, now=now, task_queues=task_queues, limit=limit, lease=lease)
        with self._mu:
            self._owned.update(claims.runs)
            self.metrics.workflows_in_flight.set(len(self._owned))
        return claims

    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        owned = self.store.renew(owner, lease=lease)
        with self._mu:
            self._owned = set(owned)
            self.metrics.workflows_in_flight.set(len(self._owned))
        return owned

    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        self.store.release(owner, run, not_before=not_before, blocked=blocked)
        with self._mu:
            self._owned.discard(run)
            self.metrics.workflows_in_flight.set(len(self._owned))
            if blocked is not None:
                self.metrics.blocked.inc()
            for ref, seq in [key for key in self._attempts if key[0] == run]:
                self._end_attempt(ref, seq)  # given back: nothing of it runs here any more

    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        stored = self.store.heartbeat(run, seq, details)
        if details is None:  # NB: the worker reads the slot right before it starts an attempt
            with self._mu:
                if (run, seq) not in self._attempts:
                    activity_type = self._state(run).activities.get(seq, _UNKNOWN)
                    self._attempts[(run, seq)] = (activity_type, time.monotonic())
                    self.metrics.activities_in_flight.labels(activity_type).inc()
        return stored

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(metrics: WorkerMetrics, port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``metrics`` at ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (``server.server_port``); stop it with
    ``server.shutdown()`` and ``server.server_close()``.
    """
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server
