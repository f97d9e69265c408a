"""AzureBlobStore against Azurite: the store conformance suite (a container per test), and
what only Azure has: blob names, segment rollover, conditional appends racing across
handles, lost replies, partition leases, ``stores.open("azure://...")``, outages.

Azurite is started by the ``azurite`` fixtures (``tests/azurite.py``); without
``npm ci`` these tests are skipped (and fail under ``TPP_REQUIRE_AZURITE``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobLeaseClient, ContainerClient

import stores
from cas.azure import _check_prefix
from engine import (
    Client,
    ConflictError,
    CorruptionError,
    ScheduleActivity,
    Status,
    StoreError,
    VirtualClock,
    Worker,
    WorkflowNotFoundError,
    activity,
    workflow,
)
from engine.events import (
    ActivityCompleted,
    Event,
    Json,
    MarkerRecorded,
    SignalReceived,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTaskCompleted,
    with_index,
)
from stores import RunRef, Store
from stores import _azure_format as fmt
from stores._azure_blobs import Moved, Unsure
from stores._azure_url import parse_store_url
from stores.azure import AzureBlobStore
from tests.azurite import ACCOUNT_KEY, Azurite
from tests.store_conformance import (
    NASTY_IDS,
    NULL,
    T0,
    StoreConformance,
    append_fails,
    append_ok,
    at,
    batch,
    child_started,
    claimed,
    close,
    decide,
    kinds,
    length,
    link,
    ref,
    scheduled,
    signal,
    started,
    timer,
    wtc,
)

#: Small settings that keep the suite quick: few partitions, short leases and segments.
LEASE = 15
FAST: dict[str, Any] = {"partitions": 2, "lease_seconds": LEASE, "segment_blocks": 20}


def make(azurite: Azurite, container: str, **options: Any) -> AzureBlobStore:
    return AzureBlobStore(azurite.connection_string, container, **{**FAST, **options})


class TestAzureBlobStore(StoreConformance):
    """The suite, with ``reopen`` (everything lives in blobs) and ``crashes``.

    ``crashes``: a batch is one block unless it is larger than ``max_block``; then
    a crash between its blocks leaves it torn (``tear_last_batch`` leaves exactly
    that: the last batch re-framed in parts, only the first one written), and
    readers drop it.  ``test_a_crash_inside_a_large_batch_*`` below does it for real.

    ``shared``: a second handle is another process's view.  Handles scan at every
    claim here (``poll_interval=0``), as the suite expects what one handle did to
    be visible to the other's next call; a handle above its fair share of
    partitions hands one back when its owner releases the last run it held there.
    """

    reopen = True
    shared = True
    crashes = True

    @pytest.fixture
    def make_store(self, azurite: Azurite) -> Callable[[], Store]:
        container = azurite.new_container("st")
        self._container = ContainerClient.from_connection_string(
            azurite.connection_string, container
        )
        return lambda: make(azurite, container, poll_interval=0)

    def tear_last_batch(self, store: Store, run: RunRef) -> None:
        names = fmt.Names("")
        client = self._container
        [props] = [
            p
            for p in client.list_blobs(names.id_dir(run.workflow_id), include=["metadata"])
            if fmt.started_from_meta(p.metadata).run_id == run.run_id  # type: ignore[union-attr]
        ]
        blob = client.get_blob_client(props.name)
        data = blob.download_blob().readall()
        batches, _ = fmt.frames(data, 0, str)
        last = batches[-1]
        parts = fmt.pack_frames(last.batch, last.payload, len(last.payload) // 2 + 160)
        assert len(parts) >= 2
        blob.delete_blob()
        blob.create_append_blob(metadata=props.metadata)
        for b in batches[:-1]:
            blob.append_block(data[b.start : b.end])
        blob.append_block(parts[0])  # the crash came before the second block
        client.close()

    @pytest.mark.ci  # NB: 2,000 starts and terminations, ~10,000 sequential requests
    def test_claim_ignores_closed_runs(self, store: Store) -> None:
        super().test_claim_ignores_closed_runs(store)


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.new_container("sa")


@pytest.fixture
def store(azurite: Azurite, container: str) -> Iterator[AzureBlobStore]:
    with make(azurite, container) as handle:
        yield handle


# ------------------------------------------------------------------- offline: names, URLs, frames

OFFLINE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)


def test_blob_names_are_injective_hash_prefixed_and_within_azures_limit() -> None:
    names = fmt.Names(_check_prefix("p" * 200 + "/" + "q" * 311))  # the longest prefix: 512
    ids = [*NASTY_IDS, "x" * 100_000, "\ud800", "\udfff\ud800"]
    dirs = [names.id_dir(wid) for wid in ids]
    assert len(set(dirs)) == len(ids)
    longest = [names.segment(wid, 99_999_999, 9_999) for wid in ids] + [
        names.heartbeat(wid, 99_999_999, 2**63) for wid in ids
    ]
    assert max(len(n) for n in longest) <= 1024
    for wid, d in zip(ids, dirs, strict=True):
        shard = d[len(names.histories) :].split("/")[0]
        assert shard == fmt.id_hash(wid)[:3]
        assert all(ord(c) < 128 and c not in "\\?#" for c in d)
    queue = names.checkpoint("a/b\x00", 3)
    assert queue.endswith("/0003.ckpt") and "a/b" not in queue
    assert fmt.Names.run_ordinal(names.segment("w", 12, 0)) == 12
    assert fmt.Names.run_ordinal(names.segment("w", 12, 1)) is None


def test_partitions_hash_queue_and_id_apart() -> None:
    spread = {fmt.partition_of("default", f"w{i}", 64) for i in range(2000)}
    assert spread == set(range(64))
    assert fmt.partition_of("a", "bc", 1 << 30) != fmt.partition_of("ab", "c", 1 << 30)


def test_frames_drop_torn_batches_and_refuse_damage() -> None:
    big = bytes(range(256)) * 8
    a = fmt.pack_frames("a", big, 512)
    b = fmt.pack_frames("b", b"small", 512)
    c = fmt.pack_frames("c", big, 512)
    assert len(a) > 1 and len(b) == 1
    data = b"".join([*a[:2], *b, *c])  # a torn after two parts, then b and c whole
    done, resume = fmt.frames(data, 100, lambda: "blob")
    assert [(x.batch, x.payload) for x in done] == [("b", b"small"), ("c", big)]
    assert resume == 100 + len(data)
    done, resume = fmt.frames(b"".join([*b, *a[:2]]), 0, lambda: "blob")
    assert [x.batch for x in done] == ["b"] and resume == len(b[0])  # a may still be written
    flipped = bytearray(b"".join(b))
    flipped[-1] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        fmt.frames(bytes(flipped), 0, lambda: "blob")
    with pytest.raises(CorruptionError, match="no frame"):
        fmt.frames(b"garbage!" * 3, 0, lambda: "blob")


def test_values_with_lone_surrogates_round_trip() -> None:
    s = started("\ud800x", type="t\udfff")
    assert fmt.decode(fmt.encode(s), type(s)) == s
    meta = fmt.started_meta(s)
    assert fmt.started_from_meta(meta) == s
    assert all(v.isascii() for v in meta.values())


@pytest.mark.parametrize(
    ("url", "account", "container", "options"),
    [
        (
            "azure://runs?connection_string=UseDevelopmentStorage%3Dtrue&partitions=16",
            "UseDevelopmentStorage=true",
            "runs",
            {"partitions": 16, "prefix": ""},
        ),
        (
            "azure://runs/team/a?connection_string=A%3D1&lease_seconds=20&poll_interval=0.5"
            "&retries=0&read_timeout=1&api_version=2025-11-05",
            "A=1",
            "runs",
            {
                "prefix": "team/a",
                "lease_seconds": 20,
                "poll_interval": 0.5,
                "retries": 0,
                "read_timeout": 1.0,
                "api_version": "2025-11-05",
            },
        ),
    ],
)
def test_store_urls(url: str, account: str, container: str, options: dict[str, Any]) -> None:
    assert parse_store_url(url) == (account, container, options)


def test_store_url_account_form_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    account, container, options = parse_store_url(
        "azure://acct.blob.core.windows.net/runs/pre?partitions=8"
    )
    assert (account, container, options["prefix"], options["partitions"]) == (
        "https://acct.blob.core.windows.net",
        "runs",
        "pre",
        8,
    )
    assert isinstance(options["credential"], AzureNamedKeyCredential)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    bad = {
        "azure://runs": "needs a connection string",
        "azure://runs?colour=blue": "unknown or repeated",
        "azure://runs?partitions=many&connection_string=a%3Db": "not a number",
        "azure://acct.blob.core.windows.net": "names no container",
        "azure://acct.blob.core.windows.net/c?connection_string=a%3Db": "goes with",
        "azure:runs": "looks like",
    }
    for url, message in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_store_url(url)
    with pytest.raises(ValueError, match="needs a connection string") as caught:
        stores.open("azure://runs?partitions=8")
    assert "partitions" not in str(caught.value)  # the query may hold a key: never shown
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", OFFLINE)
    with stores.open("azure://runs-x?partitions=8") as opened:
        assert isinstance(opened, AzureBlobStore) and opened.partitions == 8


@pytest.mark.parametrize(
    "bad",
    [
        {"partitions": 0},
        {"lease_seconds": 10},
        {"lease_seconds": 61},
        {"segment_blocks": 45_001},
        {"max_block": 5 << 20},
        {"retries": -1},
        {"sweep_interval": 0},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AzureBlobStore(OFFLINE, "runs", **bad)
    with pytest.raises(ValueError, match="container"):
        AzureBlobStore(OFFLINE, "No_Such")


# --------------------------------------------------------------------------- on Azurite


def blob_names(store: AzureBlobStore, prefix: str) -> list[str]:
    return sorted(p.name[len(prefix) :] for p in store._blobs.list(prefix))


def test_long_histories_roll_over_into_segments(azurite: Azurite, container: str) -> None:
    s = started("long")
    with make(azurite, container) as a:  # segment_blocks=20
        a.create(s)
        for i in range(45):
            append_ok(a, batch(s, signal(str(i))))
        assert decide(a, s) == 46
        assert blob_names(a, a._names.id_dir("long")) == [
            "00000000",
            "00000000.0001",
            "00000000.0002",
        ]
    with make(azurite, container) as b:
        events = b.read("long")
        assert [e.name for e in events[1:46]] == [str(i) for i in range(45)]  # type: ignore[attr-defined]
        assert [e.index for e in events] == list(range(47))
        append_fails(b, batch(s, wtc(46), expected=46), ConflictError)
        assert append_ok(b, batch(s, wtc(47), expected=47)) == 47


def test_handles_racing_on_one_run(azurite: Azurite, container: str) -> None:
    """Four handles (as four processes): two decide, two signal; the positions settle it."""
    handles = [make(azurite, container) for _ in range(4)]
    try:
        s = started("race")
        handles[0].create(s)

        def decider(h: AzureBlobStore, t: int) -> int:
            won = 0
            for i in range(12):
                n = length(h, s)
                mark = MarkerRecorded(time=T0, name="m", change_id=f"d{t}-{i}")
                [r] = h.append([batch(s, wtc(n, f"d{t}-{i}"), mark, expected=n)])
                assert r.ok or isinstance(r.error, ConflictError), r.error
                won += r.ok
            return won

        def signaller(h: AzureBlobStore, t: int) -> int:
            for i in range(12):
                append_ok(h, batch(s, signal(request_id=f"{t}-{i}")))
            return 0

        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(decider, handles[0], 0),
                pool.submit(decider, handles[1], 1),
                pool.submit(signaller, handles[2], 2),
                pool.submit(signaller, handles[3], 3),
            ]
            won = sum(f.result() for f in futures)
        events = handles[3].read("race")
        assert [e.index for e in events] == list(range(len(events)))
        got = sorted(e.request_id for e in events if isinstance(e, SignalReceived))
        assert got == sorted(f"{t}-{i}" for t in (2, 3) for i in range(12))
        decisions = [e for e in events if isinstance(e, WorkflowTaskCompleted)]
        assert len(decisions) == won >= 2
        previous = -1
        for d in decisions:
            assert d.seen > previous and d.seen <= d.index
            following = events[d.index + 1]
            assert isinstance(following, MarkerRecorded) and following.change_id == d.batch_id
            previous = d.index
    finally:
        for h in handles:
            h.close()


@pytest.mark.parametrize("lost", ["timeout after landing", "412 after landing", "before landing"])
def test_a_lost_reply_is_settled_by_reading_back(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """A reply lost after the block landed (or a request that never did): one copy, found by
    one ranged read from the known length."""
    store = make(azurite, container)
    s = started("lost")
    store.create(s)
    append_ok(store, batch(s, signal()))  # NB: a ranged read of an empty blob costs two
    n = length(store, s)
    real = store._blobs.append
    faults = [lost]

    def flaky(name: str, data: bytes, position: int | None) -> tuple[int, str]:
        fault = faults.pop() if faults and position is not None else None
        if fault == "before landing":
            raise Unsure("the request timed out (simulated)")
        result = real(name, data, position)
        if fault == "timeout after landing":
            raise Unsure("the reply was lost (simulated)")
        if fault == "412 after landing":
            raise Moved  # what the SDK's own retry of a landed append reports
        return result

    monkeypatch.setattr(store._blobs, "append", flaky)
    reads = store.requests.snapshot().get("Get Blob", 0)
    assert append_ok(store, batch(s, wtc(n), scheduled(1), expected=n)) == 2
    assert not faults
    assert store.requests.snapshot().get("Get Blob", 0) - reads == 1  # the read-back
    store.close()
    with make(azurite, container) as other:
        assert kinds(other.read("lost")) == [
            "WorkflowStarted",
            "SignalReceived",
            "WorkflowTaskCompleted",
            "ActivityScheduled",
        ]


def ids_in(partition: int, count: int, partitions: int = 2) -> list[str]:
    """Workflow ids of the default queue that hash into ``partition``."""
    ids = (f"w{i}" for i in range(10_000))
    return [i for i in ids if fmt.partition_of("default", i, partitions) == partition][:count]


def test_a_busy_partition_is_drained_then_handed_over(azurite: Azurite, container: str) -> None:
    """A handle above its fair share, with every partition leased, drains one: it hands
    out no more of its runs, and changes hands when its last claimed run is released."""
    a, b = make(azurite, container, poll_interval=0), make(azurite, container, poll_interval=0)
    (x0a, x0b), (x1,) = [started(i) for i in ids_in(0, 2)], [started(i) for i in ids_in(1, 1)]
    for s in (x0a, x0b, x1):
        a.create(s)
    assert claimed(a, "A", limit=100) == {ref(x0a), ref(x0b), ref(x1)}
    assert claimed(b, "B") == set()  # every partition is leased: b waits for one of a's
    a.release("A", ref(x0b))  # a sees b now; partition 0 (just released from) drains
    assert [part.p for part in a._parts.held.values() if part.draining] == [0]
    assert claimed(a, "A2") == set()  # x0b is due, but its partition is draining
    assert claimed(b, "B") == set()  # ... and still a's: x0a is claimed there
    a.release("A", ref(x0a))
    assert claimed(b, "B") == {ref(x0a), ref(x0b)}
    assert sorted(part.p for part in a._parts.held.values()) == [1]  # a keeps its share
    assert claimed(a, "A2") == set()
    assert a.renew("A") == [ref(x1)]
    a.close()  # graceful: checkpoints saved, leases released, presence gone
    assert claimed(b, "B2") == {ref(x1)}
    assert length(b, x1) == 1
    b.close()


def test_a_drain_that_outlasts_a_lease_gives_way(azurite: Azurite, container: str) -> None:
    """A partition kept busy by a long activity serves its due runs again after a lease;
    another partition drains instead."""
    a, b = make(azurite, container, poll_interval=0), make(azurite, container, poll_interval=0)
    (x0a, x0b), (x1,) = [started(i) for i in ids_in(0, 2)], [started(i) for i in ids_in(1, 1)]
    for s in (x0a, x0b, x1):
        a.create(s)
    assert claimed(a, "A", limit=100) == {ref(x0a), ref(x0b), ref(x1)}
    assert claimed(b, "B") == set()
    a.release("A", ref(x0b))  # partition 0 drains; x0a's activity runs on and on
    assert claimed(a, "A2") == set()
    [part] = [part for part in a._parts.held.values() if part.draining]
    part.draining -= LEASE + 1  # a lease later
    assert claimed(a, "A2") == {ref(x0b)}  # served again; partition 1 drains now
    assert [part.p for part in a._parts.held.values() if part.draining] == [1]
    a.release("A", ref(x1))
    assert claimed(b, "B") == {ref(x1)}
    a.close()
    b.close()


def test_a_lone_handle_keeps_its_idle_partitions(azurite: Azurite, container: str) -> None:
    """Nobody else wants them: no lease is released and taken again round after round."""
    a = make(azurite, container, poll_interval=0)
    s = started("w")
    a.create(s)
    assert claimed(a, "A") == {ref(s)}
    a.release("A", ref(s))
    before = a.requests.snapshot()
    for _ in range(5):
        assert claimed(a, "A", now=T0) == {ref(s)}
        a.release("A", ref(s))
    used = a.requests.since(before)
    assert set(used) <= {"List Blobs"}, used  # a scan per claim (poll_interval=0), nothing else
    assert len(a._parts.held) == 2
    a.close()


def test_a_remote_signal_costs_one_read_each_side(azurite: Azurite, container: str) -> None:
    """A signal from a handle that does not hold the run's partition: the sender reads the
    run once (``describe``: no List Blobs for a run it knows running) and appends it and a
    Touch; the Touch carries the batch, so the holder reads its inbox, not the history."""
    holder, sender = make(azurite, container, poll_interval=0), make(azurite, container)
    s = started("w")
    sender.create(s)
    assert claimed(holder, "A") == {ref(s)}
    decide(holder, s, scheduled(1))
    holder.release("A", ref(s))
    for payload, history_reads in ((NULL, 0), (Json(text='"' + "x" * 20_000 + '"'), 1)):
        sent, held = sender.requests.snapshot(), holder.requests.snapshot()
        info = sender.describe("w")
        append_ok(sender, batch(s, SignalReceived(time=T0, name="go", payload=payload)))
        assert sender.requests.since(sent) == {"Get Blob": 1, "Append Block": 2}
        assert claimed(holder, "A") == {ref(s)}
        # the inbox, and the history only when the batch was too large to come along
        assert holder.requests.since(held) == {"List Blobs": 1, "Get Blob": 1 + history_reads}
        assert holder.read("w") == sender.read("w")
        assert len(holder.read("w")) == info.history_length + 1
        holder.release("A", ref(s))
    holder.close()
    sender.close()


def break_leases(store: AzureBlobStore, queue: str = "default") -> None:
    """What a handle's death looks like a lease later: its leases and presence are gone."""
    prefix = store._names.queue_dir(queue)
    for props in list(store._blobs.list(prefix)):
        blob = store._client.get_blob_client(props.name)
        if props.name.endswith(".ckpt") and props.lease.state == "leased":
            BlobLeaseClient(blob).break_lease(lease_break_period=0)
        elif "/w/" in props.name:
            blob.delete_blob()


def test_a_dead_handles_partitions_are_taken_over(azurite: Azurite, container: str) -> None:
    a, b = make(azurite, container, poll_interval=0), make(azurite, container, poll_interval=0)
    runs = [started(f"w{i}") for i in range(6)]
    for s in runs:
        a.create(s)
    assert claimed(a, "A", limit=100) == {ref(s) for s in runs}
    decide(a, runs[0], scheduled(1))  # a's worker was running activity 1 when it died
    break_leases(a)  # ... and the lease ran out
    assert claimed(b, "B", limit=100) == {ref(s) for s in runs}
    assert b.list(page_size=1).counts == {Status.RUNNING: 6}
    n = length(b, runs[0])
    append_ok(b, batch(runs[0], ActivityCompleted(time=T0, seq=1, result=NULL), wtc(n + 1),
                       expected=n))  # fmt: skip
    # the zombie: what it decides on its old view loses; at its next renewal it lets go
    append_fails(a, batch(runs[0], wtc(n), timer(2, at(5)), expected=n), ConflictError)
    for part in a._parts.held.values():
        part.renewed -= LEASE / 3
    assert a.renew("A") == []
    a.close()
    b.close()


def heartbeat_blobs(store: AzureBlobStore) -> list[str]:
    return [props.name for props in store._blobs.list(f"{store._names.prefix}b/")]


def test_a_closed_runs_heartbeat_slots_are_deleted(azurite: Azurite, container: str) -> None:
    """Closing deletes the slots its handle wrote (one Delete Blob each, no listing); a
    handle that took the run over lists it once for slots its predecessor wrote."""
    a, b = make(azurite, container, poll_interval=0), make(azurite, container, poll_interval=0)
    quiet, written, taken = started("quiet"), started("written"), started("taken")
    for s in (quiet, written, taken):
        a.create(s)
    assert claimed(a, "A", limit=100) == {ref(quiet), ref(written), ref(taken)}
    for s in (quiet, written, taken):
        decide(a, s, scheduled(1), scheduled(2))
    a.heartbeat(ref(written), 1, Json(text="1"))
    a.heartbeat(ref(written), 2, Json(text="2"))
    a.heartbeat(ref(taken), 1, Json(text="3"))
    assert len(heartbeat_blobs(a)) == 3
    before = a.requests.snapshot()
    close(a, quiet, Status.COMPLETED)  # no heartbeats: nothing to delete, nothing asked
    assert a.requests.since(before) == {"Append Block": 1, "Set Blob Metadata": 1}
    before = a.requests.snapshot()
    close(a, written, Status.FAILED)
    assert a.requests.since(before) == {
        "Append Block": 1, "Set Blob Metadata": 1, "Delete Blob": 2
    }  # fmt: skip
    assert len(heartbeat_blobs(a)) == 1
    break_leases(a)  # a died: b takes its partitions over
    assert claimed(b, "B", limit=100) == {ref(taken)}
    before = b.requests.snapshot()
    close(b, taken, Status.CANCELLED)
    assert b.requests.since(before) == {
        "Append Block": 1, "Set Blob Metadata": 1, "List Blobs": 1, "Delete Blob": 1
    }  # fmt: skip
    assert heartbeat_blobs(b) == []
    a.close()
    b.close()


def test_inbox_segments_are_sealed_and_a_new_holder_rebuilds(
    azurite: Azurite, container: str
) -> None:
    options: dict[str, Any] = {"partitions": 1, "inbox_blocks": 4, "poll_interval": 0}
    client = make(azurite, container, **options)
    first = [started(f"a{i}") for i in range(9)]
    with make(azurite, container, **options) as a:
        for i, s in enumerate(first):
            client.create(s)  # a Start record each, in the partition's inbox
            if i % 3 == 2:
                assert ref(s) in claimed(a, "A", limit=100)
        for s in first[:5]:
            decide(a, s, timer(1, at(60)))
        a.release("A", ref(first[0]))
    later = [started(f"b{i}") for i in range(6)]
    for s in later:
        client.create(s)
    names = blob_names(client, client._names.queue_dir("default"))
    inboxes = [n for n in names if ".in." in n]
    assert len(inboxes) >= 2, names  # sealed by a, which wrote its last checkpoint on close
    with make(azurite, container, **options) as b:
        got = b.claim("B", now=T0, limit=100)
        assert set(got.runs) == {ref(s) for s in first[5:] + later}
        assert got.next_due == at(60)
        assert claimed(b, "B", now=at(60), limit=100) == {ref(s) for s in first[:5]}
    sealed = [
        p.name for p in client._blobs.list(client._names.queue_dir("default"))
        if ".in." in p.name and p.lease.duration == "infinite"
    ]  # fmt: skip
    assert len(sealed) >= 2, sealed  # and by b, reading what came since
    client.close()


def test_the_partition_count_is_fixed_when_the_store_is_made(
    azurite: Azurite, container: str
) -> None:
    with make(azurite, container) as a:
        a.create(started("w"))
    with make(azurite, container, partitions=8) as b, pytest.raises(ValueError, match="=2"):
        b.create(started("x"))


def _timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    began = time.monotonic()
    with pytest.raises(StoreError) as caught:
        call()
    return caught.value, time.monotonic() - began


def test_an_outage_is_a_store_error_within_seconds(
    azurite_factory: Callable[[], Azurite],
) -> None:
    """Azurite stopped: every call fails with StoreError in a few seconds; restarted, the
    same handle carries on."""
    emulator = azurite_factory()
    with AzureBlobStore(emulator.connection_string, "outage", **FAST) as store:
        s = started("w")
        store.create(s)
        assert claimed(store, "A") == {ref(s)}
        decide(store, s, scheduled(1))
        assert emulator.stop() == 0
        calls: list[Callable[[], object]] = [
            lambda: store.create(started("x")),
            lambda: store.describe("an-id-it-never-saw"),
            lambda: store.heartbeat(ref(s), 1, NULL),
        ]
        for call in calls:
            error, took = _timed(call)
            assert took < 5.0, (error, took)
            assert "cannot reach the storage endpoint" in str(error), error
        # a run of a partition it holds (lease still good): answered from what it holds
        assert store.describe("w").history_length == length(store, s)
        began = time.monotonic()
        [result] = store.append([batch(s, signal())])
        assert isinstance(result.error, StoreError) and time.monotonic() - began < 5.0
        emulator.start()
        append_ok(store, batch(s, signal("after")))
        assert kinds(store.read("w"))[-1] == "SignalReceived"
        assert store.heartbeat(ref(s), 1, NULL) == NULL
        assert store.renew("A") == [ref(s)]


def test_requests_per_activity_of_a_sequential_workflow(azurite: Azurite, container: str) -> None:
    """AZURE.md's W1: 100 sequential activities cost one Append Block each, plus the start."""
    store = make(azurite, container, segment_blocks=40_000)
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, workflows=[w_chain], activities=[w_step], clock=clock)
    worker.run_until_idle()  # take the partitions first: that is background, not per activity
    before = store.requests.snapshot()
    wid = client.start(w_chain, 100)
    worker.run_until_idle()
    assert client.result(wid) == 4950
    used = store.requests.since(before)
    appends = used.pop("Append Block")
    assert 101 <= appends <= 103, used  # 101 history batches, the Start record
    assert sum(used.values()) <= 6, used  # create, list (result), metadata (close)...
    assert (appends + sum(used.values())) / 100 <= 1.1
    store.close()


@activity
def w_step(i: int) -> int:
    return i


@workflow
def w_chain(n: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(n):
        total += yield ScheduleActivity(w_step, i)
    return total


class _Crash(BaseException):
    """The process died here (not an error any code may catch)."""


def test_a_crash_inside_a_large_batch_leaves_it_out(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch above ``max_block`` takes several blocks: a crash after the first leaves a
    torn batch, which every reader drops, and the next append lands after it."""
    s = started("big")
    a = make(azurite, container, max_block=1024)
    a.create(s)
    append_ok(a, batch(s, signal("before")))
    real = a._blobs.append
    blocks: list[bytes] = []

    def dies_after_one_block(name: str, data: bytes, position: int | None) -> tuple[int, str]:
        if blocks:
            raise _Crash
        blocks.append(data)
        return real(name, data, position)

    monkeypatch.setattr(a._blobs, "append", dies_after_one_block)
    big = MarkerRecorded(time=T0, name="m", change_id="x" * 5000)
    with pytest.raises(_Crash):
        a.append([batch(s, wtc(2), big, expected=2)])
    assert len(blocks) == 1
    a._client.close()  # the process is gone: nothing handed back
    with make(azurite, container, max_block=1024) as b:
        assert kinds(b.read("big")) == ["WorkflowStarted", "SignalReceived"]
        assert claimed(b, "B") == {ref(s)}
        assert append_ok(b, batch(s, wtc(2), big, expected=2)) == 2  # after the torn part
        assert b.read("big", after=3) == [with_index(big, 3)]
    with make(azurite, container) as c:
        assert kinds(c.read("big"))[-2:] == ["WorkflowTaskCompleted", "MarkerRecorded"]


@pytest.mark.parametrize("kind", ["continue-as-new", "child"])
def test_a_start_cut_short_by_a_crash_is_finished_by_the_holder(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The batch that starts a run lands before the run is created: a handle that dies in
    between leaves a Start record, and the partition's holder creates the run."""
    a = make(azurite, container)
    p = started("p")
    a.create(p)
    if kind == "child":
        new = started("kid", parent=link(p, 1))
        event: Event = child_started(1, "kid")
    else:
        new = started("p", continued_from=link(p))
        event = WorkflowContinuedAsNew(time=T0, input=NULL, new_run_id=new.run_id)

    def crash(started: WorkflowStarted) -> None:
        raise _Crash

    monkeypatch.setattr(a, "_start_from", crash)
    with pytest.raises(_Crash):
        a.append([batch(p, wtc(1), event, expected=1, starts=[new])])
    a._client.close()  # the process is gone
    with make(azurite, container, poll_interval=0) as b:
        with pytest.raises(WorkflowNotFoundError):
            b.describe(new.workflow_id, new.run_id)
        assert claimed(b, "B", limit=10) == {ref(new)}
        assert b.describe(new.workflow_id).run_id == new.run_id
        assert b.read(new.workflow_id) == [with_index(new, 0)]


def test_import_stores_never_imports_the_azure_sdk() -> None:
    code = "import sys, stores; print(any(m.startswith('azure') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert stores.AzureBlobStore is AzureBlobStore
    assert "AzureBlobStore" in dir(stores)


def test_a_signal_whose_touch_was_lost_is_found_by_the_sweeper(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = make(azurite, container, poll_interval=0, sweep_interval=1.5)
    other = make(azurite, container)
    s = started("w")
    holder.create(s)
    assert claimed(holder, "A") == {ref(s)}
    decide(holder, s)  # the run waits for a signal
    holder.release("A", ref(s))
    monkeypatch.setattr(other._parts, "write", lambda *args: None)  # died before its Touch
    append_ok(other, batch(s, signal()))
    assert claimed(holder, "A") == set()  # the holder cannot know yet
    time.sleep(1.6)
    assert claimed(holder, "A") == {ref(s)}  # the sweeper read the run again
    holder.close()
    other.close()
