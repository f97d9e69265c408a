"""The web UI's guards: escaping (XSS), CSRF, the token, the Host check, headers, methods."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest

from engine import RetryPolicy, ScheduleActivity, WaitSignal, activity, workflow

from .test_ui_support import BASE, UiEnv, client_for, csrf_of, make_env, post_confirmed

XSS = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'


def _no_live_markup(text: str) -> None:
    """Neither attack string appears unescaped anywhere in the page."""
    assert XSS not in text
    assert "<img src=x" not in text
    assert "onerror=alert(1)>" not in text.replace("onerror=alert(1)&gt;", "")


@activity(name=XSS)
def evil_activity(x: str) -> str:
    raise ValueError(XSS)


@workflow(name=f"wf{XSS}")
def evil(x: str):  # type: ignore[no-untyped-def]
    yield WaitSignal(XSS)
    return (yield ScheduleActivity(evil_activity, x, retry=RetryPolicy(maximum_attempts=1)))


def _evil_env() -> tuple[UiEnv, str]:
    env = make_env()
    env.worker = type(env.worker)(env.store, [evil], [evil_activity], clock=env.clock)
    wid = XSS + XSS_ATTR
    env.client.start(evil, XSS, id=wid)
    env.run()
    env.client.signal(wid, XSS, {XSS: XSS_ATTR})
    env.run()
    return env, wid


def test_ids_types_signal_names_payloads_and_errors_render_as_text() -> None:
    env, wid = _evil_env()
    assert env.client.describe(wid).status.value == "FAILED"
    listing = env.http.get("/")
    _no_live_markup(listing.text)
    assert html.escape(XSS, quote=False) in listing.text
    page = env.http.get("/workflow", params={"id": wid})
    assert page.status_code == 200
    _no_live_markup(page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    _no_live_markup(svg)
    assert "&lt;script&gt;" in svg  # the activity type and signal name, escaped in the SVG
    for path in ("/stats", "/partials/workflows"):
        _no_live_markup(env.http.get(path).text)
    fetched = env.http.get("/payload", params={"id": wid, "event": "0", "n": "0"})
    _no_live_markup(fetched.text)


def test_a_signal_sent_through_the_form_is_escaped_on_every_page() -> None:
    env = make_env()
    env.client.start("order", "x", id="plain")
    done = post_confirmed(
        env.http, "/workflow/signal", {"id": "plain", "name": XSS, "payload": f'"{XSS}"'}
    )
    assert done.status_code == 303
    first = env.http.post(
        "/workflow/signal",
        data={
            "id": "plain",
            "name": XSS,
            "payload": f'{{"{XSS_ATTR[1:]}": 1}}',
            "csrf": csrf_of(env.http.get("/").text),
        },
    )
    _no_live_markup(first.text)  # the confirmation page
    page = env.http.get("/workflow", params={"id": "plain"})
    _no_live_markup(page.text)
    assert page.text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2


def test_error_messages_render_as_text() -> None:
    env = make_env()
    token = csrf_of(env.http.get("/").text)
    bad = env.http.post(
        "/workflow/signal", data={"id": XSS, "name": "go", "payload": "", "csrf": token}
    )
    confirm = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', bad.text))
    done = env.http.post("/workflow/signal", data={k: html.unescape(v) for k, v in confirm.items()})
    assert done.status_code == 404 and "no workflow" in done.text.lower()
    _no_live_markup(done.text)
    missing = env.http.get("/workflow", params={"id": XSS})
    assert missing.status_code == 404
    _no_live_markup(missing.text)
    json_error = env.http.post(
        "/workflow/signal", data={"id": "x", "name": "n", "payload": XSS, "csrf": token}
    )
    assert json_error.status_code == 400
    _no_live_markup(json_error.text)


# --------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("path", ["/workflow/signal", "/workflow/cancel", "/workflow/terminate"])
def test_posts_without_a_matching_csrf_token_are_refused(path: str) -> None:
    env = make_env()
    env.client.start("order", "x", id="w")
    data = {"id": "w", "name": "go", "confirm": "yes", "reason": "r"}
    assert env.http.post(path, data=data).status_code == 403  # no token at all
    token = csrf_of(env.http.get("/").text)
    assert env.http.post(path, data={**data, "csrf": "0" * 64}).status_code == 403
    assert env.http.post(path, data={**data, "csrf": token[:-1]}).status_code == 403
    # the token is bound to this browser's cookie: another browser's cookie does not match
    other = client_for(env.app)
    other.get("/")
    assert other.post(path, data={**data, "csrf": token}).status_code == 403
    # a cross-origin form is refused even with the right token
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8234"):
        evil = env.http.post(path, data={**data, "csrf": token}, headers={"Origin": origin})
        assert evil.status_code == 403 and "cross-origin" in evil.text
    assert env.client.describe("w").history_length == 1  # nothing happened
    ok = env.http.post(
        path, data={**data, "csrf": token}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert ok.status_code == 303


def test_the_csrf_cookie_is_strict_and_http_only() -> None:
    env = make_env()
    response = env.http.get("/")
    cookie = response.headers["set-cookie"]
    assert (
        cookie.startswith("tpp_ui_csrf=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    )
    assert "set-cookie" not in env.http.get("/").headers  # set once, kept
    nonce = cookie.split(";")[0].split("=")[1]
    assert nonce not in response.text  # the page carries an HMAC of it, not the nonce


def test_state_changing_routes_accept_post_only() -> None:
    env = make_env()
    env.client.start("order", "x", id="w")
    for path in (
        "/workflow/signal",
        "/workflow/cancel",
        "/workflow/terminate",
        "/workflow/reset",
        "/logout",
    ):
        r = env.http.get(path, params={"id": "w", "name": "go", "confirm": "yes", "event": "1"})
        assert r.status_code == 405, path
    assert env.client.describe("w").history_length == 1


def test_large_bodies_are_refused() -> None:
    env = make_env()
    token = csrf_of(env.http.get("/").text)
    big = env.http.post(
        "/workflow/signal", data={"id": "w", "name": "n", "payload": "1" * 2_000_000, "csrf": token}
    )
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield f"csrf={token}&id=w&name=n&payload=".encode()
        for _ in range(40):
            yield b"1" * 32_768

    streamed = env.http.post(
        "/workflow/signal",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert env.http.get("/", headers={"content-length": "x"}).status_code == 413


# --------------------------------------------------------------------------- token and hosts


def test_without_a_token_only_loopback_host_names_are_answered() -> None:
    env = make_env()
    for base in ("http://127.0.0.1:8233", "http://localhost", "http://[::1]:9000"):
        assert client_for(env.app, base_url=base).get("/").status_code == 200, base
    for base in ("http://evil.example", "http://127.0.0.1.nip.io:8233", "http://10.0.0.5:8233"):
        refused = client_for(env.app, base_url=base).get("/")
        assert refused.status_code == 421 and "--token" in refused.text, base
    assert (
        client_for(make_env(allowed_hosts=["tpp.internal"]).app, base_url="http://tpp.internal")
        .get("/")
        .status_code
        == 200
    )


def test_a_token_is_required_by_header_or_login_cookie() -> None:
    env = make_env(token="s3cret-token")
    http = client_for(env.app, base_url="http://tpp.example.com")  # any host name with a token
    page = http.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"
    api = http.get("/workflow/history.json", params={"id": "x"})
    assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
    assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert http.get("/static/ui.css").status_code == 200  # public
    # the login form sets a session cookie (not the token) and returns to where you were
    form = http.get("/login", params={"next": "/stats"})
    assert form.status_code == 200 and 'type="password"' in form.text
    token = csrf_of(form.text)
    wrong = http.post("/login", data={"token": "guess", "next": "/stats", "csrf": token})
    assert wrong.status_code == 401 and "not the token" in wrong.text
    assert http.post("/login", data={"token": "s3cret-token", "next": "/stats"}).status_code == 403
    good = http.post(
        "/login",
        data={"token": "s3cret-token", "next": "/stats", "csrf": token},
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/stats"
    session = good.headers["set-cookie"]
    assert "s3cret-token" not in session and "HttpOnly" in session and "SameSite=Lax" in session
    assert http.get("/stats").status_code == 200
    # bearer clients need no CSRF field; cookie sessions do
    env.client.start("order", "x", id="w")
    bearer = client_for(env.app, base_url="http://tpp.example.com")
    r = bearer.post(
        "/workflow/cancel",
        data={"id": "w", "confirm": "yes"},
        headers={"Authorization": "Bearer s3cret-token"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert http.post("/workflow/terminate", data={"id": "w", "confirm": "yes"}).status_code == 403
    out = http.post("/logout", data={"csrf": csrf_of(http.get("/").text)}, follow_redirects=False)
    assert out.status_code == 303 and 'tpp_ui_session=""' in out.headers["set-cookie"]


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"],
)
def test_login_never_redirects_off_the_app(target: str) -> None:
    env = make_env(token="t")
    http = client_for(env.app)
    token = csrf_of(http.get("/login", params={"next": target}).text)
    r = http.post(
        "/login", data={"token": "t", "next": target, "csrf": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_without_a_token_login_goes_home() -> None:
    env = make_env()
    assert env.http.get("/login", follow_redirects=False).headers["location"] == "/"


def test_security_headers_on_every_response() -> None:
    env = make_env()
    env.client.start("order", "x", id="w")
    for path in (
        "/",
        "/workflow?id=w",
        "/stats",
        "/static/ui.css",
        "/nope",
        "/workflow?id=missing",
    ):
        headers = env.http.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
    assert env.http.get("/").headers["cache-control"] == "no-store"
    refused = client_for(env.app, base_url="http://evil.example").get("/")
    assert refused.headers["x-frame-options"] == "DENY"


def test_pages_have_no_inline_script_or_style() -> None:
    env, wid = _evil_env()
    for path, params in (("/", {}), ("/workflow", {"id": wid}), ("/stats", {})):
        text = env.http.get(path, params=params).text
        assert re.findall(r"<script(?![^>]*\bsrc=)", text) == [], path
        assert "<style" not in text and " style=" not in text and " on" + "click=" not in text
