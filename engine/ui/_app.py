"""``create_app``: the Starlette application, its routes, templates and static files.

Routes (workflow ids and run ids always travel as query parameters, so any
string round-trips; every ``POST`` needs the CSRF field, see ``_security``)::

    GET  /                         workflows: filters, counts per status, pages
    GET  /partials/workflows       the list's table alone (htmx polls it)
    GET  /workflow?id=&run=        one run: status, input, outcome, links, pending
                                   work, queries, graph, timeline, actions
    GET  /partials/workflow        its live part (status, pending work; polled)
    GET  /payload?id=&run=&event=&n=   one payload, fetched and decoded on demand
    GET  /workflow/history.json    the run's history (engine.events.encode_history)
    GET  /workflow/graph.mmd       the run as a Mermaid flowchart (history_mermaid)
    POST /workflow/signal|cancel|terminate|reset   confirm, then act
    GET  /stats                    per workflow type and activity type (tpp stats)
    GET  /login, POST /login, POST /logout         with a token only
    GET  /static/NAME              the vendored htmx and the stylesheet

Blocking work (the store, the CAS, decoding) runs in Starlette's thread pool.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Iterable
from typing import Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from stores import Store

from .. import __version__
from .._client import Client
from .._codec import Codec
from .._errors import WorkflowNotFoundError
from .._payloads import BlobStore, PayloadCodec
from ._security import CSRF_FIELD, Guard
from ._views import Urls

__all__ = ["HTMX", "Ui", "create_app"]

#: The vendored htmx build (``static/``; 0BSD licence beside it).
HTMX: Final = "htmx-2.0.11.min.js"
_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


class Ui:
    """What every handler needs: the store, a client over it, the templates, the settings."""

    def __init__(
        self,
        store: Store,
        cas: BlobStore | None,
        codec: Codec | None,
        *,
        token: str | None,
        refresh: float,
    ) -> None:
        self.store = store
        self.client = Client(store, cas=cas, codec=codec)
        self.has_keys = isinstance(codec, PayloadCodec) and codec.keys is not None
        self.has_cas = cas is not None
        self.login = token is not None
        self.refresh = refresh
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("engine.ui", "templates"),
            autoescape=True,  # NB: every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.static = _load_static()
        self.templates = Jinja2Templates(env=env, context_processors=[self._context])

    def _context(self, request: Request) -> dict[str, Any]:
        state = request.scope.get("state", {})
        return {
            "urls": Urls(request.scope.get("root_path", "")),
            "csrf_field": CSRF_FIELD,
            "csrf_token": state.get("csrf_token", ""),
            "login": self.login,
            "htmx": f"{HTMX}",
            "css": f"ui.css?v={self.static['ui.css'][2][:12]}",
            "version": __version__,
            "store_kind": type(self.store).__name__,
            "refresh": f"{self.refresh:g}" if self.refresh else "",
        }

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        """A template as an HTML response.

        NB: a lone surrogate (possible in an id, a name or a payload) is written as
        its escape, ``\\udcff``, where strict UTF-8 would fail the whole page.
        """
        context = {"request": request, **context}
        for processor in self.templates.context_processors:
            context.update(processor(request))
        text = self.templates.get_template(name).render(context)
        return HTMLResponse(text.encode("utf-8", "backslashreplace"), status_code=status)


def ui_of(request: Request) -> Ui:
    ui: Ui = request.app.state.ui
    return ui


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """The static files by name: bytes, content type, sha256 (read once, never by request)."""
    out = {}
    folder = importlib.resources.files("engine.ui") / "static"
    for entry in folder.iterdir():
        name = entry.name
        ext = os.path.splitext(name)[1]
        if entry.is_file() and ext in _TYPES:
            data = entry.read_bytes()
            kind = _TYPES[ext] + ("; charset=utf-8" if ext != ".js" else "")
            out[name] = (data, kind, hashlib.sha256(data).hexdigest())
    return out


def static_file(request: Request) -> Response:
    """A vendored file by exact name; long-lived caching (names and ``?v=`` carry versions)."""
    found = ui_of(request).static.get(request.path_params["name"])
    if found is None:
        raise HTTPException(404, "no such static file")
    data, kind, digest = found
    return Response(
        data,
        media_type=kind,
        headers={"cache-control": "public, max-age=31536000, immutable", "etag": f'"{digest}"'},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, exc.detail)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_page(request, 404, str(exc))


def _error_page(request: Request, status: int, message: str) -> Response:
    if "hx-request" in request.headers:
        return PlainTextResponse(message, status_code=status)
    ui = ui_of(request)
    return ui.render(request, "error.html", {"status": status, "message": message}, status)


def create_app(
    store: Store,
    *,
    cas: BlobStore | None = None,
    codec: Codec | None = None,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    refresh: float = 5.0,
) -> Starlette:
    """The web UI over ``store`` as an ASGI app (serve it with uvicorn, or ``tpp ui``).

    ``cas`` and ``codec`` are the workers' (so offloaded, compressed and
    encrypted payloads read); without keys an encrypted payload is shown as
    encrypted.  With ``token`` every request needs it (a bearer header, or the
    login form's cookie).  Without one the app answers only requests that name
    a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) unless
    ``allowed_hosts`` lists others.  ``refresh`` is the seconds between the
    pages' self-refreshes (0: never).

    >>> from starlette.testclient import TestClient
    >>> from stores import MemoryStore
    >>> app = create_app(MemoryStore())
    >>> TestClient(app, base_url="http://localhost").get("/").status_code
    200
    """
    from . import _actions, _pages

    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError("a token must be a non-empty string")
    if refresh < 0:
        raise ValueError(f"refresh must be >= 0 seconds, got {refresh!r}")
    routes = [
        Route("/", _pages.workflows_page),
        Route("/partials/workflows", _pages.workflows_partial),
        Route("/workflow", _pages.workflow_page),
        Route("/partials/workflow", _pages.workflow_partial),
        Route("/workflow/history.json", _pages.history_json),
        Route("/workflow/graph.mmd", _pages.graph_mermaid),
        Route("/payload", _pages.payload),
        Route("/stats", _pages.stats_page),
        Route("/workflow/signal", _actions.signal, methods=["POST"]),
        Route("/workflow/cancel", _actions.cancel, methods=["POST"]),
        Route("/workflow/terminate", _actions.terminate, methods=["POST"]),
        Route("/workflow/reset", _actions.reset, methods=["POST"]),
        Route("/login", _actions.login_form, methods=["GET"]),
        Route("/login", _actions.login, methods=["POST"]),
        Route("/logout", _actions.logout, methods=["POST"]),
        Route("/static/{name}", static_file),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Guard,
                secret=os.urandom(32),
                token=token,
                allowed_hosts=None if allowed_hosts is None else list(allowed_hosts),
            )
        ],
        exception_handlers={HTTPException: _http_error, WorkflowNotFoundError: _not_found},
    )
    app.state.ui = Ui(store, cas, codec, token=token, refresh=refresh)
    return app
