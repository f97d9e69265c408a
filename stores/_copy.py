"""``stores.copy``: every run of one store into another, verified by re-reading.

Export, import, backup and migration between any two backends, through the
``Store`` protocol only (``runs``, ``read``, ``describe``, ``create``, ``append``).

Theory of operation
-------------------

* **What is kept.**  Every run of every workflow id, with its run id, every
  event's index and time, and so its status, links (parent, continued-from,
  reset-from) and close time.  Not copied: claims, worker backoff (a blocked
  run is retried at once), and the heartbeat details of running activities,
  which live outside the history.
* **Order.**  A store keeps one running execution per id, and the run created
  last is the id's latest: so each id's runs are created in their chain order
  with the latest last (``Store.runs`` yields every backend's chain order).
  Closing a child run makes the store notify its parent; a parent still
  running in the source already holds that notice, so its children are copied
  before it (the notice then finds no parent and is dropped, as every store
  drops notices for unknown or closed runs).  No decision batch carries
  ``starts``, so the destination never starts a run on its own.
* **Batches.**  A run is created with its ``WorkflowStarted`` and the rest is
  appended in batches of up to ``CHUNK`` events, each with
  ``expected_length`` (the destination refuses a batch if anything else wrote
  to the run meanwhile).
* **Runs already there.**  Before anything is written, every source run is
  looked up in the destination: a run with identical encoded events is
  skipped; one holding a strict prefix (an interrupted copy) is completed;
  anything else, or an id with runs the source lacks, is a conflict and the
  copy raises ``WorkflowAlreadyStartedError`` without writing anything.  So
  re-running an interrupted copy finishes it.
* **Verified.**  Each copied run is read back from the destination as soon as
  it is written and compared event by event (``engine.events.encode_event``);
  at the end every run's length is checked again (nothing copied later may
  have changed it) and each id's latest run must be the source's.  A
  difference raises ``CorruptionError``.  Runs are compared with what was read
  from the source: copy a store while no worker writes to it, or the copy is a
  snapshot of each run as it was read.
* **Memory.**  One run's history is held at a time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence

import msgspec

from engine._errors import CorruptionError, WorkflowAlreadyStartedError, WorkflowNotFoundError
from engine._events import Event, WorkflowStarted, encode_event
from engine._info import Status, WorkflowInfo

from ._protocol import AppendBatch, RunRef, Store

__all__ = ["CHUNK", "CopyReport", "copy", "copy_order"]

#: The largest batch a copy appends at once.
CHUNK = 1000

Progress = Callable[[int, int], None]


class CopyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``copy`` did: runs seen, copied, skipped (already identical), resumed, events."""

    workflows: int
    runs: int
    copied: int
    skipped: int
    resumed: int
    events: int


def copy_order(infos: Iterable[WorkflowInfo], latest: dict[str, str]) -> list[WorkflowInfo]:
    """The order to create runs in: each id's chain (its latest last), children of running
    parents before their parents.  ``latest`` maps each id to its latest run id."""
    infos = list(infos)
    by_ref = {RunRef(i.id, i.run_id): i for i in infos}
    position = {RunRef(i.id, i.run_id): n for n, i in enumerate(infos)}
    before: dict[RunRef, set[RunRef]] = {ref: set() for ref in by_ref}  # ref -> must come first
    chains: dict[str, list[RunRef]] = {}
    for i in infos:
        chains.setdefault(i.id, []).append(RunRef(i.id, i.run_id))
    for wid, chain in chains.items():
        last = RunRef(wid, latest[wid])
        ordered = [r for r in chain if r != last] + ([last] if last in by_ref else [])
        for a, b in itertools.pairwise(ordered):
            before[b].add(a)
    for ref, info in by_ref.items():
        parent = info.parent
        if parent is None:
            continue
        pref = RunRef(parent.workflow_id, parent.run_id)
        pinfo = by_ref.get(pref)
        if pinfo is not None and pinfo.status is Status.RUNNING:
            before[pref].add(ref)
    after: dict[RunRef, list[RunRef]] = {ref: [] for ref in by_ref}
    for ref, firsts in before.items():
        for first in firsts:
            after[first].append(ref)
    waiting = {ref: len(firsts) for ref, firsts in before.items()}
    ready = [(position[ref], ref) for ref, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[WorkflowInfo] = []
    while ready:
        _, ref = heapq.heappop(ready)
        out.append(by_ref[ref])
        for nxt in after[ref]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, (position[nxt], nxt))
    if len(out) != len(by_ref):  # pragma: no cover - needs a parent cycle among running runs
        done = {RunRef(i.id, i.run_id) for i in out}
        out.extend(i for ref, i in by_ref.items() if ref not in done)
    return out


def _encoded(events: Sequence[Event]) -> list[bytes]:
    return [encode_event(ev) for ev in events]


def _dest_runs(dst: Store) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for info in dst.runs():
        runs.setdefault(info.id, []).append(info.run_id)
    return runs


def _held(src: Store, dst: Store, order: list[WorkflowInfo]) -> dict[RunRef, int]:
    """How many events the destination already holds of each source run it has.

    Raises ``WorkflowAlreadyStartedError`` on the first conflict, before anything
    is written.
    """
    there = _dest_runs(dst)
    src_ids: dict[str, set[str]] = {}
    for info in order:
        src_ids.setdefault(info.id, set()).add(info.run_id)
    for wid, rids in there.items():
        extra = [r for r in rids if r not in src_ids.get(wid, set())]
        if wid in src_ids and extra:
            raise WorkflowAlreadyStartedError(
                f"the destination has run(s) {', '.join(extra)} of workflow {wid!r} that the "
                f"source does not: refusing to mix two histories of one id (nothing was copied)"
            )
    held: dict[RunRef, int] = {}
    for info in order:
        if info.run_id not in there.get(info.id, ()):
            continue
        theirs = _encoded(dst.read(info.id, info.run_id))
        ours = _encoded(src.read(info.id, info.run_id))
        if len(theirs) > len(ours) or theirs != ours[: len(theirs)]:
            raise WorkflowAlreadyStartedError(
                f"the destination already has run {info.run_id} of workflow {info.id!r} "
                f"with a different history (nothing was copied)"
            )
        held[RunRef(info.id, info.run_id)] = len(theirs)
    return held


def copy(src: Store, dst: Store, *, progress: Progress | None = None) -> CopyReport:
    """Copy every run of ``src`` into ``dst`` and verify it by reading it back.

    ``progress(done, total)`` is called after each run (``total`` runs).  One
    run's history is in memory at a time.  See the module docstring for the
    order, what is kept, and runs the destination already has.

    >>> import stores
    >>> from engine import Client
    >>> src, dst = stores.open("memory:"), stores.open("memory:")
    >>> wid = Client(src).start("send_invoice", "cust-1", id="invoice-1")
    >>> stores.copy(src, dst).copied, dst.describe(wid).run_id == src.describe(wid).run_id
    (1, True)
    >>> stores.copy(src, dst).skipped
    1
    """
    infos = list(src.runs())
    latest: dict[str, str] = {}
    for info in infos:
        if info.id not in latest:
            latest[info.id] = src.describe(info.id).run_id
    order = copy_order(infos, latest)
    held_before = _held(src, dst, order)
    copied = skipped = resumed = appended = 0
    lengths: dict[RunRef, int] = {}
    for n, info in enumerate(order):
        ref = RunRef(info.id, info.run_id)
        events = src.read(info.id, info.run_id)
        held = held_before.get(ref, 0)
        lengths[ref] = len(events)
        if held == len(events):
            skipped += 1
        else:
            if held == 0:
                started = events[0]
                assert isinstance(started, WorkflowStarted)
                dst.create(started)
                held = 1
                copied += 1
            else:
                resumed += 1
            appended += _append(dst, info, events, held)
            _check_run(dst, info, events)
        if progress is not None:
            progress(n + 1, len(order))
    _check_all(dst, lengths, latest)
    return CopyReport(
        workflows=len(latest),
        runs=len(order),
        copied=copied,
        skipped=skipped,
        resumed=resumed,
        events=appended,
    )


def _append(dst: Store, info: WorkflowInfo, events: list[Event], held: int) -> int:
    """Append ``events[held:]`` to the destination run in chunks; returns how many."""
    at = held
    while at < len(events):
        chunk = events[at : at + CHUNK]
        (result,) = dst.append(
            [AppendBatch(workflow_id=info.id, run_id=info.run_id, events=chunk, expected_length=at)]
        )
        if result.error is not None:
            raise result.error
        at += len(chunk)
    return at - held


def _check_run(dst: Store, info: WorkflowInfo, events: list[Event]) -> None:
    """The destination run reads back exactly as the source run was read."""
    try:
        theirs = dst.read(info.id, info.run_id)
    except WorkflowNotFoundError:  # pragma: no cover - a store that loses a create
        raise CorruptionError(
            f"copy check: run {info.run_id} of workflow {info.id!r} is missing from the "
            f"destination after it was written"
        ) from None
    ours = _encoded(events)
    got = _encoded(theirs)
    if got != ours:
        at = next(
            (i for i, (a, b) in enumerate(zip(ours, got, strict=False)) if a != b),
            min(len(ours), len(got)),
        )
        raise CorruptionError(
            f"copy check: run {info.run_id} of workflow {info.id!r} reads back differently "
            f"at event {at} ({len(got)} events read, {len(ours)} written)"
        )


def _check_all(dst: Store, lengths: dict[RunRef, int], latest: dict[str, str]) -> None:
    """Nothing copied later changed a run copied earlier; each id's latest run is the same."""
    for ref, length in lengths.items():
        got = dst.describe(ref.workflow_id, ref.run_id).history_length
        if got != length:
            raise CorruptionError(
                f"copy check: run {ref.run_id} of workflow {ref.workflow_id!r} has {got} "
                f"events in the destination but {length} in the source"
            )
    for wid, rid in latest.items():
        now = dst.describe(wid).run_id
        if now != rid:
            raise CorruptionError(
                f"copy check: the latest run of workflow {wid!r} is {now} in the destination "
                f"but {rid} in the source"
            )
