"""AzureBlobStore under faults (AZURE.md's M4 and an outage), ``ci`` tier:

* Azurite stopped with SIGTERM and restarted mid-run under two worker processes:
  every workflow completes exactly once, every activity is recorded exactly once
  (an append that fails is the batch's ``StoreError``, which the worker rides
  out; one from ``claim`` ends ``Worker.run()``, which these workers then rerun);
* a loopback proxy between the store and Azurite that drops 1 in 50 replies
  (the request was served; the client sees its connection die): no event is lost
  or duplicated, and the lost replies cost about one extra read each.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from engine import Client, Status, StoreError, Worker
from engine.events import SignalReceived
from stores.azure import AzureBlobStore
from tests import crashkit
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

ROOT = pathlib.Path(__file__).resolve().parent.parent

RESILIENT_WORKER = """
import sys, time
from engine import StoreError, Worker
from stores.azure import AzureBlobStore
from tests import crashkit
store = AzureBlobStore(sys.argv[1], sys.argv[2], partitions=8, lease_seconds=15,
                       poll_interval=0.25)
print("ready", flush=True)
while True:
    try:
        Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES,
               poll_interval=0.05, max_concurrent_activities=8).run()
        break
    except StoreError as exc:  # an outage: run again once the store answers
        print("worker: store error, restarting:", str(exc)[:120], flush=True)
        time.sleep(0.5)
store.close()
"""


def completed(store: AzureBlobStore) -> int:
    try:
        return store.list(page_size=1).counts.get(Status.COMPLETED, 0)
    except StoreError:
        return -1  # the outage, seen from here


@pytest.mark.ci
def test_azurite_restarted_mid_run(
    azurite_factory: Callable[[], Azurite], tmp_path: pathlib.Path
) -> None:
    emulator = azurite_factory()
    conn, container = emulator.connection_string, "restart"
    workflows, steps = 32, 4
    log, out = tmp_path / "attempts.log", tmp_path / "workers.out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with (
        AzureBlobStore(conn, container, partitions=8, lease_seconds=15) as store,
        open(out, "ab") as output,
    ):
        client = Client(store)
        ids = [
            client.start(crashkit.crash_chain, i, steps, str(log), 0.05, id=f"crash-{i}")
            for i in range(workflows)
        ]
        procs = [
            subprocess.Popen([sys.executable, "-c", RESILIENT_WORKER, conn, container],
                             cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while not log.exists() or log.read_bytes().count(b"\n") < workflows * steps // 3:
                assert time.monotonic() < deadline, out.read_text()[-3000:]
                time.sleep(0.05)
            assert emulator.stop() == 0  # SIGTERM: Azurite saves what it acknowledged
            done_at_stop = log.read_bytes().count(b"\n")
            assert completed(store) == -1  # down: a StoreError, within seconds
            time.sleep(2.0)
            emulator.start()
            while completed(store) < workflows:
                assert time.monotonic() < deadline, out.read_text()[-3000:]
                for proc in procs:
                    assert proc.poll() is None, out.read_text()[-3000:]
                time.sleep(0.2)
            attempts, activities = crashkit.check(
                store, ids, log, steps, crashkit.expected(workflows, steps)
            )
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(f"\nrestart: {attempts} attempts for {activities} activities, {done_at_stop} at the stop")


# --------------------------------------------------------------------------- the dropping proxy


class DroppingProxy:
    """HTTP/1.1 on loopback to ``upstream``, dropping the reply of every ``every``-th request
    (on average, seeded): the request reaches Azurite, the client's connection just dies."""

    def __init__(self, upstream: int, every: int = 50, seed: int = 5) -> None:
        self.upstream = upstream
        self.every = every
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.served = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Cut every connection, and take no new one (a network partition)."""
        self.closed = True
        # NB: close() alone does not wake a thread blocked in accept(): it would take one
        # more connection, which a keep-alive client could then use for good
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.closed:
                client.close()
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self.lock:
            self.sockets.add(client)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        with self.lock:
            self.sockets.add(upstream)
        cin, uin = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                head, body = _message(cin, request=True)
                if head is None:
                    return
                method = head.split(b" ", 1)[0].decode()
                upstream.sendall(head + body)
                rhead, rbody = _message(uin, request=False, method=method)
                if rhead is None:
                    return
                with self.lock:
                    self.served += 1
                    drop = self.rng.random() < 1 / self.every
                    if drop:
                        self.dropped[_operation(head)] += 1
                if drop:
                    return  # the reply is lost: the client's connection dies
                client.sendall(rhead + rbody)
        except OSError:
            return
        finally:
            for f in (cin, uin):
                f.close()
            with self.lock:
                for s in (client, upstream):
                    s.close()
                    self.sockets.discard(s)


def _operation(head: bytes) -> str:
    from stores._azure_metrics import operation

    line, _, rest = head.partition(b"\r\n")
    method, url, _ = line.decode().split(" ", 2)
    headers = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (h.partition(":") for h in rest.decode(errors="replace").split("\r\n"))
        if k
    )
    return operation(method, url, headers)


def _message(stream: object, *, request: bool, method: str = "GET") -> tuple[bytes | None, bytes]:
    """One HTTP message: (head, body), or (None, b"") at the end of the stream."""
    readline = stream.readline  # type: ignore[attr-defined]
    read = stream.read  # type: ignore[attr-defined]
    lines = []
    while True:
        line = readline()
        if not line:
            return None, b""
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    head = b"".join(lines)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        headers[k.strip().lower()] = v.strip()
    status = 0 if request else int(lines[0].split()[1])
    if not request and (method == "HEAD" or status in (204, 304) or status < 200):
        return head, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line = readline()
            body += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            chunk = read(size + 2)
            body += chunk
            if size == 0:
                return head, body
    length = int(headers.get("content-length", "0"))
    return head, read(length) if length else b""


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[DroppingProxy]:
    p = DroppingProxy(azurite.port)
    yield p
    p.close()


@pytest.mark.ci
# NB: when a reply is cut off, urllib3 sometimes lets go of the socket without closing it
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_proxy_dropping_one_reply_in_fifty(azurite: Azurite, proxy: DroppingProxy) -> None:
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{proxy.port}/{ACCOUNT};"
    )
    container = azurite.new_container("drop")
    workflows, steps = 24, 5
    with AzureBlobStore(conn, container, partitions=4, lease_seconds=15, retries=3) as store:
        client = Client(store)
        worker = Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES,
                        poll_interval=0.02, max_concurrent_activities=8)  # fmt: skip
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            log = pathlib.Path(os.devnull)
            ids = []
            for i in range(workflows):
                wid = client.start(crashkit.crash_chain, i, steps, str(log), 0.1, id=f"crash-{i}")
                client.signal(wid, "poke", wid)  # an external append, through the proxy too
                ids.append(wid)
            deadline = time.monotonic() + 240
            while store.list(page_size=1).counts.get(Status.COMPLETED, 0) < workflows:
                assert time.monotonic() < deadline and thread.is_alive()
                time.sleep(0.1)
        finally:
            worker.stop()
            thread.join(timeout=60)
        expected = crashkit.expected(workflows, steps)
        for wid in ids:
            assert client.result(wid) == expected[wid]
            history = store.read(wid)
            assert [e.index for e in history] == list(range(len(history)))
            for kind in ("ActivityScheduled", "ActivityCompleted"):
                seqs = collections.Counter(
                    e.seq
                    for e in history
                    if type(e).__name__ == kind  # type: ignore[attr-defined]
                )
                assert sorted(seqs) == list(range(1, steps + 1)) and set(seqs.values()) == {1}
            assert sum(isinstance(e, SignalReceived) for e in history) == 1, wid
        calls, attempts = store.requests.snapshot(), store.requests.snapshot(attempts=True)
        print(f"\nproxy: {proxy.served} replies, dropped {dict(proxy.dropped)}")
        print(f"calls {calls}\nattempts {attempts}")
    assert sum(proxy.dropped.values()) >= 5
    gc.collect()  # the abandoned sockets go now, under this test's filters
