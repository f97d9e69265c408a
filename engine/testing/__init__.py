"""Testing helpers for workflow authors: replay recorded histories, generate new ones.

* :func:`replay` runs a workflow over a recorded history (say, exported from
  production with ``tpp workflow show --output json``) and returns what it
  would do next; a changed workflow that no longer fits raises
  :class:`~engine.NonDeterminismError`.
* :func:`assert_deterministic` replays a history twice, from scratch and
  through the live path a worker uses, and requires the same commands.
* :func:`histories` is a hypothesis strategy of complete, valid histories of a
  workflow: activity results and failures, retries, timers, signals at any
  point, child workflows, cancellation, and inputs racing decisions.
* :class:`VirtualClock` is a clock that moves only when told.

Together, a property test that a workflow replays every history it can produce::

    from hypothesis import given, strategies as st
    from engine.testing import assert_deterministic, histories

    @given(histories(subscription, "cust-1", signals={"cancel": st.none()}))
    def test_subscription_replays(history):
        assert_deterministic(subscription, history)

``histories`` needs hypothesis (``pip install temporalpp[testing]``); it is
imported only when ``histories`` is called, and ``import engine`` never
imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._clock import VirtualClock
from .._codec import Codec
from ._replay import Workflow, assert_deterministic, replay

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from .._events import Event

__all__ = ["VirtualClock", "assert_deterministic", "histories", "replay"]


def histories(
    fn: Workflow,
    *args: Any,
    results: Mapping[str, SearchStrategy[Any]] | None = None,
    signals: Mapping[str, SearchStrategy[Any]] | None = None,
    activities: Iterable[Callable[..., Any]] = (),
    failures: bool = True,
    cancel: bool = True,
    concurrency: bool = True,
    max_steps: int = 50,
    codec: Codec | None = None,
    start: datetime | None = None,
    workflow_id: str = "wf-1",
) -> SearchStrategy[list[Event]]:
    """A hypothesis strategy of histories of ``fn(*args)``, made as a worker makes them.

    Each example starts the workflow, then repeatedly appends generated inputs
    and lets a live interpreter decide, appending each decision as its batch
    (``b1``, ``b2``, ... at a :class:`VirtualClock`'s time), until the run
    closes, nothing more can happen, or ``max_steps`` inputs were appended (the
    history is then partial, and still valid).  The inputs:

    * activity results, drawn from ``results[activity_type]`` if given, else
      from the annotated return type of the ``@activity`` function (found in
      ``activities`` or the workflow's module), else small JSON values;
    * with ``failures``: failed attempts (``ActivityAttemptFailed`` with the
      activity's retry policy, the next attempt ending no earlier than
      ``retry_at``), final ``ActivityFailed``, and failed child workflows;
    * timers firing at their ``fire_at`` (those due together in any order);
    * child workflow results (``results[workflow_type]`` or as above);
    * signals: ``signals`` maps names to payload strategies, sent at any point
      (even before the workflow waits for them); by default, the names the
      workflow has waited for, with JSON payloads;
    * with ``cancel``: one cancellation request at any point;
    * with ``concurrency``: inputs appended while a decision is being made,
      after its seen point and before its batch.

    >>> from hypothesis import given, settings, strategies as st
    >>> from engine import workflow, ScheduleActivity, WaitSignal
    >>> @workflow
    ... def approve(amount: int):
    ...     ok = yield WaitSignal("decision", timeout=3600)
    ...     return (yield ScheduleActivity("pay", amount)) if ok else "rejected"
    >>> @settings(max_examples=20, deadline=None)
    ... @given(histories(approve, 100, signals={"decision": st.booleans()}))
    ... def test_approve(history):
    ...     assert_deterministic(approve, history)
    >>> test_approve()
    """
    from ._strategies import histories as make

    strategy: SearchStrategy[list[Event]] = make(
        fn,
        *args,
        results=results,
        signals=signals,
        activities=activities,
        failures=failures,
        cancel=cancel,
        concurrency=concurrency,
        max_steps=max_steps,
        codec=codec,
        start=start,
        workflow_id=workflow_id,
    )
    return strategy
