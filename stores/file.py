"""FileStore: one greppable log file per run, shared by any number of processes.

>>> import tempfile
>>> from stores.file import FileStore
>>> with tempfile.TemporaryDirectory() as root, FileStore(root, durability="none") as store:
...     store.list().counts
{}

Layout under the root (every name is made by the store; ids never become paths)::

    FORMAT                           "temporalpp file store 1"
    runs/<shard>/<name>/lock         the workflow id's lock file (portalocker)
    runs/<shard>/<name>/00000001.log one file per run, in start order
    index/lock                       the journal lock; holds the journal generation
    index/journal.<gen>              the shared journal (append-only)
    index/snapshot.<gen>             the index as of the start of journal.<gen>
    index/recover                    taken while a store checks its logs after a reboot
    owners/  sessions/               liveness locks (``stores._liveness``) of claim
                                     owners and of open store handles

``<name>`` and ``<shard>`` come from ``stores._names`` (readable for short ids,
a digest for long ones); the real id is inside each run's ``WorkflowStarted``.
Logs are framed by batch and checksummed per line (``stores._fileformat``).

Theory of operation
-------------------

* **The logs are the truth.**  Everything else (the ready index, visibility,
  claims, heartbeat slots, backoff) is an in-memory fold that each handle keeps
  of a *snapshot* plus the *journal* after it, and can be rebuilt from the logs.
* **Locks.**  A workflow id's lock (``runs/.../lock``, exclusive) covers every
  change to its runs: appends, creates, claims, releases, truncating a torn
  tail.  An ``append`` of many ids takes their locks in name order (no
  deadlock); cross-run effects (a child's start, a parent's notice) run after
  the batch's locks are released, each under its target's lock.  The journal
  lock is held to write one group of records (or a snapshot, when compacting);
  nothing waits for another lock while holding it.
* **Journal before log.**  A writer, holding the id's lock, journals a ``Touch``
  record for the run *before* writing the log.  Other handles tail the journal
  on every call; a touched run is re-read from its log under the id's lock
  (shared), which waits out a writer still busy with it (``claim`` does not
  wait: such a run is read on a later call, and ``claim`` asks to be called
  again soon).  So a process killed between the two writes leaves a harmless
  touch, never an unseen append.  The ready index holds running runs only, so
  a poll never touches a closed run.
* **Claims** are journal records written under the id's lock; an owner is alive
  exactly while its liveness lock is held (``stores._liveness``: the kernel drops
  it when the process dies, so its runs are claimable at once).  As the protocol
  says for such backends, ``lease`` is not consulted.  An owner taken up again
  by a new handle (``OwnerEpoch``) voids the claims of its previous life.
* **Cross-run effects** are marked in the batch's ``Touch`` (``fx``) and
  confirmed by a ``Done`` record; if the writer's handle dies in between (its
  session lock is free), another handle re-applies them, idempotently.
* **Compaction.**  When the journal outgrows ``CHECKPOINT_BYTES`` (and twice the
  last snapshot), a handle writes ``snapshot.<gen+1>``, starts
  ``journal.<gen+1>`` and bumps the generation, all under the journal lock.
* **After a reboot** (the kernel's boot id changed since the index last saw it)
  the page cache may have lost journal records that the logs kept (or the
  reverse, without fsync): the first handle to open checks every log file's
  size against the index, re-reads the ones that differ, re-applies their
  effects and journals what changed.  Without a snapshot, the index is rebuilt
  from the logs alone.

Durability
----------

* ``"fsync"``: ``append`` returns after ``fdatasync`` of every log it wrote (one
  per file: group commit) and of the directories of new files.  Survives
  process crashes and power loss / OS crashes: an acknowledged batch is there.
* ``"flush"``: ``append`` returns once the bytes are in the OS (``write(2)``):
  survives a process crash (``kill -9``) with every acknowledged batch.  The
  logs it wrote are synced at most a second apart while it appends, and at
  ``close()``: a power loss loses at most the batches of the last second or so
  (or since the last sync, if the store went idle before ``close``).
* ``"none"``: as ``"flush"`` for process crashes (the bytes reach the OS before
  ``append`` returns, which other processes need to see them), but never syncs:
  a power loss loses whatever the OS had not written back yet (typically up to
  ~30 s).  Buffering batches inside the process across calls would lose them to
  a mere process crash and would let another process append in their place, so
  no level does that.

At every level a batch torn by a crash is dropped whole (the next append
truncates it), and damage inside a log raises ``CorruptionError``.  The tests
cut a log at every byte of its last batch, flip bytes, count the syncs of each
level, and ``kill -9`` worker processes mid-flight (``tests/test_store_file.py``).
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import errno
import functools
import heapq
import itertools
import os
import pathlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar

import msgspec
import portalocker

from engine._errors import (
    CorruptionError,
    StoreError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    CLOSING_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Payload,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    with_index,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

from . import _names
from ._fileformat import (
    Boot,
    Claim,
    Done,
    Heartbeat,
    LogBatch,
    OwnerEpoch,
    Record,
    Release,
    RunRecord,
    SnapshotEnd,
    SnapshotHead,
    SummaryRecord,
    Touch,
    decode_event,
    decode_events,
    dumps,
    encode_record,
    frame_log_line,
    parse_log,
    split_records,
)
from ._liveness import Liveness
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

__all__ = ["FileStore"]

_FORMAT: Final = b"temporalpp file store 1\n"
_DURABILITY: Final = ("fsync", "flush", "none")
_LOG_NAME: Final = re.compile(r"(\d{8})\.log")
_FIELDS: Final = sorted(RunSummary.__slots__)
_SUMMARY_COMPLETE: Final = set(SummaryRecord.__struct_fields__) == set(_FIELDS)
_FD_CACHE: Final = 128
_FLUSH_EVERY: Final = 1.0  # seconds between syncs at durability "flush"


def _boot_id() -> str | None:
    """The kernel's id of this boot (Linux), or None where the OS does not tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().decode().strip() or None
    except OSError:
        return None


def _check_ids(workflow_id: object, run_id: object) -> None:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    if not isinstance(run_id, str):
        raise TypeError(f"a run id must be a string, got {run_id!r}")


class _Wid:
    """A workflow id's directory and its runs in start order."""

    __slots__ = ("damaged", "dir", "id", "rel", "runs")

    def __init__(self, workflow_id: str, root: pathlib.Path) -> None:
        self.id = workflow_id
        self.rel = f"{_names.shard(workflow_id)}/{_names.name(workflow_id)}"
        self.dir = root / "runs" / self.rel
        self.runs: list[_Run] = []  # sorted by file number
        self.damaged: str | None = None  # a log whose first line is unreadable


class _Run:
    """What a handle knows of one run: its summary and where its log ends."""

    __slots__ = (
        "batches",
        "corrupt",
        "hb",
        "key",
        "last_wtc",
        "marks",
        "n",
        "owner",
        "queued",
        "rel",
        "rid",
        "size",
        "summary",
        "wid",
    )

    def __init__(self, wid: _Wid, rid: str, n: int) -> None:
        self.wid = wid
        self.rid = rid
        self.n = n
        self.key = (wid.id, rid)
        self.reset()
        self.owner: str | None = None
        self.queued: datetime | None = None  # the due time of its ready-index entry
        self.hb: dict[int, Payload] = {}
        # the last release: (length then, not_before, blocked), which hold until a decision
        self.rel: tuple[int, datetime | None, str | None] | None = None

    def reset(self) -> None:
        self.summary: RunSummary | None = None  # None: no complete first batch seen yet
        self.size = 0  # the end of the last complete batch
        self.batches = 0
        self.last_wtc = -1
        # (first event index, byte offset, batch number) per batch; None: build on read
        self.marks: list[tuple[int, int, int]] | None = []
        self.corrupt: str | None = None

    @property
    def path(self) -> pathlib.Path:
        return self.wid.dir / f"{self.n:08d}.log"

    @property
    def ref(self) -> RunRef:
        return RunRef(workflow_id=self.wid.id, run_id=self.rid)


class _Superseded(Exception):
    """A run's file holds another run (a torn create whose file number was reused)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class _Plan:
    """What one locked section will write: bytes per log, and effects for after."""

    __slots__ = ("base", "data", "effects", "events", "fx", "locked", "new")

    def __init__(self, locked: Iterable[str]) -> None:
        self.locked = set(locked)
        self.data: dict[_Run, bytearray] = {}
        self.base: dict[_Run, tuple[int, int]] = {}  # (size, batches) before the plan
        self.events: dict[_Run, list[Event]] = {}
        self.new: set[_Run] = set()
        self.fx: set[_Run] = set()
        self.effects: list[tuple[Any, ...]] = []


_F = TypeVar("_F", bound=Callable[..., Any])


def _store_errors(method: _F) -> _F:
    """Translate the OS's errors (disk full, I/O error) into ``StoreError``, with the cause."""

    @functools.wraps(method)
    def wrapper(self: FileStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise StoreError(f"file store {self._root}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class FileStore:
    """An event store in a directory of log files (see the module docstring).

    ``durability`` is ``"fsync"``, ``"flush"`` or ``"none"``.  Any number of
    handles, in any number of processes on one machine, may share ``path``.
    """

    #: Compact the journal into a snapshot beyond this size (and twice the last snapshot).
    CHECKPOINT_BYTES: ClassVar[int] = 8 << 20

    def __init__(self, path: str | os.PathLike[str], durability: str = "fsync") -> None:
        if durability not in _DURABILITY:
            raise ValueError(f"unknown durability {durability!r}: use one of {_DURABILITY}")
        self.durability = durability
        self._root = pathlib.Path(path).absolute()
        self._mu = threading.RLock()
        self._closed = True
        self._shut = False
        self._session = secrets.token_hex(8)
        self._held_locks: dict[str, int] = {}
        self._lock_fds: OrderedDict[str, int] = OrderedDict()
        self._log_fds: OrderedDict[_Run, int] = OrderedDict()
        self._unsynced: set[_Run] = set()
        self._last_sync = time.monotonic()
        self._held_owners: set[str] = set()
        self._tiebreak = itertools.count()
        self._jlock = self._wfd = self._rfd = -1
        self._reset()
        try:
            self._open_files()
            self._closed = False
            with self._mu:
                self._load()
                self._recover_after_boot()
                self._clean_sessions()
                self._repair()
                self._recover_effects()
                self._sync()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open_files(self) -> None:
        root = self._root
        root.mkdir(parents=True, exist_ok=True)
        marker = root / "FORMAT"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = marker.read_bytes()
            if found and found != _FORMAT:
                raise ValueError(
                    f"{root} holds {found[:40]!r}, not a FileStore of this version"
                ) from None
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(_FORMAT)
        for sub in ("runs", "index", "owners", "sessions"):
            (root / sub).mkdir(exist_ok=True)
        self._sessions = Liveness(root / "sessions")
        self._sessions.hold(self._session)
        self._owners_live = Liveness(root / "owners")
        self._jlock = os.open(root / "index" / "lock", os.O_RDWR | os.O_CREAT, 0o644)

    def _reset(self) -> None:
        """Forget the in-memory index (before loading it again)."""
        self._wids: dict[str, _Wid] = {}
        self._runs: dict[tuple[str, str], _Run] = {}
        self._files: dict[tuple[str, int], _Run] = {}
        self._dirty: dict[_Run, None] = {}
        self._ready: dict[str, list[tuple[datetime, int, _Run]]] = {}
        self._owner_runs: dict[str, set[_Run]] = {}
        self._fx: dict[tuple[str, str, int], Touch] = {}
        self._boot = ""
        self._repairs: list[tuple[_Run, int]] = []  # runs read by a scan, to journal and repair
        self._compact_at = self.CHECKPOINT_BYTES
        self._replaying = False
        self._behind = False  # the next journal was gone when a locked section read on
        for fd in self._log_fds.values():
            os.close(fd)
        self._log_fds.clear()
        self._unsynced.clear()

    def _index_path(self, kind: str, gen: int) -> pathlib.Path:
        return self._root / "index" / f"{kind}.{gen:08d}"

    def _read_gen(self) -> int:
        raw = os.pread(self._jlock, 32, 0).strip()
        return int(raw) if raw else 0

    def _load(self) -> None:
        """The index: the current snapshot and its journal (or a rebuild from the logs)."""
        self._reset()
        gen = self._read_gen()
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        self._rgen = self._wgen = gen
        self._rfd = os.open(self._index_path("journal", gen), os.O_RDONLY | os.O_CREAT, 0o644)
        self._roff = 0
        snapshot = self._index_path("snapshot", gen)
        if (gen or snapshot.exists()) and not self._read_snapshot(snapshot, gen):
            self._reset()
            self._repairs.extend(self._scan())  # no usable snapshot: the logs alone
        self._replaying = True
        try:
            self._tail()
        finally:
            self._replaying = False

    def _read_snapshot(self, path: pathlib.Path, gen: int) -> bool:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        records, used = split_records(data)
        if used != len(data) or len(records) < 2:
            return False
        head, end = records[0], records[-1]
        if not isinstance(head, SnapshotHead) or head.gen != gen:
            return False
        if not isinstance(end, SnapshotEnd) or end.runs != len(records) - 2:
            return False
        trust = head.fields == _FIELDS and _SUMMARY_COMPLETE
        self._boot = head.boot
        for t in head.fx:
            self._fx[(t.w, t.r, t.b)] = t
        for rec in records[1:-1]:
            if not isinstance(rec, RunRecord):
                return False
            run = self._known_run(rec.w, rec.r, rec.n)
            if trust and rec.summary is not None:
                run.summary = _summary_from(rec.summary)
                run.size, run.batches, run.last_wtc = rec.size, rec.batches, rec.last_wtc
                run.marks = None
                run.hb = dict(rec.hb)
                run.rel = rec.rel
                if not rec.dirty:
                    self._dirty.pop(run, None)
            if rec.owner is not None:
                self._set_owner(run, rec.owner)
            self._reindex(run)
        return True

    def _recover_after_boot(self) -> None:
        """After a reboot the page cache is gone: check the logs against the index."""
        boot = _boot_id()
        if boot is not None and self._boot == boot:
            return
        if boot is None and self._other_sessions_alive():
            return
        lock = os.open(self._root / "index" / "recover", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            portalocker.lock(lock, portalocker.LOCK_EX)
            self._tail()
            if boot is not None and self._boot == boot:
                return  # another handle checked while this one waited
            self._repairs.extend(self._scan())
            rec = Boot(s=self._session, id=boot or "")
            self._journal([rec])
            self._boot = rec.id
        finally:
            os.close(lock)  # closing drops the lock

    def _other_sessions_alive(self) -> bool:
        return any(self._session_file_held(e.path) is not False for e in self._session_files())

    def _session_files(self) -> list[os.DirEntry[str]]:
        mine = str(self._sessions._path(self._session))
        return [e for e in os.scandir(self._root / "sessions") if e.path != mine]

    @staticmethod
    def _session_file_held(path: str) -> bool | None:
        """Whether a handle holds this session file; None while it is being taken.

        NB: ``Liveness.hold`` creates the file, locks it, then writes its name: an
        empty file may be between the first two steps, and a probe's lock would
        make that ``hold`` fail, so it is not probed.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size == 0:
                return None
            portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            return True
        finally:
            os.close(fd)
        return False

    def _clean_sessions(self) -> None:
        """Remove the session files of handles that died without closing."""
        for entry in self._session_files():
            if self._session_file_held(entry.path) is False:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)  # session ids are never reused: no race

    # ------------------------------------------------------------------ journal

    def _journal(self, records: Sequence[Record]) -> None:
        """Append records to the current journal (under the journal lock)."""
        data = b"".join(encode_record(r) for r in records)
        portalocker.lock(self._jlock, portalocker.LOCK_EX)
        try:
            gen = self._read_gen()
            if gen != self._wgen or self._wfd < 0:
                if self._wfd >= 0:
                    os.close(self._wfd)
                    self._wfd = -1
                path = self._index_path("journal", gen)
                self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._wgen = gen
            _write_all(self._wfd, data)
        finally:
            portalocker.unlock(self._jlock)

    def _tail(self) -> None:
        """Apply the journal records written since the last call (takes no lock)."""
        while True:
            gen = self._read_gen()  # before reading to the end: see _compact
            chunk = 1 << 16
            while True:
                data = os.pread(self._rfd, chunk, self._roff)
                if not data:
                    break
                records, used = split_records(data)
                self._roff += used
                for rec in records:
                    self._apply(rec)
                if len(data) < chunk:
                    break
                if used == 0:
                    chunk *= 2  # one record longer than the chunk
            if gen == self._rgen:
                return
            try:
                fd = os.open(self._index_path("journal", self._rgen + 1), os.O_RDONLY)
            except FileNotFoundError:  # two compactions behind: start from the snapshot
                if self._held_locks:  # NB: not in the middle of a locked section
                    self._behind = True
                else:
                    self._load()
                return
            os.close(self._rfd)
            self._rfd, self._rgen, self._roff = fd, self._rgen + 1, 0

    def _apply(self, rec: Record) -> None:
        """Fold one journal record written by another handle into this one's index."""
        if rec.s == self._session and not self._replaying:
            return  # applied when written
        match rec:
            case Touch(w=w, r=r, n=n, b=b, fx=fx):
                run = self._known_run(w, r, n)
                self._dirty[run] = None
                if fx:
                    self._fx[(w, r, b)] = rec
            case Done(w=w, r=r, b=b):
                self._fx.pop((w, r, b), None)
            case OwnerEpoch(o=o):
                self._drop_owner(o)
            case Claim(o=o, w=w, r=r):
                claimed = self._runs.get((w, r))
                if claimed is not None:
                    self._set_owner(claimed, o)
            case Release():
                released = self._runs.get((rec.w, rec.r))
                if released is not None and released.owner == rec.o:
                    self._released(released, rec)
            case Heartbeat(w=w, r=r, q=q, d=d):
                beat = self._runs.get((w, r))
                if beat is not None and (
                    beat in self._dirty or beat.summary is None or q in beat.summary.activities
                ):
                    beat.hb[q] = d  # a stale run is checked when it is read again
            case Boot(id=boot):
                self._boot = boot
            case _:
                pass

    def _compact(self) -> None:
        """Write the index as a snapshot and start a new journal generation."""
        portalocker.lock(self._jlock, portalocker.LOCK_EX)
        try:
            gen = self._read_gen()
            if gen != self._rgen:
                return  # another handle compacted: the next _tail follows it
            self._tail()
            new = gen + 1
            path = self._index_path("snapshot", new)
            tmp = path.with_name(path.name + ".tmp")
            size = self._write_snapshot(tmp, new)
            os.replace(tmp, path)
            os.close(os.open(self._index_path("journal", new), os.O_WRONLY | os.O_CREAT, 0o644))
            os.pwrite(self._jlock, b"%020d\n" % new, 0)
        finally:
            portalocker.unlock(self._jlock)
        self._tail()  # moves this handle to the new journal
        old = self._index_path("snapshot", gen - 1)
        for path in (self._index_path("journal", gen - 1), old, old.with_name(old.name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a .tmp is left by a compaction killed half-way
        self._compact_at = max(self.CHECKPOINT_BYTES, 2 * size)

    def _write_snapshot(self, path: pathlib.Path, gen: int) -> int:
        lines = [
            encode_record(
                SnapshotHead(
                    s=self._session,
                    gen=gen,
                    fields=_FIELDS,
                    boot=self._boot,
                    fx=list(self._fx.values()),
                )
            )
        ]
        for run in self._runs.values():
            summary = run.summary
            lines.append(
                encode_record(
                    RunRecord(
                        s=self._session,
                        w=run.wid.id,
                        r=run.rid,
                        n=run.n,
                        size=run.size,
                        batches=run.batches,
                        last_wtc=run.last_wtc,
                        owner=run.owner,
                        hb=run.hb,
                        rel=run.rel,
                        summary=None if summary is None else _summary_record(summary),
                        dirty=run in self._dirty,
                    )
                )
            )
        lines.append(encode_record(SnapshotEnd(s=self._session, runs=len(lines) - 1)))
        data = b"".join(lines)
        path.write_bytes(data)
        return len(data)

    # ------------------------------------------------------------------ index helpers

    def _wid(self, workflow_id: str, *, create: bool = False) -> _Wid:
        entry = self._wids.get(workflow_id)
        if entry is None:
            entry = self._wids[workflow_id] = _Wid(workflow_id, self._root)
        if create and not entry.dir.is_dir():
            created = []
            for d in (entry.dir.parent, entry.dir):
                try:
                    d.mkdir()
                    created.append(d)
                except FileExistsError:
                    pass
            if self.durability == "fsync":
                for d in created:
                    _fsync_dir(d.parent)
        return entry

    def _known_run(self, workflow_id: str, run_id: str, n: int) -> _Run:
        """The run ``run_id`` in file ``n``, registered (not yet read) if new."""
        run = self._runs.get((workflow_id, run_id))
        if run is not None and run.n == n:
            return run
        if run is not None:  # re-created in another file (repaired after a crash)
            self._forget(run)
        wid = self._wid(workflow_id)
        other = self._files.get((workflow_id, n))
        if other is not None:  # the file now holds another run (a torn create reused)
            self._forget(other)
        run = _Run(wid, run_id, n)
        self._runs[run.key] = run
        self._files[(workflow_id, n)] = run
        bisect.insort(wid.runs, run, key=lambda r: r.n)
        self._dirty[run] = None
        return run

    def _forget(self, run: _Run) -> None:
        if self._runs.get(run.key) is run:
            del self._runs[run.key]
        if self._files.get((run.wid.id, run.n)) is run:
            del self._files[(run.wid.id, run.n)]
        with contextlib.suppress(ValueError):
            run.wid.runs.remove(run)
        self._dirty.pop(run, None)
        self._set_owner(run, None)
        fd = self._log_fds.pop(run, None)
        if fd is not None:
            os.close(fd)
        self._unsynced.discard(run)

    def _set_owner(self, run: _Run, owner: str | None) -> None:
        if run.owner is not None:
            mine = self._owner_runs.get(run.owner)
            if mine is not None:
                mine.discard(run)
                if not mine:
                    del self._owner_runs[run.owner]
        run.owner = owner
        if owner is not None:
            self._owner_runs.setdefault(owner, set()).add(run)
        else:
            self._reindex(run)

    def _drop_owner(self, owner: str) -> None:
        for run in list(self._owner_runs.get(owner, ())):
            self._set_owner(run, None)

    def _released(self, run: _Run, rec: Release) -> None:
        run.rel = (rec.l, rec.nb, rec.bl)
        self._backoff(run)
        self._set_owner(run, None)

    def _backoff(self, run: _Run) -> None:
        """Apply the last release's backoff unless a decision landed after it."""
        if run.rel is not None and run.summary is not None and run.last_wtc < run.rel[0]:
            run.summary.not_before = run.rel[1]
            run.summary.blocked = run.rel[2]

    def _reindex(self, run: _Run) -> None:
        """Queue the run in the ready index if it is due (once per due time).

        Entries go stale when a run is claimed, re-timed or closed; ``claim``
        drops them when it meets them.  ``run.queued`` is the due time of the
        run's live entry, so an unchanged run is never queued twice.
        """
        summary = run.summary
        if run.owner is not None or summary is None or run.corrupt is not None:
            return
        due = summary.due
        if due is None or run.queued == due:
            return
        run.queued = due
        heap = self._ready.setdefault(summary.started.task_queue, [])
        heapq.heappush(heap, (due, next(self._tiebreak), run))
        if len(heap) > 2 * len(self._runs) + 1024:  # stale entries pile up without claims
            live = []
            for entry in heap:
                if self._claimable(entry[2], entry[0]):
                    live.append(entry)
                elif entry[2].queued == entry[0]:
                    entry[2].queued = None
            heap[:] = live
            heapq.heapify(heap)

    def _claimable(self, run: _Run, due: datetime) -> bool:
        summary = run.summary
        return (
            run.queued == due
            and run.owner is None
            and run.corrupt is None
            and summary is not None
            and summary.due == due
            and self._runs.get(run.key) is run
        )

    def _unqueue(self, heap: list[tuple[datetime, int, _Run]]) -> _Run:
        due, _, run = heapq.heappop(heap)
        if run.queued == due:
            run.queued = None
        return run

    def _summaries(self, wid: _Wid) -> list[RunSummary]:
        return [r.summary for r in wid.runs if r.summary is not None]

    def _latest(self, wid: _Wid) -> _Run | None:
        for run in reversed(wid.runs):
            if run.summary is not None or run.corrupt is not None:
                return run
        return None

    def _run(self, workflow_id: str, run_id: str | None) -> _Run:
        if not isinstance(workflow_id, str):
            raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
        wid = self._wids.get(workflow_id)
        run = None
        if wid is not None:
            if run_id is None:
                run = self._latest(wid)
            else:
                run = self._runs.get((workflow_id, run_id))
                if run is not None and run.summary is None and run.corrupt is None:
                    run = None
        if run is None:
            if wid is not None and wid.damaged is not None:
                raise CorruptionError(wid.damaged)
            if run_id is None or wid is None or self._latest(wid) is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")
        if run.corrupt is not None:
            raise CorruptionError(run.corrupt)
        return run

    # ------------------------------------------------------------------ locks and files

    def _lock_fd(self, wid: _Wid) -> int:
        fd = self._lock_fds.get(wid.id)
        if fd is not None:
            self._lock_fds.move_to_end(wid.id)
            return fd
        fd = os.open(wid.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_fds[wid.id] = fd
        while len(self._lock_fds) > _FD_CACHE:
            for old in self._lock_fds:
                if old not in self._held_locks:
                    os.close(self._lock_fds.pop(old))
                    break
            else:
                break
        return fd

    @contextlib.contextmanager
    def _locked(self, workflow_ids: Iterable[str], *, exclusive: bool = True) -> Iterator[None]:
        """Hold the locks of ``workflow_ids`` (in name order); re-entrant within a handle."""
        todo = sorted(
            (self._wids[w] for w in set(workflow_ids) if w not in self._held_locks),
            key=lambda w: w.rel,
        )
        taken: list[str] = []
        flags = portalocker.LOCK_EX if exclusive else portalocker.LOCK_SH
        try:
            for wid in todo:
                fd = self._lock_fd(wid)
                portalocker.lock(fd, flags)
                self._held_locks[wid.id] = fd
                taken.append(wid.id)
            yield
        finally:
            for w in reversed(taken):
                portalocker.unlock(self._held_locks.pop(w))

    def _log_fd(self, run: _Run, *, new: bool = False) -> int:
        fd = self._log_fds.get(run)
        if fd is not None and not new:
            self._log_fds.move_to_end(run)
            return fd
        if fd is not None:
            os.close(self._log_fds.pop(run))
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_TRUNC if new else 0)
        fd = os.open(run.path, flags, 0o644)
        self._log_fds[run] = fd
        while len(self._log_fds) > _FD_CACHE:
            old, old_fd = self._log_fds.popitem(last=False)
            if old in self._unsynced:
                _datasync(old_fd)
                self._unsynced.discard(old)
            os.close(old_fd)
        return fd

    # ------------------------------------------------------------------ reading logs

    def _sync(self, *, wait: bool = True) -> bool:
        """Catch up with other handles: the journal, then every run it touched.

        With ``wait=False`` a run whose lock another handle holds (it is writing
        it) stays dirty for the next call; returns whether every run was read.
        """
        if self._behind:
            self._load()
        self._tail()
        complete = True
        for run in list(self._dirty):
            if run not in self._dirty:
                continue
            if wait or run.wid.id in self._held_locks:
                with self._locked([run.wid.id], exclusive=False):
                    self._refresh(run)
                continue
            fd = self._lock_fd(run.wid)
            try:
                portalocker.lock(fd, portalocker.LOCK_SH | portalocker.LOCK_NB)
            except portalocker.LockException:
                complete = False
                continue
            try:
                self._refresh(run)
            finally:
                portalocker.unlock(fd)
        if self._roff > self._compact_at:
            self._compact()
        return complete

    def _catch_up(self, workflow_ids: Iterable[str]) -> None:
        """Inside their locks: read the journal, then the runs of these ids it touched.

        A handle that fell behind (see ``_tail``) re-reads these ids' logs whole.
        """
        self._tail()
        for w in workflow_ids:
            wid = self._wids.get(w)
            if wid is None:
                continue
            for run in list(wid.runs):
                if self._behind:
                    self._dirty[run] = None
                if run in self._dirty:
                    self._refresh(run)

    def _refresh(self, run: _Run) -> None:
        """Fold what the run's log gained since this handle last read it."""
        self._dirty.pop(run, None)
        try:
            fd = self._log_fd(run)
        except FileNotFoundError:
            if run.summary is not None:
                run.corrupt = f"the log of workflow {run.wid.id!r} run {run.rid} is missing"
            return  # a create that never happened
        size = os.fstat(fd).st_size
        if size < run.size:
            run.reset()  # shorter than it was: read it again from the start
        if size == run.size:
            return
        data = os.pread(fd, size - run.size, run.size)
        try:
            batches, _end = parse_log(data, run.size, run.batches + 1)
            self._fold(run, batches)
        except _Superseded as exc:  # the file holds a later create of the id
            self._forget(run)
            self._known_run(run.wid.id, exc.run_id, run.n)
            return
        except CorruptionError as exc:
            if run.size and run.summary is not None:
                run.reset()  # rewritten since (repaired after a reboot)? read it whole
                self._dirty[run] = None
                return self._refresh(run)
            run.corrupt = f"workflow {run.wid.id!r} run {run.rid}: {exc}"
        if run.summary is not None:
            pending = run.summary.activities
            for seq in [q for q in run.hb if q not in pending]:
                del run.hb[seq]
            self._backoff(run)
        self._reindex(run)

    def _fold(self, run: _Run, batches: list[LogBatch]) -> None:
        for batch, (events, _starts) in zip(batches, self._decode(batches), strict=True):
            summary = run.summary
            if summary is None:
                first = events[0] if events else None
                if not isinstance(first, WorkflowStarted) or first.index != 0:
                    raise CorruptionError("a log must begin with its WorkflowStarted")
                if first.workflow_id != run.wid.id:
                    raise CorruptionError(
                        f"a log of workflow {first.workflow_id!r} sits in the directory of "
                        f"{run.wid.id!r}"
                    )
                if first.run_id != run.rid:
                    raise _Superseded(first.run_id)
                summary = run.summary = RunSummary(msgspec.structs.replace(first, index=-1))
                events = events[1:]
            for i, ev in enumerate(events):
                if ev.index != summary.length + i:
                    raise CorruptionError(
                        f"event {ev.index} found where event {summary.length + i} was due"
                    )
            if run.marks is not None:
                run.marks.append((summary.length if run.batches else 0, batch.offset, batch.number))
            self._applied(run, events)
            run.size = batch.end
            run.batches = batch.number

    def _decode(
        self, batches: Sequence[LogBatch]
    ) -> list[tuple[list[Event], list[WorkflowStarted]]]:
        """Each batch's events, and the runs it starts (``WorkflowStarted`` after line 1)."""
        bodies = [body for batch in batches for body in batch.bodies]
        try:
            decoded = decode_events(bodies)
        except (msgspec.DecodeError, ValueError) as exc:
            raise CorruptionError(f"an intact log line does not decode: {exc}") from exc
        out: list[tuple[list[Event], list[WorkflowStarted]]] = []
        pos = 0
        for batch in batches:
            events: list[Event] = []
            starts: list[WorkflowStarted] = []
            for i, ev in enumerate(decoded[pos : pos + len(batch.bodies)]):
                if type(ev) is WorkflowStarted and (batch.number > 1 or i > 0):
                    starts.append(ev)
                else:
                    events.append(ev)
            pos += len(batch.bodies)
            out.append((events, starts))
        return out

    def _applied(self, run: _Run, events: Sequence[Event]) -> None:
        """Fold appended events into the run's summary and slots."""
        summary = run.summary
        assert summary is not None
        summary.apply(events)
        for ev in events:
            cls = type(ev)
            if cls is WorkflowTaskCompleted:
                run.last_wtc = ev.index
            elif cls is ActivityCompleted or cls is ActivityFailed:
                run.hb.pop(ev.seq, None)  # type: ignore[union-attr]
        if not summary.running:
            run.hb.clear()
            if run.marks:
                del run.marks[:-1]  # a closed run keeps its last batch's place only

    def _events(self, run: _Run, after: int, end: int | None = None) -> list[Event]:
        """The run's events from index ``after`` on, read from its log up to ``end``."""
        end = run.size if end is None else end
        offset, number, first = 0, 1, 0
        marks = run.marks
        if marks:
            i = bisect.bisect_right(marks, (after, end + 1, 0)) - 1
            if i >= 0:
                first, offset, number = marks[i]
        if offset >= end:
            return []
        fd = self._log_fd(run)
        data = os.pread(fd, end - offset, offset)
        try:
            batches, found = parse_log(data, offset, number)
            if found != end:
                raise CorruptionError(f"the log ends at byte {found}, the index says {end}")
            out: list[Event] = []
            rebuild = marks is None and offset == 0 and run.summary is not None
            new_marks: list[tuple[int, int, int]] = []
            index = first
            for batch, (events, _starts) in zip(batches, self._decode(batches), strict=True):
                new_marks.append((index if batch.number > 1 else 0, batch.offset, batch.number))
                for ev in events:
                    if ev.index != index:
                        raise CorruptionError(f"event {ev.index} found where {index} was due")
                    index += 1
                    if ev.index >= after:
                        out.append(ev)
        except CorruptionError as exc:
            run.corrupt = f"workflow {run.wid.id!r} run {run.rid}: {exc}"
            raise CorruptionError(run.corrupt) from exc
        if rebuild:
            run.marks = new_marks if run.summary and run.summary.running else new_marks[-1:]
        return out

    # ------------------------------------------------------------------ planning writes

    def _plan_bytes(self, plan: _Plan, run: _Run, data: bytes) -> None:
        if run not in plan.data:
            plan.data[run] = bytearray()
            plan.base.setdefault(run, (run.size, run.batches))
            plan.events.setdefault(run, [])
        plan.data[run] += data

    def _plan_batch(self, plan: _Plan, batch: AppendBatch) -> int:
        """Check and plan one batch (``MemoryStore._append_one``); returns its index."""
        if batch.workflow_id not in plan.locked:  # unknown when the call began
            raise WorkflowNotFoundError(f"no workflow with id {batch.workflow_id!r}")
        run = self._run(batch.workflow_id, batch.run_id)
        summary = run.summary
        assert summary is not None
        expected = batch.expected_length
        tail: list[Event] = []
        if expected is not None and 1 <= expected < summary.length:
            tail = self._pending_events(plan, run, expected)
        check_decision(summary, batch.events, tail, expected)
        self._check_starts(batch, run)
        index = summary.length
        stamped = [with_index(ev, index + i) for i, ev in enumerate(batch.events)]
        bodies = [dumps(ev) for ev in stamped] + [dumps(s) for s in batch.starts]
        if bodies:
            number = run.batches + 1
            count = len(bodies)
            data = b"".join(frame_log_line(number, i + 1, count, b) for i, b in enumerate(bodies))
            if run.marks is not None:
                run.marks.append((index, run.size, number))
            self._plan_bytes(plan, run, data)
            run.size += len(data)
            run.batches = number
            plan.events[run].extend(stamped)
        was_running = summary.running
        self._applied(run, stamped)
        closes = was_running and not summary.running
        if batch.starts or (closes and summary.started.parent is not None):
            plan.fx.add(run)
        for started in batch.starts:
            self._plan_start(plan, started)
        if closes:
            notice = parent_notice(summary)
            if notice is not None:
                plan.effects.append(("external", *notice))
        self._reindex(run)
        return index

    def _pending_events(self, plan: _Plan, run: _Run, after: int) -> list[Event]:
        """Events from ``after`` on, including those planned but not yet written."""
        base = plan.base.get(run)
        disk = self._events(run, after, end=base[0]) if base else self._events(run, after)
        planned = [ev for ev in plan.events.get(run, ()) if ev.index >= after]
        return disk + planned

    def _check_starts(self, batch: AppendBatch, run: _Run) -> None:
        """Refuse, before anything lands, a batch whose parentless starts cannot happen."""
        closes = any(type(ev) in CLOSING_EVENTS for ev in batch.events)
        for started in batch.starts:
            if started.parent is not None:
                continue
            wid = self._wids.get(started.workflow_id)
            if wid is None:
                continue
            same = self._runs.get((started.workflow_id, started.run_id))
            if same is not None and same.summary is not None:
                raise WorkflowAlreadyStartedError(
                    f"workflow {started.workflow_id!r} already has a run {started.run_id!r}"
                )
            last = self._latest(wid)
            if last is None or last.summary is None or not last.summary.running:
                continue
            if not (last is run and closes):
                raise WorkflowAlreadyStartedError(
                    f"workflow {started.workflow_id!r} is already running (run {last.rid})"
                )

    def _plan_start(self, plan: _Plan, started: WorkflowStarted) -> None:
        """A run started by a batch (``MemoryStore._start_from``); other ids come later."""
        if started.workflow_id not in plan.locked:
            plan.effects.append(("start", started))
            return
        wid = self._wid(started.workflow_id)
        runs = self._summaries(wid)
        if is_repeated_child(started, runs):
            return  # this child exists already (a retried decision)
        try:
            check_start(started, runs, IdReusePolicy.ALLOW_DUPLICATE)
            self._plan_create(plan, started)
        except WorkflowAlreadyStartedError as exc:
            if started.parent is None:
                raise
            plan.effects.append(("external", *child_refused(started, exc)))

    def _plan_create(self, plan: _Plan, started: WorkflowStarted) -> _Run:
        wid = self._wid(started.workflow_id, create=True)
        old = self._runs.get((started.workflow_id, started.run_id))
        if old is not None and old.summary is not None:
            raise WorkflowAlreadyStartedError(
                f"workflow {started.workflow_id!r} already has a run {started.run_id!r}"
            )
        n = self._next_file(wid)
        run = self._known_run(started.workflow_id, started.run_id, n)
        self._dirty.pop(run, None)
        line = frame_log_line(1, 1, 1, dumps(with_index(started, 0)))
        plan.base[run] = (0, 0)
        plan.new.add(run)
        self._plan_bytes(plan, run, line)
        run.summary = RunSummary(started)
        run.size, run.batches, run.marks = len(line), 1, [(0, 0, 1)]
        self._reindex(run)
        return run

    def _next_file(self, wid: _Wid) -> int:
        """The number of a new run's file: after every file there (a torn create is reused)."""
        numbers = {r.n for r in wid.runs if r.summary is not None}
        on_disk = []
        for name in os.listdir(wid.dir):
            m = _LOG_NAME.fullmatch(name)
            if m:
                on_disk.append(int(m.group(1)))
        top = max([*numbers, *on_disk], default=0)
        if top and top not in numbers:
            path = wid.dir / f"{top:08d}.log"
            with contextlib.suppress(CorruptionError):
                batches, _ = parse_log(path.read_bytes(), 0, 1)
                if not batches:
                    stale = self._files.get((wid.id, top))
                    if stale is not None:
                        self._forget(stale)
                    return top  # nothing complete in it: a create that never finished
        return top + 1

    def _commit(self, plan: _Plan) -> None:
        """Write a plan: journal the touches, then the logs; sync as durability says."""
        if not plan.data:
            return
        touches = [
            Touch(
                s=self._session,
                w=run.wid.id,
                r=run.rid,
                n=run.n,
                b=plan.base[run][1] + 1,
                fx=run in plan.fx,
            )
            for run in plan.data
        ]
        try:
            self._journal(touches)
            for t in touches:
                if t.fx:
                    self._fx[(t.w, t.r, t.b)] = t
            for run, data in plan.data.items():
                new = run in plan.new
                fd = self._log_fd(run, new=new)
                if not new:
                    size, base = os.fstat(fd).st_size, plan.base[run][0]
                    if size < base:
                        raise CorruptionError(
                            f"the log of workflow {run.wid.id!r} run {run.rid} shrank under "
                            f"the store ({size} bytes, {base} expected)"
                        )
                    if size > base:
                        os.ftruncate(fd, base)  # a batch torn by a crash: dropped whole
                _write_all(fd, bytes(data))
            if self.durability == "fsync":
                dirs = set()
                for run in plan.data:
                    _datasync(self._log_fd(run))
                    if run in plan.new:
                        dirs.add(run.wid.dir)
                for d in dirs:
                    _fsync_dir(d)
            elif self.durability == "flush":
                self._unsynced.update(plan.data)  # synced by _flush, outside the locks
        except BaseException:
            self._rollback(plan)
            raise

    def _rollback(self, plan: _Plan) -> None:
        """A write failed: cut the logs back and re-read them (best effort)."""
        for run in plan.data:
            base = plan.base[run][0]
            with contextlib.suppress(OSError):
                if run in plan.new:
                    os.unlink(run.path)
                elif os.stat(run.path).st_size > base:
                    os.truncate(run.path, base)
            if run in plan.new:
                self._forget(run)
            else:
                fd = self._log_fds.pop(run, None)
                if fd is not None:
                    os.close(fd)
                run.reset()
                run.hb.clear()
                self._dirty[run] = None
                with contextlib.suppress(OSError, CorruptionError):
                    self._refresh(run)

    def _flush(self, *, due: bool = False) -> None:
        """Sync the logs written since the last sync (``due``: only if a second has passed)."""
        if due and time.monotonic() - self._last_sync < _FLUSH_EVERY:
            return
        for run in list(self._unsynced):
            fd = self._log_fds.get(run)
            if fd is not None:
                _datasync(fd)
        self._unsynced.clear()
        self._last_sync = time.monotonic()

    def _append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        """Lock, check, plan and write ``batches``; then their cross-run effects."""
        wanted = {b.workflow_id for b in batches} | {
            s.workflow_id for b in batches for s in b.starts if s.parent is None
        }
        plan = _Plan(w for w in wanted if w in self._wids)
        results: list[AppendResult] = []
        with self._locked(plan.locked):
            self._catch_up(plan.locked)
            for b in batches:
                try:
                    results.append(AppendResult(index=self._plan_batch(plan, b)))
                except WorkflowError as exc:
                    results.append(AppendResult(error=exc))
            self._commit(plan)
        self._effects(plan)
        return results

    def _effects(self, plan: _Plan) -> None:
        """Cross-run effects of a written plan: children's starts, parents' notices."""
        work = list(plan.effects)
        while work:
            kind, *args = work.pop(0)
            with contextlib.suppress(WorkflowError):
                if kind == "start":
                    work.extend(self._start_child(args[0]))
                else:
                    self._append_batches(
                        [AppendBatch(workflow_id=args[0], run_id=args[1], events=[args[2]])]
                    )
        done = [
            Done(s=self._session, w=run.wid.id, r=run.rid, b=plan.base[run][1] + 1)
            for run in plan.fx
            if run in plan.base
        ]
        if done:
            self._journal(done)
            for d in done:
                self._fx.pop((d.w, d.r, d.b), None)

    def _start_child(self, started: WorkflowStarted) -> list[tuple[Any, ...]]:
        wid = self._wid(started.workflow_id, create=True)
        plan = _Plan([wid.id])
        with self._locked(plan.locked):
            self._catch_up(plan.locked)
            self._plan_start(plan, started)
            self._commit(plan)
        return plan.effects

    # ------------------------------------------------------------------ recovery

    def _recover_effects(self) -> None:
        """Apply the effects that a dead handle (or a failed call) left undone."""
        for key, touch in list(self._fx.items()):
            if key not in self._fx:
                continue
            if touch.s != self._session and self._sessions.alive(touch.s):
                continue  # its writer is alive and will finish
            run = self._runs.get((touch.w, touch.r))
            if run is not None:
                with contextlib.suppress(WorkflowError):
                    self._redo_effects(run, touch.b)
            self._journal([Done(s=self._session, w=touch.w, r=touch.r, b=touch.b)])
            self._fx.pop(key, None)

    def _redo_effects(self, run: _Run, first_batch: int) -> None:
        """Idempotently apply the effects of the run's batches from ``first_batch`` on."""
        with self._locked([run.wid.id], exclusive=False):
            self._catch_up([run.wid.id])
            if run.summary is None or run.corrupt is not None:
                return
            data = os.pread(self._log_fd(run), run.size, 0)
            batches, _ = parse_log(data, 0, 1)
            starts: list[WorkflowStarted] = []
            closed_here = False
            for events, more in self._decode(batches[first_batch - 1 :]):
                starts.extend(more)
                closed_here = closed_here or any(type(ev) in CLOSING_EVENTS for ev in events)
            summary = run.summary
        for started in starts:
            if not self._started_already(started):
                work = self._start_child(started)
                self._effects_only(work)
        notice = parent_notice(summary) if closed_here else None
        if notice is not None and not self._notified_already(*notice):
            self._effects_only([("external", *notice)])

    def _effects_only(self, work: list[tuple[Any, ...]]) -> None:
        plan = _Plan(())
        plan.effects = work
        self._effects(plan)

    def _started_already(self, started: WorkflowStarted) -> bool:
        wid = self._wids.get(started.workflow_id)
        if wid is not None:
            with self._locked([wid.id], exclusive=False):
                self._catch_up([wid.id])
        known = self._runs.get((started.workflow_id, started.run_id))
        if known is not None and known.summary is not None:
            return True
        parent = started.parent
        if parent is None:
            return False
        if wid is not None and started.continued_from is None:
            last = self._latest(wid)
            if (
                last is not None
                and last.summary is not None
                and last.summary.started.parent == parent
            ):
                return True
        owner = self._fresh(parent.workflow_id, parent.run_id)
        if owner is None:
            return True  # no parent to start it for
        return any(
            type(ev) is ChildWorkflowFailed and ev.seq == parent.seq and not ev.run_id
            for ev in self._events(owner, 0)
        )

    def _fresh(self, workflow_id: str, run_id: str) -> _Run | None:
        """A run brought up to date with its log, or None if unknown or unreadable."""
        run = self._runs.get((workflow_id, run_id))
        if run is None:
            return None
        with self._locked([workflow_id], exclusive=False):
            self._catch_up([workflow_id])
        return run if run.summary is not None and run.corrupt is None else None

    def _notified_already(self, workflow_id: str, run_id: str, notice: Event) -> bool:
        parent = self._fresh(workflow_id, run_id)
        if parent is None or parent.summary is None or not parent.summary.running:
            return True
        assert isinstance(notice, ChildWorkflowCompleted | ChildWorkflowFailed)
        return any(
            isinstance(ev, ChildWorkflowCompleted | ChildWorkflowFailed)
            and (ev.seq, ev.run_id) == (notice.seq, notice.run_id)
            for ev in self._events(parent, 0)
        )

    def _repair(self) -> None:
        """Journal the runs a scan re-read (for other handles) and re-apply their effects."""
        changed, self._repairs = self._repairs, []
        if not changed:
            return
        self._journal(
            [Touch(s=self._session, w=r.wid.id, r=r.rid, n=r.n, b=old + 1) for r, old in changed]
        )
        for run, old in changed:
            with contextlib.suppress(WorkflowError, OSError):
                self._redo_effects(run, old + 1)

    def _scan(self) -> list[tuple[_Run, int]]:
        """Check every log against the index and read what differs (takes shared locks).

        Returns the runs read, with how many batches the index knew of each.
        """
        changed: list[tuple[_Run, int]] = []
        seen: set[_Run] = set()
        runs_dir = self._root / "runs"
        for shard in sorted(os.listdir(runs_dir)):
            shard_dir = runs_dir / shard
            if not shard_dir.is_dir():
                continue
            for name in sorted(os.listdir(shard_dir)):
                found = self._scan_dir(shard_dir / name, name, changed)
                seen.update(found)
        for run in list(self._runs.values()):
            if run not in seen and run.summary is not None:
                self._forget(run)  # its file is gone
        return changed

    def _scan_dir(
        self, path: pathlib.Path, name: str, changed: list[tuple[_Run, int]]
    ) -> list[_Run]:
        logs = sorted(
            (int(m.group(1)), entry)
            for entry in os.scandir(path)
            if (m := _LOG_NAME.fullmatch(entry.name))
        )
        if not logs:
            return []
        workflow_id = _names.id_of(name)
        if workflow_id is None:  # a digest name: the id is inside the logs
            for _, entry in logs:
                first = _first_started(entry.path)
                if first is not None and _names.name(first.workflow_id) == name:
                    workflow_id = first.workflow_id
                    break
            else:
                return []
        wid = self._wid(workflow_id)
        if wid.rel.split("/")[-1] != name or wid.dir != path:
            return []  # not a directory this store made
        found: list[_Run] = []
        with self._locked([wid.id], exclusive=False):
            for n, entry in logs:
                size = entry.stat().st_size
                run = self._files.get((wid.id, n))
                known = run is not None and run.summary is not None and run not in self._dirty
                if known and run is not None and run.size == size:
                    found.append(run)
                    continue
                first = _first_started(entry.path)
                if first is None:
                    if size and wid.damaged is None and _first_line_damaged(entry.path):
                        wid.damaged = f"the first line of {entry.path} is damaged"
                    continue  # a create that never finished
                run = self._known_run(wid.id, first.run_id, n)
                old = run.batches
                self._refresh(run)
                if run.summary is not None:
                    found.append(run)
                    changed.append((run, old))
        return found

    # ------------------------------------------------------------------ protocol

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this FileStore is closed")

    @_store_errors
    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> None:
        with self._mu:
            self._check_open()
            if not isinstance(started, WorkflowStarted):
                raise TypeError(f"create() needs a WorkflowStarted event, got {started!r}")
            _check_ids(started.workflow_id, started.run_id)
            self._sync()
            wid = self._wid(started.workflow_id, create=True)
            plan = _Plan([wid.id])
            with self._locked(plan.locked):
                self._catch_up(plan.locked)
                old = self._runs.get((wid.id, started.run_id))
                if old is not None and old.summary is not None:
                    raise WorkflowAlreadyStartedError(
                        f"workflow {wid.id!r} already has a run {started.run_id!r}"
                    )
                running = check_start(started, self._summaries(wid), id_reuse)
                if running is not None:
                    terminate = WorkflowTerminated(
                        time=started.time,
                        reason=f"terminated by a new start ({started.run_id}) with "
                        f"TERMINATE_IF_RUNNING",
                    )
                    self._plan_batch(
                        plan,
                        AppendBatch(
                            workflow_id=wid.id, run_id=running.started.run_id, events=[terminate]
                        ),
                    )
                self._plan_create(plan, started)
                self._commit(plan)
            self._effects(plan)
            if self._unsynced:
                self._flush(due=True)

    @_store_errors
    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        for batch in batches:  # bad input refuses the whole call before anything lands
            _check_ids(batch.workflow_id, batch.run_id)
        with self._mu:
            self._check_open()
            if not batches:
                return []
            self._sync()
            results = self._append_batches(batches)
            if self._unsynced:
                self._flush(due=True)
            return results

    @_store_errors
    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        with self._mu:
            self._check_open()
            self._sync()
            run = self._run(workflow_id, run_id)
            if after < 0:
                return self._events(run, 0)[after:]
            return self._events(run, after)

    @_store_errors
    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        with self._mu:
            self._check_open()
            self._sync()
            summary = self._run(workflow_id, run_id).summary
            assert summary is not None
            return summary.info()

    @_store_errors
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
        with self._mu:
            self._check_open()
            self._sync()
            return select_page(
                (run.summary for run in self._runs.values() if run.summary is not None),
                status=status,
                type=type,
                since=since,
                until=until,
                page_size=page_size,
                page_token=page_token,
            )

    @_store_errors
    def runs(self) -> Iterator[WorkflowInfo]:
        """Every run; ``CorruptionError`` if a log cannot even be identified.

        A run whose first line is damaged cannot be listed, and skipping it would
        let GC sweep the blobs it references or a copy leave it behind, so it is
        an error here (``list`` leaves it out; ``read`` of a listed run raises).
        """
        with self._mu:
            self._check_open()
            self._sync()
            infos = [r.summary.info() for r in self._runs.values() if r.summary is not None]
            damaged = [w.damaged for w in self._wids.values() if w.damaged is not None]
            damaged += [r.corrupt for r in self._runs.values() if r.summary is None and r.corrupt]
        if damaged:
            raise CorruptionError(
                f"{damaged[0]} ({len(damaged)} damaged log(s)): a run that cannot be read "
                f"cannot be skipped by GC, copy or stats; `tpp store verify` lists them"
            )
        return iter(infos)

    @_store_errors
    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        with self._mu:
            self._check_open()
            self._hold(owner)
            complete = self._sync(wait=False)  # runs being written now are another's
            self._reap()
            self._recover_effects()
            got: builtins.list[RunRef] = []
            next_due: datetime | None = None
            for queue_name in task_queues:
                heap = self._ready.get(queue_name)
                while heap:
                    due, _, run = heap[0]
                    if not self._claimable(run, due):
                        self._unqueue(heap)  # stale: claimed, re-timed or closed
                        continue
                    if due > now or len(got) >= limit:
                        if next_due is None or due < next_due:
                            next_due = due
                        break
                    self._unqueue(heap)
                    if self._try_claim(owner, run, now):
                        got.append(run.ref)
            if not complete and (next_due is None or next_due > now):
                next_due = now  # a run not read yet may be due: ask again soon
            return Claims(runs=got, next_due=next_due)

    def _hold(self, owner: str) -> None:
        if owner in self._held_owners:
            return
        if not isinstance(owner, str):
            raise TypeError(f"an owner must be a string, got {owner!r}")
        self._owners_live.hold(owner)
        self._held_owners.add(owner)
        self._journal([OwnerEpoch(s=self._session, o=owner)])
        self._drop_owner(owner)  # claims of a previous life are void

    def _reap(self) -> None:
        """Free the runs of owners whose liveness lock is free (dead processes)."""
        for owner in list(self._owner_runs):
            if owner not in self._held_owners and not self._owners_live.alive(owner):
                self._drop_owner(owner)

    def _try_claim(self, owner: str, run: _Run, now: datetime) -> bool:
        with self._locked([run.wid.id]):
            self._catch_up([run.wid.id])
            if self._behind:  # claims in a journal this handle could not read: pass
                return False
            if run.owner is not None:
                if run.owner in self._held_owners or self._owners_live.alive(run.owner):
                    return False
                self._set_owner(run, None)
            summary = run.summary
            due = None if summary is None or run.corrupt else summary.due
            if due is None or due > now or self._runs.get(run.key) is not run:
                self._reindex(run)
                return False
            self._journal([Claim(s=self._session, o=owner, w=run.wid.id, r=run.rid)])
            self._set_owner(run, owner)
            return True

    @_store_errors
    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        with self._mu:
            self._check_open()
            self._sync()
            if owner not in self._held_owners and not self._owners_live.alive(owner):
                self._drop_owner(owner)
                return []
            return [run.ref for run in self._owner_runs.get(owner, ())]

    @_store_errors
    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        with self._mu:
            self._check_open()
            self._sync()
            entry = self._runs.get((run.workflow_id, run.run_id))
            if entry is None or entry.owner != owner:
                return
            with self._locked([entry.wid.id]):
                self._catch_up([entry.wid.id])
                if entry.owner != owner or entry.summary is None:
                    return
                rec = Release(
                    s=self._session,
                    o=owner,
                    w=entry.wid.id,
                    r=entry.rid,
                    l=entry.summary.length,
                    nb=not_before,
                    bl=blocked,
                )
                self._journal([rec])
                self._released(entry, rec)

    @_store_errors
    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        with self._mu:
            self._check_open()
            self._sync()
            entry = self._run(run.workflow_id, run.run_id)
            summary = entry.summary
            assert summary is not None
            if details is not None and seq in summary.activities:
                self._journal(
                    [Heartbeat(s=self._session, w=entry.wid.id, r=entry.rid, q=seq, d=details)]
                )
                entry.hb[seq] = details  # only a pending activity has a slot
            return entry.hb.get(seq)

    def rebuild_index(self) -> None:
        """Check every log against the index, re-read what differs, and checkpoint.

        The logs are the truth: this repairs an index that is stale or was
        deleted (also done automatically after a reboot).
        """
        with self._mu:
            self._check_open()
            self._sync()
            self._repairs.extend(self._scan())
            self._repair()
            self._compact()

    def close(self) -> None:
        with self._mu:
            self._closed = True
            if self._shut:
                return
            self._shut = True
            try:
                if self.durability == "flush" and self._unsynced:
                    with contextlib.suppress(OSError):
                        self._flush()
            finally:
                for fd in [*self._log_fds.values(), *self._lock_fds.values()]:
                    os.close(fd)
                self._log_fds.clear()
                self._lock_fds.clear()
                for fd in (self._rfd, self._wfd, self._jlock):
                    if fd >= 0:
                        os.close(fd)
                self._rfd = self._wfd = self._jlock = -1
                if hasattr(self, "_owners_live"):
                    self._owners_live.close()
                if hasattr(self, "_sessions"):
                    self._sessions.close()

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
        return f"FileStore({str(self._root)!r}, durability={self.durability!r})"

    # ------------------------------------------------------------------ test hooks

    def _let_owner_die(self, owner: str) -> None:
        """Drop ``owner``'s liveness lock as if its process had died (tests)."""
        with self._mu:
            self._held_owners.discard(owner)
            self._owners_live.release(owner)


# --------------------------------------------------------------------------- helpers


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - regular files write or raise
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def _datasync(fd: int) -> None:
    """``fdatasync`` where the OS has it (Linux), else ``fsync`` (macOS)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_started(path: str) -> WorkflowStarted | None:
    """The ``WorkflowStarted`` of a log, if its first batch is complete and intact."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
            while b"\n" not in data:
                more = f.read(1 << 16)
                if not more:
                    return None
                data += more
    except OSError:
        return None
    try:
        batches, _ = parse_log(data[: data.index(b"\n") + 1], 0, 1)
        if not batches:
            return None
        ev = decode_event(batches[0].bodies[0])
    except (CorruptionError, msgspec.DecodeError, ValueError):
        return None
    return ev if isinstance(ev, WorkflowStarted) else None


def _first_line_damaged(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
        parse_log(data, 0, 1)
    except CorruptionError:
        return True
    except OSError:
        return False
    return False


def _summary_record(s: RunSummary) -> SummaryRecord:
    return SummaryRecord(
        started=s.started,
        status=s.status,
        close_time=s.close_time,
        closing=s.closing,
        length=s.length,
        last_input=s.last_input,
        last_seen=s.last_seen,
        activities=s.activities,
        timers=s.timers,
        not_before=s.not_before,
        blocked=s.blocked,
    )


def _summary_from(rec: SummaryRecord) -> RunSummary:
    s = RunSummary(rec.started)
    s.status = rec.status
    s.close_time = rec.close_time
    s.closing = rec.closing
    s.length = rec.length
    s.last_input = rec.last_input
    s.last_seen = rec.last_seen
    s.activities = dict(rec.activities)
    s.timers = dict(rec.timers)
    s.not_before = rec.not_before
    s.blocked = rec.blocked
    return s
