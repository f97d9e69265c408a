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
from typing import Any, Final, Self

try:
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
    from azure.storage.blob import BlobServiceClient  # noqa: F401 - the extra is there
except ImportError as exc:  # pragma: no cover - the azure extra is installed in dev
    raise ImportError(
        "AzureBlobStore needs the azure extra: pip install 'temporalpp[azure]' "
        f"(azure-storage-blob): {exc}"
    ) from exc

from cas.azure import _check_container, _check_prefix
from engine._errors import (
    StoreError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    CLOSING_EVENTS,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Payload,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTerminated,
    with_index,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

from . import _azure_format as fmt
from ._azure_blobs import MAX_BLOCK, Blobs, Changed, Missing, container_client
from ._azure_chains import Chains, Entry
from ._azure_metrics import RequestCounter
from ._azure_partitions import Partitions
from ._azure_runs import Log, Run
from ._protocol import AppendBatch, AppendResult, Claims, RunRef
from ._summary import (
    RunSummary,
    check_decision,
    check_start,
    child_refused,
    is_repeated_child,
    parent_notice,
    select_page,
)

__all__ = ["AzureBlobStore", "Credential"]

log = logging.getLogger("temporalpp.stores.azure")

#: What ``credential=`` takes (as the Azure SDK does).
Credential = (
    str | dict[str, str] | AzureNamedKeyCredential | AzureSasCredential | TokenCredential | None
)

Key = tuple[str, str]
_TRIES: Final = 8
_TOUCH_EVENTS: Final = 16 * 1024  # bytes of events a Touch carries at most (else: re-read)


def _same_start(a: WorkflowStarted, b: WorkflowStarted) -> bool:
    return with_index(a, -1) == with_index(b, -1)


def _check_ids(workflow_id: object, run_id: object) -> None:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    if not isinstance(run_id, str):
        raise TypeError(f"a run id must be a string, got {run_id!r}")


class AzureBlobStore:
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

    def _cached(self, key: Key) -> Run | None:
        return self._runs.get(key)

    def _remember(self, run: Run) -> Run:
        key = run.key
        self._runs[key] = run
        self._runs.move_to_end(key)
        self._index.note(run.ordinal, run.started)
        if len(self._runs) > self._cache_runs:
            for old in list(self._runs)[: len(self._runs) - self._cache_runs]:
                r = self._runs[old]
                if r.owner is None and not self._parts.trusted(r) and old not in self._repairs:
                    del self._runs[old]
        return run

    def _fresh(self, workflow_id: str, run_id: str, ordinal: int | None = None) -> Run | None:
        """The run as it is now (one GET for a known running run), or None if it does not exist."""
        run = self._runs.get((workflow_id, run_id))
        if run is not None:
            if run.summary.running:
                self._log.refresh(run)
            return run
        if ordinal is None:
            ordinal = self._index.ordinal(workflow_id, run_id)
            if ordinal is None:
                return None
        run = self._log.load(workflow_id, ordinal)
        if run is None or run.run_id != run_id:
            return None
        return self._remember(run)

    def _get(self, workflow_id: str, run_id: str | None, *, fresh: bool = True) -> Run:
        """A run (the id's latest when ``run_id`` is None); ``WorkflowNotFoundError`` if none."""
        if not isinstance(workflow_id, str):
            raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
        if run_id is None:
            latest = self._latest(workflow_id, fresh)
            if latest is not None:
                return latest
            chain = self._index.chain(workflow_id)
            if not chain:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            run_id = chain[-1].started.run_id
        run = self._runs.get((workflow_id, run_id))
        if run is not None:
            if fresh and run.summary.running and not self._parts.trusted(run):
                self._log.refresh(run)
            self._runs.move_to_end(run.key)
            return run
        ordinal = self._index.ordinal(workflow_id, run_id)
        loaded = None if ordinal is None else self._log.load(workflow_id, ordinal)
        if loaded is None or loaded.run_id != run_id:
            if not self._index.known(workflow_id) and not self._index.chain(workflow_id):
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")
        return self._remember(loaded)

    def _latest(self, workflow_id: str, fresh: bool) -> Run | None:
        """The id's latest run, if it is the newest this handle knows and is still running.

        NB: an id's next run is created only once its last one is closed, so a run
        that a fresh read (or the partition's holder) shows running is the latest:
        no List Blobs call for the id's runs.
        """
        known = self._index.starts.get(workflow_id)
        if not known:
            return None
        run = self._runs.get((workflow_id, known[max(known)].run_id))
        if run is None or not run.summary.running:
            return None
        if fresh and not self._parts.trusted(run):
            self._log.refresh(run)
            if not run.summary.running:
                return None
        self._runs.move_to_end(run.key)
        return run

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

    # ------------------------------------------------------------------ starting runs

    def _start(self, started: WorkflowStarted, policy: IdReusePolicy, *, noted: bool) -> Run:
        """Create a run under the id-reuse policy (``noted``: its Start record is written)."""
        wid = started.workflow_id
        queue = started.task_queue

        def note() -> None:
            nonlocal noted
            if not noted:
                self._parts.write(queue, wid, fmt.Start(started))
                noted = True

        try:
            run: Run | None = None
            if not self._index.known(wid):  # an id this handle never saw: try ordinal 0 at once
                note()
                run = self._log.create(wid, 0, started)
            for _ in range(_TRIES):
                if run is not None:
                    break
                chain = self._index.chain(wid)
                same = [e for e in chain if e.started.run_id == started.run_id]
                if same and _same_start(same[0].started, started):
                    # this very start, made by a repair racing us: done (idempotent)
                    run = self._get(wid, started.run_id)
                    break
                if same:
                    raise WorkflowAlreadyStartedError(
                        f"workflow {wid!r} already has a run {started.run_id!r}"
                    )
                last = self._summary(chain[-1]) if chain else None
                victim = check_start(started, [last] if last else [], policy)
                if victim is not None:
                    self._terminate(victim.started, started)
                note()
                run = self._log.create(wid, chain[-1].ordinal + 1 if chain else 0, started)
            if run is None:
                raise StoreError(f"Azure store {self._where}: {wid!r} kept starting elsewhere")
        except WorkflowError:
            if noted:
                with contextlib.suppress(WorkflowError):
                    self._parts.write(queue, wid, fmt.Abandon(wid, started.run_id))
            raise
        self._remember(run)
        part = self._parts.holding(run)
        if part is not None:
            self._parts._adopt(part, run)
        return run

    def _resume(self, started: WorkflowStarted) -> Run | None:
        """A Start record whose run is missing: create the run if what started it landed.

        The batch that continues a run as new, or starts a child, lands before the
        new run is created; a handle that died in between leaves the record, and
        the partition's holder finishes the start (racing the starter, if it is
        alive, is harmless: a start is idempotent).  A client's start is its
        client's to finish: a record of one that never happened is dropped.
        """
        link = started.continued_from or started.parent
        if link is None:
            return None
        try:
            source = self._get(link.workflow_id, link.run_id)
        except WorkflowNotFoundError:
            return None
        if started.continued_from is not None:
            closing = source.summary.closing
            if not (
                isinstance(closing, WorkflowContinuedAsNew) and closing.new_run_id == started.run_id
            ):
                return None
        else:
            events = source.events
            asked = any(
                isinstance(ev, ChildWorkflowStarted)
                and ev.seq == link.seq
                and ev.workflow_id == started.workflow_id
                for ev in events
            )
            answered = any(
                isinstance(ev, ChildWorkflowCompleted | ChildWorkflowFailed) and ev.seq == link.seq
                for ev in events
            )
            if not asked or answered or not source.summary.running:
                return None
        log.warning("finishing the start of %r run %s (its starter stopped midway)",
                    started.workflow_id, started.run_id)  # fmt: skip
        self._start_from(started)
        return self._runs.get((started.workflow_id, started.run_id))

    def _summary(self, entry: Entry) -> RunSummary:
        """The entry's summary; one that metadata calls running is read to be sure."""
        summary = entry.summary()
        if summary.running:
            run = self._fresh(entry.started.workflow_id, entry.started.run_id, entry.ordinal)
            if run is not None:
                return run.summary
        return summary

    def _terminate(self, victim: WorkflowStarted, by: WorkflowStarted) -> None:
        run = self._get(victim.workflow_id, victim.run_id)
        event = WorkflowTerminated(
            time=by.time,
            reason=f"terminated by a new start ({by.run_id}) with TERMINATE_IF_RUNNING",
        )
        self._append_run(run, [event], None, ())

    def _start_from(self, started: WorkflowStarted) -> None:
        """A run a batch starts: a child (idempotent by parent link) or a continuation."""
        wid = started.workflow_id
        try:
            if started.parent is not None:
                chain = self._index.chain(wid)
                if chain and is_repeated_child(started, [chain[-1].summary()]):
                    self._parts.write(started.task_queue, wid, fmt.Abandon(wid, started.run_id))
                    return  # this child exists already (a retried decision)
            self._start(started, IdReusePolicy.ALLOW_DUPLICATE, noted=True)
        except WorkflowAlreadyStartedError as exc:
            if started.parent is None:
                log.error("continue-as-new of %r could not start run %s: %s", wid,
                          started.run_id, exc)  # fmt: skip
                return
            self._external(*child_refused(started, exc))

    def _check_continue(self, run: Run, started: WorkflowStarted, closes: bool) -> None:
        """Refuse, before anything lands, a continue-as-new whose next run cannot start."""
        wid = started.workflow_id
        chain = self._index.chain(wid)
        if any(e.started.run_id == started.run_id for e in chain):
            raise WorkflowAlreadyStartedError(
                f"workflow {wid!r} already has a run {started.run_id!r}"
            )
        if chain:
            last = self._summary(chain[-1])
            if last.running and not (last.started.run_id == run.run_id and closes):
                raise WorkflowAlreadyStartedError(
                    f"workflow {wid!r} is already running (run {last.started.run_id})"
                )

    # ------------------------------------------------------------------ appending

    def _append_batch(self, batch: AppendBatch) -> int:
        run = self._get(batch.workflow_id, batch.run_id, fresh=False)
        events = list(batch.events)
        expected = batch.expected_length
        # what we know refuses most losers before a Start record is written for nothing
        tail = run.events[expected:] if expected is not None else []
        check_decision(run.summary, events, tail, expected)
        closes = any(type(ev) in CLOSING_EVENTS for ev in events)
        for st in batch.starts:
            if st.parent is None:
                self._check_continue(run, st, closes)
        return self._append_run(run, events, expected, batch.starts)

    def _append_run(
        self,
        run: Run,
        events: list[Event],
        expected: int | None,
        starts: Sequence[WorkflowStarted],
    ) -> int:
        for st in starts:  # NB: before the batch, so that a crash leaves a record
            self._parts.write(st.task_queue, st.workflow_id, fmt.Start(st))
        try:
            index = self._log.append(run, events, expected)
        except WorkflowError:
            for st in starts:
                with contextlib.suppress(WorkflowError):
                    self._parts.write(
                        st.task_queue, st.workflow_id, fmt.Abandon(st.workflow_id, st.run_id)
                    )
            raise
        for st in starts:
            self._start_from(st)
        self._after(run, index)
        return index

    def _after(self, run: Run, index: int) -> None:
        """Bookkeeping after a batch landed: close effects, the index, or the holder's Touch."""
        if not run.summary.running:
            self._repairs[run.key] = run
            try:
                self._repair_closed(run)
            except StoreError as exc:  # the batch is there: claim() tries again
                log.warning("effects of closing %r run %s are late: %s", run.workflow_id,
                            run.run_id, exc)  # fmt: skip
        part = self._parts.holding(run)
        if part is not None:
            if run.key in part.runs:
                self._parts.index(run)
            else:
                self._parts._adopt(part, run)
        else:
            try:
                self._parts.write(run.started.task_queue, run.workflow_id, self._touch(run, index))
            except StoreError as exc:  # the batch is there; the holder sees it on its next read
                log.warning("no Touch for %r run %s: %s", run.workflow_id, run.run_id, exc)

    @staticmethod
    def _touch(run: Run, index: int) -> fmt.Touch:
        """The Touch for the batch at ``index``: where it landed and, if small, its events."""
        last = run.last
        if last is None or last[0] != index:
            return fmt.Touch(run.workflow_id, run.run_id)  # settled by a re-read: position unknown
        at, segment, start, end, blocks, payload = last
        events = payload if len(payload) <= _TOUCH_EVENTS else b""
        return fmt.Touch(run.workflow_id, run.run_id, at, segment, start, end, blocks, events)

    def _repair_closed(self, run: Run) -> None:
        """A closed run's effects, idempotent: its status in metadata, its parent's notice."""
        self._repairs[run.key] = run
        want = fmt.status_meta(run.meta, run.summary.status, run.summary.close_time)
        if want != run.meta:
            self._update_meta(run, lambda meta: fmt.status_meta(
                meta, run.summary.status, run.summary.close_time))  # fmt: skip
        notice = parent_notice(run.summary)
        if notice is not None:
            self._external(*notice)
        self._repairs.pop(run.key, None)
        self._drop_heartbeats(run)

    def _drop_heartbeats(self, run: Run) -> None:
        """Delete a closed run's heartbeat slots (best effort: a failure leaves a few bytes).

        Only slots that may exist cost a request: the ones this handle wrote or
        read, and, if other handles may have written some (activities scheduled
        before this handle held the run), whatever one List Blobs call finds.
        """
        if run.hb_dropped:
            return
        run.hb_dropped = True
        names = {self._names.heartbeat(run.workflow_id, run.ordinal, seq) for seq in run.hb}
        try:
            if run.hb_from is None or any(
                type(ev) is ActivityScheduled and ev.index < run.hb_from for ev in run.events
            ):
                prefix = self._names.heartbeats(run.workflow_id, run.ordinal)
                names.update(props.name for props in self._blobs.list(prefix))
            for name in sorted(names):
                self._blobs.delete(name)
        except StoreError as exc:
            log.warning("heartbeat slots of %r run %s not deleted: %s", run.workflow_id,
                        run.run_id, exc)  # fmt: skip
        run.hb.clear()

    def _update_meta(self, run: Run, change: Any) -> None:
        name = self._names.segment(run.workflow_id, run.ordinal, 0)
        for _ in range(_TRIES):
            want = change(run.meta)
            if want == run.meta:
                return
            try:
                run.etag0 = self._blobs.set_metadata(name, want, run.etag0)
                run.meta = want
                return
            except Changed:
                props = self._blobs.properties(name)
                if props is None:
                    return
                run.meta, run.etag0 = dict(props.metadata or {}), str(props.etag)
            except Missing:
                return
        raise StoreError(f"Azure store {self._where}: {name}'s metadata kept changing")

    def _external(self, workflow_id: str, run_id: str, event: Event) -> None:
        """A store-made event (a child's outcome or refusal), once, for a run that may be gone."""
        try:
            run = self._get(workflow_id, run_id)
        except WorkflowNotFoundError:
            return
        seq = getattr(event, "seq", None)
        kinds = (ChildWorkflowCompleted, ChildWorkflowFailed)
        child_run = getattr(event, "run_id", "")

        def delivered(run: Run) -> bool:  # a repair, or a retry, got there first
            return any(
                type(ev) in kinds and ev.seq == seq and ev.run_id == child_run  # type: ignore[union-attr]
                for ev in run.events
            )

        try:
            index = self._log.append(run, [event], None, unless=delivered)
        except WorkflowAlreadyClosedError:
            return  # nobody waits for it any more
        if index >= 0:
            self._after(run, index)

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
