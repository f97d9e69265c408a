"""AzureBlobStore's histories: a run's append blobs, read and appended with position conditions.

A run's history is segment 0 (``.../<ordinal>``) and, once a segment holds
``segment_blocks`` blocks, segments 1, 2... (``.../<ordinal>.<k>``).  Its
``WorkflowStarted`` is event 0; it lives in segment 0's metadata when it fits
(so a start is one request), else in segment 0's first frame.

Rules that make concurrent writers safe without any lock:

* **Every append names its position** (``appendpos``): it lands only if the
  segment is exactly as long as the writer last saw it.  Exactly one of several
  racing writers wins; the others get ``Moved``, read what was added
  (:meth:`Log.refresh`), re-check (a decision conflicts if a decision came in;
  external events simply go again at the new end) and retry.
* **Every batch carries a fresh batch id.**  A reply can be lost after the block
  landed (a timeout, a 5xx, or the SDK's own retry meeting a 412): the writer
  then reads from the position it knows; its batch id there means done.  As
  every append names its position, a late copy can only land there: at most one.
* **A segment rolls over at ``segment_blocks`` blocks**, counted exactly: a writer
  knows the block count from the read or append that told it the length, and
  never appends to a segment it knows to be full; readers go on to the next
  segment when, and only when, a segment is full.  A batch never spans segments
  (its last block may take a segment past ``segment_blocks``, never past Azure's
  50,000 while a batch has fewer than 50,000 - ``segment_blocks`` blocks).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Final

from engine._errors import CorruptionError, StoreError, WorkflowNotFoundError
from engine._events import Event, Payload, WorkflowStarted, WorkflowTaskCompleted, with_index

from . import _azure_format as fmt
from ._azure_blobs import Blobs, Missing, Moved, Unsure
from ._summary import RunSummary, check_decision

__all__ = ["Log", "Run"]

_TRIES: Final = 40  # appends of one batch lost to concurrent writers before giving up
_BACKOFF: Final = 0.002  # seconds; doubled per lost race from the third on, with jitter


class Run:
    """One run as this handle last saw it: its events, its summary and where its end is."""

    __slots__ = (
        "blocks",
        "end",
        "etag0",
        "events",
        "hb",
        "hb_dropped",
        "hb_from",
        "key",
        "last",
        "meta",
        "ordinal",
        "owner",
        "resume",
        "seg",
        "started",
        "summary",
    )

    def __init__(self, ordinal: int, started: WorkflowStarted, meta: dict[str, str]) -> None:
        self.ordinal = ordinal
        self.started = started
        self.key = (started.workflow_id, started.run_id)
        self.events: list[Event] = [with_index(started, 0)]
        self.summary = RunSummary(started)
        self.meta = meta  # segment 0's metadata as last seen
        self.etag0 = ""
        self.seg = 0  # the segment the end is in
        self.end = 0  # its length: where the next append goes
        self.resume = 0  # where reading resumes (before a batch still being written)
        self.blocks = 0  # its committed blocks
        self.owner: str | None = None  # the claiming owner, in this handle
        self.hb: dict[int, Payload] = {}  # heartbeat slots this handle wrote or read
        self.hb_from: int | None = None  # activities scheduled from here on have no slot but ours
        self.hb_dropped = False  # its slots were deleted (it closed)
        # where this handle's last append landed: (index, segment, start, end, blocks, payload)
        self.last: tuple[int, int, int, int, int, bytes] | None = None

    @property
    def workflow_id(self) -> str:
        return self.key[0]

    @property
    def run_id(self) -> str:
        return self.key[1]

    def catch_up(self, touch: fmt.Touch) -> bool:
        """Whether this copy has the batch ``touch`` tells of, taking it from there if it can."""
        if touch.end < 0:
            return False
        if self.seg > touch.segment or (self.seg == touch.segment and self.resume >= touch.end):
            return True  # read (or written) past it already
        here = (self.seg, self.resume, self.end, len(self.events))
        if not touch.events or here != (touch.segment, touch.start, touch.start, touch.at):
            return False
        self.take(fmt.decode_events(touch.events))
        self.end = self.resume = touch.end
        self.blocks = touch.blocks
        return True

    def take(self, events: Sequence[Event]) -> list[Event]:
        """Number events that were appended at the end; fold them; return them."""
        start = len(self.events)
        stamped = [with_index(ev, start + i) for i, ev in enumerate(events)]
        self.events.extend(stamped)
        self.summary.apply(stamped)
        return stamped

    def apply_meta(self) -> None:
        """Take the backoff and reason a release saved, unless a decision came since."""
        saved = fmt.read_blocked(self.meta)
        if saved is None:
            return
        at, not_before, blocked = saved
        if any(type(ev) is WorkflowTaskCompleted for ev in self.events[at:]):
            return
        self.summary.not_before = not_before
        self.summary.blocked = blocked

    def scheduled_at(self, seq: int) -> int | None:
        """The index of activity ``seq``'s ``ActivityScheduled`` (latest first)."""
        for ev in reversed(self.events):
            if getattr(ev, "seq", None) == seq and type(ev).__name__ == "ActivityScheduled":
                return ev.index
        return None


class Log:
    """Reads and appends run histories in one container."""

    def __init__(
        self, blobs: Blobs, names: fmt.Names, *, segment_blocks: int, max_block: int
    ) -> None:
        self.blobs = blobs
        self.names = names
        self.segment_blocks = segment_blocks
        self.max_block = max_block

    def _where(self, run: Run) -> str:
        return f"{self.blobs.where}: history of {run.workflow_id[:80]!r} run {run.run_id!r}"

    # ------------------------------------------------------------------ reading

    def load(self, workflow_id: str, ordinal: int) -> Run | None:
        """Read run ``ordinal`` of an id from its blobs; None if it does not exist."""
        name = self.names.segment(workflow_id, ordinal, 0)
        first = self.blobs.read(name)
        if first is None:
            return None
        started = fmt.started_from_meta(first.metadata)
        data, base = first.data, 0
        if started is None:  # a large start: the first frame of segment 0
            batches, _ = fmt.frames(data, 0, lambda: f"{self.blobs.where}: {name}")
            if not batches:
                # created, its start not yet written (or the writer died): not there yet
                raise StoreError(
                    f"{self.blobs.where}: run {ordinal} of {workflow_id[:80]!r} is being "
                    "created (its WorkflowStarted is not written yet); try again"
                )
            [ev] = fmt.decode_events(batches[0].payload)
            if not isinstance(ev, WorkflowStarted):
                raise CorruptionError(f"{self.blobs.where}: {name} does not begin with a start")
            started = ev
            base = batches[0].end
            data = data[base:]
        run = Run(ordinal, started, first.metadata)
        run.etag0 = first.etag
        run.end = run.resume = base
        self._take(run, data, first.size, first.blocks)
        if run.blocks >= self.segment_blocks:
            self.refresh(run)  # later segments
        run.apply_meta()
        return run

    def refresh(self, run: Run, look_for: str | None = None) -> int | None:
        """Read what was appended since; returns where batch ``look_for`` landed, if it did."""
        found: int | None = None
        while True:
            if run.blocks >= self.segment_blocks:  # full: the rest is in the next segment
                run.seg, run.end, run.resume, run.blocks = run.seg + 1, 0, 0, 0
            name = self.names.segment(run.workflow_id, run.ordinal, run.seg)
            try:
                r = self.blobs.read(name, run.resume)
            except ValueError:
                raise CorruptionError(
                    f"{self._where(run)}: {name} is shorter than the {run.resume} bytes read "
                    "before (blobs never shrink)"
                ) from None
            if r is None:
                if run.seg == 0:
                    raise WorkflowNotFoundError(
                        f"workflow {run.workflow_id!r} run {run.run_id!r} is gone (its history "
                        "blob was deleted)"
                    )
                return found  # the next segment is not written yet
            hit = self._take(run, r.data, r.size, r.blocks, look_for)
            if run.seg == 0:
                run.meta, run.etag0 = r.metadata, r.etag
                run.apply_meta()
            if hit is not None:
                found = hit
            if r.blocks < self.segment_blocks:
                return found

    def _take(
        self, run: Run, data: bytes, size: int, blocks: int, look_for: str | None = None
    ) -> int | None:
        batches, resume = fmt.frames(data, run.resume, lambda: self._where(run))
        found = None
        for b in batches:
            if b.batch == look_for:
                found = len(run.events)
            run.take(fmt.decode_events(b.payload))
        run.resume, run.end, run.blocks = resume, size, blocks
        return found

    # ------------------------------------------------------------------ appending

    def append(
        self,
        run: Run,
        events: Sequence[Event],
        expected: int | None,
        *,
        unless: Callable[[Run], bool] | None = None,
    ) -> int:
        """Append one batch (see the module rules); the index of its first event.

        Raises ``ConflictError``/``WorkflowAlreadyClosedError`` (from
        ``check_decision`` on what is really there) and ``StoreError``.  With
        ``unless``, the batch is not appended (-1) once ``unless(run)`` holds on
        what is really there (a store-made event that is delivered already).
        """
        payload = fmt.encode_events(events)
        lost = 0
        for _ in range(_TRIES):
            if unless is not None and unless(run):
                return -1
            tail = run.events[expected:] if expected is not None else []
            check_decision(run.summary, events, tail, expected)
            batch_id = uuid.uuid4().hex
            blocks = fmt.pack_frames(batch_id, payload, self.max_block)
            if run.blocks >= self.segment_blocks:  # NB: the readers' rule exactly
                run.seg, run.end, run.resume, run.blocks = run.seg + 1, 0, 0, 0
                # NB: the first writer of a segment creates it (409 for the others)
                self.blobs.create_append(self.names.segment(run.workflow_id, run.ordinal, run.seg))
            name = self.names.segment(run.workflow_id, run.ordinal, run.seg)
            index = len(run.events)
            position = start = run.end
            run.last = None
            try:
                for block in blocks:
                    count, etag = self.blobs.append(name, block, position)
                    position += len(block)
                    if run.seg == 0:
                        run.etag0 = etag
            except (Moved, Unsure):
                found = self.refresh(run, look_for=batch_id)
                if found is not None:
                    return found
                lost += 1
                if lost > 2:  # NB: busy writers: step back a little, or one of them starves
                    time.sleep(random.uniform(0, _BACKOFF * 2 ** min(lost - 2, 8)))
                continue
            except Missing:
                if run.seg == 0:
                    raise WorkflowNotFoundError(
                        f"workflow {run.workflow_id!r} run {run.run_id!r} is gone"
                    ) from None
                self.blobs.create_append(name)  # the first writer of a new segment
                continue
            run.take(events)
            run.end = run.resume = position
            run.blocks = count
            run.last = (index, run.seg, start, position, count, payload)
            return index
        raise StoreError(
            f"{self._where(run)}: {_TRIES} appends in a row lost to concurrent writers"
        )

    def create(self, workflow_id: str, ordinal: int, started: WorkflowStarted) -> Run | None:
        """Create run ``ordinal`` (the atomic step); None if that ordinal exists already."""
        name = self.names.segment(workflow_id, ordinal, 0)
        meta = fmt.started_meta(started)
        if not self.blobs.create_append(name, meta):
            return None
        run = Run(ordinal, started, meta)
        if "s" not in meta:  # too large for metadata: it is the first frame
            block = fmt.pack_frames(uuid.uuid4().hex, fmt.encode_events([started]), 1 << 40)[0]
            try:
                run.blocks, run.etag0 = self.blobs.append(name, block, 0)
            except (Moved, Unsure):
                fresh = self.load(workflow_id, ordinal)
                if fresh is None:  # pragma: no cover - we just created it
                    raise StoreError(f"{self.blobs.where}: {name} vanished") from None
                return fresh
            run.end = run.resume = len(block)
        return run
