"""Reset: repair a workflow by re-running it from a decision boundary (Temporal's reset).

``reset(store, workflow_id, to_event=N)`` ends the workflow's current run (if it
is running) and starts a new run of the same id whose history is the chosen
run's history *before* event ``N``, the ``WorkflowTaskCompleted`` that opened a
decision.  That decision and everything after it are dropped, so the first
worker to claim the new run replays the kept prefix and makes decision ``N``
again with the code it runs now.  Resetting to the decision that scheduled a
failed activity runs the activity again; resetting to the first decision
(``first_decision``) starts over with the original input.

Rules, checked before anything is written:

* ``N`` must be the index of a ``WorkflowTaskCompleted`` of the chosen run
  (:func:`decision_boundaries` lists them);
* every child workflow started in the kept prefix must have its outcome in it
  too: a child still running would report to the old run, never to the new one;
* a child workflow run is reset only once its parent has closed (the parent
  would otherwise hear of the terminated run and of the new one).

The new run's ``WorkflowStarted`` is the old one's with a new run id, the reset
time as its start time, and ``reset_from=Link(workflow_id, old_run_id,
event=N, reason=...)``; the kept events keep their times.  Only the ``Store``
protocol is used (``append``, ``create``, ``append`` with ``expected_length``),
so it works on every backend.

NB: the protocol has no "create a run with this history" in one step, so the
new run exists with only its ``WorkflowStarted`` for the length of one append.
A worker that claims it in that instant and decides first makes the prefix's
append fail; the new run is then terminated and ``ConflictError`` raised
(nothing of the old run is lost; run the reset again).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec

from stores._protocol import AppendBatch, Store

from ._clock import Clock, SystemClock
from ._errors import (
    ConflictError,
    WorkflowAlreadyClosedError,
    WorkflowError,
)
from ._events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Link,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from ._info import Status

__all__ = ["ResetError", "decision_boundaries", "reset"]


class ResetError(ValueError):
    """A reset that cannot be done as asked; nothing was written."""


def decision_boundaries(history: Sequence[Event]) -> list[int]:
    """The indexes of a history's ``WorkflowTaskCompleted`` events: where a reset may go."""
    return [i for i, ev in enumerate(history) if isinstance(ev, WorkflowTaskCompleted)]


def _check_point(history: Sequence[Event], to_event: int, where: str) -> None:
    boundaries = decision_boundaries(history)
    if not boundaries:
        raise ResetError(f"{where} has made no decision yet: there is nothing to reset")
    if isinstance(to_event, bool) or not isinstance(to_event, int):
        raise ResetError(f"the reset point must be an event index, got {to_event!r}")
    if to_event in boundaries:
        return
    if not 0 <= to_event < len(history):
        raise ResetError(
            f"{where} has events 0 to {len(history) - 1}; event {to_event} does not exist "
            f"(decisions at {_listed(boundaries)})"
        )
    before = [b for b in boundaries if b < to_event]
    after = [b for b in boundaries if b > to_event]
    near = []
    if before:
        near.append(f"the last before it is {before[-1]}")
    if after:
        near.append(f"the next after it is {after[0]}")
    raise ResetError(
        f"event {to_event} of {where} is a {type(history[to_event]).__name__}, not a "
        f"WorkflowTaskCompleted; reset to a decision boundary ({'; '.join(near)})"
    )


def _listed(indexes: list[int]) -> str:
    shown = ", ".join(str(i) for i in indexes[:10])
    return shown + (", ..." if len(indexes) > 10 else "")


def _check_children(kept: Sequence[Event], where: str) -> None:
    started = {ev.seq: ev for ev in kept if isinstance(ev, ChildWorkflowStarted)}
    for ev in kept:
        if isinstance(ev, ChildWorkflowCompleted | ChildWorkflowFailed):
            started.pop(ev.seq, None)
    if started:
        open_children = ", ".join(
            f"{ev.workflow_id!r} (seq {ev.seq}, event {ev.index})" for ev in started.values()
        )
        raise ResetError(
            f"{where}: the kept history started child workflow(s) {open_children} whose "
            f"outcome comes after the reset point; a new run would wait for them forever. "
            f"Reset to a decision before the child started, or after it finished"
        )


def reset(
    store: Store,
    workflow_id: str,
    to_event: int,
    *,
    run_id: str | None = None,
    reason: str = "",
    clock: Clock | None = None,
) -> str:
    """Reset ``workflow_id`` to decision ``to_event`` of run ``run_id`` (default: the latest).

    Returns the new run's id.  Raises ``ResetError`` (a ``ValueError``) for a
    point that is not a decision boundary or a history that cannot be reset,
    ``WorkflowNotFoundError`` for an unknown id or run; nothing is written then.

    >>> from engine import Client, Worker, ScheduleActivity, activity, workflow
    >>> from stores import MemoryStore
    >>> @activity
    ... def greet(name: str) -> str:
    ...     return f"hello {name}"
    >>> @workflow
    ... def hello(name: str):
    ...     return (yield ScheduleActivity(greet, name))
    >>> store = MemoryStore()
    >>> wid = Client(store).start(hello, "Ada", id="hello-1")
    >>> Worker(store, [hello], [greet]).run_until_idle()
    >>> new_run = reset(store, wid, to_event=1, reason="say it again")
    >>> store.describe(wid).run_id == new_run, len(store.read(wid))
    (True, 1)
    """
    if not isinstance(reason, str):
        raise TypeError(f"a reset reason must be a string, got {reason!r}")
    clock = clock if clock is not None else SystemClock()
    history = store.read(workflow_id, run_id)
    started = history[0]
    if not isinstance(started, WorkflowStarted):  # pragma: no cover - stores guarantee it
        raise ResetError(f"workflow {workflow_id!r}: history does not begin with WorkflowStarted")
    old_run = started.run_id
    where = f"workflow {workflow_id!r} run {old_run}"
    _check_point(history, to_event, where)
    kept = history[:to_event]
    _check_children(kept, where)
    if started.parent is not None:
        parent = started.parent
        try:
            parent_info = store.describe(parent.workflow_id, parent.run_id)
        except WorkflowError:
            parent_info = None
        if parent_info is not None and parent_info.status is Status.RUNNING:
            raise ResetError(
                f"{where} is a child of {parent.workflow_id!r} (run {parent.run_id}), which "
                f"is still running; reset the parent instead, or wait until it has closed"
            )

    new_run = uuid.uuid4().hex
    now = clock.now()
    note = f"reset to event {to_event} of run {old_run}" + (f": {reason}" if reason else "")
    latest = store.describe(workflow_id)
    if latest.status is Status.RUNNING:
        terminate = WorkflowTerminated(time=now, reason=f"{note}; new run {new_run}")
        (result,) = store.append(
            [AppendBatch(workflow_id=workflow_id, run_id=latest.run_id, events=[terminate])]
        )
        if result.error is not None and not isinstance(result.error, WorkflowAlreadyClosedError):
            raise result.error
    fresh = msgspec.structs.replace(
        started,
        run_id=new_run,
        time=now,
        index=-1,
        reset_from=Link(workflow_id=workflow_id, run_id=old_run, event=to_event, reason=reason),
    )
    store.create(fresh)
    if len(kept) > 1:
        (result,) = store.append(
            [
                AppendBatch(
                    workflow_id=workflow_id, run_id=new_run, events=kept[1:], expected_length=1
                )
            ]
        )
        if result.error is not None:
            _abandon(store, workflow_id, new_run, now)
            if isinstance(result.error, ConflictError):
                raise ConflictError(
                    f"{where}: a worker decided on the new run {new_run} before its history "
                    f"was copied; the new run was terminated, run the reset again"
                ) from result.error
            raise result.error
    return new_run


def _abandon(store: Store, workflow_id: str, run_id: str, now: datetime) -> None:
    """Terminate a new run whose history could not be written."""
    terminate = WorkflowTerminated(
        time=now,
        reason="reset could not copy the kept history; run the reset again",
    )
    store.append([AppendBatch(workflow_id=workflow_id, run_id=run_id, events=[terminate])])
