"""Azurite, the Azure Storage emulator, as a pytest plugin (registered in ``tests/conftest.py``).

The tests start ``node_modules/.bin/azurite-blob`` themselves (installed by
``npm ci`` from the repository's ``package.json``); nothing needs to be running
beforehand.  Without the binary, tests that use these fixtures are *skipped*
with a message saying to run ``npm ci`` -- unless ``TPP_REQUIRE_AZURITE`` is set
(CI sets it), in which case they fail, so a broken install cannot hide them.

Fixtures:

* ``azurite`` (session): one shared emulator for the whole run.  Tests share it
  safely by using a container of their own (:meth:`Azurite.new_container`).
* ``azurite_factory`` (function): ``azurite_factory()`` starts a *separate*
  emulator that the test may stop, restart or break (outages, restarts); every
  one it started is stopped at teardown.

How an emulator is run, and why:

* The real binary (``azurite-blob`` is ``node`` by way of its ``#!`` line), never
  ``npx``: killing npx's PID would leave node running.
* On a free loopback port, with a fresh temporary ``--location`` and a log file
  beside it, ``--disableTelemetry``, ``--silent`` (no access log) and
  ``--skipApiVersionCheck``: azure-storage-blob 12.31 asks for an API version
  (2026-10-06) that Azurite 3.35 otherwise refuses with ``InvalidHeaderValue``.
* :meth:`Azurite.stop` sends SIGTERM to that PID and waits: Azurite then saves
  its database and exits (in ~20 ms).  SIGKILL would lose acknowledged writes,
  since Azurite saves only every 5 s; :meth:`Azurite.kill` exists for tests of
  exactly that, and says so.
* Ready means it accepts TCP connections on its port (~0.9 s after the start on
  a 2-core machine); a process that exits first fails the test with its log.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Final

import pytest

__all__ = [
    "ACCOUNT",
    "ACCOUNT_KEY",
    "AZURITE_BIN",
    "Azurite",
    "azurite",
    "azurite_factory",
    "require_azurite",
]

ROOT: Final = pathlib.Path(__file__).resolve().parent.parent
#: The emulator's blob service binary, as ``npm ci`` installs it.
AZURITE_BIN: Final = ROOT / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's well-known development account and key (public, not a secret).
ACCOUNT: Final = "devstoreaccount1"
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: Seconds to wait for the emulator to accept connections, or to exit after SIGTERM.
START_TIMEOUT: Final = 30.0
_READY: Final = "successfully listens on"
STOP_TIMEOUT: Final = 15.0

_containers = itertools.count(1)


class _PortTaken(RuntimeError):
    """Azurite could not bind its port (another process took it first)."""


def require_azurite() -> None:
    """Skip the calling test unless Azurite is installed (fail under ``TPP_REQUIRE_AZURITE``)."""
    if AZURITE_BIN.exists():
        return
    message = (
        f"Azurite is not installed (no {AZURITE_BIN}): "
        "run `npm ci` in the repository root (needs Node >= 20)"
    )
    if os.environ.get("TPP_REQUIRE_AZURITE"):
        pytest.fail(message + "; TPP_REQUIRE_AZURITE is set, so this is an error")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Azurite:
    """One ``azurite-blob`` process on 127.0.0.1, with its data in ``location``.

    ``stop()`` and ``start()`` may alternate: a restarted emulator keeps its port
    and its data, as a restarted Azure endpoint would.
    """

    def __init__(self, location: pathlib.Path, port: int | None = None) -> None:
        self.location = location
        self.data = location / "data"
        self.log = location / "azurite.log"
        self.data.mkdir(parents=True, exist_ok=True)
        self._pick_port = port is None  # a free port may be taken before Azurite binds it
        self._started = False
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: Seconds the last ``start()`` took until the port accepted connections.
        self.startup_seconds = 0.0

    # ------------------------------------------------------------ endpoints

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def blob_endpoint(self) -> str:
        """The account's blob endpoint (path-style, as Azurite serves it)."""
        return f"http://{self.host}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string for the development account on this emulator."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.blob_endpoint};"
        )

    @staticmethod
    def new_container(stem: str = "t") -> str:
        """A container name no other test in this run uses (Azure's naming rules hold)."""
        return f"{stem}-{os.getpid()}-{next(_containers)}"[:63]

    # ------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int | None:
        """The node process's id while it runs."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Azurite:
        """Start the emulator and wait until it accepts connections (``START_TIMEOUT``)."""
        if self.running():
            raise RuntimeError(f"Azurite (pid {self.pid}) is already running")
        for _ in range(2):
            try:
                return self._start()
            except _PortTaken:
                if not self._pick_port or self._started:
                    raise  # NB: a restart keeps its port: clients know it
                self.port = _free_port()
        return self._start()

    def _start(self) -> Azurite:
        command = [
            str(AZURITE_BIN),
            "--blobHost", self.host,
            "--blobPort", str(self.port),
            "--location", str(self.data),
            "--disableTelemetry",
            "--silent",
            "--skipApiVersionCheck",
        ]  # fmt: skip
        began = time.perf_counter()
        with open(self.log, "ab") as log:
            offset = log.tell()  # NB: the log is appended to across restarts
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + START_TIMEOUT
        # Ready = Azurite says it listens (a TCP connect alone could reach another
        # process that holds the port) and the port accepts connections.
        while not (_READY in self.log_text(offset) and self._accepts()):
            if self.process.poll() is not None:
                text = self.log_text(offset)
                raise (_PortTaken if "EADDRINUSE" in text else RuntimeError)(
                    f"Azurite exited with status {self.process.returncode} before it listened "
                    f"on port {self.port}; its log ({self.log}):\n{text}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"Azurite did not listen on port {self.port} within {START_TIMEOUT} s; "
                    f"its log:\n{self.log_text(offset)}"
                )
            time.sleep(0.02)
        self.startup_seconds = time.perf_counter() - began
        self._started = True
        return self

    def stop(self) -> int | None:
        """SIGTERM by PID, then wait: Azurite saves its data and exits.  Returns the exit status."""
        return self._signal(signal.SIGTERM)

    def kill(self) -> int | None:
        """SIGKILL by PID: **loses writes** Azurite acknowledged in its last ~5 s."""
        return self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                raise RuntimeError(
                    f"Azurite (pid {process.pid}) ignored {sig.name} for {STOP_TIMEOUT} s "
                    "and was killed"
                ) from None
        return process.returncode

    def log_text(self, offset: int = 0) -> str:
        """What Azurite printed (from byte ``offset`` of its log on)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _accepts(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running() else "stopped"
        return f"<Azurite on {self.host}:{self.port}, {state}, data in {self.data}>"


@contextlib.contextmanager
def running_azurite(location: pathlib.Path) -> Iterator[Azurite]:
    """An emulator started in ``location`` and stopped (SIGTERM) on exit."""
    emulator = Azurite(location)
    try:
        yield emulator.start()
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One emulator for the whole session; use a container of your own in it."""
    require_azurite()
    with running_azurite(tmp_path_factory.mktemp("azurite")) as emulator:
        yield emulator


@pytest.fixture
def azurite_factory() -> Iterator[Callable[[], Azurite]]:
    """Start separate emulators a test may stop or break; all are stopped at teardown."""
    require_azurite()
    started: list[Azurite] = []
    with tempfile.TemporaryDirectory(prefix="azurite-") as root, contextlib.ExitStack() as stack:

        def start() -> Azurite:
            location = pathlib.Path(root) / str(len(started))
            emulator = stack.enter_context(running_azurite(location))
            started.append(emulator)
            return emulator

        yield start
