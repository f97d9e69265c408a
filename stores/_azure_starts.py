"""AzureBlobStore's starts: a run is created under its id-reuse policy, exactly once.

A run exists once segment 0 of its ordinal is created with ``If-None-Match: *``
(``Log.create``), after the id's previous run was seen closed: one running
execution per id.  Its partition's inbox gets a ``Start`` record first, so a
starter that dies midway leaves a record, never a run nobody knows; the
partition's holder finishes such a start when what started it landed
(``_resume``: a continue-as-new, a child), and drops it otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from engine._errors import (
    StoreError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTerminated,
    with_index,
)
from engine._info import IdReusePolicy

from . import _azure_format as fmt
from ._azure_base import StoreBase
from ._azure_chains import Entry
from ._azure_runs import Run
from ._summary import (
    RunSummary,
    check_start,
    child_refused,
    is_repeated_child,
)

__all__ = ["Starts"]

log = logging.getLogger("temporalpp.stores.azure")

_TRIES: Final = 8


def _same_start(a: WorkflowStarted, b: WorkflowStarted) -> bool:
    return with_index(a, -1) == with_index(b, -1)


class Starts(StoreBase):
    """Creating runs (a part of ``AzureBlobStore``)."""

    if TYPE_CHECKING:

        def _append_run(
            self,
            run: Run,
            events: list[Event],
            expected: int | None,
            starts: Sequence[WorkflowStarted],
        ) -> int: ...
        def _external(self, workflow_id: str, run_id: str, event: Event) -> None: ...

    def _start(self, started: WorkflowStarted, policy: IdReusePolicy, *, noted: bool) -> Run:
        """Create a run under the id-reuse policy (``noted``: its Start record is written)."""
        wid = started.workflow_id
        queue = started.task_queue

        def note() -> None:
            nonlocal noted
            if not noted:
                self._parts.write(queue, wid, fmt.Start(started))
                noted = True

        try:
            run: Run | None = None
            if not self._index.known(wid):  # an id this handle never saw: try ordinal 0 at once
                note()
                run = self._log.create(wid, 0, started)
            for _ in range(_TRIES):
                if run is not None:
                    break
                chain = self._index.chain(wid)
                same = [e for e in chain if e.started.run_id == started.run_id]
                if same and _same_start(same[0].started, started):
                    # this very start, made by a repair racing us: done (idempotent)
                    run = self._get(wid, started.run_id)
                    break
                if same:
                    raise WorkflowAlreadyStartedError(
                        f"workflow {wid!r} already has a run {started.run_id!r}"
                    )
                last = self._summary(chain[-1]) if chain else None
                victim = check_start(started, [last] if last else [], policy)
                if victim is not None:
                    self._terminate(victim.started, started)
                note()
                run = self._log.create(wid, chain[-1].ordinal + 1 if chain else 0, started)
            if run is None:
                raise StoreError(f"Azure store {self._where}: {wid!r} kept starting elsewhere")
        except WorkflowError:
            if noted:
                with contextlib.suppress(WorkflowError):
                    self._parts.write(queue, wid, fmt.Abandon(wid, started.run_id))
            raise
        self._remember(run)
        part = self._parts.holding(run)
        if part is not None:
            self._parts._adopt(part, run)
        return run

    def _resume(self, started: WorkflowStarted) -> Run | None:
        """A Start record whose run is missing: create the run if what started it landed.

        The batch that continues a run as new, or starts a child, lands before the
        new run is created; a handle that died in between leaves the record, and
        the partition's holder finishes the start (racing the starter, if it is
        alive, is harmless: a start is idempotent).  A client's start is its
        client's to finish: a record of one that never happened is dropped.
        """
        link = started.continued_from or started.parent
        if link is None:
            return None
        try:
            source = self._get(link.workflow_id, link.run_id)
        except WorkflowNotFoundError:
            return None
        if started.continued_from is not None:
            closing = source.summary.closing
            if not (
                isinstance(closing, WorkflowContinuedAsNew) and closing.new_run_id == started.run_id
            ):
                return None
        else:
            events = source.events
            asked = any(
                isinstance(ev, ChildWorkflowStarted)
                and ev.seq == link.seq
                and ev.workflow_id == started.workflow_id
                for ev in events
            )
            answered = any(
                isinstance(ev, ChildWorkflowCompleted | ChildWorkflowFailed) and ev.seq == link.seq
                for ev in events
            )
            if not asked or answered or not source.summary.running:
                return None
        log.warning("finishing the start of %r run %s (its starter stopped midway)",
                    started.workflow_id, started.run_id)  # fmt: skip
        self._start_from(started)
        return self._runs.get((started.workflow_id, started.run_id))

    def _summary(self, entry: Entry) -> RunSummary:
        """The entry's summary; one that metadata calls running is read to be sure."""
        summary = entry.summary()
        if summary.running:
            run = self._fresh(entry.started.workflow_id, entry.started.run_id, entry.ordinal)
            if run is not None:
                return run.summary
        return summary

    def _terminate(self, victim: WorkflowStarted, by: WorkflowStarted) -> None:
        run = self._get(victim.workflow_id, victim.run_id)
        event = WorkflowTerminated(
            time=by.time,
            reason=f"terminated by a new start ({by.run_id}) with TERMINATE_IF_RUNNING",
        )
        self._append_run(run, [event], None, ())

    def _start_from(self, started: WorkflowStarted) -> None:
        """A run a batch starts: a child (idempotent by parent link) or a continuation."""
        wid = started.workflow_id
        try:
            if started.parent is not None:
                chain = self._index.chain(wid)
                if chain and is_repeated_child(started, [chain[-1].summary()]):
                    self._parts.write(started.task_queue, wid, fmt.Abandon(wid, started.run_id))
                    return  # this child exists already (a retried decision)
            self._start(started, IdReusePolicy.ALLOW_DUPLICATE, noted=True)
        except WorkflowAlreadyStartedError as exc:
            if started.parent is None:
                log.error("continue-as-new of %r could not start run %s: %s", wid,
                          started.run_id, exc)  # fmt: skip
                return
            self._external(*child_refused(started, exc))

    def _check_continue(self, run: Run, started: WorkflowStarted, closes: bool) -> None:
        """Refuse, before anything lands, a continue-as-new whose next run cannot start."""
        wid = started.workflow_id
        chain = self._index.chain(wid)
        if any(e.started.run_id == started.run_id for e in chain):
            raise WorkflowAlreadyStartedError(
                f"workflow {wid!r} already has a run {started.run_id!r}"
            )
        if chain:
            last = self._summary(chain[-1])
            if last.running and not (last.started.run_id == run.run_id and closes):
                raise WorkflowAlreadyStartedError(
                    f"workflow {wid!r} is already running (run {last.started.run_id})"
                )
