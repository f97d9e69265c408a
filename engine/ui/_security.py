"""The web UI's guards: Host check, token, CSRF, security headers (one ASGI middleware).

Theory of operation:

* **Host.**  Without a token the UI trusts whoever can reach it, which is only
  safe on loopback; a page on another site could still reach a loopback
  server through DNS rebinding (its own name, resolved to 127.0.0.1), so
  requests must name a loopback host (``localhost``, ``127.0.0.1``, ``::1``),
  or one of ``allowed_hosts``.
* **Token.**  With a token every request but the login page and static files
  needs ``Authorization: Bearer TOKEN`` or the session cookie that the login
  form sets (an HMAC of the token, never the token itself; ``HttpOnly``,
  ``SameSite=Lax``, ``Secure`` over HTTPS).  Comparisons are constant-time.
* **CSRF.**  Every state-changing request is a POST (the routes allow nothing
  else).  The middleware gives each browser a random nonce in a ``SameSite=Strict``
  cookie, and the pages put ``HMAC(app secret, nonce)`` in a hidden form field;
  :func:`check_csrf` recomputes and compares it in constant time, and refuses a
  cross-origin (or ``null``) ``Origin`` header.  A request authenticated by a bearer header
  (which a browser never sends by itself) needs no CSRF field.
* **Size.**  A request body above :data:`MAX_BODY` is refused with 413, by its
  ``Content-Length`` or, when it streams, at the byte that crosses the limit.
* **Headers.**  A Content-Security-Policy that allows scripts, styles, images
  and connections from the app only (no inline script or style, no eval), no
  framing (``frame-ancestors 'none'``), ``nosniff``, no referrer to other sites
  (ids are in URLs; ``same-origin``, so the app's own forms carry a real
  ``Origin``, and an ``Origin: null`` is refused), and ``no-store`` on everything
  but the versioned static files.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import urllib.parse
from collections.abc import Iterable
from typing import Final

from starlette.datastructures import FormData, Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "LOOPBACK_HOSTS",
    "MAX_BODY",
    "SESSION_COOKIE",
    "Guard",
    "check_csrf",
    "is_loopback",
    "safe_next",
]

SESSION_COOKIE: Final = "tpp_ui_session"
CSRF_COOKIE: Final = "tpp_ui_csrf"
CSRF_FIELD: Final = "csrf"
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
#: The largest request body accepted (forms are small; a signal payload is JSON text).
MAX_BODY: Final = 1024 * 1024

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
)
_PUBLIC: Final = ("/login", "/static/")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The name in a ``Host`` header, without the port (``[::1]:8233`` -> ``::1``)."""
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def safe_next(target: str | None, root: str = "") -> str:
    """A redirect target that stays in the app: a local absolute path, else the root."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\r\n\\")
    ):
        return root + "/"
    return target


class Guard:
    """ASGI middleware: Host check, token authentication, the CSRF nonce, security headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: bytes,
        token: str | None,
        allowed_hosts: Iterable[str] | None,
    ) -> None:
        self.app = app
        self.secret = secret
        self.token = token
        self.session = (
            None
            if token is None
            else hmac.new(token.encode(), b"tpp-ui-session", hashlib.sha256).hexdigest()
        )
        if allowed_hosts is not None:
            self.hosts: frozenset[str] | None = frozenset(h.lower() for h in allowed_hosts)
        else:
            self.hosts = None if token is not None else frozenset(LOOPBACK_HOSTS)

    # ------------------------------------------------------------------ checks

    def token_ok(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    def _bearer(self, headers: Headers) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def _cookie(self, cookies: dict[str, str]) -> bool:
        assert self.session is not None
        value = cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), self.session.encode())

    def csrf_for(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ the middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers = request.headers
        host = _host_name(headers.get("host", "").lower())
        if self.hosts is not None and host not in self.hosts:
            response: Response = PlainTextResponse(
                "This Temporal++ UI answers only to a loopback host name (localhost, "
                "127.0.0.1, [::1]) because it runs without a token; start it with --token "
                "to serve other names.",
                status_code=421,
            )
            await self._send_with_headers(response, scope, receive, send, None)
            return
        state = scope.setdefault("state", {})
        bearer = self.token is not None and self._bearer(headers)
        state["bearer"] = bearer
        path = _app_path(scope)
        if (
            self.token is not None
            and not bearer
            and not path.startswith(_PUBLIC)
            and not self._cookie(request.cookies)
        ):
            response = self._unauthorised(request)
            await self._send_with_headers(response, scope, receive, send, None)
            return
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh = None
        if len(nonce) != 64 or any(c not in "0123456789abcdef" for c in nonce):
            nonce = fresh = secrets.token_hex(32)
        state["csrf_token"] = self.csrf_for(nonce)
        state["csrf_nonce"] = nonce
        state["guard"] = self

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, path, fresh, scope)
            await send(message)

        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            too_large = PlainTextResponse(
                f"the request body is larger than {MAX_BODY:,} bytes", status_code=413
            )
            await too_large(scope, receive, send_wrapper)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise HTTPException(413, f"the request body is larger than {MAX_BODY:,} bytes")
            return message

        await self.app(scope, receive_limited, send_wrapper)

    def _unauthorised(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.method == "GET" and wants_html and "hx-request" not in request.headers:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            query = urllib.parse.urlencode({"next": target}, quote_via=urllib.parse.quote)
            return RedirectResponse(f"{root}/login?{query}", status_code=303)
        return PlainTextResponse(
            "authentication required: send 'Authorization: Bearer TOKEN' or log in at "
            f"{root}/login",
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="tpp ui"'},
        )

    async def _send_with_headers(
        self, response: Response, scope: Scope, receive: Receive, send: Send, fresh: str | None
    ) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, _app_path(scope), fresh, scope)
            await send(message)

        await response(scope, receive, send_wrapper)


def _app_path(scope: Scope) -> str:
    """The request's path within the app (without the ASGI ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _add_headers(message: Message, path: str, fresh: str | None, scope: Scope) -> None:
    headers = MutableHeaders(scope=message)
    for name, value in _HEADERS:
        headers.setdefault(name, value)
    if not path.startswith("/static/"):
        headers["cache-control"] = "no-store"
    if fresh is not None:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        headers.append(
            "set-cookie",
            f"{CSRF_COOKIE}={fresh}; Path=/; HttpOnly; SameSite=Strict{secure}",
        )


def check_csrf(request: Request, form: FormData) -> None:
    """Refuse a POST without the right CSRF field (``403``), unless bearer-authenticated."""
    state = request.scope.get("state", {})
    if state.get("bearer"):
        return
    origin = request.headers.get("origin")
    if origin is not None:  # NB: compared by host and port, so a TLS proxy in front is fine
        netloc = urllib.parse.urlsplit(origin).netloc if origin != "null" else "null"
        if netloc.lower() != request.headers.get("host", "").lower():
            raise HTTPException(403, f"cross-origin request refused (Origin {origin})")
    given = form.get(CSRF_FIELD)
    want = state.get("csrf_token", "")
    if (
        not isinstance(given, str)
        or not want
        or CSRF_COOKIE not in request.cookies
        or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), want.encode())
    ):
        raise HTTPException(
            403,
            "the form's CSRF token is missing or does not match this browser's cookie: reload "
            "the page and try again",
        )


def session_cookie(guard: Guard, request: Request) -> str:
    """The ``Set-Cookie`` value that logs this browser in."""
    assert guard.session is not None
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{SESSION_COOKIE}={guard.session}; Path=/; HttpOnly; SameSite=Lax{secure}"
