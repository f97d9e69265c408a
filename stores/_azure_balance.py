"""AzureBlobStore's balancing: the handles of a task queue share its partitions fairly.

Every handle that claims from a queue keeps a presence blob there
(``w/<lease id>``, written every third of a lease); the live ones (written
within two thirds of a lease) share the queue's partitions, ``ceil(partitions / live)``
each (``_share``).  A handle below its share takes free partitions at its
scans (``Partitions.scan``); one above it hands partitions back only when
another handle wants them, i.e. when no partition is free (``_balance``):
it drains them (hands out no more of their runs) and releases each drained
lease once no owner holds a run there (``released``: at once when a release
empties it).  A part of ``stores._azure_partitions.Partitions``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine._errors import StoreError

from . import _azure_format as fmt
from ._azure_blobs import Blobs
from ._azure_runs import Run

if TYPE_CHECKING:
    from ._azure_partitions import Partition
    from .azure import AzureBlobStore

__all__ = ["Balance"]

log = logging.getLogger("temporalpp.stores.azure")


class Balance:
    """Fair shares and handovers (a part of ``Partitions``, which sets these up)."""

    store: AzureBlobStore
    blobs: Blobs
    names: fmt.Names
    count: int
    lease_seconds: int
    lease_id: str
    poll_interval: float
    held: dict[tuple[str, int], Partition]
    _scanned: dict[str, float]
    _present: dict[str, tuple[float, datetime]]

    if TYPE_CHECKING:

        def of(self, run: Run) -> tuple[str, int]: ...
        def holding(self, run: Run) -> Partition | None: ...
        def index(self, run: Run) -> None: ...
        def scan(self, queue: str, *, prefer: Partition | None = None) -> None: ...
        def save(self, part: Partition) -> None: ...
        def lose(self, part: Partition) -> None: ...

    def _balance(
        self, mine: list[Partition], share: int, *, wanted: bool, prefer: Partition | None
    ) -> None:
        """Drain partitions above ``share`` that another handle wants; hand back idle drained ones.

        ``wanted``: every partition of the queue is leased, so a live handle below
        its share waits for one of ours (if we hold more than our share, some
        handle holds less).  Partitions to give are chosen ``prefer`` first (the
        one whose run an owner just released), then by fewest claimed runs; a
        draining partition hands out no more runs and is handed back once its
        claimed runs are released, so a busy handle gives way within one
        activity's time.  Nobody wants ours while free partitions remain.

        NB: a drain lasts a lease at most: one whose owners keep it busy longer
        (a long activity) serves its due runs again and is not drained for four
        leases; another partition is tried instead.  So a due run waits for a
        handover at most a lease, and a graceful handover never takes a run
        from an owner that holds it.
        """
        excess = len(mine) - share
        draining = [part for part in mine if part.draining]
        if excess <= 0:
            for part in draining:  # a handle left: keep them after all
                self.undrain(part)
            return
        claimed: dict[tuple[str, int], int] = {}
        for run in self.store._claimed():
            where = self.of(run)
            claimed[where] = claimed.get(where, 0) + 1
        mono = time.monotonic()
        for part in list(draining):
            if claimed.get((part.queue, part.p)) and mono - part.draining > self.lease_seconds:
                self.undrain(part)
                part.gave_up = mono
                draining.remove(part)
        if wanted and len(draining) < excess:
            candidates = sorted(
                (
                    part
                    for part in mine
                    if not part.draining and mono - part.gave_up > 4 * self.lease_seconds
                ),
                key=lambda part: (part is not prefer, claimed.get((part.queue, part.p), 0)),
            )
            for part in candidates[: excess - len(draining)]:
                part.draining = mono
                draining.append(part)
        for part in draining:
            if not claimed.get((part.queue, part.p)):
                self.hand_back(part)
                mine.remove(part)

    def undrain(self, part: Partition) -> None:
        """Keep a draining partition after all: its due runs go back into the ready index."""
        part.draining = 0.0
        for key in part.runs:
            run = self.store._cached(key)
            if run is not None:
                self.index(run)

    def released(self, run: Run) -> None:
        """An owner let ``run`` go: a partition another handle wants changes hands now.

        Scans the run's queue (at most every ``poll_interval``, as ``claim``
        does, so this costs no extra requests) if this handle claims from it.
        """
        part = self.holding(run)
        if part is None or part.queue not in self._present:
            return
        mono = time.monotonic()
        try:
            if mono - self._scanned.get(part.queue, -1e9) >= self.poll_interval:
                self._scanned[part.queue] = mono
                self.scan(part.queue, prefer=part)
            elif part.draining and all(self.of(r) != self.of(run) for r in self.store._claimed()):
                self.hand_back(part)
        except StoreError as exc:  # the release is done; the next claim balances again
            log.warning("partition %s/%d: not balanced after a release: %s", part.queue,
                        part.p, exc)  # fmt: skip

    def _share(self, queue: str, seen: dict[str, datetime]) -> int:
        """This handle's fair share of the queue's partitions (writing its presence if due)."""
        name = f"{self.names.queue_dir(queue)}w/{self.lease_id}"
        mono = time.monotonic()
        wrote = self._present.get(queue)
        if wrote is None or self.lease_id not in seen or mono - wrote[0] >= self.lease_seconds / 3:
            wrote = self._present[queue] = (mono, self.blobs.touch(name))
        # the service's clock now: our presence's Last-Modified plus the time since we wrote it
        now = wrote[1] + timedelta(seconds=mono - wrote[0])
        alive = 1 + sum(
            1
            for handle, when in seen.items()
            # NB: two thirds of a lease (a live handle rewrites every third): a dead handle
            # stops counting before its leases expire, so its partitions are taken over at
            # once, not after a second wait for its presence to age out
            if handle != self.lease_id
            and when >= now - timedelta(seconds=self.lease_seconds * 2 / 3)
        )
        return -(-self.count // alive)

    def hand_back(self, part: Partition) -> None:
        """Give a partition back (graceful): save its checkpoint, release its lease."""
        try:
            self.save(part)
            if (part.queue, part.p) in self.held:
                self.blobs.release(part.ckpt, self.lease_id)
        finally:
            self.lose(part)
