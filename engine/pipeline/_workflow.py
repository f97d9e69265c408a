"""A pipeline as an ordinary workflow, and its tasks as activities.

Rules of this module:

* The workflow code is generic; the DAG it follows is the loaded
  :class:`~engine.pipeline.Pipeline` it is bound to.  It reads nothing but its
  input (the run's arguments and the results a re-run reuses) and its history.
* Each task is one activity type, ``NAME.TASK``, whatever its ``type``: the
  history names the task of every ``ActivityScheduled``, so per-task stats and
  drawings need no other record.  A fan-out task's activity receives
  ``(index, item)`` (its function receives the item), so a history also says
  which item each activity was.
* Its first command is ``Patched("pipeline:NAME@DIGEST")``: replaying a run
  whose history was made under another DAG finds no such marker, and the code
  then yields a command that cannot match, so the worker reports a
  ``NonDeterminismError`` and the run waits, blocked, for the file it started
  with (as a Temporal workflow waits for its code).  Retries, timeouts and
  descriptions are not part of the DAG: changing them affects only the
  activities scheduled afterwards.

Theory of operation: the tasks run in *waves*: a task runs in the wave after
its latest predecessor's, and a wave is one ``All`` of its tasks (a fan-out
task is a nested ``All`` of one activity per item), so independent tasks run
in parallel and results come back in order.  A task that fails for good
(its retries spent) fails the run with a :class:`TaskFailedError` naming it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import msgspec

from .._commands import All, Patched, ScheduleActivity, SetQuery
from .._defs import ActivityDefinition, workflow
from .._errors import ActivityError, WorkflowError
from ._model import SPEC_QUERY

if TYPE_CHECKING:
    from ._model import Pipeline, Task

__all__ = [
    "Reuse",
    "RunInput",
    "TaskActivity",
    "TaskFailedError",
    "TaskInputError",
    "make_activities",
    "make_workflow",
]


class TaskFailedError(WorkflowError):
    """A task failed for good; the run fails with it (``task`` names the task)."""

    def __init__(self, pipeline: str, task: str, message: str) -> None:
        super().__init__(message)
        self.pipeline = pipeline
        self.task = task

    def __reduce__(self) -> Any:  # pragma: no cover - keeps the exception picklable
        return (type(self), (self.pipeline, self.task, str(self)))


class TaskInputError(WorkflowError):
    """A fan-out task's predecessor returned something that is not a list."""


# Failures record the qualified type name: make it the public one.
TaskFailedError.__module__ = TaskInputError.__module__ = "engine.pipeline"


class Reuse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Results a re-run takes from an earlier run of the same id instead of running again.

    ``results`` holds whole tasks; ``items`` the finished items of a fan-out
    task that did not finish (by item index).
    """

    run_id: str = ""
    results: dict[str, Any] = {}
    items: dict[str, dict[int, Any]] = {}


class RunInput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A pipeline run's input: the arguments its root tasks receive, and what it reuses."""

    args: list[Any] = []
    reuse: Reuse | None = None


class TaskActivity:
    """The activity of one task: type name ``NAME.TASK``, running the task's function.

    Arguments reach the function decoded to the types it annotates, as for
    any activity.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.__name__ = self.__qualname__ = task.activity
        target = _each(task.fn) if task.fan_out else task.fn
        self.__temporalpp__ = ActivityDefinition(target, task.activity)

    def __call__(self, *args: Any) -> Any:
        return self.__temporalpp__.fn(*args)

    def __repr__(self) -> str:
        return f"<TaskActivity {self.task.activity} ({self.task.type})>"


def _each(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a fan-out activity: it takes ``(index, item)`` and calls ``fn(item)``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: the items arrive untyped
        hints = {}
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    item_type = hints.get(params[0].name, Any) if params else Any
    each: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):

        async def each_async(index: int, item: Any) -> Any:
            return await fn(item)

        each = each_async
    else:

        def each_sync(index: int, item: Any) -> Any:
            return fn(item)

        each = each_sync
    each.__annotations__ = {"index": int, "item": item_type, "return": hints.get("return", Any)}
    return each


def make_activities(pipeline: Pipeline) -> list[Any]:
    """One :class:`TaskActivity` per task, in task order."""
    return [TaskActivity(t) for t in pipeline.tasks]


def _options(task: Task) -> dict[str, Any]:
    return {"retry": task.policy, "start_to_close": task.timeout}


def _changed(pipeline: Pipeline) -> str:
    return (
        f"<the definition of pipeline {pipeline.name!r} changed since this run started (the "
        f"loaded file's digest is {pipeline.digest[:12]}): restore the file the run started "
        f"with, or terminate the run and run it again to reuse its finished tasks>"
    )


def make_workflow(pipeline: Pipeline) -> Callable[..., Generator[Any, Any, Any]]:
    """The ``@workflow`` named ``pipeline:NAME`` that runs ``pipeline``."""
    patch_id = f"{pipeline.workflow_type}@{pipeline.digest}"

    def run(request: RunInput) -> Generator[Any, Any, Any]:
        if not (yield Patched(patch_id)):
            # NB: replaying a history made under another DAG: yield what cannot match, so
            # the worker raises NonDeterminismError and the run waits, blocked, saying why
            yield ScheduleActivity(_changed(pipeline))
        yield SetQuery(SPEC_QUERY, pipeline.spec())
        reuse = request.reuse or Reuse()
        results: dict[str, Any] = {}
        for wave in pipeline.waves:
            commands: list[Any] = []
            running: list[tuple[Task, list[int] | None, int]] = []
            for task in wave:
                if task.name in reuse.results:
                    results[task.name] = reuse.results[task.name]
                    continue
                args = request.args if not task.preds else [results[p] for p in task.preds]
                if task.fan_out:
                    items = _items(pipeline, task, args[0])
                    done = reuse.items.get(task.name, {})
                    todo = [i for i in range(len(items)) if i not in done]
                    commands.append(
                        All(
                            *[
                                ScheduleActivity(task.activity, i, items[i], **_options(task))
                                for i in todo
                            ]
                        )
                    )
                    running.append((task, todo, len(items)))
                else:
                    commands.append(ScheduleActivity(task.activity, *args, **_options(task)))
                    running.append((task, None, 1))
            if not commands:
                continue
            try:
                outputs = yield All(*commands)
            except ActivityError as exc:
                raise _failed(pipeline, exc) from exc
            for (task, indices, count), output in zip(running, outputs, strict=True):
                if indices is None:
                    results[task.name] = output
                    continue
                merged = dict(reuse.items.get(task.name, {}))
                merged.update(zip(indices, output, strict=True))
                results[task.name] = [merged[i] for i in range(count)]
        if len(pipeline.sinks) == 1:
            return results[pipeline.sinks[0]]
        return {name: results[name] for name in pipeline.sinks}

    run.__name__ = run.__qualname__ = f"pipeline_{pipeline.name.replace('-', '_')}"
    return workflow(name=pipeline.workflow_type)(run)


def _items(pipeline: Pipeline, task: Task, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TaskInputError(
            f"pipeline {pipeline.name!r}: task {task.name!r} fans out over the output of "
            f"{task.preds[0]!r}, which is a {type(value).__name__}, not a list"
        )
    return value


def _failed(pipeline: Pipeline, exc: ActivityError) -> TaskFailedError:
    prefix = pipeline.name + "."
    name = exc.activity_type[len(prefix) :] if exc.activity_type.startswith(prefix) else "?"
    task = pipeline.task(name) if name != "?" else None
    which = f"an item of task {name!r}" if task is not None and task.fan_out else f"task {name!r}"
    kind = f" ({task.type})" if task is not None else ""
    return TaskFailedError(
        pipeline.name,
        name,
        f"pipeline {pipeline.name!r}: {which}{kind} failed after {exc.attempt} attempt(s): "
        f"{exc.type}: {exc.message}",
    )
