"""Events and runs as text for people: ``tpp workflow show`` and ``describe``.

Payloads are shown as stored: inline JSON as its text, and the envelopes of
the codec chain (compressed, encrypted, in the CAS) by kind and size; nothing
is fetched or decrypted to print a history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from .._events import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    CasRef,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    CommandRecord,
    Compressed,
    Encrypted,
    Event,
    Failure,
    Inline,
    Json,
    Link,
    MarkerRecorded,
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
from ._common import format_duration, format_time

__all__ = ["Pending", "event_line", "pending", "show_value"]

#: The fields ``tpp workflow show`` prints per event kind (``--detailed`` prints them all).
SUMMARY: Final[dict[type, tuple[str, ...]]] = {
    WorkflowStarted: (
        "workflow_type",
        "task_queue",
        "input",
        "parent",
        "continued_from",
        "reset_from",
    ),
    WorkflowTaskCompleted: ("seen",),
    ActivityScheduled: ("seq", "activity_type", "args"),
    ActivityCompleted: ("seq", "result", "attempt"),
    ActivityFailed: ("seq", "error", "attempt"),
    ActivityAttemptFailed: ("seq", "attempt", "error", "retry_at"),
    TimerStarted: ("seq", "duration", "fire_at"),
    TimerFired: ("seq",),
    TimerCancelled: ("seq",),
    SignalReceived: ("name", "payload"),
    CancelRequested: ("reason",),
    ChildWorkflowStarted: ("seq", "workflow_type", "workflow_id", "args"),
    ChildWorkflowCompleted: ("seq", "result"),
    ChildWorkflowFailed: ("seq", "error"),
    MarkerRecorded: ("name", "seq", "change_id", "value", "error"),
    WorkflowCompleted: ("result",),
    WorkflowFailed: ("error",),
    WorkflowCancelled: ("reason",),
    WorkflowTerminated: ("reason",),
    WorkflowContinuedAsNew: ("input", "new_run_id"),
}
_BARE: Final = re.compile(r"[\w.:/@#+-]+")
_SHORT: Final = 60


def _clip(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def show_value(value: Any, *, limit: int | None = _SHORT) -> str:
    """One field's value as short text (``limit`` clips payloads; ``None`` keeps them whole)."""
    match value:
        case Json(text=text):
            return _clip(text, limit)
        case Inline(data=data, encoding=encoding):
            return f"<{encoding} {len(data)} B>"
        case Compressed(data=data, algorithm=algorithm):
            return f"<{algorithm} {len(data)} B>"
        case Encrypted(key_id=key_id, data=data):
            return f"<encrypted key={key_id} {len(data)} B>"
        case CasRef(digest=digest, size=size):
            return f"<cas {digest if limit is None else _clip(digest, 19)} {size} B>"
        case Failure():
            text = failure_text(value, limit is None)
            return json.dumps(_clip(text, limit and 2 * limit), ensure_ascii=False)
        case Link():
            text = f"{value.workflow_id}/{value.run_id}"
            extra = [f"{k}={getattr(value, k)}" for k in ("seq", "event") if getattr(value, k)]
            if value.reason:
                extra.append(f"reason={json.dumps(value.reason, ensure_ascii=False)}")
            return text + (f"({', '.join(extra)})" if extra else "")
        case datetime():
            return format_time(value)
        case timedelta():
            return format_duration(value)
        case str():
            return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
        case tuple() if value and isinstance(value[0], CommandRecord):
            return "[" + ", ".join(_command(c) for c in value) + "]"
        case dict():
            inner = ", ".join(f"{k}={show_value(v, limit=limit)}" for k, v in value.items())
            return "{" + inner + "}"
        case msgspec.Struct():
            return json.dumps(msgspec.to_builtins(value), ensure_ascii=False)
        case _:
            return str(value)


def failure_text(failure: Failure, causes: bool = True) -> str:
    """``Type: message (non-retryable) (caused by Type: message)``."""
    text = f"{failure.type}: {failure.message}"
    if failure.non_retryable:
        text += " (non-retryable)"
    if causes and failure.cause is not None:
        text += f" (caused by {failure_text(failure.cause)})"
    return text


def _command(record: CommandRecord) -> str:
    """``2:signal(decision, timeout 14d)``, ``5:any(2)``."""
    inner = [record.name] if record.name else []
    if record.detail and record.name:  # a signal wait's timeout, in seconds
        inner.append(f"timeout {format_duration(timedelta(seconds=record.detail))}")
    elif record.detail:  # the number of members of All/Any
        inner.append(f"{record.detail:g}")
    return f"{record.seq}:{record.kind}({', '.join(inner)})"


def _fields(event: Event, detailed: bool) -> list[tuple[str, Any]]:
    names = (
        [f for f in event.__struct_fields__ if f not in ("index", "time")]
        if detailed
        else SUMMARY.get(type(event), ())
    )
    defaults = dict(zip(event.__struct_fields__, _defaults(type(event)), strict=True))
    out = []
    for name in names:
        value = getattr(event, name)
        if value is None or (name in defaults and defaults[name] == value):
            continue
        out.append((name, value))
    return out


_NO_DEFAULT = object()


def _defaults(cls: type) -> list[Any]:
    return [
        _NO_DEFAULT if f.default is msgspec.NODEFAULT else f.default
        for f in msgspec.structs.fields(cls)
    ]


def event_line(event: Event, *, detailed: bool = False) -> str:
    """``  12  2026-11-26T10:12:35.123Z  ActivityScheduled  seq=1 activity_type=charge ...``."""
    limit = None if detailed else _SHORT
    fields = " ".join(f"{k}={show_value(v, limit=limit)}" for k, v in _fields(event, detailed))
    return (
        f"{event.index:>5}  {format_time(event.time)}  {type(event).__name__:<23} {fields}".rstrip()
    )


class Pending(msgspec.Struct, kw_only=True):
    """What a run waits for: activities, timers, children (for ``describe``)."""

    activities: list[dict[str, Any]]
    timers: list[dict[str, Any]]
    children: list[dict[str, Any]]
    last_failure: str | None = None


def pending(history: Sequence[Event]) -> Pending:
    """The open activities (with attempts and next retry), timers and children of a run."""
    activities: dict[int, dict[str, Any]] = {}
    timers: dict[int, dict[str, Any]] = {}
    children: dict[int, dict[str, Any]] = {}
    last_failure: str | None = None
    for ev in history:
        match ev:
            case ActivityScheduled(seq=seq, activity_type=activity_type):
                activities[seq] = {
                    "seq": seq,
                    "activity_type": activity_type,
                    "scheduled": format_time(ev.time),
                    "attempts_failed": 0,
                    "retry_at": None,
                    "last_failure": None,
                }
            case ActivityAttemptFailed(seq=seq):
                if seq in activities:
                    activities[seq]["attempts_failed"] = ev.attempt
                    activities[seq]["retry_at"] = format_time(ev.retry_at)
                    activities[seq]["last_failure"] = failure_text(ev.error)
                last_failure = failure_text(ev.error)
            case ActivityCompleted(seq=seq) | ActivityFailed(seq=seq):
                activities.pop(seq, None)
                if isinstance(ev, ActivityFailed):
                    last_failure = failure_text(ev.error)
            case TimerStarted(seq=seq, fire_at=fire_at, duration=duration):
                timers[seq] = {
                    "seq": seq,
                    "fire_at": format_time(fire_at),
                    "duration": format_duration(duration),
                }
            case TimerFired(seq=seq) | TimerCancelled(seq=seq):
                timers.pop(seq, None)
            case ChildWorkflowStarted(seq=seq):
                children[seq] = {
                    "seq": seq,
                    "workflow_id": ev.workflow_id,
                    "type": ev.workflow_type,
                }
            case ChildWorkflowCompleted(seq=seq) | ChildWorkflowFailed(seq=seq):
                children.pop(seq, None)
            case _:
                pass
    if history and type(history[-1]) in CLOSING_EVENTS:
        return Pending(activities=[], timers=[], children=[], last_failure=last_failure)
    return Pending(
        activities=list(activities.values()),
        timers=list(timers.values()),
        children=list(children.values()),
        last_failure=last_failure,
    )
