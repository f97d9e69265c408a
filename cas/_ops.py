"""Whole-CAS operations: ``verify`` (rehash every blob) and ``gc`` (mark and sweep).

GC theory of operation
----------------------

A blob is garbage when no history references it.  Workers put a payload's blob
*before* they append the event that references it, so at any moment there are
blobs that are referenced by nothing yet.  ``gc`` therefore never trusts the
mark alone:

1. **Mark.**  ``start = now()``; then every run's history is read and every
   ``CasRef`` digest in it collected (``engine.events.cas_digests``).
2. **Sweep.**  A blob is deleted only if it is unmarked *and* was last put
   before ``start - grace``, with the CAS's conditional delete
   (``delete(digest, older_than=start - grace)``), which is atomic against a
   concurrent put.

A worker referencing content during or after the mark either put it (a new
blob, young) or re-put it (dedup refreshes the blob's time, young again), so it
survives; ``grace`` covers clock skew between machines and a worker that put a
blob a while before appending its event.  Referenced digests the CAS does not
hold are reported as ``missing``: that is data loss, found early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from engine._errors import CorruptionError, StoreError, WorkflowNotFoundError
from engine.events import cas_digests

from ._protocol import CAS, BlobInfo, BlobNotFoundError

if TYPE_CHECKING:
    from stores import Store

__all__ = ["DamagedBlob", "GcReport", "VerifyReport", "gc", "verify"]


class DamagedBlob(msgspec.Struct, frozen=True):
    """A blob ``verify`` could not vouch for, and why (the error it raised)."""

    digest: str
    reason: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``verify`` found: blobs ``checked``, ``bytes`` read, the ``damaged`` ones."""

    checked: int
    bytes: int
    damaged: list[DamagedBlob]

    @property
    def ok(self) -> bool:
        """True when no blob is damaged."""
        return not self.damaged


class GcReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``gc`` did (or, with ``dry_run``, would do).

    ``marked``: distinct digests the histories reference; ``kept``: blobs left
    in place; ``deleted`` and ``bytes_freed``: what the sweep removed;
    ``missing``: referenced digests the CAS does not hold (lost data);
    ``runs_scanned``: histories read; ``temp_files_removed``: leftovers of
    crashed puts (backends that have them).
    """

    marked: int
    kept: int
    deleted: list[str]
    bytes_freed: int
    missing: list[str]
    runs_scanned: int
    temp_files_removed: int = 0
    dry_run: bool = False


@runtime_checkable
class _HasCleanup(Protocol):
    def cleanup(self) -> int: ...


def verify(cas: CAS, progress: Callable[[BlobInfo], object] | None = None) -> VerifyReport:
    """Rehash every blob; report the damaged ones.  Never changes anything.

    ``progress`` is called with each blob after it has been checked.  A blob
    deleted while ``verify`` runs is skipped; one that cannot be read (an I/O
    error) counts as damaged.

    >>> from cas import MemoryCAS, verify
    >>> cas = MemoryCAS()
    >>> _ = cas.put(b"x" * 10)
    >>> verify(cas)
    VerifyReport(checked=1, bytes=10, damaged=[])
    """
    checked = size = 0
    damaged: list[DamagedBlob] = []
    for info in cas.blobs():
        try:
            size += len(cas.get(info.digest))
        except BlobNotFoundError:
            continue  # deleted since it was listed
        except (CorruptionError, StoreError) as exc:
            damaged.append(DamagedBlob(info.digest, str(exc)))
        checked += 1
        if progress is not None:
            progress(info)
    return VerifyReport(checked=checked, bytes=size, damaged=damaged)


def gc(
    store: Store,
    cas: CAS,
    *,
    grace: float = 600.0,
    dry_run: bool = False,
    now: Callable[[], float] = time.time,
) -> GcReport:
    """Delete the blobs no history in ``store`` references (see the module docstring).

    Only blobs last put more than ``grace`` seconds before the mark began are
    deleted.  ``dry_run`` deletes nothing and reports what would go; ``now``
    (``time.time()`` seconds) is for tests.

    >>> import time, stores
    >>> from cas import MemoryCAS, gc
    >>> cas = MemoryCAS()
    >>> orphan = cas.put(b"orphan")
    >>> report = gc(stores.MemoryStore(), cas, grace=0, now=lambda: time.time() + 1)
    >>> report.deleted == [orphan], cas.has(orphan)
    (True, False)
    """
    if grace < 0:
        raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
    start = now()
    cutoff = start - grace
    marked: set[str] = set()
    runs = 0
    for info in store.runs():
        try:
            events = store.read(info.id, info.run_id)
        except WorkflowNotFoundError:
            continue  # removed since it was listed
        marked.update(cas_digests(events))
        runs += 1

    present: set[str] = set()
    deleted: list[str] = []
    kept = freed = 0
    for blob in cas.blobs():
        present.add(blob.digest)
        if blob.digest in marked or blob.modified >= cutoff:
            kept += 1
        elif dry_run or cas.delete(blob.digest, older_than=cutoff):
            deleted.append(blob.digest)
            freed += blob.size
        elif cas.has(blob.digest):
            kept += 1  # re-put since it was listed: young again
    temp = 0
    if not dry_run and isinstance(cas, _HasCleanup):
        temp = cas.cleanup()
    return GcReport(
        marked=len(marked),
        kept=kept,
        deleted=deleted,
        bytes_freed=freed,
        missing=sorted(marked - present),
        runs_scanned=runs,
        temp_files_removed=temp,
        dry_run=dry_run,
    )
