"""A pipeline survives its worker being killed: ``kill -9`` mid-run, another worker finishes it.

The reindex pipeline runs on a ``FileStore`` in worker *processes* (each
loads ``reindex.toml`` itself, as ``tpp worker`` would).  The first worker is
SIGKILLed while batches are being indexed; a second one takes the run over
(the dead worker's lock is released by the OS) and completes it.  Every
activity is then scheduled once and completed once, every batch is in the
index, and the result is the one a crash-free run gives.
"""

from __future__ import annotations

import collections
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from engine import Client, Status
from engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    WorkflowCompleted,
    WorkflowTaskCompleted,
)
from engine.pipeline import load, start
from examples.pipelines.reindex_tasks import ReindexRequest, SearchService
from tests import crashkit

ROOT = pathlib.Path(__file__).resolve().parent.parent
REINDEX = ROOT / "examples" / "pipelines" / "reindex.toml"

#: ``python -c WORKER STORE_URL PIPELINE_FILE CONCURRENCY``
WORKER = """
import sys
from engine import Worker
from engine.pipeline import load
from tests import crashkit
store = crashkit.open_store(sys.argv[1])
pipeline = load(sys.argv[2])
try:
    Worker(store, pipeline.workflows, pipeline.activities, poll_interval=0.01,
           max_concurrent_activities=int(sys.argv[3])).run()
finally:
    store.close()
"""


class Workers:
    """Worker processes on one store; their output goes to one file."""

    def __init__(self, url: str, directory: pathlib.Path, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency
        self.output = open(directory / "workers.out", "ab")  # noqa: SIM115 - closed in stop()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.path = directory / "workers.out"

    def spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, self.url, str(REINDEX), str(self.concurrency)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def tail(self) -> str:
        self.output.flush()
        return "\n".join(self.path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.output.close()


def wait_for(what: str, condition: Any, workers: Workers, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in workers.procs:
            code = proc.poll()
            if code is not None and code != -signal.SIGKILL:
                raise AssertionError(f"a worker exited with {code}\n{workers.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.tail()}")
        time.sleep(0.01)


def check(client: Client, wid: str, request: ReindexRequest, batches: int) -> None:
    """One completed run; each activity scheduled and completed once; every batch indexed."""
    assert client.describe(wid).status is Status.COMPLETED
    summary = client.result(wid)
    assert summary["indexed"] == request.products and summary["batches"] == batches
    assert summary["retried"] == sorted(request.flaky)
    history = client.history(wid)
    assert sum(isinstance(ev, WorkflowCompleted) for ev in history) == 1
    assert not any(isinstance(ev, ActivityFailed) for ev in history)
    for kind in (ActivityScheduled, ActivityCompleted):
        per_seq = collections.Counter(ev.seq for ev in history if isinstance(ev, kind))  # type: ignore[attr-defined]
        assert len(per_seq) == 4 + batches and set(per_seq.values()) == {1}, (kind, per_seq)
    indices = sorted(
        client.decode(ev.args)[0]
        for ev in history
        if isinstance(ev, ActivityScheduled) and ev.activity_type == "reindex.index"
    )
    assert indices == list(range(batches))
    assert SearchService(request.index_dir).count() == request.products


def deciders(client: Client, wid: str) -> set[str]:
    """The worker processes that made the run's decisions (batch ids start with the identity)."""
    return {
        ev.batch_id.rsplit("#", 1)[0]
        for ev in client.history(wid)
        if isinstance(ev, WorkflowTaskCompleted)
    }


def test_a_worker_killed_mid_run_and_another_finishes(tmp_path: pathlib.Path) -> None:
    url = f"file:{tmp_path / 'store'}?durability=flush"
    index = tmp_path / "index"
    request = ReindexRequest(
        products=240, batch_size=20, index_dir=str(index), flaky={5: 1}, pause=0.15
    )
    store = crashkit.open_store(url)
    client = Client(store)
    wid = start(client, load(REINDEX), request, id="reindex-crash")
    workers = Workers(url, tmp_path, concurrency=2)
    try:
        first = workers.spawn()
        wait_for("the first batches", lambda: SearchService(str(index)).count() >= 40, workers)
        workers.kill(first)
        assert client.describe(wid).status is Status.RUNNING
        assert SearchService(str(index)).count() < request.products  # killed mid-run
        workers.spawn()
        wait_for(
            "the run to complete",
            lambda: client.describe(wid).status is not Status.RUNNING,
            workers,
        )
    finally:
        workers.stop()
    try:
        check(client, wid, request, batches=12)
        assert len(deciders(client, wid)) == 2, deciders(client, wid)
    finally:
        store.close()


@pytest.mark.ci
def test_workers_killed_again_and_again(tmp_path: pathlib.Path) -> None:
    seed = int(os.environ.get("TPP_CRASH_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    url = f"file:{tmp_path / 'store'}?durability=fsync"
    index = tmp_path / "index"
    request = ReindexRequest(
        products=1200, batch_size=20, index_dir=str(index), flaky={3: 1, 17: 2}, pause=0.15
    )
    store = crashkit.open_store(url)
    client = Client(store)
    wid = start(client, load(REINDEX), request, id="reindex-crash-heavy")
    workers = Workers(url, tmp_path, concurrency=3)
    kills = 0
    deadline = time.monotonic() + 180
    try:
        live = [workers.spawn() for _ in range(3)]
        while client.describe(wid).status is Status.RUNNING:
            assert time.monotonic() < deadline, f"seed {seed}: no end\n{workers.tail()}"
            time.sleep(rng.uniform(0.3, 0.8))
            victim = live.pop(rng.randrange(len(live)))
            workers.kill(victim)
            kills += 1
            live.append(workers.spawn())
    finally:
        workers.stop()
    try:
        check(client, wid, request, batches=60)
        assert kills >= 3, f"seed {seed}: only {kills} kills"
    except AssertionError as exc:
        raise AssertionError(f"replay with TPP_CRASH_SEED={seed}: {exc}") from None
    finally:
        store.close()
