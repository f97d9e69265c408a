"""What a store derives from a run's events: status, what is due, cross-run effects.

Pure and shared by every backend, so the ready and visibility indexes mean the
same everywhere and can be rebuilt from the logs alone: fold a run's events
through ``RunSummary.apply`` and the index entry is back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from engine._errors import (
    ConflictError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
)
from engine._events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Failure,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

__all__ = [
    "DUE_NOW",
    "RunSummary",
    "check_decision",
    "check_start",
    "child_refused",
    "is_repeated_child",
    "parent_notice",
    "select_page",
]

#: The due time of a run that needs a worker as soon as possible.
DUE_NOW: Final = datetime(1970, 1, 1, tzinfo=UTC)

_WAKING: Final = frozenset(
    {
        ActivityCompleted,
        ActivityFailed,
        TimerFired,
        SignalReceived,
        CancelRequested,
        ChildWorkflowCompleted,
        ChildWorkflowFailed,
    }
)
_CLOSING_STATUS: Final[dict[type, Status]] = {
    WorkflowCompleted: Status.COMPLETED,
    WorkflowFailed: Status.FAILED,
    WorkflowCancelled: Status.CANCELLED,
    WorkflowTerminated: Status.TERMINATED,
    WorkflowContinuedAsNew: Status.CONTINUED_AS_NEW,
}


class RunSummary:
    """The index entry of one run, folded from its events."""

    __slots__ = (
        "activities",
        "blocked",
        "close_time",
        "closing",
        "last_input",
        "last_seen",
        "length",
        "not_before",
        "started",
        "status",
        "timers",
    )

    def __init__(self, started: WorkflowStarted) -> None:
        self.started = started
        self.status = Status.RUNNING
        self.close_time: datetime | None = None
        self.closing: Event | None = None
        self.length = 1
        self.last_input = 0  # WorkflowStarted wants the first decision
        self.last_seen = 0
        self.activities: dict[int, datetime] = {}  # seq -> when to run it (DUE_NOW or retry_at)
        self.timers: dict[int, datetime] = {}
        self.not_before: datetime | None = None  # worker backoff (blocked runs)
        self.blocked: str | None = None

    @classmethod
    def fold(cls, events: Sequence[Event]) -> RunSummary:
        """Rebuild a summary from a whole history."""
        first = events[0]
        if not isinstance(first, WorkflowStarted):
            raise ValueError("a history must begin with WorkflowStarted")
        summary = cls(first)
        summary.apply(events[1:])
        return summary

    def apply(self, events: Iterable[Event]) -> None:
        """Fold events appended after the ones already applied."""
        for ev in events:
            index = self.length
            self.length = index + 1
            cls = type(ev)
            if cls in _WAKING:
                self.last_input = index
                if cls is TimerFired:
                    self.timers.pop(ev.seq, None)  # type: ignore[union-attr]
                elif cls is ActivityCompleted or cls is ActivityFailed:
                    self.activities.pop(ev.seq, None)  # type: ignore[union-attr]
            elif cls is WorkflowTaskCompleted:
                self.last_seen = ev.seen  # type: ignore[union-attr]
                self.blocked = None
                self.not_before = None
            elif cls is ActivityScheduled:
                self.activities[ev.seq] = DUE_NOW  # type: ignore[union-attr]
            elif cls is ActivityAttemptFailed:
                if ev.seq in self.activities:  # type: ignore[union-attr]
                    self.activities[ev.seq] = ev.retry_at  # type: ignore[union-attr]
            elif cls is TimerStarted:
                self.timers[ev.seq] = ev.fire_at  # type: ignore[union-attr]
            elif cls is TimerCancelled:
                self.timers.pop(ev.seq, None)  # type: ignore[union-attr]
            status = _CLOSING_STATUS.get(cls)
            if status is not None:
                self.status = status
                self.close_time = ev.time
                self.closing = ev
                self.activities.clear()
                self.timers.clear()

    @property
    def running(self) -> bool:
        return self.status is Status.RUNNING

    @property
    def due(self) -> datetime | None:
        """When the run next needs a worker; ``None`` if closed or waiting on the outside."""
        if self.status is not Status.RUNNING:
            return None
        due: datetime | None = None
        if self.last_input >= self.last_seen:
            due = DUE_NOW
        else:
            for when in self.activities.values():
                if due is None or when < due:
                    due = when
            for when in self.timers.values():
                if due is None or when < due:
                    due = when
        if due is not None and self.not_before is not None and self.not_before > due:
            return self.not_before
        return due

    def info(self) -> WorkflowInfo:
        s = self.started
        return WorkflowInfo(
            id=s.workflow_id,
            run_id=s.run_id,
            type=s.workflow_type,
            status=self.status,
            task_queue=s.task_queue,
            start_time=s.time,
            close_time=self.close_time,
            history_length=self.length,
            parent=s.parent,
            due=self.due,
            blocked=self.blocked,
        )


def check_start(
    started: WorkflowStarted, runs: Sequence[RunSummary], policy: IdReusePolicy
) -> RunSummary | None:
    """Apply the id-reuse policy to a new run; ``runs`` are the id's runs, oldest first.

    Returns the running run that ``TERMINATE_IF_RUNNING`` must terminate, or None;
    raises ``WorkflowAlreadyStartedError`` when the start is refused.
    """
    if not runs:
        return None
    last = runs[-1]
    wid = started.workflow_id
    if last.running:
        if policy is IdReusePolicy.TERMINATE_IF_RUNNING:
            return last
        raise WorkflowAlreadyStartedError(
            f"workflow {wid!r} is already running (run {last.started.run_id}); signal it, "
            f"wait for it, or start with id_reuse=TERMINATE_IF_RUNNING"
        )
    if policy is IdReusePolicy.REJECT_DUPLICATE:
        raise WorkflowAlreadyStartedError(
            f"workflow {wid!r} has run before and the id-reuse policy is REJECT_DUPLICATE"
        )
    if policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY and last.status in (
        Status.COMPLETED,
        Status.CONTINUED_AS_NEW,
    ):
        raise WorkflowAlreadyStartedError(
            f"workflow {wid!r} last completed successfully and the id-reuse policy is "
            f"ALLOW_DUPLICATE_FAILED_ONLY"
        )
    return None


def check_decision(
    summary: RunSummary, events: Sequence[Event], tail: Sequence[Event], expected: int | None
) -> None:
    """Raise if a batch may not be appended to this run now.

    ``tail`` holds the run's events from ``expected`` on (empty when it is the
    current length); only decision batches (``expected`` not None) consult it.
    """
    if not summary.running:
        raise WorkflowAlreadyClosedError(
            f"workflow {summary.started.workflow_id!r} run {summary.started.run_id} is "
            f"{summary.status.value.lower()}; it takes no more events"
        )
    if expected is None:
        return
    if expected > summary.length or expected < 1:
        raise ConflictError(f"decision made on {expected} events, but the run has {summary.length}")
    if expected == summary.length:
        return
    if not events or type(events[0]) is not WorkflowTaskCompleted:
        raise ConflictError("a coalesced batch must land exactly where it was made")
    for ev in tail:
        if type(ev) is WorkflowTaskCompleted:
            raise ConflictError(
                f"another decision was appended at event {ev.index} since this one was made"
            )


def parent_notice(summary: RunSummary) -> tuple[str, str, Event] | None:
    """The event a closed child run owes its parent, as (workflow id, run id, event)."""
    parent = summary.started.parent
    closing = summary.closing
    if parent is None or closing is None or isinstance(closing, WorkflowContinuedAsNew):
        return None
    run_id = summary.started.run_id
    event: Event
    if isinstance(closing, WorkflowCompleted):
        event = ChildWorkflowCompleted(
            time=closing.time, seq=parent.seq, result=closing.result, run_id=run_id
        )
    else:
        if isinstance(closing, WorkflowFailed):
            error = closing.error
        elif isinstance(closing, WorkflowCancelled):
            error = Failure(type="CancelledError", message=closing.reason or "cancelled")
        else:
            assert isinstance(closing, WorkflowTerminated)
            error = Failure(type="WorkflowTerminated", message=closing.reason or "terminated")
        event = ChildWorkflowFailed(time=closing.time, seq=parent.seq, error=error, run_id=run_id)
    return parent.workflow_id, parent.run_id, event


def is_repeated_child(started: WorkflowStarted, runs: Sequence[RunSummary]) -> bool:
    """Whether a batch's child start names a child that already exists (a retried decision).

    A child's next run (continue-as-new) keeps its parent link but is not a repeat.
    """
    return (
        started.parent is not None
        and started.continued_from is None
        and bool(runs)
        and runs[-1].started.parent == started.parent
    )


def child_refused(started: WorkflowStarted, exc: Exception) -> tuple[str, str, Event]:
    """The ``ChildWorkflowFailed`` a parent gets when its child could not start."""
    parent = started.parent
    assert parent is not None
    return (
        parent.workflow_id,
        parent.run_id,
        ChildWorkflowFailed(
            time=started.time,
            seq=parent.seq,
            error=Failure(type=type(exc).__name__, message=str(exc)),
        ),
    )


def _list_order(info: WorkflowInfo) -> tuple[datetime, str, str]:
    return (info.start_time, info.id, info.run_id)


def _decode_token(token: str) -> tuple[datetime, str, str]:
    try:
        when, wid, rid = json.loads(token)
        start = datetime.fromisoformat(when)
        if start.tzinfo is None:
            raise ValueError
        return start, _unhex(wid), _unhex(rid)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(f"invalid page token {token!r}") from None


def _hex(text: str) -> str:
    # NB: hex of UTF-8 with surrogatepass is exact; JSON escapes would fuse a lone
    # high and low surrogate that stand next to each other into one character
    return text.encode("utf-8", "surrogatepass").hex()


def _unhex(text: str) -> str:
    return bytes.fromhex(text).decode("utf-8", "surrogatepass")


def select_page(
    summaries: Iterable[RunSummary],
    *,
    status: Status | None,
    type: str | None,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
    page_token: str | None,
) -> WorkflowPage:
    """``Store.list`` over summaries held in memory: filter, count, sort, page.

    Newest start first; counts per status over every filter but ``status``; the
    token is the last item's sort key (a keyset, so runs started since never
    shift pages), with the ids in hex so that any string round-trips exactly.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    after = _decode_token(page_token) if page_token else None
    matched: list[WorkflowInfo] = []
    counts: dict[Status, int] = {}
    for s in summaries:
        start = s.started
        if type is not None and start.workflow_type != type:
            continue
        if since is not None and start.time < since:
            continue
        if until is not None and start.time >= until:
            continue
        counts[s.status] = counts.get(s.status, 0) + 1
        if status is None or s.status is status:
            matched.append(s.info())
    matched.sort(key=_list_order, reverse=True)
    if after is not None:
        matched = [i for i in matched if _list_order(i) < after]
    page = matched[:page_size]
    token = None
    if len(matched) > page_size:
        last = page[-1]
        token = json.dumps([last.start_time.isoformat(), _hex(last.id), _hex(last.run_id)])
    return WorkflowPage(items=page, next_page_token=token, counts=counts)
