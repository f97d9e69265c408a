"""``tpp stats``: per workflow type and per activity type, computed by scanning histories.

Workflow types: runs by status (running ones split into due now, waiting and
blocked).  Activity types, over every run: scheduled; in flight (scheduled in
a running run with no final outcome yet); completed ("acked"); failed for
good; retried (``ActivityAttemptFailed`` events); abandoned (left without an
outcome by a run that closed); and p50/p95 latency from ``ActivityScheduled``
to its final outcome, retries included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import click
import msgspec
from rich.table import Table

from stores import Store

from .._client import Client
from .._events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Event,
)
from .._info import Status, WorkflowInfo
from ..pipeline import TaskStats, TaskStatsCollector
from ._common import (
    State,
    emit_json,
    format_seconds,
    output_options,
    parse_time,
    pass_state,
    progress_bar,
)

__all__ = ["ActivityStats", "Stats", "WorkflowStats", "compute", "percentile", "stats"]


class WorkflowStats(msgspec.Struct, kw_only=True):
    """Runs of one workflow type by status; running ones also as due / waiting / blocked."""

    running: int = 0
    due: int = 0
    waiting: int = 0
    blocked: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    terminated: int = 0
    continued_as_new: int = 0
    total: int = 0


class ActivityStats(msgspec.Struct, kw_only=True):
    """One activity type across every run scanned; latencies in seconds."""

    scheduled: int = 0
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    abandoned: int = 0
    p50: float | None = None
    p95: float | None = None


class Stats(msgspec.Struct, kw_only=True):
    runs: int
    events: int
    workflows: dict[str, WorkflowStats]
    activities: dict[str, ActivityStats]
    #: per pipeline, per task (``engine.pipeline`` runs only)
    pipelines: dict[str, dict[str, TaskStats]] = {}


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _scan_activities(
    events: Iterable[Event],
    running: bool,
    acts: dict[str, ActivityStats],
    lat: dict[str, list[float]],
) -> None:
    open_: dict[int, ActivityScheduled] = {}
    for ev in events:
        if isinstance(ev, ActivityScheduled):
            open_[ev.seq] = ev
            acts.setdefault(ev.activity_type, ActivityStats()).scheduled += 1
        elif isinstance(ev, ActivityAttemptFailed):
            sched = open_.get(ev.seq)
            if sched is not None:
                acts[sched.activity_type].retried += 1
        elif isinstance(ev, ActivityCompleted | ActivityFailed):
            sched = open_.pop(ev.seq, None)
            if sched is None:
                continue
            a = acts[sched.activity_type]
            if isinstance(ev, ActivityCompleted):
                a.completed += 1
            else:
                a.failed += 1
            seconds = (ev.time - sched.time).total_seconds()
            lat.setdefault(sched.activity_type, []).append(max(0.0, seconds))
    for sched in open_.values():
        if running:
            acts[sched.activity_type].in_flight += 1
        else:
            acts[sched.activity_type].abandoned += 1


def _count_run(w: WorkflowStats, info: WorkflowInfo, now: datetime) -> None:
    w.total += 1
    match info.status:
        case Status.RUNNING:
            w.running += 1
            if info.blocked:
                w.blocked += 1
            elif info.due is not None and info.due <= now:
                w.due += 1
            else:
                w.waiting += 1
        case Status.COMPLETED:
            w.completed += 1
        case Status.FAILED:
            w.failed += 1
        case Status.CANCELLED:
            w.cancelled += 1
        case Status.TERMINATED:
            w.terminated += 1
        case Status.CONTINUED_AS_NEW:
            w.continued_as_new += 1


def compute(
    store: Store,
    *,
    type: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    decode: Callable[..., Any] | None = None,
) -> Stats:
    """Scan every run (``Store.runs`` + ``read``) of ``type`` started since ``since``.

    ``decode`` (``Client.decode``) reads pipeline runs' payloads for per-task stats.
    """
    now = now or datetime.now(UTC)
    infos = [
        i
        for i in store.runs()
        if (type is None or i.type == type) and (since is None or i.start_time >= since)
    ]
    workflows: dict[str, WorkflowStats] = {}
    acts: dict[str, ActivityStats] = {}
    lat: dict[str, list[float]] = {}
    events = 0
    tasks = TaskStatsCollector(decode=decode if decode is not None else Client(store).decode)
    for n, info in enumerate(infos, 1):
        _count_run(workflows.setdefault(info.type, WorkflowStats()), info, now)
        history = store.read(info.id, info.run_id)
        events += len(history)
        _scan_activities(history, info.status is Status.RUNNING, acts, lat)
        tasks.add(history)
        if progress is not None:
            progress(n, len(infos))
    for name, values in lat.items():
        acts[name].p50 = percentile(values, 50)
        acts[name].p95 = percentile(values, 95)
    return Stats(
        runs=len(infos),
        events=events,
        workflows=dict(sorted(workflows.items())),
        activities=dict(sorted(acts.items())),
        pipelines=tasks.result(),
    )


_WF_COLUMNS = (
    ("running", "RUNNING"),
    ("due", "DUE"),
    ("blocked", "BLOCKED"),
    ("completed", "COMPLETED"),
    ("failed", "FAILED"),
    ("cancelled", "CANCELLED"),
    ("terminated", "TERMINATED"),
    ("continued_as_new", "CONTINUED"),
    ("total", "TOTAL"),
)
_ACT_COLUMNS = (
    ("scheduled", "SCHEDULED"),
    ("in_flight", "IN FLIGHT"),
    ("completed", "COMPLETED"),
    ("failed", "FAILED"),
    ("retried", "RETRIED"),
    ("abandoned", "ABANDONED"),
)

_TASK_COLUMNS = (
    ("pending", "PENDING"),
    ("in_flight", "IN FLIGHT"),
    ("completed", "COMPLETED"),
    ("failed", "FAILED"),
    ("retried", "RETRIED"),
    ("reused", "REUSED"),
    ("abandoned", "ABANDONED"),
)


@click.command()
@click.option("--type", "type_", default=None, metavar="TYPE", help="Only this workflow type.")
@click.option("--since", default=None, help="Runs started since: ISO time or a duration ago (7d).")
@output_options()
@pass_state
def stats(state: State, type_: str | None, since: str | None) -> None:
    """Per workflow type and per activity type: counts, retries and latency.

    \b
    Workflow types: runs by status; RUNNING splits into DUE (a worker should
    be on it now), BLOCKED (a worker cannot progress it) and waiting.
    Activity types: SCHEDULED, IN FLIGHT (no outcome yet, run still running),
    COMPLETED ("acked"), FAILED (for good), RETRIED (failed attempts that
    were retried), ABANDONED (its run closed first), and p50/p95 latency from
    scheduling to the final outcome, retries included.  Scans every history.

    \b
    Examples:
      tpp stats
      tpp stats --type subscription --since 7d --output json
    """
    store = state.store()
    with progress_bar(state, "scanning histories") as update:
        result = compute(
            store,
            type=type_,
            since=parse_time(since, "--since"),
            progress=update,
            decode=Client(store, cas=state.cas(), codec=state.codec()).decode,
        )
    if state.json:
        emit_json(result)
        return
    out = state.console
    wf = Table(title="Workflows", title_justify="left", box=None, pad_edge=False)
    wf.add_column("TYPE")
    for _, label in _WF_COLUMNS:
        wf.add_column(label, justify="right")
    for name, w in result.workflows.items():
        wf.add_row(name, *[str(getattr(w, field)) for field, _ in _WF_COLUMNS])
    out.print(wf)
    act = Table(title="Activities", title_justify="left", box=None, pad_edge=False)
    act.add_column("TYPE")
    for _, label in (*_ACT_COLUMNS, ("p50", "P50"), ("p95", "P95")):
        act.add_column(label, justify="right")
    for name, a in result.activities.items():
        cells: list[Any] = [str(getattr(a, field)) for field, _ in _ACT_COLUMNS]
        act.add_row(name, *cells, format_seconds(a.p50), format_seconds(a.p95))
    out.print()
    out.print(act)
    if result.pipelines:
        pt = Table(title="Pipeline tasks", title_justify="left", box=None, pad_edge=False)
        pt.add_column("PIPELINE")
        pt.add_column("TASK")
        for _, label in _TASK_COLUMNS:
            pt.add_column(label, justify="right")
        for pipeline_name, per_task in result.pipelines.items():
            for task, t in per_task.items():
                pt.add_row(pipeline_name, task, *[str(getattr(t, f)) for f, _ in _TASK_COLUMNS])
        out.print()
        out.print(pt)
    out.print(f"{result.runs} run(s), {result.events} events scanned", markup=False)
