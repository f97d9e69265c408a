"""The client: start, signal, query, cancel, terminate and inspect workflows; ``engine.run``."""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any

from stores._protocol import AppendBatch, Store

from ._clock import Clock, SystemClock, VirtualClock
from ._codec import Codec
from ._defs import result_type_of, type_name, workflow_definition
from ._errors import (
    CancelledError,
    RemoteError,
    WorkflowFailedError,
)
from ._events import (
    CancelRequested,
    Event,
    Payload,
    SignalReceived,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
)
from ._failures import remote_error
from ._info import IdReusePolicy, Status, WorkflowInfo
from ._payloads import BlobStore, PayloadCodec, Payloads

__all__ = ["Client", "run"]


class Client:
    """Talks to workflows through a store; workers may run anywhere.

    >>> from stores import MemoryStore
    >>> client = Client(MemoryStore())
    >>> wid = client.start("send_invoice", "cust-1", id="invoice-1")
    >>> client.describe(wid).status
    <Status.RUNNING: 'RUNNING'>
    """

    def __init__(
        self,
        store: Store | None = None,
        cas: BlobStore | None = None,
        codec: Codec | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._owns_store = store is None
        if store is None:  # the embedded default: $TPP_STORE or ./.tpp/store.db
            import stores

            store = stores.open_default()
        self.store = store
        self.cas = cas
        self.codec: Codec = codec if codec is not None else PayloadCodec()
        self._payloads = Payloads(self.codec, cas)
        self.clock: Clock = clock if clock is not None else SystemClock()

    def close(self) -> None:
        """Close the store if this client opened it (the embedded default)."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        workflow: Callable[..., Any] | str,
        *args: Any,
        id: str | None = None,
        task_queue: str = "default",
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> str:
        """Start a run of ``workflow`` (a ``@workflow`` function or a type name); returns its id.

        Raises ``WorkflowAlreadyStartedError`` when the id is running or the
        policy refuses it; ``TypeError`` for arguments that cannot be serialised.
        """
        if isinstance(workflow, str):
            name = type_name(workflow, "workflow")
        else:
            name = workflow_definition(workflow).name
        if id is not None and not isinstance(id, str):
            raise TypeError(f"a workflow id must be a string, got {id!r}")
        if not isinstance(task_queue, str) or not task_queue:
            raise TypeError(f"a task queue must be a non-empty string, got {task_queue!r}")
        if not isinstance(id_reuse, IdReusePolicy):
            raise TypeError(f"id_reuse must be an IdReusePolicy, got {id_reuse!r}")
        payload, _ = self.codec.encode_args(args)
        workflow_id = id if id is not None else str(uuid.uuid4())
        payload = self._payloads.seal(payload, workflow_id)
        self.store.create(
            WorkflowStarted(
                time=self.clock.now(),
                workflow_type=name,
                workflow_id=workflow_id,
                run_id=uuid.uuid4().hex,
                input=payload,
                task_queue=task_queue,
            ),
            id_reuse=id_reuse,
        )
        return workflow_id

    def _send(self, workflow_id: str, event: Event) -> None:
        run_id = self.store.describe(workflow_id).run_id
        (result,) = self.store.append(
            [AppendBatch(workflow_id=workflow_id, run_id=run_id, events=[event])]
        )
        if result.error is not None:
            raise result.error

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` to the running workflow; buffered until it waits for it.

        ``WorkflowNotFoundError`` for an unknown id, ``WorkflowAlreadyClosedError``
        for a closed run; nothing is stored then.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a signal name must be a non-empty string, got {name!r}")
        encoded = self._payloads.seal(self.codec.encode(payload), workflow_id)
        self._send(workflow_id, SignalReceived(time=self.clock.now(), name=name, payload=encoded))

    def cancel(self, workflow_id: str, reason: str = "") -> None:
        """Request cancellation: ``CancelledError`` is thrown into the workflow at its yield."""
        self._send(workflow_id, CancelRequested(time=self.clock.now(), reason=reason))

    def terminate(self, workflow_id: str, reason: str = "") -> None:
        """End the run at once; no workflow code runs (not even ``finally`` blocks)."""
        self._send(workflow_id, WorkflowTerminated(time=self.clock.now(), reason=reason))

    def reset(
        self,
        workflow_id: str,
        to_event: int,
        *,
        run_id: str | None = None,
        reason: str = "",
    ) -> str:
        """Repair a run: a new run keeps the history before decision ``to_event``, redoes the rest.

        Temporal's reset (DBOS's fork): ``to_event`` is the index of a
        ``WorkflowTaskCompleted``.  The current run is terminated if it is running;
        the new run's ``WorkflowStarted.reset_from`` links to the old one.  Returns
        the new run id.  ``ValueError`` for a point that is not a decision boundary.
        """
        from ._reset import reset

        return reset(
            self.store, workflow_id, to_event, run_id=run_id, reason=reason, clock=self.clock
        )

    def query(self, workflow_id: str, name: str, type: Any = Any) -> Any:
        """The latest value the workflow published with ``SetQuery(name, value)``.

        Read from the decisions in the history: no workflow code runs.
        """
        for ev in reversed(self.store.read(workflow_id)):
            if isinstance(ev, WorkflowTaskCompleted) and ev.queries is not None:
                if name in ev.queries:
                    return self._payloads.decode(ev.queries[name], type)
                break
        raise KeyError(f"workflow {workflow_id!r} has published no query {name!r}")

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        """The latest run of ``workflow_id`` (or run ``run_id``)."""
        return self.store.describe(workflow_id, run_id)

    def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowInfo]:
        """Runs, newest first, filtered by status, type and start time."""
        out: builtins.list[WorkflowInfo] = []
        token: str | None = None
        while True:
            page = self.store.list(
                status=status, type=type, since=since, until=until, page_token=token
            )
            out.extend(page.items)
            token = page.next_page_token
            if token is None or (limit is not None and len(out) >= limit):
                return out[:limit] if limit is not None else out

    def history(self, workflow_id: str, run_id: str | None = None) -> builtins.list[Event]:
        """The run's events (the latest run unless ``run_id`` is given), as stored.

        Payloads stay sealed (a CAS reference is not fetched, an encrypted payload
        is not decrypted), so reading a history is cheap; decode one on demand
        with :meth:`decode`.
        """
        return self.store.read(workflow_id, run_id)

    def decode(self, payload: Payload, type: Any = Any) -> Any:
        """Decode a payload from :meth:`history`: fetch it from the CAS, decrypt, decompress.

        >>> from stores import MemoryStore
        >>> client = Client(MemoryStore())
        >>> wid = client.start("greet", "Ada")
        >>> client.decode(client.history(wid)[0].input)
        ['Ada']
        """
        return self._payloads.decode(payload, type)

    def result(self, workflow_id: str, timeout: float | None = None, *, type: Any = Any) -> Any:
        """Wait for the workflow's result, following continue-as-new.

        Raises ``WorkflowFailedError`` (failed or terminated; ``__cause__`` holds
        the original error), ``CancelledError``, or ``TimeoutError`` after
        ``timeout`` seconds of real time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            info = self.store.describe(workflow_id)
            if info.status is not Status.RUNNING and info.status is not Status.CONTINUED_AS_NEW:
                return self._outcome(info, type)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"workflow {workflow_id!r} did not finish within {timeout} s "
                    f"(status {info.status.value}); is a worker running for task queue "
                    f"{info.task_queue!r}?"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _outcome(self, info: WorkflowInfo, type: Any) -> Any:
        closing = self.store.read(info.id, info.run_id, after=info.history_length - 1)[-1]
        match closing:
            case WorkflowCompleted(result=result):
                return self._payloads.decode(result, type)
            case WorkflowFailed(error=error):
                raise WorkflowFailedError(
                    f"workflow {info.id!r} failed: {error.type}: {error.message}"
                ) from remote_error(error)
            case WorkflowTerminated(reason=reason):
                raise WorkflowFailedError(
                    f"workflow {info.id!r} was terminated: {reason or 'no reason given'}"
                ) from RemoteError("WorkflowTerminated", reason)
            case WorkflowCancelled(reason=reason):
                raise CancelledError(f"workflow {info.id!r} was cancelled: {reason}")
            case WorkflowContinuedAsNew():  # pragma: no cover - describe() gives the newest run
                raise AssertionError("a continued run is never the latest")
        raise AssertionError(f"unexpected closing event {closing!r}")  # pragma: no cover


def run(
    workflow: Callable[..., Generator[Any, Any, Any]],
    *args: Any,
    store: Store | None = None,
    clock: Clock | None = None,
    id: str | None = None,
    timeout: float | None = None,
    codec: Codec | None = None,
    cas: BlobStore | None = None,
    activities: tuple[Callable[..., Any], ...] = (),
) -> Any:
    """Run one workflow to completion in this process and return its result.

    Embedded use (scripts, notebooks): no registration; the workflow and the
    activities and children it yields are used directly.  ``store=None`` means a
    fresh ``MemoryStore``; with a ``VirtualClock`` timers are skipped over.

    >>> from engine import workflow, activity, ScheduleActivity, run
    >>> @activity
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    >>> @workflow
    ... def adder(a: int, b: int):
    ...     return (yield ScheduleActivity(add, a, b))
    >>> run(adder, 2, 3)
    5
    """
    from stores.memory import MemoryStore  # NB: engine's core never needs a backend

    from ._worker import Worker

    definition = workflow_definition(workflow)
    store = store if store is not None else MemoryStore()
    clock = clock if clock is not None else SystemClock()
    client = Client(store, cas=cas, codec=codec, clock=clock)
    worker = Worker(
        store,
        workflows=[workflow],
        activities=activities,
        cas=cas,
        codec=codec,
        clock=clock,
        auto_register=True,
    )
    workflow_id = client.start(workflow, *args, id=id)
    deadline = None if timeout is None else time.monotonic() + timeout
    virtual = isinstance(clock, VirtualClock)
    while True:
        worker.run_until_idle(skip_time=virtual)
        info = client.describe(workflow_id)
        if info.status is not Status.RUNNING and info.status is not Status.CONTINUED_AS_NEW:
            return client.result(workflow_id, type=result_type_of(definition.fn))
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"workflow {workflow_id!r} did not finish within {timeout} s")
        if info.blocked:
            raise RuntimeError(f"workflow {workflow_id!r} is blocked: {info.blocked}")
        pause = 0.05
        if info.due is not None:
            pause = min(max((info.due - clock.now()).total_seconds(), 0.0), 0.05) or 0.001
        time.sleep(pause)
