"""``tpp ui``: serve the web UI (``engine.ui``) over the store in use, with uvicorn.

Loopback (the default, 127.0.0.1) needs no token; any other address does: the
one given with ``--token`` (or ``$TPP_UI_TOKEN``), else a random one that is
printed on stderr.  The UI uses the same ``--cas``/``--keys``/``--key-vault``
as every command, so it reads the payloads the workers write.
"""

from __future__ import annotations

import secrets
from typing import Any

import click

from ._common import CliError, State, output_options, pass_state

__all__ = ["serve", "ui"]

_EXTRA = "the web UI needs the ui extra: pip install 'temporalpp[ui]'"


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until Ctrl-C (tests replace this function)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback requires a token.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8233, show_default=True, help="TCP port."
)
@click.option(
    "--token",
    envvar="TPP_UI_TOKEN",
    show_envvar=True,
    default=None,
    metavar="TOKEN",
    help="Require this token (a bearer header, or the login page); generated and printed "
    "when --host is not loopback and none is given.",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the list and a running workflow's page refresh themselves (0: never).",
)
@output_options()
@pass_state
def ui(state: State, host: str, port: int, token: str | None, refresh: float) -> None:
    """Serve the web UI: browse, inspect and operate workflows in a browser.

    Workflows list (filters, counts, pages; refreshes itself), one run (input,
    outcome, history timeline with payloads on demand, pending activities and
    timers, query values, its graph, links to parent, children and other runs),
    actions (signal, cancel, terminate, reset; each confirmed first) and stats.
    Every change is a POST with a CSRF token; binding to anything but loopback
    requires a token.

    \b
    Examples:
      tpp ui                                   # http://127.0.0.1:8233/
      tpp --store file:/srv/tpp ui --port 9000
      tpp ui --host 0.0.0.0 --token "$(openssl rand -hex 24)"
      TPP_UI_TOKEN=... tpp ui --host 0.0.0.0 --port 80
    """
    from .._errors import WorkflowError

    try:
        from ..ui import create_app
        from ..ui._security import is_loopback
    except ImportError as exc:
        raise CliError(f"{_EXTRA} ({exc})") from None
    if token is not None and not token.strip():
        raise click.BadParameter("the token must not be empty", param_hint="--token")
    generated = False
    if token is None and not is_loopback(host):
        token, generated = secrets.token_urlsafe(24), True
    store = state.store()
    try:
        app = create_app(store, cas=state.cas(), codec=state.codec(), token=token, refresh=refresh)
    except (ValueError, WorkflowError) as exc:
        raise CliError(str(exc)) from None
    state.note(f"Temporal++ UI on {_url(host, port)} (store {state.url()}); Ctrl-C stops it")
    if generated:
        state.note(f"token: {token}")
        state.note("  (log in with it, or send 'Authorization: Bearer <token>')")
    elif token is not None:
        state.note("a token is required (log in with it, or send 'Authorization: Bearer ...')")
    serve(app, host, port)
