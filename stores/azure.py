"""AzureBlobStore: histories as append blobs, ownership by partition leases (AZURE.md, design B).

Needs the ``azure`` extra (``azure-storage-blob``); ``import stores`` never
imports it.  Any number of worker and client processes, on any number of
machines, share one container.  Tested against Azurite (``tests/azurite.py``)::

    from stores.azure import AzureBlobStore
    with AzureBlobStore(connection_string, "tpp-store") as store:
        ...  # Client(store), Worker(store, ...)

``AzureBlobStore(account, container="tpp-store", *, credential=None, prefix="",
partitions=64, lease_seconds=30, ...)``: ``account`` is a connection string or an
account URL used with ``credential``, as for ``cas.azure.AzureBlobCAS``;
``stores.open("azure://...")`` takes the same URL forms as ``cas.open``.

This module is the protocol's surface; the class is assembled from parts:
``stores._azure_base`` (a handle's state and its cache of runs),
``stores._azure_starts`` (creating runs) and ``stores._azure_appends``
(appending batches and what follows them), over ``stores._azure_runs``
(histories), ``stores._azure_partitions`` (ownership, the ready index) with
``stores._azure_balance`` (fair shares, handover),
``stores._azure_chains`` (the index of runs), ``stores._azure_blobs`` (the
container's operations, errors mapped) and ``stores._azure_format`` (names,
frames, records).

Theory of operation
-------------------

* **Histories** (``stores._azure_runs``): one append blob per run (and more
  segments for long runs), named by a hash, the encoded id and the run's
  ordinal.  Creating ordinal ``n`` with ``If-None-Match: *`` is what makes a run
  exist, after the id's last run was seen closed: one running execution per
  id.  Every append is conditioned on the blob's length, so decisions never
  land on top of each other, external events land at the new end, and a lost
  reply is settled by reading from the known length (each batch carries an id).
* **Ownership** (``stores._azure_partitions``): runs hash by (task queue, id)
  into ``partitions`` partitions per queue; a handle holds partitions by blob
  leases and hands their due runs to its owners (``claim``).  A run's cached
  history is trusted without a request only while the handle holds its
  partition; other handles' appends reach a holder through the partition's
  inbox (``Touch``), within ``poll_interval``.  A Touch says where its batch
  landed and carries its events (up to 16 KiB), so a holder whose copy ends
  there takes the batch without reading the history.  A holder also re-reads
  each open run once per ``sweep_interval`` (600 s), in case a writer died
  before its Touch.
* **Handover**: the handles that claim from a queue share its partitions fairly
  (``ceil(partitions / live handles)`` each, from presence blobs).  A handle
  hands a partition back only when another handle wants it: it holds more than
  its share while no partition is free.  It then *drains* the surplus (hands out
  no more of their runs) and releases each drained partition's lease as soon as
  no owner holds a run of it (at once if idle; a release that empties it
  rebalances within the call).  A handle alone keeps its idle partitions: giving
  them back would only have it lease them again at its next scan, two requests
  per partition for nothing.  ``close()`` hands everything back.
* **Visibility**: segment 0 of each run carries its ``WorkflowStarted`` and, once
  closed, its status in blob metadata, so ``list`` is one List Blobs call per
  5,000 runs (plus one GET per run on the page, for the exact history length and
  due time); ``describe`` is one GET of the id's latest run this handle knows
  while that is still running (an id's next run is created only after its last
  closed), else a List Blobs of the id's runs and a GET.
* **Heartbeats**: one small block blob per activity slot; only a pending
  activity's slot is read back (so completing an activity costs nothing).  When
  a run closes, the handle that sees it close deletes its slots: those it wrote
  or read, plus what one List Blobs call finds if other handles may have
  written some (it did not hold the run since its activities were scheduled),
  so a run without heartbeats costs nothing.  Best effort: slots whose delete
  meets an outage, or a crash, stay behind (a few bytes each).
* Failures: Azure errors become ``StoreError`` (``raise ... from``) naming the
  container and the operation; a call surfaces an outage within a few seconds.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

try:
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
    from azure.storage.blob import BlobServiceClient  # noqa: F401 - the extra is there
except ImportError as exc:  # pragma: no cover - the azure extra is installed in dev
    raise ImportError(
        "AzureBlobStore needs the azure extra: pip install 'temporalpp[azure]' "
        f"(azure-storage-blob): {exc}"
    ) from exc

from cas.azure import _check_container, _check_prefix
from engine._errors import StoreError, WorkflowError
from engine._events import Event, Payload, WorkflowStarted
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

from . import _azure_format as fmt
from ._azure_appends import Appends
from ._azure_base import Key
from ._azure_blobs import MAX_BLOCK, Blobs, container_client
from ._azure_chains import Chains
from ._azure_metrics import RequestCounter
from ._azure_partitions import Partitions
from ._azure_runs import Log, Run
from ._azure_starts import Starts
from ._protocol import AppendBatch, AppendResult, Claims, RunRef
from ._summary import select_page

__all__ = ["AzureBlobStore", "Credential"]

log = logging.getLogger("temporalpp.stores.azure")

#: What ``credential=`` takes (as the Azure SDK does).
Credential = (
    str | dict[str, str] | AzureNamedKeyCredential | AzureSasCredential | TokenCredential | None
)


def _check_ids(workflow_id: object, run_id: object) -> None:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    if not isinstance(run_id, str):
        raise TypeError(f"a run id must be a string, got {run_id!r}")


class AzureBlobStore(Starts, Appends):
    """An event store in an Azure Storage container (see the module docstring)."""

    def __init__(
        self,
        account: str,
        container: str = "tpp-store",
        *,
        credential: Credential = None,
        prefix: str = "",
        partitions: int = 64,
        lease_seconds: int = 30,
        poll_interval: float = 1.0,
        checkpoint_interval: float = 30.0,
        segment_blocks: int = 40_000,
        inbox_blocks: int = 40_000,
        max_block: int = MAX_BLOCK,
        cache_runs: int = 10_000,
        sweep_interval: float | None = 600.0,
        retries: int = 2,
        connection_timeout: float = 1.5,
        read_timeout: float = 2.0,
        api_version: str | None = None,
    ) -> None:
        if not isinstance(account, str) or not account.strip():
            raise ValueError(
                "AzureBlobStore needs a connection string or an account URL "
                f"(https://ACCOUNT.blob.core.windows.net), got {account!r}"
            )
        _check_container(container)
        if not 1 <= partitions <= 9999:
            raise ValueError(f"partitions must be 1..9999, got {partitions!r}")
        if not 15 <= lease_seconds <= 60:
            raise ValueError(
                f"lease_seconds must be 15..60 (Azure's leases), got {lease_seconds!r}"
            )
        if not 2 <= segment_blocks <= 45_000 or not 2 <= inbox_blocks <= 45_000:
            raise ValueError(
                "segment_blocks and inbox_blocks must be 2..45,000 (an append blob "
                f"holds 50,000 blocks), got {segment_blocks!r} and {inbox_blocks!r}"
            )
        if not 256 <= max_block <= MAX_BLOCK:
            raise ValueError(f"max_block must be 256..{MAX_BLOCK}, got {max_block!r}")
        if sweep_interval is not None and sweep_interval <= 0:
            raise ValueError(
                f"sweep_interval must be > 0 (or None: no sweeping), got {sweep_interval!r}"
            )
        if retries < 0 or connection_timeout <= 0 or read_timeout <= 0 or poll_interval < 0:
            raise ValueError(
                "retries and poll_interval must be >= 0 and timeouts > 0, got "
                f"retries={retries!r}, poll_interval={poll_interval!r}, "
                f"connection_timeout={connection_timeout!r}, read_timeout={read_timeout!r}"
            )
        self.requests = RequestCounter()
        client = container_client(
            account,
            container,
            credential,
            self.requests,
            retries=retries,
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
            api_version=api_version,
        )
        self._client = client
        self._prefix = _check_prefix(prefix)
        scheme, netloc, path = urllib.parse.urlsplit(client.url)[:3]
        self._where = f"{scheme}://{netloc}{path}" + (f" (prefix {self._prefix!r})" * bool(prefix))
        self._blobs = Blobs(client, self._where)
        self._names = fmt.Names(self._prefix)
        self._log = Log(
            self._blobs, self._names, segment_blocks=segment_blocks, max_block=max_block
        )
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self._parts = Partitions(
            self,
            self._blobs,
            self._names,
            partitions=partitions,
            lease_seconds=lease_seconds,
            lease_id=str(uuid.uuid4()),
            poll_interval=poll_interval,
            checkpoint_interval=checkpoint_interval,
            inbox_blocks=inbox_blocks,
            sweep_interval=sweep_interval,
        )
        self._index = Chains(self._blobs, self._names, self._log, self._remember)
        self._cache_runs = max(16, cache_runs)
        self._runs: OrderedDict[Key, Run] = OrderedDict()
        self._owners: dict[str, float] = {}
        self._claims: dict[str, set[Key]] = {}
        self._repairs: dict[Key, Run] = {}  # closed runs whose effects are still owed
        self._configured = False
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> AzureBlobStore:
        """Open ``azure://...`` (the forms of ``cas.open``; see ``stores.open``)."""
        from ._azure_url import parse_store_url

        account, container, options = parse_store_url(url)
        return cls(account, container, **options)

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this AzureBlobStore is closed")

    def _configure(self) -> None:
        """Check (once per handle) that every handle of this container hashes alike."""
        if self._configured:
            return
        name = f"{self._prefix}config"
        wanted = fmt.encode({"version": 1, "partitions": self.partitions})
        got = self._blobs.get(name)
        if got is None and self._blobs.upload(name, wanted, new=True) is None:
            got = self._blobs.get(name)  # another handle wrote it first
        if got is not None:
            config: dict[str, int] = fmt.decode(got[0], dict[str, int])
            if config.get("partitions") != self.partitions:
                raise ValueError(
                    f"Azure store {self._where} was created with partitions="
                    f"{config.get('partitions')}, not {self.partitions}: open it with that "
                    "(the partition of a run is fixed when it starts)"
                )
        self._configured = True

    def _claimed(self) -> builtins.list[Run]:
        """Runs some owner of this handle has claimed."""
        out = []
        for keys in self._claims.values():
            for key in keys:
                run = self._runs.get(key)
                if run is not None and run.owner is not None:
                    out.append(run)
        return out

    def _forget_claims(self, keys: set[Key]) -> None:
        for claims in self._claims.values():
            claims -= keys

    def _expire_owners(self) -> None:
        now = time.monotonic()
        for owner, expiry in list(self._owners.items()):
            if expiry < now:
                del self._owners[owner]
                for key in self._claims.pop(owner, set()):
                    run = self._runs.get(key)
                    if run is not None and run.owner == owner:
                        run.owner = None
                        self._parts.index(run)

    # ------------------------------------------------------------------ the protocol

    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> None:
        if not isinstance(started, WorkflowStarted):
            raise TypeError(f"create() needs a WorkflowStarted event, got {started!r}")
        _check_ids(started.workflow_id, started.run_id)
        with self._lock:
            self._check_open()
            self._configure()
            self._start(started, id_reuse, noted=False)

    def append(self, batches: Sequence[AppendBatch]) -> builtins.list[AppendResult]:
        for batch in batches:  # bad input refuses the whole call before anything lands
            _check_ids(batch.workflow_id, batch.run_id)
        results: list[AppendResult] = []
        with self._lock:
            self._check_open()
            if batches:
                self._configure()
                self._parts.renew_leases()
            for batch in batches:
                try:
                    results.append(AppendResult(index=self._append_batch(batch)))
                except WorkflowError as exc:
                    results.append(AppendResult(error=exc))
        return results

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        with self._lock:
            self._check_open()
            return self._get(workflow_id, run_id).events[after:]

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        with self._lock:
            self._check_open()
            return self._get(workflow_id, run_id).summary.info()

    def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> WorkflowPage:
        with self._lock:
            self._check_open()
            page = select_page(
                (e.summary() for e in self._index.everything()),
                status=status,
                type=type,
                since=since,
                until=until,
                page_size=page_size,
                page_token=page_token,
            )
            items = [self._get(i.id, i.run_id).summary.info() for i in page.items]
            return WorkflowPage(
                items=items, next_page_token=page.next_page_token, counts=page.counts
            )

    def runs(self) -> Iterator[WorkflowInfo]:
        with self._lock:
            self._check_open()
            infos = [
                self._get(e.started.workflow_id, e.started.run_id).summary.info()
                for e in self._index.everything()
            ]
        return iter(infos)

    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        with self._lock:
            self._check_open()
            self._configure()
            self._expire_owners()
            self._owners[owner] = time.monotonic() + lease
            mine = self._claims.setdefault(owner, set())
            self._parts.maintain(task_queues)
            self._owners[owner] = time.monotonic() + lease  # NB: from when the claim is granted
            for key, run in list(self._repairs.items()):
                with contextlib.suppress(StoreError):
                    self._repair_closed(run)
                    self._repairs.pop(key, None)
            got, next_due = self._parts.take(task_queues, owner, now, limit)
            mine.update(run.key for run in got)
            return Claims(runs=[RunRef(*run.key) for run in got], next_due=next_due)

    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        with self._lock:
            self._check_open()
            self._expire_owners()
            if owner not in self._owners:
                return []
            self._parts.maintain()
            self._owners[owner] = time.monotonic() + lease
            out = []
            mine = self._claims.get(owner, set())
            for key in list(mine):
                run = self._runs.get(key)
                if run is not None and run.owner == owner and self._parts.trusted(run):
                    out.append(RunRef(*key))
                else:
                    mine.discard(key)
            return out

    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            key = (run.workflow_id, run.run_id)
            entry = self._runs.get(key)
            if entry is None or entry.owner != owner:
                return
            entry.owner = None
            self._claims.get(owner, set()).discard(key)
            s = entry.summary
            if (s.not_before, s.blocked) != (not_before, blocked) and s.running:
                at = len(entry.events)
                try:
                    self._update_meta(
                        entry, lambda meta: fmt.blocked_meta(meta, not_before, blocked, at)
                    )
                except StoreError as exc:  # kept here; others see it once the store is back
                    log.warning("backoff of %r not saved: %s", entry.workflow_id, exc)
            s.not_before, s.blocked = not_before, blocked
            self._parts.index(entry)
            self._parts.released(entry)

    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        with self._lock:
            self._check_open()
            entry = self._get(run.workflow_id, run.run_id)
            if seq not in entry.summary.activities:
                return None  # only a pending activity has a slot
            name = self._names.heartbeat(entry.workflow_id, entry.ordinal, seq)
            if details is not None:
                self._blobs.upload(name, fmt.encode_payload_slot(details))
                entry.hb[seq] = details
                return details
            if seq in entry.hb:
                return entry.hb[seq]
            at = entry.scheduled_at(seq)
            if (
                entry.hb_from is not None
                and at is not None
                and at >= entry.hb_from
                and (self._parts.trusted(entry))
            ):
                return None  # scheduled while this handle held the run: no slot but ours
            got = self._blobs.get(name)
            if got is None:
                return None
            value = fmt.decode_payload_slot(got[0])
            entry.hb[seq] = value
            return value

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._parts.release_all()
            finally:
                self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AzureBlobStore {self._where}>"
