"""AzureBlobStore's appends: a batch onto its run, and what must follow one.

After a batch landed: a closed run's effects (its status in metadata, its
parent's notice, its heartbeat slots deleted), the runs it starts (children,
a continuation), and the ready index of this handle if it holds the run's
partition, or else a ``Touch`` in the partition's inbox for its holder.  A
Touch carries where the batch landed and, up to ``_TOUCH_EVENTS`` bytes, its
events, so the holder need not read the history.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from engine._errors import (
    StoreError,
    WorkflowAlreadyClosedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    CLOSING_EVENTS,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    WorkflowStarted,
)

from . import _azure_format as fmt
from ._azure_base import StoreBase
from ._azure_blobs import Changed, Missing
from ._azure_runs import Run
from ._protocol import AppendBatch
from ._summary import (
    check_decision,
    parent_notice,
)

__all__ = ["Appends"]

log = logging.getLogger("temporalpp.stores.azure")

_TRIES: Final = 8
_TOUCH_EVENTS: Final = 16 * 1024  # bytes of events a Touch carries at most (else: re-read)


class Appends(StoreBase):
    """Appending batches (a part of ``AzureBlobStore``)."""

    if TYPE_CHECKING:

        def _start_from(self, started: WorkflowStarted) -> None: ...
        def _check_continue(self, run: Run, started: WorkflowStarted, closes: bool) -> None: ...

    def _append_batch(self, batch: AppendBatch) -> int:
        run = self._get(batch.workflow_id, batch.run_id, fresh=False)
        events = list(batch.events)
        expected = batch.expected_length
        if expected is not None and expected > len(run.events):
            # NB: this handle is behind: the decision may be on what others appended
            self._log.refresh(run)
        # what we know refuses most losers before a Start record is written for nothing
        tail = run.events[expected:] if expected is not None else []
        check_decision(run.summary, events, tail, expected)
        closes = any(type(ev) in CLOSING_EVENTS for ev in events)
        for st in batch.starts:
            if st.parent is None:
                self._check_continue(run, st, closes)
        return self._append_run(run, events, expected, batch.starts)

    def _append_run(
        self,
        run: Run,
        events: list[Event],
        expected: int | None,
        starts: Sequence[WorkflowStarted],
    ) -> int:
        for st in starts:  # NB: before the batch, so that a crash leaves a record
            self._parts.write(st.task_queue, st.workflow_id, fmt.Start(st))
        try:
            index = self._log.append(run, events, expected)
        except WorkflowError:
            for st in starts:
                with contextlib.suppress(WorkflowError):
                    self._parts.write(
                        st.task_queue, st.workflow_id, fmt.Abandon(st.workflow_id, st.run_id)
                    )
            raise
        for st in starts:
            self._start_from(st)
        self._after(run, index)
        return index

    def _after(self, run: Run, index: int) -> None:
        """Bookkeeping after a batch landed: close effects, the index, or the holder's Touch."""
        if not run.summary.running:
            self._repairs[run.key] = run
            try:
                self._repair_closed(run)
            except StoreError as exc:  # the batch is there: claim() tries again
                log.warning("effects of closing %r run %s are late: %s", run.workflow_id,
                            run.run_id, exc)  # fmt: skip
        part = self._parts.holding(run)
        if part is not None:
            if run.key in part.runs:
                self._parts.index(run)
            else:
                self._parts._adopt(part, run)
        else:
            try:
                self._parts.write(run.started.task_queue, run.workflow_id, self._touch(run, index))
            except StoreError as exc:  # the batch is there; the holder sees it on its next read
                log.warning("no Touch for %r run %s: %s", run.workflow_id, run.run_id, exc)

    @staticmethod
    def _touch(run: Run, index: int) -> fmt.Touch:
        """The Touch for the batch at ``index``: where it landed and, if small, its events."""
        last = run.last
        if last is None or last[0] != index:
            return fmt.Touch(run.workflow_id, run.run_id)  # settled by a re-read: position unknown
        at, segment, start, end, blocks, payload = last
        events = payload if len(payload) <= _TOUCH_EVENTS else b""
        return fmt.Touch(run.workflow_id, run.run_id, at, segment, start, end, blocks, events)

    def _repair_closed(self, run: Run) -> None:
        """A closed run's effects, idempotent: its status in metadata, its parent's notice."""
        self._repairs[run.key] = run
        want = fmt.status_meta(run.meta, run.summary.status, run.summary.close_time)
        if want != run.meta:
            self._update_meta(run, lambda meta: fmt.status_meta(
                meta, run.summary.status, run.summary.close_time))  # fmt: skip
        notice = parent_notice(run.summary)
        if notice is not None:
            self._external(*notice)
        self._repairs.pop(run.key, None)
        self._drop_heartbeats(run)

    def _drop_heartbeats(self, run: Run) -> None:
        """Delete a closed run's heartbeat slots (best effort: a failure leaves a few bytes).

        Only slots that may exist cost a request: the ones this handle wrote or
        read, and, if other handles may have written some (activities scheduled
        before this handle held the run), whatever one List Blobs call finds.
        """
        if run.hb_dropped:
            return
        run.hb_dropped = True
        names = {self._names.heartbeat(run.workflow_id, run.ordinal, seq) for seq in run.hb}
        try:
            if run.hb_from is None or any(
                type(ev) is ActivityScheduled and ev.index < run.hb_from for ev in run.events
            ):
                prefix = self._names.heartbeats(run.workflow_id, run.ordinal)
                names.update(props.name for props in self._blobs.list(prefix))
            for name in sorted(names):
                self._blobs.delete(name)
        except StoreError as exc:
            log.warning("heartbeat slots of %r run %s not deleted: %s", run.workflow_id,
                        run.run_id, exc)  # fmt: skip
        run.hb.clear()

    def _update_meta(self, run: Run, change: Any) -> None:
        name = self._names.segment(run.workflow_id, run.ordinal, 0)
        for _ in range(_TRIES):
            want = change(run.meta)
            if want == run.meta:
                return
            try:
                run.etag0 = self._blobs.set_metadata(name, want, run.etag0)
                run.meta = want
                return
            except Changed:
                props = self._blobs.properties(name)
                if props is None:
                    return
                run.meta, run.etag0 = dict(props.metadata or {}), str(props.etag)
            except Missing:
                return
        raise StoreError(f"Azure store {self._where}: {name}'s metadata kept changing")

    def _external(self, workflow_id: str, run_id: str, event: Event) -> None:
        """A store-made event (a child's outcome or refusal), once, for a run that may be gone."""
        try:
            run = self._get(workflow_id, run_id)
        except WorkflowNotFoundError:
            return
        seq = getattr(event, "seq", None)
        kinds = (ChildWorkflowCompleted, ChildWorkflowFailed)
        child_run = getattr(event, "run_id", "")

        def delivered(run: Run) -> bool:  # a repair, or a retry, got there first
            return any(
                type(ev) in kinds and ev.seq == seq and ev.run_id == child_run  # type: ignore[union-attr]
                for ev in run.events
            )

        try:
            index = self._log.append(run, [event], None, unless=delivered)
        except WorkflowAlreadyClosedError:
            return  # nobody waits for it any more
        if index >= 0:
            self._after(run, index)
