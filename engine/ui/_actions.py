"""The actions: signal, cancel, terminate, reset; and logging in and out.

Every action is a ``POST`` with the CSRF field (:func:`~._security.check_csrf`)
and takes two steps: the first renders a confirmation page that says what
will happen (nothing changes), the second (``confirm=yes``, from that page's
form) does it and redirects to the run with a fixed message.  Mistakes (bad
JSON, a closed run, a point that is no decision boundary) are an error page
that shows the engine's message as text.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .._errors import WorkflowAlreadyClosedError, WorkflowError, WorkflowNotFoundError
from ._app import Ui, ui_of
from ._security import Guard, check_csrf, safe_next, session_cookie
from ._views import Urls, pretty

__all__ = ["cancel", "login", "login_form", "logout", "reset", "signal", "terminate"]

_FAILED_LOGIN_DELAY: Final = 0.25  # seconds: guessing a token by the thousand is slow


def _urls(request: Request) -> Urls:
    return Urls(request.scope.get("root_path", ""))


def _text(form: FormData, name: str, *, required: bool = False, default: str = "") -> str:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise HTTPException(400, f"the form field {name!r} is required")
        return default
    if not isinstance(value, str):
        raise HTTPException(400, f"the form field {name!r} must be text, not a file")
    return value


async def _form(request: Request) -> FormData:
    form = await request.form(max_files=0, max_fields=50)
    check_csrf(request, form)
    return form


def _confirm(
    request: Request,
    ui: Ui,
    *,
    title: str,
    action: str,
    rows: list[tuple[str, str]],
    hidden: dict[str, str],
    button: str,
    back: str,
    warning: str = "",
    pre: str | None = None,
) -> Response:
    ctx: dict[str, Any] = {
        "title": title,
        "action": action,
        "rows": rows,
        "hidden": {**hidden, "confirm": "yes"},
        "button": button,
        "back": back,
        "warning": warning,
        "pre": pre,
    }
    return ui.render(request, "confirm.html", ctx)


def _failed(request: Request, ui: Ui, exc: Exception) -> Response:
    if isinstance(exc, WorkflowNotFoundError):
        status = 404
    elif isinstance(exc, WorkflowAlreadyClosedError):
        status = 409
    else:
        status = 400
    message = str(exc) or type(exc).__name__
    return ui.render(request, "error.html", {"status": status, "message": message}, status)


def _done(request: Request, workflow_id: str, run_id: str | None, what: str) -> Response:
    return RedirectResponse(_urls(request).workflow(workflow_id, run_id, done=what), 303)


# --------------------------------------------------------------------------- the actions


async def signal(request: Request) -> Response:
    ui = ui_of(request)
    form = await _form(request)
    wid = _text(form, "id", required=True)
    name = _text(form, "name", required=True)
    text = _text(form, "payload")
    try:
        value = msgspec.json.decode(text) if text.strip() else None
    except msgspec.DecodeError as exc:
        return _failed(request, ui, ValueError(f"the payload is not valid JSON: {exc}"))
    if _text(form, "confirm") != "yes":
        return _confirm(
            request,
            ui,
            title="Send a signal",
            action="/workflow/signal",
            rows=[("Workflow", wid), ("Signal", name)],
            pre=pretty(value),
            hidden={"id": wid, "name": name, "payload": text},
            button="Send the signal",
            back=_urls(request).workflow(wid),
        )
    try:
        await run_in_threadpool(ui.client.signal, wid, name, value)
    except (WorkflowError, ValueError, TypeError) as exc:
        return _failed(request, ui, exc)
    return _done(request, wid, None, "signal")


async def cancel(request: Request) -> Response:
    ui = ui_of(request)
    form = await _form(request)
    wid = _text(form, "id", required=True)
    reason = _text(form, "reason")
    if _text(form, "confirm") != "yes":
        return _confirm(
            request,
            ui,
            title="Cancel the workflow",
            action="/workflow/cancel",
            rows=[("Workflow", wid), ("Reason", reason or "(none)")],
            hidden={"id": wid, "reason": reason},
            button="Request cancellation",
            back=_urls(request).workflow(wid),
            warning="CancelledError is thrown into the workflow at its current yield; its "
            "finally blocks and compensations run.",
        )
    try:
        await run_in_threadpool(ui.client.cancel, wid, reason)
    except (WorkflowError, ValueError, TypeError) as exc:
        return _failed(request, ui, exc)
    return _done(request, wid, None, "cancel")


async def terminate(request: Request) -> Response:
    ui = ui_of(request)
    form = await _form(request)
    wid = _text(form, "id", required=True)
    reason = _text(form, "reason", default="terminated from the web UI")
    if _text(form, "confirm") != "yes":
        return _confirm(
            request,
            ui,
            title="Terminate the workflow",
            action="/workflow/terminate",
            rows=[("Workflow", wid), ("Reason", reason)],
            hidden={"id": wid, "reason": reason},
            button="Terminate",
            back=_urls(request).workflow(wid),
            warning="The run ends at once: no workflow code runs, not even finally blocks.",
        )
    try:
        await run_in_threadpool(ui.client.terminate, wid, reason)
    except (WorkflowError, ValueError, TypeError) as exc:
        return _failed(request, ui, exc)
    return _done(request, wid, None, "terminate")


async def reset(request: Request) -> Response:
    ui = ui_of(request)
    form = await _form(request)
    wid = _text(form, "id", required=True)
    run = _text(form, "run") or None
    reason = _text(form, "reason")
    raw = _text(form, "event", required=True)
    try:
        event = int(raw)
    except ValueError:
        return _failed(request, ui, ValueError(f"the reset point must be an event index: {raw!r}"))
    if _text(form, "confirm") != "yes":
        try:
            info = await run_in_threadpool(ui.store.describe, wid, run)
        except WorkflowError as exc:
            return _failed(request, ui, exc)
        return _confirm(
            request,
            ui,
            title="Reset the workflow",
            action="/workflow/reset",
            rows=[
                ("Workflow", wid),
                ("Run", info.run_id),
                ("Reset to", f"event {event} (a WorkflowTaskCompleted)"),
                ("Reason", reason or "(none)"),
            ],
            hidden={"id": wid, "run": info.run_id, "event": str(event), "reason": reason},
            button="Reset",
            back=_urls(request).workflow(wid, info.run_id),
            warning=f"A new run keeps events 0 to {event - 1} of this run and makes decision "
            f"{event} again with the workers' current code; the workflow's current run is "
            f"terminated if it is running.",
        )
    try:
        new_run = await run_in_threadpool(ui.client.reset, wid, event, run_id=run, reason=reason)
    except (WorkflowError, ValueError, TypeError) as exc:
        return _failed(request, ui, exc)
    return _done(request, wid, new_run, "reset")


# --------------------------------------------------------------------------- login


def _guard(request: Request) -> Guard:
    guard: Guard = request.scope["state"]["guard"]
    return guard


def login_form(request: Request) -> Response:
    ui = ui_of(request)
    root = request.scope.get("root_path", "")
    if not ui.login:
        return RedirectResponse(root + "/", 303)
    target = safe_next(request.query_params.get("next"), root)
    return ui.render(request, "login.html", {"next": target, "wrong": False})


async def login(request: Request) -> Response:
    ui = ui_of(request)
    root = request.scope.get("root_path", "")
    form = await _form(request)
    target = safe_next(_text(form, "next"), root)
    if not ui.login:
        return RedirectResponse(root + "/", 303)
    guard = _guard(request)
    if not guard.token_ok(_text(form, "token")):
        await asyncio.sleep(_FAILED_LOGIN_DELAY)
        return ui.render(request, "login.html", {"next": target, "wrong": True}, 401)
    response = RedirectResponse(target, 303)
    response.headers.append("set-cookie", session_cookie(guard, request))
    return response


async def logout(request: Request) -> Response:
    await _form(request)
    root = request.scope.get("root_path", "")
    response = RedirectResponse(root + "/login", 303)
    response.delete_cookie("tpp_ui_session", path="/")
    return response
