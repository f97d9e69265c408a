"""``tpp store ...``: copy between backends, verify everything, rebuild an index."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click
import msgspec
from rich.table import Table

import stores
from stores import Store
from stores._summary import RunSummary

from .._apps import App, load_app
from .._errors import CorruptionError, WorkflowError
from .._events import CLOSING_EVENTS, Event, WorkflowStarted
from .._info import WorkflowInfo
from ._common import EXIT_FAILED, State, emit_json, output_options, pass_state, progress_bar
from ._verify import check_history

__all__ = ["store"]


@click.group(name="store")
def store() -> None:
    """Copy, verify and repair stores.

    \b
    Examples:
      tpp store copy file:.tpp/files sqlite:backup.db
      tpp --store sqlite:.tpp/store.db store verify --app myapp:app
      tpp --store file:.tpp/files store rebuild-index
    """


@store.command()
@click.argument("src_url", metavar="SRC_URL")
@click.argument("dst_url", metavar="DST_URL")
@output_options(store=False)
@pass_state
def copy(state: State, src_url: str, dst_url: str) -> None:
    """Copy every run of SRC_URL into DST_URL, verified by reading it back.

    Run ids, event indexes and times, statuses and links are kept; so the
    destination is a working store.  A destination run identical to the
    source's is skipped, one holding a prefix of it (an interrupted copy) is
    completed; a different run of an id the source has is refused before
    anything is written.  Stop the workers on SRC_URL first for an exact copy.

    \b
    Examples:
      tpp store copy file:.tpp/files sqlite:.tpp/store.db
      tpp store copy sqlite:.tpp/store.db file:/backups/tpp-2026-11-26
    """
    if src_url == dst_url:
        raise click.BadParameter("the source and the destination are the same store")
    src = state.store(src_url)
    dst = state.store(dst_url, create=True)
    with progress_bar(state, "copying runs") as update:
        report = stores.copy(src, dst, progress=update)
    if state.json:
        emit_json({"source": src_url, "destination": dst_url, **msgspec.structs.asdict(report)})
        return
    state.console.print(
        f"copied {report.copied} run(s) of {report.workflows} workflow(s) ({report.events} "
        f"events) from {src_url} to {dst_url}; {report.skipped} already there, "
        f"{report.resumed} completed; verified",
        markup=False,
    )


class _Check(msgspec.Struct, kw_only=True):
    runs: int = 0
    events: int = 0
    replayed: int = 0
    not_in_app: int = 0
    problems: list[dict[str, str]] = msgspec.field(default_factory=list)


def _check_run(
    check: _Check, s: Store, wid: str, rid: str, app: App | None, cas: Any, codec: Any
) -> None:
    def problem(kind: str, detail: str) -> None:
        check.problems.append({"workflow_id": wid, "run_id": rid, "kind": kind, "detail": detail})

    try:
        events: list[Event] = s.read(wid, rid)
        info = s.describe(wid, rid)
    except CorruptionError as exc:
        problem("damaged", str(exc))
        return
    except WorkflowError as exc:
        problem("unreadable", str(exc))
        return
    check.events += len(events)
    first = events[0] if events else None
    if not isinstance(first, WorkflowStarted) or (first.workflow_id, first.run_id) != (wid, rid):
        problem("inconsistent", "the history does not begin with this run's WorkflowStarted")
        return
    bad = next((i for i, ev in enumerate(events) if ev.index != i), None)
    if bad is not None:
        problem("inconsistent", f"event {bad} carries index {events[bad].index}")
    folded = RunSummary.fold(events)
    if info.history_length != len(events) or info.status is not folded.status:
        problem(
            "index",
            f"the index says {info.status.value} with {info.history_length} events, the "
            f"history is {folded.status.value} with {len(events)}",
        )
    if app is None or type(events[-1]) not in CLOSING_EVENTS:
        return
    outcome = check_history(app, events, wid, cas=cas, codec=codec)
    if outcome.status == "skipped":
        check.not_in_app += 1
    elif outcome.status == "ok":
        check.replayed += 1
    else:
        problem("diverged" if outcome.status == "diverged" else "replay", outcome.detail)


def _hidden_damage(url: str, s: Store, listed: dict[str, int], check: _Check) -> None:
    """A ``file:`` store lists no run it cannot read: walk its log directories as well.

    Every workflow directory with more log files than listed runs is read by id;
    a ``CorruptionError`` there is damage the listing hid.
    """
    from stores import _names

    root = pathlib.Path(url.partition(":")[2].partition("?")[0]) / "runs"
    if not root.is_dir():
        return
    for directory in sorted(
        p for shard in root.iterdir() if shard.is_dir() for p in shard.iterdir()
    ):
        logs = [p for p in directory.glob("*.log") if p.stem.isdigit()]
        wid = _names.id_of(directory.name) or _logged_id(logs)
        if wid is None:
            if logs:
                check.problems.append(
                    {
                        "workflow_id": "",
                        "run_id": "",
                        "kind": "damaged",
                        "detail": f"{directory}: no log has a readable WorkflowStarted",
                    }
                )
            continue
        if len(logs) <= listed.get(wid, 0):
            continue
        try:
            s.read(wid)
        except CorruptionError as exc:
            check.problems.append(
                {"workflow_id": wid, "run_id": "", "kind": "damaged", "detail": str(exc)}
            )
        except WorkflowError:
            pass  # a create that never finished: nothing was acknowledged


def _logged_id(logs: list[pathlib.Path]) -> str | None:
    """The workflow id in the first line of a log (``checksum batch k/n {json}``)."""
    for log in sorted(logs):
        try:
            with log.open("rb") as f:
                line = f.readline()
            event = json.loads(line.split(b" ", 3)[3])
            return str(event["workflow_id"])
        except (OSError, IndexError, ValueError, KeyError, TypeError):
            continue
    return None


@store.command(name="verify")
@click.argument("url", required=False, metavar="[URL]")
@click.option(
    "--app", "app_spec", default=None, metavar="SPEC", help="Also replay every closed run."
)
@output_options()
@pass_state
def verify_store(state: State, url: str | None, app_spec: str | None) -> None:
    """Re-read every run and check it; with --app, replay every closed run.

    Every event is read through the store's own read path, which checks its
    checksums (CorruptionError); each history must begin with its run's
    WorkflowStarted, carry consecutive indexes, and agree with the index
    (status, length).  URL defaults to the store in use.  Exit status 1 on
    any problem.  A file: store's log directories are walked as well, since
    the store leaves a run it cannot read out of its listing.

    \b
    Examples:
      tpp --store file:.tpp/files store verify
      tpp store verify sqlite:.tpp/store.db --app myapp:app --output json
    """
    app = load_app(app_spec).resolve(None) if app_spec else None
    s = state.store(url)
    cas = state.cas()
    check = _Check()
    try:
        infos = list(s.runs())
    except CorruptionError:  # a log it cannot even list: check what it can, walk the rest
        infos = _listed(s)
    with progress_bar(state, "verifying runs") as update:
        for n, info in enumerate(infos, 1):
            check.runs += 1
            _check_run(check, s, info.id, info.run_id, app, cas, state.codec())
            update(n, len(infos))
    where = url or state.url()
    if where.startswith("file:"):
        listed: dict[str, int] = {}
        for info in infos:
            listed[info.id] = listed.get(info.id, 0) + 1
        _hidden_damage(where, s, listed, check)
    if state.json:
        emit_json({"store": where, **msgspec.structs.asdict(check)})
    else:
        out = state.console
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("runs", str(check.runs))
        table.add_row("events", str(check.events))
        if app is not None:
            table.add_row("closed runs replayed", str(check.replayed))
            table.add_row("types not in the app", str(check.not_in_app))
        table.add_row("problems", str(len(check.problems)))
        out.print(table)
        for p in check.problems:
            out.print(f"[red]{p['kind'].upper()}[/] {p['workflow_id']} run {p['run_id']}: ", end="")
            out.print(p["detail"], markup=False, soft_wrap=True)
    if check.problems:
        raise click.exceptions.Exit(EXIT_FAILED)


def _listed(s: Store) -> list[WorkflowInfo]:
    """Every run the store's visibility listing shows (it leaves unreadable logs out)."""
    out: list[WorkflowInfo] = []
    token: str | None = None
    while True:
        page = s.list(page_token=token)
        out.extend(page.items)
        token = page.next_page_token
        if token is None:
            return out


@store.command(name="rebuild-index")
@click.argument("url", required=False, metavar="[URL]")
@output_options()
@pass_state
def rebuild_index(state: State, url: str | None) -> None:
    """Rebuild a store's ready and visibility index from its histories.

    FileStore keeps its index beside the logs and rebuilds it from them (also
    on its own after a reboot); SQLite and memory keep no separate index, so
    there is nothing to rebuild for them.

    \b
    Examples:
      tpp --store file:.tpp/files store rebuild-index
    """
    s = state.store(url)
    where = url or state.url()
    rebuild = getattr(s, "rebuild_index", None)
    if not callable(rebuild):
        message = f"nothing to rebuild: {type(s).__name__} keeps no separate index ({where})"
        if state.json:
            emit_json({"store": where, "rebuilt": False, "message": message})
        else:
            state.console.print(message, markup=False)
        return
    with state.err.status(f"rebuilding the index of {where}"):
        rebuild()
    runs = sum(1 for _ in s.runs())
    if state.json:
        emit_json({"store": where, "rebuilt": True, "runs": runs})
    else:
        state.console.print(f"rebuilt the index of {where}: {runs} run(s)", markup=False)
