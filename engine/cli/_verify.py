"""``tpp verify``: replay recorded histories against the current code, before you deploy it.

Each history (a file from ``tpp workflow show --output json``, or every run of
a store) is replayed with the app's workflow of its type through
``engine.testing.replay``; the first divergence is reported with the
``NonDeterminismError`` message (sequence number, recorded vs yielded
command, source file and line).  Exit status 1 on any divergence, so the
command can gate a deploy in CI.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

import click
import msgspec

from .._apps import App, load_app
from .._errors import NonDeterminismError, WorkflowError
from .._events import Event, WorkflowStarted
from ..testing._replay import assert_deterministic, load_history, replay
from ._common import EXIT_FAILED, State, emit_json, output_options, pass_state, progress_bar

__all__ = ["Outcome", "check_history", "verify"]

_URL = re.compile(r"(memory|file|sqlite|azure):|[a-z][a-z0-9+.-]*://")


class Outcome(msgspec.Struct, kw_only=True):
    """One history's verdict: ``ok``, ``diverged``, ``error`` (unreadable) or ``skipped``."""

    source: str
    workflow_id: str = ""
    run_id: str = ""
    type: str = ""
    events: int = 0
    status: str = "ok"
    detail: str = ""


def check_history(
    app: App,
    events: list[Event],
    source: str,
    *,
    strict: bool = False,
    check_args: bool = True,
    cas: Any = None,
    codec: Any = None,
) -> Outcome:
    """Replay one history with the app's code; the outcome says OK or where it diverged."""
    out = Outcome(source=source, events=len(events))
    started = events[0] if events else None
    if not isinstance(started, WorkflowStarted):
        out.status, out.detail = "error", "the history does not begin with WorkflowStarted"
        return out
    out.workflow_id, out.run_id, out.type = (
        started.workflow_id,
        started.run_id,
        started.workflow_type,
    )
    fn = app.workflows.get(started.workflow_type)
    if fn is None:
        out.status = "skipped"
        out.detail = (
            f"workflow type {started.workflow_type!r} is not in app {app.spec!r} "
            f"(it has {sorted(app.workflows) or 'none'})"
        )
        return out
    try:
        if strict:
            assert_deterministic(fn, events, codec=codec, cas=cas, check_args=check_args)
        else:
            replay(fn, events, codec=codec, cas=cas, check_args=check_args)
    except NonDeterminismError as exc:
        out.status, out.detail = "diverged", str(exc)
    except AssertionError as exc:  # assert_deterministic: the live path differs
        out.status, out.detail = "diverged", str(exc)
    except Exception as exc:  # the code could not even be run over it
        out.status, out.detail = "error", f"{type(exc).__name__}: {exc}"
    return out


def _is_url(arg: str) -> bool:
    return not pathlib.Path(arg).exists() and _URL.match(arg) is not None


def _histories(state: State, sources: tuple[str, ...]) -> Iterator[tuple[str, list[Event] | str]]:
    """(source, events or an error message) for every history the sources name."""
    for arg in sources or (state.url(),):
        if not sources or _is_url(arg):
            store = state.store(arg)
            for info in list(store.runs()):
                label = f"{arg}"
                try:
                    yield label, store.read(info.id, info.run_id)
                except WorkflowError as exc:
                    yield label, f"cannot read run {info.run_id} of {info.id!r}: {exc}"
            continue
        path = pathlib.Path(arg)
        if not path.is_file():
            yield arg, "no such history file (nor a store URL: memory:, file:PATH, sqlite:PATH)"
            continue
        try:
            yield arg, load_history(path)
        except (msgspec.DecodeError, msgspec.ValidationError, OSError, ValueError) as exc:
            yield arg, f"not a history file: {exc}"


def _count(sources: tuple[str, ...], state: State) -> int:
    total = 0
    for arg in sources or (state.url(),):
        if not sources or _is_url(arg):
            total += sum(1 for _ in state.store(arg).runs())
        else:
            total += 1
    return total


@click.command()
@click.argument("sources", nargs=-1, metavar="[HISTORY_FILE|STORE_URL]...")
@click.option("--app", "app_spec", required=True, metavar="SPEC", help="The code to check.")
@click.option(
    "--strict",
    is_flag=True,
    help="Also replay through the live path a worker uses (engine.testing.assert_deterministic).",
)
@click.option(
    "--no-check-args", is_flag=True, help="Ignore changed arguments (as Worker(check_args=False))."
)
@click.option(
    "--ignore-unknown",
    is_flag=True,
    help="Skip histories whose type the app lacks (default: fail).",
)
@output_options()
@pass_state
def verify(
    state: State,
    sources: tuple[str, ...],
    app_spec: str,
    strict: bool,
    no_check_args: bool,
    ignore_unknown: bool,
) -> None:
    """Replay recorded histories against the current code; fail on any divergence.

    Each SOURCE is a history file (written by `tpp workflow show --output
    json`) or a store URL (every run in it); with no SOURCE, every run in the
    store in use (--store).  Each history is replayed with the app's workflow
    of its type; a divergence names the sequence number, the recorded and the
    yielded command, and the file and line of the yield.  Exit status 1 if
    any history diverges (or cannot be read, or has a type the app lacks,
    unless --ignore-unknown), so it can gate a deploy.

    \b
    Examples:
      tpp workflow show -w sub-42 --output json > histories/sub-42.json
      tpp verify --app examples.subscription histories/*.json
      tpp verify --app myapp:app sqlite:prod-copy.db
      tpp --store file:.tpp/files verify --app ./workflows.py --strict
    """
    app = load_app(app_spec).resolve(None)
    cas = state.cas()
    outcomes: list[Outcome] = []
    total = _count(sources, state)
    with progress_bar(state, "replaying") as update:
        for source, got in _histories(state, sources):
            if isinstance(got, str):
                outcomes.append(Outcome(source=source, status="error", detail=got))
            else:
                outcomes.append(
                    check_history(
                        app,
                        got,
                        source,
                        strict=strict,
                        check_args=not no_check_args,
                        cas=cas,
                        codec=state.codec(),
                    )
                )
            update(len(outcomes), total)
    _report(state, outcomes)
    bad = [o for o in outcomes if o.status in ("diverged", "error")]
    if not ignore_unknown:
        bad += [o for o in outcomes if o.status == "skipped"]
    if bad:
        raise click.exceptions.Exit(EXIT_FAILED)


_STYLE = {"ok": "green", "diverged": "red", "error": "red", "skipped": "yellow"}


def _report(state: State, outcomes: list[Outcome]) -> None:
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in _STYLE}
    if state.json:
        emit_json({"results": outcomes, "counts": counts})
        return
    out = state.console
    for o in outcomes:
        what = (
            f"{o.workflow_id} (run {o.run_id}, {o.type}, {o.events} events)"
            if o.workflow_id
            else ""
        )
        where = o.source if o.source != o.workflow_id else ""
        head = " ".join(part for part in (what, f"[{where}]" if where else "") if part)
        out.print(f"[{_STYLE[o.status]}]{o.status.upper():<8}[/] ", end="")
        out.print(head, markup=False, soft_wrap=True)
        if o.detail:
            out.print("         " + o.detail, markup=False, soft_wrap=True)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no histories"
    out.print(f"{len(outcomes)} histories: {summary}", markup=False)
