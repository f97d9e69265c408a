"""FileStore: the conformance suite at every durability level, torn and damaged logs,
hostile ids, the index's recovery, many handles and processes, crash-kill."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from signal import SIGTERM, SIGUSR1
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    Client,
    ContinueAsNew,
    CorruptionError,
    ScheduleActivity,
    StartChildWorkflow,
    Status,
    Timer,
    VirtualClock,
    WaitSignal,
    Worker,
    activity,
    workflow,
)
from engine._info import IdReusePolicy
from engine.events import (
    ChildWorkflowCompleted,
    Json,
    MarkerRecorded,
    SignalReceived,
    WorkflowContinuedAsNew,
    WorkflowTaskCompleted,
    with_index,
)
from stores import AppendBatch, MemoryStore, RunRef, Store, _names
from stores.file import FileStore
from tests import crashkit
from tests.store_conformance import (
    T0,
    MakeStore,
    StoreConformance,
    append_ok,
    at,
    batch,
    child_started,
    claimed,
    close,
    closer,
    decide,
    history,
    link,
    ref,
    scheduled,
    signal,
    started,
    wtc,
)
from tests.test_names import TRICKY

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def log_of(root: pathlib.Path, run: RunRef) -> pathlib.Path:
    """The log file of ``run`` (found by its ``WorkflowStarted``, as a person would)."""
    d = root / "runs" / _names.shard(run.workflow_id) / _names.name(run.workflow_id)
    for log in sorted(d.glob("*.log")):
        if f'"run_id":"{run.run_id}"'.encode() in log.read_bytes().split(b"\n", 1)[0]:
            return log
    raise AssertionError(f"no log for {run}")


def last_batch_start(data: bytes) -> int:
    """The offset of the last batch's first line in a log."""
    lines = data.splitlines(keepends=True)
    number = lines[-1].split(b" ")[1]
    offset = len(data)
    for line in reversed(lines):
        if line.split(b" ")[1] != number:
            break
        offset -= len(line)
    return offset


def tree(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --------------------------------------------------------------------------- conformance


class _FileConformance(StoreConformance):
    reopen = True
    shared = True
    crashes = True
    durability = "none"

    @pytest.fixture
    def make_store(self, tmp_path: pathlib.Path) -> MakeStore:
        self.root = tmp_path / "store"
        return lambda: FileStore(self.root, durability=self.durability)

    def kill_owner(self, store: Store, owner: str, *, lease: float) -> None:
        assert isinstance(store, FileStore)
        store._let_owner_die(owner)

    def tear_last_batch(self, store: Store, run: RunRef) -> None:
        log = log_of(self.root, run)
        data = log.read_bytes()
        start = last_batch_start(data)
        log.write_bytes(data[: start + (len(data) - start) // 2])


class TestFileStoreNone(_FileConformance):
    durability = "none"


class TestFileStoreFlush(_FileConformance):
    durability = "flush"


FSYNC_SUBSET = {
    "test_is_a_store",
    "test_create_history_is_workflow_started_at_index_0",
    "test_nasty_ids_are_distinct_workflows",
    "test_append_sets_indices_and_read_after",
    "test_a_decision_lands_after_external_events",
    "test_one_call_many_runs",
    "test_a_failing_batch_leaves_nothing",
    "test_a_batch_starts_a_child",
    "test_a_closing_child_notifies_its_parent",
    "test_continue_as_new",
    "test_terminate_if_running",
    "test_retries_are_due_at_retry_at",
    "test_release_not_before_delays_and_says_why",
    "test_heartbeats",
    "test_runs_iterates_every_run",
    "test_concurrent_signals_and_decisions",
    "test_two_handles_share_the_data",
    "test_a_torn_batch_is_dropped_whole",
    "test_a_dead_owners_claims_expire",
}


class TestFileStoreFsync(_FileConformance):
    """A subset at ``fsync`` (every write synced): the same code with slower writes."""

    durability = "fsync"


for _name in dir(StoreConformance):
    if _name.startswith("test_") and _name not in FSYNC_SUBSET:
        setattr(TestFileStoreFsync, _name, None)
assert set(dir(StoreConformance)) >= FSYNC_SUBSET


# --------------------------------------------------------------------------- the format


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "store"


def test_logs_are_one_event_per_readable_line(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store:
        s = started("Order #7/\u00e9")
        store.create(s)
        decide(store, s, scheduled(1), signal("hello"))
        log = log_of(root, ref(s))
    assert log.parent.name == "w-^order%20%237%2f%c3%a9"
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    crc, number, position, body = lines[1].split(" ", 3)
    assert len(crc) == 8 and (number, position) == ("2", "1/3")
    event = json.loads(body)
    assert (event["kind"], event["index"], event["seen"]) == ("WorkflowTaskCompleted", 1, 1)
    assert json.loads(lines[0].split(" ", 3)[3])["workflow_id"] == "Order #7/\u00e9"
    assert [line.split(" ")[2] for line in lines] == ["1/1", "1/3", "2/3", "3/3"]


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_a_log_torn_at_every_byte_of_its_last_batch_recovers(
    tmp_path: pathlib.Path, durability: str
) -> None:
    pristine = tmp_path / "pristine"
    s = started("w")
    with FileStore(pristine, durability="none") as store:
        store.create(s)
        append_ok(store, batch(s, signal("a")))
        last = [
            wtc(2),
            scheduled(1),
            MarkerRecorded(time=T0, name="m", value=Json(text='"\u00e9"')),
        ]
        append_ok(store, batch(s, *last, expected=2))
        whole = history(store, s)
    log = log_of(pristine, ref(s))
    data = log.read_bytes()
    start = last_batch_start(data)
    offsets = range(start, len(data))
    if durability == "fsync":  # the slower level: every 7th byte
        offsets = range(start, len(data), 7)
    work = tmp_path / "work"
    for cut in offsets:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        with open(log_of(work, ref(s)), "r+b") as f:
            f.truncate(cut)
        with FileStore(work, durability=durability) as store:
            assert history(store, s) == whole[:2], cut
            assert store.describe("w").history_length == 2
            assert claimed(store, "A") == {ref(s)}
            assert append_ok(store, batch(s, wtc(2), scheduled(9), expected=2)) == 2
        with FileStore(work, durability=durability) as store:
            assert [ev.index for ev in history(store, s)] == [0, 1, 2, 3]
            assert history(store, s)[3] == with_index(scheduled(9), 3)
        assert log_of(work, ref(s)).read_bytes().startswith(data[:start])


def test_a_torn_create_is_no_run_and_its_file_is_reused(root: pathlib.Path) -> None:
    s1 = started("w")
    with FileStore(root, durability="none") as store:
        store.create(s1)
        close(store, s1, Status.COMPLETED)
        s2 = started("w", time=at(1))
        store.create(s2)
    log = log_of(root, ref(s2))
    log.write_bytes(log.read_bytes()[:-5])  # the create never finished
    with FileStore(root, durability="none") as store:
        assert store.describe("w").run_id == s1.run_id
        assert {i.run_id for i in store.runs()} == {s1.run_id}
        s3 = started("w", time=at(2))
        store.create(s3)
        assert log_of(root, ref(s3)) == log  # the torn file's number is reused
        assert store.read("w") == [with_index(s3, 0)]
    with FileStore(root, durability="none") as store:
        assert [i.run_id for i in store.list().items] == [s3.run_id, s1.run_id]


def _damaged_store(root: pathlib.Path) -> tuple[Any, pathlib.Path, bytes]:
    s = started("w")
    with FileStore(root, durability="none") as store:
        store.create(s)
        for i in range(3):
            append_ok(store, batch(s, signal(f"s{i}"), signal(f"t{i}")))
        log = log_of(root, ref(s))
    return s, log, log.read_bytes()


@pytest.mark.parametrize("where", ["crc", "header", "json", "newline", "last line"])
def test_a_flipped_byte_raises_corruption_error(root: pathlib.Path, where: str) -> None:
    s, log, data = _damaged_store(root)
    lines = data.splitlines(keepends=True)
    line = 3  # inside batch 2 (lines 2-3) of 4 batches
    begin = sum(map(len, lines[:line]))
    offset = {
        "crc": begin + 3,
        "header": begin + 9,
        "json": begin + 40,
        "newline": begin + len(lines[line]) - 1,
        "last line": len(data) - 20,
    }[where]
    damaged = bytearray(data)
    damaged[offset] ^= 0x04
    log.write_bytes(bytes(damaged))
    with FileStore(root, durability="none") as store:
        with pytest.raises(CorruptionError):
            store.read("w")
        with pytest.raises(CorruptionError):
            store.describe("w")
        [result] = store.append([batch(s, signal())])
        assert isinstance(result.error, CorruptionError)
        assert claimed(store, "A") == set()
    assert log.read_bytes() == bytes(damaged)  # nothing "repaired" away


def test_damage_found_by_a_live_handle(root: pathlib.Path) -> None:
    _, log, data = _damaged_store(root)
    with FileStore(root, durability="none") as store:
        assert len(store.read("w")) == 7
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 0x01
        log.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError):
            store.read("w")
        with pytest.raises(CorruptionError):
            store.describe("w")


def test_a_hole_left_by_a_power_cut_is_a_torn_tail(root: pathlib.Path) -> None:
    s, log, data = _damaged_store(root)
    start = last_batch_start(data)
    log.write_bytes(data[:start] + b"\x00" * 30 + b"\n")  # unwritten blocks read as zeros
    with FileStore(root, durability="none") as store:
        assert len(store.read("w")) == 5
        append_ok(store, batch(s, signal()))
        assert len(store.read("w")) == 6


# --------------------------------------------------------------------------- hostile ids


def _random_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0xD800, 0xDFFF), (0x10000, 0x10FFFF)]
    out: set[str] = set()
    while len(out) < count:
        size = rng.choice([0, 1, 2, 5, 20, 60, 130, 300, 2000])
        chars = []
        for _ in range(size):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        out.add("".join(chars))
    return sorted(out)


def test_hostile_ids_round_trip_and_stay_inside_the_root(tmp_path: pathlib.Path) -> None:
    outer = tmp_path / "outer"
    root = outer / "store"
    outer.mkdir()
    (tmp_path / "sibling").write_text("untouched")
    before = tree(tmp_path)
    ids = sorted(set(TRICKY) | set(_random_ids(1000, seed=20261126)))
    assert len(ids) >= 1040
    with FileStore(root, durability="none") as store:
        client = Client(store)
        for wid in ids:
            assert client.start("hostile", id=wid) == wid
        client.signal(ids[0], "ping", 1)
        listed = client.list()
        assert sorted(i.id for i in listed) == ids
        for wid in ids:
            assert client.describe(wid).id == wid
            assert client.history(wid)[0].workflow_id == wid  # type: ignore[union-attr]
    with FileStore(root, durability="none") as store:  # and from the logs again
        client = Client(store)
        assert sorted(i.id for i in client.list()) == ids
        assert isinstance(client.history(ids[0])[-1], SignalReceived)
        got = store.claim("A", now=T0, limit=len(ids) + 1).runs
        assert sorted(r.workflow_id for r in got) == ids
    shutil.rmtree(root / "index")  # rebuilt from the logs alone
    with FileStore(root, durability="none") as store:
        assert sorted(i.id for i in Client(store).list()) == ids
    after = tree(tmp_path)
    assert {p for p in after - before if not p.startswith("outer/store")} == set()
    assert before <= after
    resolved_root = root.resolve()
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(resolved_root)
        assert not path.is_symlink()
        assert len(path.name.encode()) <= 255 and path.name.isascii()
    workflow_dirs = list((root / "runs").glob("*/*"))
    assert len(workflow_dirs) == len(ids)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    wid=st.text(st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"]))),
    name=st.text(st.characters(categories=["Cs", "Ll", "Zs"]), max_size=5),
)
def test_lone_surrogates_in_ids_and_events(tmp_path: pathlib.Path, wid: str, name: str) -> None:
    root = tmp_path / f"s{random.getrandbits(64):x}"
    s = started(wid)
    with FileStore(root, durability="none") as store:
        store.create(s)
        append_ok(store, batch(s, signal(name)))
    with FileStore(root, durability="none") as store:
        assert store.read(wid) == [with_index(s, 0), with_index(signal(name), 1)]
        assert [i.id for i in store.list().items] == [wid]
    shutil.rmtree(root)


# --------------------------------------------------------------------------- the index


def _population(store: Store) -> list[Any]:
    runs = []
    for i in range(30):
        s = started(f"w{i}", time=at(i), type="even" if i % 2 == 0 else "odd")
        store.create(s)
        decide(store, s, scheduled(1))
        if i % 3 == 0:
            close(store, s, Status.COMPLETED)
        runs.append(s)
    return runs


def _churn(store: Store, runs: list[Any], count: int) -> None:
    """Journal records: signals to the running runs."""
    running = [s for s in runs if store.describe(s.workflow_id).status is Status.RUNNING]
    for i in range(count):
        append_ok(store, batch(running[i % len(running)], signal(f"churn-{i}")))


def _view(store: Store) -> Any:
    infos = sorted(store.runs(), key=lambda i: i.id)
    return infos, [store.read(i.id, i.run_id) for i in infos], store.list(page_size=7).counts


def test_a_deleted_index_is_rebuilt_from_the_logs(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store:
        _population(store)
        store.release("nobody", RunRef(workflow_id="w1", run_id="x"))
        expected = _view(store)
        due = claimed(store, "A", limit=100)
    shutil.rmtree(root / "index")
    with FileStore(root, durability="none") as store:
        assert _view(store) == expected
        assert claimed(store, "B", limit=100) == due


def test_compaction_keeps_everything_and_bounds_the_journal(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store:
        store.CHECKPOINT_BYTES = 4096
        store._compact_at = 4096
        runs = _population(store)
        other = FileStore(root, durability="none")  # follows every generation
        for _ in range(6):
            _churn(store, runs, 100)
            assert _view(other) == _view(store)
        store.heartbeat(ref(runs[1]), 1, Json(text="7"))
        claimed(store, "A", limit=5)
        store.release("A", ref(runs[1]), not_before=at(99), blocked="why")
        expected = _view(store)
        generation = store._rgen
        assert generation >= 3
        assert _view(other) == expected
        assert other._rgen == generation
        other.close()
    journals = sorted(p.name for p in (root / "index").glob("journal.*"))
    assert len(journals) <= 2
    with FileStore(root, durability="none") as store:
        assert _view(store) == expected
        assert store.heartbeat(ref(runs[1]), 1) == Json(text="7")
        assert store.describe("w1").blocked == "why"
        assert claimed(store, "B", now=at(98), limit=100).isdisjoint({ref(runs[1])})


def test_a_handle_two_generations_behind_reloads(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store, FileStore(root, durability="none") as idle:
        store.CHECKPOINT_BYTES = 2048
        store._compact_at = 2048
        _churn(store, _population(store), 1000)
        assert store._rgen >= 3 and idle._rgen == 0
        assert _view(idle) == _view(store)
        assert idle._rgen == store._rgen


def test_a_handle_that_falls_behind_inside_a_locked_section(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store, FileStore(root, durability="none") as idle:
        runs = _population(store)
        idle.read("w1")
        s = runs[1]
        assert idle.claim("I", now=T0, limit=1).runs  # something idle owns
        store.CHECKPOINT_BYTES = 2048
        store._compact_at = 2048
        _churn(store, runs, 1000)
        with idle._mu:  # as if the compactions happened between its _sync and its lock
            [result] = idle._append_batches([batch(s, signal("late"))])
            assert result.ok and idle._behind
            n = len(store.read("w1"))
            [decision] = idle._append_batches([batch(s, wtc(n), expected=n)])
            assert decision.ok, decision.error
        assert idle.read("w1") == store.read("w1")
        assert not idle._behind and _view(idle) == _view(store)


def test_after_a_reboot_the_logs_are_checked(
    root: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut lost the journal's tail (the page cache), the logs kept their batches."""
    with FileStore(root, durability="fsync") as store:
        runs = _population(store)
        journal = root / "index" / f"journal.{store._rgen:08d}"
        kept = journal.stat().st_size
        append_ok(store, batch(runs[1], signal("after")))
        p = started("parent")
        store.create(p)
        kid = started("kid", parent=link(p, 1))
        decide(store, p, child_started(1, "kid"), starts=[kid])
        close(store, kid, Status.COMPLETED)
        expected = _view(store)
    with open(journal, "r+b") as f:
        f.truncate(kept)
    with FileStore(root, durability="fsync") as store:  # the same boot: the index is trusted
        assert _view(store) != expected
    monkeypatch.setattr("stores.file._boot_id", lambda: "another boot")
    with FileStore(root, durability="fsync") as store:
        assert _view(store) == expected
        assert isinstance(store.read("parent")[-1], ChildWorkflowCompleted)
    monkeypatch.setattr("stores.file._boot_id", lambda: None)  # an OS without a boot id
    shutil.rmtree(root / "index")
    with FileStore(root, durability="fsync") as store:
        assert _view(store) == expected


def test_rebuild_index_repairs_a_stale_index(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store:
        runs = _population(store)
        journal = root / "index" / f"journal.{store._rgen:08d}"
        kept = journal.stat().st_size
        append_ok(store, batch(runs[1], signal("after")))
        store.create(started("late"))
        expected = _view(store)
    with open(journal, "r+b") as f:
        f.truncate(kept)
    with FileStore(root, durability="none") as store:
        assert _view(store) != expected
        store.rebuild_index()
        assert _view(store) == expected
    with FileStore(root, durability="none") as store:
        assert _view(store) == expected


def test_claims_touch_no_closed_run(root: pathlib.Path) -> None:
    with FileStore(root, durability="none") as store:
        for i in range(500):
            s = started(f"done-{i}")
            store.create(s)
            close(store, s, Status.TERMINATED)
        live = started("live")
        store.create(live)
    with FileStore(root, durability="none") as store:
        assert sum(len(h) for h in store._ready.values()) == 1
        assert store.claim("A", now=at(10**6), limit=1000).runs == [ref(live)]


def _count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return calls


def test_fsync_syncs_each_log_once_per_call(
    root: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore(root, durability="fsync") as store:
        runs = [started(f"w{i}") for i in range(3)]
        for s in runs:
            store.create(s)
        calls = _count_syncs(monkeypatch)
        a, b, c = runs
        group = [batch(a, signal()), batch(b, signal()), batch(a, signal()), batch(c, signal())]
        assert [r.index for r in store.append(group)] == [1, 1, 2, 1]
        assert len(calls) == 3  # group commit: one fdatasync per log touched
        calls.clear()
        append_ok(store, batch(a, signal()))
        assert len(calls) == 1


@pytest.mark.parametrize("durability", ["flush", "none"])
def test_lower_levels_leave_syncing_to_the_os(
    root: pathlib.Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    monkeypatch.setattr("stores.file._FLUSH_EVERY", 3600.0)
    store = FileStore(root, durability=durability)
    runs = [started(f"w{i}") for i in range(3)]
    for s in runs:
        store.create(s)
    calls = _count_syncs(monkeypatch)
    for i in range(30):
        append_ok(store, batch(runs[i % 3], signal()))
    assert calls == []
    monkeypatch.setattr("stores.file._FLUSH_EVERY", 0.0)
    append_ok(store, batch(runs[0], signal()))
    assert len(calls) == (3 if durability == "flush" else 0)  # every log written since
    calls.clear()
    monkeypatch.setattr("stores.file._FLUSH_EVERY", 3600.0)
    append_ok(store, batch(runs[1], signal()))
    assert calls == []
    store.close()  # a clean stop is durable at "flush"
    assert len(calls) == (1 if durability == "flush" else 0)


def test_bad_arguments(root: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        FileStore(root, durability="sometimes")
    root.mkdir()
    (root / "FORMAT").write_text("something else\n")
    with pytest.raises(ValueError, match="not a FileStore"):
        FileStore(root)


# --------------------------------------------------------------------------- handles and processes


def _owned_round(store: Store, owner: str, limit: int) -> int:
    """Claim, decide on each claimed run (an owner never conflicts), release."""
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


def test_threads_with_their_own_handles(root: pathlib.Path) -> None:
    runs = [started(f"w{i}") for i in range(20)]
    with FileStore(root, durability="none") as setup:
        for s in runs:
            setup.create(s)
    threads, rounds = 6, 40

    def work(t: int) -> int:
        with FileStore(root, durability="none") as store:
            decided = 0
            for i in range(rounds):
                s = runs[(7 * t + i) % len(runs)]
                append_ok(store, batch(s, signal(request_id=f"{t}-{i}")))
                decided += _owned_round(store, f"owner-{t}", limit=2)
            return decided

    with ThreadPoolExecutor(threads) as pool:
        decided = sum(pool.map(work, range(threads)))
    with FileStore(root, durability="none") as store:
        events = [ev for s in runs for ev in history(store, s)]
        signals = sorted(ev.request_id for ev in events if isinstance(ev, SignalReceived))
        assert signals == sorted(f"{t}-{i}" for t in range(threads) for i in range(rounds))
        assert decided == sum(isinstance(ev, WorkflowTaskCompleted) for ev in events) > 0


PROCESS = """
import json, sys
from stores.file import FileStore
from tests import test_store_file as t
from tests.store_conformance import batch, signal, started, append_ok
root, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with FileStore(root, durability=sys.argv[4]) as store:
    runs = [started(f"w{i}", run_id=f"r{i}") for i in range(20)]
    decided = 0
    for i in range(rounds):
        append_ok(store, batch(runs[(i * 7 + len(me)) % 20], signal(request_id=f"{me}-{i}")))
        decided += t._owned_round(store, me, limit=3)
        mine = started(f"{me}-{i}", run_id=f"{me}-{i}")
        store.create(mine)
print(json.dumps({"decided": decided}))
"""


@pytest.mark.parametrize("durability", ["none", "fsync"])
def test_processes_share_one_root(root: pathlib.Path, durability: str) -> None:
    runs = [started(f"w{i}", run_id=f"r{i}") for i in range(20)]
    with FileStore(root, durability="none") as setup:
        for s in runs:
            setup.create(s)
    owners, rounds = ["p", "qq", "rrr"], 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(root), me, str(rounds), durability],
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
    decided = sum(json.loads(out)["decided"] for out, _ in outputs)
    with FileStore(root, durability="none") as store:
        events = [ev for s in runs for ev in history(store, s)]
        signals = sorted(ev.request_id for ev in events if isinstance(ev, SignalReceived))
        assert signals == sorted(f"{me}-{i}" for me in owners for i in range(rounds))
        created = {i.id for i in store.runs()} - {s.workflow_id for s in runs}
        assert created == {f"{me}-{i}" for me in owners for i in range(rounds)}
        everything = [ev for i in store.runs() for ev in store.read(i.id, i.run_id)]
        assert decided == sum(isinstance(ev, WorkflowTaskCompleted) for ev in everything) > 0


CRASHER = """
import os, sys
import stores.file as f
from tests.store_conformance import batch, close, decide, started, child_started, link, append_ok
from engine import Status
from engine.events import WorkflowContinuedAsNew, Json
root, case = sys.argv[1], sys.argv[2]
store = f.FileStore(root, durability="fsync")
p = started("parent", run_id="p1")
if case == "notice":
    kid = started("kid", run_id="k1", parent=link(p, 1))
    f.FileStore._effects = lambda self, plan: os._exit(9)  # dies before the notice
    close(store, kid, Status.COMPLETED)
elif case == "child":
    f.FileStore._effects = lambda self, plan: os._exit(9)  # dies before the child's start
    kid = started("kid", run_id="k1", parent=link(p, 1))
    decide(store, p, child_started(1, "kid"), starts=[kid])
elif case == "continue":
    writes = []
    real = f._write_all
    def write_all(fd, data):
        writes.append(data)
        if len(writes) == 3:  # the journal, the old run's batch, then (not) the new run
            os._exit(9)
        real(fd, data)
    f._write_all = write_all
    nxt = started("parent", run_id="p2", continued_from=link(p))
    can = WorkflowContinuedAsNew(time=nxt.time, input=Json(text="2"), new_run_id="p2")
    decide(store, p, can, starts=[nxt])
"""


@pytest.mark.parametrize("case", ["notice", "child", "continue"])
def test_effects_a_killed_writer_left_undone_are_applied(root: pathlib.Path, case: str) -> None:
    p = started("parent", run_id="p1")
    with FileStore(root, durability="fsync") as store:
        store.create(p)
        if case == "notice":
            kid = started("kid", run_id="k1", parent=link(p, 1))
            decide(store, p, child_started(1, "kid"), starts=[kid])
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(root), case],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    with FileStore(root, durability="fsync") as store:
        if case == "notice":
            assert isinstance(store.read("parent")[-1], ChildWorkflowCompleted)
        elif case == "child":
            assert store.describe("kid").run_id == "k1"
            assert store.describe("kid").parent == link(p, 1)
        else:
            assert store.describe("parent").run_id == "p2"
            assert isinstance(store.read("parent", "p1")[-1], WorkflowContinuedAsNew)
            assert [i.run_id for i in store.list().items] == ["p2", "p1"]
        assert store._fx == {}


# --------------------------------------------------------------------------- end to end


@activity
def flaky_double(x: int, fails: int) -> int:
    from engine import activity_context

    if activity_context().attempt <= fails:
        raise RuntimeError("not yet")
    return 2 * x


@workflow
def leaf(x: int) -> Iterator[Any]:
    yield Timer(timedelta(hours=1))
    return (yield ScheduleActivity(flaky_double, x, 1))


@workflow
def tree_workflow(x: int, rounds: int) -> Iterator[Any]:
    got = yield StartChildWorkflow(leaf, x)
    bonus = yield WaitSignal("bonus")
    total = got + bonus
    if rounds > 1:
        yield ContinueAsNew(total, rounds - 1)
    return total


def _drive(store: Store) -> tuple[Any, list[list[str]]]:
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, [tree_workflow, leaf], [flaky_double], clock=clock)
    client.start(tree_workflow, 3, 3, id="tree")
    for _ in range(3):
        worker.run_until_idle(skip_time=True)
        client.signal("tree", "bonus", 1)
    worker.run_until_idle(skip_time=True)
    kinds = [
        [type(ev).__name__ for ev in store.read(i.id, i.run_id)]
        for i in sorted(store.runs(), key=lambda i: (i.id, i.start_time))
    ]
    return client.result("tree"), kinds


def test_workflows_run_on_a_file_store_as_on_memory(root: pathlib.Path) -> None:
    with MemoryStore() as memory:
        expected = _drive(memory)
    with FileStore(root, durability="fsync") as store:
        assert _drive(store) == expected
    assert expected[0] == ((3 * 2 + 1) * 2 + 1) * 2 + 1


# --------------------------------------------------------------------------- crash-kill


def _seed() -> int:
    return int(os.environ.get("TPP_CRASH_SEED") or time.time_ns() % 1_000_000)


def _crash_kill(url: str, directory: pathlib.Path, **kw: Any) -> crashkit.Report:
    seed = _seed()
    try:
        report = crashkit.run(url, directory, seed=seed, **kw)
    except AssertionError as exc:
        raise AssertionError(
            f"crash-kill failed; replay with TPP_CRASH_SEED={seed}\n{exc}"
        ) from None
    print(report)
    return report


def test_crash_kill(tmp_path: pathlib.Path) -> None:
    report = _crash_kill(f"file:{tmp_path / 'store'}?durability=flush", tmp_path)
    assert report.kills >= 50, report
    assert report.kills_while_busy >= 40, report  # the kills hit a working system


@pytest.mark.ci
def test_crash_kill_heavy(tmp_path: pathlib.Path) -> None:
    report = _crash_kill(
        f"file:{tmp_path / 'store'}?durability=fsync",
        tmp_path,
        workers=4,
        concurrency=3,
        kills=150,
        pause=0.2,
        timeout=300,
    )
    assert report.kills >= 150, report


# --------------------------------------------------------------------------- found on the way

STOPPABLE = """
import signal, sys, time
from engine import Worker
from stores import MemoryStore
signal.signal(signal.SIGUSR1, lambda *_: time.sleep(0.3))  # outlasts the worker's poll wait
print("ready", flush=True)
Worker(MemoryStore(), poll_interval=0.05).run()
"""


def test_a_worker_stops_on_sigterm_after_another_signal() -> None:
    """Found while benchmarking FileStore: ``SimpleQueue.get(timeout=...)`` hangs on CPython
    3.11 when a signal handler returns past the deadline (fixed in the Worker by 4b977d8)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPABLE], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(SIGUSR1)
        time.sleep(0.5)
        proc.send_signal(SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not stop within 5 s of SIGTERM") from None
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_memory_store_pages_past_an_id_with_a_lone_surrogate() -> None:
    with MemoryStore() as store:
        for i, wid in enumerate(["a", "\ud800", "b"]):
            store.create(started(wid, time=at(i)))
        page = store.list(page_size=2)  # ends at "\ud800"
        assert page.next_page_token is not None
        assert [i.id for i in store.list(page_size=2, page_token=page.next_page_token).items] == [
            "a"
        ]


@pytest.mark.ci
def test_crash_kill_while_compacting(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers that snapshot the index every few KiB of journal, killed at random."""
    tiny = "import stores.file\nstores.file.FileStore.CHECKPOINT_BYTES = 4096\n"
    monkeypatch.setattr(crashkit, "WORKER", tiny + crashkit.WORKER)
    report = _crash_kill(f"file:{tmp_path / 'store'}?durability=none", tmp_path, kills=40)
    assert report.kills >= 40, report
    assert len(list((tmp_path / "store" / "index").glob("snapshot.*"))) >= 1


# --------------------------------------------------------------------------- against MemoryStore


def _step(pick: Callable[[str | None], Store], rng: random.Random, known: list[Any], i: int) -> Any:
    """One random operation (the same ``rng`` state, the same operation and outcome).

    ``pick(owner)`` is the store handle to use (the one that claims for ``owner``).
    """
    op = rng.choice(["create", "signal", "decide", "close", "child", "heartbeat", "claim", "read"])
    wid = rng.choice(["a", "b", "C", "\u00e9", "../d"])
    store = pick(None)
    try:
        if op == "create" or not known:
            s = started(wid, run_id=f"r{i}", time=at(i))
            store.create(s, id_reuse=rng.choice(list(IdReusePolicy)))
            known.append(s)
            return ("created", s.run_id)
        s = rng.choice(known)
        n = len(store.read(s.workflow_id, s.run_id))
        b: AppendBatch | None = None
        if op == "read":
            return store.read(s.workflow_id), store.describe(s.workflow_id)
        if op == "signal":
            b = batch(s, signal())
        elif op == "decide":
            expected = rng.choice([n, n - 1, n + 1])
            b = batch(s, wtc(expected, f"d{i}"), scheduled(i), expected=expected)
        elif op == "close":
            status = rng.choice([Status.COMPLETED, Status.FAILED, Status.TERMINATED])
            events = [closer(status, at(i))]
            if status is not Status.TERMINATED:  # a decision closes it
                events.insert(0, wtc(n, f"x{i}"))
            b = batch(s, *events, expected=None if len(events) == 1 else n)
        elif op == "child":
            kid = started(rng.choice(["k1", "k2", "a"]), run_id=f"k{i}", parent=link(s, i))
            b = batch(
                s, wtc(n, f"c{i}"), child_started(i, kid.workflow_id), expected=n, starts=[kid]
            )
        elif op == "heartbeat":
            return store.heartbeat(ref(s), rng.choice([1, i]), Json(text=str(i)))
        if b is not None:
            return [type(r.error) if r.error else r.index for r in store.append([b])]
        owner = rng.choice(["A", "B"])
        got = pick(owner).claim(owner, now=at(i), limit=1000)
        for r in sorted(got.runs, key=lambda r: (r.workflow_id, r.run_id)):
            if rng.random() < 0.7:
                other = rng.choice(["A", "B"])
                pick(other).release(other, r, not_before=at(i + 5), blocked=rng.choice([None, "x"]))
        return sorted((r.workflow_id, r.run_id) for r in got.runs), got.next_due
    except Exception as exc:  # the same refusal from both
        return type(exc)


def _state(store: Store) -> Any:
    infos = sorted(store.runs(), key=lambda i: (i.id, i.run_id))
    return infos, [store.read(i.id, i.run_id) for i in infos], store.list(page_size=3).counts


@pytest.mark.parametrize("handles", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_the_memory_store(
    root: pathlib.Path, seed: int, handles: int
) -> None:
    """The same random operations on a MemoryStore and on one or two FileStore handles."""
    memory = MemoryStore()
    files = [FileStore(root, durability="none") for _ in range(handles)]
    toss = random.Random(-seed)

    def pick(owner: str | None) -> Store:
        if owner is not None:
            return files[("A", "B").index(owner) % handles]
        return files[toss.randrange(handles)]

    try:
        mine: list[Any] = []
        theirs: list[Any] = []
        rng_m, rng_f = random.Random(seed), random.Random(seed)
        for i in range(1, 160):
            expected = _step(lambda _owner: memory, rng_m, theirs, i)
            assert _step(pick, rng_f, mine, i) == expected, i
            if i % 50 == 0:  # and from the disk again (claims end with their handles)
                for k, handle in enumerate(files):
                    handle.close()
                    files[k] = FileStore(root, durability="none")
                for owner in ("A", "B"):
                    memory._drop_owner(owner)
            for handle in files:
                assert _state(handle) == _state(memory), i
    finally:
        for handle in files:
            handle.close()
        memory.close()


def test_os_errors_surface_as_store_errors(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from engine import StoreError

    with FileStore(tmp_path / "store", durability="none") as store:
        store.create(started("disk-full"))

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(StoreError, match="No space left") as info:
            store.create(started("another"))
        assert isinstance(info.value.__cause__, OSError)
        monkeypatch.undo()
        assert [i.id for i in store.list().items] == ["disk-full"]
