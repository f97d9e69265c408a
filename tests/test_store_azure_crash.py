"""Worker processes sharing an AzureBlobStore on Azurite, one of them ``kill -9``ed mid-run.

The workload is ``tests/crashkit.py``'s (``crash_chain`` of sequential
``crash_step`` activities, each logging its attempts) and so is the check
(``crashkit.check``): every workflow completes exactly once with the crash-free
result, every activity is scheduled and completed exactly once in its history,
and ran at least once.  Beyond it: the killed worker's workflows are taken over
within the lease (15 s) plus the scan interval, and the live workers share the
partitions fairly.

Each run takes a lease's time at least, so these are the ``ci`` tier.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from engine import Client, Status
from stores.azure import AzureBlobStore
from tests import crashkit
from tests.azurite import Azurite

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEASE = 15
SCAN = 0.25

WORKER = """
import sys
from engine import Worker
from stores.azure import AzureBlobStore
from tests import crashkit
store = AzureBlobStore(sys.argv[1], sys.argv[2], partitions=int(sys.argv[3]),
                       lease_seconds=int(sys.argv[4]), poll_interval=float(sys.argv[5]))
print("ready", flush=True)

def report_held():  # which partitions this worker leases, whenever that changes
    import os, threading, time
    last = None
    while True:
        with store._lock:
            held = sorted(p for _, p in store._parts.held)
        if held != last:
            print(f"held {os.getpid()} {','.join(map(str, held))}", flush=True)
            last = held
        time.sleep(0.05)

import threading
threading.Thread(target=report_held, daemon=True).start()
try:
    Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES,
           poll_interval=0.05, max_concurrent_activities=8).run()
finally:
    store.close()
"""


@dataclasses.dataclass
class Outcome:
    seconds: float
    takeover: float  # seconds from the kill until every partition was leased again
    longest_wait: float  # the longest a workflow open at the kill waited for its next event
    attempts: int
    activities: int


def spawn(conn: str, container: str, partitions: int, out: pathlib.Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(out, "ab") as output:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, conn, container, str(partitions), str(LEASE), str(SCAN)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return proc


def attempts_logged(log: pathlib.Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def leased(store: AzureBlobStore) -> int:
    return len(checkpoints(store))


def checkpoints(store: AzureBlobStore) -> dict[int, str]:
    """The ETag of every leased partition's checkpoint, by partition."""
    prefix = store._names.queue_dir("default")
    return {
        int(p.name[len(prefix) :].partition(".")[0]): str(p.etag)
        for p in store._blobs.list(prefix)
        if p.name.endswith(".ckpt") and p.lease.state == "leased"
    }


def held_by(out: pathlib.Path, pid: int) -> set[int]:
    """The partitions worker ``pid`` last said it leases."""
    held = ""
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(f"held {pid} "):
            held = line.split(" ", 2)[2]
    return {int(p) for p in held.split(",") if p}


def run_and_kill(
    azurite: Azurite,
    tmp_path: pathlib.Path,
    *,
    workers: int,
    workflows: int,
    steps: int = 4,
    partitions: int = 16,
    pause: float = 0.05,
    timeout: float = 240.0,
) -> Outcome:
    """Run the workload on ``workers`` processes, SIGKILL one mid-run (respawn it if alone)."""
    conn, container = azurite.connection_string, azurite.new_container("kill")
    log, out = tmp_path / "attempts.log", tmp_path / "workers.out"
    t0 = time.monotonic()
    with AzureBlobStore(conn, container, partitions=partitions, lease_seconds=LEASE) as store:
        client = Client(store)
        procs = [spawn(conn, container, partitions, out) for _ in range(workers)]
        try:
            deadline = time.monotonic() + 60
            while leased(store) < partitions:  # the workers took (and shared) every partition
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
            time.sleep(3 * SCAN)
            ids = [
                client.start(crashkit.crash_chain, i, steps, str(log), pause, id=f"crash-{i}")
                for i in range(workflows)
            ]
            while attempts_logged(log) < workflows * steps // 3:
                assert time.monotonic() - t0 < timeout, out.read_text()
                time.sleep(0.05)
            victim = procs[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed, killed_at = time.monotonic(), datetime.now(UTC)
            # NB: a partition is taken over when a live worker leased it and saved its
            # checkpoint (a new tenure's first act): a new ETag.  Counting leases alone
            # misses a takeover quicker than this loop's polls (never seen unleased).
            at_kill = checkpoints(store)
            orphans = held_by(out, victim.pid) & set(at_kill)
            assert orphans, (held_by(out, victim.pid), at_kill)
            open_at_kill = {i.id for i in store.list(status=Status.RUNNING, page_size=1000).items}
            if workers == 1:
                procs[0] = spawn(conn, container, partitions, out)
            else:
                procs = procs[1:]
            takeover = -1.0
            while takeover < 0 or (
                store.list(page_size=1).counts.get(Status.COMPLETED, 0) < workflows
            ):
                assert time.monotonic() - t0 < timeout, out.read_text()[-4000:]
                for proc in procs:
                    assert proc.poll() is None, out.read_text()[-4000:]
                if takeover < 0:
                    now = checkpoints(store)
                    if all(p in now and now[p] != at_kill[p] for p in orphans):
                        takeover = time.monotonic() - killed
                time.sleep(0.1)
            waits = []
            for wid in open_at_kill:
                after = [e.time for e in store.read(wid) if e.time > killed_at]
                if after:
                    waits.append((min(after) - killed_at).total_seconds())
            attempts, activities = crashkit.check(
                store, ids, log, steps, crashkit.expected(workflows, steps)
            )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return Outcome(
            seconds=time.monotonic() - t0,
            takeover=takeover,
            longest_wait=max(waits, default=0.0),
            attempts=attempts,
            activities=activities,
        )


@pytest.fixture
def tmp(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    yield tmp_path


@pytest.mark.ci
@pytest.mark.parametrize(("workers", "workflows"), [(1, 64), (2, 128), (4, 256)])
def test_a_killed_worker_loses_nothing_and_is_taken_over_in_time(
    azurite: Azurite, tmp: pathlib.Path, workers: int, workflows: int
) -> None:
    outcome = run_and_kill(azurite, tmp, workers=workers, workflows=workflows)
    print(f"\n{workers} worker(s), {workflows} workflows: {outcome}")
    # a lease ends <= LEASE after its last renewal; a survivor scans every SCAN s
    assert 0 <= outcome.takeover <= LEASE + SCAN + 2, outcome
    assert outcome.attempts >= outcome.activities
