"""``tpp workflow ...``: start, show, list, describe, signal, query, cancel, terminate, result,
reset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from stores import Store

from .._client import Client
from .._errors import CancelledError, WorkflowFailedError
from .._events import Event, WorkflowStarted, encode_history
from .._info import IdReusePolicy, Status, WorkflowInfo
from .._reset import decision_boundaries, reset
from ._common import (
    EXIT_NOT_FINISHED,
    CliError,
    State,
    emit_json,
    format_time,
    output_options,
    parse_inputs,
    parse_time,
    pass_state,
    status_choice,
    to_data,
)
from ._render import event_line, pending, show_value

__all__ = ["workflow"]

_ID = click.option("-w", "--workflow-id", required=True, help="The workflow id.")
_RUN = click.option("-r", "--run-id", default=None, help="A run of the id (default: the latest).")


def _client(state: State, store: Store) -> Client:
    return Client(store, cas=state.cas(), codec=state.codec())


@click.group()
def workflow() -> None:
    """Start, inspect, signal, query, stop and repair workflows.

    \b
    Examples:
      tpp workflow start --type subscription -w sub-42 --input '"cust-42"'
      tpp workflow list --status running
      tpp workflow show -w sub-42
      tpp workflow result -w sub-42 --wait --timeout 60
    """


# ---------------------------------------------------------------------- start


@workflow.command()
@click.option("--type", "type_", required=True, metavar="TYPE", help="The workflow type name.")
@click.option("-w", "--workflow-id", default=None, help="The workflow id (default: a new uuid4).")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="JSON",
    help="One positional argument as JSON; repeat for each argument, in order.",
)
@click.option("-t", "--task-queue", default="default", show_default=True, help="Task queue.")
@click.option(
    "--id-reuse",
    type=click.Choice([p.value.lower() for p in IdReusePolicy], case_sensitive=False),
    default=IdReusePolicy.ALLOW_DUPLICATE.value.lower(),
    show_default=True,
    help="What to do when the id has run before (a running id is always refused unless "
    "terminate_if_running).",
)
@output_options()
@pass_state
def start(
    state: State,
    type_: str,
    workflow_id: str | None,
    inputs: tuple[str, ...],
    task_queue: str,
    id_reuse: str,
) -> None:
    """Start a workflow run and print its id.

    The workers that know TYPE may run anywhere; the run waits in the store
    until one claims it.

    \b
    Examples:
      tpp workflow start --type subscription -w sub-42 --input '"cust-42"'
      tpp workflow start --type transfer --input '{"source": "ann", "target": "bo", "cents": 250}'
      tpp workflow start --type add --input 2 --input 3 -t math
    """
    args = parse_inputs(inputs)
    store = state.store(create=True)
    client = _client(state, store)
    wid = client.start(
        type_,
        *args,
        id=workflow_id,
        task_queue=task_queue,
        id_reuse=IdReusePolicy(id_reuse.upper()),
    )
    if state.json:
        info = client.describe(wid)
        emit_json({"workflow_id": wid, "run_id": info.run_id, "type": type_})
    else:
        click.echo(wid)


# ---------------------------------------------------------------------- show


@workflow.command()
@_ID
@_RUN
@click.option("--detailed", is_flag=True, help="Every field of every event, payloads in full.")
@output_options()
@pass_state
def show(state: State, workflow_id: str, run_id: str | None, detailed: bool) -> None:
    """Show a run's event history, one line per event.

    With --output json, the history is written exactly as
    engine.events.encode_history encodes it: the file format that
    engine.testing.replay and `tpp verify` read.

    \b
    Examples:
      tpp workflow show -w sub-42
      tpp workflow show -w sub-42 --detailed
      tpp workflow show -w sub-42 --output json > sub-42.json
    """
    events = state.store().read(workflow_id, run_id)
    if state.json:
        click.echo(encode_history(events).decode())
        return
    for ev in events:
        click.echo(event_line(ev, detailed=detailed))


# ---------------------------------------------------------------------- list


def _info_data(info: WorkflowInfo) -> dict[str, Any]:
    data: dict[str, Any] = to_data(info)
    return data


@workflow.command(name="list")
@click.option("--status", type=status_choice(), default=None, help="Only runs in this status.")
@click.option("--type", "type_", default=None, metavar="TYPE", help="Only this workflow type.")
@click.option(
    "--since", default=None, help="Started at or after: ISO time, or a duration ago (2h, 7d)."
)
@click.option("--until", default=None, help="Started before: ISO time, or a duration ago.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0: all.")
@output_options()
@pass_state
def list_(
    state: State,
    status: str | None,
    type_: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """List runs, newest first, with counts per status.

    The counts cover every run that matches --type/--since/--until, whatever
    its status and however many are shown.

    \b
    Examples:
      tpp workflow list
      tpp workflow list --status running --type subscription
      tpp workflow list --since 2h --limit 0 --output json
    """
    store = state.store()
    want = Status(status.upper()) if status else None
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    items: list[WorkflowInfo] = []
    counts: dict[Status, int] = {}
    token: str | None = None
    while True:
        page = store.list(
            status=want,
            type=type_,
            since=start,
            until=end,
            page_size=min(limit, 500) if limit else 500,
            page_token=token,
        )
        counts = page.counts if token is None else counts
        items.extend(page.items)
        token = page.next_page_token
        if token is None or (limit and len(items) >= limit):
            break
    items = items[:limit] if limit else items
    ordered = {s.value: counts.get(s, 0) for s in Status if counts.get(s, 0)}
    if state.json:
        emit_json(
            {
                "workflows": [_info_data(i) for i in items],
                "counts": ordered,
                "total": sum(ordered.values()),
            }
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("WORKFLOW ID", "RUN ID", "TYPE", "STATUS", "TASK QUEUE", "START", "CLOSE"):
        table.add_column(column, overflow="fold")
    for i in items:
        table.add_row(
            i.id,
            i.run_id,
            i.type,
            i.status.value + (" (blocked)" if i.blocked else ""),
            i.task_queue,
            format_time(i.start_time),
            format_time(i.close_time),
        )
    state.console.print(table)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in ordered.items()) or "no runs"
    state.console.print(f"{summary} ({len(items)} shown)", markup=False)


# ---------------------------------------------------------------------- describe


def _due(info: WorkflowInfo) -> str:
    if info.due is None:
        return ""
    return "now" if info.due <= datetime.now(UTC) else format_time(info.due)


@workflow.command()
@_ID
@_RUN
@output_options()
@pass_state
def describe(state: State, workflow_id: str, run_id: str | None) -> None:
    """Describe a run: status, times, why it is blocked, what it waits for.

    \b
    Examples:
      tpp workflow describe -w sub-42
      tpp workflow describe -w sub-42 -r 3f2a... --output json
    """
    store = state.store()
    info = store.describe(workflow_id, run_id)
    history = store.read(workflow_id, info.run_id)
    waits = pending(history)
    started = history[0]
    links = {}
    if isinstance(started, WorkflowStarted):
        for name in ("parent", "continued_from", "reset_from"):
            link = getattr(started, name)
            if link is not None:
                links[name] = link
    if state.json:
        emit_json({**_info_data(info), **to_data(links), "pending": to_data(waits)})
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("Workflow id", info.id),
        ("Run id", info.run_id),
        ("Type", info.type),
        ("Status", info.status.value),
        ("Task queue", info.task_queue),
        ("Started", format_time(info.start_time)),
        ("Closed", format_time(info.close_time)),
        ("History length", str(info.history_length)),
        ("Next due", _due(info)),
        ("Blocked", info.blocked or ""),
        *[(name.replace("_", " ").capitalize(), show_value(link)) for name, link in links.items()],
        ("Last failure", waits.last_failure or ""),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    state.console.print(table)
    if waits.activities:
        acts = Table(title="Pending activities", box=None, pad_edge=False, title_justify="left")
        for column in ("SEQ", "TYPE", "SCHEDULED", "FAILED ATTEMPTS", "RETRY AT", "LAST FAILURE"):
            acts.add_column(column, overflow="fold")
        for a in waits.activities:
            acts.add_row(
                str(a["seq"]),
                a["activity_type"],
                a["scheduled"],
                str(a["attempts_failed"]),
                a["retry_at"] or "",
                a["last_failure"] or "",
            )
        state.console.print(acts)
    if waits.timers:
        timers = Table(title="Pending timers", box=None, pad_edge=False, title_justify="left")
        for column in ("SEQ", "DURATION", "FIRES AT"):
            timers.add_column(column)
        for t in waits.timers:
            timers.add_row(str(t["seq"]), t["duration"], t["fire_at"])
        state.console.print(timers)
    if waits.children:
        kids = Table(title="Running children", box=None, pad_edge=False, title_justify="left")
        for column in ("SEQ", "WORKFLOW ID", "TYPE"):
            kids.add_column(column)
        for c in waits.children:
            kids.add_row(str(c["seq"]), c["workflow_id"], c["type"])
        state.console.print(kids)


# ---------------------------------------------------------------------- signal, query


@workflow.command()
@_ID
@click.option("-n", "--name", required=True, help="The signal name.")
@click.option("-i", "--input", "inputs", multiple=True, metavar="JSON", help="The payload as JSON.")
@output_options()
@pass_state
def signal(state: State, workflow_id: str, name: str, inputs: tuple[str, ...]) -> None:
    """Send a signal to a running workflow (buffered until it waits for it).

    \b
    Examples:
      tpp workflow signal -w sub-42 --name cancel
      tpp workflow signal -w exp-1 --name decision --input '{"verdict": "approve", "by": "max"}'
    """
    if len(inputs) > 1:
        raise click.BadParameter(
            "a signal takes one payload: give --input once (a JSON list for several values)",
            param_hint="--input",
        )
    payload = parse_inputs(inputs)[0] if inputs else None
    client = _client(state, state.store())
    client.signal(workflow_id, name, payload)
    if state.json:
        emit_json({"workflow_id": workflow_id, "signal": name})
    else:
        state.note(f"signal {name!r} sent to {workflow_id}")


@workflow.command()
@_ID
@click.option("-n", "--name", required=True, help="The query name (set by SetQuery).")
@output_options()
@pass_state
def query(state: State, workflow_id: str, name: str) -> None:
    """Print the latest value a workflow published with SetQuery (as JSON).

    No workflow code runs: the value is read from the history.

    \b
    Examples:
      tpp workflow query -w sub-42 --name status
    """
    value = _client(state, state.store()).query(workflow_id, name)
    emit_json(value)


# ---------------------------------------------------------------------- cancel, terminate


@workflow.command()
@_ID
@click.option("--reason", default="", help="Why (recorded in CancelRequested).")
@output_options()
@pass_state
def cancel(state: State, workflow_id: str, reason: str) -> None:
    """Request cancellation: CancelledError is thrown into the workflow at its yield.

    The workflow's finally blocks and compensations run; see `result` for the end.

    \b
    Examples:
      tpp workflow cancel -w transfer-7 --reason "customer asked"
    """
    _client(state, state.store()).cancel(workflow_id, reason)
    if state.json:
        emit_json({"workflow_id": workflow_id, "cancel_requested": True})
    else:
        state.note(f"cancellation requested for {workflow_id}")


@workflow.command()
@_ID
@click.option("--reason", default="terminated with tpp", show_default=True, help="Why.")
@output_options()
@pass_state
def terminate(state: State, workflow_id: str, reason: str) -> None:
    """End a run at once; no workflow code runs (not even finally blocks).

    \b
    Examples:
      tpp workflow terminate -w sub-42 --reason "duplicate signup"
    """
    _client(state, state.store()).terminate(workflow_id, reason)
    if state.json:
        emit_json({"workflow_id": workflow_id, "terminated": True, "reason": reason})
    else:
        state.note(f"terminated {workflow_id}")


# ---------------------------------------------------------------------- result


@workflow.command()
@_ID
@click.option("--wait", is_flag=True, help="Wait for the run to close (follows continue-as-new).")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@output_options()
@pass_state
def result(state: State, workflow_id: str, wait: bool, timeout: float | None) -> None:
    """Print a workflow's result as JSON.

    Exit status 1 if it failed, was terminated or cancelled (the error on
    stderr), 3 if it is still running (without --wait) or --timeout passed.

    \b
    Examples:
      tpp workflow result -w sub-42
      tpp workflow result -w sub-42 --wait --timeout 60
    """
    client = _client(state, state.store())
    info = client.describe(workflow_id)
    if not wait and info.status in (Status.RUNNING, Status.CONTINUED_AS_NEW):
        raise CliError(
            f"workflow {workflow_id!r} is still running (run {info.run_id}); use --wait",
            EXIT_NOT_FINISHED,
        )
    try:
        value = client.result(workflow_id, timeout=timeout)
    except (WorkflowFailedError, CancelledError) as exc:
        final = client.describe(workflow_id)
        if state.json:
            cause = exc.__cause__
            emit_json(
                {
                    "workflow_id": workflow_id,
                    "run_id": final.run_id,
                    "status": final.status.value,
                    "error": str(exc),
                    "cause": None if cause is None else f"{type(cause).__name__}: {cause}",
                }
            )
        raise CliError(str(exc)) from exc
    if state.json:
        final = client.describe(workflow_id)
        emit_json(
            {
                "workflow_id": workflow_id,
                "run_id": final.run_id,
                "status": final.status.value,
                "result": value,
            }
        )
    else:
        emit_json(value)


# ---------------------------------------------------------------------- reset


def _boundary(history: list[Event], to: str) -> int:
    points = decision_boundaries(history)
    if not points:
        raise CliError("the run has made no decision yet: there is nothing to reset")
    return points[0] if to == "first" else points[-1]


@workflow.command(name="reset")
@_ID
@_RUN
@click.option(
    "--to-event",
    type=int,
    default=None,
    help="Index of a WorkflowTaskCompleted (see `show`): that decision is made again.",
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["first", "last"], case_sensitive=False),
    default=None,
    help="Instead of --to-event: the first or the last decision of the run.",
)
@click.option("--reason", default="", help="Why (kept in the new run's reset_from link).")
@output_options()
@pass_state
def reset_(
    state: State,
    workflow_id: str,
    run_id: str | None,
    to_event: int | None,
    to: str | None,
    reason: str,
) -> None:
    """Repair a workflow: a new run keeps the history before a decision and redoes the rest.

    The current run is terminated (if running) and a new run of the same id
    starts with the chosen run's events before --to-event (the index of a
    WorkflowTaskCompleted, listed by `tpp workflow show`); a worker replays
    them with its current code and makes that decision again.  Reset to the
    decision that scheduled a failed activity to run it again with fixed code.
    Prints the new run id.

    \b
    Examples:
      tpp workflow show -w order-7               # find the decision: 7 WorkflowTaskCompleted
      tpp workflow reset -w order-7 --to-event 7 --reason "charge bug fixed"
      tpp workflow reset -w order-7 --to first
    """
    if (to_event is None) == (to is None):
        raise click.UsageError("give exactly one of --to-event N and --to first|last")
    store = state.store()
    if to_event is None:
        assert to is not None
        to_event = _boundary(store.read(workflow_id, run_id), to.lower())
    new_run = reset(store, workflow_id, to_event, run_id=run_id, reason=reason)
    if state.json:
        emit_json({"workflow_id": workflow_id, "run_id": new_run, "reset_to_event": to_event})
    else:
        click.echo(new_run)
        state.note(f"reset {workflow_id} to event {to_event}: new run {new_run}")
