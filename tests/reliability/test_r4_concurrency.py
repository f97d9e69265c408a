"""R4 concurrent writers on the local stores.

* 4 processes x 1,000 appends to one FileStore run through its id lock: the
  history is 4,001 events with indices 0..4000, each process's appends appear
  once each and in its order, and the log parses from byte 0 into 4,001 whole
  batches (interleaved bytes would fail a checksum);
* 3 workers (threads, each with its own store handle: as separate processes
  for the file and SQLite stores) compete for the same 100 workflows on
  MemoryStore, FileStore and SQLiteStore: each completes once, with the
  crash-free result, every activity scheduled and completed once
  (``crashkit.check``).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from engine import Client, Status, Worker
from engine.events import SignalReceived
from stores import MemoryStore, Store
from stores._fileformat import parse_log
from stores.file import FileStore
from stores.sqlite import SQLiteStore
from tests import crashkit
from tests.store_conformance import ref, started
from tests.test_store_file import log_of

ROOT = pathlib.Path(__file__).resolve().parents[2]

APPENDER = """
import sys
from stores.file import FileStore
from stores import AppendBatch
from tests.store_conformance import signal
root, wid, rid, me = sys.argv[1:5]
with FileStore(root, durability="none") as store:
    for i in range(1000):
        [r] = store.append([AppendBatch(workflow_id=wid, run_id=rid, events=[signal(f"{me}.{i}")])])
        assert r.ok, r
"""


def test_four_processes_append_a_thousand_each(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "store"
    s = started("shared")
    with FileStore(root, durability="none") as store:
        store.create(s)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(root), s.workflow_id, s.run_id, str(k)],
            cwd=ROOT,
            env=env,
        )
        for k in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    with FileStore(root, durability="none") as store:
        history = store.read("shared")
    assert [ev.index for ev in history] == list(range(4001))
    names = [ev.name for ev in history if isinstance(ev, SignalReceived)]
    assert len(names) == len(set(names)) == 4000
    for k in range(4):
        mine = [int(n.split(".")[1]) for n in names if n.startswith(f"{k}.")]
        assert mine == list(range(1000)), f"process {k}: out of order or missing"
    batches, end = parse_log(log_of(root, ref(s)).read_bytes(), 0, 1)
    assert len(batches) == 4001 and end == log_of(root, ref(s)).stat().st_size


STORES: dict[str, Callable[[pathlib.Path], Callable[[], Store]]] = {
    "memory": lambda d: (lambda shared: lambda: shared)(MemoryStore()),
    "file": lambda d: lambda: FileStore(d / "store", durability="none"),
    "sqlite": lambda d: lambda: SQLiteStore(d / "tpp.db", durability="none"),
}


@pytest.mark.parametrize("backend", STORES)
def test_three_workers_compete_for_a_hundred_workflows(
    tmp_path: pathlib.Path, backend: str
) -> None:
    make = STORES[backend](tmp_path)
    log = tmp_path / "attempts.log"
    steps = 3
    first = make()
    client = Client(first)
    ids = [
        client.start(crashkit.crash_chain, i, steps, str(log), 0.0, id=f"crash-{i}")
        for i in range(100)
    ]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        store = make()
        try:
            worker = Worker(
                store,
                workflows=crashkit.WORKFLOWS,
                activities=crashkit.ACTIVITIES,
                identity=f"worker-{k}",
            )
            for _ in range(2000):
                worker.run_until_idle()
                counts = store.list(page_size=1).counts
                if not counts.get(Status.RUNNING):
                    return
            raise AssertionError(f"worker {k}: workflows still running")
        except BaseException as exc:
            errors.append(exc)
        finally:
            if backend != "memory":
                store.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    attempts, activities = crashkit.check(first, ids, log, steps, crashkit.expected(100, steps))
    assert activities == 300 and attempts >= 300
    first.close()
