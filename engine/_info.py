"""Visibility records: what ``Client.describe`` and ``Client.list`` return."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from ._events import Link

__all__ = ["IdReusePolicy", "Status", "WorkflowInfo", "WorkflowPage"]


class Status(enum.Enum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"


class IdReusePolicy(enum.Enum):
    """Temporal's workflow-id reuse policies; a running id is rejected except by the last."""

    ALLOW_DUPLICATE = "ALLOW_DUPLICATE"
    ALLOW_DUPLICATE_FAILED_ONLY = "ALLOW_DUPLICATE_FAILED_ONLY"
    REJECT_DUPLICATE = "REJECT_DUPLICATE"
    TERMINATE_IF_RUNNING = "TERMINATE_IF_RUNNING"


class WorkflowInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run as visibility sees it.

    ``due`` is when the run next needs a worker (a decision, a timer, a retry),
    ``None`` while it waits only on signals or children.  ``blocked`` says why a
    worker could not make progress (unknown type, non-determinism), if it could not.
    """

    id: str
    run_id: str
    type: str
    status: Status
    task_queue: str
    start_time: datetime
    close_time: datetime | None = None
    history_length: int = 0
    parent: Link | None = None
    due: datetime | None = None
    blocked: str | None = None


class WorkflowPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of ``list`` results, the token for the next page, and counts per status."""

    items: list[WorkflowInfo]
    next_page_token: str | None
    counts: dict[Status, int]
