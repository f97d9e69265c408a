"""Pipelines: DAGs of tasks defined in TOML, run as durable workflows, drawn as Mermaid.

A pipeline file names its tasks (each an activity, ``type = "module:function"``)
and wires them with Mermaid edges; ``load`` validates it (every problem with its
line) and imports the task types.  The loaded :class:`Pipeline` is an ordinary
workflow (``pipeline:NAME``) with one activity per task (``NAME.TASK``): give
``pipeline.workflows`` and ``pipeline.activities`` to a ``Worker``, or call
:func:`run` to run it in this process.

>>> from engine import VirtualClock
>>> from engine.pipeline import load, run
>>> reindex = load("examples/pipelines/reindex.toml")
>>> [[t.name for t in wave] for wave in reindex.waves]
[['snapshot', 'fetch'], ['split'], ['index'], ['report']]
>>> run(reindex, {"products": 30}, clock=VirtualClock())["indexed"]
30
"""

from ._history import RunView, TaskProgress, TaskStats, TaskStatsCollector, previous_results, scan
from ._mermaid import history_mermaid, pipeline_mermaid, project_mermaid
from ._model import SPEC_QUERY, Pipeline, PipelineSpec, Project, Task, TaskSpec, fingerprints
from ._parse import PipelineError, Problem, load, loads, parse_duration
from ._project import is_project, load_project
from ._run import open_pipeline, reusable, run, start
from ._workflow import Reuse, RunInput, TaskActivity, TaskFailedError, TaskInputError

__all__ = [
    "Pipeline",
    "PipelineError",
    "PipelineSpec",
    "Problem",
    "Project",
    "Reuse",
    "RunInput",
    "RunView",
    "SPEC_QUERY",
    "Task",
    "TaskActivity",
    "TaskFailedError",
    "TaskInputError",
    "TaskProgress",
    "TaskSpec",
    "TaskStats",
    "TaskStatsCollector",
    "fingerprints",
    "history_mermaid",
    "is_project",
    "load",
    "load_project",
    "loads",
    "open_pipeline",
    "parse_duration",
    "pipeline_mermaid",
    "previous_results",
    "project_mermaid",
    "reusable",
    "run",
    "scan",
    "start",
]
