"""What a loaded pipeline is: its tasks, its waves, its digest and its spec.

A :class:`Pipeline` is built by ``_parse`` from a validated TOML file; every
task's ``type`` has been imported by then.  The pipeline owns one workflow
(``pipeline:NAME``, see ``_workflow``) and one activity type per task
(``NAME.TASK``), so a history names the task of every ``ActivityScheduled``.

The *spec* (:class:`PipelineSpec`) is the pipeline's structure as data: task
names, types, predecessors and fan-out.  Its sha256 is the pipeline's
``digest``; the workflow publishes the spec as its ``pipeline`` query, so a
history alone says which DAG a run followed (``tpp workflow graph``, re-runs).
Retries, timeouts and descriptions are not part of the spec: changing them
never changes the DAG.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import msgspec

from .._retry import RetryPolicy

__all__ = [
    "SPEC_QUERY",
    "Pipeline",
    "PipelineSpec",
    "Project",
    "Task",
    "TaskSpec",
    "fingerprints",
    "input_digest",
]

#: The query under which a pipeline run publishes its :class:`PipelineSpec`.
SPEC_QUERY: Final = "pipeline"
#: The workflow type of pipeline ``NAME`` is ``pipeline:NAME``.
WORKFLOW_PREFIX: Final = "pipeline:"


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One task as data: its name, its ``module:attr`` type, predecessors in task order."""

    name: str
    type: str
    preds: tuple[str, ...] = ()
    fan_out: bool = False


class PipelineSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A pipeline's structure (the DAG) as data; ``digest`` is the sha256 of the rest."""

    name: str
    tasks: tuple[TaskSpec, ...]
    digest: str = ""

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"pipeline {self.name!r} has no task {name!r}")

    def activity_task(self, activity_type: str) -> str | None:
        """The task an activity type belongs to (``reindex.index`` -> ``index``), if any."""
        prefix = self.name + "."
        if activity_type.startswith(prefix):
            name = activity_type[len(prefix) :]
            if any(t.name == name for t in self.tasks):
                return name
        return None

    def sinks(self) -> tuple[str, ...]:
        """Tasks no other task follows, in task order: their outputs are the result."""
        used = {p for t in self.tasks for p in t.preds}
        return tuple(t.name for t in self.tasks if t.name not in used)

    def waves(self) -> tuple[tuple[str, ...], ...]:
        """Tasks grouped by level: a task runs in the wave after its latest predecessor."""
        level: dict[str, int] = {}
        by_name = {t.name: t for t in self.tasks}

        def depth(name: str) -> int:
            if name not in level:
                preds = by_name[name].preds
                level[name] = 1 + max((depth(p) for p in preds), default=-1)
            return level[name]

        for t in self.tasks:
            depth(t.name)
        count = 1 + max(level.values(), default=-1)
        return tuple(tuple(t.name for t in self.tasks if level[t.name] == n) for n in range(count))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_digest(name: str, tasks: Sequence[TaskSpec]) -> str:
    """The sha256 (hex) of a pipeline's structure."""
    return _digest(msgspec.json.encode(PipelineSpec(name=name, tasks=tuple(tasks))))


def input_digest(args: Sequence[Any]) -> str:
    """A digest of a run's input that does not depend on how it is held.

    A dataclass and the dict it decodes to from a history digest alike.
    """
    canonical = msgspec.json.encode(msgspec.to_builtins(list(args), str_keys=True), order="sorted")
    return _digest(canonical)


def fingerprints(spec: PipelineSpec, args: Sequence[Any]) -> dict[str, str]:
    """Per task, a digest of everything its output depends on.

    A task's fingerprint covers its name, type and fan-out, its predecessors'
    fingerprints in order, and for a root task the run's input.  A re-run
    reuses a previous result only when the fingerprints are equal.
    """
    root = input_digest(args)
    by_name = {t.name: t for t in spec.tasks}
    out: dict[str, str] = {}

    def fp(name: str) -> str:
        if name not in out:
            t = by_name[name]
            preds = [fp(p) for p in t.preds]
            data = [t.name, t.type, t.fan_out, preds, "" if t.preds else root]
            out[name] = _digest(msgspec.json.encode(data))
        return out[name]

    for t in spec.tasks:
        fp(t.name)
    return out


@dataclass(frozen=True)
class Task:
    """One ``[[task]]``: a resolved activity and how the pipeline runs it.

    ``preds`` are the predecessors in the order the tasks are listed (the
    order of the arguments the task receives); ``retry`` counts retries after
    the first attempt; ``timeout`` is start-to-close per attempt.
    """

    name: str
    type: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    activity: str
    preds: tuple[str, ...] = ()
    fan_out: bool = False
    retry: int = 3
    retry_delay: timedelta = timedelta(seconds=1)
    timeout: timedelta | None = None
    description: str = ""
    line: int = 0

    @property
    def policy(self) -> RetryPolicy:
        """The activity's retry policy: ``retry`` retries, the first after ``retry_delay``."""
        return RetryPolicy(initial_interval=self.retry_delay, maximum_attempts=self.retry + 1)

    def spec(self) -> TaskSpec:
        return TaskSpec(name=self.name, type=self.type, preds=self.preds, fan_out=self.fan_out)


class Pipeline:
    """A loaded, validated pipeline: give ``workflows`` and ``activities`` to a ``Worker``.

    ``workflow`` is the ``@workflow`` named ``pipeline:NAME``; ``activities``
    holds one activity per task, named ``NAME.TASK``.  A ``Pipeline`` is also
    an app for ``tpp worker --app`` (it has ``workflows`` and ``activities``).

    >>> from engine.pipeline import load
    >>> p = load("examples/pipelines/reindex.toml")
    >>> p.workflow_type, [t.name for t in p.tasks]
    ('pipeline:reindex', ['snapshot', 'fetch', 'split', 'index', 'report'])
    """

    def __init__(
        self,
        name: str,
        tasks: Sequence[Task],
        *,
        description: str = "",
        path: pathlib.Path | None = None,
    ) -> None:
        from ._workflow import make_activities, make_workflow

        self.name = name
        self.description = description
        self.path = path
        self.tasks: tuple[Task, ...] = tuple(tasks)
        self._by_name = {t.name: t for t in self.tasks}
        specs = [t.spec() for t in self.tasks]
        self.digest = spec_digest(name, specs)
        self._spec = PipelineSpec(name=name, tasks=tuple(specs), digest=self.digest)
        self.waves: tuple[tuple[Task, ...], ...] = tuple(
            tuple(self._by_name[n] for n in wave) for wave in self._spec.waves()
        )
        self.sinks: tuple[str, ...] = self._spec.sinks()
        self.workflow_type = WORKFLOW_PREFIX + name
        self.activities: list[Any] = make_activities(self)
        self.workflow: Callable[..., Any] = make_workflow(self)
        self.workflows: list[Callable[..., Any]] = [self.workflow]

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {len(self.tasks)} tasks, digest {self.digest[:12]}>"

    def task(self, name: str) -> Task:
        """The task called ``name`` (``KeyError`` if there is none)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"pipeline {self.name!r} has no task {name!r}") from None

    def spec(self) -> PipelineSpec:
        """The structure as data (what a run publishes as its ``pipeline`` query)."""
        return self._spec

    def mermaid(self, direction: str = "TD") -> str:
        """The DAG as a Mermaid flowchart."""
        from ._mermaid import pipeline_mermaid

        return pipeline_mermaid(self._spec, direction=direction)


class Project:
    """A ``Project.toml``: several pipelines, and the workflows and activities of all of them."""

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        *,
        name: str = "",
        description: str = "",
        path: pathlib.Path | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.path = path
        self.pipelines: dict[str, Pipeline] = {p.name: p for p in pipelines}

    def __repr__(self) -> str:
        return f"<Project {self.name!r}: {', '.join(self.pipelines) or 'no pipelines'}>"

    def __getitem__(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(self.pipelines) or "none"
            raise KeyError(f"project has no pipeline {name!r} (it has: {known})") from None

    def __iter__(self) -> Iterator[Pipeline]:
        return iter(self.pipelines.values())

    def __len__(self) -> int:
        return len(self.pipelines)

    @property
    def workflows(self) -> list[Callable[..., Any]]:
        return [p.workflow for p in self]

    @property
    def activities(self) -> list[Any]:
        return [a for p in self for a in p.activities]

    def mermaid(self, direction: str = "TD") -> str:
        """Every pipeline as a subgraph of one Mermaid flowchart."""
        from ._mermaid import project_mermaid

        return project_mermaid([p.spec() for p in self], direction=direction)
