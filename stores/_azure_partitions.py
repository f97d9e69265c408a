"""AzureBlobStore's ownership and ready index: partitions, their leases, inboxes and checkpoints.

Runs of a task queue hash into ``partitions`` partitions by (task queue, id).
A store handle *holds* a partition while it holds an Azure blob lease (15-60 s)
on the partition's checkpoint blob; it renews the lease every third of its
duration from ``claim``, ``renew`` and ``append``, and trusts it only until
``lease - 2`` seconds after the last successful renewal was *sent*.  The runs of
a held partition are this handle's to hand out (``claim``), per owner and in
memory, as ``MemoryStore`` does; runs of partitions held elsewhere are never.

What a holder knows, and how:

* its partition's **open runs** and their summaries (what is due when): from the
  checkpoint (saved by the holder, fenced by the lease: a write carrying a lost
  lease fails) plus the **inbox** from the checkpoint's position on.  Whoever
  starts a run appends a ``Start`` record to the inbox of the run's partition
  *before* creating it (so a starter that dies midway leaves a record, never an
  unknown run); whoever appends to a run of a partition it does not hold appends
  a ``Touch`` after.  Records are idempotent; readers skip duplicates.
* what is new: one List Blobs call per queue every ``poll_interval`` seconds
  gives every partition's lease state and inbox size; inboxes that grew are
  read from where their holder stopped (one ranged GET each).  Its own writes a
  holder applies at once.

How the handles of a queue share its partitions (fair shares, draining and
handing back) is ``stores._azure_balance``.

Safety never rests on the lease: every history append is conditioned on its
position (``stores._azure_runs``), so a holder that lost its lease without
noticing can at worst lose a race.  An inbox segment that reached
``inbox_blocks`` blocks is sealed by its holder with an infinite lease (writers
then get 412 and move to the next segment).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import random
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from engine._errors import StoreError, WorkflowError

from . import _azure_format as fmt
from ._azure_balance import Balance
from ._azure_blobs import Blobs, Changed, Missing, Sealed
from ._azure_runs import Run

if TYPE_CHECKING:
    from .azure import AzureBlobStore

__all__ = ["Partition", "Partitions"]

log = logging.getLogger("temporalpp.stores.azure")

SEAL_ID: Final = "5ea1ed00-7e57-4a11-8000-000000000001"  # the lease that closes an inbox segment
_MARGIN: Final = 2.0  # seconds before a lease's end from which it is no longer trusted
_START_GRACE: Final = 60.0  # seconds a Start waits for its run before it counts as abandoned
_RECHECK: Final = 2.0  # seconds between looks for the runs of pending Starts

Key = tuple[str, str]


class Partition:
    """One held partition: its lease, its inbox position, its open runs."""

    __slots__ = (
        "ckpt",
        "dirty",
        "draining",
        "gave_up",
        "inbox_off",
        "inbox_seg",
        "p",
        "pending",
        "queue",
        "rechecked",
        "renewed",
        "runs",
        "saved",
        "sweep_at",
        "swept",
    )

    def __init__(self, queue: str, p: int, ckpt: str) -> None:
        self.queue = queue
        self.p = p
        self.ckpt = ckpt
        self.renewed = 0.0  # monotonic time the last successful lease request was sent
        self.inbox_seg = 0
        self.inbox_off = 0
        self.runs: set[Key] = set()
        self.pending: dict[Key, tuple[fmt.Start, float]] = {}
        self.dirty = True
        self.draining = 0.0  # since when (monotonic) it waits to be handed back; 0: it does not
        self.gave_up = -1e9  # when a drain last gave up (its owners kept it busy)
        self.saved = 0.0
        self.rechecked = 0.0  # when pending Starts were last looked for
        self.swept = time.monotonic()  # when the sweeper last read runs
        self.sweep_at = 0  # where it goes on


class Partitions(Balance):
    """The partitions this handle holds, and the ready index over their runs."""

    def __init__(
        self,
        store: AzureBlobStore,
        blobs: Blobs,
        names: fmt.Names,
        *,
        partitions: int,
        lease_seconds: int,
        lease_id: str,
        poll_interval: float,
        checkpoint_interval: float,
        inbox_blocks: int,
        sweep_interval: float | None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.names = names
        self.count = partitions
        self.lease_seconds = lease_seconds
        self.lease_id = lease_id
        self.poll_interval = poll_interval
        self.checkpoint_interval = checkpoint_interval
        self.inbox_blocks = inbox_blocks
        self.sweep_interval = sweep_interval
        self.held: dict[tuple[str, int], Partition] = {}
        self.ready: dict[str, list[tuple[datetime, int, Key]]] = {}
        self._tiebreak = itertools.count()
        self._scanned: dict[str, float] = {}
        self._writing: dict[tuple[str, int], int] = {}  # inbox segment this handle writes to
        # queue -> when this handle last wrote its presence (monotonic, and the service's clock)
        self._present: dict[str, tuple[float, datetime]] = {}

    # ------------------------------------------------------------------ which partition

    def of(self, run: Run) -> tuple[str, int]:
        queue = run.started.task_queue
        return queue, fmt.partition_of(queue, run.workflow_id, self.count)

    def holding(self, run: Run) -> Partition | None:
        """The held (and trusted) partition of ``run``, if this handle holds it."""
        part = self.held.get(self.of(run))
        if part is None or time.monotonic() > part.renewed + self.lease_seconds - _MARGIN:
            return None
        return part

    def trusted(self, run: Run) -> bool:
        part = self.holding(run)
        return part is not None and run.key in part.runs

    # ------------------------------------------------------------------ the ready index

    def index(self, run: Run) -> None:
        """(Re)index a run of a held partition after its summary or owner changed."""
        part = self.holding(run)
        if part is None:
            return
        if not run.summary.running:
            if run.key in part.runs:
                part.runs.discard(run.key)
                part.dirty = True
            return
        if run.key not in part.runs:
            part.runs.add(run.key)
            part.dirty = True
        due = run.summary.due
        if due is not None and run.owner is None:
            heap = self.ready.setdefault(part.queue, [])
            heapq.heappush(heap, (due, next(self._tiebreak), run.key))

    def take(
        self, queues: Sequence[str], owner: str, now: datetime, limit: int
    ) -> tuple[list[Run], datetime | None]:
        """Claim due runs of held partitions for ``owner``; and the next due time."""
        got: list[Run] = []
        next_due: datetime | None = None
        for queue in queues:
            heap = self.ready.get(queue)
            while heap:
                due, _, key = heap[0]
                run = self.store._cached(key)
                if (
                    run is None
                    or run.owner is not None
                    or run.summary.due != due
                    or not self.trusted(run)
                    or self.held[self.of(run)].draining
                ):
                    # stale (claimed, re-timed, closed, not ours), or its partition is
                    # draining (re-indexed if it stays here after all)
                    heapq.heappop(heap)
                    continue
                if due > now or len(got) >= limit:
                    if next_due is None or due < next_due:
                        next_due = due
                    break
                heapq.heappop(heap)
                run.owner = owner
                got.append(run)
        return got, next_due

    # ------------------------------------------------------------------ upkeep

    def maintain(self, queues: Iterable[str] = ()) -> None:
        """Renew leases that are due; every ``poll_interval``, scan ``queues`` for work."""
        self.renew_leases()
        mono = time.monotonic()
        for queue in queues:
            if mono - self._scanned.get(queue, -1e9) >= self.poll_interval:
                self._scanned[queue] = mono
                self.scan(queue)
        for part in list(self.held.values()):
            if part.dirty and mono - part.saved >= self.checkpoint_interval:
                self.save(part)

    def renew_leases(self) -> None:
        mono = time.monotonic()
        for part in list(self.held.values()):
            if mono - part.renewed < self.lease_seconds / 3:
                continue
            sent = time.monotonic()
            try:
                ok = self.blobs.renew(part.ckpt, self.lease_id)
            except StoreError as exc:
                if time.monotonic() > part.renewed + self.lease_seconds - _MARGIN:
                    log.warning("partition %s/%d: lease not renewed in time: %s", part.queue,
                                part.p, exc)  # fmt: skip
                    self.lose(part)
                continue
            if ok:
                part.renewed = sent
            else:
                log.warning("partition %s/%d: lease lost", part.queue, part.p)
                self.lose(part)

    def lose(self, part: Partition) -> None:
        """Forget a partition whose lease is gone: its runs are someone else's now."""
        self.held.pop((part.queue, part.p), None)
        for key in part.runs:
            run = self.store._cached(key)
            if run is not None:
                run.owner = None
                run.hb_from = None
        self.store._forget_claims(part.runs)

    def scan(self, queue: str, *, prefer: Partition | None = None) -> None:
        """List the queue's partitions: read inboxes that grew, balance, take free ones.

        Balancing (as Durable Functions' partition manager): every handle that
        claims from a queue keeps a presence blob there (``w/<lease id>``, written
        every third of a lease); the live ones (written within a lease) share
        the partitions, ``ceil(partitions / live)`` each.  A handle below its
        share takes free ones (in random order, so that handles starting
        together spread); one above its share, when no partition is free, drains
        and hands back the surplus (``_balance``).
        """
        prefix = self.names.queue_dir(queue)
        leased: set[int] = set()
        exists: set[int] = set()
        inbox: dict[int, dict[int, int]] = {}
        seen: dict[str, datetime] = {}
        for props in self.blobs.list(prefix):
            rest = props.name[len(prefix) :]
            if rest.startswith("w/"):
                seen[rest[2:]] = props.last_modified
                continue
            head, _, tail = rest.partition(".")
            if not head.isdigit():
                continue
            p = int(head)
            if tail == "ckpt":
                exists.add(p)
                if props.lease.state in ("leased", "breaking"):
                    leased.add(p)
            elif tail.startswith("in."):
                with contextlib.suppress(ValueError):
                    inbox.setdefault(p, {})[int(tail[3:])] = int(props.size)
        for (q, p), part in list(self.held.items()):
            if q != queue:
                continue
            segs = inbox.get(p, {})
            grew = segs.get(part.inbox_seg, 0) > part.inbox_off or any(
                k > part.inbox_seg for k in segs
            )
            if grew:
                self.poll(part)
            if part.pending and time.monotonic() - part.rechecked >= _RECHECK:
                self._recheck(part)
            self._sweep(part)
        share = self._share(queue, seen)
        mine = [part for (q, _), part in self.held.items() if q == queue]
        free = [p for p in range(self.count) if (queue, p) not in self.held and p not in leased]
        self._balance(mine, share, wanted=not free, prefer=prefer)
        random.shuffle(free)
        for p in free:
            if len(mine) >= share:
                break
            if self.acquire(queue, p, exists=p in exists):
                part = self.held[(queue, p)]
                mine.append(part)
                if part.inbox_seg not in inbox.get(p, {}):  # writers find it there (background)
                    self.blobs.create_append(self.names.inbox(queue, p, part.inbox_seg))

    def acquire(self, queue: str, p: int, *, exists: bool) -> bool:
        name = self.names.checkpoint(queue, p)
        if not exists:
            self.blobs.upload(name, fmt.encode(fmt.Checkpoint()), new=True)
        sent = time.monotonic()
        try:
            etag = self.blobs.acquire(name, self.lease_id, self.lease_seconds)
        except Missing:
            return False
        if etag is None:
            return False  # another handle was quicker
        part = Partition(queue, p, name)
        part.renewed = sent
        self.held[(queue, p)] = part
        try:
            self._rebuild(part)
            self.save(part)  # NB: a new ETag marks the new tenure
        except BaseException:
            self.held.pop((queue, p), None)
            with contextlib.suppress(StoreError):
                self.blobs.release(name, self.lease_id)
            raise
        return True

    def _rebuild(self, part: Partition) -> None:
        got = self.blobs.get(part.ckpt)
        ckpt = fmt.decode(got[0], fmt.Checkpoint) if got and got[0] else fmt.Checkpoint()
        part.inbox_seg, part.inbox_off = ckpt.inbox_segment, ckpt.inbox_offset
        mono = time.monotonic()
        for cr in ckpt.runs:
            key = (cr.workflow_id, cr.run_id)
            if cr.ordinal < 0:
                if cr.started is not None:
                    part.pending[key] = (fmt.Start(cr.started), mono)
                continue
            run = self.store._fresh(cr.workflow_id, cr.run_id, cr.ordinal)
            if run is not None:
                self._adopt(part, run, rebuilt=True)
        self.poll(part)

    def _adopt(self, part: Partition, run: Run, *, rebuilt: bool = False) -> None:
        if (
            run.started.task_queue,
            fmt.partition_of(run.started.task_queue, run.workflow_id, self.count),
        ) != (part.queue, part.p):
            return  # fmt: skip
        if not run.summary.running:
            if run.key in part.runs:
                part.runs.discard(run.key)
                part.dirty = True
            self.store._repair_closed(run)
            return
        if run.hb_from is None:
            run.hb_from = len(run.events) if rebuilt else 0
        part.runs.add(run.key)
        part.dirty = True
        self.index(run)

    def poll(self, part: Partition) -> None:
        """Read the inbox from where this holder stopped; apply its records."""
        while True:
            name = self.names.inbox(part.queue, part.p, part.inbox_seg)
            try:
                r = self.blobs.read(name, part.inbox_off)
            except ValueError:
                log.warning("%s is shorter than the checkpoint says: reading it again", name)
                part.inbox_off = 0
                continue
            if r is None:
                return
            batches, resume = fmt.frames(r.data, part.inbox_off, functools.partial(str, name))
            for b in batches:
                self._record(part, fmt.decode(b.payload, fmt.Record))
            if resume != part.inbox_off:
                part.inbox_off = resume
                part.dirty = True
            if r.sealed and resume == r.size:
                part.inbox_seg, part.inbox_off = part.inbox_seg + 1, 0
                part.dirty = True
                continue
            if r.blocks >= self.inbox_blocks and not r.sealed:
                self.blobs.acquire(name, SEAL_ID, -1)  # writers move on; read what came first
                continue
            return

    def _record(self, part: Partition, rec: fmt.Record) -> None:
        if isinstance(rec, fmt.Abandon):
            if part.pending.pop((rec.workflow_id, rec.run_id), None) is not None:
                part.dirty = True
            return
        if isinstance(rec, fmt.Start):
            key = (rec.started.workflow_id, rec.started.run_id)
            if key in part.runs:
                return
            run = self.store._fresh(*key) or self.store._resume(rec.started)
            if run is None:
                part.pending.setdefault(key, (rec, time.monotonic()))
                part.dirty = True
            else:
                part.pending.pop(key, None)
                self._adopt(part, run)
            return
        key = (rec.workflow_id, rec.run_id)  # a Touch
        run = self.store._cached(key)
        if run is None or not run.catch_up(rec):  # NB: mostly no GET: the batch came along
            run = self.store._fresh(*key)
        if run is not None:
            self._adopt(part, run)

    def _sweep(self, part: Partition) -> None:
        """Re-read a few open runs, so that each is read once per ``sweep_interval``.

        A handle that appended to a run and died before its Touch leaves the
        holder unaware of what it appended (a signal nobody wakes the run for);
        this finds it, at a cost of ``open runs / sweep_interval`` GETs per second.
        """
        if self.sweep_interval is None or not part.runs:
            return
        mono = time.monotonic()
        owed = len(part.runs) * (mono - part.swept) / self.sweep_interval
        if owed < 1:
            return
        part.swept = mono
        keys = sorted(part.runs)
        start = part.sweep_at % len(keys)
        for key in (keys[start:] + keys[:start])[: int(owed)]:
            run = self.store._cached(key)
            if run is not None and run.owner is None:
                self.store._log.refresh(run)
                self._adopt(part, run)
        part.sweep_at = start + int(owed)

    def _recheck(self, part: Partition) -> None:
        mono = part.rechecked = time.monotonic()
        for key, (rec, seen) in list(part.pending.items()):
            run = self.store._fresh(*key) or self.store._resume(rec.started)
            if run is not None:
                del part.pending[key]
                self._adopt(part, run)
            elif mono - seen > _START_GRACE:
                del part.pending[key]  # its starter died before creating it, or was refused
            part.dirty = True

    # ------------------------------------------------------------------ checkpoints

    def save(self, part: Partition) -> None:
        runs: list[fmt.CheckpointRun] = []
        for key in sorted(part.runs):
            run = self.store._cached(key)
            if run is not None:
                runs.append(fmt.CheckpointRun(key[0], key[1], run.ordinal))
        for key, (rec, _) in part.pending.items():
            runs.append(fmt.CheckpointRun(key[0], key[1], -1, rec.started))
        ckpt = fmt.Checkpoint(inbox_segment=part.inbox_seg, inbox_offset=part.inbox_off, runs=runs)
        try:
            self.blobs.upload(part.ckpt, fmt.encode(ckpt), lease=self.lease_id)
        except Changed:
            log.warning("partition %s/%d: checkpoint refused (lease lost)", part.queue, part.p)
            self.lose(part)
            return
        part.dirty = False
        part.saved = time.monotonic()

    def release_all(self) -> None:
        """Save every held partition's checkpoint and give its lease back (graceful)."""
        for queue in self._present:
            with contextlib.suppress(StoreError):
                self.blobs.delete(f"{self.names.queue_dir(queue)}w/{self.lease_id}")
        for part in list(self.held.values()):
            try:
                if part.renewed + self.lease_seconds - _MARGIN > time.monotonic():
                    self.save(part)
                self.blobs.release(part.ckpt, self.lease_id)
            except (StoreError, WorkflowError) as exc:
                log.warning("partition %s/%d not handed back: %s", part.queue, part.p, exc)
            self.held.pop((part.queue, part.p), None)

    # ------------------------------------------------------------------ writing records

    def write(self, queue: str, workflow_id: str, record: fmt.Record) -> None:
        """Append a record to the inbox of (queue, id)'s partition (unconditionally)."""
        p = fmt.partition_of(queue, workflow_id, self.count)
        block = fmt.pack_frames("", fmt.encode(record), 1 << 40)[0]
        seg = self._writing.get((queue, p), 0)
        for _ in range(64):
            name = self.names.inbox(queue, p, seg)
            try:
                self.blobs.append(name, block, None)
            except Sealed:
                seg += 1
                continue
            except Missing:
                self.blobs.create_append(name)
                continue
            self._writing[(queue, p)] = seg
            return
        raise StoreError(f"{self.blobs.where}: no writable inbox segment for partition {p}")
