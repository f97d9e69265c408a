"""The web UI end to end in a real headless browser: Debian's chromium driven by Playwright.

``tpp ui`` serves a FileStore on a free loopback port while ``tpp worker``
runs; the browser opens the list, opens the workflow, sends a signal through
the form (confirming it), and sees the run complete when the page refreshes
itself; a screenshot is kept (``$TPP_ARTIFACTS``, else pytest's temporary
directory; the path is printed).  Needs ``pip install playwright`` and
``apt-get install chromium`` (no browser download): skipped, saying so, without them.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from engine import Client
from stores.file import FileStore

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = f"{ROOT / 'tests' / 'cliapp.py'}:app"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright: pip install playwright"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the browser test needs Debian's chromium: apt-get install chromium"
)

# `tpp ui` until engine/cli/__init__.py registers the command, then the real thing
_TPP = (
    "import sys; from engine.cli import cli, main; from engine.cli._ui_cmd import ui; "
    "'ui' in cli.commands or cli.add_command(ui); sys.exit(main(sys.argv[1:]))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _spawn(*args: str, cwd: pathlib.Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _TPP, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hung process is the failure
        process.kill()
        _, err = process.communicate()
    return err


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[str, str]]:
    """``tpp ui`` and ``tpp worker`` over a FileStore holding one waiting greeter."""
    url = f"file:{tmp_path / 'store'}?durability=none"
    with FileStore(tmp_path / "store", durability="none") as store:
        Client(store).start("greeter", "Ada", id="greet/ada ☃")
    port = _free_port()
    ui = _spawn("--store", url, "ui", "--port", str(port), "--refresh", "0.3", cwd=tmp_path)
    worker = _spawn("--store", url, "worker", "--app", APP, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert ui.poll() is None, ui.communicate()
                assert time.monotonic() < deadline, "tpp ui did not start listening"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", url
    finally:
        errors = _stop(ui) + _stop(worker)
        assert "Traceback" not in errors, errors


def test_list_workflow_signal_complete_screenshot(
    served: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    base, _ = served
    artefacts = pathlib.Path(os.environ.get("TPP_ARTIFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    console: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(base + "/")
            page.get_by_role("link", name="greet/ada ☃").first.click()
            page.wait_for_url(re.compile(r"/workflow\?id=greet%2Fada%20%E2%98%83"))
            sync_api.expect(page.locator("#live .status").first).to_have_text("RUNNING")
            page.locator("form.action input[name=name]").fill("greeting")
            page.locator("form.action textarea[name=payload]").fill('"Hello"')
            page.get_by_role("button", name="Signal…").click()
            sync_api.expect(page.get_by_role("heading", name="Send a signal?")).to_be_visible()
            page.get_by_role("button", name="Send the signal").click()
            sync_api.expect(page.locator("p.notice")).to_have_text("Signal sent.")
            # the live part polls; the worker completes the run; the status turns
            sync_api.expect(page.locator("#live .status").first).to_have_text(
                "COMPLETED", timeout=20_000
            )
            page.goto(page.url)  # reload: the outcome and the whole history
            sync_api.expect(page.locator(".io")).to_contain_text('"Hello, Ada"')
            shot = artefacts / "tpp-ui-workflow.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    # no CSP violation, no script error (a missing favicon would be a 404 line)
    assert not [line for line in console if line.startswith("error")], console
