"""``tpp pipeline run|graph`` and ``tpp workflow graph``: pipelines from TOML, runs as Mermaid.

``pipeline`` is a click group (``run``, ``graph``); ``workflow_graph`` is a
standalone command, registered as ``graph`` under ``tpp workflow``.  A bad
pipeline file is one error per line (``FILE:LINE: what``), exit status 1.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from .._client import Client
from .._errors import WorkflowAlreadyStartedError, WorkflowFailedError
from ..pipeline import (
    Pipeline,
    PipelineError,
    RunView,
    history_mermaid,
    is_project,
    load_project,
    open_pipeline,
    run,
    start,
)
from ..pipeline._run import reusable
from ._common import (
    EXIT_NOT_FINISHED,
    CliError,
    State,
    emit_json,
    output_options,
    parse_inputs,
    pass_state,
)

__all__ = ["pipeline", "workflow_graph"]

_DIRECTION = click.option(
    "--direction",
    type=click.Choice(["TD", "LR", "BT", "RL"], case_sensitive=False),
    default="TD",
    show_default=True,
    help="Which way the flowchart runs.",
)
_NAME = click.option(
    "-p", "--pipeline", "name", default=None, metavar="NAME", help="The pipeline of a Project.toml."
)
_FILE = click.argument("file", type=click.Path(dir_okay=False, path_type=pathlib.Path))


def _open(file: pathlib.Path, name: str | None) -> Pipeline:
    try:
        return open_pipeline(file, name)
    except PipelineError as exc:
        raise CliError(str(exc)) from None
    except (KeyError, OSError, ValueError) as exc:
        raise CliError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None


@click.group(name="pipeline")
def pipeline() -> None:
    """Run and draw pipelines: DAGs of tasks defined in TOML.

    \b
    Examples:
      tpp pipeline run examples/pipelines/reindex.toml --input '{"products": 120}'
      tpp pipeline run reindex.toml -w nightly --detach
      tpp pipeline graph examples/pipelines/reindex.toml > reindex.mmd
    """


# ---------------------------------------------------------------------- run


class _Display:
    """Per-task progress on stderr: bars on a terminal, one line per state change otherwise."""

    def __init__(self, state: State, p: Pipeline) -> None:
        self.state = state
        self.pipeline = p
        self.live = state.err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=state.err,
            transient=False,
            disable=not self.live,
        )
        self.bars: dict[str, TaskID] = {}
        self.seen: dict[str, str] = {}
        width = max(len(t.name) for t in p.tasks)
        for t in p.tasks:
            label = f"{t.name:<{width}}  pending"
            self.bars[t.name] = self.progress.add_task(label, total=None if t.fan_out else 1)

    def update(self, view: RunView) -> None:
        width = max(len(name) for name in view.tasks) if view.tasks else 0
        for name, t in view.tasks.items():
            done, total = t.completed + t.reused, t.scheduled + t.reused
            fan_out = self.pipeline.task(name).fan_out
            label = f"{name:<{width}}  {t.state}"
            if t.retried:
                label += f" ({t.retried} retried)"
            shown = total if fan_out else 1
            finished = t.state in ("completed", "reused", "failed")
            self.progress.update(
                self.bars[name],
                description=label,
                completed=(done if fan_out else int(finished)),
                total=shown if (shown or finished) else None,
            )
            if not self.live and self.seen.get(name) != t.state:
                self.seen[name] = t.state
                counts = f" {done}/{total}" if fan_out and total else ""
                self.state.note(f"{view.workflow_id}: task {name} {t.state}{counts}")

    @contextmanager
    def shown(self) -> Iterator[_Display]:
        with self.progress:
            yield self


@pipeline.command(name="run")
@_FILE
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="JSON",
    help="An argument of the root tasks as JSON; repeat for each, in order.",
)
@click.option(
    "-w",
    "--workflow-id",
    default=None,
    help="The run's workflow id; running it again after a failure reuses finished tasks.",
)
@_NAME
@click.option(
    "--detach", is_flag=True, help="Only start the run (for running workers); print its id."
)
@click.option("-t", "--task-queue", default="default", show_default=True, help="Task queue.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS", help="Give up after this.")
@output_options()
@pass_state
def run_command(
    state: State,
    file: pathlib.Path,
    inputs: tuple[str, ...],
    workflow_id: str | None,
    name: str | None,
    detach: bool,
    task_queue: str,
    timeout: float | None,
) -> None:
    """Run the pipeline FILE (or a pipeline of a Project.toml) and print its result.

    The run is an ordinary workflow (type pipeline:NAME) in the store, worked
    on by this process with a progress display per task.  If the workflow id
    names a run of the pipeline that is still running (this command was
    stopped), it is resumed; if it names a failed, cancelled or terminated
    one, the tasks it finished are not run again: their results are reused.

    Exit status 1 if the run failed (the failed task on stderr), 3 after --timeout.

    \b
    Examples:
      tpp pipeline run examples/pipelines/reindex.toml --input '{"products": 120}'
      tpp pipeline run Project.toml --pipeline reindex -w nightly-2026-11-26
      tpp pipeline run reindex.toml -w nightly --detach     # workers do the work
    """
    p = _open(file, name)
    args = parse_inputs(inputs)
    store = state.store(create=True)
    client = Client(store, cas=state.cas(), codec=state.codec())
    wid = workflow_id or str(uuid.uuid4())
    if detach:
        reused = reusable(client, p, wid, args)
        try:
            start(client, p, *args, id=wid, task_queue=task_queue)
        except WorkflowAlreadyStartedError as exc:
            raise CliError(str(exc)) from None
        if state.json:
            info = client.describe(wid)
            emit_json(
                {
                    "workflow_id": wid,
                    "run_id": info.run_id,
                    "type": p.workflow_type,
                    "reused": sorted(reused.results) if reused else [],
                }
            )
        else:
            click.echo(wid)
            state.note(f"started {p.workflow_type} {wid!r}: workers that load {file} run it")
        return
    display = _Display(state, p)
    try:
        with display.shown():
            value = run(
                p,
                *args,
                store=store,
                id=wid,
                cas=state.cas(),
                codec=state.codec(),
                task_queue=task_queue,
                timeout=timeout,
                progress=display.update,
            )
    except WorkflowFailedError as exc:
        if state.json:
            emit_json({"workflow_id": wid, "status": "FAILED", "error": str(exc)})
        raise CliError(f"{exc} (run it again with -w {wid} to reuse the finished tasks)") from None
    except TimeoutError as exc:
        raise CliError(f"{exc}; it goes on when resumed (-w {wid})", EXIT_NOT_FINISHED) from None
    except RuntimeError as exc:  # blocked
        raise CliError(str(exc)) from None
    if state.json:
        emit_json({"workflow_id": wid, "status": "COMPLETED", "result": value})
    else:
        emit_json(value)


# ---------------------------------------------------------------------- graph


@pipeline.command(name="graph")
@_FILE
@_NAME
@_DIRECTION
@output_options(store=False)
@pass_state
def graph_command(state: State, file: pathlib.Path, name: str | None, direction: str) -> None:
    """Print the pipeline FILE as a Mermaid flowchart (a Project.toml: every pipeline).

    Paste it into a Markdown ```mermaid block, or render it with mermaid-cli
    (mmdc -i graph.mmd -o graph.svg).

    \b
    Examples:
      tpp pipeline graph examples/pipelines/reindex.toml
      tpp pipeline graph examples/pipelines/Project.toml --direction LR
    """
    direction = direction.upper()
    if name is None and is_project(file):
        try:
            text = load_project(file).mermaid(direction=direction)
        except PipelineError as exc:
            raise CliError(str(exc)) from None
    else:
        text = _open(file, name).mermaid(direction=direction)
    if state.json:
        emit_json({"file": str(file), "mermaid": text})
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------------- workflow graph


@click.command(name="graph")
@click.option("-w", "--workflow-id", required=True, help="The workflow id.")
@click.option("-r", "--run-id", default=None, help="A run of the id (default: the latest).")
@_DIRECTION
@output_options()
@pass_state
def workflow_graph(state: State, workflow_id: str, run_id: str | None, direction: str) -> None:
    """Draw a run as a Mermaid flowchart of its activities and child workflows.

    Nodes are coloured by state (completed, running, retrying, failed, ...).
    A pipeline run is drawn as its DAG, one node per task; any other run from
    its events: what each decision started, after what had finished before it.

    \b
    Examples:
      tpp workflow graph -w nightly
      tpp workflow graph -w order-42 --direction LR > order-42.mmd
    """
    client = Client(state.store(), cas=state.cas(), codec=state.codec())
    events = client.history(workflow_id, run_id)
    text = history_mermaid(events, client.decode, direction=direction.upper())
    if state.json:
        info = client.describe(workflow_id, run_id)
        emit_json({"workflow_id": workflow_id, "run_id": info.run_id, "mermaid": text})
    else:
        click.echo(text, nl=False)
