"""cas.gc and cas.verify over MemoryStore and FileStore with MemoryCAS and FileCAS.

Histories reference blobs through ``CasRef`` payloads in every place an event
can hold one: a run's input, activity arguments and results, query results in a
decision, failure details down a cause chain, a closed run's result.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

import cas as cas_pkg
from cas import CAS, FileCAS, MemoryCAS, digest_of, gc, verify
from engine._info import WorkflowInfo
from engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CasRef,
    Failure,
    Payload,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from stores import MemoryStore, Store
from stores.file import FileStore
from tests.cas_conformance import info_of
from tests.store_conformance import NULL, T0, append_ok, batch, length, started
from tests.test_cas_file import corrupt_file, set_modified_file
from tests.test_cas_memory import corrupt_memory, set_modified_memory

HOUR = 3600.0


@dataclass
class Backend:
    cas: CAS
    corrupt: Callable[[CAS, str, bytes], None]
    set_modified: Callable[[CAS, str, float], None]

    def age(self, digest: str, seconds: float = 2 * HOUR) -> None:
        """Make a blob look put ``seconds`` ago."""
        self.set_modified(self.cas, digest, time.time() - seconds)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Store]:
    opened: Store = (
        MemoryStore() if request.param == "memory" else FileStore(tmp_path / "store", "none")
    )
    with opened:
        yield opened


@pytest.fixture(params=["MemoryCAS", "FileCAS"])
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Backend]:
    if request.param == "MemoryCAS":
        with MemoryCAS() as memory:
            yield Backend(memory, corrupt_memory, set_modified_memory)
    else:
        with FileCAS(tmp_path / "cas", durability="none") as files:
            yield Backend(files, corrupt_file, set_modified_file)


def ref(data: bytes) -> CasRef:
    return CasRef(digest=digest_of(data), size=len(data))


def record(store: Store, workflow_id: str, refs: dict[str, CasRef]) -> None:
    """A run whose history references every blob in ``refs``, one place each.

    Keys: ``input``, ``args``, ``query``, ``result``, ``details`` (a failure's
    cause's details), ``output`` (the run's own result; it closes the run).
    """
    s: WorkflowStarted = msgspec.structs.replace(
        started(workflow_id), input=refs.get("input", NULL)
    )
    store.create(s)
    n = length(store, s)
    queries: dict[str, Payload] | None = {"status": refs["query"]} if "query" in refs else None
    decision = WorkflowTaskCompleted(time=T0, seen=n, batch_id=f"{workflow_id}-1", queries=queries)
    scheduled = [
        ActivityScheduled(
            time=T0, seq=seq, activity_type="act", args=refs.get("args", NULL), args_digest=0
        )
        for seq in (1, 2)
    ]
    append_ok(store, batch(s, decision, *scheduled, expected=n))
    append_ok(store, batch(s, ActivityCompleted(time=T0, seq=1, result=refs.get("result", NULL))))
    cause = Failure(type="IOError", message="disk", details=refs.get("details"))
    error = Failure(type="ValueError", message="boom", cause=cause)
    append_ok(store, batch(s, ActivityFailed(time=T0, seq=2, error=error)))
    if "output" in refs:
        n = length(store, s)
        closing = WorkflowCompleted(time=T0, result=refs["output"])
        done = WorkflowTaskCompleted(time=T0, seen=n, batch_id=f"{workflow_id}-2")
        append_ok(store, batch(s, done, closing, expected=n))


PLACES = ["input", "args", "query", "result", "details", "output"]


def populate(store: Store, backend: Backend) -> dict[str, Any]:
    """Referenced blobs in every place (two runs), old and young orphans."""
    cas = backend.cas
    blobs = {place: f"referenced from {place}".encode() for place in PLACES}
    for data in blobs.values():
        cas.put(data)
        backend.age(digest_of(data))
    record(store, "first", {p: ref(blobs[p]) for p in PLACES[:3]})
    record(store, "second", {p: ref(blobs[p]) for p in PLACES[3:]})
    record(store, "third", {"input": ref(blobs["input"])})  # shared with "first"
    old = [cas.put(b"old orphan " * n) for n in (1, 2, 30)]
    for digest in old:
        backend.age(digest)
    young = cas.put(b"young orphan")
    backend.age(young, 60)  # within the grace
    return {"referenced": [digest_of(d) for d in blobs.values()], "old": old, "young": young}


def contents(cas: CAS) -> dict[str, bytes]:
    return {digest: cas.get(digest) for digest in cas}


# --------------------------------------------------------------------------- gc


def test_gc_deletes_exactly_the_unreferenced_blobs_older_than_the_grace(
    store: Store, backend: Backend
) -> None:
    cas = backend.cas
    made = populate(store, backend)
    sizes = {info.digest: info.size for info in cas.blobs()}
    report = gc(store, cas, grace=600)
    assert sorted(report.deleted) == sorted(made["old"])
    assert report.bytes_freed == sum(sizes[d] for d in made["old"])
    assert report.marked == len(PLACES)
    assert report.kept == len(PLACES) + 1
    assert report.missing == []
    assert report.runs_scanned == 3
    assert not report.dry_run
    assert sorted(cas) == sorted([*made["referenced"], made["young"]])
    for digest in made["referenced"]:
        assert cas.get(digest).startswith(b"referenced from ")
    again = gc(store, cas, grace=600)
    assert again.deleted == [] and again.kept == len(PLACES) + 1


def test_a_zero_grace_still_spares_referenced_blobs(store: Store, backend: Backend) -> None:
    made = populate(store, backend)
    report = gc(store, backend.cas, grace=0, now=lambda: time.time() + HOUR)
    assert sorted(report.deleted) == sorted([*made["old"], made["young"]])
    assert sorted(backend.cas) == sorted(made["referenced"])


def test_dry_run_deletes_nothing(store: Store, backend: Backend) -> None:
    made = populate(store, backend)
    before = contents(backend.cas)
    report = gc(store, backend.cas, grace=600, dry_run=True)
    assert report.dry_run
    assert sorted(report.deleted) == sorted(made["old"])
    assert report.bytes_freed == sum(len(before[d]) for d in made["old"])
    assert contents(backend.cas) == before
    assert sorted(gc(store, backend.cas).deleted) == sorted(report.deleted)


def test_missing_referenced_blobs_are_reported(store: Store, backend: Backend) -> None:
    record(store, "lost", {"result": ref(b"never stored"), "details": ref(b"deleted")})
    kept = backend.cas.put(b"deleted")
    backend.cas.delete(kept)
    orphan = backend.cas.put(b"orphan")
    backend.age(orphan)
    report = gc(store, backend.cas)
    assert report.missing == sorted([digest_of(b"never stored"), digest_of(b"deleted")])
    assert report.marked == 2
    assert report.deleted == [orphan]


def test_a_blob_put_or_reput_after_the_mark_began_survives(store: Store, backend: Backend) -> None:
    """A worker re-puts old content (dedup refreshes its time) and puts new content
    while GC marks; neither is referenced by a history GC read, neither is swept."""
    cas = backend.cas
    reput, fresh, orphan = b"old content, referenced again", b"new content", b"orphan"
    for data in (reput, orphan):
        cas.put(data)
        backend.age(digest_of(data))
    record(store, "w", {"input": ref(b"x")})

    def now() -> float:
        start = time.time()
        time.sleep(0.05)  # file systems stamp times with a coarse clock
        cas.put(reput)  # a running worker, during the mark
        cas.put(fresh)
        return start

    report = gc(store, cas, grace=0, now=now)
    assert report.deleted == [digest_of(orphan)]
    assert sorted(cas) == sorted([digest_of(reput), digest_of(fresh)])
    assert info_of(cas, digest_of(reput)).size == len(reput)


class _RacingCAS:
    """Re-puts a blob between GC listing it and GC deleting it."""

    def __init__(self, inner: CAS) -> None:
        self.inner = inner
        self.data = {digest: inner.get(digest) for digest in inner}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def blobs(self) -> Any:
        return self.inner.blobs()

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        self.inner.put(self.data[digest])
        return self.inner.delete(digest, older_than=older_than)


def test_a_blob_reput_during_the_sweep_survives(store: Store, backend: Backend) -> None:
    digest = backend.cas.put(b"wanted again")
    backend.age(digest)
    racing = _RacingCAS(backend.cas)

    def now() -> float:
        start = time.time()
        time.sleep(0.05)
        return start

    report = gc(store, racing, grace=0, now=now)
    assert report.deleted == [] and report.kept == 1
    assert backend.cas.get(digest) == b"wanted again"


class _GoneRunStore:
    """Lists one run more than it holds (a run removed while GC lists them)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def runs(self) -> Iterator[WorkflowInfo]:
        infos = list(self.inner.runs())
        yield msgspec.structs.replace(infos[0], id="removed meanwhile")
        yield from infos


class _RivalCAS(_RacingCAS):
    """Another GC deletes each blob between this GC listing it and deleting it."""

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        self.inner.delete(digest)
        return self.inner.delete(digest, older_than=older_than)

    def get(self, digest: str) -> bytes:
        self.inner.delete(digest)
        return self.inner.get(digest)


def test_runs_and_blobs_that_vanish_while_gc_runs(store: Store, backend: Backend) -> None:
    made = populate(store, backend)
    rival = _RivalCAS(backend.cas)
    report = gc(_GoneRunStore(store), rival, grace=600)
    assert report.runs_scanned == 3
    assert report.deleted == [] and report.bytes_freed == 0  # the rival got there first
    assert report.kept == len(PLACES) + 1
    assert sorted(backend.cas) == sorted([*made["referenced"], made["young"]])


def test_verify_skips_blobs_deleted_while_it_runs(backend: Backend) -> None:
    backend.cas.put(b"a")
    backend.cas.put(b"b")
    report = verify(_RivalCAS(backend.cas))
    assert (report.checked, report.bytes, report.damaged) == (0, 0, [])


def test_gc_removes_stale_temp_files(tmp_path: pathlib.Path) -> None:
    with FileCAS(tmp_path / "cas") as files, MemoryStore() as store:
        stale = files.path / "tmp" / "99-0123456789abcdef.tmp"
        stale.write_bytes(b"a crashed put")
        old = time.time() - 2 * HOUR
        os.utime(stale, (old, old))
        assert gc(store, files, dry_run=True).temp_files_removed == 0
        assert stale.exists()
        assert gc(store, files).temp_files_removed == 1
        assert not stale.exists()


def test_bad_grace() -> None:
    with pytest.raises(ValueError, match="grace"):
        gc(MemoryStore(), MemoryCAS(), grace=-1)


def test_gc_and_verify_are_exported() -> None:
    assert cas_pkg.gc is gc and cas_pkg.verify is verify


# --------------------------------------------------------------------------- verify


def test_verify_reports_exactly_the_damaged_blobs(backend: Backend) -> None:
    cas = backend.cas
    datas = [b"", b"fine", b"also fine" * 100, b"to be flipped", b"to be cut", b"to be swapped"]
    digests = [cas.put(d) for d in datas]
    backend.corrupt(cas, digests[3], b"to be flippeD")
    backend.corrupt(cas, digests[4], b"")
    backend.corrupt(cas, digests[5], b"fine")
    before = {info.digest: info for info in cas.blobs()}
    seen: list[str] = []
    report = verify(cas, progress=lambda info: seen.append(info.digest))
    assert report.checked == len(datas)
    assert report.bytes == sum(len(d) for d in datas[:3])
    assert sorted(d.digest for d in report.damaged) == sorted(digests[3:])
    for damaged in report.damaged:
        assert damaged.digest in damaged.reason and "corrupt" in damaged.reason
    assert not report.ok
    assert sorted(seen) == sorted(digests)
    assert {info.digest: info for info in cas.blobs()} == before  # verify changed nothing
    for digest in digests[:3]:
        cas.get(digest)


def test_verify_of_a_healthy_cas(backend: Backend) -> None:
    assert verify(backend.cas).ok
    digests = [backend.cas.put(bytes([i]) * 1000) for i in range(5)]
    report = verify(backend.cas)
    assert (report.checked, report.bytes, report.damaged) == (5, 5000, [])
    assert report.ok and sorted(backend.cas) == sorted(digests)
