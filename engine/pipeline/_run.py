"""Starting pipeline runs (reusing a failed run's finished tasks) and running them in-process.

``start`` is ``Client.start`` for a pipeline: when the workflow id's latest
run is a failed, cancelled or terminated run of the same pipeline, the
results of its finished tasks are read from its history (``previous_results``)
and passed in the new run's input, so the workflow code stays pure.

``run`` is ``engine.run`` for a pipeline: it starts (or resumes) a run and
works it to completion in this process, with a ``Worker`` on a thread (so
independent tasks really run in parallel) or, on a ``VirtualClock``, with
``run_until_idle(skip_time=True)``.  ``progress`` is called with a
:class:`~engine.pipeline.RunView` whenever the history grows.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from stores._protocol import Store

from .._client import Client
from .._clock import Clock, SystemClock, VirtualClock
from .._codec import Codec
from .._errors import WorkflowAlreadyStartedError, WorkflowNotFoundError
from .._info import IdReusePolicy, Status
from .._payloads import BlobStore
from .._worker import Worker
from ._history import RunView, previous_results, scan
from ._model import Pipeline, Project
from ._parse import load
from ._project import is_project, load_project
from ._workflow import Reuse, RunInput

__all__ = ["is_project", "open_pipeline", "reusable", "run", "start"]

_REUSABLE = (Status.FAILED, Status.CANCELLED, Status.TERMINATED)


def open_pipeline(target: Pipeline | str | os.PathLike[str], name: str | None = None) -> Pipeline:
    """A ``Pipeline`` itself, or loaded from a pipeline file or a ``Project.toml``.

    A project with several pipelines needs ``name``.
    """
    if isinstance(target, Pipeline):
        return target
    if is_project(target):
        project: Project = load_project(target)
        if name is None:
            if len(project) != 1:
                raise ValueError(
                    f"project {str(target)!r} has pipelines {', '.join(project.pipelines)}: "
                    f"choose one"
                )
            return next(iter(project))
        return project[name]
    pipeline = load(target)
    if name is not None and name != pipeline.name:
        raise ValueError(f"{str(target)!r} is pipeline {pipeline.name!r}, not {name!r}")
    return pipeline


def reusable(client: Client, pipeline: Pipeline, workflow_id: str, args: list[Any]) -> Reuse | None:
    """What a new run of ``workflow_id`` may reuse from its latest run (``None``: nothing)."""
    try:
        info = client.describe(workflow_id)
    except WorkflowNotFoundError:
        return None
    if info.status not in _REUSABLE or info.type != pipeline.workflow_type:
        return None
    events = client.history(workflow_id, info.run_id)
    return previous_results(events, client.decode, pipeline.spec(), args)


def start(
    client: Client,
    pipeline: Pipeline,
    *args: Any,
    id: str | None = None,
    task_queue: str = "default",
    reuse: bool = True,
) -> str:
    """Start a run of ``pipeline`` whose root tasks receive ``args``; returns its workflow id.

    With ``reuse`` (the default), a failed, cancelled or terminated earlier
    run of the same id lends the results of the tasks it finished.
    """
    kept = reusable(client, pipeline, id, list(args)) if id is not None and reuse else None
    return client.start(
        pipeline.workflow,
        RunInput(args=list(args), reuse=kept),
        id=id,
        task_queue=task_queue,
        id_reuse=IdReusePolicy.ALLOW_DUPLICATE,
    )


def run(
    target: Pipeline | str | os.PathLike[str],
    *args: Any,
    store: Store | None = None,
    id: str | None = None,
    clock: Clock | None = None,
    timeout: float | None = None,
    codec: Codec | None = None,
    cas: BlobStore | None = None,
    task_queue: str = "default",
    max_concurrent_activities: int = 16,
    progress: Callable[[RunView], None] | None = None,
) -> Any:
    """Run a pipeline to completion in this process and return its result.

    ``target`` is a ``Pipeline`` or the path of a pipeline file.  ``store=None``
    means a fresh ``MemoryStore``.  If ``id`` names a run of this pipeline that
    is still running (this process was stopped), it is resumed; if it names a
    failed one, its finished tasks are reused.  Raises ``WorkflowFailedError``
    (a failed task's ``TaskFailedError`` as its cause) when the run fails.

    >>> from engine import VirtualClock
    >>> from engine.pipeline import run
    >>> summary = run("examples/pipelines/reindex.toml", {"products": 40}, clock=VirtualClock())
    >>> summary["indexed"]
    40
    """
    from stores.memory import MemoryStore  # NB: engine's core never needs a backend

    pipeline = open_pipeline(target)
    store = store if store is not None else MemoryStore()
    clock = clock if clock is not None else SystemClock()
    client = Client(store, cas=cas, codec=codec, clock=clock)
    worker = Worker(
        store,
        workflows=pipeline.workflows,
        activities=pipeline.activities,
        cas=cas,
        codec=codec,
        clock=clock,
        task_queue=task_queue,
        max_concurrent_activities=max_concurrent_activities,
        poll_interval=0.05,
    )
    workflow_id = _start_or_resume(client, pipeline, args, id, task_queue)
    watch = _Watch(client, workflow_id, progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    if isinstance(clock, VirtualClock):
        while not watch.closed():
            worker.run_until_idle(skip_time=True)
            watch.check(deadline, wait=True)
    else:
        failure: list[BaseException] = []

        def work() -> None:
            try:
                worker.run()
            except BaseException as exc:  # reported in the calling thread
                failure.append(exc)

        thread = threading.Thread(target=work, name=f"tpp-pipeline-{pipeline.name}", daemon=True)
        thread.start()
        try:
            while not watch.closed():
                if failure:
                    raise failure[0]
                watch.check(deadline, wait=True)
        finally:
            worker.stop()
            thread.join()
    watch.report()
    return client.result(workflow_id)


def _start_or_resume(
    client: Client, pipeline: Pipeline, args: tuple[Any, ...], id: str | None, task_queue: str
) -> str:
    if id is not None:
        try:
            info = client.describe(id)
        except WorkflowNotFoundError:
            pass
        else:
            if info.status is Status.RUNNING:
                if info.type != pipeline.workflow_type:
                    raise WorkflowAlreadyStartedError(
                        f"workflow {id!r} is running, and it is a {info.type!r}, not a run of "
                        f"{pipeline.workflow_type!r}"
                    )
                return id  # resume it
    return start(client, pipeline, *args, id=id or str(uuid.uuid4()), task_queue=task_queue)


class _Watch:
    """Follows a run: reports progress as its history grows, notices its end or a block."""

    def __init__(
        self, client: Client, workflow_id: str, progress: Callable[[RunView], None] | None
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.progress = progress
        self.length = 0
        self.pause = 0.005

    def closed(self) -> bool:
        info = self.client.describe(self.workflow_id)
        if self.progress is not None and info.history_length != self.length:
            self.report()
        if info.status is Status.RUNNING:
            if info.blocked:
                raise RuntimeError(f"pipeline run {self.workflow_id!r} is blocked: {info.blocked}")
            return False
        return True

    def report(self) -> None:
        if self.progress is None:
            return
        events = self.client.history(self.workflow_id)
        self.length = len(events)
        self.progress(scan(events, self.client.decode))

    def check(self, deadline: float | None, *, wait: bool) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"pipeline run {self.workflow_id!r} did not finish in time")
        if wait:
            time.sleep(self.pause)
            self.pause = min(self.pause * 2, 0.1)
