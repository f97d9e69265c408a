"""GC while a worker writes: exactly the unreferenced old blobs go, nothing a run needs.

The grace period matters: with ``grace=0`` this test fails, because a blob put
just before the mark began and referenced just after its run was read is
neither marked nor young.  Two seconds cover a worker's put-then-append here.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from cas import FileCAS, gc
from engine import Client, PayloadCodec, ScheduleActivity, Worker, activity, workflow
from engine.events import cas_digests
from stores.file import FileStore

CHUNK = 80 * 1024  # above the 64 KiB offload threshold


def blob_text(seed: int) -> str:
    return random.Random(seed).randbytes(CHUNK // 2).hex()


@activity
def produce(seed: int) -> str:
    time.sleep(0.002)  # let GC passes interleave with the writes
    return blob_text(seed)


@workflow
def pipeline(first: int, second: int):
    a = yield ScheduleActivity(produce, first)
    b = yield ScheduleActivity(produce, second)
    return [len(a), len(b), a[:8], b[:8]]


def _age(cas_dir: Path, digest: str, seconds: float) -> None:
    hexdigest = digest.split(":", 1)[1]
    (path,) = (p for p in cas_dir.rglob(hexdigest) if p.is_file())
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_gc_while_a_worker_writes_removes_exactly_the_unreferenced_blobs(tmp_path: Path) -> None:
    codec = PayloadCodec()  # offload above 64 KiB, no compression: one blob per result
    cas_dir = tmp_path / "cas"
    with FileStore(tmp_path / "store") as store, FileCAS(cas_dir) as blobs:
        # old garbage: blobs no history references, last put an hour ago
        orphans = [blobs.put(os.urandom(1000 + i)) for i in range(5)]
        for digest in orphans:
            _age(cas_dir, digest, 3600)

        client = Client(store, cas=blobs, codec=codec)
        ids = [client.start(pipeline, 2 * i, 2 * i + 1, id=f"p-{i}") for i in range(12)]

        worker = Worker(store, [pipeline], [produce], cas=blobs, codec=codec, poll_interval=0.01)
        runner = threading.Thread(target=worker.run)
        runner.start()
        reports = []
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reports.append(gc(store, blobs, grace=2.0))
                if all(client.describe(i).status.value == "COMPLETED" for i in ids):
                    break
        finally:
            worker.stop()
            runner.join(timeout=30)
        final = gc(store, blobs, grace=2.0)

        assert len(reports) >= 2, "GC should have run while the worker wrote"
        deleted = {d for r in [*reports, final] for d in r.deleted}
        assert deleted == set(orphans)
        assert not any(r.missing for r in [*reports, final])
        for wid in ids:
            result = client.result(wid, timeout=10)
            assert result[0] == result[1] == CHUNK
        referenced = set()
        for info in store.runs():
            referenced |= set(cas_digests(store.read(info.id, info.run_id)))
        # every blob left is referenced: the sweep took exactly the garbage
        assert set(blobs) == referenced
        assert len(referenced) == 2 * len(ids)


def test_gc_refuses_to_sweep_past_a_run_it_cannot_read(tmp_path: Path) -> None:
    """A log whose first line is damaged cannot be listed: GC must not take that as
    'no references' and sweep the blobs the rest of the log points to."""
    import pytest

    from engine import CorruptionError

    codec = PayloadCodec()
    cas_dir = tmp_path / "cas"
    with FileStore(tmp_path / "store") as store, FileCAS(cas_dir) as blobs:
        client = Client(store, cas=blobs, codec=codec)
        client.start(pipeline, 1, 2, id="damaged")
        Worker(store, [pipeline], [produce], cas=blobs, codec=codec).run_until_idle()
        referenced = set(blobs)
        assert len(referenced) == 2
    for digest in referenced:
        _age(cas_dir, digest, 3600)
    (log,) = (tmp_path / "store" / "runs").rglob("*.log")
    data = bytearray(log.read_bytes())
    data[20] ^= 0x01  # the first line: the run's WorkflowStarted
    log.write_bytes(bytes(data))
    with FileStore(tmp_path / "store") as store, FileCAS(cas_dir) as blobs:
        with pytest.raises(CorruptionError, match="damaged"):
            gc(store, blobs, grace=0)
        assert set(blobs) == referenced  # nothing swept
