"""SQLiteStore: the conformance suite at every durability level, and what only SQLite has.

The suite runs with ``reopen``, ``shared`` and ``crashes``: a torn batch is the
last transaction cut out of the WAL (a crash in the middle of its commit).
Beyond it: group commit is one transaction; threads and processes share one
file with no lock errors; a killed process's claims are free at once and a live
one's never expire; busy, damaged and foreign files give engine errors; ids
keep code point order; and worker processes killed at random moments
(``tests/crashkit.py``) lose nothing and do nothing twice.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest
from hypothesis import HealthCheck

from engine import ConflictError, CorruptionError, Status, StoreError, WorkflowError
from engine._errors import WorkflowAlreadyClosedError, WorkflowNotFoundError
from engine.events import Json, SignalReceived, WorkflowTaskCompleted, with_index
from stores import AppendBatch, RunRef, Store
from stores.sqlite import SQLiteStore
from tests import crashkit
from tests.store_conformance import (
    T0,
    MakeStore,
    StoreConformance,
    append_ok,
    at,
    batch,
    child_started,
    close,
    decide,
    history,
    link,
    ref,
    scheduled,
    signal,
    started,
    wtc,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tear_wal(db: pathlib.Path) -> None:
    """Cut the WAL in the middle of its last transaction, as a crash mid-commit leaves it."""
    wal = pathlib.Path(f"{db}-wal")
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits = []  # (start, end) of each frame that commits a transaction
    offset = 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salts:
        if struct.unpack(">I", data[offset + 4 : offset + 8])[0]:
            commits.append((offset, offset + 24 + page_size))
        offset += 24 + page_size
    assert len(commits) >= 2, "the WAL holds no two transactions to tear between"
    start, end = commits[-2][1], commits[-1][1]
    with open(wal, "r+b") as f:
        f.truncate((start + end) // 2)
    pathlib.Path(f"{db}-shm").unlink(missing_ok=True)  # rebuilt from the WAL on open


class TestSQLiteStore(StoreConformance):
    reopen = True
    shared = True
    crashes = True

    @pytest.fixture(params=["none", "flush", "fsync"])
    def durability(self, request: pytest.FixtureRequest) -> str:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture
    def make_store(self, tmp_path: pathlib.Path, durability: str) -> Iterator[MakeStore]:
        self._db = tmp_path / "tpp.db"
        self._pins: list[sqlite3.Connection] = []

        def make() -> Store:
            store = SQLiteStore(self._db, durability=durability)  # type: ignore[arg-type]
            if not self._pins:
                # a read-only connection keeps close() from checkpointing the WAL away,
                # so that tear_last_batch finds the last transaction there
                pin = sqlite3.connect(f"{self._db.as_uri()}?mode=ro", uri=True)
                pin.execute("SELECT COUNT(*) FROM runs").fetchone()
                self._pins.append(pin)
            return store

        yield make
        for pin in self._pins:
            pin.close()

    def kill_owner(self, store: Store, owner: str, *, lease: float) -> None:
        assert isinstance(store, SQLiteStore)
        store._liveness.release(owner)  # what the OS does when the owner's process dies
        store._owners.discard(owner)
        store._registered.discard(owner)

    def tear_last_batch(self, store: Store, run: RunRef) -> None:
        for pin in self._pins:
            pin.close()
        self._pins.clear()
        tear_wal(self._db)


def test_the_suites_hypothesis_test_allows_many_backends() -> None:
    test = StoreConformance.test_any_string_is_a_workflow_id
    checks = test._hypothesis_internal_use_settings.suppress_health_check  # type: ignore[attr-defined]
    assert HealthCheck.differing_executors in checks


# --------------------------------------------------------------------------- SQLite only


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "tpp.db"


@pytest.mark.parametrize(("durability", "level"), [("fsync", 2), ("flush", 1), ("none", 0)])
def test_durability_sets_synchronous(db: pathlib.Path, durability: str, level: int) -> None:
    with SQLiteStore(db, durability=durability) as store:  # type: ignore[arg-type]
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.create(started("w"))
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level


@pytest.mark.parametrize("bad", [{"durability": "sometimes"}, {"path": ":memory:"}, {"path": ""}])
def test_bad_arguments(db: pathlib.Path, bad: dict[str, str]) -> None:
    args = {"path": str(db), "durability": "none", **bad}
    with pytest.raises(ValueError):
        SQLiteStore(args["path"], durability=args["durability"])  # type: ignore[arg-type]


def test_group_commit_is_one_transaction(db: pathlib.Path) -> None:
    with SQLiteStore(db, durability="fsync") as store:
        runs = [started(f"w{i}") for i in range(100)]
        for s in runs:
            store.create(s)
        done = started("done")
        store.create(done)
        close(store, done, Status.COMPLETED)
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        batches = [batch(s, signal(request_id=s.workflow_id)) for s in runs]
        batches += [
            batch(runs[0], wtc(1), expected=1),  # lands after this call's signal
            batch(runs[1], signal(), wtc(1), expected=1),  # coalesced, no longer exact
            batch(done, signal()),
            batch(started("nobody"), signal()),
            batch(runs[0], wtc(1), expected=1),  # lost to the decision above
        ]
        results = store.append(batches)
        store._conn.set_trace_callback(None)
        assert [r.index for r in results[:100]] == [1] * 100
        assert results[100].index == 2
        assert isinstance(results[101].error, ConflictError)
        assert isinstance(results[102].error, WorkflowAlreadyClosedError)
        assert isinstance(results[103].error, WorkflowNotFoundError)
        assert isinstance(results[104].error, ConflictError)
        transactions = [s for s in statements if s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
        transactions = [s for s in transactions if not s.startswith("ROLLBACK TO")]
        assert transactions == ["BEGIN IMMEDIATE", "COMMIT"]  # one fsync for 105 batches
        assert sum(s.startswith("SAVEPOINT") for s in statements) == len(batches)
        assert sum(s.startswith("ROLLBACK TO") for s in statements) == 4
        assert len(history(store, runs[1])) == 2
        assert [type(e).__name__ for e in history(store, runs[0])] == [
            "WorkflowStarted",
            "SignalReceived",
            "WorkflowTaskCompleted",
        ]


def _owned_round(store: Store, owner: str, limit: int) -> int:
    """Claim, decide on each claimed run (owners never conflict), release; returns decisions."""
    decided = 0
    for r in store.claim(owner, now=T0, limit=limit).runs:
        n = len(store.read(r.workflow_id, r.run_id))
        decision = AppendBatch(
            workflow_id=r.workflow_id, run_id=r.run_id, events=[wtc(n)], expected_length=n
        )
        [result] = store.append([decision])
        assert result.ok, f"{owner} owns {r} but lost its decision: {result.error}"
        store.release(owner, r)
        decided += 1
    return decided


def test_threads_with_their_own_handles(db: pathlib.Path) -> None:
    runs = [started(f"w{i}") for i in range(20)]
    with SQLiteStore(db, durability="none") as setup:
        for s in runs:
            setup.create(s)
    threads, rounds = 8, 40

    def work(t: int) -> int:
        with SQLiteStore(db, durability="none") as store:
            decided = 0
            for i in range(rounds):
                s = runs[(7 * t + i) % len(runs)]
                append_ok(store, batch(s, signal(request_id=f"{t}-{i}")))
                decided += _owned_round(store, f"owner-{t}", limit=2)
            return decided

    with ThreadPoolExecutor(threads) as pool:
        decided = sum(pool.map(work, range(threads)))
    with SQLiteStore(db, durability="none") as store:
        events = [ev for s in runs for ev in history(store, s)]
        signals = sorted(ev.request_id for ev in events if isinstance(ev, SignalReceived))
        assert signals == sorted(f"{t}-{i}" for t in range(threads) for i in range(rounds))
        assert decided == sum(isinstance(ev, WorkflowTaskCompleted) for ev in events) > 0


PROCESS = """
import json, sys
from stores.sqlite import SQLiteStore
from tests import test_store_sqlite as t
from tests.store_conformance import batch, signal, started, append_ok
db, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with SQLiteStore(db, durability=sys.argv[4]) as store:
    runs = [started(f"w{i}", run_id=f"r{i}") for i in range(20)]
    decided = 0
    for i in range(rounds):
        append_ok(store, batch(runs[(i * 7 + len(me)) % 20], signal(request_id=f"{me}-{i}")))
        decided += t._owned_round(store, me, limit=3)
print(json.dumps({"decided": decided}))
"""


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_processes_share_one_file(db: pathlib.Path, durability: str) -> None:
    with SQLiteStore(db, durability="none") as setup:
        runs = [started(f"w{i}", run_id=f"r{i}") for i in range(20)]
        for s in runs:
            setup.create(s)
    owners, rounds = ["p", "qq", "rrr"], 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(db), me, str(rounds), durability],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in owners
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err and "busy" not in err
    decided = sum(json.loads(out)["decided"] for out, _ in outputs)
    with SQLiteStore(db, durability="none") as store:
        events = [ev for s in runs for ev in history(store, s)]
        signals = sorted(ev.request_id for ev in events if isinstance(ev, SignalReceived))
        assert signals == sorted(f"{me}-{i}" for me in owners for i in range(rounds))
        assert decided == sum(isinstance(ev, WorkflowTaskCompleted) for ev in events) > 0


CLAIMER = """
import os, signal, sys
from datetime import UTC, datetime
from stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], durability="none")
got = store.claim("doomed", now=datetime(2026, 1, 1, tzinfo=UTC), limit=100, lease=0.05)
print(len(got.runs), flush=True)
sys.stdin.read()  # alive until told
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_owner_is_dead_at_once_and_a_live_one_never_expires(db: pathlib.Path) -> None:
    with SQLiteStore(db, durability="none") as store:
        runs = [started(f"w{i}") for i in range(5)]
        for s in runs:
            store.create(s)
        proc = subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(db)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "5"
            time.sleep(0.3)  # far past its lease: a live owner keeps its runs all the same
            assert store.claim("B", now=T0, lease=3600).runs == []
            assert store.renew("doomed") == [ref(s) for s in runs]
            proc.stdin.close()  # ... and now it is SIGKILLed
            assert proc.wait(timeout=30) == -9
        finally:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        got = store.claim("B", now=T0, lease=3600).runs
        assert sorted(got, key=lambda r: r.workflow_id) == [ref(s) for s in runs]
        assert store.renew("doomed") == []


def test_a_busy_database_is_waited_for_then_an_engine_error(db: pathlib.Path) -> None:
    with SQLiteStore(db, durability="none", timeout=0.5) as store:
        s = started("w")
        store.create(s)
        blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            timer = threading.Timer(0.2, lambda: blocker.execute("COMMIT"))
            timer.start()
            t0 = time.monotonic()
            append_ok(store, batch(s, signal()))  # waits for the writer, no "locked" error
            assert time.monotonic() - t0 >= 0.15
            timer.join()
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="busy") as info:
                store.append([batch(s, signal())])
            assert "locked" not in str(info.value)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert len(history(store, s)) == 2  # the refused append left nothing


def test_damage_is_a_corruption_error(db: pathlib.Path) -> None:
    with SQLiteStore(db, durability="none") as store:
        s = started("w")
        store.create(s)
        append_ok(store, batch(s, signal()))
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("UPDATE events SET data=x'ff00' WHERE idx=1")  # an int, then junk
    raw.close()
    with SQLiteStore(db, durability="none") as store:
        with pytest.raises(CorruptionError):
            store.read("w")
        assert store.describe("w").history_length == 2
    garbage = db.with_name("garbage.db")
    garbage.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(CorruptionError) as info:
        SQLiteStore(garbage)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_newer_schema_is_refused(db: pathlib.Path) -> None:
    SQLiteStore(db, durability="none").close()
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(WorkflowError, match="schema version 99"):
        SQLiteStore(db)


def test_ids_keep_code_point_order(db: pathlib.Path) -> None:
    ids = ["\ud800", "\udfff", "\ue000", "\ud7ff", "a\x00", "a", "a\x00\x00", "\U0001f600"]
    with SQLiteStore(db, durability="none") as store:
        for wid in ids:
            store.create(started(wid))
    with SQLiteStore(db, durability="none") as store:
        assert [i.id for i in store.list().items] == sorted(ids, reverse=True)
        page = store.list(page_size=4)
        rest = store.list(page_token=page.next_page_token)
        assert [i.id for i in page.items + rest.items] == sorted(ids, reverse=True)


def test_lone_surrogates_round_trip_everywhere(db: pathlib.Path) -> None:
    odd = "\ud800-\x00-\udfff"
    with SQLiteStore(db, durability="none") as store:
        p = started(odd, type=odd, queue=odd)
        store.create(p)
        kid = started(odd + "kid", parent=link(p, 1))
        s = signal(name=odd, request_id=odd)
        s = msgspec.structs.replace(s, payload=Json(text=f'"{odd}"'))
        append_ok(store, batch(p, s))
        decide(store, p, scheduled(1), child_started(2, odd + "kid"), starts=[kid])
        assert store.heartbeat(ref(p), 1, Json(text=odd)) == Json(text=odd)
        [r] = store.claim(odd, now=T0, task_queues=(odd,)).runs
        assert r == ref(p)
        store.release(odd, r, blocked=odd)
    with SQLiteStore(db, durability="none") as store:
        events = store.read(odd)
        assert events[1] == with_index(s, 1)
        assert store.describe(odd + "kid").parent == link(p, 1)
        info = store.describe(odd)
        assert (info.id, info.type, info.task_queue, info.blocked) == (odd, odd, odd, odd)
        assert store.heartbeat(ref(p), 1) == Json(text=odd)
        assert store.read(odd + "kid") == [with_index(kid, 0)]


def test_claim_reads_only_the_ready_index(db: pathlib.Path) -> None:
    with SQLiteStore(db, durability="none") as store:
        for i in range(50):
            s = started(f"done-{i}")
            store.create(s)
            append_ok(store, batch(s, signal()))
            close(store, s, Status.TERMINATED)
        store.create(started("live"))
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        assert len(store.claim("A", now=at(10**6)).runs) == 1
        store._conn.set_trace_callback(None)
        [query] = [s for s in statements if "due_us IS NOT NULL" in s]
        plan = " ".join(row[-1] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert "USING INDEX runs_ready" in plan and "SCAN" not in plan, plan


def test_many_handles_create_the_schema_at_once(db: pathlib.Path) -> None:
    def open_and_create(i: int) -> None:
        with SQLiteStore(db, durability="none") as store:
            store.create(started(f"w{i}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_and_create, range(16)))
    with SQLiteStore(db, durability="none") as store:
        assert len(list(store.runs())) == 16


# --------------------------------------------------------------------------- crash-kill


def _seed() -> int:
    return int(os.environ.get("TPP_CRASH_SEED") or time.time_ns() % 1_000_000)


def test_crash_kill(tmp_path: pathlib.Path) -> None:
    seed = _seed()
    try:
        report = crashkit.run(f"sqlite:{tmp_path / 'tpp.db'}", tmp_path, seed=seed)
    except AssertionError as exc:
        raise AssertionError(
            f"crash-kill failed; replay with TPP_CRASH_SEED={seed}\n{exc}"
        ) from None
    print(report)
    assert report.kills >= 50, report
    assert report.kills_while_busy >= 40, report  # the kills hit a working system


@pytest.mark.ci
def test_crash_kill_heavy(tmp_path: pathlib.Path) -> None:
    seed = _seed()
    try:
        report = crashkit.run(
            f"sqlite:{tmp_path / 'tpp.db'}?durability=fsync",
            tmp_path,
            seed=seed,
            workers=4,
            kills=150,
            pause=0.2,
            timeout=300,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"crash-kill failed; replay with TPP_CRASH_SEED={seed}\n{exc}"
        ) from None
    print(report)
    assert report.kills >= 150, report
