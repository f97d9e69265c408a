"""Reading pipeline runs back from their histories: progress, stats, and what a re-run reuses.

Everything here works from events alone (``Client.history`` or
``Store.read``) and a ``decode`` function for payloads (``Client.decode``, so
compressed, encrypted or offloaded payloads read as well).  A run is a
pipeline run when one of its decisions published the ``pipeline`` query: the
:class:`~engine.pipeline.PipelineSpec` of the DAG it follows.  The task of an
activity is its type's suffix (``reindex.index`` is task ``index``); the item
of a fan-out activity is its first argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from .._events import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Event,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from ._model import SPEC_QUERY, WORKFLOW_PREFIX, PipelineSpec, fingerprints
from ._workflow import Reuse, RunInput

__all__ = [
    "RunView",
    "TaskProgress",
    "TaskStats",
    "TaskStatsCollector",
    "previous_results",
    "scan",
]

Decode = Callable[..., Any]

_STATUS: dict[type, str] = {
    WorkflowCompleted: "COMPLETED",
    WorkflowFailed: "FAILED",
    WorkflowCancelled: "CANCELLED",
    WorkflowTerminated: "TERMINATED",
    WorkflowContinuedAsNew: "CONTINUED_AS_NEW",
}


class TaskProgress(msgspec.Struct, kw_only=True):
    """One task of one run.

    ``state`` is ``pending`` (not scheduled yet), ``running``, ``retrying``
    (a failed attempt waits for its retry), ``completed``, ``failed``,
    ``reused`` (taken whole from an earlier run), ``skipped`` (the run closed
    before it was scheduled) or ``abandoned`` (the run closed while it ran).
    Counts are of activities (a fan-out task has one per item).
    """

    state: str = "pending"
    scheduled: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    reused: int = 0

    @property
    def in_flight(self) -> int:
        """Activities scheduled without a final outcome (running or awaiting a retry)."""
        return self.scheduled - self.completed - self.failed


class RunView(msgspec.Struct, kw_only=True):
    """A run as its history shows it; ``spec`` is ``None`` for a run that is no pipeline."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    spec: PipelineSpec | None = None
    request: RunInput | None = None
    tasks: dict[str, TaskProgress] = {}


def _spec(events: Iterable[Event], decode: Decode) -> PipelineSpec | None:
    for ev in events:
        if type(ev) is WorkflowTaskCompleted and ev.queries and SPEC_QUERY in ev.queries:
            try:
                spec: PipelineSpec = decode(ev.queries[SPEC_QUERY], PipelineSpec)
            except (TypeError, ValueError):
                return None
            return spec
    return None


def _request(started: WorkflowStarted, decode: Decode) -> RunInput | None:
    try:
        args = decode(started.input, list[RunInput])
    except (TypeError, ValueError):
        return None
    return args[0] if len(args) == 1 else None


def scan(events: Sequence[Event], decode: Decode) -> RunView:
    """What ``events`` (one run's history) say about the run and, if a pipeline, its tasks."""
    started = events[0]
    if not isinstance(started, WorkflowStarted):
        raise ValueError("a history begins with WorkflowStarted")
    status = _STATUS.get(type(events[-1]), "RUNNING")
    view = RunView(
        workflow_id=started.workflow_id,
        run_id=started.run_id,
        workflow_type=started.workflow_type,
        status=status,
    )
    if not started.workflow_type.startswith(WORKFLOW_PREFIX):
        return view
    spec = _spec(events, decode)
    if spec is None:
        return view
    view.spec = spec
    view.request = _request(started, decode)
    tasks = view.tasks = {t.name: TaskProgress() for t in spec.tasks}
    reuse = view.request.reuse if view.request is not None else None
    if reuse is not None:
        for name in reuse.results:
            if name in tasks:
                tasks[name].reused = 1
                tasks[name].state = "reused"
        for name, items in reuse.items.items():
            if name in tasks:
                tasks[name].reused = len(items)
    of: dict[int, str] = {}
    waiting: set[int] = set()  # seqs whose latest attempt failed and waits for a retry
    for ev in events:
        match ev:
            case ActivityScheduled(seq=seq, activity_type=activity_type):
                task = spec.activity_task(activity_type)
                if task is not None:
                    of[seq] = task
                    tasks[task].scheduled += 1
            case ActivityAttemptFailed(seq=seq) if seq in of:
                tasks[of[seq]].retried += 1
                waiting.add(seq)
            case ActivityCompleted(seq=seq) if seq in of:
                tasks[of[seq]].completed += 1
                waiting.discard(seq)
            case ActivityFailed(seq=seq) if seq in of:
                tasks[of[seq]].failed += 1
                waiting.discard(seq)
            case _:
                pass
    retrying = {of[seq] for seq in waiting}
    closed = type(events[-1]) in CLOSING_EVENTS
    for name, t in tasks.items():
        if t.state == "reused":
            continue
        if t.failed:
            t.state = "failed"
        elif t.in_flight:
            t.state = "abandoned" if closed else "retrying" if name in retrying else "running"
        elif t.scheduled or t.reused:
            t.state = "completed"
        elif closed:
            # NB: a fan-out over an empty list schedules nothing and still completes
            t.state = "completed" if status == "COMPLETED" else "skipped"
    return view


def previous_results(
    events: Sequence[Event], decode: Decode, spec: PipelineSpec, args: Sequence[Any]
) -> Reuse | None:
    """The results of an earlier run (``events``) that a new run of ``spec`` may reuse.

    A task's result is reused when its fingerprint (its type, fan-out, its
    predecessors' fingerprints and, for a root, the input) is the same in
    both runs; for a fan-out task that did not finish, its finished items.
    Results the earlier run itself reused carry over.
    """
    view = scan(events, decode)
    if view.spec is None or view.request is None:
        return None
    old_spec, old = view.spec, view.request
    results: dict[str, Any] = dict(old.reuse.results) if old.reuse else {}
    items: dict[str, dict[int, Any]] = (
        {k: dict(v) for k, v in old.reuse.items.items()} if old.reuse else {}
    )
    fan_out = {t.name for t in old_spec.tasks if t.fan_out}
    where: dict[int, tuple[str, int | None]] = {}
    for ev in events:
        if type(ev) is ActivityScheduled:
            name = old_spec.activity_task(ev.activity_type)
            if name is None:
                continue
            index = None
            if name in fan_out:
                index = decode(ev.args)[0]
            where[ev.seq] = (name, index)
        elif type(ev) is ActivityCompleted and ev.seq in where:
            name, index = where[ev.seq]
            value = decode(ev.result)
            if index is None:
                results[name] = value
            else:
                items.setdefault(name, {})[index] = value
    for t in old_spec.tasks:
        got = items.get(t.name)
        source = results.get(t.preds[0]) if t.fan_out and t.preds else None
        if got is not None and isinstance(source, list) and set(got) >= set(range(len(source))):
            results[t.name] = [got[i] for i in range(len(source))]
    old_fp = fingerprints(old_spec, old.args)
    new_fp = fingerprints(spec, args)
    keep = {name for name in old_fp if new_fp.get(name) == old_fp[name]}
    results = {k: v for k, v in results.items() if k in keep}
    items = {k: v for k, v in items.items() if k in keep and k not in results and v}
    if not results and not items:
        return None
    return Reuse(run_id=view.run_id, results=results, items=items)


class TaskStats(msgspec.Struct, kw_only=True):
    """One task over many runs (``tpp stats``): activities, and runs still waiting for it."""

    pending: int = 0
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    reused: int = 0
    abandoned: int = 0


class TaskStatsCollector:
    """Adds up per-task stats over the histories it is given (others are ignored).

    >>> from engine.pipeline import TaskStatsCollector
    >>> collector = TaskStatsCollector(decode=lambda payload, type=None: None)
    >>> collector.result()
    {}

    ``pending`` counts running runs that have not scheduled the task yet;
    ``in_flight`` activities without an outcome in running runs;
    ``abandoned`` those whose run closed first; ``retried`` failed attempts
    that were retried; ``reused`` tasks and items taken from an earlier run.
    """

    def __init__(self, decode: Decode) -> None:
        self.decode = decode
        self._stats: dict[str, dict[str, TaskStats]] = {}

    def add(self, events: Sequence[Event]) -> None:
        if not events or not isinstance(events[0], WorkflowStarted):
            return
        if not events[0].workflow_type.startswith(WORKFLOW_PREFIX):
            return
        view = scan(events, self.decode)
        if view.spec is None:
            return
        per_task = self._stats.setdefault(view.spec.name, {})
        running = view.status == "RUNNING"
        for name, t in view.tasks.items():
            s = per_task.setdefault(name, TaskStats())
            s.pending += running and t.state == "pending"
            s.completed += t.completed
            s.failed += t.failed
            s.retried += t.retried
            s.reused += t.reused
            if running:
                s.in_flight += t.in_flight
            else:
                s.abandoned += t.in_flight

    def result(self) -> dict[str, dict[str, TaskStats]]:
        """Per pipeline name, per task (in task order), sorted by pipeline name."""
        return dict(sorted(self._stats.items()))
