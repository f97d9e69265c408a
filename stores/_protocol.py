"""The event-store protocol: what every backend implements, and nothing more.

A store keeps, per workflow id, a chain of runs; per run an append-only history.
Rules every backend must prove with ``tests/store_conformance.py``:

* **Batches are atomic.**  ``append`` takes many runs' batches at once (group
  commit); each batch is there whole or not at all, also after a crash.
* **External batches** (``expected_length=None``: signals, cancel requests,
  activity results, timer firings) append unconditionally to a *running* run.
* **Decision batches** (``expected_length=N``) append only if no decision was
  appended at or after index N.  A batch that begins with its
  ``WorkflowTaskCompleted`` may land after external events that came in since
  (its ``seen`` stays true); a batch that coalesces external events before its
  decision must land exactly at N.  Otherwise the result is ``ConflictError``.
* **Cross-run effects are the store's**, applied atomically with the batch (or
  recoverably): ``AppendBatch.starts`` creates runs (children, the next run of a
  continue-as-new); a child whose id is taken gets its parent a
  ``ChildWorkflowFailed``; a batch that closes a run with a parent appends
  ``ChildWorkflowCompleted``/``ChildWorkflowFailed`` to the parent.
* **One running execution per workflow id**, with Temporal's id-reuse policies.
* **Claims**: ``claim`` hands a worker due runs and marks them owned; two
  workers never own one run; a dead owner's runs become claimable (at once
  where the OS tells, or when its lease expires).  Memory, files and SQLite
  claim per run; Azure per partition of (task queue, id).
* **Ready index**: what is due (a decision needed, a timer, a retry, an
  activity to run) is found without touching closed runs.
* **Visibility**: ``list`` pages with counts per status; ``runs`` iterates all.
* Any string is a valid workflow id; ids are data, never paths.

Errors about workflows and stored data are ``engine``'s (``WorkflowNotFoundError``,
``ConflictError``, ``CorruptionError``, ...), translated from the backend's own
with ``raise ... from exc``; misuse raises the builtin ones (``TypeError`` for a
non-string id, ``ValueError`` for a bad page token, ``RuntimeError`` for a
closed store).

Liveness: where the OS can tell (a lock file held by the owner's process), an
owner is alive exactly while its lock is held, and ``lease`` is not consulted;
a backend without such a signal (Azure) expires claims ``lease`` seconds after
the owner's last ``claim`` or ``renew``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import msgspec

if TYPE_CHECKING:  # NB: engine imports this module; at run time it needs nothing of engine
    from engine._events import Event, Payload, WorkflowStarted
    from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

__all__ = ["AppendBatch", "AppendResult", "Claims", "RunRef", "Store"]


class RunRef(msgspec.Struct, frozen=True):
    """One run of one workflow id."""

    workflow_id: str
    run_id: str


class AppendBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Events for one run, appended atomically.

    ``expected_length`` is ``None`` for external events, or the history length a
    decision was made on.  ``starts`` are runs to create with this batch.
    """

    workflow_id: str
    run_id: str
    events: Sequence[Event]
    expected_length: int | None = None
    starts: Sequence[WorkflowStarted] = ()


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Where a batch landed (``index`` of its first event), or why it did not."""

    index: int = -1
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """Runs now owned by the claiming worker, and when the next one falls due."""

    runs: list[RunRef]
    next_due: datetime | None


@runtime_checkable
class Store(Protocol):
    """An event store (see the module docstring for the rules)."""

    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = ...,  # default: IdReusePolicy.ALLOW_DUPLICATE
    ) -> None:
        """Start a run (its history is ``[started]``), due at once.

        Raises ``WorkflowAlreadyStartedError`` when the id is running (unless
        ``TERMINATE_IF_RUNNING``, which terminates it first) or the policy
        refuses the id's closed runs.
        """
        ...

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        """Append many runs' batches in one group commit; one result per batch.

        Per batch: ``WorkflowNotFoundError`` for an unknown run,
        ``WorkflowAlreadyClosedError`` for a closed one, ``ConflictError`` for a
        lost decision race.  Events get their ``index`` set by the store.
        """
        ...

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        """Events of a run (the latest when ``run_id`` is None) from index ``after`` on."""
        ...

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        """One run (the latest when ``run_id`` is None); ``WorkflowNotFoundError`` if none."""
        ...

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
        """Runs, newest start first, filtered; counts per status over the filter."""
        ...

    def runs(self) -> Iterator[WorkflowInfo]:
        """Every run of every workflow id (for GC, copy and stats)."""
        ...

    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        """Take up to ``limit`` runs due at ``now`` (workflow time) that nobody live owns.

        ``lease`` (seconds of real monotonic time) bounds how long the claims
        outlive ``owner`` if it dies without the OS telling.
        """
        ...

    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        """Keep ``owner``'s claims alive; returns the runs it still owns."""
        ...

    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        """Give a run back.  ``not_before`` delays it (backoff); ``blocked`` says why."""
        ...

    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        """Store (when given) and return the heartbeat details of activity ``seq``.

        One slot per running activity, outside the history; cleared when the
        activity's outcome is appended.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
