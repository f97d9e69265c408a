"""``tpp ui`` through click's test runner, mounted on a root like ``tpp``'s; and a real server.

``engine.cli._ui_cmd.serve`` (uvicorn) is replaced by a recorder, so the
command's choices (host, port, token) and the app it built are checked
without a server; one test serves the app with uvicorn on a free loopback
port and fetches a page over real HTTP.
"""

from __future__ import annotations

import pathlib
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import click
import pytest
import uvicorn
from click.testing import CliRunner, Result

from engine import Client
from engine.cli import _ui_cmd
from engine.cli._common import State, TppGroup, pass_state
from engine.ui import create_app
from stores import MemoryStore
from stores.file import FileStore

from .test_ui_support import client_for


@click.group(cls=TppGroup)
@click.option("--store", "store_url", default=None)
@click.option("--keys", default=None)
@pass_state
def tpp(state: State, store_url: str | None, keys: str | None) -> None:
    state.store_url = store_url
    state.keys = keys


tpp.add_command(_ui_cmd.ui)


class Served:
    """Stands in for uvicorn: records each call, and runs ``probe`` while "serving"
    (the command closes its store when serving ends)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, int]] = []
        self.probe: Callable[[Any], None] = lambda app: None

    def __call__(self, app: Any, host: str, port: int) -> None:
        self.calls.append((app, host, port))
        self.probe(app)

    def __bool__(self) -> bool:
        return bool(self.calls)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    recorder = Served()
    monkeypatch.setattr(_ui_cmd, "serve", recorder)
    monkeypatch.delenv("TPP_UI_TOKEN", raising=False)
    return recorder


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    with FileStore(tmp_path / "store", durability="none") as store:
        Client(store).start("order", "x", id="from the cli/1")
    return f"file:{tmp_path / 'store'}?durability=none"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(tpp, list(args), catch_exceptions=False, env=env)


def test_loopback_by_default_without_a_token(served: Served, url: str) -> None:
    pages: list[Any] = []
    served.probe = lambda app: pages.append(client_for(app).get("/"))
    result = invoke("--store", url, "ui")
    assert result.exit_code == 0, result.output
    ((_, host, port),) = served.calls
    assert (host, port) == ("127.0.0.1", 8233)
    assert "http://127.0.0.1:8233/" in result.stderr and "token" not in result.stderr
    assert pages[0].status_code == 200 and "from the cli/1" in pages[0].text


def test_another_address_gets_a_generated_token(served: Served, url: str) -> None:
    result = invoke("--store", url, "ui", "--host", "0.0.0.0", "--port", "9000")
    assert result.exit_code == 0, result.output
    ((app, host, port),) = served.calls
    assert (host, port) == ("0.0.0.0", 9000)
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("token: ")]
    token = line.removeprefix("token: ")
    assert len(token) >= 32
    http = client_for(app, base_url="http://tpp.example.com:9000")
    assert http.get("/", headers={"Accept": "application/json"}).status_code == 401
    assert http.get("/static/ui.css", headers={"Authorization": f"Bearer {token}"}).is_success
    again = invoke("--store", url, "ui", "--host", "0.0.0.0")
    assert token not in again.stderr  # a new one each time


def test_a_given_token_is_used_and_not_printed(served: Served, url: str) -> None:
    codes: list[int] = []

    def probe(app: Any) -> None:
        http = client_for(app, base_url="http://[fe80::1]:8233")
        for token in ("hunter2-hunter2", "e-token"):
            codes.append(http.get("/", headers={"Authorization": f"Bearer {token}"}).status_code)

    served.probe = probe
    result = invoke("--store", url, "ui", "--host", "::", "--token", "hunter2-hunter2")
    assert result.exit_code == 0 and "hunter2" not in result.output + result.stderr
    assert "a token is required" in result.stderr and "http://[::]:8233/" in result.stderr
    from_env = invoke("--store", url, "ui", "--host", "10.1.2.3", env={"TPP_UI_TOKEN": "e-token"})
    assert from_env.exit_code == 0 and "token: " not in from_env.stderr
    assert codes == [200, 401, 401, 200]


def test_a_token_on_loopback_is_enforced_too(served: Served, url: str) -> None:
    invoke("--store", url, "ui", "--token", "local-secret")
    http = client_for(served.calls[0][0])
    assert http.get("/static/ui.css").status_code == 200
    assert http.get("/", headers={"Accept": "text/plain"}).status_code == 401


def test_mistakes_are_one_line(served: Served, tmp_path: pathlib.Path) -> None:
    missing = invoke("--store", f"file:{tmp_path / 'nope'}", "ui")
    assert missing.exit_code == 1 and "no store at" in missing.stderr and not served
    empty = invoke("--store", "memory:", "ui", "--token", " ")
    assert empty.exit_code == 2 and "must not be empty" in empty.stderr
    port = invoke("--store", "memory:", "ui", "--port", "70000")
    assert port.exit_code == 2
    keys = invoke("--store", "memory:", "--keys", "k=zz", "ui")
    assert keys.exit_code == 1 and "bad payload codec options" in keys.stderr


def test_without_the_extra_the_command_says_what_to_install(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "engine.ui", None)  # as if starlette were missing
    result = invoke("--store", "memory:", "ui")
    assert result.exit_code == 1 and not served
    assert "pip install 'temporalpp[ui]'" in result.stderr and "Traceback" not in result.output


def test_the_ui_uses_the_payload_codec_options(served: Served, url: str) -> None:
    key = "00" * 32
    invoke("--store", url, "--keys", f"k1={key}", "ui")
    assert served.calls[0][0].state.ui.has_keys


def test_refresh(served: Served, url: str) -> None:
    pages: list[str] = []
    served.probe = lambda app: pages.append(client_for(app).get("/").text)
    invoke("--store", url, "ui", "--refresh", "0.5")
    invoke("--store", url, "ui", "--refresh", "0")
    assert 'hx-trigger="every 0.5s"' in pages[0] and "hx-trigger" not in pages[1]
    assert invoke("--store", url, "ui", "--refresh", "-1").exit_code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_real_server_on_loopback() -> None:
    store = MemoryStore()
    Client(store).start("order", "x", id="served/1 ☃")
    port = _free_port()
    config = uvicorn.Config(
        create_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/", timeout=10) as page:
            assert page.status == 200 and "served/1 ☃" in page.read().decode()
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        link = base + "/workflow?id=served%2F1%20%E2%98%83"
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200
        rebinding = urllib.request.Request(base + "/", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebinding, timeout=10)
        assert refused.value.code == 421
        refused.value.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
